//! Kubelet credential provider plugins, the parts that need no process (pure): which images a
//! provider serves (the kubelet's `matchImages` globs), the request written to a plugin and the
//! response read back, and the kubelet's cache of responses. `credentials` runs the plugins.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;

use crate::redacted::Redacted;

/// The `apiVersion`s of the plugin protocol the kubelet speaks.
pub const PLUGIN_API_VERSIONS: &[&str] = &[
    "credentialprovider.kubelet.k8s.io/v1",
    "credentialprovider.kubelet.k8s.io/v1beta1",
    "credentialprovider.kubelet.k8s.io/v1alpha1",
];
/// The `apiVersion`s of a `CredentialProviderConfig` file.
pub const CONFIG_API_VERSIONS: &[&str] = &[
    "kubelet.config.k8s.io/v1",
    "kubelet.config.k8s.io/v1beta1",
    "kubelet.config.k8s.io/v1alpha1",
];

/// One `providers[]` entry of a `CredentialProviderConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub name: String,
    pub match_images: Vec<String>,
    pub default_cache_duration: Duration,
    pub api_version: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Provider {
    /// Whether the kubelet would ask this provider about `image`.
    pub fn serves(&self, image: &str) -> bool {
        self.match_images.iter().any(|g| glob_matches(g, image))
    }

    /// The `CredentialProviderRequest` for `image`, as the kubelet writes it to the plugin's stdin.
    pub fn request(&self, image: &str) -> Vec<u8> {
        let request = json!({
            "apiVersion": self.api_version,
            "kind": "CredentialProviderRequest",
            "image": image,
        });
        serde_json::to_vec(&request).unwrap_or_default()
    }
}

/// Whether `image` matches the kubelet glob `glob`: as many DNS labels on both sides, each matched
/// by its glob label (`*`, `?`, `[a-z]`, within the label), the same port (or none on both), and
/// the glob's path a prefix of the image's path (as text, not by segments).
pub fn glob_matches(glob: &str, image: &str) -> bool {
    let (Some(g), Some(t)) = (split_url(glob), split_url(image)) else {
        return false;
    };
    g.port == t.port
        && g.labels.len() == t.labels.len()
        && t.path.starts_with(g.path)
        && g.labels
            .iter()
            .zip(&t.labels)
            .all(|(p, l)| label_matches(p.as_bytes(), l.as_bytes()).unwrap_or(false))
}

struct Url<'a> {
    labels: Vec<&'a str>,
    port: &'a str,
    path: &'a str,
}

/// What Go's `url.Parse("https://" + s)` and `net.SplitHostPort` make of a schemeless URL.
fn split_url(s: &str) -> Option<Url<'_>> {
    let end = s.find(['?', '#']).unwrap_or(s.len());
    let s = &s[..end];
    let (host, path) = match s.find('/') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    if host.contains('@') || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    // SplitHostPort fails on more than one colon without brackets: then all of it is the host.
    let (name, port) = match host.split_once(':') {
        Some((n, p)) if !p.contains(':') => (n, p),
        _ => (host, ""),
    };
    Some(Url {
        labels: name.split('.').collect(),
        port,
        path,
    })
}

/// Go's `filepath.Match` for one label (which holds no separator). `None`: a malformed pattern.
fn label_matches(pattern: &[u8], name: &[u8]) -> Option<bool> {
    match pattern.first() {
        None => Some(name.is_empty()),
        Some(b'*') => {
            let rest = &pattern[1..];
            for skip in 0..=name.len() {
                if label_matches(rest, &name[skip..])? {
                    return Some(true);
                }
            }
            Some(false)
        }
        Some(b'?') => match name.split_first() {
            Some((_, tail)) => label_matches(&pattern[1..], tail),
            None => Some(false),
        },
        Some(b'[') => {
            let (matched, rest) = class(&pattern[1..], name.first().copied())?;
            match (matched, name.split_first()) {
                (true, Some((_, tail))) => label_matches(rest, tail),
                _ => Some(false),
            }
        }
        Some(b'\\') => {
            let (&c, rest) = pattern[1..].split_first()?;
            match name.split_first() {
                Some((&n, tail)) if n == c => label_matches(rest, tail),
                _ => Some(false),
            }
        }
        Some(&c) => match name.split_first() {
            Some((&n, tail)) if n == c => label_matches(&pattern[1..], tail),
            _ => Some(false),
        },
    }
}

/// A `[...]` class (after its `[`): whether `c` is in it, and the pattern after its `]`.
fn class(pattern: &[u8], c: Option<u8>) -> Option<(bool, &[u8])> {
    let (negated, mut p) = match pattern.first() {
        Some(b'^') => (true, &pattern[1..]),
        _ => (false, pattern),
    };
    let mut matched = false;
    let mut first = true;
    loop {
        match p.first() {
            None => return None,
            Some(b']') if !first => return Some((matched != negated && c.is_some(), &p[1..])),
            _ => {}
        }
        first = false;
        let (lo, rest) = class_char(p)?;
        p = rest;
        let hi = match p.first() {
            Some(b'-') => {
                let (hi, rest) = class_char(&p[1..])?;
                p = rest;
                hi
            }
            _ => lo,
        };
        if c.is_some_and(|c| lo <= c && c <= hi) {
            matched = true;
        }
    }
}

fn class_char(p: &[u8]) -> Option<(u8, &[u8])> {
    match p.split_first()? {
        (b'\\', rest) => rest.split_first().map(|(c, r)| (*c, r)),
        (b'-' | b']', _) => None,
        (c, rest) => Some((*c, rest)),
    }
}

/// The repository of an image reference (`docker.io/library/nginx` for `nginx:1.25`): what the
/// kubelet looks credentials up by and asks a provider about.
pub fn repository(reference: &str) -> String {
    crate::reference::Reference::parse(reference)
        .map(|r| r.name())
        .unwrap_or_else(|_| reference.to_owned())
}

/// Whose credentials a response holds, so which later requests it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum CacheKeyType {
    /// This image only.
    Image,
    /// Every image of the image's registry host.
    Registry,
    /// Every image the provider serves.
    Global,
}

/// A plugin's `CredentialProviderResponse`, checked.
#[derive(Debug, Clone)]
pub struct Response {
    pub cache_key_type: CacheKeyType,
    pub cache_duration: Option<Duration>,
    /// `auth` entries, sorted as the kubelet's keyring tries them (longest key first).
    pub auth: Vec<(String, Credential)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: Redacted,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ResponseError {
    #[error("its output is not a CredentialProviderResponse: {0}")]
    Malformed(String),
    #[error("it answered with apiVersion `{found}`, not the `{expected}` it was asked with")]
    ApiVersion { found: String, expected: String },
    #[error("it answered with kind `{0}`, not CredentialProviderResponse")]
    Kind(String),
    #[error("its cacheDuration: {0}")]
    CacheDuration(crate::duration::DurationError),
}

impl Response {
    /// Reads a plugin's stdout as the kubelet does: the apiVersion it was asked with, the kind,
    /// one of the three cache key types.
    pub fn parse(stdout: &[u8], api_version: &str) -> Result<Response, ResponseError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Raw {
            api_version: String,
            kind: String,
            cache_key_type: CacheKeyType,
            cache_duration: Option<String>,
            #[serde(default)]
            auth: Option<HashMap<String, RawAuth>>,
        }
        #[derive(Deserialize)]
        struct RawAuth {
            #[serde(default)]
            username: String,
            #[serde(default)]
            password: String,
        }
        // serde's message may quote the input; only its position is kept, so no secret leaks.
        let raw: Raw = serde_json::from_slice(stdout).map_err(|e| {
            ResponseError::Malformed(format!(
                "{} at line {} column {}",
                classify(&e),
                e.line(),
                e.column()
            ))
        })?;
        if raw.api_version != api_version {
            return Err(ResponseError::ApiVersion {
                found: raw.api_version,
                expected: api_version.to_owned(),
            });
        }
        if raw.kind != "CredentialProviderResponse" {
            return Err(ResponseError::Kind(raw.kind));
        }
        let cache_duration = match raw.cache_duration {
            None => None,
            Some(d) => Some(crate::duration::parse(&d).map_err(ResponseError::CacheDuration)?),
        };
        let mut auth: Vec<(String, Credential)> = raw
            .auth
            .unwrap_or_default()
            .into_iter()
            .map(|(k, a)| {
                (
                    k,
                    Credential {
                        username: a.username,
                        password: Redacted::new(a.password),
                    },
                )
            })
            .collect();
        auth.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(Response {
            cache_key_type: raw.cache_key_type,
            cache_duration,
            auth,
        })
    }

    /// The credential the kubelet's keyring would try first for `image`.
    pub fn credential_for(&self, image: &str) -> Option<&Credential> {
        self.auth
            .iter()
            .find(|(key, _)| glob_matches(key, image))
            .map(|(_, c)| c)
    }
}

fn classify(e: &serde_json::Error) -> &'static str {
    use serde_json::error::Category;
    match e.classify() {
        Category::Io => "unreadable",
        Category::Syntax => "not JSON",
        Category::Data => {
            "a field is missing or has the wrong type (cacheKeyType: Image, Registry or Global)"
        }
        Category::Eof => "cut short",
    }
}

/// The registry host of an image, as the kubelet's cache keys it.
fn registry_of(image: &str) -> &str {
    image.split('/').next().unwrap_or(image)
}

/// The kubelet's cache of one provider's responses: looked up by the image, then its registry,
/// then globally; kept for the response's `cacheDuration`, else the provider's default; a
/// duration of zero is not kept.
#[derive(Debug, Default)]
pub struct Cache {
    entries: HashMap<(CacheKeyType, String), (Instant, std::sync::Arc<Response>)>,
}

/// Past this many entries, expired ones are dropped, then all.
const MAX_CACHED: usize = 10_000;

impl Cache {
    pub fn get(&self, image: &str, now: Instant) -> Option<std::sync::Arc<Response>> {
        [
            (CacheKeyType::Image, image),
            (CacheKeyType::Registry, registry_of(image)),
            (CacheKeyType::Global, ""),
        ]
        .into_iter()
        .find_map(|(kind, key)| {
            self.entries
                .get(&(kind, key.to_owned()))
                .filter(|(expires, _)| *expires > now)
                .map(|(_, r)| r.clone())
        })
    }

    pub fn put(
        &mut self,
        image: &str,
        response: std::sync::Arc<Response>,
        default: Duration,
        now: Instant,
    ) {
        let ttl = response.cache_duration.unwrap_or(default);
        if ttl.is_zero() {
            return;
        }
        if self.entries.len() >= MAX_CACHED {
            self.entries.retain(|_, (expires, _)| *expires > now);
            if self.entries.len() >= MAX_CACHED {
                self.entries.clear();
            }
        }
        let key = match response.cache_key_type {
            CacheKeyType::Image => image,
            CacheKeyType::Registry => registry_of(image),
            CacheKeyType::Global => "",
        };
        let kind = response.cache_key_type;
        self.entries.insert(
            (kind, key.to_owned()),
            (crate::duration::after(now, ttl), response),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_checked_as_the_kubelet_checks_them() {
        let ok = br#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Registry","cacheDuration":"5m","auth":{"*.example.com":{"username":"u","password":"p"},"a.example.com/team":{"username":"t","password":"q"}}}"#;
        let r = Response::parse(ok, PLUGIN_API_VERSIONS[0]).unwrap();
        assert_eq!(r.cache_key_type, CacheKeyType::Registry);
        assert_eq!(r.cache_duration, Some(Duration::from_secs(300)));
        // The keyring tries the longer key first.
        assert_eq!(
            r.credential_for("a.example.com/team/app").unwrap().username,
            "t"
        );
        assert_eq!(r.credential_for("b.example.com/app").unwrap().username, "u");
        assert!(r.credential_for("example.org/app").is_none());
        let err =
            Response::parse(b"{\"password\": \"leaked\"", PLUGIN_API_VERSIONS[0]).unwrap_err();
        assert!(!err.to_string().contains("leaked"), "{err}");
    }
}
