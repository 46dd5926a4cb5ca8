//! Kubelet credential provider plugins, run as the kubelet runs them (I/O): the executable named
//! after the provider in the plugin directory, its `args` and `env`, a `CredentialProviderRequest`
//! on stdin, a `CredentialProviderResponse` on stdout, within a timeout; answers cached as the
//! kubelet caches them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::credprovider::{Cache, Credential, Provider, Response, ResponseError};
use crate::sync::lock;

use super::{Fetch, OnFetch};

/// The most of a plugin's stdout that is read; a response is a few KB.
const MAX_OUTPUT: u64 = 1024 * 1024;

#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    #[error(
        "credential provider {0}: no plugin directory (serve --image-credential-provider-bin-dir)"
    )]
    NoDirectory(String),
    #[error("credential provider {name}: cannot run {path}: {why}")]
    Start {
        name: String,
        path: String,
        why: String,
    },
    #[error("credential provider {name}: no answer within {timeout:?}; stopped")]
    Timeout { name: String, timeout: Duration },
    /// What it wrote to stderr is not shown: a plugin may print its secrets there.
    #[error(
        "credential provider {name}: exited with {status} ({stderr} bytes on stderr, not shown)"
    )]
    Exit {
        name: String,
        status: String,
        stderr: usize,
    },
    #[error("credential provider {name}: {source}")]
    Response { name: String, source: ResponseError },
}

/// Plugin processes at once, all providers together, and for one provider: a dry-run naming
/// hundreds of images must not start hundreds of processes.
const MAX_RUNS: usize = 8;
const MAX_RUNS_PER_PROVIDER: usize = 4;

/// A run under way, shared by every caller that wants its answer (success or failure).
type Run = crate::flight::Flight<Result<Arc<Response>, PluginError>>;
type Caches = Arc<Mutex<HashMap<String, Cache>>>;

pub(super) struct Plugins {
    dir: Option<PathBuf>,
    timeout: Duration,
    /// Each provider's cache, by provider name.
    caches: Caches,
    /// One run per provider and image at a time; the others wait for its answer.
    running: crate::flight::Flights<(String, String), Result<Arc<Response>, PluginError>>,
    all: Arc<Semaphore>,
    per_provider: Mutex<HashMap<String, Arc<Semaphore>>>,
    observe: OnFetch,
}

impl Plugins {
    pub fn new(dir: Option<PathBuf>, timeout: Duration, observe: OnFetch) -> Self {
        Plugins {
            dir,
            timeout,
            caches: Caches::default(),
            running: crate::flight::Flights::default(),
            all: Arc::new(Semaphore::new(MAX_RUNS)),
            per_provider: Mutex::default(),
            observe,
        }
    }

    /// The credential `provider` gives for `image`, from its cache or a run of its plugin.
    /// `None`: it answered, with nothing for this image. A caller that stops waiting (its
    /// review's deadline) leaves the run going: its answer is cached for the next.
    pub async fn credential(
        &self,
        provider: &Provider,
        image: &str,
    ) -> Result<Option<Credential>, PluginError> {
        if let Some(r) = cached(&self.caches, provider, image) {
            return Ok(r.credential_for(image).cloned());
        }
        let run = self.run_for(provider, image);
        Ok(run.await?.credential_for(image).cloned())
    }

    /// The run answering `provider` for `image`: the one under way, or a new one.
    fn run_for(&self, provider: &Provider, image: &str) -> Run {
        let slot = lock(&self.per_provider)
            .entry(provider.name.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(MAX_RUNS_PER_PROVIDER)))
            .clone();
        let job = Job {
            dir: self.dir.clone(),
            timeout: self.timeout,
            provider: provider.clone(),
            image: image.to_owned(),
        };
        let (all, caches, observe) = (self.all.clone(), self.caches.clone(), self.observe.clone());
        let name = provider.name.clone();
        self.running.join(
            (provider.name.clone(), image.to_owned()),
            move || async move {
                // Closed semaphores never happen here; a failure would only skip the bound.
                let _one = slot.acquire_owned().await.ok();
                let _all = all.acquire_owned().await.ok();
                // The cache again: an earlier run may have answered while this one queued.
                if let Some(r) = cached(&caches, &job.provider, &job.image) {
                    return Ok(r);
                }
                let ran = job.run().await;
                observe(Fetch::Provider, ran.is_ok());
                let r = Arc::new(ran?);
                lock(&caches)
                    .entry(job.provider.name.clone())
                    .or_default()
                    .put(
                        &job.image,
                        r.clone(),
                        job.provider.default_cache_duration,
                        Instant::now(),
                    );
                Ok(r)
            },
            move |e| {
                Err(PluginError::Start {
                    name,
                    path: String::new(),
                    why: format!("the run ended unexpectedly: {e}"),
                })
            },
        )
    }

    /// Forgets cached answers (a new policy may configure the providers otherwise).
    pub fn clear(&self) {
        lock(&self.caches).clear();
    }
}

fn cached(caches: &Caches, provider: &Provider, image: &str) -> Option<Arc<Response>> {
    lock(caches)
        .get(&provider.name)
        .and_then(|c| c.get(image, Instant::now()))
}

/// One run of a provider's plugin for one image.
struct Job {
    dir: Option<PathBuf>,
    timeout: Duration,
    provider: Provider,
    image: String,
}

impl Job {
    async fn run(&self) -> Result<Response, PluginError> {
        let provider = &self.provider;
        let name = provider.name.clone();
        let dir = self
            .dir
            .as_ref()
            .ok_or_else(|| PluginError::NoDirectory(name.clone()))?;
        let path = dir.join(&provider.name);
        let start_error = |why: String| PluginError::Start {
            name: name.clone(),
            path: path.display().to_string(),
            why,
        };
        let mut child = tokio::process::Command::new(&path)
            .args(&provider.args)
            .envs(provider.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that whatever it starts is stopped with it.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| start_error(e.to_string()))?;
        let group = Group(child.id());
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(start_error("no standard streams".into()));
        };
        let request = provider.request(&self.image);
        let talk = async {
            // A plugin may exit without reading its input: a broken pipe is its answer, not ours.
            let _ = stdin.write_all(&request).await;
            drop(stdin);
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let (mut stdout, mut stderr) = (stdout.take(MAX_OUTPUT), stderr.take(MAX_OUTPUT));
            let (status, _, _) = tokio::join!(
                child.wait(),
                stdout.read_to_end(&mut out),
                stderr.read_to_end(&mut err),
            );
            (status, out, err)
        };
        let (status, out, err) = tokio::time::timeout(self.timeout, talk)
            .await
            .map_err(|_| PluginError::Timeout {
                name: name.clone(),
                timeout: self.timeout,
            })?;
        drop(group);
        let status = status.map_err(|e| start_error(e.to_string()))?;
        if !status.success() {
            return Err(PluginError::Exit {
                name,
                status: status.to_string(),
                stderr: err.len(),
            });
        }
        Response::parse(&out, &provider.api_version)
            .map_err(|source| PluginError::Response { name, source })
    }
}

/// A plugin's process group, killed whole when the run ends: a child it left behind (detached,
/// or still running after a timeout) does not outlive it.
struct Group(Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        let Some(pid) = self.0.and_then(|p| i32::try_from(p).ok()) else {
            return;
        };
        // SAFETY: kill(2) with a negative pid signals that process group; it touches no memory.
        // The group is the plugin's own (process_group(0) made its pid the group's id).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}
