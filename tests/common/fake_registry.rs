//! A fake OCI registry on loopback that counts manifest requests and can answer 404, 500, demand
//! Basic or Bearer authentication, or be slow.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

pub const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

#[derive(Default)]
struct Inner {
    /// Repository paths (`library/nginx`) that exist, any tag.
    present: HashSet<String>,
    heads: HashMap<String, usize>,
    fail_with: Option<u16>,
    delay: Duration,
    /// `user:password` that unlocks it, and whether through a Bearer token.
    login: Option<(String, bool)>,
    tokens_issued: usize,
    digest_heads: usize,
    /// Tags still answer, but manifests asked for by digest are gone (a stale pull-through cache).
    digests_lost: bool,
    /// A header every request must carry, or 403.
    required_header: Option<(String, String)>,
}

#[derive(Clone)]
pub struct FakeRegistry {
    pub port: u16,
    inner: Arc<Mutex<Inner>>,
}

impl FakeRegistry {
    pub async fn start() -> FakeRegistry {
        let inner: Arc<Mutex<Inner>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = Router::new()
            .route("/v2/{*rest}", get(manifest))
            .route("/token", get(token))
            .with_state((inner.clone(), port));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeRegistry { port, inner }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn add(&self, repo: &str) {
        self.inner.lock().unwrap().present.insert(repo.to_owned());
    }

    pub fn require_header(&self, name: &str, value: &str) {
        self.inner.lock().unwrap().required_header = Some((name.to_owned(), value.to_owned()));
    }

    pub fn fail_with(&self, code: u16) {
        self.inner.lock().unwrap().fail_with = Some(code);
    }

    pub fn delay(&self, d: Duration) {
        self.inner.lock().unwrap().delay = d;
    }

    pub fn lose_digests(&self) {
        self.inner.lock().unwrap().digests_lost = true;
    }

    /// Manifest requests by digest so far, any repository.
    pub fn digest_heads(&self) -> usize {
        self.inner.lock().unwrap().digest_heads
    }

    pub fn require(&self, userpass: &str, bearer: bool) {
        self.inner.lock().unwrap().login = Some((userpass.to_owned(), bearer));
    }

    /// Manifest requests for a repository so far.
    pub fn heads(&self, repo: &str) -> usize {
        self.inner
            .lock()
            .unwrap()
            .heads
            .get(repo)
            .copied()
            .unwrap_or(0)
    }

    pub fn tokens_issued(&self) -> usize {
        self.inner.lock().unwrap().tokens_issued
    }
}

type Shared = (Arc<Mutex<Inner>>, u16);

fn basic(userpass: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(userpass)
    )
}

async fn manifest(
    State((inner, port)): State<Shared>,
    Path(rest): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some((repo, reference)) = rest.rsplit_once("/manifests/") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let by_digest = reference.starts_with("sha256:");
    let (delay, fail, login, present) = {
        let mut i = inner.lock().unwrap();
        if let Some((name, value)) = &i.required_header {
            if headers.get(name.as_str()).and_then(|v| v.to_str().ok()) != Some(value.as_str()) {
                return StatusCode::FORBIDDEN.into_response();
            }
        }
        *i.heads.entry(repo.to_owned()).or_default() += 1;
        i.digest_heads += usize::from(by_digest);
        (
            i.delay,
            i.fail_with,
            i.login.clone(),
            i.present.contains(repo) && !(by_digest && i.digests_lost),
        )
    };
    tokio::time::sleep(delay).await;
    if let Some(code) = fail {
        return StatusCode::from_u16(code).unwrap().into_response();
    }
    if let Some((userpass, bearer)) = login {
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let ok = if bearer {
            given == format!("Bearer token-for-{userpass}")
        } else {
            given == basic(&userpass)
        };
        if !ok {
            let challenge = if bearer {
                format!("Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake\",scope=\"repository:{repo}:pull\"")
            } else {
                "Basic realm=\"fake\"".to_owned()
            };
            return (StatusCode::UNAUTHORIZED, [("www-authenticate", challenge)]).into_response();
        }
    }
    if present {
        (
            StatusCode::OK,
            [
                ("docker-content-digest", DIGEST),
                ("content-type", "application/vnd.oci.image.index.v1+json"),
            ],
        )
            .into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

async fn token(State((inner, _)): State<Shared>, headers: HeaderMap) -> Response {
    let mut i = inner.lock().unwrap();
    let Some((userpass, _)) = i.login.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if given != basic(&userpass) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    i.tokens_issued += 1;
    axum::Json(serde_json::json!({ "token": format!("token-for-{userpass}") })).into_response()
}
