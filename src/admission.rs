//! `AdmissionReview` in, `AdmissionReview` out. Reads only what the decision needs (the review
//! carries the whole Pod, most of which passes through untouched) and always has an answer.

use std::collections::{BTreeMap, HashSet};

use json_patch::Patch;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

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

#[derive(Deserialize, Default)]
struct OldPod {
    #[serde(default)]
    spec: OldSpec,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct OldSpec {
    #[serde(default)]
    ephemeral_containers: Option<Vec<NameOnly>>,
}

#[derive(Deserialize)]
struct NameOnly {
    #[serde(default)]
    name: String,
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
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Mutated => "mutated",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped(_) => "skipped",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// One review's answer and what is worth saying about it.
#[derive(Debug)]
pub struct Answer {
    pub response: Value,
    pub outcome: Outcome,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub operation: String,
    pub dry_run: bool,
    /// Empty unless the pod was decided.
    pub mutation: Mutation,
    /// Whether the answer carries `mutation.patch` (written by `body`, not kept in `response`).
    patched: bool,
}

impl Answer {
    /// Turns the answer into a denial with `code` and the reason.
    pub fn deny(&mut self, code: u16, why: String) {
        self.patched = false;
        self.response["response"] = json!({ "uid": self.uid, "allowed": false,
            "status": { "code": code, "message": why } });
        self.outcome = Outcome::Failed(why);
    }

    /// Adds a warning that kubectl prints to whoever made the Pod.
    pub fn warn(&mut self, warning: String) {
        let response = &mut self.response["response"];
        match response.get_mut("warnings").and_then(|w| w.as_array_mut()) {
            Some(list) => list.push(warning.into()),
            None => response["warnings"] = json!([warning]),
        }
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
            return fail(answer, None, "no policy has loaded yet".into(), fail_closed);
        };
        answer.namespace = namespace.clone();
        let mutation = mutate::mutate(policy, &pod, &[], &namespace, &op, extras);
        answer.response = allowed(&answer.uid, &mutation);
        answer.patched = !mutation.is_empty();
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
            api_version: &'a Value,
            kind: &'a Value,
            response: Patched<'a>,
        }
        #[derive(Serialize)]
        struct Patched<'a> {
            #[serde(flatten)]
            fields: &'a Value,
            #[serde(rename = "patchType")]
            patch_type: &'static str,
            patch: Base64Json<'a, Patch>,
        }
        match self.patched {
            false => exact_json(&self.response),
            true => exact_json(&Envelope {
                api_version: &self.response["apiVersion"],
                kind: &self.response["kind"],
                response: Patched {
                    fields: &self.response["response"],
                    patch_type: "JSONPatch",
                    patch: Base64Json(&self.mutation.patch),
                },
            }),
        }
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
        response: Value::Null,
        outcome: Outcome::Failed(String::new()),
        uid: String::new(),
        namespace: String::new(),
        name: String::new(),
        operation: String::new(),
        dry_run: false,
        mutation: Mutation::default(),
        patched: false,
    };
    match read_pod(body, &mut answer) {
        Ok(Ok((pod, op))) => {
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
        Ok(Err(why)) => Read::Answered(skip(answer, why)),
        Err(Unreadable { api_version, why }) => {
            Read::Answered(fail(answer, api_version.as_deref(), why, fail_closed))
        }
    }
}

/// Why a review could not be read, answered by the failure policy.
struct Unreadable {
    /// The version to answer in, when the review named one we do not speak.
    api_version: Option<String>,
    why: String,
}

impl From<String> for Unreadable {
    fn from(why: String) -> Self {
        Unreadable {
            api_version: None,
            why,
        }
    }
}

impl From<&str> for Unreadable {
    fn from(why: &str) -> Self {
        why.to_owned().into()
    }
}

/// Reads a review into `answer` (uid, names, operation) up to its Pod and the operation to decide,
/// or why there is nothing to do (`Ok(Err)`), or why it cannot be read.
fn read_pod(
    body: &[u8],
    answer: &mut Answer,
) -> Result<Result<(PodTemplate, Operation), String>, Unreadable> {
    let review: ReviewIn<'_> = serde_json::from_slice(body).map_err(|e| {
        answer.uid = uid_of_unreadable(body);
        Unreadable::from(format!("unreadable AdmissionReview: {e}"))
    })?;
    if review.api_version.as_deref() != Some(API_VERSION)
        || review.kind.as_deref() != Some("AdmissionReview")
    {
        let why = format!(
            "expected kind AdmissionReview of {API_VERSION}, got {} of {}",
            review.kind.as_deref().unwrap_or("no kind"),
            review.api_version.as_deref().unwrap_or("no apiVersion")
        );
        return Err(Unreadable {
            api_version: review.api_version,
            why,
        });
    }
    let request = review.request.ok_or("the review has no request")?;
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
        return Err(format!(
            "request.namespace {:?} is not a namespace name",
            answer.namespace
        )
        .into());
    }
    if !answer.name.is_empty() && !crate::names::is_dns_subdomain(&answer.name) {
        return Err(format!("request.name {:?} is not an object name", answer.name).into());
    }
    let gvk = request.kind.unwrap_or_default();
    let existing_ephemeral = || {
        let old: OldPod = request
            .old_object
            .and_then(|o| serde_json::from_str(o.get()).ok())
            .unwrap_or_default();
        old.spec
            .ephemeral_containers
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.name)
            .collect()
    };
    let op = match scope(
        &gvk.group,
        &gvk.kind,
        &answer.operation,
        request.sub_resource.as_deref().unwrap_or(""),
        existing_ephemeral,
    ) {
        Ok(op) => op,
        Err(why) => return Ok(Err(why)),
    };
    let object = request.object.ok_or("the request has no object")?;
    let pod: PodTemplate = serde_json::from_str(object.get())
        .map_err(|e| Unreadable::from(format!("unreadable Pod: {e}")))?;
    if answer.name.is_empty() {
        answer.name = pod
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
    }
    Ok(Ok((pod, op)))
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

fn allowed(uid: &str, m: &Mutation) -> Value {
    let mut response = json!({ "uid": uid, "allowed": true });
    if !m.warnings.is_empty() {
        response["warnings"] = json!(m.warnings);
    }
    let rewritten: BTreeMap<&str, &str> = m
        .rewrites()
        .filter_map(|d| Some((d.decision.image.as_str(), d.decision.result.as_deref()?)))
        .collect();
    if !rewritten.is_empty() {
        if let Ok(text) = serde_json::to_string(&rewritten) {
            response["auditAnnotations"] = json!({ "rewritten-images": text });
        }
    }
    envelope(API_VERSION, response)
}

fn envelope(api_version: &str, response: Value) -> Value {
    json!({ "apiVersion": api_version, "kind": "AdmissionReview", "response": response })
}

fn skip(mut answer: Answer, why: String) -> Answer {
    answer.response = envelope(API_VERSION, json!({ "uid": answer.uid, "allowed": true }));
    answer.outcome = Outcome::Skipped(why);
    answer
}

/// Fail open (allowed, unchanged, with the reason) unless told to fail closed.
fn fail(mut answer: Answer, api_version: Option<&str>, why: String, fail_closed: bool) -> Answer {
    let response = json!({ "uid": answer.uid, "allowed": true, "status": { "message": why } });
    answer.response = envelope(api_version.unwrap_or(API_VERSION), response);
    if fail_closed {
        answer.deny(400, why);
    } else {
        answer.outcome = Outcome::Failed(why);
    }
    answer
}
