//! One run per key at a time, shared by every caller that asks while it runs (I/O: the run is a
//! task of its own, so a caller that stops waiting, as a review at its deadline, does not stop
//! it, and what it learns is kept for the next). Used by verify's checks, ECR token fetches and
//! credential provider runs.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};

use crate::sync::lock;

/// A run under way, as its callers await it.
pub type Flight<T> = Shared<BoxFuture<'static, T>>;

/// The runs under way, by key.
pub struct Flights<K, T: Clone> {
    running: Arc<Mutex<HashMap<K, Flight<T>>>>,
}

impl<K, T: Clone> Default for Flights<K, T> {
    fn default() -> Self {
        Flights {
            running: Arc::default(),
        }
    }
}

impl<K, T> Flights<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// The run for `key` under way, or `start`'s, spawned now. `lost` answers for a run whose
    /// task ended without an answer (it panicked).
    pub fn join<F>(
        &self,
        key: K,
        start: impl FnOnce() -> F,
        lost: impl FnOnce(tokio::task::JoinError) -> T + Send + 'static,
    ) -> Flight<T>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let mut running = lock(&self.running);
        if let Some(flight) = running.get(&key) {
            return flight.clone();
        }
        let (all, done) = (self.running.clone(), key.clone());
        let run = start();
        let task = tokio::spawn(async move {
            let answer = run.await;
            lock(&all).remove(&done);
            answer
        });
        let flight = async move { task.await.unwrap_or_else(lost) }
            .boxed()
            .shared();
        running.insert(key, flight.clone());
        flight
    }

    /// Forgets the runs whose keys `keep` refuses (their callers still get their answers).
    pub fn retain(&self, mut keep: impl FnMut(&K) -> bool) {
        lock(&self.running).retain(|k, _| keep(k));
    }
}
