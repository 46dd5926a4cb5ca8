//! `serve`: the HTTPS admission server and its admin listener, put together from the parts below,
//! and graceful shutdown.

pub(crate) mod args;
pub mod body;
pub mod conn;
pub mod metrics;
pub mod review;
pub mod routes;
pub mod selfmanaged;
mod state;
mod tasks;
pub mod tls;

pub use args::{LogFormat, ServeArgs};
pub use state::{AppState, StateConfig, DEFAULT_BODIES_BYTES};

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::policy::SAMPLE_POLICY;
use crate::source;
use metrics::Metrics;
use tasks::{keep_certificate, resync_pull_secrets, supervised, watch_policy_file, watch_tls};

/// Libraries whose debug and trace lines show what goes over the wire (an ECR token in an AWS
/// answer, credentials in a Secret written to the API): held at info whatever RUST_LOG says, so
/// that no level shows a secret.
const WIRE_LOGGERS: [&str; 12] = [
    "aws_config",
    "aws_credential_types",
    "aws_sdk_ecr",
    "aws_sigv4",
    "aws_smithy_http_client",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_types",
    "hyper",
    "h2",
    "kube_client",
    "reqwest",
];

fn init_logging(format: LogFormat) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    for target in WIRE_LOGGERS {
        if let Ok(directive) = format!("{target}=info").parse() {
            filter = filter.add_directive(directive);
        }
    }
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
    let client =
        if args.policy.policy_configmap.is_some()
            || args.cert_secret.is_some()
            || args.pull_secrets
            || args.watch_image_mirror_sets
        {
            Some(kube::Client::try_default().await.context(
                "cannot reach the Kubernetes API (in-cluster configuration or KUBECONFIG)",
            )?)
        } else {
            None
        };
    let mut tasks = tokio::task::JoinSet::new();
    let state = Arc::new(AppState::build(state_config(&args, &client, &mut tasks)));
    if let (true, Some(client)) = (args.watch_image_mirror_sets, &client) {
        let (client, store) = (client.clone(), state.policy.clone());
        tasks.spawn(supervised(
            "image_mirror_sets_watch",
            state.metrics.clone(),
            move || source::mirror_sets::watch(client.clone(), store.clone()),
        ));
    }
    start_policy(&args, &state, client.clone(), &mut tasks).await?;
    let tls_config = start_tls(&args, &state, client, &mut tasks).await?;
    if let Some(pull_secrets) = state.pull_secrets.clone() {
        let (resynced, every) = (state.clone(), args.pull_secret_resync);
        tasks.spawn(supervised(
            "pull_secret_resync",
            state.metrics.clone(),
            move || resync_pull_secrets(pull_secrets.clone(), resynced.clone(), every),
        ));
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let servers = listen(&args, &state, tls_config, stop_rx).await?;
    shutdown_signal().await;
    tracing::info!(
        "shutting down: not ready, then closing listeners and finishing reviews in flight"
    );
    state.shutting_down.store(true, Ordering::Relaxed);
    tokio::time::sleep(args.drain_delay).await;
    stop_tx.send_replace(true);
    servers.join_all().await;
    tasks.abort_all();
    tracing::info!("stopped");
    Ok(())
}

/// The state's parts from the flags; with --pull-secrets, the namespaces' Secrets watched in
/// `tasks`. `POD_NAMESPACE` (the chart's downward API) is read here, at the edge.
fn state_config(
    args: &ServeArgs,
    client: &Option<kube::Client>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> StateConfig {
    let pull_secrets = match (args.pull_secrets, client) {
        (true, Some(client)) => {
            let (index, watch) = crate::secrets::watch_namespace_secrets(client.clone());
            tasks.spawn(watch);
            Some(state::PullSecretsConfig {
                client: client.clone(),
                index,
                // Where credentialsSecret references are read: the webhook's own namespace.
                own_namespace: std::env::var("POD_NAMESPACE").ok(),
            })
        }
        _ => None,
    };
    StateConfig {
        fail_closed: args.fail_closed,
        limits: state::Limits {
            bodies: body::BodyLimits {
                max_body: args.max_body_bytes,
                bodies: args.max_bodies_bytes,
                work: args.max_work_bytes,
                timeout: args.request_timeout,
                idle: args.body_idle_timeout,
            },
            max_policy: args.max_policy_bytes,
            webhook_timeout: args.webhook_timeout,
        },
        credentials: crate::credentials::CloudSettings {
            plugin_dir: args.image_credential_provider_bin_dir.clone(),
            plugin_timeout: args.credential_provider_timeout,
            ecr_max_age: args.ecr_token_max_age,
        },
        pull_secrets,
    }
}

/// Binds the HTTPS listener and the admin one (if asked for) and serves them until `stop`.
async fn listen(
    args: &ServeArgs,
    state: &Arc<AppState>,
    tls_config: Arc<ArcSwap<rustls::ServerConfig>>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinSet<()>> {
    let limits = conn::ConnectionLimits {
        max_connections: args.max_connections as usize,
        idle_timeout: args.idle_timeout,
    };
    let bind = |addr: std::net::SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))
    };
    let listener = bind(args.listen_addr()).await?;
    tracing::info!(address = %listener.local_addr()?, "webhook listening (HTTPS)");
    let mut servers = tokio::task::JoinSet::new();
    let webhook = routes::webhook(state.clone());
    let metrics = state.metrics.clone();
    servers.spawn(conn::accept_loop(
        listener,
        Some(tls_config),
        webhook,
        limits,
        metrics,
        stop.clone(),
    ));
    if let Some(addr) = args.admin_listen {
        let admin = bind(addr).await?;
        tracing::info!(address = %admin.local_addr()?, "admin listening (HTTP)");
        let (routes, metrics) = (routes::admin(state.clone()), state.metrics.clone());
        servers.spawn(conn::accept_loop(
            admin, None, routes, limits, metrics, stop,
        ));
    }
    Ok(servers)
}

/// Loads the first policy (a file, or the built-in sample) and watches it, or watches the ConfigMap.
async fn start_policy(
    args: &ServeArgs,
    state: &Arc<AppState>,
    client: Option<kube::Client>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> anyhow::Result<()> {
    if let (Some(target), Some(client)) = (args.policy.policy_configmap.clone(), client) {
        tracing::info!(configmap = %target, "watching the policy ConfigMap; not ready until it loads");
        tasks.spawn(source::configmap::watch(
            client,
            target,
            state.policy.clone(),
            std::env::var("POD_NAME").ok(),
        ));
        return Ok(());
    }
    let Some(path) = &args.policy.policy_file else {
        tracing::info!("no --policy-file: serving the built-in sample policy");
        if let Err(why) = state
            .policy
            .apply("built-in sample", SAMPLE_POLICY.to_owned())
            .await
        {
            anyhow::bail!("the built-in sample policy is not valid: {why}");
        }
        return Ok(());
    };
    let origin = path.display().to_string();
    let text = source::file::read_capped(path, state.policy.max_bytes())?;
    let text = String::from_utf8(text).with_context(|| format!("{origin} is not UTF-8 text"))?;
    if let Err(why) = state.policy.apply(&origin, text.clone()).await {
        anyhow::bail!("{origin} is not a valid policy: {why}");
    }
    let (path, store, every) = (path.clone(), state.policy.clone(), args.reload_interval);
    let text = text.into_bytes();
    tasks.spawn(supervised(
        "policy_file_watch",
        state.metrics.clone(),
        move || watch_policy_file(path.clone(), text.clone(), every, store.clone()),
    ));
    Ok(())
}

/// The serving certificate (self-managed in a Secret, from files, or a development one) and the
/// client CA, each with what keeps it current.
/// With --cert-secret, the certificate kept in that Secret (made if missing), with what keeps it.
async fn self_managed_certificate(
    args: &ServeArgs,
    client: Option<kube::Client>,
) -> anyhow::Result<
    Option<(
        kube::Client,
        selfmanaged::CertificateSettings,
        selfmanaged::Material,
    )>,
> {
    let (Some(secret), Some(client)) = (&args.cert_secret, client) else {
        return Ok(None);
    };
    let settings = selfmanaged::CertificateSettings {
        secret: secret.clone(),
        dns_names: args.cert_dns_names.clone(),
        validity: args.cert_validity,
        renew_before: args.cert_renew_before,
        webhook_configuration: args.webhook_configuration.clone(),
    };
    if settings.renew_before >= settings.validity {
        anyhow::bail!("--cert-renew-before must be shorter than --cert-validity");
    }
    let material = selfmanaged::ensure(&client, &settings, std::time::SystemTime::now())
        .await
        .with_context(|| format!("cannot get a serving certificate from Secret {secret}"))?;
    Ok(Some((client, settings, material)))
}

async fn start_tls(
    args: &ServeArgs,
    state: &Arc<AppState>,
    client: Option<kube::Client>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> anyhow::Result<conn::TlsConfig> {
    let self_managed = self_managed_certificate(args, client).await?;
    let (source, (cert_pem, key_pem)) = match (&args.tls_cert, &args.tls_key, &self_managed) {
        (Some(c), Some(k), _) => (
            "files",
            (
                source::file::read_capped(c, source::file::MAX_TLS_FILE)?,
                source::file::read_capped(k, source::file::MAX_TLS_FILE)?,
            ),
        ),
        (_, _, Some((_, _, m))) => (
            "secret",
            (m.cert.clone().into_bytes(), m.key.clone().into_bytes()),
        ),
        _ => (
            "development",
            dev_certificate(&args.dev_cert_dir, args.listen_addr().port())?,
        ),
    };
    let key = tls::certified_key(&cert_pem, &key_pem).context("cannot use the TLS certificate")?;
    Metrics::reload(&state.metrics.tls.reloads, true);
    state.metrics.certificate(source, &cert_pem);
    let resolver = Arc::new(tls::Resolver::new(key));
    let client_ca = match &args.client_ca_file {
        Some(p) => Some(source::file::read_capped(p, source::file::MAX_TLS_FILE)?),
        None => None,
    };
    let config = tls::server_config(resolver.clone(), client_ca.as_deref())
        .context("cannot use the TLS settings")?;
    let tls_config: conn::TlsConfig = Arc::new(ArcSwap::from_pointee(config));

    if let (Some(c), Some(k)) = (args.tls_cert.clone(), args.tls_key.clone()) {
        let (resolver, metrics) = (resolver.clone(), state.metrics.clone());
        tasks.spawn(watch_tls(
            "serving certificate",
            vec![c, k],
            vec![cert_pem, key_pem],
            args.reload_interval,
            state.metrics.clone(),
            |files| Ok((tls::certified_key(&files[0], &files[1])?, files[0].clone())),
            move |(key, cert_pem)| {
                resolver.swap(key);
                metrics.certificate("files", &cert_pem);
            },
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
    if let Some((client, settings, material)) = self_managed {
        tasks.spawn(keep_certificate(
            client,
            settings,
            material,
            resolver,
            state.clone(),
            args.cert_check_interval,
        ));
    }
    Ok(tls_config)
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
