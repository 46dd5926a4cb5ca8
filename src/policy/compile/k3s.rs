//! K3s `mirrors`: endpoints normalised in order and rewrite rules compiled.

use std::collections::HashSet;

use super::regex::{build_set, check_replacement, Regexes};
use super::Parts;
use crate::policy::diagnostics::Diagnostics;
use crate::policy::document::{Document, MirrorDoc};
use crate::policy::endpoint::{self, Scheme};
use crate::policy::{Mirror, MirrorEndpoint, Rewrite, Severity, Verify};
use crate::reference::is_domain;

/// Up to this many rewrite rules a mirror tries them one by one; past it, one `RegexSet` finds
/// the first match in one scan.
const FEW_RULES: usize = 4;

pub(super) fn mirrors(
    r: &mut Diagnostics,
    regexes: &mut Regexes,
    doc: &Document,
    parts: &mut Parts,
) {
    let config_keys: HashSet<&str> = doc.configs.iter().map(|c| c.key.value.as_str()).collect();
    for m in &doc.mirrors {
        if let Some(mirror) = mirror(r, regexes, m, &config_keys) {
            parts.add_mirror(mirror);
        }
    }
}

/// Without `verify`, an image goes to one endpoint; say so where a mirror lists several.
pub(super) fn note_unused_endpoints(r: &mut Diagnostics, doc: &Document, verify: &Verify) {
    if verify.enabled {
        return;
    }
    for m in doc.mirrors.iter().filter(|m| m.endpoints.len() > 1) {
        r.push(
            Severity::Note,
            m.key.pos,
            &format!("mirrors[{}].endpoint", m.key.value),
            "only the first endpoint is used: the webhook picks one endpoint per image (containerd would try the others at pull time)",
            Some("turn verify on to choose the first endpoint that has the image".into()),
        );
    }
}

/// The entry's endpoints, normalised, in order, each once.
fn endpoints(r: &mut Diagnostics, m: &MirrorDoc, path: &str) -> Vec<MirrorEndpoint> {
    let mut endpoints = Vec::new();
    let mut seen = HashSet::new();
    for (i, raw) in m.endpoints.iter().enumerate() {
        let at = format!("{path}.endpoint[{i}]");
        match endpoint::parse(&raw.value) {
            Ok(ep) if !seen.insert(ep.url.clone()) => r.push(
                Severity::Note,
                raw.pos,
                &at,
                format!("repeats `{}`; the first occurrence is used", ep.url),
                None,
            ),
            Ok(ep) => {
                if ep.scheme == Scheme::Http {
                    // An image reference carries no scheme: the node decides how to reach it.
                    r.push(
                        Severity::Warning,
                        raw.pos,
                        &at,
                        format!("plain HTTP: images rewritten to `{}` carry no scheme, and a node's runtime pulls them over HTTPS unless it knows this registry is plain HTTP", ep.host),
                        Some("configure the nodes too, as a K3s node with this registries.yaml is (containerd hosts.toml, CRI-O registries.conf insecure = true); serverless pods get the runtime's annotation from this policy".into()),
                    );
                }
                endpoints.push(MirrorEndpoint {
                    endpoint: ep,
                    rule: at,
                })
            }
            Err(e) => r.push(Severity::Error, raw.pos, &at, e.message, e.hint),
        }
    }
    endpoints
}

/// A rule that can never apply: one naming the registry (rules see the repository path alone), or
/// one after a rule that matches every path (the first matching rule wins).
fn never_matching(
    r: &mut Diagnostics,
    key: &str,
    regex: &regex::bytes::Regex,
    before: &[Rewrite],
    pos: crate::yaml::Pos,
    at: &str,
) {
    let pattern = regex.as_str();
    let names_host = [key.to_owned(), key.replace('.', "\\.")]
        .iter()
        .any(|h| pattern.starts_with(&format!("^{h}/")));
    let message = if key != "*" && names_host {
        format!("never matches: rules are matched against the repository path without the registry (`library/nginx`, not `{key}/library/nginx`)")
    } else if let Some(all) = before.iter().find(|w| matches_every_path(&w.regex)) {
        format!("never applies: the rule `{}` before it matches every repository path, and the first matching rule wins", all.regex.as_str())
    } else {
        return;
    };
    r.push(Severity::Warning, pos, at, message, None);
}

/// Whether a regex matches any repository path, judged on a few unlike ones.
fn matches_every_path(regex: &regex::bytes::Regex) -> bool {
    ["", "a", "library/nginx", "x9/y_z.w-v/0"]
        .iter()
        .all(|p| regex.is_match(p.as_bytes()))
}

fn mirror(
    r: &mut Diagnostics,
    regexes: &mut Regexes,
    m: &MirrorDoc,
    config_keys: &HashSet<&str>,
) -> Option<Mirror> {
    let key = m.key.value.as_str();
    let path = format!("mirrors[{key}]");
    if key != "*" && !is_domain(key) {
        r.push(
            Severity::Error,
            m.key.pos,
            &path,
            "a mirror key is a registry host[:port], or \"*\" for every registry",
            Some("mirrors apply to whole registries, not to repositories".into()),
        );
        return None;
    }
    if key == "index.docker.io" {
        r.push(
            Severity::Warning,
            m.key.pos,
            &path,
            "never matches: Docker Hub images are normalised to docker.io",
            Some("use `docker.io` as the key".into()),
        );
    }
    if key == "*" && !m.endpoints.is_empty() {
        r.push(
            Severity::Warning,
            m.key.pos,
            &path,
            "every registry without an entry of its own is rewritten to these endpoints: ECR, localhost and private registries included",
            Some("name the registries to mirror (`docker.io`, `quay.io`, ...) instead, or leave the others out with exclude.images".into()),
        );
    }
    let endpoints = endpoints(r, m, &path);
    let mut rewrites: Vec<Rewrite> = Vec::new();
    for (pat, rep) in &m.rewrites {
        let at = format!("{path}.rewrite[{}]", pat.value);
        let Some(regex) = regexes.build(r, pat, &at) else {
            continue;
        };
        check_replacement(r, &regex, rep, &at);
        never_matching(r, key, &regex, &rewrites, pat.pos, &at);
        rewrites.push(Rewrite {
            regex,
            replacement: rep.value.clone(),
        });
    }
    if m.endpoints.is_empty() {
        if !m.rewrites.is_empty() {
            r.push(
                Severity::Warning,
                m.key.pos,
                &path,
                "rewrite rules have no effect without endpoints",
                None,
            );
        }
        // As in K3s: an entry with neither endpoints nor a config is dropped, so it does not
        // shadow "*"; with a config it means "pull from the registry itself".
        if !config_keys.contains(key) {
            return None;
        }
    }
    let patterns: Vec<&str> = rewrites.iter().map(|w| w.regex.as_str()).collect();
    Some(Mirror {
        key: key.to_owned(),
        endpoints,
        rewrite_set: (patterns.len() > FEW_RULES)
            .then(|| build_set(r, &patterns, &format!("{path}.rewrite"))),
        rewrites,
    })
}
