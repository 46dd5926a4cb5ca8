//! Routing by the runtimes' own files (registries.conf, hosts.toml, OpenShift mirror sets): the
//! pull sources the node would try for an image, in order, and the one it would pull from.

use crate::policy::sources::{PullSource, SourceRegistry, Sources};
use crate::policy::{Policy, Scheme};
use crate::reference::{Reference, DOCKER_HUB};
use crate::verdict::Candidate;

/// One source the node would try, with the rule that made it.
#[derive(Debug, Clone)]
pub(super) struct Planned {
    pub reference: Reference,
    pub origin: String,
    /// The registry entry it came from, for the reason.
    pub entry: Option<String>,
}

/// The sources of one image, or why the node could pull it from none.
pub(super) enum Plan {
    /// No entry of these files applies: the other rules decide.
    None,
    Sources {
        sources: Vec<Planned>,
        /// Said of a short name: how it was qualified, and any ambiguity.
        short_name: Option<String>,
        ambiguous: bool,
    },
    Refused(String),
    /// Already a pull source of these files: left as it is, so a second pass changes nothing.
    Stays(String),
}

impl Plan {
    /// A short name qualified to one name that no entry of these files names, and how.
    pub fn qualified_only(&self) -> Option<(String, String)> {
        match self {
            Plan::Sources {
                sources,
                short_name: Some(how),
                ..
            } => match sources.as_slice() {
                [only] if only.entry.is_none() => Some((only.reference.to_string(), how.clone())),
                _ => None,
            },
            _ => None,
        }
    }
}

pub(super) fn plan(policy: &Policy, image: &str, reference: &Reference) -> Plan {
    let sources = &policy.sources;
    if sources.is_empty() {
        return Plan::None;
    }
    let short = !reference.domain_written() && sources.short_names;
    let (qualified, short_name) = if short {
        match qualify(sources, image, reference) {
            Ok(q) => q,
            Err(why) => return Plan::Refused(why),
        }
    } else if let Some(origin) = sources.output_of(reference) {
        return Plan::Stays(format!("already a pull source of {origin}"));
    } else {
        (vec![reference.clone()], None)
    };
    let mut planned = Vec::new();
    let mut refusals = Vec::new();
    let mut matched = false;
    for q in &qualified {
        let Some(entry) = sources.entry_for(q) else {
            planned.push(Planned {
                reference: q.clone(),
                origin: String::new(),
                entry: None,
            });
            continue;
        };
        matched = true;
        match usable(sources, &entry, q) {
            Ok(list) => planned.extend(list),
            Err(why) => refusals.push(why),
        }
    }
    if !matched && !short {
        return Plan::None;
    }
    if planned.is_empty() {
        return Plan::Refused(refusals.join("; "));
    }
    Plan::Sources {
        ambiguous: short_name.is_some() && qualified.len() > 1,
        sources: planned,
        short_name,
    }
}

/// A short name made whole: its alias, else each unqualified-search registry in order.
fn qualify(
    sources: &Sources,
    image: &str,
    reference: &Reference,
) -> Result<(Vec<Reference>, Option<String>), String> {
    let suffix = reference.suffix();
    let written = &image[..image.len() - suffix.len()];
    if let Some(alias) = sources.aliases.get(written) {
        if let Some(target) = &alias.target {
            let r = Reference::parse(&format!("{target}{suffix}")).map_err(|e| e.to_string())?;
            return Ok((
                vec![r],
                Some(format!(
                    "short name {written} is aliased to {target} ({})",
                    alias.origin
                )),
            ));
        }
    }
    if sources.search.is_empty() {
        return Err(format!(
            "short name \"{written}\" has no alias and no unqualified-search-registries are set: the node refuses to pull it (short names need a registry under registries.conf)"
        ));
    }
    let qualified: Vec<Reference> = sources
        .search
        .iter()
        .filter_map(|r| Reference::parse(&format!("{r}/{written}{suffix}")).ok())
        .collect();
    let how = match sources.search.as_slice() {
        [one] => format!(
            "short name {written} is searched in {one} ({} unqualified-search-registries)",
            sources.search_origin
        ),
        many => format!(
            "short name {written} is ambiguous: {} unqualified-search-registries lists {}",
            sources.search_origin,
            many.join(", ")
        ),
    };
    Ok((qualified, Some(how)))
}

/// The entry's pull sources the node would not refuse to contact, or why there are none.
fn usable(
    sources: &Sources,
    entry: &SourceRegistry,
    reference: &Reference,
) -> Result<Vec<Planned>, String> {
    let all = entry
        .pull_sources(reference)
        .map_err(|e| format!("{} (prefix {}): {e}", entry.origin(), entry.prefix))?;
    let total = all.len();
    let open: Vec<Planned> = all
        .into_iter()
        .filter(|s| sources.blocked(&s.reference).is_none())
        .map(|s: PullSource| Planned {
            reference: s.reference,
            origin: s.origin,
            entry: Some(format!("{} (prefix {})", entry.origin(), entry.prefix)),
        })
        .collect();
    if !open.is_empty() {
        return Ok(open);
    }
    let kind = if reference.digest().is_some() {
        "a digest"
    } else {
        "a tag"
    };
    let mirrors = match (entry.mirrors.len(), total - 1) {
        (0, _) => "and has no mirrors".to_owned(),
        (_, 0) => format!(
            "and none of its mirrors serves {kind} (mirror-by-digest-only or pull-from-mirror)"
        ),
        _ => "and its mirrors are blocked too".to_owned(),
    };
    Err(format!(
        "{} (prefix {}) is blocked {mirrors}: the node would fail to pull it",
        entry.origin(),
        entry.prefix
    ))
}

/// What `verify` asks, one candidate per planned source.
pub(super) fn candidates(policy: &Policy, sources: &[Planned]) -> Vec<Candidate> {
    sources
        .iter()
        .map(|p| {
            let host = p.reference.domain();
            let api = if host == DOCKER_HUB {
                "registry-1.docker.io"
            } else {
                host
            };
            let scheme = if policy.is_http(host) {
                Scheme::Http
            } else {
                Scheme::Https
            };
            let root = format!("{}://{api}/v2", scheme.as_str());
            let manifest = p
                .reference
                .digest()
                .or(p.reference.tag())
                .unwrap_or("latest");
            Candidate {
                host: host.to_owned(),
                manifest_url: format!("{root}/{}/manifests/{manifest}", p.reference.path()),
                endpoint_url: root,
            }
        })
        .collect()
}
