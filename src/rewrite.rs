//! One image reference in, one decision out: where the image will be pulled from and why.
//! Pure: the policy and the text decide everything.

use std::borrow::Cow;

use serde::Serialize;

use crate::policy::{Mirror, Policy};
use crate::reference::Reference;

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
    /// The registry the image is pulled from after the decision.
    #[serde(skip)]
    pub registry: Option<String>,
}

impl Decision {
    pub fn changed(&self) -> bool {
        self.result.as_deref().is_some_and(|r| r != self.image)
    }

    fn unchanged(image: &str, reference: &Reference, reason: String) -> Self {
        Decision {
            image: image.to_owned(),
            normalized: Some(reference.to_string()),
            result: Some(image.to_owned()),
            rule: None,
            reason,
            error: None,
            registry: Some(reference.domain().to_owned()).filter(|d| !d.is_empty()),
        }
    }
}

/// Decides where one image is pulled from. `excluded` names a pod-level reason to leave it alone.
pub fn decide(policy: &Policy, image: &str) -> Decision {
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
                registry: None,
            }
        }
    };
    let domain = reference.domain();
    if domain.is_empty() {
        return Decision::unchanged(
            image,
            &reference,
            "the reference names no valid registry host; left as it is".into(),
        );
    }
    if !policy.exclude_images.is_empty() {
        if let Some(i) = policy
            .exclude_images
            .matches(&reference.name())
            .iter()
            .next()
        {
            let pattern = &policy.exclude_image_patterns[i];
            return Decision::unchanged(
                image,
                &reference,
                format!("excluded by exclude.images[{i}] `{pattern}`"),
            );
        }
    }
    if policy.own_registries.contains(domain) {
        return Decision::unchanged(
            image,
            &reference,
            format!("{domain} is already a mirror of this policy"),
        );
    }
    if let Some(mirror) = policy.mirror_for(domain) {
        return through_mirror(mirror, image, &reference);
    }
    if let Some(default) = &policy.default_registry {
        if !reference.domain_written() {
            let candidate = format!("{}/{}", default.prefix, image);
            return finish(
                image,
                &reference,
                candidate,
                &default.host,
                &default.rule,
                format!(
                    "written without a registry; the default registry is {}",
                    default.prefix
                ),
            );
        }
    }
    Decision::unchanged(image, &reference, format!("no mirror for {domain}"))
}

fn through_mirror(mirror: &Mirror, image: &str, reference: &Reference) -> Decision {
    let domain = reference.domain();
    let Some(first) = mirror.endpoints.first() else {
        return Decision::unchanged(
            image,
            reference,
            format!(
                "mirrors[{}] has no endpoints; pulled from {domain} itself",
                mirror.key
            ),
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
            ),
        );
    }
    let (path, rewrite) = rewrite_path(mirror, reference.path());
    let candidate = format!(
        "{}/{}{}{}",
        endpoint.host,
        endpoint.prefix,
        path,
        reference.suffix()
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
    if mirror.rewrites.is_empty() {
        return (Cow::Borrowed(path), None);
    }
    if !mirror.rewrite_set.is_match(path) {
        return (Cow::Borrowed(path), None);
    }
    match mirror.rewrite_set.matches(path).iter().next() {
        Some(i) => {
            let rule = &mirror.rewrites[i];
            (
                rule.regex.replace_all(path, rule.replacement.as_str()),
                Some(rule.regex.as_str()),
            )
        }
        None => (Cow::Borrowed(path), None),
    }
}

/// Accepts a candidate only if it parses back to the intended registry, so a rewrite can never
/// emit a reference the runtime would read differently.
fn finish(
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
            registry: Some(host.to_owned()),
        },
        Ok(_) => Decision::unchanged(
            image,
            reference,
            format!("{rule} would give `{candidate}`, which names another registry; left as it is"),
        ),
        Err(e) => Decision::unchanged(
            image,
            reference,
            format!("{rule} would give `{candidate}`, which is invalid ({e}); left as it is"),
        ),
    }
}
