//! Files that are re-read when they change. Polling the contents catches every way a file can
//! change under a Pod: an edit, an atomic rename, and the symlink swap of a mounted ConfigMap or
//! Secret, which file-event APIs report unreliably.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// Certificates, keys and CA bundles are a few KB; more than this is not one.
pub const MAX_TLS_FILE: usize = 1024 * 1024;

/// A watched file that could not be read; compared by value, so one error is reported once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read {}: {reason}", path.display())]
pub struct ReadError {
    pub path: PathBuf,
    pub reason: String,
}

fn too_large(path: &Path, max: usize) -> ReadError {
    ReadError {
        path: path.to_owned(),
        reason: format!("it is larger than {max} bytes: at most {max} are accepted"),
    }
}

fn unreadable(path: &Path, e: &std::io::Error) -> ReadError {
    ReadError {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// The contents of `path`, read no further than `max` bytes: a file that is larger (or endless,
/// as /dev/zero) is an error, found after reading `max + 1` bytes.
pub fn read_capped(path: &Path, max: usize) -> Result<Vec<u8>, ReadError> {
    let file = std::fs::File::open(path).map_err(|e| unreadable(path, &e))?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(path, &e))?;
    match bytes.len() > max {
        true => Err(too_large(path, max)),
        false => Ok(bytes),
    }
}

/// `read_capped` for async callers.
pub async fn read_capped_async(path: &Path, max: usize) -> Result<Vec<u8>, ReadError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| unreadable(path, &e))?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| unreadable(path, &e))?;
    match bytes.len() > max {
        true => Err(too_large(path, max)),
        false => Ok(bytes),
    }
}

/// Reads `paths` (each at most `max` bytes) every `interval` and calls `on_change` with their contents whenever they differ
/// from what was last seen (at first: `loaded`, what the caller already acted on), or with the
/// error when they cannot be read (once per new error). Runs until the task is dropped.
pub async fn watch<F, Fut>(
    paths: Vec<PathBuf>,
    loaded: Vec<Vec<u8>>,
    max: usize,
    interval: Duration,
    mut on_change: F,
) where
    F: FnMut(Result<Vec<Vec<u8>>, ReadError>) -> Fut + Send,
    Fut: std::future::Future<Output = ()> + Send,
{
    let mut last: Option<Result<Vec<Vec<u8>>, ReadError>> = Some(Ok(loaded));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut read = Vec::with_capacity(paths.len());
        let mut failed = None;
        for p in &paths {
            match read_capped_async(p, max).await {
                Ok(bytes) => read.push(bytes),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let now = match failed {
            Some(e) => Err(e),
            None => Ok(read),
        };
        if last.as_ref() != Some(&now) {
            on_change(now.clone()).await;
            last = Some(now);
        }
    }
}
