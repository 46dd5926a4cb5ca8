//! What every handler shares: the policy store, verify, pull secrets, metrics and limits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::body;
use super::metrics::{self, Metrics};
use crate::source;
use crate::source::{PolicyStore, Reload};

/// What every handler shares.
pub struct State {
    pub policy: Arc<PolicyStore>,
    /// Set when --pull-secrets is on.
    pub pull_secrets: Option<Arc<crate::secrets::PullSecrets>>,
    pub namespace_secrets: Option<crate::secrets::NamespaceSecrets>,
    pub checker: crate::registry::Checker,
    /// ECR tokens and credential providers, for pull secrets and verify.
    pub cloud: Arc<crate::credentials::Cloud>,
    pub metrics: Arc<Metrics>,
    pub fail_closed: bool,
    pub bodies: Arc<body::Bodies>,
    /// Every review is answered within this (`Limits::review_time`).
    pub review_time: Duration,
    /// Whether managed pull secrets are made, for the line on unused credentials.
    pub(super) managed_pull_secrets: Arc<AtomicBool>,
    pub(super) shutting_down: AtomicBool,
}

/// Bodies held at once by default: two of the largest a review may be, or thousands of ordinary
/// ones (a few KB each), well inside the chart's 128 MiB memory limit.
pub const DEFAULT_BODIES_BYTES: usize = 16 * 1024 * 1024;
/// Working memory of the answers being made, by default: with the bodies and the server's own
/// ~15 MiB, inside the chart's 128 MiB.
pub const DEFAULT_WORK_BYTES: usize = 64 * 1024 * 1024;

/// The limits `State` enforces on requests and policies (README, Limits).
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

impl State {
    /// A state with the default limits but the largest body.
    pub fn new(fail_closed: bool, max_body: usize) -> Self {
        State::with_limits(fail_closed, Limits::new(max_body))
    }

    pub fn with_limits(fail_closed: bool, limits: Limits) -> Self {
        State::with_credentials(fail_closed, limits, crate::credentials::Settings::default())
    }

    /// A state whose ECR tokens and credential providers follow `settings`.
    pub fn with_credentials(
        fail_closed: bool,
        limits: Limits,
        settings: crate::credentials::Settings,
    ) -> Self {
        let metrics = Arc::new(Metrics::default());
        let counted = metrics.clone();
        let cloud = Arc::new(crate::credentials::Cloud::new(
            settings,
            Arc::new(move |fetch, ok| counted.credential_fetch(fetch.label(), ok)),
        ));
        let observed = metrics.clone();
        let observe: crate::registry::Observer = Arc::new(move |result: &str, took: Duration| {
            observed
                .verify_checks
                .get_or_create(&metrics::ResultLabel {
                    result: result.into(),
                })
                .inc();
            observed.verify_seconds.observe(took.as_secs_f64());
        });
        let checker = crate::registry::Checker::new(observe).with_cloud(cloud.clone());
        let managed_pull_secrets = Arc::new(AtomicBool::new(false));
        let policy = PolicyStore::new(
            limits.max_policy,
            policy_observer(
                metrics.clone(),
                checker.clone(),
                cloud.clone(),
                managed_pull_secrets.clone(),
            ),
        );
        let bodies = body::Bodies::new(limits.bodies, metrics.clone());
        State {
            policy: Arc::new(policy),
            pull_secrets: None,
            namespace_secrets: None,
            checker,
            cloud,
            metrics,
            fail_closed,
            bodies: Arc::new(bodies),
            review_time: limits.review_time(),
            managed_pull_secrets,
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
fn policy_observer(
    metrics: Arc<Metrics>,
    checker: crate::registry::Checker,
    cloud: Arc<crate::credentials::Cloud>,
    managed_pull_secrets: Arc<AtomicBool>,
) -> source::store::Observer {
    Box::new(move |reload| match reload {
        Reload::Loaded { policy, hash } => {
            checker.reset();
            cloud.policy_changed(policy);
            Metrics::reload(&metrics.policy_reloads, true);
            metrics.policy_loaded(hash);
            if let Some(line) =
                policy.unused_credentials(managed_pull_secrets.load(Ordering::Relaxed))
            {
                tracing::warn!("{line}");
            }
        }
        Reload::Refused => Metrics::reload(&metrics.policy_reloads, false),
        Reload::SourceFailed => {
            metrics.policy_watch_errors.inc();
        }
    })
}
