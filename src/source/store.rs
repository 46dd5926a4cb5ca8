//! The policy in force: the last one that loaded, swapped in whole. Both sources (files and the
//! ConfigMap watch) feed it; a text is loaded on a blocking thread, off the threads that answer
//! reviews, and one that does not load leaves the last good policy in force. What happens is
//! logged here and reported to one observer (metrics, caches), the same way for both sources.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::policy::{Policy, Severity};

/// What happened to the policy, for the observer.
pub enum Reload<'a> {
    /// A new policy is in force; `hash` names its text (the first 16 hex digits of its SHA-256).
    Loaded { policy: &'a Policy, hash: &'a str },
    /// A text, a file or the ConfigMap was refused; the last good policy stays.
    Refused,
    /// The source could not be read for a while (a watch error); it retries by itself.
    SourceFailed,
}

pub type OnReload = Box<dyn Fn(Reload<'_>) + Send + Sync>;

/// A short, stable name for a policy text, for the `policy_info` metric and the log.
pub fn text_hash(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a policy text is not in force.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Rejected(#[from] crate::policy::Rejected),
    #[error("the policy load did not finish: {0}")]
    Interrupted(#[source] tokio::task::JoinError),
}

pub struct PolicyStore {
    current: ArcSwapOption<Policy>,
    max_bytes: usize,
    observer: OnReload,
    /// The last text offered, with its origin: the cluster's mirror sets reload it when they change.
    offered: std::sync::Mutex<Option<(String, String)>>,
    /// The cluster's mirror set objects as a YAML list (`--watch-image-mirror-sets`); empty: none.
    cluster_sets: std::sync::Mutex<String>,
}

impl PolicyStore {
    pub fn new(max_bytes: usize, observer: OnReload) -> Self {
        PolicyStore {
            current: ArcSwapOption::empty(),
            max_bytes,
            observer,
            offered: std::sync::Mutex::new(None),
            cluster_sets: std::sync::Mutex::new(String::new()),
        }
    }

    /// The largest policy text this store takes (`--max-policy-bytes`).
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The policy in force, if one has loaded.
    pub fn current(&self) -> Option<Arc<Policy>> {
        self.current.load_full()
    }

    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }

    /// Loads `text` and swaps it in, or keeps the last good policy. Gives the number of
    /// warnings, or why the text was refused.
    pub async fn apply(&self, origin: &str, text: String) -> Result<usize, LoadError> {
        *crate::sync::lock(&self.offered) = Some((origin.to_owned(), text.clone()));
        self.load(origin, text).await
    }

    async fn load(&self, origin: &str, text: String) -> Result<usize, LoadError> {
        let sets = crate::sync::lock(&self.cluster_sets).clone();
        let max = self.max_bytes;
        let hash = text_hash(&format!("{text}{sets}"));
        let loaded =
            tokio::task::spawn_blocking(move || Policy::load_with_cluster_sets(&text, max, &sets))
                .await
                .map_err(LoadError::Interrupted)
                .and_then(|r| r.map_err(LoadError::from));
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(why) => {
                self.refuse(origin, &why.to_string());
                return Err(why);
            }
        };
        // Each finding as `check` prints it, so the log alone says what to fix.
        for d in &loaded.diagnostics {
            match d.severity {
                Severity::Note => tracing::info!(origin, "policy {d}"),
                _ => tracing::warn!(origin, "policy {d}"),
            }
        }
        let warnings = loaded
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count();
        let policy = Arc::new(loaded.policy);
        (self.observer)(Reload::Loaded {
            policy: &policy,
            hash: &hash,
        });
        tracing::info!(origin, hash, "policy in force");
        self.current.store(Some(policy));
        tracing::info!(origin, warnings, "policy loaded");
        Ok(warnings)
    }

    /// The cluster's mirror sets changed: the last text offered is loaded again with them. Until
    /// a text is offered they wait for it.
    pub async fn apply_cluster_sets(&self, sets: String) -> Option<Result<usize, LoadError>> {
        *crate::sync::lock(&self.cluster_sets) = sets;
        let (origin, text) = crate::sync::lock(&self.offered).clone()?;
        Some(
            self.load(&format!("{origin} with the cluster's mirror sets"), text)
                .await,
        )
    }

    /// Says that a source was refused or is unusable; the last good policy stays in force.
    pub fn refuse(&self, origin: &str, why: &str) {
        (self.observer)(Reload::Refused);
        tracing::error!(
            origin,
            error = why,
            kept_last_good = self.is_loaded(),
            "policy rejected"
        );
    }

    /// Says that reading a source failed for now; it is retried, reviews use the last good policy.
    pub fn source_failed(&self, origin: &str, why: &str) {
        (self.observer)(Reload::SourceFailed);
        tracing::warn!(
            origin,
            error = why,
            "policy source failed; retrying, reviews use the last good policy"
        );
    }
}
