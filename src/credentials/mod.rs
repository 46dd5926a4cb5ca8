//! Registry credentials that are fetched, not stored (I/O): ECR tokens (`ecr`) and kubelet
//! credential provider plugins (`credprovider`, the I/O half of `crate::credprovider`). They feed managed pull secrets and `verify` like the
//! policy's own credentials.

mod credprovider;
mod ecr;

pub use credprovider::PluginError;
pub use ecr::EcrError;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::policy::{Credentials, EcrSource, Policy};
use crate::redacted::Redacted;

/// Which kind of source a fetch was from, for the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    Ecr,
    Provider,
}

impl Fetch {
    pub fn label(self) -> &'static str {
        match self {
            Fetch::Ecr => "ecr",
            Fetch::Provider => "provider",
        }
    }
}

/// Called with each fetch and whether it worked.
pub type OnFetch = Arc<dyn Fn(Fetch, bool) + Send + Sync>;

#[derive(Debug, Clone)]
pub struct CloudSettings {
    /// Where provider plugins are (`--image-credential-provider-bin-dir`).
    pub plugin_dir: Option<PathBuf>,
    /// How long a plugin may run.
    pub plugin_timeout: Duration,
    /// The longest an ECR token is used before another is fetched.
    pub ecr_max_age: Duration,
}

impl Default for CloudSettings {
    fn default() -> Self {
        CloudSettings {
            plugin_dir: None,
            plugin_timeout: Duration::from_secs(10),
            ecr_max_age: Duration::from_secs(6 * 3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error(transparent)]
    Ecr(#[from] EcrError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("credential provider {0} has no credentials for this image")]
    NoCredential(String),
    #[error("no credential provider serves this image")]
    NoProvider,
}

/// ECR tokens and provider plugins, shared by pull secrets and verify.
pub struct Cloud {
    ecr: Arc<ecr::Tokens>,
    plugins: credprovider::Plugins,
}

impl Cloud {
    pub fn new(settings: CloudSettings, observe: OnFetch) -> Self {
        Cloud {
            ecr: ecr::Tokens::new(settings.ecr_max_age, observe.clone()),
            plugins: credprovider::Plugins::new(
                settings.plugin_dir,
                settings.plugin_timeout,
                observe,
            ),
        }
    }

    /// The `auths` entry for an ECR registry: user `AWS` and the token's password, as
    /// `aws ecr get-login-password` gives them.
    pub async fn ecr_entry(&self, host: &str, source: &EcrSource) -> Result<Value, CloudError> {
        let password = self.ecr.password(host, source).await?;
        Ok(crate::dockerconfig::entry(&Credentials {
            username: Some("AWS".into()),
            password: Some(Redacted::clone(&password)),
            ..Credentials::default()
        }))
    }

    /// The `auths` entry the first provider serving `image` gives for it.
    pub async fn provider_entry(&self, policy: &Policy, image: &str) -> Result<Value, CloudError> {
        let mut last = None;
        for provider in policy.providers_for(image) {
            match self.plugins.credential(provider, image).await {
                Ok(Some(c)) => {
                    return Ok(crate::dockerconfig::entry(&Credentials {
                        username: Some(c.username),
                        password: Some(c.password),
                        ..Credentials::default()
                    }))
                }
                Ok(None) => last = Some(CloudError::NoCredential(provider.name.clone())),
                Err(e) => {
                    tracing::warn!(provider = %provider.name, error = %e, "credential provider failed");
                    last = Some(e.into());
                }
            }
        }
        Err(last.unwrap_or(CloudError::NoProvider))
    }

    /// A registry refused `host`'s credentials: an ECR token is fetched again at its next use.
    pub fn refused(&self, host: &str) {
        self.ecr.expire(host);
    }

    /// Whether an ECR token is due, so the managed Secrets holding it should be brought up to date.
    pub fn ecr_due(&self) -> bool {
        self.ecr.due()
    }

    /// A new policy: tokens of registries it no longer names go, cached plugin answers go.
    pub fn policy_changed(&self, policy: &Policy) {
        let keep: HashMap<String, EcrSource> = policy
            .ecr_registries()
            .map(|(h, s)| (h.to_owned(), s.clone()))
            .collect();
        self.ecr.retain(&keep);
        self.plugins.clear();
    }
}
