//! The policy from one ConfigMap, watched through the Kubernetes API. A change is loaded off to
//! the side and swapped in; a bad one, a missing key or a deleted ConfigMap keeps the last good
//! policy, and says so in the log, in a metric and as an Event on the ConfigMap.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};

use crate::source::{NamespacedName, PolicyStore};

/// The key that holds the policy document.
pub const POLICY_KEY: &str = "policy.yaml";

/// Reports what happened to the policy as Events on the ConfigMap. Best effort: a refusal (such as
/// a missing RBAC permission) is logged once and then left alone.
struct Events {
    recorder: Recorder,
    failed_once: bool,
}

impl Events {
    async fn publish(&mut self, cm: &ConfigMap, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1024).collect()),
            action: "LoadPolicy".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &cm.object_ref(&())).await {
            if !self.failed_once {
                tracing::warn!(error = %e, "cannot record Events on the policy ConfigMap (RBAC?); going on without them");
                self.failed_once = true;
            }
        }
    }
}

/// What the watch has last acted on, so that resyncs and relists of an unchanged ConfigMap do
/// nothing, and the same problem is reported once.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Nothing,
    Text(String),
    MissingKey,
    Gone,
}

/// The policy text the ConfigMap holds now: what audit, check and dry-run judge by.
pub async fn read(client: &Client, cm: &NamespacedName) -> anyhow::Result<String> {
    use anyhow::Context;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &cm.namespace);
    let map = api
        .get(&cm.name)
        .await
        .with_context(|| format!("cannot read ConfigMap {cm}"))?;
    map.data
        .and_then(|mut d| d.remove(POLICY_KEY))
        .with_context(|| format!("ConfigMap {cm} has no {POLICY_KEY}"))
}

/// Watches the ConfigMap until the task is dropped; errors back off and the watch resumes.
/// `pod_name` names the Events' reporting instance.
pub async fn watch(
    client: Client,
    target: NamespacedName,
    store: Arc<PolicyStore>,
    pod_name: Option<String>,
) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &target.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", target.name));
    let reporter = Reporter {
        controller: "image-mirror-webhook".into(),
        instance: pod_name,
    };
    let mut events = Events {
        recorder: Recorder::new(client, reporter),
        failed_once: false,
    };
    let origin = format!("configmap {target}");
    let mut seen = Seen::Nothing;
    let mut listed = false;
    let stream = watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => listed = false,
            Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => {
                listed = true;
                apply(&store, &origin, &cm, &mut seen, &mut events).await;
            }
            Ok(watcher::Event::InitDone) if !listed => {
                if seen != Seen::Gone {
                    gone(&store, &origin, None, &mut events).await;
                    seen = Seen::Gone;
                }
            }
            Ok(watcher::Event::InitDone) => {}
            Ok(watcher::Event::Delete(cm)) => {
                gone(&store, &origin, Some(&cm), &mut events).await;
                seen = Seen::Gone;
            }
            Err(e) => store.source_failed(&origin, &e.to_string()),
        }
    }
}

async fn apply(
    store: &PolicyStore,
    origin: &str,
    cm: &ConfigMap,
    seen: &mut Seen,
    events: &mut Events,
) {
    let Some(text) = cm.data.as_ref().and_then(|d| d.get(POLICY_KEY)) else {
        if *seen != Seen::MissingKey {
            *seen = Seen::MissingKey;
            let why =
                format!("the ConfigMap has no key {POLICY_KEY}; keeping the last good policy");
            store.refuse(origin, &why);
            events
                .publish(cm, EventType::Warning, "PolicyMissing", why)
                .await;
        }
        return;
    };
    if *seen == Seen::Text(text.clone()) {
        return;
    }
    *seen = Seen::Text(text.clone());
    match store.apply(origin, text.clone()).await {
        Ok(warnings) => {
            let note = format!("policy loaded with {warnings} warning(s)");
            events
                .publish(cm, EventType::Normal, "PolicyLoaded", note)
                .await;
        }
        Err(why) => {
            let note = format!("policy rejected, the last good one stays in force: {why}");
            events
                .publish(cm, EventType::Warning, "PolicyRejected", note)
                .await;
        }
    }
}

async fn gone(store: &PolicyStore, origin: &str, cm: Option<&ConfigMap>, events: &mut Events) {
    store.refuse(origin, "the policy ConfigMap does not exist");
    if let Some(cm) = cm {
        let note =
            "the policy ConfigMap was deleted; the last good policy stays in force".to_owned();
        events
            .publish(cm, EventType::Warning, "PolicyDeleted", note)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r: NamespacedName = "image-mirror/policy".parse().unwrap();
        assert_eq!(
            (r.namespace.as_str(), r.name.as_str()),
            ("image-mirror", "policy")
        );
        for bad in ["policy", "/policy", "ns/", "ns/Policy", "a/b/c", ""] {
            assert!(bad.parse::<NamespacedName>().is_err(), "{bad}");
        }
    }
}
