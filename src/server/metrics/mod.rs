//! Prometheus metrics. Labels carry rule names and outcomes, never images or credentials.
//! `process` adds the standard `process_*` series.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

mod process;

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
pub struct VersionLabel {
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabel {
    pub task: String,
}

/// The background tasks that are run again when they panic (`task_restarts_total`).
pub const TASKS: [&str; 3] = [
    "pull_secret_resync",
    "policy_file_watch",
    "image_mirror_sets_watch",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabel {
    pub source: String,
    pub result: String,
}

/// Every series, grouped by what it is about. Labelled counters start at 0 for each label value
/// the code can give, so `increase()` and `rate()` see the first event.
pub struct Metrics {
    registry: Registry,
    pub reviews: Reviews,
    pub policy: PolicyMetrics,
    pub verify: VerifyMetrics,
    pub connections: Connections,
    pub tls: TlsMetrics,
    pub credentials: CredentialMetrics,
    pub task_restarts: Family<TaskLabel, Counter>,
}

pub struct Reviews {
    pub answered: Family<OutcomeLabel, Counter>,
    pub seconds: Histogram,
    pub rewrites: Family<RuleLabel, Counter>,
    pub dry_runs: Counter,
    pub refused: Family<ReasonLabel, Counter>,
}

pub struct PolicyMetrics {
    pub reloads: Family<ResultLabel, Counter>,
    pub watch_errors: Counter,
    pub info: Family<HashLabel, Gauge>,
    pub last_success: Gauge,
    /// 1 while the policy in force is not the one last offered (a refused edit), else 0.
    pub stale: Gauge,
}

pub struct VerifyMetrics {
    pub checks: Family<ResultLabel, Counter>,
    pub seconds: Histogram,
    pub fallbacks: Counter,
}

pub struct Connections {
    pub open: Gauge,
    pub refused: Counter,
}

pub struct TlsMetrics {
    pub reloads: Family<ResultLabel, Counter>,
    pub certificate_expiry: Family<SourceLabel, Gauge>,
}

pub struct CredentialMetrics {
    pub fetches: Family<FetchLabel, Counter>,
    pub pull_secret_errors: Counter,
}

/// Results of a reload or a fetch.
const RESULTS: [&str; 2] = ["success", "failure"];

fn counter(r: &mut Registry, name: &str, help: &str) -> Counter {
    let c = Counter::default();
    r.register(name, help, c.clone());
    c
}

fn gauge(r: &mut Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::default();
    r.register(name, help, g.clone());
    g
}

/// A labelled counter with a series at 0 for each of `known`.
fn counters<L>(r: &mut Registry, name: &str, help: &str, known: &[L]) -> Family<L, Counter>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, Counter>::default();
    for label in known {
        let _ = f.get_or_create(label);
    }
    r.register(name, help, f.clone());
    f
}

fn results(values: &[&str]) -> Vec<ResultLabel> {
    values
        .iter()
        .map(|v| ResultLabel {
            result: (*v).into(),
        })
        .collect()
}

impl Reviews {
    fn register(r: &mut Registry) -> Self {
        let outcomes: Vec<OutcomeLabel> = crate::admission::Outcome::LABELS
            .iter()
            .map(|o| OutcomeLabel {
                outcome: (*o).into(),
            })
            .collect();
        let reasons: Vec<ReasonLabel> = super::body::Reason::ALL
            .iter()
            .map(|r| ReasonLabel {
                reason: r.label().into(),
            })
            .collect();
        // 50 µs to about 52 s: past the API server's 30 s, so the latency alert can see a review
        // near the webhook's timeout.
        let seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 21));
        r.register(
            "review_duration_seconds",
            "Time to answer an admission review, from a read body to a written answer",
            seconds.clone(),
        );
        Reviews {
            answered: counters(
                r,
                "reviews",
                "Admission reviews answered, by outcome (mutated, unchanged, skipped, failed)",
                &outcomes,
            ),
            seconds,
            rewrites: counters(
                r,
                "rewrites",
                "Image references rewritten, by policy rule",
                &[],
            ),
            dry_runs: counter(r, "dry_runs", "Dry-run requests answered"),
            refused: counters(
                r,
                "requests_refused",
                "Requests refused before they were read, by reason (too_large, body_timeout, busy)",
                &reasons,
            ),
        }
    }
}

impl PolicyMetrics {
    fn register(r: &mut Registry) -> Self {
        let info = Family::<HashLabel, Gauge>::default();
        r.register(
            "policy_info",
            "The policy in force: 1 for the hash of its text (the first 16 hex digits of its SHA-256)",
            info.clone(),
        );
        PolicyMetrics {
            reloads: counters(
                r,
                "policy_reloads",
                "Policy loads, by result (success, failure); a failure keeps the last good policy",
                &results(&RESULTS),
            ),
            watch_errors: counter(
                r,
                "policy_watch_errors",
                "Errors of the policy ConfigMap watch (each is retried with backoff)",
            ),
            info,
            last_success: gauge(
                r,
                "policy_last_reload_success_timestamp_seconds",
                "When the policy in force was loaded (Unix time)",
            ),
            stale: gauge(
                r,
                "policy_stale",
                "1 while the last policy offered was refused and an older one is in force, else 0",
            ),
        }
    }
}

impl VerifyMetrics {
    fn register(r: &mut Registry) -> Self {
        let seconds = Histogram::new(exponential_buckets(0.000_5, 2.0, 14));
        r.register(
            "verify_check_duration_seconds",
            "Time of one manifest check against a mirror endpoint",
            seconds.clone(),
        );
        VerifyMetrics {
            checks: counters(r, "verify_checks", "Manifest checks against mirror endpoints, by result (present, absent, timeout, error); cached answers are not counted", &results(&crate::verdict::Presence::LABELS)),
            seconds,
            fallbacks: counter(r, "verify_fallbacks", "Images that verify found on no mirror endpoint, so their original reference stayed"),
        }
    }
}

impl Connections {
    fn register(r: &mut Registry) -> Self {
        Connections {
            open: gauge(
                r,
                "open_connections",
                "Connections open on the listeners (bounded by --max-connections each)",
            ),
            refused: counter(
                r,
                "connections_refused",
                "Connections closed on arrival because a listener had --max-connections open",
            ),
        }
    }
}

impl TlsMetrics {
    fn register(r: &mut Registry) -> Self {
        let certificate_expiry = Family::<SourceLabel, Gauge>::default();
        r.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the serving certificate expires (Unix time), by where it comes from (files, secret, development)",
            certificate_expiry.clone(),
        );
        TlsMetrics {
            reloads: counters(r, "tls_reloads", "Certificate loads, by result (success, failure); a failure keeps the served certificate", &results(&RESULTS)),
            certificate_expiry,
        }
    }
}

impl CredentialMetrics {
    fn register(r: &mut Registry) -> Self {
        let known: Vec<FetchLabel> = ["ecr", "provider"]
            .iter()
            .flat_map(|s| {
                RESULTS.iter().map(|r| FetchLabel {
                    source: (*s).into(),
                    result: (*r).into(),
                })
            })
            .collect();
        CredentialMetrics {
            fetches: counters(r, "credential_fetches", "Credentials fetched: ECR tokens and credential provider runs, by source (ecr, provider) and result (success, failure); a failed ECR refresh keeps the last token", &known),
            pull_secret_errors: counter(r, "pull_secret_errors", "Managed pull secrets that could not be created or updated (the Pod is admitted with a warning)"),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        // The standard process_* series, unprefixed, as every Prometheus client exports them.
        root.register_collector(Box::new(process::Process));
        let r = root.sub_registry_with_prefix("image_mirror");
        // A gauge, not an OpenMetrics info: the classic text format has no info type.
        let build = Family::<VersionLabel, Gauge>::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        r.register(
            "build_info",
            "The running build: 1, with its version",
            build,
        );
        let tasks: Vec<TaskLabel> = TASKS
            .iter()
            .map(|t| TaskLabel { task: (*t).into() })
            .collect();
        Metrics {
            reviews: Reviews::register(r),
            policy: PolicyMetrics::register(r),
            verify: VerifyMetrics::register(r),
            connections: Connections::register(r),
            tls: TlsMetrics::register(r),
            credentials: CredentialMetrics::register(r),
            task_restarts: counters(
                r,
                "task_restarts",
                "Background tasks run again after they panicked, by task; any is a bug to report",
                &tasks,
            ),
            registry: root,
        }
    }
}

impl Metrics {
    /// Counts one manifest check of `verify`, with its result and how long it took.
    pub fn verify_checked(&self, result: &str, took: std::time::Duration) {
        self.verify
            .checks
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
        self.verify.seconds.observe(took.as_secs_f64());
    }

    /// Counts one credential fetch.
    pub fn credential_fetch(&self, source: &str, ok: bool) {
        self.credentials
            .fetches
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
        self.reviews
            .refused
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
            self.tls
                .certificate_expiry
                .get_or_create(&SourceLabel {
                    source: source.into(),
                })
                .set(unix_seconds(not_after));
        }
    }

    /// A policy is in force: its hash, and now; it is the one last offered.
    pub fn policy_loaded(&self, hash: &str) {
        Metrics::reload(&self.policy.reloads, true);
        self.policy.info.clear();
        self.policy
            .info
            .get_or_create(&HashLabel { hash: hash.into() })
            .set(1);
        self.policy
            .last_success
            .set(unix_seconds(std::time::SystemTime::now()));
        self.policy.stale.set(0);
    }

    /// A policy was offered and refused: an older one stays in force.
    pub fn policy_refused(&self) {
        Metrics::reload(&self.policy.reloads, false);
        self.policy.stale.set(1);
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
