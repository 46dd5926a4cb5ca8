//! Managed pull secrets: the policy's credential sources resolved, and one Secret per registry and
//! namespace created or updated before a Pod is admitted (I/O).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{ListParams, ObjectMeta};
use kube::{Api, Client};
use serde_json::Value;

use crate::credentials::Cloud;
use crate::dockerconfig::{
    basic_of, docker_config, entry, entry_in_config, managed_name, DOCKER_CONFIG_KEY,
    DOCKER_CONFIG_TYPE, MANAGED_BY, MANAGED_BY_LABEL, REGISTRY_ANNOTATION,
};
use crate::policy::{CredentialSource, Credentials, Policy};
use crate::sync::lock;

use super::Want;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("no credentials for {0}: {1}")]
    Source(String, String),
    #[error("{0:?} is not a namespace name")]
    Namespace(String),
    #[error("its credentials did not arrive within the review's {0:?} (--webhook-timeout)")]
    Late(std::time::Duration),
}

/// The `auths` entry for pulling `image` from `host`: from the registry's `configs` source
/// (inline credentials, a Docker config file, a Secret in the webhook's namespace read through
/// `secrets`, an ECR token), else from the first credential provider serving the image. ECR and
/// providers need `cloud` (serve).
pub async fn resolve_entry(
    policy: &Policy,
    host: &str,
    image: &str,
    secrets: Option<&Api<Secret>>,
    cloud: Option<&Cloud>,
) -> Result<Value, SecretError> {
    let err = |why: String| SecretError::Source(host.to_owned(), why);
    let config = policy.config_for(host);
    match policy.read_source(host, image) {
        None => Err(err("no credentials".into())),
        Some(CredentialSource::Secret(name)) => match secrets {
            Some(api) => secret_entry(api, &name, host).await,
            None => Err(err(format!(
                "its credentials are in Secret {name}, which only `serve --pull-secrets` reads"
            ))),
        },
        Some(CredentialSource::Policy) => match config.and_then(|c| c.credentials.as_ref()) {
            Some(c) => Ok(entry(c)),
            None => Err(err("no credentials".into())),
        },
        Some(CredentialSource::File(path)) => {
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|e| err(format!("cannot read {path}: {e}")))?;
            entry_in_config(&bytes, host)
                .ok_or_else(|| err(format!("{path} has no auths entry for it")))
        }
        Some(CredentialSource::Ecr(source)) => {
            let cloud = cloud.ok_or_else(|| err("ECR tokens are fetched by serve only".into()))?;
            cloud
                .ecr_entry(host, &source)
                .await
                .map_err(|e| err(e.to_string()))
        }
        Some(CredentialSource::Provider(name)) => {
            let cloud = cloud
                .ok_or_else(|| err(format!("credential provider {name} is run by serve only")))?;
            cloud
                .provider_entry(policy, image)
                .await
                .map_err(|e| err(e.to_string()))
        }
        Some(CredentialSource::UserSecret(_)) => Err(err("no credentials".into())),
    }
}

/// The `auths` entry for `host` from Secret `name`: its `.dockerconfigjson`, or its basic-auth
/// `username` and `password`.
async fn secret_entry(api: &Api<Secret>, name: &str, host: &str) -> Result<Value, SecretError> {
    let err = |why: String| SecretError::Source(host.to_owned(), why);
    let data = api.get(name).await?.data.unwrap_or_default();
    if let Some(cfg) = data.get(DOCKER_CONFIG_KEY) {
        return entry_in_config(&cfg.0, host)
            .ok_or_else(|| err(format!("Secret {name} has no auths entry for it")));
    }
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
        password: Some(crate::redacted::Redacted::new(password)),
        ..Credentials::default()
    }))
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
    /// ECR tokens and credential providers.
    cloud: Option<Arc<Cloud>>,
    /// The last image pulled from each registry, for a credential provider's request.
    images: Mutex<HashMap<String, String>>,
}

impl PullSecrets {
    /// Reads `credentialsSecret` references in the client's default namespace until
    /// `in_namespace` names the webhook's own.
    pub fn new(client: Client, cloud: Option<Arc<Cloud>>) -> Self {
        let own_namespace = client.default_namespace().to_owned();
        PullSecrets {
            client,
            own_namespace,
            known: Mutex::default(),
            locks: Mutex::default(),
            resolved: ArcSwap::default(),
            cloud,
            images: Mutex::default(),
        }
    }

    /// Reads `credentialsSecret` references in `namespace` instead of the webhook's own.
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        namespace.clone_into(&mut self.own_namespace);
        self
    }

    /// The `.dockerconfigjson` for `host` from the policy's source for it.
    async fn resolve(&self, policy: &Policy, host: &str) -> Result<Arc<Vec<u8>>, SecretError> {
        let image = self.image_for(host);
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.own_namespace);
        let entry = resolve_entry(policy, host, &image, Some(&api), self.cloud.as_deref()).await?;
        Ok(Arc::new(docker_config(host, entry)))
    }

    /// The last image pulled from `host`, else the host alone.
    fn image_for(&self, host: &str) -> String {
        lock(&self.images)
            .get(host)
            .cloned()
            .unwrap_or_else(|| host.to_owned())
    }

    /// Remembers an image pulled from `host`, for the credential provider's request.
    fn saw(&self, host: &str, image: &str) {
        let mut images = lock(&self.images);
        if images.len() >= 10_000 {
            // Reviews name the registries, so the map is capped; a forgotten one is asked about by
            // its host alone.
            images.clear();
        }
        if images.get(host).map(String::as_str) != Some(image) {
            images.insert(host.to_owned(), image.to_owned());
        }
    }

    /// `user:password` for `host` from the policy's credentials, for registry checks.
    pub async fn basic_credentials(
        &self,
        policy: &Policy,
        host: &str,
        image: &str,
    ) -> Result<Option<String>, SecretError> {
        self.saw(host, image);
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
        let mut locks = lock(&self.locks);
        locks.entry(key.clone()).or_default().clone()
    }

    /// Makes sure the managed Secret for `host` exists in `namespace` with current credentials.
    pub async fn ensure(
        &self,
        policy: &Policy,
        namespace: &str,
        host: &str,
        image: &str,
    ) -> Result<String, SecretError> {
        // The namespace goes into the API path: only a valid name may (admission checks it too).
        if !crate::names::is_dns_label(namespace) {
            return Err(SecretError::Namespace(namespace.to_owned()));
        }
        self.saw(host, image);
        let name = managed_name(host);
        let key = (namespace.to_owned(), name.clone());
        let data = self.data_for(policy, host).await?;
        let known = |k: &(String, String)| lock(&self.known).get(k).cloned();
        if known(&key).as_deref() == Some(&*data) {
            return Ok(name);
        }
        let secret_lock = self.lock_for(&key);
        let _guard = secret_lock.lock().await;
        if known(&key).as_deref() == Some(&*data) {
            return Ok(name);
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let settled = super::converge(&api, &name, 3, |existing| {
            Ok::<_, SecretError>(match existing {
                Some(e) if stored(e).as_deref() == Some(&data[..]) => Want::Keep(()),
                _ => Want::Write(pull_secret(namespace, &name, host, &data), ()),
            })
        })
        .await?;
        match settled {
            Some(()) => {
                lock(&self.known).insert(key, data);
                Ok(name)
            }
            None => Err(SecretError::Source(
                host.to_owned(),
                "the Secret kept changing; try again".into(),
            )),
        }
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
                let image = self.image_for(&host);
                self.ensure(policy, &ns, &host, &image).await?;
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

pub(super) fn pull_secret(namespace: &str, name: &str, host: &str, data: &[u8]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some([(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned())].into()),
            annotations: Some([(REGISTRY_ANNOTATION.to_owned(), host.to_owned())].into()),
            ..ObjectMeta::default()
        },
        type_: Some(DOCKER_CONFIG_TYPE.into()),
        data: Some([(DOCKER_CONFIG_KEY.to_owned(), ByteString(data.to_vec()))].into()),
        ..Secret::default()
    }
}
