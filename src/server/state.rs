//! What every handler shares: the policy store, verify, pull secrets, metrics and limits, built
//! once by `AppState::build` from a `StateConfig`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::body;
use super::metrics::Metrics;
use crate::source;
use crate::source::{PolicyStore, Reload};

/// What every handler shares.
pub struct AppState {
    pub policy: Arc<PolicyStore>,
    /// Set when --pull-secrets is on.
    pub pull_secrets: Option<Arc<crate::secrets::PullSecrets>>,
    pub namespace_secrets: Option<crate::secrets::NamespaceSecrets>,
    pub checker: crate::verify::Checker,
    /// ECR tokens and credential providers, for pull secrets and verify.
    pub cloud: Arc<crate::credentials::Cloud>,
    pub metrics: Arc<Metrics>,
    pub fail_closed: bool,
    pub bodies: Arc<body::Bodies>,
    /// Every review is answered within this (`Limits::review_time`).
    pub review_time: Duration,
    pub(super) shutting_down: AtomicBool,
}

/// Bodies held at once by default: two of the largest a review may be, or thousands of ordinary
/// ones (a few KB each), well inside the chart's 128 MiB memory limit.
pub const DEFAULT_BODIES_BYTES: usize = 16 * 1024 * 1024;
/// Working memory of the answers being made, by default: with the bodies and the server's own
/// ~15 MiB, inside the chart's 128 MiB.
pub const DEFAULT_WORK_BYTES: usize = 64 * 1024 * 1024;

/// The limits `AppState` enforces on requests and policies (README, Limits).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub bodies: body::BodyLimits,
    pub max_policy: usize,
    /// The webhook configuration's `timeoutSeconds` (`--webhook-timeout`).
    pub webhook_timeout: Duration,
}

impl Limits {
    /// The defaults, with the largest body `max_body`.
    pub fn new(max_body: usize) -> Self {
        Limits {
            bodies: body::BodyLimits {
                max_body,
                bodies: DEFAULT_BODIES_BYTES,
                work: DEFAULT_WORK_BYTES,
                timeout: Duration::from_secs(30),
                idle: Duration::from_secs(5),
            },
            max_policy: crate::policy::MAX_POLICY_BYTES,
            webhook_timeout: Duration::from_secs(10),
        }
    }

    /// How long a review may take: below the API server's timeout by a fifth (at least half a
    /// second), so that the answer is written and sent before it gives up on the call.
    pub fn review_time(&self) -> Duration {
        let margin = (self.webhook_timeout / 5).max(Duration::from_millis(500));
        self.webhook_timeout
            .saturating_sub(margin)
            .max(Duration::from_millis(100))
    }
}

/// What a `AppState` is built from.
pub struct StateConfig {
    pub fail_closed: bool,
    pub limits: Limits,
    /// ECR tokens and credential providers.
    pub credentials: crate::credentials::CloudSettings,
    /// `serve --pull-secrets`: managed pull secrets through this client, and the index of the
    /// namespaces' own pull secrets (whose watch the caller runs).
    pub pull_secrets: Option<PullSecretsConfig>,
}

/// `serve --pull-secrets`.
pub struct PullSecretsConfig {
    pub client: kube::Client,
    /// The namespaces' own pull secrets, kept current by a watch the caller runs.
    pub index: crate::secrets::NamespaceSecrets,
    /// Where `credentialsSecret` references are read (default: the client's namespace).
    pub own_namespace: Option<String>,
}

impl StateConfig {
    /// The defaults, with the largest body `max_body`; no pull secrets.
    pub fn new(max_body: usize) -> Self {
        StateConfig {
            fail_closed: false,
            limits: Limits::new(max_body),
            credentials: crate::credentials::CloudSettings::default(),
            pull_secrets: None,
        }
    }
}

impl AppState {
    /// The one way a state is made: metrics first, then what reports to them.
    pub fn build(config: StateConfig) -> Self {
        let metrics = Arc::new(Metrics::default());
        let counted = metrics.clone();
        let cloud = Arc::new(crate::credentials::Cloud::new(
            config.credentials,
            Arc::new(move |fetch, ok| counted.credential_fetch(fetch.label(), ok)),
        ));
        let (pull_secrets, namespace_secrets) = match config.pull_secrets {
            Some(c) => {
                let ps = crate::secrets::PullSecrets::new(c.client, Some(cloud.clone()));
                let ps = match &c.own_namespace {
                    Some(ns) => ps.in_namespace(ns),
                    None => ps,
                };
                (Some(Arc::new(ps)), Some(c.index))
            }
            None => (None, None),
        };
        let observed = metrics.clone();
        let checker = crate::verify::Checker::new(crate::verify::Access {
            pull_secrets: pull_secrets.clone(),
            cloud: Some(cloud.clone()),
            on_check: Some(Arc::new(move |result: &str, took: Duration| {
                observed.verify_checked(result, took)
            })),
        });
        let on_reload = on_reload(
            metrics.clone(),
            checker.clone(),
            cloud.clone(),
            pull_secrets.is_some(),
        );
        let limits = config.limits;
        AppState {
            policy: Arc::new(PolicyStore::new(limits.max_policy, on_reload)),
            pull_secrets,
            namespace_secrets,
            checker,
            cloud,
            bodies: Arc::new(body::Bodies::new(limits.bodies, metrics.clone())),
            metrics,
            fail_closed: config.fail_closed,
            review_time: limits.review_time(),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// When a review that starts now must be answered.
    pub fn review_deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::from_std(crate::duration::after(
            std::time::Instant::now(),
            self.review_time,
        ))
    }

    /// Why the server is not ready, if it is not.
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.shutting_down.load(Ordering::Relaxed) {
            Some("shutting down")
        } else if !self.policy.is_loaded() {
            Some("no policy loaded")
        } else {
            None
        }
    }
}

/// Counts reloads, forgets verify's clients and answers when a policy changes (its TLS settings
/// and credentials may have), and says when the policy's credentials make no pull secret.
fn on_reload(
    metrics: Arc<Metrics>,
    checker: crate::verify::Checker,
    cloud: Arc<crate::credentials::Cloud>,
    managed_pull_secrets: bool,
) -> source::store::OnReload {
    Box::new(move |reload| match reload {
        Reload::Loaded { policy, hash } => {
            checker.reset();
            cloud.policy_changed(policy);
            metrics.policy_loaded(hash);
            if let Some(line) = policy.unused_credentials(managed_pull_secrets) {
                tracing::warn!("{line}");
            }
        }
        Reload::Refused => metrics.policy_refused(),
        Reload::SourceFailed => {
            metrics.policy.watch_errors.inc();
        }
    })
}
