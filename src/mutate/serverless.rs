//! Serverless runtimes: which profiles apply to a pod, and the annotations each one reads.

use std::collections::BTreeMap;

use super::PodSpec;
use crate::policy::{Policy, Profile, ProfileMode};

/// The serverless profiles that apply to a pod, each with why. A profile's own signals (its pod
/// labels, its tolerations, its node selector with its toleration) claim the pod; a node selector
/// alone counts only when no profile claims the pod that way and no other profile on `auto`
/// selects it too, so two runtimes sharing `type: virtual-kubelet` never both annotate a pod.
pub fn serverless<'p>(
    policy: &'p Policy,
    spec: &PodSpec,
    labels: &BTreeMap<String, String>,
) -> Vec<(&'p Profile, String)> {
    let selects = |p: &Profile| {
        p.node_selector
            .iter()
            .find(|(k, v)| node_selects(spec, k, v))
            .map(|(k, v)| format!("{k}={v}"))
    };
    let tolerates = |keys: &[String]| {
        keys.iter()
            .find(|k| spec.tolerations.iter().any(|t| &t.key == *k))
            .cloned()
    };
    let mut claimed = Vec::new();
    let mut selected = Vec::new();
    for p in &policy.profiles {
        match p.mode {
            ProfileMode::Never => {}
            ProfileMode::Always => claimed.push((p, "enabled: always".to_owned())),
            ProfileMode::Auto => {
                if let Some((k, v)) = p.labels.iter().find(|(k, v)| labels.get(k) == Some(v)) {
                    claimed.push((p, format!("pod label {k}={v}")));
                } else if let Some(t) = tolerates(&p.tolerations) {
                    claimed.push((p, format!("toleration {t}")));
                } else if let Some(s) = selects(p) {
                    match (
                        p.node_selector_tolerations.is_empty(),
                        tolerates(&p.node_selector_tolerations),
                    ) {
                        (true, _) => selected.push((p, format!("node selector {s}"))),
                        (false, Some(t)) => {
                            claimed.push((p, format!("node selector {s} with toleration {t}")))
                        }
                        (false, None) => {}
                    }
                }
            }
        }
    }
    let claimed_on_auto = claimed.iter().any(|(p, _)| p.mode == ProfileMode::Auto);
    let selecting = policy
        .profiles
        .iter()
        .filter(|p| p.mode == ProfileMode::Auto && selects(p).is_some())
        .count();
    if !claimed_on_auto && selecting == 1 {
        claimed.extend(selected);
    }
    claimed
}

/// Whether the pod asks for nodes labelled `key=value`: in its nodeSelector or in a required node
/// affinity term with operator In.
fn node_selects(spec: &PodSpec, key: &str, value: &str) -> bool {
    spec.node_selector.get(key).map(String::as_str) == Some(value)
        || spec
            .affinity
            .node_affinity
            .required_during_scheduling_ignored_during_execution
            .node_selector_terms
            .iter()
            .flat_map(|t| &t.match_expressions)
            .any(|r| r.key == key && r.operator == "In" && r.values.iter().any(|v| v == value))
}

/// The annotations `profile` reads, from the registries the pod pulls from after rewriting.
pub(super) fn profile_annotations(
    policy: &Policy,
    profile: &Profile,
    registries: &[String],
    existing: Option<&BTreeMap<String, String>>,
    wanted: &mut BTreeMap<String, String>,
) {
    let current = |k: &str| existing.and_then(|a| a.get(k)).map(String::as_str);
    let lists = [
        (
            &profile.plain_http,
            registries
                .iter()
                .filter(|r| policy.is_http(r))
                .collect::<Vec<_>>(),
        ),
        (
            &profile.insecure,
            registries
                .iter()
                .filter(|r| policy.is_insecure(r))
                .collect(),
        ),
    ];
    for (annotation, hosts) in lists {
        let Some(annotation) = annotation else {
            continue;
        };
        if let Some(v) = merge_list(current(annotation), hosts.into_iter(), &profile.separator) {
            wanted.insert(annotation.clone(), v);
        }
    }
    // A value the pod set itself wins.
    for (key, value) in [&profile.host_aliases, &profile.dns_config]
        .into_iter()
        .flatten()
    {
        if current(key).is_none() {
            wanted.insert(key.clone(), value.clone());
        }
    }
}

/// A `separator` list with `hosts` appended where missing; `None` when it already has them all.
fn merge_list<'a>(
    current: Option<&str>,
    hosts: impl Iterator<Item = &'a String>,
    separator: &str,
) -> Option<String> {
    let mut items: Vec<&str> = current
        .unwrap_or_default()
        .split(separator)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let before = items.len();
    for h in hosts {
        if !items.contains(&h.as_str()) {
            items.push(h);
        }
    }
    (items.len() > before).then(|| items.join(separator))
}
