//! Routing by the runtimes' own files (registries.conf, hosts.toml, OpenShift mirror sets): the
//! pull sources the node would try for an image, in order, and the one it would pull from.

use crate::policy::sources::{PullSource, SourceRegistry, Sources};
use crate::policy::{Policy, Scheme};
use crate::reference::{Reference, DOCKER_HUB};
use crate::verdict::{Candidate, Verdict};

use super::{finish, pinned, unpinned, Decision, NOT_PINNED};

/// One source the node would try, with the rule that made it.
#[derive(Debug, Clone)]
pub(super) struct Planned {
    pub reference: Reference,
    pub origin: String,
    /// The registry entry it came from, for the reason.
    pub entry: String,
}

/// The sources of one image, or why the node could pull it from none.
pub(super) enum Plan {
    /// No entry of these files applies: the other rules decide.
    None,
    Sources(Vec<Planned>),
    /// A short name made whole, each name in the order the node would try them, and how.
    ShortName {
        qualified: Vec<Reference>,
        how: String,
    },
    Refused(String),
    /// Already a pull source of these files: left as it is, so a second pass changes nothing.
    Stays(String),
}

pub(super) fn plan(policy: &Policy, image: &str, reference: &Reference) -> Plan {
    let sources = &policy.sources;
    if sources.is_empty() {
        return Plan::None;
    }
    if !reference.domain_written() && sources.short_names {
        return match qualify(sources, image, reference) {
            Ok((qualified, how)) => Plan::ShortName { qualified, how },
            Err(why) => Plan::Refused(why),
        };
    }
    if let Some(origin) = sources.output_of(reference) {
        return Plan::Stays(format!("already a pull source of {origin}"));
    }
    let Some(entry) = sources.entry_for(reference) else {
        return Plan::None;
    };
    match usable(sources, &entry, reference) {
        Ok(list) => Plan::Sources(list),
        Err(why) => Plan::Refused(why),
    }
}

/// A short name made whole: its alias, else each unqualified-search registry in order.
fn qualify(
    sources: &Sources,
    image: &str,
    reference: &Reference,
) -> Result<(Vec<Reference>, String), String> {
    let suffix = reference.suffix();
    let written = image.strip_suffix(suffix.as_str()).unwrap_or(image);
    if let Some(alias) = sources.aliases.get(written) {
        if let Some(target) = &alias.target {
            let r = Reference::parse(&format!("{target}{suffix}")).map_err(|e| e.to_string())?;
            return Ok((
                vec![r],
                format!(
                    "short name {written} is aliased to {target} ({})",
                    alias.origin
                ),
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
    Ok((qualified, how))
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
            entry: format!("{} (prefix {})", entry.origin(), entry.prefix),
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
        .map(|p| direct(policy, &p.reference))
        .collect()
}

/// The manifest of a reference on its own registry.
pub(super) fn direct(policy: &Policy, reference: &Reference) -> Candidate {
    let host = reference.domain();
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
    let manifest = reference.digest().or(reference.tag()).unwrap_or("latest");
    Candidate {
        host: host.to_owned(),
        manifest_url: format!("{root}/{}/manifests/{manifest}", reference.path()),
        endpoint_url: root,
    }
}

/// The source the node would pull from: its first, or with `verify` the first that has the image.
pub(super) fn decide(
    image: &str,
    reference: &Reference,
    sources: &[Planned],
    verdict: Option<&Verdict>,
    pin: bool,
) -> Decision {
    let (index, found) = match verdict {
        None => (0, None),
        Some(Verdict {
            chosen: Some(i), ..
        }) => (*i, Some(true)),
        Some(_) => (0, Some(false)),
    };
    let Some(chosen) = sources.get(index).or(sources.first()) else {
        return Decision::unchanged(image, reference, String::from("no source applies").into());
    };
    let entry = &chosen.entry;
    let mut reason = if sources.len() > 1 {
        let which = match found {
            Some(true) => "the first that has the image",
            Some(false) => "the first (verify: none has the image)",
            None => "the first",
        };
        format!(
            "{entry}: the node tries {} sources; {} is {which}",
            sources.len(),
            chosen.origin
        )
    } else {
        format!("{entry}: {} is its only source", chosen.origin)
    };
    if unpinned(pin, reference.digest().is_some(), verdict) {
        reason = format!("{reason}; {NOT_PINNED}");
    }
    let candidate = pinned(chosen.reference.to_string(), reference, verdict, pin);
    if candidate == image {
        return Decision::unchanged(image, reference, reason.into());
    }
    finish(
        image,
        reference,
        candidate,
        chosen.reference.domain(),
        &chosen.origin,
        reason,
    )
}
