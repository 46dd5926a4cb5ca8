//! Manifest checks against mirror endpoints (I/O), for `verify`: the first endpoint that has the
//! image wins; none: the original reference stays. Answers are cached briefly, concurrent checks of
//! one manifest share one request, and a Pod's checks are bounded by `verify.timeout`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::policy::Policy;
use crate::rewrite::candidates;
use crate::sync::lock;
pub use crate::verdict::{Absence, Candidate, Presence, Tried, Verdict, Verdicts};

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

type Pending = crate::flight::Flight<Verdict>;

/// Bounds the answer cache; past it, expired answers go, then all.
const MAX_CACHED: usize = 50_000;

/// Called with each answer: its label and how long the request took.
pub type Observer = Arc<dyn Fn(&str, Duration) + Send + Sync>;

const TIMED_OUT: &str = "timed out (verify.timeout)";
const REFUSED: &str = "unauthorized: the credentials were refused";

/// The most of a registry's answer body that is read: token answers are a few KB.
pub const MAX_REGISTRY_BODY: usize = 64 * 1024;
/// Redirects followed per request, as Docker's client allows a few.
const MAX_REDIRECTS: usize = 3;

/// Checks images against their endpoints. An image's check runs as a task of its own, so it
/// finishes and caches its answers even when the review that started it has stopped waiting,
/// and every review asking for the same image meanwhile waits on that one task. Clones share all.
#[derive(Clone)]
pub struct Checker {
    inner: Arc<Inner>,
}

struct Inner {
    clients: Mutex<HashMap<String, reqwest::Client>>,
    /// Answers by manifest URL, with when they expire.
    cache: Mutex<HashMap<String, (Instant, Presence)>>,
    /// Image checks under way, by their candidates' answer keys.
    inflight: crate::flight::Flights<String, Verdict>,
    observe: Observer,
    /// Resolves credentials kept in Secrets (`serve --pull-secrets`).
    pull_secrets: std::sync::OnceLock<Arc<crate::secrets::PullSecrets>>,
    /// ECR tokens and credential providers (serve).
    cloud: std::sync::OnceLock<Arc<crate::credentials::Cloud>>,
}

impl Checker {
    pub fn new(observe: Observer) -> Self {
        Checker {
            inner: Arc::new(Inner {
                clients: Mutex::default(),
                cache: Mutex::default(),
                inflight: crate::flight::Flights::default(),
                observe,
                pull_secrets: std::sync::OnceLock::new(),
                cloud: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Reads credentials through `pull_secrets`, which also knows `credentialsSecret`.
    pub fn with_pull_secrets(self, pull_secrets: Arc<crate::secrets::PullSecrets>) -> Self {
        self.inner.pull_secrets.get_or_init(|| pull_secrets);
        self
    }

    /// Fetches ECR tokens and runs credential providers through `cloud`.
    pub fn with_cloud(self, cloud: Arc<crate::credentials::Cloud>) -> Self {
        self.inner.cloud.get_or_init(|| cloud);
        self
    }

    /// Forgets clients and answers, so a changed policy's TLS settings and credentials apply.
    pub fn reset(&self) {
        lock(&self.inner.clients).clear();
        lock(&self.inner.cache).clear();
    }

    /// The verdicts for `images` when the policy has `verify` on, by `verify.timeout` or the
    /// caller's `deadline` (a review's), whichever comes first; `None` when it is off.
    pub async fn verdicts(
        &self,
        policy: &Arc<Policy>,
        images: &[String],
        deadline: tokio::time::Instant,
    ) -> Option<Verdicts> {
        match policy.verify.enabled {
            true => Some(self.verify_until(policy, images, Some(deadline)).await),
            false => None,
        }
    }

    /// Checks the endpoints of every image, in order, until `verify.timeout`; images left
    /// unanswered by then fail over to their original reference. Answers already cached are
    /// given at once, without a timer or a task.
    pub async fn verify(&self, policy: &Arc<Policy>, images: &[String]) -> Verdicts {
        self.verify_until(policy, images, None).await
    }

    async fn verify_until(
        &self,
        policy: &Arc<Policy>,
        images: &[String],
        by: Option<tokio::time::Instant>,
    ) -> Verdicts {
        let deadline = deadline_in(policy.verify.timeout);
        let deadline = by.map_or(deadline, |by| deadline.min(by));
        let mut verdicts = HashMap::with_capacity(images.len());
        let mut waiting = Vec::new();
        for image in images {
            let candidates = candidates(policy, image);
            match self.inner.cached(policy, &candidates, false) {
                Some(v) => {
                    verdicts.insert(image.clone(), v);
                }
                None => {
                    let pending = self.inner.start(policy, &candidates);
                    waiting.push((image, candidates, pending));
                }
            }
        }
        let answered = waiting
            .into_iter()
            .map(|(image, candidates, pending)| async move {
                let verdict = match tokio::time::timeout_at(deadline, pending).await {
                    Ok(v) => v,
                    Err(_) => self
                        .inner
                        .cached(policy, &candidates, true)
                        .unwrap_or_default(),
                };
                (image.clone(), verdict)
            });
        verdicts.extend(futures::future::join_all(answered).await);
        verdicts
    }
}

impl Inner {
    fn cached_answer(&self, url: &str) -> Option<Presence> {
        match lock(&self.cache).get(url) {
            Some((until, answer)) if Instant::now() < *until => Some(answer.clone()),
            _ => None,
        }
    }

    fn store(&self, url: &str, answer: &Presence, policy: &Policy) {
        let ttl = match answer {
            Presence::Present { .. } => policy.verify.cache_ttl,
            Presence::Absent { .. } => policy.verify.negative_cache_ttl,
        };
        let mut cache = lock(&self.cache);
        if cache.len() >= MAX_CACHED {
            let now = Instant::now();
            cache.retain(|_, (until, _)| *until > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(
            url.to_owned(),
            (crate::duration::after(Instant::now(), ttl), answer.clone()),
        );
    }

    /// The verdict the cache gives for these candidates. An endpoint without a cached answer
    /// means there is no verdict yet; past the deadline (`timed_out`) it counts as timed out
    /// and ends the walk.
    fn cached(
        &self,
        policy: &Policy,
        candidates: &[Candidate],
        timed_out: bool,
    ) -> Option<Verdict> {
        let mut verdict = Verdict::default();
        for (i, c) in candidates.iter().enumerate() {
            let answer = match (self.cached_answer(&answer_key(policy, c)), timed_out) {
                (Some(a), _) => a,
                (None, true) => {
                    verdict.tried.push(Tried {
                        endpoint: c.endpoint_url.clone(),
                        answer: Presence::absent(Absence::TimedOut, TIMED_OUT),
                    });
                    break;
                }
                (None, false) => return None,
            };
            if verdict.record(i, c, answer) {
                break;
            }
        }
        Some(verdict)
    }

    /// The check of one image's candidates: the one under way, or a new task.
    fn start(self: &Arc<Self>, policy: &Arc<Policy>, candidates: &[Candidate]) -> Pending {
        let key = candidates
            .iter()
            .map(|c| answer_key(policy, c))
            .collect::<Vec<_>>()
            .join("\n");
        let (inner, policy, candidates) = (self.clone(), policy.clone(), candidates.to_vec());
        self.inflight.join(
            key,
            move || inner.check(policy, candidates),
            |_| Verdict::default(),
        )
    }

    /// Asks the endpoints in order, each answer from the cache or a HEAD, until one has the
    /// image or `verify.timeout` has passed; caches what it learns.
    async fn check(self: Arc<Self>, policy: Arc<Policy>, candidates: Vec<Candidate>) -> Verdict {
        let deadline = deadline_in(policy.verify.timeout);
        let mut verdict = Verdict::default();
        for (i, c) in candidates.iter().enumerate() {
            let cache_key = answer_key(&policy, c);
            let answer = match self.cached_answer(&cache_key) {
                Some(a) => a,
                None => {
                    let started = Instant::now();
                    let answer = match tokio::time::timeout_at(deadline, self.ask(&policy, c)).await
                    {
                        Ok(a) => a,
                        Err(_) => {
                            // The request was dropped unanswered; count it here.
                            let a = Presence::absent(Absence::TimedOut, TIMED_OUT);
                            (self.observe)(a.label(), started.elapsed());
                            a
                        }
                    };
                    self.store(&cache_key, &answer, &policy);
                    answer
                }
            };
            if verdict.record(i, c, answer) || tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        verdict
    }

    /// A client with the TLS settings `configs` has for `host`.
    fn client(&self, policy: &Policy, host: &str) -> Result<reqwest::Client, ClientError> {
        if let Some(c) = lock(&self.clients).get(host) {
            return Ok(c.clone());
        }
        let mut b = reqwest::Client::builder()
            .redirect(redirect_policy())
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(cfg) = policy.config_for(host) {
            let tls = &cfg.tls;
            if let Some(ca) = &tls.ca_file {
                let pem = read_file(ca)?;
                for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                    ClientError::Ca {
                        path: ca.clone(),
                        source,
                    }
                })? {
                    b = b.add_root_certificate(cert);
                }
            }
            if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
                let mut pem = read_file(cert)?;
                pem.extend(read_file(key)?);
                b = b.identity(reqwest::Identity::from_pem(&pem).map_err(ClientError::Identity)?);
            }
            if tls.insecure_skip_verify {
                b = b.danger_accept_invalid_certs(true);
            }
        }
        let client = b.build().map_err(ClientError::Build)?;
        lock(&self.clients).insert(host.to_owned(), client.clone());
        Ok(client)
    }

    /// Whether the endpoint has the image. With `pinDigest`, a tag's answer is only as good as
    /// the digest it names: that manifest is asked for too, because a pull-through cache can
    /// still answer for a tag whose manifest it no longer has, and the node will pull the digest.
    async fn ask(&self, policy: &Policy, c: &Candidate) -> Presence {
        let answer = self.request(policy, &c.host, &c.manifest_url).await;
        let (Presence::Present { digest: Some(d) }, true) = (&answer, policy.verify.pin_digest)
        else {
            return answer;
        };
        let Some((base, reference)) = c.manifest_url.rsplit_once("/manifests/") else {
            return answer;
        };
        if reference == d {
            return answer;
        }
        match self
            .request(policy, &c.host, &format!("{base}/manifests/{d}"))
            .await
        {
            Presence::Present { .. } => answer,
            Presence::Absent {
                kind: Absence::NotFound,
                ..
            } => Presence::absent(
                Absence::NotFound,
                format!("not found: the tag names {d}, but that manifest is gone"),
            ),
            Presence::Absent { reason, kind } => Presence::absent(
                kind,
                format!("{reason} (asking for {d}, which the tag names)"),
            ),
        }
    }

    /// One manifest HEAD, with the credentials the policy has for the host if it asks for them.
    async fn request(&self, policy: &Policy, host: &str, url: &str) -> Presence {
        let started = Instant::now();
        let answer = match self.client(policy, host) {
            Ok(client) => head_manifest(&client, url, || self.credentials(policy, host, url)).await,
            Err(e) => Presence::error(e.to_string()),
        };
        if matches!(&answer, Presence::Absent { reason, .. } if reason == REFUSED) {
            if let Some(cloud) = self.cloud.get() {
                cloud.refused(host);
            }
        }
        (self.observe)(answer.label(), started.elapsed());
        answer
    }

    /// `user:password` for a registry, from its `configs` source or a credential provider.
    async fn credentials(
        &self,
        policy: &Policy,
        host: &str,
        url: &str,
    ) -> Result<Option<String>, String> {
        let image = image_of(host, url);
        if policy.read_source(host, &image).is_none() {
            return Ok(None);
        }
        let resolved = match self.pull_secrets.get() {
            Some(ps) => ps.basic_credentials(policy, host, &image).await,
            None => crate::secrets::resolve_entry(
                policy,
                host,
                &image,
                None,
                self.cloud.get().map(|c| &**c),
            )
            .await
            .map(|e| crate::dockerconfig::basic_of(&e)),
        };
        resolved.map_err(|e| e.to_string())
    }
}

/// The repository a manifest URL asks about (`host/library/nginx`), as a credential provider is
/// asked about it.
fn image_of(host: &str, url: &str) -> String {
    let repo = url
        .split_once("/v2/")
        .and_then(|(_, rest)| rest.rsplit_once("/manifests/"))
        .map_or("", |(repo, _)| repo);
    format!("{host}/{repo}")
}

/// Where an endpoint's answer for a candidate is cached: a tag answer confirmed by its digest
/// (`pinDigest`) is kept apart from a plain one.
fn answer_key<'a>(policy: &Policy, c: &'a Candidate) -> std::borrow::Cow<'a, str> {
    if policy.verify.pin_digest {
        format!("{} (digest confirmed)", c.manifest_url).into()
    } else {
        c.manifest_url.as_str().into()
    }
}

fn basic_header(userpass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(userpass)
    )
}

/// HEAD the manifest; on a challenge, answer it (Basic, or a Bearer token from the realm) once,
/// with the credentials `credentials` finds (asked only then).
async fn head_manifest<F, Fut>(client: &reqwest::Client, url: &str, credentials: F) -> Presence
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>, String>>,
{
    let head = |auth: Option<String>| {
        let mut req = client.head(url).header(reqwest::header::ACCEPT, ACCEPT);
        if let Some(a) = auth {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        req.send()
    };
    let resp = match head(None).await {
        Ok(r) => r,
        Err(e) => return transport(&e),
    };
    let resp = if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let creds = match credentials().await {
            Ok(c) => c,
            Err(why) => return Presence::error(format!("unauthorized: {why}")),
        };
        let creds = creds.as_deref();
        let auth = match challenge.split_once(' ') {
            Some((scheme, params)) if scheme.eq_ignore_ascii_case("bearer") => {
                match bearer_token(client, url, params, creds).await {
                    Ok(token) => format!("Bearer {token}"),
                    Err(reason) => return Presence::error(reason.to_string()),
                }
            }
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("basic") => match creds {
                Some(c) => basic_header(c),
                None => {
                    return Presence::error(
                        "unauthorized: the registry wants credentials and the policy has none",
                    )
                }
            },
            _ => return Presence::error("unauthorized"),
        };
        match head(Some(auth)).await {
            Ok(r) => r,
            Err(e) => return transport(&e),
        }
    } else {
        resp
    };
    match resp.status().as_u16() {
        200 => Presence::Present {
            // Only a well-formed digest is ever put into a reference.
            digest: resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .filter(|d| crate::reference::is_valid_digest(d))
                .map(str::to_owned),
        },
        404 => Presence::absent(Absence::NotFound, "not found"),
        401 | 403 => Presence::error(REFUSED),
        code => Presence::error(format!("answered {code}")),
    }
}

/// Follows a few redirects, never from HTTPS to plain HTTP: a registry reached over TLS must not
/// send the check (and the token request's credentials) into clear text.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.url().scheme() != "https"
            && attempt.previous().iter().any(|u| u.scheme() == "https");
        if downgrade {
            attempt.error("redirect from HTTPS to plain HTTP refused")
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}

/// A request that got no answer: timed out, or failed on the way.
fn transport(e: &reqwest::Error) -> Presence {
    let kind = match e.is_timeout() {
        true => Absence::TimedOut,
        false => Absence::Error,
    };
    Presence::absent(kind, transport_reason(e))
}

fn transport_reason(e: &reqwest::Error) -> String {
    if e.is_redirect() {
        "refused a redirect (from HTTPS to plain HTTP, or more than 3)".into()
    } else if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        "request failed".into()
    }
}

/// Why no client could be made for a registry's TLS settings.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("CA {path}: {source}")]
    Ca {
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("client certificate: {0}")]
    Identity(#[source] reqwest::Error),
    #[error("{0}")]
    Build(#[source] reqwest::Error),
}

fn read_file(path: &str) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Why the token flow gave no token; each says what the dry-run shows for the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("unauthorized: bearer challenge without a realm")]
    NoRealm,
    #[error("unauthorized: the token service is plain HTTP for a registry reached over HTTPS; the credentials are not sent there")]
    ClearText,
    #[error("token: {0}")]
    Transport(String),
    #[error("unauthorized: the token service answered {0}")]
    Status(u16),
    #[error("token: {0}")]
    Body(String),
    #[error("token: unreadable answer")]
    Unreadable(#[source] serde_json::Error),
    #[error("token: no token in the answer")]
    Missing,
}

/// The token flow of the distribution spec: GET realm?service&scope, with Basic credentials if any.
async fn bearer_token(
    client: &reqwest::Client,
    registry_url: &str,
    params: &str,
    creds: Option<&str>,
) -> Result<String, TokenError> {
    let mut fields: HashMap<String, String> = HashMap::new();
    for part in split_params(params) {
        if let Some((k, v)) = part.split_once('=') {
            fields.insert(
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_owned(),
            );
        }
    }
    let realm = fields.get("realm").ok_or(TokenError::NoRealm)?;
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(s) = fields.get("service") {
        query.push(("service", s));
    }
    if let Some(s) = fields.get("scope") {
        query.push(("scope", s));
    }
    let mut req = client.get(realm.as_str()).query(&query);
    if creds.is_some() && !may_send_credentials(registry_url, realm) {
        return Err(TokenError::ClearText);
    }
    if let Some(c) = creds {
        req = req.header(reqwest::header::AUTHORIZATION, basic_header(c));
    }
    let resp = req
        .send()
        .await
        .map_err(|e| TokenError::Transport(transport_reason(&e)))?;
    if !resp.status().is_success() {
        return Err(TokenError::Status(resp.status().as_u16()));
    }
    let body = read_capped(resp, MAX_REGISTRY_BODY)
        .await
        .map_err(TokenError::Body)?;
    #[derive(serde::Deserialize)]
    struct TokenAnswer {
        token: Option<String>,
        access_token: Option<String>,
    }
    let answer: TokenAnswer = serde_json::from_slice(&body).map_err(TokenError::Unreadable)?;
    answer
        .token
        .or(answer.access_token)
        .ok_or(TokenError::Missing)
}

/// Reads a body of at most `max` bytes; a larger one is refused as soon as it shows.
async fn read_capped(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let too_large = || format!("the answer is over {} KiB", max / 1024);
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport_reason(&e))? {
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Whether credentials for a registry may go to its token service: not in clear text when the
/// registry itself was reached over TLS (a challenge must not downgrade them).
fn may_send_credentials(registry_url: &str, realm: &str) -> bool {
    let https = |u: &str| {
        u.get(..8)
            .is_some_and(|p| p.eq_ignore_ascii_case("https://"))
    };
    https(realm) || !https(registry_url)
}

/// Splits `a="x,y",b=z` at the commas outside quotes.
fn split_params(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// `d` from now on tokio's clock, never past what the clock holds.
fn deadline_in(d: Duration) -> tokio::time::Instant {
    tokio::time::Instant::from_std(crate::duration::after(Instant::now(), d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_go_to_a_plain_http_token_service_of_a_tls_registry() {
        let reg = "https://mirror.example.com/v2/a/manifests/1";
        assert!(may_send_credentials(reg, "https://auth.example.com/token"));
        assert!(may_send_credentials(reg, "HTTPS://auth.example.com/token"));
        assert!(!may_send_credentials(reg, "http://auth.example.com/token"));
        assert!(!may_send_credentials(reg, "auth.example.com/token"));
        // A plain-HTTP registry already sends them in clear text (the policy chose it).
        let plain = "http://127.0.0.1:5000/v2/a/manifests/1";
        assert!(may_send_credentials(plain, "http://127.0.0.1:5000/token"));
    }

    #[test]
    fn challenge_parameters_keep_quoted_commas() {
        let parts = split_params(
            r#"realm="https://auth.example.com/token",service="reg",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(parts.len(), 3);
        assert!(parts[2].contains("pull,push"));
    }
}
