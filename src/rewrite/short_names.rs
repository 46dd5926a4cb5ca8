//! Short names under registries.conf: the name made whole by an alias or each search registry,
//! and each whole name then decided by every rule, so a second pass changes nothing. With
//! `verify`, the search registries are tried in order, each as its own rules would try it.

use super::{candidates as all_candidates, decide_inner, sources::direct, Decision, Stay};
use crate::policy::Policy;
use crate::reference::Reference;
use crate::verdict::{Candidate, Verdict};

/// What verify asks for one whole name: what its rules would ask, then its own registry.
fn segment(policy: &Policy, name: &Reference) -> Vec<Candidate> {
    let mut list = all_candidates(policy, &name.to_string());
    let own = direct(policy, name);
    if list
        .last()
        .is_none_or(|l| l.manifest_url != own.manifest_url)
    {
        list.push(own);
    }
    list
}

pub(super) fn candidates(policy: &Policy, qualified: &[Reference]) -> Vec<Candidate> {
    qualified.iter().flat_map(|q| segment(policy, q)).collect()
}

pub(super) fn decide(
    policy: &Policy,
    image: &str,
    reference: &Reference,
    qualified: &[Reference],
    how: &str,
    verdict: Option<&Verdict>,
) -> Decision {
    let Some(first) = qualified.first() else {
        return Decision::unchanged(image, reference, Stay::from(how.to_owned()));
    };
    // Which whole name the chosen candidate belongs to, and its place among that name's.
    let chosen = verdict.and_then(|v| v.chosen).and_then(|mut i| {
        qualified.iter().find_map(|q| {
            let segment = segment(policy, q);
            if i < segment.len() {
                Some((q, i, segment.len()))
            } else {
                i -= segment.len();
                None
            }
        })
    });
    let mut d = match (chosen, verdict) {
        // Its own registry has it, where the name's rules did not find it.
        (Some((q, i, len)), _)
            if i + 1 == len && all_candidates(policy, &q.to_string()).len() < len =>
        {
            let own = format!("verify: {} has it", q.domain());
            Decision::unchanged(&q.to_string(), q, Stay::from(own))
        }
        (Some((q, i, _)), _) => {
            let inner = Verdict {
                chosen: Some(i),
                digest: verdict.and_then(|v| v.digest.clone()),
                tried: Vec::new(),
            };
            decide_inner(policy, &q.to_string(), Some(&inner))
        }
        (None, Some(v)) => decide_inner(
            policy,
            &first.to_string(),
            Some(&Verdict {
                chosen: None,
                ..v.clone()
            }),
        ),
        (None, None) => decide_inner(policy, &first.to_string(), None),
    };
    d.reason = format!("{how}; {}", d.reason);
    d.normalized = Some(reference.to_string());
    d.image = image.to_owned();
    if qualified.len() > 1 && verdict.is_none() {
        d.warning = Some(format!(
            "{how}: without verify the first is taken, where the node would try each"
        ));
    }
    d
}
