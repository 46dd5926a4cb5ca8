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
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HashLabel {
    pub hash: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabel {
    pub task: String,
}

/// The background tasks that are run again when they panic (`task_restarts_total`).
pub const TASKS: [&str; 2] = ["pull_secret_resync", "policy_file_watch"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabel {
    pub source: String,
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
    pub verify_fallbacks: Counter,
    pub certificate_expiry: Family<SourceLabel, Gauge>,
    pub policy_info: Family<HashLabel, Gauge>,
    pub policy_last_success: Gauge,
    pub credential_fetches: Family<FetchLabel, Counter>,
    pub task_restarts: Family<TaskLabel, Counter>,
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
        // 50 µs to about 52 s: past the API server's 30 s, so the latency alert can see a review
        // near the webhook's timeout.
        let review_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 21));
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
        let verify_fallbacks = Counter::default();
        registry.register(
            "verify_fallbacks",
            "Images that verify found on no mirror endpoint, so their original reference stayed",
            verify_fallbacks.clone(),
        );
        let certificate_expiry = Family::<SourceLabel, Gauge>::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the serving certificate expires (Unix time), by where it comes from (files, secret, development)",
            certificate_expiry.clone(),
        );
        let policy_info = Family::<HashLabel, Gauge>::default();
        registry.register(
            "policy_info",
            "The policy in force: 1 for the hash of its text (the first 16 hex digits of its SHA-256)",
            policy_info.clone(),
        );
        let policy_last_success = Gauge::default();
        registry.register(
            "policy_last_reload_success_timestamp_seconds",
            "When the policy in force was loaded (Unix time)",
            policy_last_success.clone(),
        );
        let credential_fetches = Family::<FetchLabel, Counter>::default();
        // Every series from the start, so an alert on failures sees a 0 before the first one.
        for source in ["ecr", "provider"] {
            for result in ["success", "failure"] {
                let _ = credential_fetches.get_or_create(&FetchLabel {
                    source: source.into(),
                    result: result.into(),
                });
            }
        }
        registry.register(
            "credential_fetches",
            "Credentials fetched: ECR tokens and credential provider runs, by source (ecr, provider) and result (success, failure); a failed ECR refresh keeps the last token",
            credential_fetches.clone(),
        );
        let task_restarts = Family::<TaskLabel, Counter>::default();
        for task in TASKS {
            let _ = task_restarts.get_or_create(&TaskLabel { task: task.into() });
        }
        registry.register(
            "task_restarts",
            "Background tasks run again after they panicked, by task; any is a bug to report",
            task_restarts.clone(),
        );
        Metrics {
            registry,
            credential_fetches,
            task_restarts,
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
            verify_fallbacks,
            certificate_expiry,
            policy_info,
            policy_last_success,
        }
    }
}

impl Metrics {
    /// Counts one manifest check of `verify`, with its result and how long it took.
    pub fn verify_checked(&self, result: &str, took: std::time::Duration) {
        self.verify_checks
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
        self.verify_seconds.observe(took.as_secs_f64());
    }

    /// Counts one credential fetch.
    pub fn credential_fetch(&self, source: &str, ok: bool) {
        self.credential_fetches
            .get_or_create(&FetchLabel {
                source: source.to_owned(),
                result: if ok { "success" } else { "failure" }.to_owned(),
            })
            .inc();
    }

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

    /// The classic Prometheus text format: as OpenMetrics, but a counter's HELP and TYPE name its
    /// `_total` samples, and no `# EOF`.
    pub fn encode_classic(&self) -> String {
        let open = self.encode();
        let counters: std::collections::HashSet<&str> = open
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(open.len());
        for line in open.lines() {
            let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
                let rest = line.strip_prefix(prefix)?;
                let (name, tail) = rest.split_once(' ')?;
                counters
                    .contains(name)
                    .then(|| format!("{prefix}{name}_total {tail}"))
            });
            match (renamed, line) {
                (_, "# EOF") => continue,
                (Some(l), _) => out.push_str(&l),
                (None, l) if l.starts_with("# UNIT ") => continue,
                (None, l) => out.push_str(l),
            }
            out.push('\n');
        }
        out
    }

    /// The serving certificate now served, from `source`: its expiry.
    pub fn certificate(&self, source: &str, cert_pem: &[u8]) {
        if let Ok((not_after, _)) = super::tls::inspect(cert_pem) {
            self.certificate_expiry
                .get_or_create(&SourceLabel {
                    source: source.into(),
                })
                .set(unix_seconds(not_after));
        }
    }

    /// A policy is in force: its hash, and now.
    pub fn policy_loaded(&self, hash: &str) {
        self.policy_info.clear();
        self.policy_info
            .get_or_create(&HashLabel { hash: hash.into() })
            .set(1);
        self.policy_last_success
            .set(unix_seconds(std::time::SystemTime::now()));
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

fn unix_seconds(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
