//! OpenShift's ImageDigestMirrorSet, ImageTagMirrorSet and ImageContentSourcePolicy into
//! registries.conf entries, as the Machine Config Operator writes them onto nodes
//! (openshift/runtime-utils `EditRegistriesConfig`): digest sets give digest-only mirrors, tag
//! sets tag-only ones, `NeverContactSource` blocks the source, sets for one source are merged
//! in an order that respects each set's, and nested scopes inherit their parent's mirrors.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::policy::diagnostics::Diagnostics;
use crate::policy::document::{MirrorSetDoc, MirrorSetEntryDoc, MirrorSetKind};
use crate::policy::sources::{PullFrom, SourceEndpoint, SourceRegistry, Sources};
use crate::yaml::Pos;

/// The mirror lists given for one source, in the order they were written.
#[derive(Default)]
struct Lists {
    lists: Vec<Vec<String>>,
    never_contact: bool,
    /// Where a mirror was first named.
    origins: HashMap<String, (String, Pos)>,
    /// Entries that allow contacting the source, and those that do not, for the conflict check.
    allow_at: Option<(Pos, String)>,
    never_at: Option<(Pos, String)>,
}

pub(super) fn compile(d: &mut Diagnostics, sets: &[MirrorSetDoc], sources: &mut Sources) {
    let mut digest: BTreeMap<String, Lists> = BTreeMap::new();
    let mut tag: BTreeMap<String, Lists> = BTreeMap::new();
    for set in sets {
        let family = match set.kind {
            MirrorSetKind::Tag => &mut tag,
            _ => &mut digest,
        };
        for (i, e) in set.entries.iter().enumerate() {
            gather(d, set, e, &format!("{} [{i}]", set.name), family);
        }
    }
    for (source, lists) in digest.iter().chain(tag.iter()) {
        if let (Some((at, never)), Some((_, allow))) = (&lists.never_at, &lists.allow_at) {
            d.error_hint(
                *at,
                never,
                format!("conflicting mirrorSourcePolicy for `{source}`: NeverContactSource here, AllowContactingSource in {allow}"),
                Some("give every entry for one source the same policy".into()),
            );
        }
    }
    let mut registries: Vec<SourceRegistry> = std::mem::take(&mut sources.registries);
    add(&mut registries, &digest, PullFrom::DigestOnly);
    add(&mut registries, &tag, PullFrom::TagOnly);
    inherit(&mut registries, digest.keys().chain(tag.keys()));
    sources.merge(registries);
}

/// One entry's mirrors into its family, after the MCO's checks (`addMirrorSet`: mirrors that
/// only repeat the source are no mirror set).
fn gather(
    d: &mut Diagnostics,
    set: &MirrorSetDoc,
    e: &MirrorSetEntryDoc,
    origin: &str,
    family: &mut BTreeMap<String, Lists>,
) {
    let Some(source) = &e.source else {
        d.error(e.pos, origin, "a mirror set entry needs its `source`");
        return;
    };
    if !valid_scope(&source.value) {
        d.error_hint(
            source.pos,
            origin,
            format!("invalid source `{}`", source.value),
            Some("a registry, repository or namespace, or *.example.com".into()),
        );
        return;
    }
    let mut bad = false;
    for m in &e.mirrors {
        if m.value.contains('*') || m.value.is_empty() {
            d.error(
                m.pos,
                origin,
                format!("invalid mirror `{}`: mirrors cannot be wildcards", m.value),
            );
            bad = true;
        }
    }
    let real = e.mirrors.iter().any(|m| m.value != source.value);
    if e.never_contact_source.is_some() && !real {
        d.error_hint(
            source.pos,
            origin,
            format!(
                "mirrorSourcePolicy NeverContactSource for `{}` needs at least one mirror",
                source.value
            ),
            Some("add the mirrors the images come from, or drop the policy".into()),
        );
        bad = true;
    }
    if bad || !real {
        return;
    }
    let lists = family.entry(source.value.clone()).or_default();
    match e.never_contact_source {
        Some(at) => {
            lists.never_contact = true;
            lists.never_at.get_or_insert((at, origin.to_owned()));
        }
        None if set.kind != MirrorSetKind::ContentSource => {
            lists.allow_at.get_or_insert((e.pos, origin.to_owned()));
        }
        None => {}
    }
    for m in &e.mirrors {
        lists
            .origins
            .entry(m.value.clone())
            .or_insert_with(|| (origin.to_owned(), m.pos));
    }
    lists
        .lists
        .push(e.mirrors.iter().map(|m| m.value.clone()).collect());
}

/// `IsValidRegistriesConfScope`: anything without `*`, or `*.` and a domain.
fn valid_scope(scope: &str) -> bool {
    if scope.is_empty() {
        return false;
    }
    if !scope.contains('*') {
        return true;
    }
    scope
        .strip_prefix("*.")
        .is_some_and(|rest| !rest.contains(['/', '@', ':', '*']))
}

/// `addMirrorsToRegistries`: the merged mirrors of each source onto its entry.
fn add(
    registries: &mut Vec<SourceRegistry>,
    family: &BTreeMap<String, Lists>,
    pull_from: PullFrom,
) {
    for (source, lists) in family {
        let i = entry(registries, source, lists);
        let reg = &mut registries[i];
        if lists.never_contact {
            reg.blocked = true;
        }
        for m in merged(source, &lists.lists) {
            let (origin, pos) = lists.origins.get(&m).cloned().unwrap_or_default();
            reg.mirrors.push(SourceEndpoint {
                location: m,
                insecure: false,
                pull_from,
                origin,
                pos,
            });
        }
    }
}

/// The entry for a scope, made when missing (`getRegistryEntry`).
fn entry(registries: &mut Vec<SourceRegistry>, scope: &str, lists: &Lists) -> usize {
    if let Some(i) = registries.iter().position(|r| r.prefix == scope) {
        return i;
    }
    let location = if scope.starts_with("*.") {
        String::new()
    } else {
        scope.to_owned()
    };
    registries.push(SourceRegistry {
        prefix: scope.to_owned(),
        endpoint: SourceEndpoint {
            location,
            origin: lists
                .origins
                .values()
                .min_by_key(|(_, pos)| (pos.line, pos.col))
                .map_or_else(
                    || format!("imageMirrorSets source {scope}"),
                    |(o, _)| o.clone(),
                ),
            pos: lists
                .origins
                .values()
                .map(|(_, pos)| *pos)
                .min_by_key(|pos| (pos.line, pos.col))
                .unwrap_or_default(),
            ..SourceEndpoint::default()
        },
        ..SourceRegistry::default()
    });
    registries.len() - 1
}

/// `ScopeIsNestedInsideScope`.
pub(crate) fn nested(sub: &str, sup: &str) -> bool {
    if sub == sup {
        return true;
    }
    if sub.len() > sup.len() && sub.starts_with(sup) && sub.as_bytes()[sup.len()] == b'/' {
        return true;
    }
    let Some(suffix) = sup.strip_prefix('*') else {
        return false;
    };
    match sub.split_once(':') {
        Some((host, _)) => host.ends_with(suffix) && !host.contains('/'),
        None => sub.split('/').next().unwrap_or_default().ends_with(suffix),
    }
}

/// A more specific entry without mirrors of its own takes its parent's, moved to its scope,
/// since the longest prefix alone decides (`mirrorsAdjustedForNestedScope`).
fn inherit<'a>(registries: &mut [SourceRegistry], sources: impl Iterator<Item = &'a String>) {
    for source in sources {
        if source.starts_with("*.") {
            continue;
        }
        let Some(parent) = registries.iter().find(|r| r.prefix == *source).cloned() else {
            continue;
        };
        for reg in registries.iter_mut() {
            if reg.prefix != parent.prefix
                && nested(&reg.prefix, &parent.prefix)
                && reg.mirrors.is_empty()
            {
                let adjustment = reg.prefix[parent.prefix.len()..].to_owned();
                reg.mirrors = parent
                    .mirrors
                    .iter()
                    .map(|m| SourceEndpoint {
                        location: format!("{}{adjustment}", m.location),
                        ..m.clone()
                    })
                    .collect();
            }
        }
    }
}

/// One order for the mirrors of several sets that keeps each set's order where it can
/// (`mergedMirrors`, a topological sort that breaks ties and loops by name); the source itself
/// is left out when it comes last, since it is tried last anyway.
fn merged(source: &str, lists: &[Vec<String>]) -> Vec<String> {
    let mut outs: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut ins: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut add_edge = |from: &str, to: &str| {
        let (from, to) = (intern(lists, source, from), intern(lists, source, to));
        outs.entry(from).or_default().insert(to);
        ins.entry(to).or_default().insert(from);
        outs.entry(to).or_default();
        ins.entry(from).or_default();
    };
    for list in lists {
        for pair in list.windows(2) {
            add_edge(&pair[0], &pair[1]);
        }
        if !list.iter().any(|m| m == source) {
            if let Some(last) = list.last() {
                add_edge(last, source);
            }
        }
    }
    let all: Vec<&str> = outs.keys().copied().collect();
    let mut used: BTreeSet<&str> = BTreeSet::new();
    let mut queue: std::collections::VecDeque<&str> = all
        .iter()
        .copied()
        .filter(|n| ins.get(n).is_none_or(|s| s.is_empty()))
        .collect();
    let mut order = Vec::new();
    let mut next_unused = 0;
    while !queue.is_empty() || next_unused < all.len() {
        let node = match queue.pop_front() {
            Some(n) => n,
            None => {
                let n = all[next_unused];
                next_unused += 1;
                if used.contains(n) {
                    continue;
                }
                n
            }
        };
        if !used.insert(node) {
            continue;
        }
        order.push(node.to_owned());
        let mut batch: Vec<&str> = Vec::new();
        for out in outs.get(node).into_iter().flatten() {
            if let Some(s) = ins.get_mut(out) {
                s.remove(node);
                if s.is_empty() && !used.contains(out) {
                    batch.push(out);
                }
            }
        }
        batch.sort_unstable();
        queue.extend(batch);
    }
    if order.last().is_some_and(|l| l == source) {
        order.pop();
    }
    order
}

/// The `&str` of `name` that lives as long as `lists` or `source`.
fn intern<'a>(lists: &'a [Vec<String>], source: &'a str, name: &str) -> &'a str {
    if name == source {
        return source;
    }
    lists
        .iter()
        .flatten()
        .find(|m| *m == name)
        .map_or(source, String::as_str)
}
