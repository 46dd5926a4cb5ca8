//! The patch: minimal JSON Patch operations that never write into a parent that is missing.

use std::collections::BTreeMap;

use json_patch::{AddOperation, PatchOperation};
use jsonptr::PointerBuf;
use serde_json::Value;

use super::{Metadata, Mutation, PodSpec, ORIGINAL_IMAGES};

/// The JSON pointer to `tokens` inside the template at `base`.
pub(super) fn pointer(base: &[&str], tokens: &[String]) -> PointerBuf {
    PointerBuf::from_tokens(
        base.iter()
            .copied()
            .chain(tokens.iter().map(String::as_str)),
    )
}

/// Keeps the Pod within the API server's annotation limit: the record of original images goes
/// first (it is only a record), then every annotation this pass would add, each with a warning.
pub(super) fn fit_annotations(
    m: &mut Mutation,
    existing: Option<&BTreeMap<String, String>>,
    wanted: &mut BTreeMap<String, String>,
) {
    let size = |wanted: &BTreeMap<String, String>| {
        let kept = existing
            .into_iter()
            .flatten()
            .filter(|(k, _)| !wanted.contains_key(*k));
        kept.chain(wanted.iter())
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
    };
    const MAX: usize = crate::names::MAX_ANNOTATIONS_BYTES;
    if size(wanted) <= MAX {
        return;
    }
    if wanted.remove(ORIGINAL_IMAGES).is_some() {
        m.warn(format!(
            "{ORIGINAL_IMAGES} not recorded: the pod's annotations would pass the API server's {MAX}-byte limit"
        ));
    }
    if size(wanted) > MAX && !wanted.is_empty() {
        let keys: Vec<String> = std::mem::take(wanted).into_keys().collect();
        m.warn(format!(
            "annotations {} not added: the pod's annotations would pass the API server's {MAX}-byte limit",
            keys.join(", ")
        ));
    }
}

/// `add` needs the parent to exist: a missing map is added whole, never written into.
pub(super) fn add_annotations(
    m: &mut Mutation,
    base: &[&str],
    meta: Option<&Metadata>,
    wanted: BTreeMap<String, String>,
) {
    if wanted.is_empty() {
        return;
    }
    let as_map = || {
        Value::Object(
            wanted
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    };
    match meta {
        None => m.patch.0.push(PatchOperation::Add(AddOperation {
            path: pointer(base, &["metadata".into()]),
            value: serde_json::json!({ "annotations": as_map() }),
        })),
        Some(meta) if meta.annotations.is_none() => {
            m.patch.0.push(PatchOperation::Add(AddOperation {
                path: pointer(base, &["metadata".into(), "annotations".into()]),
                value: as_map(),
            }))
        }
        Some(_) => {
            for (k, v) in &wanted {
                m.patch.0.push(PatchOperation::Add(AddOperation {
                    path: pointer(base, &["metadata".into(), "annotations".into(), k.clone()]),
                    value: Value::String(v.clone()),
                }));
            }
        }
    }
    m.annotations = wanted;
}

pub(super) fn add_pull_secrets(
    m: &mut Mutation,
    base: &[&str],
    spec: &PodSpec,
    secrets: Vec<String>,
) {
    if secrets.is_empty() {
        return;
    }
    let entry = |name: &String| serde_json::json!({ "name": name });
    if spec.image_pull_secrets.is_none() {
        m.patch.0.push(PatchOperation::Add(AddOperation {
            path: pointer(base, &["spec".into(), "imagePullSecrets".into()]),
            value: Value::Array(secrets.iter().map(entry).collect()),
        }));
    } else {
        for s in &secrets {
            m.patch.0.push(PatchOperation::Add(AddOperation {
                path: pointer(
                    base,
                    &["spec".into(), "imagePullSecrets".into(), "-".into()],
                ),
                value: entry(s),
            }));
        }
    }
    m.pull_secrets = secrets;
}
