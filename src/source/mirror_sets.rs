//! `serve --watch-image-mirror-sets`: the cluster's ImageDigestMirrorSet, ImageTagMirrorSet and
//! ImageContentSourcePolicy objects, listed and watched, merged into the policy as they change.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde_json::{json, Value};

use super::PolicyStore;
use crate::policy::sources::MIRROR_SET_TYPES;

/// Watches the three kinds until dropped; each change reloads the policy with all of them.
pub async fn watch(client: Client, store: Arc<PolicyStore>) {
    let streams = MIRROR_SET_TYPES.iter().map(|t| {
        let gvk = GroupVersionKind::gvk(t.group, t.version, t.kind);
        let resource = ApiResource::from_gvk_with_plural(&gvk, t.plural);
        let kind = t.kind;
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        watcher(api, watcher::Config::default())
            .default_backoff()
            .map(move |e| (kind, e))
            .boxed()
    });
    let mut events = futures::stream::select_all(streams);
    let mut objects: BTreeMap<(&str, String), Value> = BTreeMap::new();
    let mut relisting: BTreeMap<&str, BTreeMap<(&str, String), Value>> = BTreeMap::new();
    let mut failing: BTreeMap<&str, bool> = BTreeMap::new();
    let mut published = None;
    while let Some((kind, event)) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => {
                relisting.insert(kind, BTreeMap::new());
            }
            Ok(watcher::Event::InitApply(o)) => {
                if let Some(list) = relisting.get_mut(kind) {
                    list.insert(
                        (kind, o.metadata.name.clone().unwrap_or_default()),
                        object(kind, &o),
                    );
                }
            }
            Ok(watcher::Event::InitDone) => {
                failing.insert(kind, false);
                objects.retain(|(k, _), _| *k != kind);
                objects.extend(relisting.remove(kind).unwrap_or_default());
            }
            Ok(watcher::Event::Apply(o)) => {
                objects.insert(
                    (kind, o.metadata.name.clone().unwrap_or_default()),
                    object(kind, &o),
                );
            }
            Ok(watcher::Event::Delete(o)) => {
                objects.remove(&(kind, o.metadata.name.clone().unwrap_or_default()));
            }
            Err(e) => {
                // A cluster without the kind answers 404 until it is installed: said once.
                if !failing.insert(kind, true).unwrap_or(false) {
                    tracing::warn!(kind, error = %e, "cannot watch the cluster's mirror sets; retrying");
                }
                continue;
            }
        }
        let text = text_of(&objects);
        if published.as_ref() != Some(&text) {
            tracing::info!(objects = objects.len(), "the cluster's mirror sets changed");
            if let Some(Err(why)) = store.apply_cluster_sets(text.clone()).await {
                tracing::warn!(error = %why, "the policy with the cluster's mirror sets is refused; the last good one stays");
            }
            published = Some(text);
        }
    }
}

/// What the policy reads of an object: its kind, name and spec.
fn object(kind: &str, o: &DynamicObject) -> Value {
    let api_version = o
        .types
        .as_ref()
        .map(|t| t.api_version.clone())
        .unwrap_or_default();
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": o.metadata.name},
        "spec": o.data.get("spec").cloned().unwrap_or(Value::Null),
    })
}

/// The objects as the YAML list `imageMirrorSets` would hold, in a stable order.
fn text_of(objects: &BTreeMap<(&str, String), Value>) -> String {
    if objects.is_empty() {
        return String::new();
    }
    let list = Value::Array(objects.values().cloned().collect());
    crate::yaml::to_yaml(&list).unwrap_or_default()
}
