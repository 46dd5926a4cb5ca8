//! Manifest checks against mirror endpoints (I/O), for `verify`: the first endpoint that has the
//! image wins; none: the original reference stays. Answers are cached briefly, concurrent checks of
//! one manifest share one request, and a Pod's checks are bounded by `verify.timeout`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use futures::future::{BoxFuture, FutureExt, Shared};
use serde::Serialize;

use crate::policy::{Policy, Scheme};
use crate::rewrite::{candidates, Candidate};

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// What one endpoint said about one manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "result")]
pub enum Answer {
    /// It has the manifest; the digest it answered with, when it said one.
    Present { digest: Option<String> },
    /// It does not have it, or would not say: why, for the dry-run and the logs.
    Absent { reason: String },
}

impl Answer {
    fn absent(reason: impl Into<String>) -> Self {
        Answer::Absent {
            reason: reason.into(),
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Answer::Present { .. } => "present",
            Answer::Absent { reason } if reason.starts_with("not found") => "absent",
            Answer::Absent { reason } if reason.contains("timed out") => "timeout",
            Answer::Absent { .. } => "error",
        }
    }
}

/// One endpoint tried for an image, as the dry-run shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tried {
    pub endpoint: String,
    #[serde(flatten)]
    pub answer: Answer,
}

/// The outcome of checking one image's endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Verdict {
    /// Index of the chosen candidate; `None`: no endpoint has the image (failover to the original).
    pub chosen: Option<usize>,
    pub digest: Option<String>,
    pub tried: Vec<Tried>,
}

type Pending = Shared<BoxFuture<'static, Answer>>;

/// Bounds the answer cache; past it, expired answers go, then all.
const MAX_CACHED: usize = 50_000;

/// Called with each answer: its label and how long the request took.
pub type Observer = Arc<dyn Fn(&str, Duration) + Send + Sync>;

pub struct Checker {
    clients: Mutex<HashMap<String, reqwest::Client>>,
    cache: Mutex<HashMap<String, (Instant, Answer)>>,
    inflight: Mutex<HashMap<String, Pending>>,
    observe: Observer,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Checker {
    pub fn new(observe: Observer) -> Self {
        Checker {
            clients: Mutex::default(),
            cache: Mutex::default(),
            inflight: Mutex::default(),
            observe,
        }
    }

    /// A client with the TLS settings `configs` has for `host`.
    fn client(&self, policy: &Policy, host: &str) -> Result<reqwest::Client, String> {
        if let Some(c) = lock(&self.clients).get(host) {
            return Ok(c.clone());
        }
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::limited(3))
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(cfg) = policy.config_for(host) {
            let tls = &cfg.tls;
            if let Some(ca) = &tls.ca_file {
                let pem = std::fs::read(ca).map_err(|e| format!("cannot read CA {ca}: {e}"))?;
                for cert in reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| format!("CA {ca}: {e}"))?
                {
                    b = b.add_root_certificate(cert);
                }
            }
            if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
                let mut pem =
                    std::fs::read(cert).map_err(|e| format!("cannot read {cert}: {e}"))?;
                pem.extend(std::fs::read(key).map_err(|e| format!("cannot read {key}: {e}"))?);
                b = b.identity(
                    reqwest::Identity::from_pem(&pem)
                        .map_err(|e| format!("client certificate: {e}"))?,
                );
            }
            if tls.insecure_skip_verify {
                b = b.danger_accept_invalid_certs(true);
            }
        }
        let client = b.build().map_err(|e| e.to_string())?;
        lock(&self.clients).insert(host.to_owned(), client.clone());
        Ok(client)
    }

    /// Forgets clients, so new TLS settings apply (call when the policy changes).
    pub fn reset_clients(&self) {
        lock(&self.clients).clear();
    }

    /// Checks the endpoints of every image, in order, until `deadline`; images left unanswered by
    /// then fail over to their original reference.
    pub async fn verify(&self, policy: &Policy, images: &[String]) -> HashMap<String, Verdict> {
        let deadline = tokio::time::Instant::now() + policy.verify.timeout;
        let checks = images.iter().map(|image| async move {
            let verdict = self.verify_image(policy, image, deadline).await;
            (image.clone(), verdict)
        });
        futures::future::join_all(checks)
            .await
            .into_iter()
            .collect()
    }

    async fn verify_image(
        &self,
        policy: &Policy,
        image: &str,
        deadline: tokio::time::Instant,
    ) -> Verdict {
        let mut verdict = Verdict::default();
        for (i, c) in candidates(policy, image).iter().enumerate() {
            let answer = match tokio::time::timeout_at(deadline, self.check(policy, c)).await {
                Ok(a) => a,
                Err(_) => Answer::absent("timed out (verify.timeout)"),
            };
            let present = match &answer {
                Answer::Present { digest } => {
                    verdict.digest = digest.clone();
                    true
                }
                Answer::Absent { .. } => false,
            };
            verdict.tried.push(Tried {
                endpoint: c.endpoint_url.clone(),
                answer,
            });
            if present {
                verdict.chosen = Some(i);
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        verdict
    }

    /// One manifest check, from the cache, shared with a check already under way, or made now.
    async fn check(&self, policy: &Policy, c: &Candidate) -> Answer {
        let key = c.manifest_url.clone();
        if let Some((until, answer)) = lock(&self.cache).get(&key) {
            if Instant::now() < *until {
                return answer.clone();
            }
        }
        let pending = {
            let mut inflight = lock(&self.inflight);
            match inflight.get(&key) {
                Some(p) => p.clone(),
                None => {
                    let request = self.request(policy, c);
                    let p = request.boxed().shared();
                    inflight.insert(key.clone(), p.clone());
                    p
                }
            }
        };
        let answer = pending.await;
        lock(&self.inflight).remove(&key);
        let ttl = match answer {
            Answer::Present { .. } => policy.verify.cache_ttl,
            Answer::Absent { .. } => policy.verify.negative_cache_ttl,
        };
        let mut cache = lock(&self.cache);
        if cache.len() >= MAX_CACHED {
            let now = Instant::now();
            cache.retain(|_, (until, _)| *until > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now() + ttl, answer.clone()));
        answer
    }

    fn request(
        &self,
        policy: &Policy,
        c: &Candidate,
    ) -> impl std::future::Future<Output = Answer> + Send + 'static {
        let client = self.client(policy, &c.host);
        let creds = basic_credentials(policy, &c.host);
        let url = c.manifest_url.clone();
        let observe = self.observe.clone();
        async move {
            let started = Instant::now();
            let answer = match client {
                Ok(client) => head_manifest(&client, &url, creds.as_deref()).await,
                Err(e) => Answer::absent(e),
            };
            observe(answer.label(), started.elapsed());
            answer
        }
    }
}

/// `user:password` for a registry from the policy's inline credentials, if any.
fn basic_credentials(policy: &Policy, host: &str) -> Option<String> {
    let creds = policy.config_for(host)?.credentials.as_ref()?;
    if let Some(auth) = &creds.auth {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.expose())
            .ok()?;
        return String::from_utf8(decoded).ok();
    }
    Some(format!(
        "{}:{}",
        creds.username.as_deref()?,
        creds.password.as_ref()?.expose()
    ))
}

fn basic_header(userpass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(userpass)
    )
}

/// HEAD the manifest; on a challenge, answer it (Basic, or a Bearer token from the realm) once.
async fn head_manifest(client: &reqwest::Client, url: &str, creds: Option<&str>) -> Answer {
    let head = |auth: Option<String>| {
        let mut req = client.head(url).header(reqwest::header::ACCEPT, ACCEPT);
        if let Some(a) = auth {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        req.send()
    };
    let resp = match head(None).await {
        Ok(r) => r,
        Err(e) => return Answer::absent(transport_reason(&e)),
    };
    let resp = if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let auth = match challenge.split_once(' ') {
            Some((scheme, params)) if scheme.eq_ignore_ascii_case("bearer") => {
                match bearer_token(client, params, creds).await {
                    Ok(token) => format!("Bearer {token}"),
                    Err(reason) => return Answer::absent(reason),
                }
            }
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("basic") => match creds {
                Some(c) => basic_header(c),
                None => {
                    return Answer::absent(
                        "unauthorized: the registry wants credentials and the policy has none",
                    )
                }
            },
            _ => return Answer::absent("unauthorized"),
        };
        match head(Some(auth)).await {
            Ok(r) => r,
            Err(e) => return Answer::absent(transport_reason(&e)),
        }
    } else {
        resp
    };
    match resp.status().as_u16() {
        200 => Answer::Present {
            digest: resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        },
        404 => Answer::absent("not found"),
        401 | 403 => Answer::absent("unauthorized: the credentials were refused"),
        code => Answer::absent(format!("answered {code}")),
    }
}

fn transport_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        "request failed".into()
    }
}

/// The token flow of the distribution spec: GET realm?service&scope, with Basic credentials if any.
async fn bearer_token(
    client: &reqwest::Client,
    params: &str,
    creds: Option<&str>,
) -> Result<String, String> {
    let mut fields: HashMap<String, String> = HashMap::new();
    for part in split_params(params) {
        if let Some((k, v)) = part.split_once('=') {
            fields.insert(
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_owned(),
            );
        }
    }
    let realm = fields
        .get("realm")
        .ok_or("unauthorized: bearer challenge without a realm")?;
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(s) = fields.get("service") {
        query.push(("service", s));
    }
    if let Some(s) = fields.get("scope") {
        query.push(("scope", s));
    }
    let mut req = client.get(realm.as_str()).query(&query);
    if let Some(c) = creds {
        req = req.header(reqwest::header::AUTHORIZATION, basic_header(c));
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("token: {}", transport_reason(&e)))?;
    if !resp.status().is_success() {
        return Err(format!(
            "unauthorized: the token service answered {}",
            resp.status().as_u16()
        ));
    }
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|_| "token: unreadable answer".to_owned())?;
    body.get("token")
        .or_else(|| body.get("access_token"))
        .and_then(|t| t.as_str())
        .map(str::to_owned)
        .ok_or_else(|| "token: no token in the answer".to_owned())
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

/// The request URL's scheme for an endpoint.
pub fn scheme_of(s: Scheme) -> &'static str {
    match s {
        Scheme::Http => "http",
        Scheme::Https => "https",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parameters_keep_quoted_commas() {
        let parts = split_params(
            r#"realm="https://auth.example.com/token",service="reg",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(parts.len(), 3);
        assert!(parts[2].contains("pull,push"));
    }
}
