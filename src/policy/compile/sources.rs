//! What the runtime formats share once merged into `Sources`: what `check` notes of each entry,
//! and the hosts they call insecure.

use std::collections::HashMap;

use crate::policy::diagnostics::Diagnostics;
use crate::policy::sources::{PullFrom, SourceEndpoint, SourceRegistry, Sources};
use crate::policy::Severity;

/// What `check` says of each entry: the sources it gives, in order, and where it meets K3s
/// `mirrors` (these files decide first).
pub(super) fn notes(
    d: &mut Diagnostics,
    sources: &Sources,
    k3s: &HashMap<String, crate::policy::Mirror>,
) {
    for r in sources.entries() {
        let mut list: Vec<String> = r
            .mirrors
            .iter()
            .map(|m| describe(m, r.mirror_by_digest_only))
            .collect();
        let primary = match (r.blocked, r.endpoint.location.as_str()) {
            (true, l) => format!("{} (blocked)", if l.is_empty() { "the source" } else { l }),
            (false, "") => "the source as written".to_owned(),
            (false, _) => describe(&r.endpoint, false),
        };
        list.push(primary);
        let prefix = if r.prefix.is_empty() {
            "every registry without a directory"
        } else {
            &r.prefix
        };
        d.push(
            Severity::Note,
            r.endpoint.pos,
            r.origin(),
            format!("{prefix}: pulled from {}", list.join(", then ")),
            None,
        );
        let host = r.prefix.split('/').next().unwrap_or_default();
        if let Some(m) = k3s.get(host).filter(|m| !m.endpoints.is_empty()) {
            d.push(
                Severity::Note,
                r.endpoint.pos,
                r.origin(),
                format!("mirrors[{}] names this registry too: this entry decides the images it matches, mirrors[{}] the rest", m.key, m.key),
                None,
            );
        }
    }
}

fn describe(e: &SourceEndpoint, digest_only: bool) -> String {
    let mut s = e.location.clone();
    let restriction = if digest_only {
        PullFrom::DigestOnly
    } else {
        e.pull_from
    };
    if restriction != PullFrom::All {
        s.push_str(&format!(" ({} pulls)", restriction.as_str()));
    }
    if e.insecure {
        s.push_str(" (insecure)");
    }
    s
}

/// The hosts registries.conf calls `insecure`: their certificates are not verified, and verify
/// falls back to plain HTTP for them, as the node does.
pub(super) fn insecure_hosts(parts: &mut super::Parts) -> std::collections::HashSet<String> {
    let hosts: std::collections::HashSet<String> = parts
        .sources
        .registries
        .iter()
        .flat_map(SourceRegistry::endpoints)
        .filter(|e| e.insecure && !e.location.is_empty())
        .map(|e| e.host().to_owned())
        .collect();
    for host in &hosts {
        parts.insecure.insert(host.clone());
        let wildcard = parts.wildcard_config.clone();
        let config = parts
            .configs
            .entry(host.clone())
            .or_insert_with(|| wildcard.unwrap_or_default());
        config.tls.insecure_skip_verify = true;
    }
    hosts
}
