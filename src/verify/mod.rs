//! Manifest checks against mirror endpoints (I/O), for `verify`: the first endpoint that has the
//! image wins; none: the original reference stays. Answers are cached briefly, concurrent checks of
//! one manifest share one request, and a Pod's checks are bounded by `verify.timeout`.
//!
//! `protocol` speaks to registries; `clients` keeps one TLS client per host.

mod clients;
mod protocol;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::policy::Policy;
use crate::rewrite::candidates;
use crate::sync::lock;
pub use crate::verdict::{Absence, Candidate, Presence, Tried, Verdict, Verdicts};
pub use clients::ClientError;
use protocol::{head_manifest, image_of, REFUSED};
pub use protocol::{TokenError, MAX_REGISTRY_BODY};

type Pending = crate::flight::Flight<Verdict>;

/// Bounds the answer cache; past it, expired answers go, then all.
const MAX_CACHED: usize = 50_000;

/// Called with each answer: its label and how long the request took.
pub type OnCheck = Arc<dyn Fn(&str, Duration) + Send + Sync>;

const TIMED_OUT: &str = "timed out (verify.timeout)";

/// What a checker may use: where credentials come from, and who hears of each answer.
#[derive(Clone, Default)]
pub struct Access {
    /// Credentials kept in Secrets, `credentialsSecret` included (serve --pull-secrets, audit).
    pub pull_secrets: Option<Arc<crate::secrets::PullSecrets>>,
    /// ECR tokens and credential providers.
    pub cloud: Option<Arc<crate::credentials::Cloud>>,
    pub on_check: Option<OnCheck>,
}

/// Checks images against their endpoints. An image's check runs as a task of its own, so it
/// finishes and caches its answers even when the review that started it has stopped waiting,
/// and every review asking for the same image meanwhile waits on that one task. Clones share all.
#[derive(Clone)]
pub struct Checker {
    inner: Arc<Inner>,
}

struct Inner {
    clients: clients::Clients,
    /// Answers by manifest URL, with when they expire.
    cache: Mutex<HashMap<String, (Instant, Presence)>>,
    /// Image checks under way, by their candidates' answer keys.
    inflight: crate::flight::Flights<String, Verdict>,
    access: Access,
}

impl Checker {
    /// The one way serve, audit and dry-run build a checker.
    pub fn new(access: Access) -> Self {
        Checker {
            inner: Arc::new(Inner {
                clients: clients::Clients::default(),
                cache: Mutex::default(),
                inflight: crate::flight::Flights::default(),
                access,
            }),
        }
    }

    /// Forgets clients and answers, so a changed policy's TLS settings and credentials apply.
    pub fn reset(&self) {
        self.inner.clients.clear();
        lock(&self.inner.cache).clear();
    }

    /// The verdicts for `images` when the policy has `verify` on, by `verify.timeout` or the
    /// caller's `deadline` (a review's), whichever comes first; `None` when it is off.
    pub async fn verdicts(
        &self,
        policy: &Arc<Policy>,
        images: &[String],
        deadline: tokio::time::Instant,
    ) -> Option<Verdicts> {
        match policy.verify.enabled {
            true => Some(self.verify_until(policy, images, Some(deadline)).await),
            false => None,
        }
    }

    /// Checks the endpoints of every image, in order, until `verify.timeout`; images left
    /// unanswered by then fail over to their original reference. Answers already cached are
    /// given at once, without a timer or a task.
    pub async fn verify(&self, policy: &Arc<Policy>, images: &[String]) -> Verdicts {
        self.verify_until(policy, images, None).await
    }

    async fn verify_until(
        &self,
        policy: &Arc<Policy>,
        images: &[String],
        by: Option<tokio::time::Instant>,
    ) -> Verdicts {
        let deadline = deadline_in(policy.verify.timeout);
        let deadline = by.map_or(deadline, |by| deadline.min(by));
        let mut verdicts = HashMap::with_capacity(images.len());
        let mut waiting = Vec::new();
        for image in images {
            let candidates = candidates(policy, image);
            match self.inner.cached(policy, &candidates, false) {
                Some(v) => {
                    verdicts.insert(image.clone(), v);
                }
                None => {
                    let pending = self.inner.start(policy, &candidates);
                    waiting.push((image, candidates, pending));
                }
            }
        }
        let answered = waiting
            .into_iter()
            .map(|(image, candidates, pending)| async move {
                let verdict = match tokio::time::timeout_at(deadline, pending).await {
                    Ok(v) => v,
                    Err(_) => self
                        .inner
                        .cached(policy, &candidates, true)
                        .unwrap_or_default(),
                };
                (image.clone(), verdict)
            });
        verdicts.extend(futures::future::join_all(answered).await);
        verdicts
    }
}

impl Inner {
    fn observe(&self, label: &str, took: Duration) {
        if let Some(on_check) = &self.access.on_check {
            on_check(label, took);
        }
    }

    fn cached_answer(&self, url: &str) -> Option<Presence> {
        match lock(&self.cache).get(url) {
            Some((until, answer)) if Instant::now() < *until => Some(answer.clone()),
            _ => None,
        }
    }

    fn store(&self, url: &str, answer: &Presence, policy: &Policy) {
        let ttl = match answer {
            Presence::Present { .. } => policy.verify.cache_ttl,
            Presence::Absent { .. } => policy.verify.negative_cache_ttl,
        };
        let mut cache = lock(&self.cache);
        if cache.len() >= MAX_CACHED {
            let now = Instant::now();
            cache.retain(|_, (until, _)| *until > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(
            url.to_owned(),
            (crate::duration::after(Instant::now(), ttl), answer.clone()),
        );
    }

    /// The verdict the cache gives for these candidates. An endpoint without a cached answer
    /// means there is no verdict yet; past the deadline (`timed_out`) it counts as timed out
    /// and ends the walk.
    fn cached(
        &self,
        policy: &Policy,
        candidates: &[Candidate],
        timed_out: bool,
    ) -> Option<Verdict> {
        let mut verdict = Verdict::default();
        for (i, c) in candidates.iter().enumerate() {
            let answer = match (self.cached_answer(&answer_key(policy, c)), timed_out) {
                (Some(a), _) => a,
                (None, true) => {
                    verdict.tried.push(Tried {
                        endpoint: c.endpoint_url.clone(),
                        answer: Presence::absent(Absence::TimedOut, TIMED_OUT),
                    });
                    break;
                }
                (None, false) => return None,
            };
            if verdict.record(i, c, answer) {
                break;
            }
        }
        Some(verdict)
    }

    /// The check of one image's candidates: the one under way, or a new task.
    fn start(self: &Arc<Self>, policy: &Arc<Policy>, candidates: &[Candidate]) -> Pending {
        let key = candidates
            .iter()
            .map(|c| answer_key(policy, c))
            .collect::<Vec<_>>()
            .join("\n");
        let (inner, policy, candidates) = (self.clone(), policy.clone(), candidates.to_vec());
        self.inflight.join(
            key,
            move || inner.check(policy, candidates),
            |_| Verdict::default(),
        )
    }

    /// Asks the endpoints in order, each answer from the cache or a HEAD, until one has the
    /// image or `verify.timeout` has passed; caches what it learns.
    async fn check(self: Arc<Self>, policy: Arc<Policy>, candidates: Vec<Candidate>) -> Verdict {
        let deadline = deadline_in(policy.verify.timeout);
        let mut verdict = Verdict::default();
        for (i, c) in candidates.iter().enumerate() {
            let cache_key = answer_key(&policy, c);
            let answer = match self.cached_answer(&cache_key) {
                Some(a) => a,
                None => {
                    let started = Instant::now();
                    let answer = match tokio::time::timeout_at(deadline, self.ask(&policy, c)).await
                    {
                        Ok(a) => a,
                        Err(_) => {
                            // The request was dropped unanswered; count it here.
                            let a = Presence::absent(Absence::TimedOut, TIMED_OUT);
                            self.observe(a.label(), started.elapsed());
                            a
                        }
                    };
                    self.store(&cache_key, &answer, &policy);
                    answer
                }
            };
            if verdict.record(i, c, answer) || tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        verdict
    }

    /// Whether the endpoint has the image. With `pinDigest`, a tag's answer is only as good as
    /// the digest it names: that manifest is asked for too, because a pull-through cache can
    /// still answer for a tag whose manifest it no longer has, and the node will pull the digest.
    async fn ask(&self, policy: &Policy, c: &Candidate) -> Presence {
        let answer = self.request(policy, &c.host, &c.manifest_url).await;
        let (Presence::Present { digest: Some(d) }, true) = (&answer, policy.verify.pin_digest)
        else {
            return answer;
        };
        let Some((base, reference)) = c.manifest_url.rsplit_once("/manifests/") else {
            return answer;
        };
        if reference == d {
            return answer;
        }
        match self
            .request(policy, &c.host, &format!("{base}/manifests/{d}"))
            .await
        {
            Presence::Present { .. } => answer,
            Presence::Absent {
                kind: Absence::NotFound,
                ..
            } => Presence::absent(
                Absence::NotFound,
                format!("not found: the tag names {d}, but that manifest is gone"),
            ),
            Presence::Absent { reason, kind } => Presence::absent(
                kind,
                format!("{reason} (asking for {d}, which the tag names)"),
            ),
        }
    }

    /// One manifest HEAD, with the credentials the policy has for the host if it asks for them.
    async fn request(&self, policy: &Policy, host: &str, url: &str) -> Presence {
        let started = Instant::now();
        let mut answer = match self.clients.get(policy, host) {
            Ok(client) => head_manifest(&client, url, || self.credentials(policy, host, url)).await,
            Err(e) => Presence::error(e.to_string()),
        };
        // registries.conf `insecure`: HTTPS first, then plain HTTP, as containers/image does.
        if let (
            Presence::Absent {
                kind: Absence::Error,
                ..
            },
            Some(rest),
        ) = (&answer, url.strip_prefix("https://"))
        {
            if policy.falls_back_to_http(host) {
                if let Ok(client) = self.clients.get(policy, host) {
                    let url = format!("http://{rest}");
                    answer =
                        head_manifest(&client, &url, || self.credentials(policy, host, &url)).await;
                }
            }
        }
        if matches!(&answer, Presence::Absent { reason, .. } if reason == REFUSED) {
            if let Some(cloud) = &self.access.cloud {
                cloud.refused(host);
            }
        }
        self.observe(answer.label(), started.elapsed());
        answer
    }

    /// `user:password` for a registry, from its `configs` source or a credential provider.
    async fn credentials(
        &self,
        policy: &Policy,
        host: &str,
        url: &str,
    ) -> Result<Option<String>, String> {
        let image = image_of(host, url);
        if policy.read_source(host, &image).is_none() {
            return Ok(None);
        }
        let resolved = match &self.access.pull_secrets {
            Some(ps) => ps.basic_credentials(policy, host, &image).await,
            None => crate::secrets::resolve_entry(
                policy,
                host,
                &image,
                None,
                self.access.cloud.as_deref(),
            )
            .await
            .map(|e| crate::dockerconfig::basic_of(&e)),
        };
        resolved.map_err(|e| e.to_string())
    }
}

/// Where an endpoint's answer for a candidate is cached: a tag answer confirmed by its digest
/// (`pinDigest`) is kept apart from a plain one.
fn answer_key<'a>(policy: &Policy, c: &'a Candidate) -> std::borrow::Cow<'a, str> {
    if policy.verify.pin_digest {
        format!("{} (digest confirmed)", c.manifest_url).into()
    } else {
        c.manifest_url.as_str().into()
    }
}

/// `d` from now on tokio's clock, never past what the clock holds.
fn deadline_in(d: Duration) -> tokio::time::Instant {
    tokio::time::Instant::from_std(crate::duration::after(Instant::now(), d))
}
