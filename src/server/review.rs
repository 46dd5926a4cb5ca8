//! The review pipeline: an AdmissionReview body in, the answer out. Reading and deciding are the
//! pure core's (`admission`, `mutate`); this adds what needs the server: `verify`, managed pull
//! secrets, metrics and the log line. The HTTP route only checks the request and sends the answer.

use std::time::Instant;

use super::metrics::{OutcomeLabel, RuleLabel};
use super::AppState;
use crate::admission::{self, Answer, Outcome};
use crate::mutate::Extras;
use crate::verdict::Presence;

/// One review: read it, check its images (`verify`), decide it, make the pull secrets it names,
/// count and log it; the AdmissionReview to send back, whatever the body was.
pub async fn answer(state: &AppState, body: &[u8]) -> Vec<u8> {
    let started = Instant::now();
    let answer = review(state, body).await;
    let out = answer.body();
    state
        .metrics
        .reviews
        .seconds
        .observe(started.elapsed().as_secs_f64());
    log(&answer);
    out
}

/// The pipeline behind `answer`, up to the answer and what is known of it (counted, not logged).
pub async fn review(state: &AppState, body: &[u8]) -> Answer {
    let deadline = state.review_deadline();
    let policy = state.policy.current();
    let lookup = |ns: &str, host: &str| match &state.namespace_secrets {
        Some(store) => store.covering(ns, host),
        None => Vec::new(),
    };
    // Read once; `verify` (I/O) runs between reading the Pod and deciding it.
    let mut answer = match admission::read(body, state.fail_closed) {
        admission::Read::Answered(answer) => answer,
        admission::Read::Pod(pod) => {
            let verdicts = match &policy {
                Some(p) if p.verify.enabled => {
                    state.checker.verdicts(p, &pod.images(), deadline).await
                }
                _ => None,
            };
            let extras = Extras {
                managed_secrets: state.pull_secrets.is_some(),
                namespace_secrets: &lookup,
                verdicts: verdicts.as_ref(),
            };
            pod.decide(policy.as_deref(), state.fail_closed, extras)
        }
    };
    if let (Some(ps), Some(policy), false) = (&state.pull_secrets, &policy, answer.dry_run) {
        materialise(state, ps, policy, &mut answer, deadline).await;
    }
    let m = &state.metrics;
    m.reviews
        .answered
        .get_or_create(&OutcomeLabel {
            outcome: answer.outcome.label().into(),
        })
        .inc();
    // Images verify found on no endpoint: their original reference stayed.
    let mut fell_back = std::collections::HashSet::new();
    for d in &answer.mutation.decisions {
        let d = &d.decision;
        let found = d
            .tried
            .iter()
            .any(|t| matches!(t.answer, Presence::Present { .. }));
        if !d.tried.is_empty() && !found && fell_back.insert(d.image.as_str()) {
            m.verify.fallbacks.inc();
        }
    }
    for d in answer.mutation.rewrites() {
        if let Some(rule) = &d.decision.rule {
            m.reviews
                .rewrites
                .get_or_create(&RuleLabel { rule: rule.clone() })
                .inc();
        }
    }
    answer
}

/// Creates or updates the managed pull secrets a Pod will name, before it is admitted. A failure
/// admits the Pod with a warning (the resync makes the Secret later), or denies it with --fail-closed.
async fn materialise(
    state: &AppState,
    ps: &crate::secrets::PullSecrets,
    policy: &crate::policy::Policy,
    answer: &mut Answer,
    deadline: tokio::time::Instant,
) {
    let ns = answer.namespace.clone();
    if ns.is_empty() {
        // Only the API server's `request.namespace` says where a Secret may be written.
        for name in answer
            .mutation
            .managed_secrets
            .iter()
            .map(|m| m.name.clone())
            .collect::<Vec<_>>()
        {
            answer.warn(format!(
                "pull secret {name} not made: the review names no namespace"
            ));
        }
        return;
    }
    let made = futures::future::join_all(
        answer
            .mutation
            .managed_secrets
            .iter()
            .map(|m| ps.ensure(policy, &ns, &m.registry, &m.image)),
    );
    // Past the deadline the Pod is answered without them; credentials still being fetched
    // finish on their own, and the resync makes the Secrets.
    let results = match tokio::time::timeout_at(deadline, made).await {
        Ok(results) => results,
        Err(_) => answer
            .mutation
            .managed_secrets
            .iter()
            .map(|_| Err(crate::secrets::SecretError::Late(state.review_time)))
            .collect(),
    };
    let names: Vec<String> = answer
        .mutation
        .managed_secrets
        .iter()
        .map(|m| m.name.clone())
        .collect();
    for (name, result) in names.into_iter().zip(results) {
        let Err(e) = result else { continue };
        state.metrics.credentials.pull_secret_errors.inc();
        tracing::warn!(uid = %answer.uid, namespace = %ns, secret = %name, error = %e, "cannot make pull secret");
        if state.fail_closed {
            answer.deny(500, format!("cannot make pull secret {name}: {e}"));
            return;
        }
        answer.warn(format!(
            "pull secret {name} could not be made yet; it will be retried"
        ));
    }
}

/// One structured line per review.
fn log(answer: &Answer) {
    let rewrites = answer.mutation.rewrites().count();
    let span = tracing::info_span!(
        "review",
        uid = %answer.uid,
        namespace = %answer.namespace,
        name = %answer.name,
        operation = %answer.operation,
        dry_run = answer.dry_run,
    );
    let _enter = span.enter();
    match &answer.outcome {
        Outcome::Mutated => tracing::info!(
            mutated = true,
            rewrites,
            pull_secrets = answer.mutation.pull_secrets.len(),
            annotations = answer.mutation.annotations.len(),
            serverless = %serverless(answer),
            "review answered"
        ),
        Outcome::Unchanged => tracing::info!(mutated = false, "review answered"),
        Outcome::Skipped(why) => tracing::debug!(mutated = false, reason = %why, "review skipped"),
        Outcome::Failed(why) => {
            tracing::warn!(mutated = false, reason = %why, "review not handled")
        }
        Outcome::Refused(why) => {
            tracing::info!(mutated = false, reason = %why, "review refused: no source can serve an image")
        }
    }
}

/// The serverless profiles that matched, with why: `eci (pod label alibabacloud.com/eci=true)`.
fn serverless(answer: &Answer) -> String {
    answer
        .mutation
        .serverless
        .iter()
        .map(|s| format!("{} ({})", s.profile, s.reason))
        .collect::<Vec<_>>()
        .join(", ")
}
