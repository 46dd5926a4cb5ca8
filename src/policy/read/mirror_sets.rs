//! `imageMirrorSets`: OpenShift's ImageDigestMirrorSet, ImageTagMirrorSet and
//! ImageContentSourcePolicy objects, pasted as `oc get -o yaml` shows them.

use super::super::diagnostics::Diagnostics;
use super::super::document::*;
use super::super::sources::MIRROR_SET_TYPES;
use super::Reader;
use crate::yaml::{self, Node};

const OBJECT_KEYS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];
const ENTRY_KEYS: &[&str] = &["source", "mirrors", "mirrorSourcePolicy"];

/// The list under `name`: the policy's `imageMirrorSets`, or the cluster's objects.
pub(super) fn read_mirror_sets(r: &mut Reader, node: &Node, name: &str) -> Vec<MirrorSetDoc> {
    let items = r.list(node, name);
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| read_set(r, item, &format!("{name}[{i}]")))
        .collect()
}

fn read_set(r: &mut Reader, node: &Node, path: &str) -> Option<MirrorSetDoc> {
    let (mut api, mut kind, mut name, mut spec) = (None, None, None, None);
    for (k, v) in r.map(node, path) {
        match k.as_str().unwrap_or_default() {
            "apiVersion" => api = r.string(v, &format!("{path}.apiVersion")),
            "kind" => kind = r.string(v, &format!("{path}.kind")),
            "metadata" => {
                for (mk, mv) in r.map(v, &format!("{path}.metadata")) {
                    if mk.as_str() == Some("name") {
                        name = r.string(mv, &format!("{path}.metadata.name"));
                    }
                }
            }
            "spec" => spec = Some(v),
            "status" => {}
            _ => r.unknown(k, path, OBJECT_KEYS),
        }
    }
    let Some(kind) = kind else {
        r.error(node.pos, path, "a mirror set needs its `kind`");
        return None;
    };
    let Some(t) = MIRROR_SET_TYPES.iter().find(|t| t.kind == kind.value) else {
        let known: Vec<&str> = MIRROR_SET_TYPES.iter().map(|t| t.kind).collect();
        r.error_hint(
            kind.pos,
            path,
            format!("`{}` is not a mirror set kind", kind.value),
            Some(format!("use one of {}", known.join(", "))),
        );
        return None;
    };
    let (want_api, kind_name, set_kind, list_key) = (t.api_version(), t.kind, t.set_kind, t.list);
    match &api {
        Some(a) if a.value == want_api => {}
        Some(a) => r.error(
            a.pos,
            path,
            format!("{kind_name} is {want_api}, not `{}`", a.value),
        ),
        None => r.error(
            node.pos,
            path,
            format!("{kind_name} needs apiVersion: {want_api}"),
        ),
    }
    let name = name.map_or_else(|| format!("[{path}]"), |n| n.value);
    let mut set = MirrorSetDoc {
        kind: set_kind,
        name: format!("{kind_name}/{name}"),
        entries: Vec::new(),
    };
    let Some(spec) = spec else {
        return Some(set);
    };
    for (k, v) in r.map(spec, &format!("{path}.spec")) {
        let key = k.as_str().unwrap_or_default();
        if key != list_key {
            r.unknown(k, &format!("{path}.spec"), &[list_key]);
            continue;
        }
        let at = format!("{path}.spec.{list_key}");
        let entries = r.list(v, &at);
        for (i, e) in entries.iter().enumerate() {
            set.entries
                .push(read_entry(r, e, &format!("{at}[{i}]"), set_kind));
        }
    }
    Some(set)
}

fn read_entry(r: &mut Reader, node: &Node, path: &str, kind: MirrorSetKind) -> MirrorSetEntryDoc {
    let mut entry = MirrorSetEntryDoc {
        pos: node.pos,
        ..MirrorSetEntryDoc::default()
    };
    for (k, v) in r.map(node, path) {
        let key = k.as_str().unwrap_or_default();
        let at = format!("{path}.{key}");
        match key {
            "source" => entry.source = r.string(v, &at),
            "mirrors" => entry.mirrors = r.strings(v, &at),
            "mirrorSourcePolicy" if kind != MirrorSetKind::ContentSource => {
                match r.string(v, &at) {
                    Some(p) if p.value == "NeverContactSource" => {
                        entry.never_contact_source = Some(p.pos)
                    }
                    Some(p) if p.value == "AllowContactingSource" => {}
                    Some(p) => r.error_hint(
                        p.pos,
                        &at,
                        format!("unknown mirrorSourcePolicy `{}`", p.value),
                        Some("use NeverContactSource or AllowContactingSource".into()),
                    ),
                    None => {}
                }
            }
            _ => r.unknown(k, path, ENTRY_KEYS),
        }
    }
    entry
}

/// The cluster's own mirror set objects (`serve --watch-image-mirror-sets`), as a YAML list,
/// after the policy's. Their findings name the object, since the text is made, not written.
pub(in crate::policy) fn cluster_mirror_sets(
    text: &str,
    doc: &mut Document,
    diags: &mut Diagnostics,
) {
    let mut r = Reader {
        diags: Diagnostics::default(),
        source: text,
    };
    match yaml::parse_single(text) {
        Ok(root) => {
            let sets = read_mirror_sets(&mut r, &root, CLUSTER_SETS);
            doc.mirror_sets.extend(sets);
        }
        Err(e) => r.error(e.pos, CLUSTER_SETS, e.message),
    }
    diags.list.extend(r.diags.list.into_iter().map(|mut d| {
        d.pos = crate::yaml::Pos { line: 1, col: 1 };
        d
    }));
}

/// How findings name the cluster's own mirror sets.
const CLUSTER_SETS: &str = "cluster mirror sets";
