//! The `.dockerconfigjson` of a registry's pull secret, as `kubectl create secret docker-registry`
//! writes it, and the names and `auths` keys around it. Pure: the Secrets themselves are kept by
//! `secrets`.

use base64::Engine;
use serde_json::{json, Value};

use crate::policy::Credentials;
use crate::reference::is_docker_hub;

pub use crate::names::{MANAGED_BY, MANAGED_BY_LABEL};
pub const REGISTRY_ANNOTATION: &str = "image-mirror-webhook.io/registry";
pub const DOCKER_CONFIG_KEY: &str = ".dockerconfigjson";
pub const DOCKER_CONFIG_TYPE: &str = "kubernetes.io/dockerconfigjson";
/// The key `docker login` and `kubectl create secret docker-registry` use for Docker Hub.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A stable, readable Secret name for a registry: `imw-pull-<host>-<hash>`. The hash of the exact
/// host keeps two hosts that read alike (`a.b:5000`, `a-b-5000`) apart.
pub fn managed_name(host: &str) -> String {
    let mut readable = String::new();
    for c in host.to_ascii_lowercase().chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if !(c == '-' && readable.ends_with('-')) {
            readable.push(c);
        }
    }
    let readable: String = readable.trim_matches('-').chars().take(40).collect();
    let digest = ring::digest::digest(&ring::digest::SHA256, host.as_bytes());
    let hash: String = digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("imw-pull-{}-{hash}", readable.trim_end_matches('-'))
}

/// The `auths` key for a registry, as `kubectl create secret docker-registry --docker-server` writes it.
pub fn auths_key(host: &str) -> String {
    if is_docker_hub(host) {
        DOCKER_HUB_KEY.to_owned()
    } else {
        host.to_owned()
    }
}

/// Whether an `auths` key of a Docker config covers `host`: `https://` and paths are ignored, and
/// Docker Hub's names (`https://index.docker.io/v1/`, `docker.io`, ...) are one.
pub fn auths_key_covers(key: &str, host: &str) -> bool {
    let bare = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let bare = bare.split('/').next().unwrap_or_default();
    bare.eq_ignore_ascii_case(host)
        || (is_docker_hub(&bare.to_ascii_lowercase()) && is_docker_hub(host))
}

/// One `auths` entry from inline credentials, in kubectl's field order.
pub fn entry(c: &Credentials) -> Value {
    let mut e = serde_json::Map::new();
    if let Some(u) = &c.username {
        e.insert("username".into(), json!(u));
    }
    if let Some(p) = &c.password {
        e.insert("password".into(), json!(p.expose()));
    }
    match (&c.auth, &c.username, &c.password) {
        (Some(a), _, _) => {
            e.insert("auth".into(), json!(a.expose()));
        }
        (None, Some(u), Some(p)) => {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{}", p.expose()));
            e.insert("auth".into(), json!(token));
        }
        _ => {}
    }
    if let Some(t) = &c.identity_token {
        e.insert("identitytoken".into(), json!(t.expose()));
    }
    Value::Object(e)
}

/// The `.dockerconfigjson` for one registry.
pub fn docker_config(host: &str, entry: Value) -> Vec<u8> {
    let mut auths = serde_json::Map::new();
    auths.insert(auths_key(host), entry);
    serde_json::to_vec(&json!({ "auths": auths })).unwrap_or_default()
}

/// The entry that covers `host` in a Docker config (a `config.json` or a `.dockerconfigjson`).
pub fn entry_in_config(config: &[u8], host: &str) -> Option<Value> {
    let v: Value = serde_json::from_slice(config).ok()?;
    v.get("auths")?
        .as_object()?
        .iter()
        .find(|(k, _)| auths_key_covers(k, host))
        .map(|(_, e)| e.clone())
}

/// `user:password` from an `auths` entry (its `auth`, or `username` and `password`).
pub fn basic_of(entry: &Value) -> Option<String> {
    if let Some(auth) = entry.get("auth").and_then(Value::as_str) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth)
            .ok()?;
        return String::from_utf8(decoded).ok();
    }
    let field = |k: &str| entry.get(k).and_then(Value::as_str);
    Some(format!("{}:{}", field("username")?, field("password")?))
}
