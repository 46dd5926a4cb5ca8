//! The registry credentials Secrets already in each namespace (`pullSecrets.fromNamespace`), kept
//! by a watch and indexed by namespace (I/O).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use serde_json::Value;

use crate::dockerconfig::{
    auths_key_covers, DOCKER_CONFIG_KEY, DOCKER_CONFIG_TYPE, MANAGED_BY, MANAGED_BY_LABEL,
};

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
        let live = crate::sync::read(&self.live);
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
        let live = || crate::sync::write(&self.live);
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
    use crate::dockerconfig::managed_name;
    use crate::secrets::store;
    use serde_json::json;

    fn pull_secret(ns: &str, name: &str, registries: &[&str], managed: bool) -> Secret {
        let auths: serde_json::Map<String, Value> = registries
            .iter()
            .map(|r| (r.to_string(), json!({"auth": "c2VjcmV0"})))
            .collect();
        let mut s = store::pull_secret(
            ns,
            name,
            "x",
            &serde_json::to_vec(&json!({ "auths": auths })).unwrap(),
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
