//! Prometheus metrics. Labels carry rule names and outcomes, never images or credentials.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

pub struct Metrics {
    registry: Registry,
    pub reviews: Family<OutcomeLabel, Counter>,
    pub review_seconds: Histogram,
    pub rewrites: Family<RuleLabel, Counter>,
    pub policy_reloads: Family<ResultLabel, Counter>,
    pub tls_reloads: Family<ResultLabel, Counter>,
    pub policy_watch_errors: Counter,
    pub pull_secret_errors: Counter,
    pub verify_checks: Family<ResultLabel, Counter>,
    pub verify_seconds: Histogram,
    pub dry_runs: Counter,
    pub open_connections: Gauge,
    pub connections_refused: Counter,
    pub requests_refused: Family<ReasonLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("image_mirror");
        let reviews = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "reviews",
            "Admission reviews answered, by outcome (mutated, unchanged, skipped, failed)",
            reviews.clone(),
        );
        // 50 µs to about 0.8 s.
        let review_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 15));
        registry.register(
            "review_duration_seconds",
            "Time to answer an admission review, from a read body to a written answer",
            review_seconds.clone(),
        );
        let rewrites = Family::<RuleLabel, Counter>::default();
        registry.register(
            "rewrites",
            "Image references rewritten, by policy rule",
            rewrites.clone(),
        );
        let policy_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy loads, by result (success, failure); a failure keeps the last good policy",
            policy_reloads.clone(),
        );
        let tls_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "tls_reloads",
            "Certificate loads, by result (success, failure); a failure keeps the served certificate",
            tls_reloads.clone(),
        );
        let policy_watch_errors = Counter::default();
        registry.register(
            "policy_watch_errors",
            "Errors of the policy ConfigMap watch (each is retried with backoff)",
            policy_watch_errors.clone(),
        );
        let pull_secret_errors = Counter::default();
        registry.register(
            "pull_secret_errors",
            "Managed pull secrets that could not be created or updated (the Pod is admitted with a warning)",
            pull_secret_errors.clone(),
        );
        let verify_checks = Family::<ResultLabel, Counter>::default();
        registry.register(
            "verify_checks",
            "Manifest checks against mirror endpoints, by result (present, absent, timeout, error); cached answers are not counted",
            verify_checks.clone(),
        );
        let verify_seconds = Histogram::new(exponential_buckets(0.000_5, 2.0, 14));
        registry.register(
            "verify_check_duration_seconds",
            "Time of one manifest check against a mirror endpoint",
            verify_seconds.clone(),
        );
        let dry_runs = Counter::default();
        registry.register("dry_runs", "Dry-run requests answered", dry_runs.clone());
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Connections open on the listeners (bounded by --max-connections each)",
            open_connections.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections closed on arrival because a listener had --max-connections open",
            connections_refused.clone(),
        );
        let requests_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "requests_refused",
            "Requests refused before they were read, by reason (too_large, body_timeout, busy)",
            requests_refused.clone(),
        );
        Metrics {
            registry,
            reviews,
            review_seconds,
            rewrites,
            policy_reloads,
            tls_reloads,
            policy_watch_errors,
            pull_secret_errors,
            verify_checks,
            verify_seconds,
            dry_runs,
            open_connections,
            connections_refused,
            requests_refused,
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn refused(&self, reason: &str) {
        self.requests_refused
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn reload(family: &Family<ResultLabel, Counter>, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        family
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }
}
