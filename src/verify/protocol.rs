//! The distribution protocol as `verify` speaks it: a manifest HEAD, answered challenges (Basic,
//! or a Bearer token from the realm), bounded bodies, and redirects that never leave TLS.

use std::collections::HashMap;

use base64::Engine;

pub use crate::verdict::{Absence, Presence};

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

pub(super) const REFUSED: &str = "unauthorized: the credentials were refused";

/// The most of a registry's answer body that is read: token answers are a few KB.
pub const MAX_REGISTRY_BODY: usize = 64 * 1024;
/// Redirects followed per request, as Docker's client allows a few.
const MAX_REDIRECTS: usize = 3;

/// The repository a manifest URL asks about (`host/library/nginx`), as a credential provider is
/// asked about it.
pub(super) fn image_of(host: &str, url: &str) -> String {
    let repo = url
        .split_once("/v2/")
        .and_then(|(_, rest)| rest.rsplit_once("/manifests/"))
        .map_or("", |(repo, _)| repo);
    format!("{host}/{repo}")
}

fn basic_header(userpass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(userpass)
    )
}

/// HEAD the manifest; on a challenge, answer it (Basic, or a Bearer token from the realm) once,
/// with the credentials `credentials` finds (asked only then).
pub(super) async fn head_manifest<F, Fut>(
    client: &reqwest::Client,
    url: &str,
    credentials: F,
) -> Presence
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
pub(super) fn redirect_policy() -> reqwest::redirect::Policy {
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
