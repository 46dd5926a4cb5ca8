//! Files that are re-read when they change. Polling the contents catches every way a file can
//! change under a Pod: an edit, an atomic rename, and the symlink swap of a mounted ConfigMap or
//! Secret, which file-event APIs report unreliably.

use std::path::PathBuf;
use std::time::Duration;

/// A watched file that could not be read; compared by value, so one error is reported once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read {}: {reason}", path.display())]
pub struct ReadError {
    pub path: PathBuf,
    pub reason: String,
}

/// Reads `paths` every `interval` and calls `on_change` with their contents whenever they differ
/// from what was last seen (at first: `loaded`, what the caller already acted on), or with the
/// error when they cannot be read (once per new error). Runs until the task is dropped.
pub async fn watch<F, Fut>(
    paths: Vec<PathBuf>,
    loaded: Vec<Vec<u8>>,
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
            match tokio::fs::read(p).await {
                Ok(bytes) => read.push(bytes),
                Err(e) => {
                    failed = Some(ReadError {
                        path: p.clone(),
                        reason: e.to_string(),
                    });
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
