//! One image reference in, one decision out: where the image will be pulled from and why.
//! Pure: the policy and the text decide everything.

mod short_names;
mod sources;

use std::borrow::Cow;

use serde::Serialize;

use crate::policy::{DefaultRegistry, Mirror, MirrorEndpoint, Policy};
use crate::reference::Reference;
use crate::verdict::{Candidate, Tried, Verdict};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The reference as written.
    pub image: String,
    /// Its normalised form; absent when it does not parse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalized: Option<String>,
    /// The reference after the decision (the same text when nothing changes); null when invalid.
    pub result: Option<String>,
    /// The policy rule that rewrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The endpoints `verify` checked, with what each answered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tried: Vec<Tried>,
    /// The registry the image is pulled from after the decision.
    #[serde(skip)]
    pub registry: Option<String>,
    /// Left alone by an exclusion (`exclude`, the skip label), not for want of a mirror.
    #[serde(skip)]
    pub excluded: bool,
    /// No source the node would try can serve the image: admission refuses it (`reason` says
    /// why) unless the policy says `unpullable: warn`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub denied: bool,
    /// Worth telling whoever made the Pod, though the image is admitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl Decision {
    pub fn changed(&self) -> bool {
        self.result.as_deref().is_some_and(|r| r != self.image)
    }

    pub(super) fn unchanged(image: &str, reference: &Reference, stay: Stay) -> Self {
        Decision {
            image: image.to_owned(),
            normalized: Some(reference.to_string()),
            result: Some(image.to_owned()),
            rule: None,
            reason: stay.reason,
            error: None,
            tried: Vec::new(),
            registry: Some(reference.domain().to_owned()).filter(|d| !d.is_empty()),
            excluded: stay.excluded,
            denied: false,
            warning: None,
        }
    }
}

/// Decides where one image is pulled from: the first endpoint of its mirror, or with `verify` the
/// first that has it (`verdict`), or the original when none has.
pub fn decide(policy: &Policy, image: &str, verdict: Option<&Verdict>) -> Decision {
    let mut d = decide_inner(policy, image, verdict);
    if let Some(v) = verdict {
        d.tried = v.tried.clone();
    }
    d
}

pub(super) fn decide_inner(policy: &Policy, image: &str, verdict: Option<&Verdict>) -> Decision {
    let reference = match Reference::parse(image) {
        Ok(r) => r,
        Err(e) => {
            return Decision {
                image: image.to_owned(),
                normalized: None,
                result: None,
                rule: None,
                reason: "invalid image reference; left as it is".into(),
                error: Some(e.to_string()),
                tried: Vec::new(),
                registry: None,
                excluded: false,
                denied: false,
                warning: None,
            }
        }
    };
    match route(policy, image, &reference) {
        Err(stay) => Decision::unchanged(image, &reference, stay),
        Ok(Route::Sources(plan)) => by_sources(policy, image, &reference, plan, verdict),
        Ok(Route::Mirror(mirror)) => {
            through_mirror(mirror, image, &reference, verdict, policy.verify.pin_digest)
        }
        Ok(Route::Default(_)) if verdict.is_some_and(|v| v.chosen.is_none()) => {
            failover(image, &reference)
        }
        Ok(Route::Default(default)) => {
            let pin = policy.verify.pin_digest;
            let candidate = pinned(
                format!("{}/{}", default.prefix, image),
                &reference,
                verdict,
                pin,
            );
            let mut reason = format!(
                "written without a registry; the default registry is {}",
                default.prefix
            );
            if unpinned(pin, reference.digest().is_some(), verdict) {
                reason = format!("{reason}; {NOT_PINNED}");
            }
            finish(
                image,
                &reference,
                candidate,
                &default.host,
                &default.rule,
                reason,
            )
        }
    }
}

/// The decision by the runtimes' own files.
fn by_sources(
    policy: &Policy,
    image: &str,
    reference: &Reference,
    plan: sources::Plan,
    verdict: Option<&Verdict>,
) -> Decision {
    match plan {
        sources::Plan::Sources(list) => {
            sources::decide(image, reference, &list, verdict, policy.verify.pin_digest)
        }
        sources::Plan::ShortName { qualified, how } => {
            short_names::decide(policy, image, reference, &qualified, &how, verdict)
        }
        sources::Plan::Refused(why) => Decision {
            denied: true,
            ..Decision::unchanged(image, reference, why.into())
        },
        sources::Plan::Stays(why) => Decision::unchanged(image, reference, why.into()),
        sources::Plan::None => {
            Decision::unchanged(image, reference, String::from("no source applies").into())
        }
    }
}

/// Where a reference goes under the policy, before any endpoint is chosen.
enum Route<'p> {
    /// By registries.conf, hosts.toml or a mirror set: these come first, since they may name
    /// a repository where the other formats name only a registry.
    Sources(sources::Plan),
    Mirror(&'p Mirror),
    Default(&'p DefaultRegistry),
}

/// Why a reference stays as it is.
pub(super) struct Stay {
    reason: String,
    excluded: bool,
}

impl From<String> for Stay {
    fn from(reason: String) -> Self {
        Stay {
            reason,
            excluded: false,
        }
    }
}

/// The route for a parsed reference, or why it stays as it is. Shared by the decision and by
/// `candidates`, so verify asks exactly the endpoints the decision can choose from.
fn route<'p>(policy: &'p Policy, image: &str, reference: &Reference) -> Result<Route<'p>, Stay> {
    let domain = reference.domain();
    if domain.is_empty() {
        return Err(
            String::from("the reference names no valid registry host; left as it is").into(),
        );
    }
    if !policy.exclude_images.is_empty() {
        if let Some(i) = policy
            .exclude_images
            .matches(reference.name().as_bytes())
            .iter()
            .next()
        {
            let pattern = &policy.exclude_image_patterns[i];
            return Err(Stay {
                reason: format!("excluded by exclude.images[{i}] `{pattern}`"),
                excluded: true,
            });
        }
    }
    if policy.own_registries.contains(domain) {
        return Err(format!("{domain} is already a mirror of this policy").into());
    }
    match sources::plan(policy, image, reference) {
        sources::Plan::None => {}
        plan => return Ok(Route::Sources(plan)),
    }
    if let Some(mirror) = policy.mirror_for(domain) {
        return Ok(Route::Mirror(mirror));
    }
    match &policy.default_registry {
        Some(default) if !reference.domain_written() => Ok(Route::Default(default)),
        _ => Err(format!("no mirror for {domain}").into()),
    }
}

fn failover(image: &str, reference: &Reference) -> Decision {
    Decision::unchanged(
        image,
        reference,
        String::from("verify: no endpoint has the image; the original reference stays").into(),
    )
}

/// Said when `pinDigest` cannot pin: the chosen mirror gave no usable digest.
pub const NOT_PINNED: &str =
    "not pinned: the mirror sent no valid Docker-Content-Digest, so the tag alone is used";

/// Whether `pinDigest` wanted a digest for this reference and the verdict has none to give.
pub fn unpinned(pin: bool, has_digest: bool, verdict: Option<&Verdict>) -> bool {
    pin && !has_digest && verdict.is_some_and(|v| v.chosen.is_some() && v.digest.is_none())
}

/// With `verify.pinDigest`, the digest the mirror answered is added to a reference without one.
pub(super) fn pinned(
    candidate: String,
    reference: &Reference,
    verdict: Option<&Verdict>,
    pin: bool,
) -> String {
    match verdict.and_then(|v| v.digest.as_deref()) {
        Some(d) if pin && reference.digest().is_none() => format!("{candidate}@{d}"),
        _ => candidate,
    }
}

fn through_mirror(
    mirror: &Mirror,
    image: &str,
    reference: &Reference,
    verdict: Option<&Verdict>,
    pin: bool,
) -> Decision {
    let domain = reference.domain();
    let index = match verdict {
        None => 0,
        Some(Verdict {
            chosen: Some(i), ..
        }) => *i,
        Some(_) => return failover(image, reference),
    };
    let Some(first) = mirror.endpoints.get(index) else {
        return Decision::unchanged(
            image,
            reference,
            format!(
                "mirrors[{}] has no endpoints; pulled from {domain} itself",
                mirror.key
            )
            .into(),
        );
    };
    let endpoint = &first.endpoint;
    if endpoint.host == domain {
        return Decision::unchanged(
            image,
            reference,
            format!(
                "the first endpoint of mirrors[{}] is {domain} itself",
                mirror.key
            )
            .into(),
        );
    }
    let (path, rewrite) = rewrite_path(mirror, reference.path());
    let candidate = pinned(
        format!(
            "{}/{}{}{}",
            endpoint.host,
            endpoint.prefix,
            path,
            reference.suffix()
        ),
        reference,
        verdict,
        pin,
    );
    let mut reason = if mirror.key == "*" {
        format!(
            "every registry is mirrored; {domain} goes to {}",
            endpoint.url
        )
    } else {
        format!("{domain} is mirrored")
    };
    if let Some(pattern) = rewrite {
        reason.push_str(&format!("; rewrite `{pattern}` applied"));
    }
    if unpinned(pin, reference.digest().is_some(), verdict) {
        reason = format!("{reason}; {NOT_PINNED}");
    }
    finish(
        image,
        reference,
        candidate,
        &endpoint.host,
        &first.rule,
        reason,
    )
}

/// The first rewrite rule (in file order) that matches the repository path replaces every match.
fn rewrite_path<'a>(mirror: &'a Mirror, path: &'a str) -> (Cow<'a, str>, Option<&'a str>) {
    let first = match &mirror.rewrite_set {
        Some(set) if set.is_match(path.as_bytes()) => set.matches(path.as_bytes()).iter().next(),
        Some(_) => None,
        None => mirror
            .rewrites
            .iter()
            .position(|w| w.regex.is_match(path.as_bytes())),
    };
    match first {
        Some(i) => {
            let rule = &mirror.rewrites[i];
            (
                // ASCII in, ASCII out: the paths and replacements are text.
                Cow::Owned(
                    String::from_utf8_lossy(
                        &rule
                            .regex
                            .replace_all(path.as_bytes(), rule.replacement.as_bytes()),
                    )
                    .into_owned(),
                ),
                Some(rule.regex.as_str()),
            )
        }
        None => (Cow::Borrowed(path), None),
    }
}

/// Accepts a candidate only if it parses back to the intended registry, so a rewrite can never
/// emit a reference the runtime would read differently.
pub(super) fn finish(
    image: &str,
    reference: &Reference,
    candidate: String,
    host: &str,
    rule: &str,
    reason: String,
) -> Decision {
    match Reference::parse(&candidate) {
        Ok(r) if r.domain() == host => Decision {
            image: image.to_owned(),
            normalized: Some(reference.to_string()),
            result: Some(candidate),
            rule: Some(rule.to_owned()),
            reason,
            error: None,
            tried: Vec::new(),
            registry: Some(host.to_owned()),
            excluded: false,
            denied: false,
            warning: None,
        },
        Ok(_) => Decision::unchanged(
            image,
            reference,
            format!("{rule} would give `{candidate}`, which names another registry; left as it is")
                .into(),
        ),
        Err(e) => Decision::unchanged(
            image,
            reference,
            format!("{rule} would give `{candidate}`, which is invalid ({e}); left as it is")
                .into(),
        ),
    }
}

/// The endpoints an image would be rewritten to, in order, stopping at the image's own registry
/// (which is the failover anyway). Empty when the image is not rewritten at all.
pub fn candidates(policy: &Policy, image: &str) -> Vec<Candidate> {
    let Ok(reference) = Reference::parse(image) else {
        return Vec::new();
    };
    let Ok(route) = route(policy, image, &reference) else {
        return Vec::new();
    };
    let domain = reference.domain();
    let manifest = reference.digest().or(reference.tag()).unwrap_or("latest");
    match route {
        Route::Sources(sources::Plan::ShortName { qualified, .. }) => {
            short_names::candidates(policy, &qualified)
        }
        Route::Sources(sources::Plan::Sources(list)) => sources::candidates(policy, &list),
        Route::Sources(_) => Vec::new(),
        Route::Mirror(mirror) => {
            let (path, _) = rewrite_path(mirror, reference.path());
            mirror
                .endpoints
                .iter()
                .take_while(|e| e.endpoint.host != domain)
                .map(|MirrorEndpoint { endpoint, .. }| {
                    let root = endpoint.url.split("/v2").next().unwrap_or_default();
                    Candidate {
                        host: endpoint.host.clone(),
                        endpoint_url: endpoint.url.clone(),
                        manifest_url: format!(
                            "{root}/v2/{}{path}/manifests/{manifest}",
                            endpoint.prefix
                        ),
                    }
                })
                .collect()
        }
        Route::Default(default) => {
            let Ok(target) = Reference::parse(&format!("{}/{}", default.prefix, image)) else {
                return Vec::new();
            };
            vec![sources::direct(policy, &target)]
        }
    }
}
