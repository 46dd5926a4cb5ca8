//! What runs beside the listeners: certificate reloads and renewals, the pull-secret resync.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::metrics::Metrics;
use super::selfmanaged;
use super::state::AppState;
use super::tls::{self, TlsError};
use crate::source::{self, PolicyStore};

/// Runs a background task, and again (after a second, counted in `task_restarts_total` and
/// logged) when it panics: a task that died would leave the server serving stale state and saying
/// nothing. Ends when the task returns or this future is dropped (which stops the task too).
pub(super) async fn supervised<F, Fut>(task: &'static str, metrics: Arc<Metrics>, make: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    loop {
        let handle = tokio::spawn(make());
        let _stop = AbortOnDrop(handle.abort_handle());
        match handle.await {
            Err(e) if e.is_panic() => {
                metrics
                    .task_restarts
                    .get_or_create(&super::metrics::TaskLabel { task: task.into() })
                    .inc();
                tracing::error!(task, "background task panicked; running it again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            _ => return,
        }
    }
}

/// Re-reads the policy file when it changes and hands it to the store, which keeps the last good
/// policy when a text does not load.
pub(super) fn watch_policy_file(
    path: PathBuf,
    loaded: Vec<u8>,
    every: Duration,
    store: Arc<PolicyStore>,
) -> impl std::future::Future<Output = ()> {
    let origin = path.display().to_string();
    let max = store.max_bytes();
    source::file::watch(vec![path], vec![loaded], max, every, move |read| {
        let (store, origin) = (store.clone(), origin.clone());
        async move {
            match read {
                Ok(files) => {
                    let text = files.into_iter().next().unwrap_or_default();
                    let text = String::from_utf8(text)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                    // A refusal is logged and counted by the store; the last good policy stays.
                    let _ = store.apply(&origin, text).await;
                }
                Err(e) => store.refuse(&origin, &e.to_string()),
            }
        }
    })
}

/// Watches TLS files and applies each version that parses; one that does not (or cannot be read)
/// keeps what is served. Either way it is logged and counted in `tls_reloads_total`.
pub(super) fn watch_tls<T>(
    what: &'static str,
    paths: Vec<PathBuf>,
    loaded: Vec<Vec<u8>>,
    every: Duration,
    metrics: Arc<Metrics>,
    parse: impl Fn(&[Vec<u8>]) -> Result<T, TlsError> + Send + 'static,
    apply: impl Fn(T) + Send + 'static,
) -> impl std::future::Future<Output = ()> {
    source::file::watch(
        paths,
        loaded,
        source::file::MAX_TLS_FILE,
        every,
        move |read| {
            match read
                .map_err(TlsError::Unreadable)
                .and_then(|files| parse(&files))
            {
                Ok(value) => {
                    apply(value);
                    Metrics::reload(&metrics.tls.reloads, true);
                    tracing::info!(what, "reloaded");
                }
                Err(e) => {
                    Metrics::reload(&metrics.tls.reloads, false);
                    tracing::error!(what, error = %e, "rejected; keeping the previous one");
                }
            }
            std::future::ready(())
        },
    )
}

/// Brings managed pull secrets up to date with their sources, so a rotation needs no Pod change:
/// every `every`, and as soon as an ECR token is due (checked each second).
pub(super) async fn resync_pull_secrets(
    pull_secrets: Arc<crate::secrets::PullSecrets>,
    state: Arc<AppState>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(every));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<tokio::time::Instant> = None;
    loop {
        tick.tick().await;
        let due = last.is_none_or(|l| l.elapsed() >= every) || state.cloud.ecr_due();
        let Some(policy) = state.policy.current().filter(|_| due) else {
            continue;
        };
        last = Some(tokio::time::Instant::now());
        match pull_secrets.resync(&policy).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(updated = n, "managed pull secrets brought up to date"),
            Err(e) => {
                state.metrics.credentials.pull_secret_errors.inc();
                tracing::warn!(error = %e, "cannot resync managed pull secrets");
            }
        }
    }
}

/// Keeps a self-managed certificate current: picks up renewals by other replicas, renews it when
/// due, and keeps the CA bundle in the webhook configuration (an upgrade may have blanked it).
pub(super) async fn keep_certificate(
    client: kube::Client,
    settings: selfmanaged::CertificateSettings,
    mut served: selfmanaged::Material,
    resolver: Arc<tls::Resolver>,
    state: Arc<AppState>,
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
                    state.metrics.certificate("secret", m.cert.as_bytes());
                    served = m;
                    Metrics::reload(&state.metrics.tls.reloads, true);
                    tracing::info!("serving the renewed certificate");
                }
                Err(e) => {
                    Metrics::reload(&state.metrics.tls.reloads, false);
                    tracing::error!(error = %e, "the certificate Secret holds an unusable pair");
                }
            },
            Ok(_) => {}
            Err(e) => {
                Metrics::reload(&state.metrics.tls.reloads, false);
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
