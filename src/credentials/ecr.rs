//! ECR tokens from GetAuthorizationToken (I/O, through the AWS SDK), one per registry, fetched
//! again at half their life, at once after a registry refused one, and kept while AWS fails.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::policy::EcrSource;
use crate::redacted::Redacted;
use crate::sync::lock;

use super::{Fetch, OnFetch};

#[derive(Debug, Clone, thiserror::Error)]
pub enum EcrError {
    #[error("GetAuthorizationToken for account {account} in {region} failed: {why}")]
    Aws {
        account: String,
        region: String,
        why: String,
    },
}

struct Token {
    password: Arc<Redacted>,
    refresh_at: Instant,
    /// A registry refused it: no use while another is fetched.
    refused: bool,
}

/// A fetch under way, shared by every caller that waits for it.
type Pending = crate::flight::Flight<Result<Arc<Redacted>, EcrError>>;

/// The tokens of every ECR registry the policy names, by host.
pub(super) struct Tokens {
    max_age: Duration,
    tokens: Mutex<HashMap<String, Token>>,
    /// One fetch per registry at a time, run as its own task: a caller that stops waiting (a
    /// review's deadline) does not stop it, and the token it brings is kept for the next.
    fetching: crate::flight::Flights<String, Result<Arc<Redacted>, EcrError>>,
    clients: Mutex<HashMap<String, (EcrSource, aws_sdk_ecr::Client)>>,
    observe: OnFetch,
}

impl Tokens {
    pub fn new(max_age: Duration, observe: OnFetch) -> Arc<Self> {
        Arc::new(Tokens {
            max_age,
            tokens: Mutex::default(),
            fetching: crate::flight::Flights::default(),
            clients: Mutex::default(),
            observe,
        })
    }

    /// The current token's password for `host`: the cached one while it is fresh; when it is
    /// due, still the cached one while another is fetched in the background; else (none yet, or
    /// a registry refused it) a new one. When AWS fails, the last one (counted and logged) if
    /// there is one.
    pub async fn password(
        self: &Arc<Self>,
        host: &str,
        source: &EcrSource,
    ) -> Result<Arc<Redacted>, EcrError> {
        let last = {
            let tokens = lock(&self.tokens);
            match tokens.get(host) {
                Some(t) if t.refused => None,
                Some(t) if Instant::now() < t.refresh_at => return Ok(t.password.clone()),
                Some(t) => Some(t.password.clone()),
                None => None,
            }
        };
        let pending = self.fetch_for(host, source);
        match last {
            Some(password) => Ok(password),
            None => pending.await,
        }
    }

    /// The fetch for `host` under way, or a new one.
    fn fetch_for(self: &Arc<Self>, host: &str, source: &EcrSource) -> Pending {
        let (tokens, host_owned, wanted) = (self.clone(), host.to_owned(), source.clone());
        let (account, region) = (
            source.registry.account.clone(),
            source.registry.region.clone(),
        );
        self.fetching.join(
            host.to_owned(),
            move || async move { tokens.refresh(&host_owned, &wanted).await },
            move |e| {
                Err(EcrError::Aws {
                    account,
                    region,
                    why: format!("the fetch ended unexpectedly: {e}"),
                })
            },
        )
    }

    /// Fetches a token for `host` and keeps it; on failure keeps the last one, to be tried again
    /// soon.
    async fn refresh(&self, host: &str, source: &EcrSource) -> Result<Arc<Redacted>, EcrError> {
        match self.fetch(host, source).await {
            Ok((password, life)) => {
                (self.observe)(Fetch::Ecr, true);
                let password = Arc::new(Redacted::new(password));
                let refresh_at = crate::duration::after(
                    Instant::now(),
                    crate::ecr::refresh_after(life, self.max_age),
                );
                lock(&self.tokens).insert(
                    host.to_owned(),
                    Token {
                        password: password.clone(),
                        refresh_at,
                        refused: false,
                    },
                );
                Ok(password)
            }
            Err(e) => {
                (self.observe)(Fetch::Ecr, false);
                let mut tokens = lock(&self.tokens);
                match tokens.get_mut(host) {
                    Some(last) => {
                        // Try again soon, not at once: every review would start a fetch.
                        last.refresh_at = Instant::now() + crate::ecr::MIN_REFRESH * 5;
                        tracing::warn!(registry = host, error = %e, "cannot refresh the ECR token; using the last one");
                        Ok(last.password.clone())
                    }
                    None => Err(e),
                }
            }
        }
    }

    /// A registry refused `host`'s token: the next use waits for another.
    pub fn expire(&self, host: &str) {
        if let Some(t) = lock(&self.tokens).get_mut(host) {
            t.refresh_at = Instant::now();
            t.refused = true;
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
        self.fetching.retain(|h| keep.contains_key(h));
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
            // Already past: `Some(0)`, fetched again soon (`ecr::refresh_after`).
            .map(|t| {
                t.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
            });
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
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .read_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(5))
            .operation_timeout(FETCH_TIMEOUT)
            .build();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(source.registry.region.clone()))
            .use_fips(source.registry.fips)
            .timeout_config(timeouts)
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
        let config = aws_sdk_ecr::config::Builder::from(&loader.load().await)
            .interceptor(CappedAnswer)
            .build();
        let client = aws_sdk_ecr::Client::from_conf(config);
        lock(&self.clients).insert(host.to_owned(), (source.clone(), client.clone()));
        client
    }
}

/// A GetAuthorizationToken call, retries included, ends within this; a review waits for it no
/// longer than its own deadline.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an answer that is read: one is a few KB.
const MAX_ANSWER: usize = 64 * 1024;

/// Caps the body of every ECR answer at `MAX_ANSWER` before the SDK reads it into memory.
#[derive(Debug)]
struct CappedAnswer;

impl aws_sdk_ecr::config::Intercept for CappedAnswer {
    fn name(&self) -> &'static str {
        "CappedAnswer"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut aws_sdk_ecr::config::interceptors::BeforeDeserializationInterceptorContextMut<
            '_,
        >,
        _: &aws_sdk_ecr::config::RuntimeComponents,
        _: &mut aws_sdk_ecr::config::ConfigBag,
    ) -> Result<(), aws_sdk_ecr::error::BoxError> {
        use aws_smithy_types::body::SdkBody;
        let body = context.response_mut().body_mut();
        if body.content_length().is_some_and(|n| n > MAX_ANSWER as u64) {
            return Err(format!("the answer is larger than {MAX_ANSWER} bytes").into());
        }
        let whole = std::mem::replace(body, SdkBody::taken());
        *body = SdkBody::from_body_1_x(http_body_util::Limited::new(whole, MAX_ANSWER));
        Ok(())
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
