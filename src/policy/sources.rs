//! Pull sources as a node derives them from containers-registries.conf(5) version 2, exactly as
//! containers/image's `sysregistriesv2` does (`FindRegistry`, `PullSourcesFromReference`,
//! `rewriteReference`). containerd's hosts.toml and OpenShift's mirror sets compile into the same
//! entries, so one lookup serves all three formats. Pure.

use std::collections::HashMap;

use crate::reference::Reference;

/// When a mirror is used: `pull-from-mirror`, or what a format says in its own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullFrom {
    #[default]
    All,
    DigestOnly,
    TagOnly,
    /// A containerd host without the `pull` capability: never a pull source.
    Never,
}

impl PullFrom {
    /// Whether a pull by digest (or else by tag) may use the endpoint.
    pub fn serves(self, digested: bool) -> bool {
        match self {
            PullFrom::All => true,
            PullFrom::DigestOnly => digested,
            PullFrom::TagOnly => !digested,
            PullFrom::Never => false,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "all" => Some(PullFrom::All),
            "digest-only" => Some(PullFrom::DigestOnly),
            "tag-only" => Some(PullFrom::TagOnly),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PullFrom::All => "all",
            PullFrom::DigestOnly => "digest-only",
            PullFrom::TagOnly => "tag-only",
            PullFrom::Never => "never",
        }
    }
}

/// Which of OpenShift's mirror set kinds an object is: its mirrors serve digests, tags, or (the
/// older ImageContentSourcePolicy) digests with no `mirrorSourcePolicy`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum MirrorSetKind {
    #[default]
    Digest,
    Tag,
    ContentSource,
}

/// Where each mirror set kind lives in the API and where its spec lists the mirrors: read by the
/// policy and watched by `serve --watch-image-mirror-sets` alike.
pub struct MirrorSetType {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    /// The spec's list of `{source, mirrors}`.
    pub list: &'static str,
    pub set_kind: MirrorSetKind,
}

impl MirrorSetType {
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }
}

pub const MIRROR_SET_TYPES: [MirrorSetType; 3] = [
    MirrorSetType {
        group: "config.openshift.io",
        version: "v1",
        kind: "ImageDigestMirrorSet",
        plural: "imagedigestmirrorsets",
        list: "imageDigestMirrors",
        set_kind: MirrorSetKind::Digest,
    },
    MirrorSetType {
        group: "config.openshift.io",
        version: "v1",
        kind: "ImageTagMirrorSet",
        plural: "imagetagmirrorsets",
        list: "imageTagMirrors",
        set_kind: MirrorSetKind::Tag,
    },
    MirrorSetType {
        group: "operator.openshift.io",
        version: "v1alpha1",
        kind: "ImageContentSourcePolicy",
        plural: "imagecontentsourcepolicies",
        list: "repositoryDigestMirrors",
        set_kind: MirrorSetKind::ContentSource,
    },
];

/// One place an image can be pulled from: a `location` (host[:port][/namespace], no scheme).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceEndpoint {
    pub location: String,
    /// Plain HTTP allowed and the certificate not verified.
    pub insecure: bool,
    pub pull_from: PullFrom,
    /// Where the endpoint was written, for decisions and `check`.
    pub origin: String,
    pub pos: crate::yaml::Pos,
}

impl SourceEndpoint {
    /// The registry host of the location (`host[:port]`).
    pub fn host(&self) -> &str {
        self.location.split('/').next().unwrap_or_default()
    }
}

/// One `[[registry]]` entry after upstream's post-processing: the prefix it answers for, its
/// primary location and its mirrors.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceRegistry {
    /// `host[:port][/path]`, or `*.example.com` for every subdomain.
    pub prefix: String,
    /// The primary; its location is empty only for a wildcard prefix, meaning "no rewrite".
    pub endpoint: SourceEndpoint,
    pub mirrors: Vec<SourceEndpoint>,
    pub blocked: bool,
    pub mirror_by_digest_only: bool,
}

/// One source of a pull, in the order the node tries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSource {
    pub reference: Reference,
    /// The endpoint's location as written.
    pub location: String,
    pub insecure: bool,
    /// `None` for the primary, else the mirror's index.
    pub mirror: Option<usize>,
    pub origin: String,
}

/// What a short name (an image written without a registry) resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// `None`: reset by a later file (`name = ""`), as if there were no alias.
    pub target: Option<String>,
    pub origin: String,
}

/// The merged registries.conf (with its drop-ins and what the other formats add).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Sorted by prefix, each prefix once: the first written wins, as upstream keeps it.
    pub registries: Vec<SourceRegistry>,
    /// `unqualified-search-registries`, and the file that set it.
    pub search: Vec<String>,
    pub search_origin: String,
    pub aliases: HashMap<String, Alias>,
    /// Whether a registries.conf was given: only then are short names resolved its way.
    pub short_names: bool,
    /// containerd's hosts.toml by registry host, matched exactly, as its directories are.
    pub hosts: HashMap<String, SourceRegistry>,
    /// `certs.d/_default`: for every registry without a directory of its own.
    pub default_hosts: Option<SourceRegistry>,
}

/// The length of `prefix` in `reference` when it matches: the whole reference, or the prefix
/// followed by `/`, `:` or `@` (`refMatchingPrefix`, bugs included: `example.com` matches
/// `example.com:5000`, as upstream warns).
pub fn ref_matching_prefix(reference: &str, prefix: &str) -> Option<usize> {
    if prefix.starts_with("*.") {
        return ref_matching_subdomain_prefix(reference, prefix);
    }
    let rest = reference.strip_prefix(prefix)?;
    match rest.bytes().next() {
        None | Some(b':' | b'/' | b'@') => Some(prefix.len()),
        Some(_) => None,
    }
}

/// `*.example.com`: the first `.example.com` in the host part, followed by the end or a separator
/// (`refMatchingSubdomainPrefix`).
fn ref_matching_subdomain_prefix(reference: &str, prefix: &str) -> Option<usize> {
    let suffix = &prefix[1..];
    let index = reference.find(suffix)?;
    if reference[..index].contains('/') {
        return None;
    }
    let end = index + suffix.len();
    match reference.as_bytes().get(end) {
        None | Some(b':' | b'/' | b'@') => Some(end),
        Some(_) => None,
    }
}

/// `rewriteReference`: the location in place of the matched prefix; the result must parse back
/// to exactly that text (`reference.ParseNamed`), as the node requires.
pub fn rewrite_reference(
    reference: &str,
    prefix: &str,
    location: &str,
) -> Result<Reference, String> {
    let Some(len) = ref_matching_prefix(reference, prefix) else {
        return Err(format!(
            "invalid prefix '{prefix}' for reference '{reference}'"
        ));
    };
    if location.is_empty() {
        if !prefix.starts_with("*.") {
            return Err(format!(
                "invalid prefix '{prefix}' for empty location, should be in the format: *.example.com"
            ));
        }
        return Reference::parse(reference).map_err(|e| e.to_string());
    }
    let rewritten = format!("{location}{}", &reference[len..]);
    match Reference::parse(&rewritten) {
        Ok(r) if r.domain_written() && r.to_string() == rewritten => Ok(r),
        Ok(r) => Err(format!(
            "rewriting reference: `{rewritten}` is not canonical (it reads as `{r}`)"
        )),
        Err(e) => Err(format!("rewriting reference `{rewritten}`: {e}")),
    }
}

impl SourceRegistry {
    /// `PullSourcesFromReference`: the mirrors the reference may use, in order, then the primary.
    pub fn pull_sources(&self, reference: &Reference) -> Result<Vec<PullSource>, String> {
        let digested = reference.digest().is_some();
        let mirrors = self.mirrors.iter().enumerate().filter(|(_, m)| {
            if self.mirror_by_digest_only {
                return digested;
            }
            m.pull_from.serves(digested)
        });
        let text = reference.to_string();
        let primary = Some(&self.endpoint).filter(|e| e.pull_from.serves(digested));
        mirrors
            .map(|(i, m)| (Some(i), m))
            .chain(primary.map(|e| (None, e)))
            .map(|(mirror, e)| {
                Ok(PullSource {
                    reference: rewrite_reference(&text, &self.prefix, &e.location)?,
                    location: e.location.clone(),
                    insecure: e.insecure,
                    mirror,
                    origin: e.origin.clone(),
                })
            })
            .collect()
    }

    /// Its mirrors, then its primary.
    pub fn endpoints(&self) -> impl Iterator<Item = &SourceEndpoint> {
        self.mirrors.iter().chain(std::iter::once(&self.endpoint))
    }

    /// Where the entry was written.
    pub fn origin(&self) -> &str {
        &self.endpoint.origin
    }
}

impl Sources {
    pub fn is_empty(&self) -> bool {
        self.registries.is_empty()
            && !self.short_names
            && self.hosts.is_empty()
            && self.default_hosts.is_none()
    }

    /// Every entry: registries.conf's (with the mirror sets), then hosts.toml's, then `_default`.
    pub fn entries(&self) -> impl Iterator<Item = &SourceRegistry> {
        self.registries
            .iter()
            .chain(self.hosts.values())
            .chain(self.default_hosts.as_ref())
    }

    /// The registry hosts of every mirror and primary location: where images are pulled from.
    pub fn location_hosts(&self) -> impl Iterator<Item = String> + '_ {
        self.entries()
            .flat_map(SourceRegistry::endpoints)
            .filter(|e| !e.location.is_empty())
            .map(|e| e.host().to_owned())
    }

    /// The entry whose pull source a reference already is, when no entry names it more exactly:
    /// a rewritten image (a Pod made from a rewritten Deployment) stays as it is.
    pub fn output_of(&self, reference: &Reference) -> Option<&str> {
        let name = reference.name();
        let (len, origin) = self
            .entries()
            .flat_map(|r| {
                let primary = Some(&r.endpoint).filter(|e| e.location != r.prefix);
                r.mirrors.iter().chain(primary)
            })
            .filter(|e| !e.location.is_empty())
            .filter_map(|e| Some((ref_matching_prefix(&name, &e.location)?, e.origin.as_str())))
            .max_by_key(|(len, _)| *len)?;
        let own = match self.find(&name) {
            Some(r) => r.prefix.len(),
            None if self.hosts.contains_key(reference.domain()) => reference.domain().len(),
            None => 0,
        };
        (len > own).then_some(origin)
    }

    /// The entry that decides a reference: registries.conf's longest prefix, else the
    /// registry's hosts.toml, else `_default` (made for this registry).
    pub fn entry_for(&self, reference: &Reference) -> Option<std::borrow::Cow<'_, SourceRegistry>> {
        use std::borrow::Cow;
        if let Some(r) = self.find(&reference.name()) {
            return Some(Cow::Borrowed(r));
        }
        let domain = reference.domain();
        if let Some(h) = self.hosts.get(domain) {
            return Some(Cow::Borrowed(h));
        }
        let default = self.default_hosts.as_ref()?;
        let mut entry = default.clone();
        entry.prefix = domain.to_owned();
        if entry.endpoint.location.is_empty() {
            entry.endpoint.location = domain.to_owned();
        }
        Some(Cow::Owned(entry))
    }

    /// `FindRegistry`: the entry with the longest matching prefix for a repository name
    /// (`host/path`, no tag or digest).
    pub fn find(&self, name: &str) -> Option<&SourceRegistry> {
        let mut best: Option<&SourceRegistry> = None;
        for r in &self.registries {
            if ref_matching_prefix(name, &r.prefix).is_some()
                && best.is_none_or(|b| r.prefix.len() > b.prefix.len())
            {
                best = Some(r);
            }
        }
        best
    }

    /// Whether the node would refuse to contact the registry a source names (`blocked` on the
    /// entry that source falls under, looked up afresh as the node's client does).
    pub fn blocked(&self, source: &Reference) -> Option<&SourceRegistry> {
        self.find(&source.name()).filter(|r| r.blocked)
    }

    /// A drop-in's entries replace whole entries by prefix (`updateWithConfigurationFrom`).
    pub fn merge(&mut self, drop_in: Vec<SourceRegistry>) {
        let mut by_prefix: std::collections::BTreeMap<String, SourceRegistry> = self
            .registries
            .drain(..)
            .map(|r| (r.prefix.clone(), r))
            .collect();
        for r in drop_in {
            by_prefix.insert(r.prefix.clone(), r);
        }
        self.registries = by_prefix.into_values().collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_a_separator() {
        assert_eq!(
            ref_matching_prefix("docker.io/library", "docker.io"),
            Some(9)
        );
        assert_eq!(
            ref_matching_prefix("docker.io/libraryy", "docker.io/library"),
            None
        );
        assert_eq!(ref_matching_prefix("a.com/x", "*.com"), Some(5));
        assert_eq!(ref_matching_prefix("a.net/b.com/x", "*.com"), None);
    }
}
