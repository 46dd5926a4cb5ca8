//! `AdmissionReview` in, `AdmissionReview` out. Reads only what the decision needs (the review
//! carries the whole Pod, most of which passes through untouched) and always has an answer.

use std::collections::{BTreeMap, HashSet};

use json_patch::Patch;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::mutate::{self, Extras, Mutation, Operation, PodTemplate};
use crate::policy::Policy;

pub const API_VERSION: &str = "admission.k8s.io/v1";

#[derive(Deserialize)]
struct ReviewIn<'a> {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(borrow, default)]
    request: Option<RequestIn<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<'a> {
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    kind: Option<Gvk>,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    old_object: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct Gvk {
    #[serde(default)]
    group: String,
    #[serde(default)]
    kind: String,
}

/// What happened to one review, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The pod was patched.
    Mutated,
    /// The pod was read and decided, and needs no change.
    Unchanged,
    /// Nothing to decide: another kind, operation or subresource.
    Skipped(String),
    /// The review could not be handled; answered by the failure policy.
    Failed(String),
    /// Refused on purpose: an image no node could pull.
    Refused(String),
}

impl Outcome {
    /// Every label `label` gives, for metrics that start at 0.
    pub const LABELS: [&'static str; 5] = ["mutated", "unchanged", "skipped", "failed", "refused"];

    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Mutated => "mutated",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped(_) => "skipped",
            Outcome::Failed(_) => "failed",
            Outcome::Refused(_) => "refused",
        }
    }
}

/// The `response` of an AdmissionReview, made by its constructors (as kube-core's
/// `AdmissionResponse`); the patch is added when the answer is written (`Answer::body`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
}

/// Why a review was denied, or could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    pub message: String,
}

impl Response {
    /// Admitted as it is.
    pub fn allow(uid: &str) -> Self {
        Response {
            uid: uid.to_owned(),
            allowed: true,
            status: None,
            warnings: Vec::new(),
            audit_annotations: BTreeMap::new(),
        }
    }

    /// Admitted with what the mutation says: its warnings, and the images it rewrote as an audit
    /// annotation.
    pub fn mutated(uid: &str, m: &Mutation) -> Self {
        let rewritten: BTreeMap<&str, &str> = m
            .rewrites()
            .filter_map(|d| Some((d.decision.image.as_str(), d.decision.result.as_deref()?)))
            .collect();
        let mut audit_annotations = BTreeMap::new();
        if let (false, Ok(text)) = (rewritten.is_empty(), serde_json::to_string(&rewritten)) {
            audit_annotations.insert("rewritten-images".to_owned(), text);
        }
        Response {
            warnings: m.warnings.clone(),
            audit_annotations,
            ..Response::allow(uid)
        }
    }

    /// Refused with an HTTP-like `code` and the reason.
    pub fn deny(uid: &str, code: u16, message: String) -> Self {
        Response {
            allowed: false,
            status: Some(Status {
                code: Some(code),
                message,
            }),
            ..Response::allow(uid)
        }
    }

    /// A review that could not be read, admitted unchanged with the reason (failing open).
    pub fn unreadable(uid: &str, message: String) -> Self {
        Response {
            status: Some(Status {
                code: None,
                message,
            }),
            ..Response::allow(uid)
        }
    }
}

/// One review's answer and what is worth saying about it.
#[derive(Debug)]
pub struct Answer {
    /// The AdmissionReview version answered in: the review's own when it was one we do not speak.
    pub api_version: String,
    pub response: Response,
    pub outcome: Outcome,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub operation: String,
    pub dry_run: bool,
    /// Empty unless the pod was decided.
    pub mutation: Mutation,
}

impl Answer {
    /// Turns the answer into a denial with `code` and the reason; it carries no patch.
    pub fn deny(&mut self, code: u16, why: String) {
        self.response = Response::deny(&self.uid, code, why.clone());
        self.mutation.patch.0.clear();
        self.outcome = Outcome::Failed(why);
    }

    /// Adds a warning that kubectl prints to whoever made the Pod.
    pub fn warn(&mut self, warning: String) {
        self.response.warnings.push(warning);
    }
}

/// A review read as far as a Pod to decide, or already answered (skipped or unreadable).
// Made and taken apart once per request; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Read {
    Answered(Answer),
    Pod(PodReview),
}

/// A Pod to decide, with what its review said.
pub struct PodReview {
    answer: Answer,
    pod: PodTemplate,
    namespace: String,
    op: Operation,
}

impl PodReview {
    /// The images this review lets the webhook decide, for `verify` to check first.
    pub fn images(&self) -> Vec<String> {
        mutate::images(&self.pod.spec, &self.op)
    }

    /// Decides the Pod; `policy` is `None` until a policy has loaded.
    pub fn decide(self, policy: Option<&Policy>, fail_closed: bool, extras: Extras<'_>) -> Answer {
        let PodReview {
            mut answer,
            pod,
            namespace,
            op,
        } = self;
        let Some(policy) = policy else {
            return fail(answer, "no policy has loaded yet".into(), fail_closed);
        };
        answer.namespace = namespace.clone();
        let mutation = mutate::mutate(policy, &pod, &[], &namespace, &op, extras);
        if !mutation.refusals.is_empty() {
            let why = mutation.refusals.join("; ");
            answer.response = Response::deny(&answer.uid, 403, why.clone());
            answer.response.warnings = mutation.warnings.clone();
            answer.outcome = Outcome::Refused(why);
            answer.mutation = mutation;
            answer.mutation.patch.0.clear();
            return answer;
        }
        answer.response = Response::mutated(&answer.uid, &mutation);
        answer.outcome = if mutation.is_empty() {
            Outcome::Unchanged
        } else {
            Outcome::Mutated
        };
        answer.mutation = mutation;
        answer
    }
}

impl Answer {
    /// The AdmissionReview as sent. The patch is written straight into it, base64 as it goes: its
    /// JSON and its base64 are never held whole, so a large Pod's answer costs its own size once.
    pub fn body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Envelope<'a> {
            #[serde(rename = "apiVersion")]
            api_version: &'a str,
            kind: &'static str,
            response: Patched<'a>,
        }
        #[derive(Serialize)]
        struct Patched<'a> {
            #[serde(flatten)]
            fields: &'a Response,
            #[serde(rename = "patchType", skip_serializing_if = "Option::is_none")]
            patch_type: Option<&'static str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            patch: Option<Base64Json<'a, Patch>>,
        }
        let patched = !self.mutation.patch.0.is_empty();
        exact_json(&Envelope {
            api_version: &self.api_version,
            kind: "AdmissionReview",
            response: Patched {
                fields: &self.response,
                patch_type: patched.then_some("JSONPatch"),
                patch: patched.then_some(Base64Json(&self.mutation.patch)),
            },
        })
    }
}

/// JSON in a buffer of exactly its size: measured first, so a large answer is never copied into
/// a buffer twice its size while it grows.
fn exact_json<T: Serialize>(value: &T) -> Vec<u8> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    if serde_json::to_writer(&mut count, value).is_err() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(count.0);
    match serde_json::to_writer(&mut out, value) {
        Ok(()) => out,
        Err(_) => Vec::new(),
    }
}

/// Serialises as the base64 of a value's JSON, encoded while it is written.
struct Base64Json<'a, T>(&'a T);

impl<T: Serialize> Serialize for Base64Json<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<T: Serialize> std::fmt::Display for Base64Json<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        /// base64 is ASCII, so every chunk the encoder writes is text.
        struct Text<'a, 'b>(&'a mut std::fmt::Formatter<'b>);
        impl std::io::Write for Text<'_, '_> {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let text = std::str::from_utf8(buf).map_err(std::io::Error::other)?;
                self.0.write_str(text).map_err(std::io::Error::other)?;
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut encoder =
            base64::write::EncoderWriter::new(Text(f), &base64::engine::general_purpose::STANDARD);
        serde_json::to_writer(&mut encoder, self.0).map_err(|_| std::fmt::Error)?;
        encoder.finish().map_err(|_| std::fmt::Error)?;
        Ok(())
    }
}

/// What a review lets the webhook change: the operation to decide, or why there is nothing to do.
/// The one reading of a request's kind, operation and subresource, for admission and the dry-run.
pub fn scope(
    group: &str,
    kind: &str,
    operation: &str,
    sub_resource: &str,
    existing_ephemeral: impl FnOnce() -> HashSet<String>,
) -> Result<Operation, String> {
    if !group.is_empty() || kind != "Pod" {
        return Err(format!("kind {kind} is not a Pod"));
    }
    match (operation, sub_resource) {
        ("CREATE", "") => Ok(Operation::Create),
        ("UPDATE", "") => Ok(Operation::Update),
        ("UPDATE", "ephemeralcontainers") => Ok(Operation::AddEphemeral {
            existing: existing_ephemeral(),
        }),
        (op, "") => Err(format!("operation {op}: nothing to do")),
        (op, sub) => Err(format!("{op} of pods/{sub}: nothing to do")),
    }
}

/// Reads a review up to the Pod it carries.
pub fn read(body: &[u8], fail_closed: bool) -> Read {
    let mut answer = Answer {
        api_version: API_VERSION.to_owned(),
        response: Response::allow(""),
        outcome: Outcome::Failed(String::new()),
        uid: String::new(),
        namespace: String::new(),
        name: String::new(),
        operation: String::new(),
        dry_run: false,
        mutation: Mutation::default(),
    };
    match read_pod(body, &mut answer) {
        Ok((pod, op)) => {
            // The API server sets `request.namespace`; the object's own may say anything (a
            // forged review), so decisions and writes go by the request's alone.
            let namespace = answer.namespace.clone();
            Read::Pod(PodReview {
                answer,
                pod,
                namespace,
                op,
            })
        }
        Err(NotDecided::Skipped(why)) => {
            answer.response = Response::allow(&answer.uid);
            answer.outcome = Outcome::Skipped(why);
            Read::Answered(answer)
        }
        Err(NotDecided::Unreadable(why)) => Read::Answered(fail(answer, why, fail_closed)),
    }
}

/// Why a review has no Pod to decide.
enum NotDecided {
    /// Nothing to do: another kind, operation or subresource.
    Skipped(String),
    /// The review cannot be read; answered by the failure policy.
    Unreadable(String),
}

impl From<String> for NotDecided {
    fn from(why: String) -> Self {
        NotDecided::Unreadable(why)
    }
}

impl From<&str> for NotDecided {
    fn from(why: &str) -> Self {
        NotDecided::Unreadable(why.to_owned())
    }
}

/// Reads a review into `answer` (uid, names, operation, the version to answer in) up to its Pod
/// and the operation to decide.
fn read_pod(body: &[u8], answer: &mut Answer) -> Result<(PodTemplate, Operation), NotDecided> {
    let review: ReviewIn<'_> = serde_json::from_slice(body).map_err(|e| {
        answer.uid = uid_of_unreadable(body);
        format!("unreadable AdmissionReview: {e}")
    })?;
    if review.api_version.as_deref() != Some(API_VERSION)
        || review.kind.as_deref() != Some("AdmissionReview")
    {
        if let Some(v) = &review.api_version {
            answer.api_version.clone_from(v);
        }
        return Err(format!(
            "expected kind AdmissionReview of {API_VERSION}, got {} of {}",
            review.kind.as_deref().unwrap_or("no kind"),
            review.api_version.as_deref().unwrap_or("no apiVersion")
        )
        .into());
    }
    let request = review.request.ok_or("the review has no request")?;
    read_request(&request, answer)?;
    let gvk = request.kind.unwrap_or_default();
    let existing_ephemeral = || {
        request
            .old_object
            .and_then(|o| serde_json::from_str::<PodTemplate>(o.get()).ok())
            .map(|old| old.ephemeral_names())
            .unwrap_or_default()
    };
    let op = scope(
        &gvk.group,
        &gvk.kind,
        &answer.operation,
        request.sub_resource.as_deref().unwrap_or(""),
        existing_ephemeral,
    )
    .map_err(NotDecided::Skipped)?;
    let object = request.object.ok_or("the request has no object")?;
    let pod: PodTemplate =
        serde_json::from_str(object.get()).map_err(|e| format!("unreadable Pod: {e}"))?;
    if answer.name.is_empty() {
        answer.name = pod
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
    }
    Ok((pod, op))
}

/// The request's uid, names and operation, into `answer`; names must be Kubernetes names.
fn read_request(request: &RequestIn<'_>, answer: &mut Answer) -> Result<(), NotDecided> {
    answer.uid = request.uid.clone().unwrap_or_default();
    answer.namespace = request.namespace.clone().unwrap_or_default();
    answer.name = request.name.clone().unwrap_or_default();
    answer.operation = request.operation.clone().unwrap_or_default();
    answer.dry_run = request.dry_run.unwrap_or(false);
    if answer.uid.is_empty() {
        return Err("the request has no uid".into());
    }
    // Names go into API paths (managed pull secrets): one that is not a Kubernetes name is not
    // from an API server, and nothing is read or written for it.
    if !answer.namespace.is_empty() && !crate::names::is_dns_label(&answer.namespace) {
        let ns = &answer.namespace;
        return Err(format!("request.namespace {ns:?} is not a namespace name").into());
    }
    if !answer.name.is_empty() && !crate::names::is_dns_subdomain(&answer.name) {
        return Err(format!("request.name {:?} is not an object name", answer.name).into());
    }
    Ok(())
}

/// The uid of a review that did not parse (invalid UTF-8 somewhere in the Pod, say), read from
/// its text with the bad bytes replaced, so the API server can still match the answer.
fn uid_of_unreadable(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Uid {
        request: Option<UidOnly>,
    }
    #[derive(Deserialize)]
    struct UidOnly {
        uid: Option<String>,
    }
    let text = String::from_utf8_lossy(body);
    serde_json::from_str::<Uid>(&text)
        .ok()
        .and_then(|r| r.request?.uid)
        .unwrap_or_default()
}

/// Fail open (allowed, unchanged, with the reason) unless told to fail closed.
fn fail(mut answer: Answer, why: String, fail_closed: bool) -> Answer {
    if fail_closed {
        answer.deny(400, why);
    } else {
        answer.response = Response::unreadable(&answer.uid, why.clone());
        answer.outcome = Outcome::Failed(why);
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_label_is_listed_for_the_metrics() {
        let all = [
            Outcome::Mutated,
            Outcome::Unchanged,
            Outcome::Skipped(String::new()),
            Outcome::Failed(String::new()),
            Outcome::Refused(String::new()),
        ];
        let labels: Vec<&str> = all.iter().map(Outcome::label).collect();
        assert_eq!(labels, Outcome::LABELS);
    }
}
