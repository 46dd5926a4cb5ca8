//! Pull secrets: the `.dockerconfigjson` the webhook writes for a registry the policy has
//! credentials for (pure), and keeping those managed Secrets in the Pods' namespaces (I/O).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};

use crate::policy::{Credentials, Policy, RegistryConfig};

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "image-mirror-webhook";
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

fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
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
fn entry(c: &Credentials) -> Value {
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

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("no credentials for {0}: {1}")]
    Source(String, String),
}

/// The `auths` entry for `host` from its `configs` source: inline credentials, a Docker config
/// file, or a Secret in the webhook's namespace (read through `secrets`, when given).
pub async fn resolve_entry(
    config: &RegistryConfig,
    host: &str,
    secrets: Option<&Api<Secret>>,
) -> Result<Value, SecretError> {
    let err = |why: String| SecretError::Source(host.to_owned(), why);
    if let Some(name) = &config.credentials_secret {
        let Some(api) = secrets else {
            return Err(err(format!(
                "its credentials are in Secret {name}, which only `serve --pull-secrets` reads"
            )));
        };
        let secret = api.get(name).await?;
        let data = secret.data.unwrap_or_default();
        if let Some(cfg) = data.get(DOCKER_CONFIG_KEY) {
            entry_in_config(&cfg.0, host)
                .ok_or_else(|| err(format!("Secret {name} has no auths entry for it")))
        } else {
            let text = |k: &str| {
                data.get(k)
                    .and_then(|v| String::from_utf8(v.0.clone()).ok())
            };
            let (Some(username), Some(password)) = (text("username"), text("password")) else {
                return Err(err(format!(
                    "Secret {name} has neither .dockerconfigjson nor username and password"
                )));
            };
            Ok(entry(&Credentials {
                username: Some(username),
                password: Some(crate::policy::Secret::new(password)),
                ..Credentials::default()
            }))
        }
    } else if let Some(c) = &config.credentials {
        Ok(entry(c))
    } else if let Some(path) = &config.credential_file {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| err(format!("cannot read {path}: {e}")))?;
        entry_in_config(&bytes, host)
            .ok_or_else(|| err(format!("{path} has no auths entry for it")))
    } else {
        Err(err("no credentials".into()))
    }
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

/// (namespace, name) of a Secret.
type SecretKey = (String, String);

/// Keeps managed pull secrets: resolves the policy's credential sources, and creates or updates
/// one Secret per registry and namespace. Concurrent reviews for one Secret make one request.
pub struct PullSecrets {
    client: Client,
    own_namespace: String,
    /// What each managed Secret was last seen or written with.
    known: Mutex<HashMap<SecretKey, Arc<Vec<u8>>>>,
    /// Serialises work on one Secret, so a burst of Pods creates it once.
    locks: Mutex<HashMap<SecretKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Resolved `.dockerconfigjson` by registry, refreshed by `resync`.
    resolved: ArcSwap<HashMap<String, Arc<Vec<u8>>>>,
}

impl PullSecrets {
    pub fn new(client: Client) -> Self {
        let own_namespace = std::env::var("POD_NAMESPACE")
            .unwrap_or_else(|_| client.default_namespace().to_owned());
        PullSecrets {
            client,
            own_namespace,
            known: Mutex::default(),
            locks: Mutex::default(),
            resolved: ArcSwap::default(),
        }
    }

    /// The `.dockerconfigjson` for `host` from the policy's source for it.
    async fn resolve(&self, policy: &Policy, host: &str) -> Result<Arc<Vec<u8>>, SecretError> {
        let config = policy
            .config_for(host)
            .ok_or_else(|| SecretError::Source(host.to_owned(), "no configs entry".into()))?;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.own_namespace);
        let entry = resolve_entry(config, host, Some(&api)).await?;
        Ok(Arc::new(docker_config(host, entry)))
    }

    /// `user:password` for `host` from the policy's credentials, for registry checks.
    pub async fn basic_credentials(
        &self,
        policy: &Policy,
        host: &str,
    ) -> Result<Option<String>, SecretError> {
        let data = self.data_for(policy, host).await?;
        Ok(entry_in_config(&data, host).and_then(|e| basic_of(&e)))
    }

    async fn data_for(&self, policy: &Policy, host: &str) -> Result<Arc<Vec<u8>>, SecretError> {
        if let Some(d) = self.resolved.load().get(host) {
            return Ok(d.clone());
        }
        let d = self.resolve(policy, host).await?;
        let mut next = HashMap::clone(&self.resolved.load());
        next.insert(host.to_owned(), d.clone());
        self.resolved.store(Arc::new(next));
        Ok(d)
    }

    fn lock_for(&self, key: &(String, String)) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(key.clone()).or_default().clone()
    }

    /// Makes sure the managed Secret for `host` exists in `namespace` with current credentials.
    pub async fn ensure(
        &self,
        policy: &Policy,
        namespace: &str,
        host: &str,
    ) -> Result<String, SecretError> {
        let name = managed_name(host);
        let key = (namespace.to_owned(), name.clone());
        let data = self.data_for(policy, host).await?;
        let known = |k: &(String, String)| {
            self.known
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(k)
                .cloned()
        };
        if known(&key).as_deref() == Some(&*data) {
            return Ok(name);
        }
        let lock = self.lock_for(&key);
        let _guard = lock.lock().await;
        if known(&key).as_deref() == Some(&*data) {
            return Ok(name);
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        for _ in 0..3 {
            let result = match api.get_opt(&name).await? {
                None => {
                    api.create(
                        &PostParams::default(),
                        &secret_object(namespace, &name, host, &data, None),
                    )
                    .await
                }
                Some(existing) if stored(&existing).as_deref() == Some(&data[..]) => Ok(existing),
                Some(existing) => {
                    let rv = existing.metadata.resource_version.clone();
                    api.replace(
                        &name,
                        &PostParams::default(),
                        &secret_object(namespace, &name, host, &data, rv),
                    )
                    .await
                }
            };
            match result {
                Ok(_) => {
                    self.known
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key, data);
                    return Ok(name);
                }
                // Another replica got there first: read again.
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(SecretError::Source(
            host.to_owned(),
            "the Secret kept changing; try again".into(),
        ))
    }

    /// Re-reads every credential source and brings every managed Secret in the cluster up to date,
    /// so a rotation reaches them without any Pod change. Returns how many were updated.
    pub async fn resync(&self, policy: &Policy) -> Result<usize, SecretError> {
        let mut fresh: HashMap<String, Arc<Vec<u8>>> = HashMap::new();
        for host in self.resolved.load().keys() {
            match self.resolve(policy, host).await {
                Ok(d) => {
                    fresh.insert(host.clone(), d);
                }
                Err(e) => {
                    tracing::warn!(registry = %host, error = %e, "cannot refresh pull secret credentials")
                }
            }
        }
        let api: Api<Secret> = Api::all(self.client.clone());
        let managed = api
            .list(&ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")))
            .await?;
        let mut updated = 0;
        for secret in managed {
            let (Some(ns), Some(host)) = (
                secret.metadata.namespace.clone(),
                secret
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(REGISTRY_ANNOTATION))
                    .cloned(),
            ) else {
                continue;
            };
            if !fresh.contains_key(&host) {
                match self.resolve(policy, &host).await {
                    Ok(d) => {
                        fresh.insert(host.clone(), d);
                    }
                    Err(_) => continue,
                }
            }
            if fresh.get(&host).map(|d| &d[..]) != stored(&secret).as_deref() {
                self.resolved.store(Arc::new(fresh.clone()));
                self.ensure(policy, &ns, &host).await?;
                updated += 1;
            }
        }
        self.resolved.store(Arc::new(fresh));
        Ok(updated)
    }
}

fn stored(secret: &Secret) -> Option<Vec<u8>> {
    secret
        .data
        .as_ref()?
        .get(DOCKER_CONFIG_KEY)
        .map(|b| b.0.clone())
}

fn secret_object(
    namespace: &str,
    name: &str,
    host: &str,
    data: &[u8],
    resource_version: Option<String>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some([(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned())].into()),
            annotations: Some([(REGISTRY_ANNOTATION.to_owned(), host.to_owned())].into()),
            resource_version,
            ..ObjectMeta::default()
        },
        type_: Some(DOCKER_CONFIG_TYPE.into()),
        data: Some([(DOCKER_CONFIG_KEY.to_owned(), ByteString(data.to_vec()))].into()),
        ..Secret::default()
    }
}

/// The registry credentials Secrets (`kubernetes.io/dockerconfigjson`) of every namespace that
/// this webhook does not manage, kept by a watch and indexed by namespace: for each only its name
/// and the registries its `auths` names, so no credential stays in memory and a lookup reads only
/// the Pod's namespace.
#[derive(Clone, Default)]
pub struct NamespaceSecrets {
    live: Arc<std::sync::RwLock<SecretIndex>>,
}

/// Namespace → Secret name → the `auths` keys it holds.
type SecretIndex = HashMap<String, std::collections::BTreeMap<String, Vec<String>>>;

impl NamespaceSecrets {
    /// Names, sorted, of the Secrets in `namespace` whose `auths` cover `host`.
    pub fn covering(&self, namespace: &str, host: &str) -> Vec<String> {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        live.get(namespace)
            .into_iter()
            .flatten()
            .filter(|(_, keys)| keys.iter().any(|k| auths_key_covers(k, host)))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Applies one watch event. A relist is gathered aside (`Init` … `InitDone`) and then
    /// replaces the index at once, so lookups never see a half-listed cluster.
    pub fn apply(&self, event: kube::runtime::watcher::Event<Secret>, relist: &mut SecretIndex) {
        use kube::runtime::watcher::Event;
        let live = || self.live.write().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Init => relist.clear(),
            Event::InitApply(s) => index_secret(relist, &s),
            Event::InitDone => *live() = std::mem::take(relist),
            Event::Apply(s) => index_secret(&mut live(), &s),
            Event::Delete(s) => {
                if let (Some(ns), Some(name)) = (&s.metadata.namespace, &s.metadata.name) {
                    if let Some(names) = live().get_mut(ns) {
                        names.remove(name);
                    }
                }
            }
        }
    }
}

/// Records a Secret's `auths` keys, or forgets it when this webhook manages it.
fn index_secret(index: &mut SecretIndex, secret: &Secret) {
    let (Some(ns), Some(name)) = (&secret.metadata.namespace, &secret.metadata.name) else {
        return;
    };
    let managed = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY);
    let names = index.entry(ns.clone()).or_default();
    if managed {
        names.remove(name);
        return;
    }
    let keys: Vec<String> = secret
        .data
        .as_ref()
        .and_then(|d| d.get(DOCKER_CONFIG_KEY))
        .and_then(|b| serde_json::from_slice::<Value>(&b.0).ok())
        .and_then(|v| Some(v.get("auths")?.as_object()?.keys().cloned().collect()))
        .unwrap_or_default();
    names.insert(name.clone(), keys);
}

/// Starts the index of existing pull secrets; the returned future runs the watch.
pub fn watch_namespace_secrets(
    client: Client,
) -> (NamespaceSecrets, impl std::future::Future<Output = ()>) {
    use futures::StreamExt;
    use kube::runtime::{watcher, WatchStreamExt};
    let api: Api<Secret> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("type={DOCKER_CONFIG_TYPE}"));
    let index = NamespaceSecrets::default();
    let kept = index.clone();
    let run = async move {
        let mut relist = SecretIndex::new();
        let mut events = std::pin::pin!(watcher(api, config).default_backoff());
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => kept.apply(event, &mut relist),
                Err(e) => {
                    tracing::warn!(error = %e, "pull secret watch failed; retrying with backoff")
                }
            }
        }
    };
    (index, run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull_secret(ns: &str, name: &str, registries: &[&str], managed: bool) -> Secret {
        let auths: serde_json::Map<String, Value> = registries
            .iter()
            .map(|r| (r.to_string(), json!({"auth": "c2VjcmV0"})))
            .collect();
        let mut s = secret_object(
            ns,
            name,
            "x",
            &serde_json::to_vec(&json!({ "auths": auths })).unwrap(),
            None,
        );
        if !managed {
            s.metadata.labels = None;
        }
        s
    }

    #[test]
    fn the_secret_index_follows_the_watch() {
        use kube::runtime::watcher::Event;
        let index = NamespaceSecrets::default();
        let mut relist = SecretIndex::new();
        let mut apply = |e| index.apply(e, &mut relist);
        let theirs = |ns, name, regs: &[&str]| pull_secret(ns, name, regs, false);
        let ours = |ns, name, regs: &[&str]| pull_secret(ns, name, regs, true);
        apply(Event::Init);
        apply(Event::InitApply(theirs(
            "shop",
            "rancher-cred",
            &["https://mirror.example.com:5000/v2/"],
        )));
        apply(Event::InitApply(theirs(
            "shop",
            "hub",
            &["https://index.docker.io/v1/"],
        )));
        apply(Event::InitApply(ours(
            "shop",
            "imw-pull-x",
            &["mirror.example.com:5000"],
        )));
        apply(Event::InitApply(theirs(
            "other",
            "rancher-cred",
            &["mirror.example.com:5000"],
        )));
        // Nothing shows until the list is complete.
        assert!(index.covering("shop", "mirror.example.com:5000").is_empty());
        apply(Event::InitDone);
        assert_eq!(
            index.covering("shop", "mirror.example.com:5000"),
            ["rancher-cred"]
        );
        assert_eq!(index.covering("shop", "docker.io"), ["hub"]);
        assert!(index.covering("dev", "docker.io").is_empty());

        apply(Event::Apply(theirs(
            "shop",
            "another",
            &["mirror.example.com:5000"],
        )));
        assert_eq!(
            index.covering("shop", "mirror.example.com:5000"),
            ["another", "rancher-cred"]
        );
        // A Secret that changes its registries, or comes under this webhook's management, follows.
        apply(Event::Apply(theirs("shop", "another", &["quay.io"])));
        apply(Event::Apply(ours("shop", "hub", &["docker.io"])));
        assert_eq!(
            index.covering("shop", "mirror.example.com:5000"),
            ["rancher-cred"]
        );
        assert!(index.covering("shop", "docker.io").is_empty());
        apply(Event::Delete(theirs("shop", "rancher-cred", &[])));
        assert!(index.covering("shop", "mirror.example.com:5000").is_empty());

        // A relist replaces everything at its end: what is gone from the cluster goes.
        apply(Event::Init);
        apply(Event::InitApply(theirs("dev", "hub", &["docker.io"])));
        assert_eq!(index.covering("shop", "quay.io"), ["another"]);
        apply(Event::InitDone);
        assert!(index.covering("shop", "quay.io").is_empty());
        assert_eq!(index.covering("dev", "docker.io"), ["hub"]);
    }

    #[test]
    fn names_are_stable_readable_and_apart() {
        assert_eq!(
            managed_name("mirror.example.com:5000"),
            managed_name("mirror.example.com:5000")
        );
        assert!(managed_name("mirror.example.com:5000")
            .starts_with("imw-pull-mirror-example-com-5000-"));
        assert_ne!(managed_name("a.b:5000"), managed_name("a-b-5000"));
        let long = managed_name(&format!("{}.example.com", "x".repeat(300)));
        assert!(long.len() <= 63, "{long}");
        assert!(managed_name("[::1]:5000")
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    }

    #[test]
    fn auths_keys_cover_hosts_as_registries_write_them() {
        for (key, host, covers) in [
            ("quay.io", "quay.io", true),
            ("https://quay.io", "quay.io", true),
            ("https://quay.io/v1/", "quay.io", true),
            ("http://r.local:5000", "r.local:5000", true),
            ("r.local", "r.local:5000", false),
            ("https://index.docker.io/v1/", "docker.io", true),
            ("docker.io", "docker.io", true),
            ("index.docker.io", "docker.io", true),
            ("registry-1.docker.io", "docker.io", true),
            ("quay.io", "docker.io", false),
        ] {
            assert_eq!(auths_key_covers(key, host), covers, "{key} / {host}");
        }
    }
}
