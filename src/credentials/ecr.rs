//! ECR tokens from GetAuthorizationToken (I/O, through the AWS SDK), one per registry, fetched
//! again at half their life, at once after a registry refused one, and kept while AWS fails.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::policy::{EcrSource, Secret};
use crate::sync::lock;

use super::{Fetch, Observer};

#[derive(Debug, thiserror::Error)]
pub enum EcrError {
    #[error("GetAuthorizationToken for account {account} in {region} failed: {why}")]
    Aws {
        account: String,
        region: String,
        why: String,
    },
}

struct Token {
    password: Arc<Secret>,
    refresh_at: Instant,
}

/// The tokens of every ECR registry the policy names, by host.
pub(super) struct Tokens {
    max_age: Duration,
    tokens: Mutex<HashMap<String, Token>>,
    /// One fetch per registry at a time; the others wait for its token.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    clients: Mutex<HashMap<String, (EcrSource, aws_sdk_ecr::Client)>>,
    observe: Observer,
}

impl Tokens {
    pub fn new(max_age: Duration, observe: Observer) -> Self {
        Tokens {
            max_age,
            tokens: Mutex::default(),
            fetching: Mutex::default(),
            clients: Mutex::default(),
            observe,
        }
    }

    /// The current token's password for `host`: the cached one while it is fresh, else a new
    /// one; when AWS fails, the last one (counted and logged) if there is one.
    pub async fn password(&self, host: &str, source: &EcrSource) -> Result<Arc<Secret>, EcrError> {
        if let Some(p) = self.fresh(host) {
            return Ok(p);
        }
        let gate = lock(&self.fetching)
            .entry(host.to_owned())
            .or_default()
            .clone();
        let _turn = gate.lock().await;
        if let Some(p) = self.fresh(host) {
            return Ok(p);
        }
        match self.fetch(host, source).await {
            Ok((password, life)) => {
                (self.observe)(Fetch::Ecr, true);
                let password = Arc::new(Secret::new(password));
                let refresh_at = Instant::now() + crate::ecr::refresh_after(life, self.max_age);
                lock(&self.tokens).insert(
                    host.to_owned(),
                    Token {
                        password: password.clone(),
                        refresh_at,
                    },
                );
                Ok(password)
            }
            Err(e) => {
                (self.observe)(Fetch::Ecr, false);
                let mut tokens = lock(&self.tokens);
                match tokens.get_mut(host) {
                    Some(last) => {
                        // Try again soon, not at once: every review would wait on AWS.
                        last.refresh_at = Instant::now() + crate::ecr::MIN_REFRESH * 5;
                        tracing::warn!(registry = host, error = %e, "cannot refresh the ECR token; using the last one");
                        Ok(last.password.clone())
                    }
                    None => Err(e),
                }
            }
        }
    }

    fn fresh(&self, host: &str) -> Option<Arc<Secret>> {
        lock(&self.tokens)
            .get(host)
            .filter(|t| Instant::now() < t.refresh_at)
            .map(|t| t.password.clone())
    }

    /// Marks `host`'s token due, so the next use fetches another (a registry refused it).
    pub fn expire(&self, host: &str) {
        if let Some(t) = lock(&self.tokens).get_mut(host) {
            t.refresh_at = Instant::now();
        }
    }

    /// Whether any token is due now.
    pub fn due(&self) -> bool {
        let now = Instant::now();
        lock(&self.tokens).values().any(|t| t.refresh_at <= now)
    }

    /// Forgets tokens and clients of registries the policy no longer names or names otherwise
    /// (other keys, another identity).
    pub fn retain(&self, keep: &HashMap<String, EcrSource>) {
        let mut clients = lock(&self.clients);
        clients.retain(|h, (s, _)| keep.get(h) == Some(s));
        lock(&self.tokens).retain(|h, _| clients.contains_key(h));
        drop(clients);
        lock(&self.fetching).retain(|h, _| keep.contains_key(h));
    }

    async fn fetch(
        &self,
        host: &str,
        source: &EcrSource,
    ) -> Result<(String, Option<Duration>), EcrError> {
        let registry = &source.registry;
        let err = |why: String| EcrError::Aws {
            account: registry.account.clone(),
            region: registry.region.clone(),
            why,
        };
        let client = self.client(host, source).await;
        let out = client
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| err(describe(&e)))?;
        let data = out
            .authorization_data()
            .first()
            .ok_or_else(|| err("the answer holds no authorization data".into()))?;
        let token = data
            .authorization_token()
            .ok_or_else(|| err("the answer holds no token".into()))?;
        let password = crate::ecr::password_of(token).map_err(|e| err(e.to_string()))?;
        let life = data
            .expires_at()
            .and_then(|t| SystemTime::try_from(*t).ok())
            .and_then(|t| t.duration_since(SystemTime::now()).ok());
        Ok((password, life))
    }

    async fn client(&self, host: &str, source: &EcrSource) -> aws_sdk_ecr::Client {
        if let Some((s, c)) = lock(&self.clients).get(host) {
            if s == source {
                return c.clone();
            }
        }
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(source.registry.region.clone()))
            .use_fips(source.registry.fips)
            .http_client(http);
        if let Some(keys) = &source.keys {
            loader = loader.credentials_provider(aws_credential_types::Credentials::new(
                keys.access_key_id.clone(),
                keys.secret_access_key.expose().to_owned(),
                keys.session_token.as_ref().map(|t| t.expose().to_owned()),
                None,
                "ecrCredentialPlugin",
            ));
        }
        let client = aws_sdk_ecr::Client::new(&loader.load().await);
        lock(&self.clients).insert(host.to_owned(), (source.clone(), client.clone()));
        client
    }
}

/// The SDK error's own words and its cause, without the request (which holds no secret, but is long).
fn describe<E: std::error::Error>(e: &E) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
