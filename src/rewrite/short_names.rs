//! Short names under registries.conf: the name made whole by an alias or each search registry,
//! and each whole name then decided by every rule, so a second pass changes nothing. With
//! `verify`, the search registries are tried in order, each as its own rules would try it.

use super::{candidates as all_candidates, decide_inner, sources::direct, Decision, Stay};
use crate::policy::Policy;
use crate::reference::Reference;
use crate::verdict::{Candidate, Verdict};

/// What verify asks for one whole name: what its rules would ask, then its own registry unless
/// they end with it; and how many of them the rules gave.
fn segment(policy: &Policy, name: &Reference) -> (Vec<Candidate>, usize) {
    let mut list = all_candidates(policy, &name.to_string());
    let by_rules = list.len();
    let own = direct(policy, name);
    if list
        .last()
        .is_none_or(|l| l.manifest_url != own.manifest_url)
    {
        list.push(own);
    }
    (list, by_rules)
}

pub(super) fn candidates(policy: &Policy, qualified: &[Reference]) -> Vec<Candidate> {
    qualified
        .iter()
        .flat_map(|q| segment(policy, q).0)
        .collect()
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
    // Which whole name the chosen candidate belongs to, its place among that name's, and
    // whether it is the name's own registry, asked after what its rules gave.
    let chosen = verdict.and_then(|v| v.chosen).and_then(|mut i| {
        qualified.iter().find_map(|q| {
            let (segment, by_rules) = segment(policy, q);
            if i < segment.len() {
                Some((q, i, i >= by_rules))
            } else {
                i -= segment.len();
                None
            }
        })
    });
    let mut d = match (chosen, verdict) {
        (Some((q, _, true)), _) => {
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
