//! `serve`: the HTTPS admission server, its admin listener, reloads and graceful shutdown.

pub mod body;
pub mod conn;
pub mod metrics;
pub mod review;
pub mod routes;
pub mod selfmanaged;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::policy::SAMPLE_POLICY;
use crate::source;
use crate::source::{NamespacedName, PolicyStore, Reload};
use metrics::Metrics;
use tls::TlsError;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

fn duration(s: &str) -> Result<Duration, String> {
    crate::policy::parse_duration(s)
        .ok_or_else(|| format!("`{s}` is not a duration (500ms, 1s, 2m)"))
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address of the HTTPS listener.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
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
    /// The policy; re-read when it changes. Without it (or --policy-configmap) the built-in
    /// sample policy is served.
    #[arg(long, value_name = "FILE", conflicts_with = "policy_configmap")]
    pub policy_file: Option<PathBuf>,
    /// Watch the policy in this ConfigMap (key policy.yaml) through the Kubernetes API, with the
    /// in-cluster configuration or KUBECONFIG. Not ready until it has loaded once.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub policy_configmap: Option<NamespacedName>,
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
    /// How often managed pull secrets are brought up to date with their credential sources.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
    pub pull_secret_resync: Duration,
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
    /// Request bodies held in memory at once, all requests together. A request past it waits for
    /// room until --request-timeout, then gets 503.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_BODIES_BYTES)]
    pub max_bodies_bytes: usize,
    /// A request's body must arrive within this time, or it gets 408. The API server gives a
    /// webhook call at most 30 s (timeoutSeconds).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
    pub request_timeout: Duration,
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

/// What every handler shares.
pub struct State {
    pub policy: Arc<PolicyStore>,
    /// Set when --pull-secrets is on.
    pub pull_secrets: Option<Arc<crate::secrets::PullSecrets>>,
    pub namespace_secrets: Option<crate::secrets::NamespaceSecrets>,
    pub checker: crate::registry::Checker,
    pub metrics: Arc<Metrics>,
    pub fail_closed: bool,
    pub bodies: Arc<body::Bodies>,
    /// Whether managed pull secrets are made, for the line on unused credentials.
    managed_pull_secrets: Arc<AtomicBool>,
    shutting_down: AtomicBool,
}

/// Bodies held at once by default: two of the largest a review may be, or thousands of ordinary
/// ones (a few KB each), well inside the chart's 128 MiB memory limit.
pub const DEFAULT_BODIES_BYTES: usize = 16 * 1024 * 1024;

impl State {
    pub fn new(fail_closed: bool, max_body: usize) -> Self {
        State::with_policy_limit(fail_closed, max_body, crate::policy::MAX_POLICY_BYTES)
    }

    pub fn with_policy_limit(fail_closed: bool, max_body: usize, max_policy: usize) -> Self {
        let metrics = Arc::new(Metrics::default());
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
        let checker = crate::registry::Checker::new(observe);
        let managed_pull_secrets = Arc::new(AtomicBool::new(false));
        let policy = PolicyStore::new(
            max_policy,
            policy_observer(
                metrics.clone(),
                checker.clone(),
                managed_pull_secrets.clone(),
            ),
        );
        let bodies = body::Bodies::new(
            max_body,
            DEFAULT_BODIES_BYTES,
            Duration::from_secs(30),
            metrics.clone(),
        );
        State {
            policy: Arc::new(policy),
            pull_secrets: None,
            namespace_secrets: None,
            checker,
            metrics,
            fail_closed,
            bodies: Arc::new(bodies),
            managed_pull_secrets,
            shutting_down: AtomicBool::new(false),
        }
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
    managed_pull_secrets: Arc<AtomicBool>,
) -> source::store::Observer {
    Box::new(move |reload| match reload {
        Reload::Loaded(policy) => {
            checker.reset();
            Metrics::reload(&metrics.policy_reloads, true);
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

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Plain => builder.init(),
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.workers))
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut state =
        State::with_policy_limit(args.fail_closed, args.max_body_bytes, args.max_policy_bytes);
    state.bodies = Arc::new(body::Bodies::new(
        args.max_body_bytes,
        args.max_bodies_bytes,
        args.request_timeout,
        state.metrics.clone(),
    ));
    let client =
        if args.policy_configmap.is_some() || args.cert_secret.is_some() || args.pull_secrets {
            Some(kube::Client::try_default().await.context(
                "cannot reach the Kubernetes API (in-cluster configuration or KUBECONFIG)",
            )?)
        } else {
            None
        };
    let mut tasks = tokio::task::JoinSet::new();
    if let (true, Some(client)) = (args.pull_secrets, client.clone()) {
        let pull_secrets = Arc::new(crate::secrets::PullSecrets::new(client.clone()));
        state.checker = state.checker.with_pull_secrets(pull_secrets.clone());
        state.pull_secrets = Some(pull_secrets);
        state.managed_pull_secrets.store(true, Ordering::Relaxed);
        let (store, watch) = crate::secrets::watch_namespace_secrets(client);
        state.namespace_secrets = Some(store);
        tasks.spawn(watch);
    }
    let state = Arc::new(state);

    let mut policy_text = None;
    if let (Some(target), Some(client)) = (args.policy_configmap.clone(), client.clone()) {
        tracing::info!(configmap = %target, "watching the policy ConfigMap; not ready until it loads");
        tasks.spawn(source::configmap::watch(
            client,
            target,
            state.policy.clone(),
        ));
    } else {
        let (origin, text) = match &args.policy_file {
            Some(path) => (
                path.display().to_string(),
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
            ),
            None => {
                tracing::info!("no --policy-file: serving the built-in sample policy");
                ("built-in sample".to_owned(), SAMPLE_POLICY.to_owned())
            }
        };
        if let Err(why) = state.policy.apply(&origin, text.clone()).await {
            anyhow::bail!("{origin} is not a valid policy: {why}");
        }
        policy_text = Some(text);
    }

    let self_managed = match (&args.cert_secret, &client) {
        (Some(secret), Some(client)) => {
            let settings = selfmanaged::Settings {
                secret: secret.clone(),
                dns_names: args.cert_dns_names.clone(),
                validity: args.cert_validity,
                renew_before: args.cert_renew_before,
                webhook_configuration: args.webhook_configuration.clone(),
            };
            if settings.renew_before >= settings.validity {
                anyhow::bail!("--cert-renew-before must be shorter than --cert-validity");
            }
            let material = selfmanaged::ensure(client, &settings, std::time::SystemTime::now())
                .await
                .with_context(|| {
                    format!("cannot get a serving certificate from Secret {secret}")
                })?;
            Some((client.clone(), settings, material))
        }
        _ => None,
    };
    let (cert_pem, key_pem) = match (&args.tls_cert, &args.tls_key, &self_managed) {
        (Some(c), Some(k), _) => (
            std::fs::read(c).with_context(|| format!("cannot read {}", c.display()))?,
            std::fs::read(k).with_context(|| format!("cannot read {}", k.display()))?,
        ),
        (_, _, Some((_, _, m))) => (m.cert.clone().into_bytes(), m.key.clone().into_bytes()),
        _ => dev_certificate(&args.dev_cert_dir, args.listen.port())?,
    };
    let key = tls::certified_key(&cert_pem, &key_pem).context("cannot use the TLS certificate")?;
    Metrics::reload(&state.metrics.tls_reloads, true);
    let resolver = Arc::new(tls::Resolver::new(key));
    let client_ca = match &args.client_ca_file {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?),
        None => None,
    };
    let config = tls::server_config(resolver.clone(), client_ca.as_deref())
        .context("cannot use the TLS settings")?;
    let tls_config: conn::TlsConfig = Arc::new(ArcSwap::from_pointee(config));

    if let (Some(path), Some(text)) = (args.policy_file.clone(), policy_text) {
        let state = state.clone();
        let loaded = vec![text.into_bytes()];
        tasks.spawn(source::file::watch(
            vec![path.clone()],
            loaded,
            args.reload_interval,
            move |read| {
                let state = state.clone();
                let origin = path.display().to_string();
                async move {
                    match read {
                        Ok(files) => {
                            let text = files.into_iter().next().unwrap_or_default();
                            let text = String::from_utf8(text).unwrap_or_else(|e| {
                                String::from_utf8_lossy(e.as_bytes()).into_owned()
                            });
                            // A refusal is logged and counted inside; the last good policy stays.
                            let _ = state.policy.apply(&origin, text).await;
                        }
                        Err(e) => state.policy.refuse(&origin, &e),
                    }
                }
            },
        ));
    }
    if let (Some(c), Some(k)) = (args.tls_cert.clone(), args.tls_key.clone()) {
        let resolver = resolver.clone();
        tasks.spawn(watch_tls(
            "serving certificate",
            vec![c, k],
            vec![cert_pem, key_pem],
            args.reload_interval,
            state.metrics.clone(),
            |files| tls::certified_key(&files[0], &files[1]),
            move |key| resolver.swap(key),
        ));
    }
    if let (Some(path), Some(loaded)) = (args.client_ca_file.clone(), client_ca) {
        let (resolver, tls_config) = (resolver.clone(), tls_config.clone());
        tasks.spawn(watch_tls(
            "client CA",
            vec![path],
            vec![loaded],
            args.reload_interval,
            state.metrics.clone(),
            move |files| tls::server_config(resolver.clone(), Some(&files[0])),
            move |config| tls_config.store(Arc::new(config)),
        ));
    }

    if let Some(pull_secrets) = state.pull_secrets.clone() {
        tasks.spawn(resync_pull_secrets(
            pull_secrets,
            state.clone(),
            args.pull_secret_resync,
        ));
    }
    if let Some((client, settings, material)) = self_managed {
        tasks.spawn(keep_certificate(
            client,
            settings,
            material,
            resolver.clone(),
            state.clone(),
            args.cert_check_interval,
        ));
    }

    let limits = conn::Limits {
        max_connections: args.max_connections as usize,
        idle_timeout: args.idle_timeout,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, "webhook listening (HTTPS)");
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(conn::accept_loop(
        listener,
        Some(tls_config),
        routes::webhook(state.clone()),
        limits,
        state.metrics.clone(),
        stop_rx.clone(),
    ));
    if let Some(addr) = args.admin_listen {
        let admin = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        tracing::info!(address = %admin.local_addr()?, "admin listening (HTTP)");
        servers.spawn(conn::accept_loop(
            admin,
            None,
            routes::admin(state.clone()),
            limits,
            state.metrics.clone(),
            stop_rx,
        ));
    }

    shutdown_signal().await;
    tracing::info!(
        "shutting down: not ready, then closing listeners and finishing reviews in flight"
    );
    state.shutting_down.store(true, Ordering::Relaxed);
    tokio::time::sleep(args.drain_delay).await;
    stop_tx.send_replace(true);
    while servers.join_next().await.is_some() {}
    tasks.abort_all();
    tracing::info!("stopped");
    Ok(())
}

/// Watches TLS files and applies each version that parses; one that does not (or cannot be read)
/// keeps what is served. Either way it is logged and counted in `tls_reloads_total`.
fn watch_tls<T>(
    what: &'static str,
    paths: Vec<PathBuf>,
    loaded: Vec<Vec<u8>>,
    every: Duration,
    metrics: Arc<Metrics>,
    parse: impl Fn(&[Vec<u8>]) -> Result<T, TlsError> + Send + 'static,
    apply: impl Fn(T) + Send + 'static,
) -> impl std::future::Future<Output = ()> {
    source::file::watch(paths, loaded, every, move |read| {
        match read
            .map_err(TlsError::Unreadable)
            .and_then(|files| parse(&files))
        {
            Ok(value) => {
                apply(value);
                Metrics::reload(&metrics.tls_reloads, true);
                tracing::info!(what, "reloaded");
            }
            Err(e) => {
                Metrics::reload(&metrics.tls_reloads, false);
                tracing::error!(what, error = %e, "rejected; keeping the previous one");
            }
        }
        std::future::ready(())
    })
}

/// Brings managed pull secrets up to date with their sources, so a rotation needs no Pod change.
async fn resync_pull_secrets(
    pull_secrets: Arc<crate::secrets::PullSecrets>,
    state: Arc<State>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(policy) = state.policy.current() else {
            continue;
        };
        match pull_secrets.resync(&policy).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(updated = n, "managed pull secrets brought up to date"),
            Err(e) => {
                state.metrics.pull_secret_errors.inc();
                tracing::warn!(error = %e, "cannot resync managed pull secrets");
            }
        }
    }
}

/// Keeps a self-managed certificate current: picks up renewals by other replicas, renews it when
/// due, and keeps the CA bundle in the webhook configuration (an upgrade may have blanked it).
async fn keep_certificate(
    client: kube::Client,
    settings: selfmanaged::Settings,
    mut served: selfmanaged::Material,
    resolver: Arc<tls::Resolver>,
    state: Arc<State>,
    every: Duration,
) {
    // Until the bundle is out (the webhook configuration may not exist yet while a release
    // installs), retry every few seconds rather than every `every`.
    const RETRY: Duration = Duration::from_secs(2);
    let mut wait = Duration::ZERO;
    loop {
        tokio::time::sleep(wait).await;
        wait = every;
        match selfmanaged::ensure(&client, &settings, std::time::SystemTime::now()).await {
            Ok(m) if m != served => match tls::certified_key(m.cert.as_bytes(), m.key.as_bytes()) {
                Ok(key) => {
                    // The API server must trust the new CA before the new certificate is served.
                    if let Some(name) = &settings.webhook_configuration {
                        if let Err(e) = selfmanaged::publish_ca(&client, name, &m).await {
                            tracing::error!(error = %e, "cannot publish the renewed CA bundle; serving the old certificate");
                            continue;
                        }
                    }
                    resolver.swap(key);
                    served = m;
                    Metrics::reload(&state.metrics.tls_reloads, true);
                    tracing::info!("serving the renewed certificate");
                }
                Err(e) => {
                    Metrics::reload(&state.metrics.tls_reloads, false);
                    tracing::error!(error = %e, "the certificate Secret holds an unusable pair");
                }
            },
            Ok(_) => {}
            Err(e) => {
                Metrics::reload(&state.metrics.tls_reloads, false);
                tracing::error!(error = %e, "cannot check the certificate Secret; serving the current certificate");
            }
        }
        if let Some(name) = &settings.webhook_configuration {
            if let Err(e) = selfmanaged::publish_ca(&client, name, &served).await {
                tracing::error!(error = %e, webhook_configuration = name, "cannot publish the CA bundle; the API server may not trust this webhook");
                wait = every.min(RETRY);
            }
        }
    }
}

/// Makes a development CA and serving certificate, and writes the CA where `curl --cacert` can use
/// it; the log line holds a command that works as it is copied.
fn dev_certificate(dir: &std::path::Path, port: u16) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let dev = tls::generate(&["localhost", "127.0.0.1", "::1"])?;
    let ca_path = dir.join("ca.crt");
    match std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&ca_path, &dev.ca_pem)) {
        Ok(()) => tracing::info!(
            "serving a development certificate for localhost; try: curl --cacert {} 'https://localhost:{port}/dry-run?image=nginx:1.25'",
            ca_path.display()
        ),
        Err(e) => {
            tracing::warn!(ca = %ca_path.display(), error = %e, "serving a development certificate; its CA could not be written")
        }
    }
    Ok((dev.cert_pem.into_bytes(), dev.key_pem.into_bytes()))
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
