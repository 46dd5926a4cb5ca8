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

use crate::credprovider::{Cache, Credential, Provider, Response, ResponseError};
use crate::sync::lock;

use super::{Fetch, Observer};

/// The most of a plugin's stdout that is read; a response is a few KB.
const MAX_OUTPUT: u64 = 1024 * 1024;
/// The most of its stderr quoted in an error.
const MAX_QUOTED: usize = 200;

#[derive(Debug, thiserror::Error)]
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
    #[error("credential provider {name}: exited with {status}{stderr}")]
    Exit {
        name: String,
        status: String,
        stderr: String,
    },
    #[error("credential provider {name}: {source}")]
    Response { name: String, source: ResponseError },
}

type Gate = Arc<tokio::sync::Mutex<()>>;

pub(super) struct Plugins {
    dir: Option<PathBuf>,
    timeout: Duration,
    /// Each provider's cache, by provider name.
    caches: Mutex<HashMap<String, Cache>>,
    /// One run per provider and image at a time; the others wait for its answer.
    running: Mutex<HashMap<(String, String), Gate>>,
    observe: Observer,
}

impl Plugins {
    pub fn new(dir: Option<PathBuf>, timeout: Duration, observe: Observer) -> Self {
        Plugins {
            dir,
            timeout,
            caches: Mutex::default(),
            running: Mutex::default(),
            observe,
        }
    }

    /// The credential `provider` gives for `image`, from its cache or a run of its plugin.
    /// `None`: it answered, with nothing for this image.
    pub async fn credential(
        &self,
        provider: &Provider,
        image: &str,
    ) -> Result<Option<Credential>, PluginError> {
        if let Some(r) = self.cached(provider, image) {
            return Ok(r.credential_for(image).cloned());
        }
        let key = (provider.name.clone(), image.to_owned());
        let gate = lock(&self.running).entry(key.clone()).or_default().clone();
        let turn = gate.lock().await;
        let result = match self.cached(provider, image) {
            Some(r) => Ok(r),
            None => {
                let ran = self.run(provider, image).await;
                (self.observe)(Fetch::Provider, ran.is_ok());
                ran.map(|r| {
                    let r = Arc::new(r);
                    let mut caches = lock(&self.caches);
                    let cache = caches.entry(provider.name.clone()).or_default();
                    cache.put(
                        image,
                        r.clone(),
                        provider.default_cache_duration,
                        Instant::now(),
                    );
                    r
                })
            }
        };
        drop(turn);
        let mut running = lock(&self.running);
        // Only this call and the map hold the gate: nobody waits on it.
        if Arc::strong_count(&gate) == 2 {
            running.remove(&key);
        }
        drop(running);
        Ok(result?.credential_for(image).cloned())
    }

    fn cached(&self, provider: &Provider, image: &str) -> Option<Arc<Response>> {
        lock(&self.caches)
            .get(&provider.name)
            .and_then(|c| c.get(image, Instant::now()))
    }

    /// Forgets cached answers (a new policy may configure the providers otherwise).
    pub fn clear(&self) {
        lock(&self.caches).clear();
    }

    async fn run(&self, provider: &Provider, image: &str) -> Result<Response, PluginError> {
        let name = provider.name.clone();
        let dir = self
            .dir
            .as_ref()
            .ok_or_else(|| PluginError::NoDirectory(name.clone()))?;
        let path = dir.join(&provider.name);
        let mut child = tokio::process::Command::new(&path)
            .args(&provider.args)
            .envs(provider.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| PluginError::Start {
                name: name.clone(),
                path: path.display().to_string(),
                why: e.to_string(),
            })?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(PluginError::Start {
                name,
                path: path.display().to_string(),
                why: "no standard streams".into(),
            });
        };
        let request = provider.request(image);
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
        let status = status.map_err(|e| PluginError::Start {
            name: name.clone(),
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        if !status.success() {
            return Err(PluginError::Exit {
                name,
                status: status.to_string(),
                stderr: quote(&err),
            });
        }
        Response::parse(&out, &provider.api_version)
            .map_err(|source| PluginError::Response { name, source })
    }
}

/// The start of a plugin's stderr, on one line: what it says about why it failed.
fn quote(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        return String::new();
    }
    let cut: String = line.chars().take(MAX_QUOTED).collect();
    format!(": {cut}")
}
