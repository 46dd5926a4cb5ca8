//! `registries.conf` and `registries.conf.d` into `Sources`, with the checks and the merge
//! containers/image makes (`loadConfigFile`, `postProcessRegistries`,
//! `updateWithConfigurationFrom`). Where upstream stops at its first error, every one is reported.

use std::collections::HashMap;

use crate::policy::diagnostics::Diagnostics;
use crate::policy::document::{RegistriesConfDoc, SourceRegistryDoc, Spanned};
use crate::policy::sources::{Alias, PullFrom, SourceEndpoint, SourceRegistry, Sources};
use crate::policy::Severity;
use crate::reference::{is_domain, Reference};
use crate::yaml::Pos;

/// What one file contributes.
#[derive(Default)]
struct File {
    /// With where each was written.
    registries: Vec<(SourceRegistry, Pos)>,
    search: Option<Vec<String>>,
    aliases: Vec<(String, Alias)>,
}

pub(super) fn compile(
    d: &mut Diagnostics,
    main: Option<&RegistriesConfDoc>,
    drop_ins: &[RegistriesConfDoc],
) -> Sources {
    let mut sources = Sources {
        short_names: main.is_some() || !drop_ins.is_empty(),
        ..Sources::default()
    };
    for (doc, drop_in) in main
        .into_iter()
        .map(|m| (m, false))
        .chain(drop_ins.iter().map(|f| (f, true)))
    {
        let Some(file) = read_file(d, doc, drop_in) else {
            continue;
        };
        sources.merge(file.registries.into_iter().map(|(r, _)| r).collect());
        if let Some(search) = file.search {
            sources.search = search;
            sources.search_origin = doc.file.clone();
        }
        sources.aliases.extend(file.aliases);
    }
    sources
}

fn read_file(d: &mut Diagnostics, doc: &RegistriesConfDoc, drop_in: bool) -> Option<File> {
    let before = d.list.len();
    let mut file = File::default();
    let mut entries: Vec<(&SourceRegistryDoc, usize)> = Vec::new();
    if let Some(v1) = &doc.v1 {
        if drop_in {
            d.error(
                v1.pos,
                &doc.file,
                "registry must be in v2 format but is in v1: a drop-in is read as version 2 only",
            );
            return None;
        }
        if let Some(at) = doc.v2_at {
            d.error_hint(
                v1.pos,
                &doc.file,
                "mixing sysregistry v1/v2 is not supported",
                Some(format!("the version 2 key at line {} is the other half; write [[registry]] tables only", at.line)),
            );
            return None;
        }
        file.registries = from_v1(d, doc, v1);
        file.search = Some(search_registries(d, &doc.file, &v1.search));
    } else {
        entries = doc.registries.iter().zip(0..).collect();
        file.search = doc
            .search
            .as_ref()
            .map(|s| search_registries(d, &doc.file, s));
    }
    for (reg, i) in entries {
        if let Some(r) = registry(d, &doc.file, reg, i) {
            file.registries.push((r, reg.pos));
        }
    }
    conflicts(d, &file.registries);
    if let Some(mode) = &doc.short_name_mode {
        if !matches!(mode.value.as_str(), "disabled" | "enforcing" | "permissive") {
            d.error_hint(
                mode.pos,
                &format!("{} short-name-mode", doc.file),
                format!("invalid short-name mode: \"{}\"", mode.value),
                Some("use enforcing, permissive or disabled".into()),
            );
        }
    }
    file.aliases = aliases(d, &doc.file, &doc.aliases);
    file.registries = first_of_each_prefix(d, &doc.file, file.registries);
    (!d.errors_since(before)).then_some(file)
}

/// `parseLocation`: trailing `/` trimmed, no URL scheme.
fn location(d: &mut Diagnostics, path: &str, s: &Spanned<String>) -> Option<String> {
    let trimmed = s.value.trim_end_matches('/');
    if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
        d.error_hint(
            s.pos,
            path,
            format!(
                "invalid location '{}': URI schemes are not supported",
                s.value
            ),
            Some("write host[:port][/namespace]; `insecure = true` allows plain HTTP".into()),
        );
        return None;
    }
    Some(trimmed.to_owned())
}

fn search_registries(d: &mut Diagnostics, file: &str, list: &[Spanned<String>]) -> Vec<String> {
    let path = format!("{file} unqualified-search-registries");
    let mut out = Vec::new();
    for s in list {
        let Some(l) = location(d, &path, s) else {
            continue;
        };
        if is_domain(&l) {
            out.push(l);
        } else {
            d.error_hint(
                s.pos,
                &path,
                format!("Invalid unqualified-search-registries entry \"{l}\""),
                Some("each entry is a registry host[:port], with no namespace".into()),
            );
        }
    }
    out
}

/// A version 1 file as upstream converts it: each blocked, then each insecure registry, once.
fn from_v1(
    d: &mut Diagnostics,
    doc: &RegistriesConfDoc,
    v1: &crate::policy::document::V1Doc,
) -> Vec<(SourceRegistry, Pos)> {
    let mut out: Vec<(SourceRegistry, Pos)> = Vec::new();
    let lists = [(&v1.block, true), (&v1.insecure, false)];
    for (list, blocked) in lists {
        for s in list {
            let Some(l) = location(d, &doc.file, s) else {
                continue;
            };
            let i = match out.iter().position(|(r, _)| r.prefix == l) {
                Some(i) => i,
                None => {
                    out.push((
                        SourceRegistry {
                            prefix: l.clone(),
                            endpoint: SourceEndpoint {
                                location: l,
                                origin: format!("{} registries (line {})", doc.file, s.pos.line),
                                ..SourceEndpoint::default()
                            },
                            ..SourceRegistry::default()
                        },
                        s.pos,
                    ));
                    out.len() - 1
                }
            };
            if blocked {
                out[i].0.blocked = true;
            } else {
                out[i].0.endpoint.insecure = true;
            }
        }
    }
    out
}

/// One `[[registry]]` as `postProcessRegistries` reads it.
fn registry(
    d: &mut Diagnostics,
    file: &str,
    reg: &SourceRegistryDoc,
    i: usize,
) -> Option<SourceRegistry> {
    let path = format!("{file} registry[{i}]");
    let before = d.list.len();
    let location_value = match &reg.location {
        Some(l) => location(d, &path, l)?,
        None => String::new(),
    };
    let prefix = match reg.prefix.as_ref().filter(|p| !p.value.is_empty()) {
        None if location_value.is_empty() => {
            d.error(
                reg.pos,
                &path,
                "invalid condition: both location and prefix are unset",
            );
            return None;
        }
        None => location_value.clone(),
        Some(p) => {
            let prefix = location(d, &path, p)?;
            if !prefix.starts_with("*.") && location_value.is_empty() {
                d.error(p.pos, &path, "invalid condition: location is unset and prefix is not in the format: *.example.com");
            }
            if prefix.starts_with("*.") && prefix.contains(['/', '@', ':']) {
                d.error(p.pos, &path, format!("Wildcarded prefix should be in the format: *.example.com. Current prefix \"{prefix}\" is incorrectly formatted"));
            }
            prefix
        }
    };
    if let Some(p) = &reg.pull_from_mirror {
        d.error_hint(
            p.pos,
            &path,
            format!("pull-from-mirror must not be set for a non-mirror registry \"{prefix}\""),
            Some("set it on each [[registry.mirror]], or use mirror-by-digest-only here".into()),
        );
    }
    let mirrors = mirrors(d, &path, reg, &prefix);
    (!d.errors_since(before)).then_some(SourceRegistry {
        prefix,
        endpoint: SourceEndpoint {
            location: location_value,
            insecure: reg.insecure,
            pull_from: PullFrom::All,
            origin: path,
            pos: reg.pos,
        },
        mirrors,
        blocked: reg.blocked,
        mirror_by_digest_only: reg.mirror_by_digest_only,
    })
}

/// `[[registry.mirror]]` tables in order, each checked as `postProcessRegistries` does.
fn mirrors(
    d: &mut Diagnostics,
    path: &str,
    reg: &SourceRegistryDoc,
    prefix: &str,
) -> Vec<SourceEndpoint> {
    let mut mirrors = Vec::new();
    for (j, m) in reg.mirrors.iter().enumerate() {
        let mpath = format!("{path}.mirror[{j}]");
        let loc = match &m.location {
            Some(l) => match location(d, &mpath, l) {
                Some(loc) => loc,
                None => continue,
            },
            None => String::new(),
        };
        if loc.is_empty() {
            d.error(m.pos, &mpath, "invalid condition: mirror location is unset");
            continue;
        }
        let pull_from = match &m.pull_from_mirror {
            None => PullFrom::All,
            Some(p) if reg.mirror_by_digest_only => {
                d.error(p.pos, &mpath, format!("cannot set mirror usage mirror-by-digest-only for the registry (\"{prefix}\") and pull-from-mirror for per-mirror (\"{loc}\") at the same time"));
                PullFrom::All
            }
            Some(p) => PullFrom::parse(&p.value).unwrap_or_else(|| {
                d.error_hint(
                    p.pos,
                    &mpath,
                    format!(
                        "unsupported pull-from-mirror value \"{}\" for mirror \"{loc}\"",
                        p.value
                    ),
                    Some("use all, digest-only or tag-only".into()),
                );
                PullFrom::All
            }),
        };
        mirrors.push(SourceEndpoint {
            location: loc,
            insecure: m.insecure,
            pull_from,
            origin: mpath,
            pos: m.pos,
        });
    }
    mirrors
}

/// One registry written several times (to give prefixes their own mirrors) must agree on
/// `insecure` and `blocked`.
fn conflicts(d: &mut Diagnostics, registries: &[(SourceRegistry, Pos)]) {
    let mut by_location: HashMap<&str, &SourceRegistry> = HashMap::new();
    for (r, pos) in registries {
        let key = if r.endpoint.location.is_empty() {
            r.prefix.as_str()
        } else {
            r.endpoint.location.as_str()
        };
        let Some(other) = by_location.get(key) else {
            by_location.insert(key, r);
            continue;
        };
        for (what, a, b) in [
            ("insecure", r.endpoint.insecure, other.endpoint.insecure),
            ("blocked", r.blocked, other.blocked),
        ] {
            if a != b {
                d.error_hint(
                    *pos,
                    &r.endpoint.origin,
                    format!(
                        "registry '{}' is defined multiple times with conflicting '{what}' setting",
                        r.endpoint.location
                    ),
                    Some(format!("{} says otherwise", other.endpoint.origin)),
                );
            }
        }
    }
}

/// The first entry for a prefix wins and later ones are ignored, as on the node; `check` says so.
fn first_of_each_prefix(
    d: &mut Diagnostics,
    file: &str,
    registries: Vec<(SourceRegistry, Pos)>,
) -> Vec<(SourceRegistry, Pos)> {
    let mut seen: HashMap<String, String> = HashMap::new();
    for (r, pos) in &registries {
        if let Some(first) = seen.get(&r.prefix) {
            d.push(
                Severity::Warning,
                *pos,
                &r.endpoint.origin,
                format!(
                    "prefix \"{}\" is written again; the node uses only the first, {first}",
                    r.prefix
                ),
                Some(format!("merge the two entries of {file}")),
            );
        } else {
            seen.insert(r.prefix.clone(), r.endpoint.origin.clone());
        }
    }
    // Order does not matter: `Sources::merge` keeps the entries by prefix.
    let mut seen = std::collections::HashSet::new();
    registries
        .into_iter()
        .filter(|(r, _)| seen.insert(r.prefix.clone()))
        .collect()
}

/// `[aliases]`: a short name (no registry, tag or digest) to a repository with its registry.
fn aliases(
    d: &mut Diagnostics,
    file: &str,
    list: &[(Spanned<String>, Spanned<String>)],
) -> Vec<(String, Alias)> {
    let path = format!("{file} aliases");
    let mut out = Vec::new();
    for (name, value) in list {
        let short = Reference::parse(&name.value);
        let problem = match &short {
            Err(e) => Some(format!("cannot parse short name: \"{}\": {e}", name.value)),
            Ok(r) if r.domain_written() => Some(format!(
                "invalid short name \"{}\": must not contain registry",
                name.value
            )),
            Ok(r) if r.digest().is_some() => Some(format!(
                "invalid short name \"{}\": must not contain digest",
                name.value
            )),
            Ok(r) if r.tag().is_some() => Some(format!(
                "invalid short name \"{}\": must not contain tag",
                name.value
            )),
            Ok(_) => None,
        };
        if let Some(p) = problem {
            d.error(name.pos, &path, p);
            continue;
        }
        let Some(target) = alias_target(d, &path, value) else {
            continue;
        };
        out.push((
            name.value.clone(),
            Alias {
                target,
                origin: format!("{path}.\"{}\"", name.value),
            },
        ));
    }
    out
}

/// An alias's repository, normalised; `Some(None)` for `""`, which resets an earlier alias;
/// `None` (with an error) when it is not a repository with its registry.
fn alias_target(
    d: &mut Diagnostics,
    path: &str,
    value: &Spanned<String>,
) -> Option<Option<String>> {
    let problem = match Reference::parse(&value.value) {
        _ if value.value.is_empty() => return Some(None),
        Ok(r) if r.digest().is_some() => "must not contain digest",
        Ok(r) if r.tag().is_some() => "must not contain tag",
        Ok(r) if !r.domain_written() => "must contain registry and repository",
        Ok(r) => return Some(Some(r.name())),
        Err(e) => {
            d.error(
                value.pos,
                path,
                format!("parsing alias \"{}\": {e}", value.value),
            );
            return None;
        }
    };
    d.error(
        value.pos,
        path,
        format!("invalid alias \"{}\": {problem}", value.value),
    );
    None
}
