//! The command line of `serve`: every flag with its default and why.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::state::{DEFAULT_BODIES_BYTES, DEFAULT_WORK_BYTES};
use crate::source::{NamespacedName, PolicySource};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s).map_err(|e| e.to_string())
}

impl ServeArgs {
    /// The HTTPS listener's address: `--listen`, or the default for the certificate in use.
    pub fn listen_addr(&self) -> SocketAddr {
        let development = self.tls_cert.is_none() && self.cert_secret.is_none();
        self.listen.unwrap_or(SocketAddr::from((
            match development {
                true => [127, 0, 0, 1],
                false => [0, 0, 0, 0],
            },
            8443,
        )))
    }
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address of the HTTPS listener. Default 0.0.0.0:8443; with the development certificate (no
    /// certificate flags) 127.0.0.1:8443, since that certificate names only this machine.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// PEM certificate (chain) to serve; re-read when it changes. Without it a development
    /// certificate for localhost is made and its CA written to --dev-cert-dir.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where the development CA is written when no certificate is given.
    #[arg(long, value_name = "DIR", default_value = "certs/dev")]
    pub dev_cert_dir: PathBuf,
    /// The policy; without one, the built-in sample policy is served.
    #[command(flatten)]
    pub policy: PolicySource,
    /// Keep the serving certificate in this Secret, made, shared by replicas and renewed by the
    /// webhook itself (instead of --tls-cert/--tls-key).
    #[arg(
        long,
        value_name = "NAMESPACE/NAME",
        conflicts_with = "tls_cert",
        requires = "cert_dns_names"
    )]
    pub cert_secret: Option<NamespacedName>,
    /// Names (and IPs) the self-managed certificate covers: the Service's DNS names.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub cert_dns_names: Vec<String>,
    /// Validity of a self-managed certificate.
    #[arg(long, value_name = "DURATION", default_value = "8760h", value_parser = duration)]
    pub cert_validity: Duration,
    /// Renew a self-managed certificate when less than this is left.
    #[arg(long, value_name = "DURATION", default_value = "720h", value_parser = duration)]
    pub cert_renew_before: Duration,
    /// How often the self-managed certificate's Secret and CA bundle are checked.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = duration)]
    pub cert_check_interval: Duration,
    /// The MutatingWebhookConfiguration whose CA bundle the self-managed CA is written into.
    #[arg(long, value_name = "NAME", requires = "cert_secret")]
    pub webhook_configuration: Option<String>,
    /// Make and keep pull secrets for registries the policy has credentials for, and attach existing
    /// dockerconfigjson Secrets (pullSecrets.fromNamespace). Needs RBAC for Secrets.
    #[arg(long)]
    pub pull_secrets: bool,
    /// Also read the cluster's OpenShift ImageDigestMirrorSet, ImageTagMirrorSet and
    /// ImageContentSourcePolicy objects (list and watch; RBAC for them), merged after the
    /// policy's own imageMirrorSets.
    #[arg(long)]
    pub watch_image_mirror_sets: bool,
    /// How often managed pull secrets are brought up to date with their credential sources.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
    pub pull_secret_resync: Duration,
    /// Where the kubelet credential provider plugins that the policy's credentialProviderConfig
    /// names are (each an executable named after its provider), as the kubelet's flag of this name.
    #[arg(long, value_name = "DIR")]
    pub image_credential_provider_bin_dir: Option<PathBuf>,
    /// How long a credential provider plugin may run before it is stopped. The kubelet allows a
    /// minute; a review waits for the plugin, and the API server waits at most 30 s for a review.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    pub credential_provider_timeout: Duration,
    /// The longest an ECR token is used before another is fetched (they are also fetched at half
    /// their 12-hour life, and at once after a registry refuses one).
    #[arg(long, value_name = "DURATION", default_value = "6h", value_parser = duration)]
    pub ecr_token_max_age: Duration,
    /// Plain-HTTP listener for /healthz, /readyz and /metrics.
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Deny a review that cannot be handled instead of admitting the pod unchanged.
    #[arg(long)]
    pub fail_closed: bool,
    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
    /// Largest request body accepted; larger ones get 413.
    #[arg(long, value_name = "BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Request body bytes held in memory at once, all requests together (bytes that arrived, not
    /// lengths announced). A request past it waits for room until --request-timeout, then gets 503.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_BODIES_BYTES)]
    pub max_bodies_bytes: usize,
    /// Working memory of the answers being made at once, all requests together: a review is
    /// counted as 24 times its body, a dry-run as 48 times. A request past it waits for room
    /// until --request-timeout, then gets 503; one larger than it runs alone.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_WORK_BYTES)]
    pub max_work_bytes: usize,
    /// Longest pause while a body arrives; past it the request gets 408 and its memory is freed.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration)]
    pub body_idle_timeout: Duration,
    /// A request's body must arrive within this time, or it gets 408. The API server gives a
    /// webhook call at most 30 s (timeoutSeconds).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
    pub request_timeout: Duration,
    /// The webhook configuration's timeoutSeconds (the chart passes it). Every review is answered
    /// a fifth before it (at least 0.5 s), with what is known by then and a warning, so that the
    /// API server never gives up on a call: a slow registry, ECR or credential provider costs
    /// verification or a pull secret, not the failure policy.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    pub webhook_timeout: Duration,
    /// Open connections per listener; past it a new connection is closed at once.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_connections: u32,
    /// A connection with no request for this long is closed. Longer than the API server's own
    /// idle timeout for webhook connections (90 s, client-go's IdleConnTimeout), so that the
    /// client always closes first and never reuses a connection the server is closing.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = duration)]
    pub idle_timeout: Duration,
    /// Require a client certificate signed by a CA in this PEM file (the API server's, as its
    /// AdmissionConfiguration names it); re-read when it changes.
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// Largest policy accepted, from a file or the ConfigMap (which holds at most 1 MiB).
    #[arg(long, value_name = "BYTES", default_value_t = crate::policy::MAX_POLICY_BYTES)]
    pub max_policy_bytes: usize,
    /// How often the policy and certificate files are checked for changes.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = duration)]
    pub reload_interval: Duration,
    /// Threads that answer requests. One core answers several thousand reviews a second, far more
    /// than clusters create pods; more threads only pay off beyond that, and on small VMs waking
    /// idle threads costs tail latency (see README, Performance).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,
    /// After SIGTERM, how long to report not-ready before the listeners close, so that load
    /// balancers stop sending new reviews first.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = duration)]
    pub drain_delay: Duration,
}
