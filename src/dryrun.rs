//! What admission would do to a set of objects, without a cluster: the engine behind the
//! `dry-run` command and the `/dry-run` endpoint.

use std::collections::{BTreeMap, HashSet};

use json_patch::Patch;
use serde::Serialize;
use serde_json::Value;

use crate::mutate::{self, FieldDecision, Mutation, Operation, PodTemplate};
use crate::policy::Policy;
use crate::rewrite::decide;
use crate::yaml;

/// Objects larger than this many documents are refused rather than processed for minutes.
const MAX_DOCUMENTS: usize = 10_000;

/// One object to evaluate, with what its envelope says about the request.
#[derive(Debug, Clone, Default)]
pub struct Item {
    pub object: Value,
    /// The namespace the request names (an AdmissionReview's `request.namespace`), which wins
    /// over the object's own, as it does at admission.
    pub namespace: Option<String>,
    pub operation: Operation,
    /// Why admission would leave this review alone (another kind, operation or subresource).
    pub skip: Option<String>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<Patch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
    pub decisions: Vec<FieldDecision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_secrets: Option<Vec<String>>,
    /// Of the pull secrets, those the webhook would create or update in the namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_secrets: Option<Vec<mutate::ManagedSecret>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// The serverless runtimes whose annotations it gets, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serverless: Option<Vec<mutate::ServerlessMatch>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct DryRunReport {
    pub results: Vec<ObjectResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("not valid YAML at {0}")]
    Yaml(String),
    #[error("more than {MAX_DOCUMENTS} objects")]
    TooMany,
    #[error("binary data, not YAML or JSON text")]
    Binary,
    #[error("no objects found")]
    Empty,
}

/// Reads objects as `kubectl` users write them: JSON or YAML, several documents, `List`s, or an
/// `AdmissionReview`.
pub fn read_objects(text: &str) -> Result<Vec<Item>, InputError> {
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(InputError::Binary);
    }
    let trimmed = text.trim_start();
    let docs: Vec<Value> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .take(MAX_DOCUMENTS + 1)
            .collect::<Result<_, _>>()
            .map_err(|e| InputError::Json(e.to_string()))?
    } else {
        yaml::parse_documents(text)
            .map_err(|e| InputError::Yaml(e.to_string()))?
            .iter()
            .map(yaml::Node::to_json)
            .filter(|v| !v.is_null())
            .collect()
    };
    let mut items = Vec::new();
    for doc in docs {
        flatten(doc, &mut items);
        if items.len() > MAX_DOCUMENTS {
            return Err(InputError::TooMany);
        }
    }
    if items.is_empty() {
        return Err(InputError::Empty);
    }
    Ok(items)
}

fn flatten(doc: Value, out: &mut Vec<Item>) {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match (kind.as_str(), doc) {
        (k, Value::Object(mut map)) if k.ends_with("List") && map.contains_key("items") => {
            if let Some(Value::Array(items)) = map.remove("items") {
                for item in items {
                    flatten(item, out);
                }
            }
        }
        (_, Value::Array(items)) => items.into_iter().for_each(|i| flatten(i, out)),
        ("AdmissionReview", doc) => out.push(from_review(&doc)),
        (_, doc) => out.push(Item {
            object: doc,
            ..Item::default()
        }),
    }
}

/// The object of an AdmissionReview and what its request lets a mutation do, read as admission
/// reads it (`admission::scope`).
pub fn from_review(review: &Value) -> Item {
    let request = review.get("request").cloned().unwrap_or(Value::Null);
    let text = |p: &str| {
        request
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let scope = crate::admission::scope(
        text("/kind/group"),
        text("/kind/kind"),
        text("/operation"),
        text("/subResource"),
        || {
            request
                .get("oldObject")
                .and_then(|o| PodTemplate::deserialize_from(o).ok())
                .map(|old| old.ephemeral_names())
                .unwrap_or_default()
        },
    );
    let (operation, skip) = match scope {
        Ok(op) => (op, None),
        Err(why) => (Operation::Create, Some(why)),
    };
    Item {
        object: request.get("object").cloned().unwrap_or(Value::Null),
        namespace: Some(text("/namespace").to_owned()),
        operation,
        skip,
    }
}

/// What `verify` found, by image.
pub use crate::verdict::Verdicts;

/// The settings of the `serve` a dry-run stands for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options<'a> {
    /// What `verify` found, when it is on.
    pub verdicts: Option<&'a Verdicts>,
    /// `serve --pull-secrets`: managed pull secrets are attached (and would be made).
    pub pull_secrets: bool,
}

/// Why an object has no pod template to decide.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("kind {0} holds no pod template; nothing to do")]
    NoTemplate(String),
    #[error("{kind} has no {at}")]
    Missing { kind: String, at: String },
    #[error("unreadable pod template: {0}")]
    Unreadable(#[source] serde_json::Error),
}

fn template_of(object: &Value) -> Result<(&'static [&'static str], PodTemplate), TemplateError> {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("Pod");
    let base = mutate::workload(kind)
        .ok_or_else(|| TemplateError::NoTemplate(kind.to_owned()))?
        .template;
    let at = if base.is_empty() {
        String::new()
    } else {
        format!("/{}", base.join("/"))
    };
    let template_value = object.pointer(&at).ok_or_else(|| TemplateError::Missing {
        kind: kind.to_owned(),
        at: at.clone(),
    })?;
    let template =
        PodTemplate::deserialize_from(template_value).map_err(TemplateError::Unreadable)?;
    Ok((base, template))
}

/// The images the objects' operations let the webhook decide, for `verify` to check.
pub fn images(items: &[Item]) -> Vec<String> {
    let mut seen = HashSet::new();
    items
        .iter()
        .filter(|i| i.skip.is_none())
        .filter_map(|i| {
            Some(mutate::images(
                &template_of(&i.object).ok()?.1.spec,
                &i.operation,
            ))
        })
        .flatten()
        .filter(|image| seen.insert(image.clone()))
        .collect()
}

/// The decisions and patch for one object of any kind that holds a pod template.
pub fn plan(
    policy: &Policy,
    object: &Value,
    namespace: Option<&str>,
    op: &Operation,
    opts: Options<'_>,
) -> Result<Mutation, TemplateError> {
    let (base, template) = template_of(object)?;
    let ns = object_namespace(object, namespace);
    let extras = mutate::Extras {
        verdicts: opts.verdicts,
        managed_secrets: opts.pull_secrets,
        ..mutate::Extras::default()
    };
    Ok(mutate::mutate(policy, &template, base, &ns, op, extras))
}

/// The request's namespace when there is a request, else the object's, else `default`.
fn object_namespace(object: &Value, request: Option<&str>) -> String {
    request
        .or_else(|| {
            object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("default")
        .to_owned()
}

pub fn evaluate(policy: &Policy, item: &Item, opts: Options<'_>) -> ObjectResult {
    let object = &item.object;
    let meta = |k: &str| {
        object
            .pointer(&format!("/metadata/{k}"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let mut result = ObjectResult {
        kind: object
            .get("kind")
            .and_then(Value::as_str)
            .map(str::to_owned),
        namespace: Some(object_namespace(object, item.namespace.as_deref())),
        name: meta("name").or_else(|| meta("generateName")),
        ..ObjectResult::default()
    };
    if let Some(why) = &item.skip {
        result.patch = Some(Patch::default());
        result.warnings = Some(vec![format!("admission leaves it alone: {why}")]);
        return result;
    }
    if !object.is_object() {
        result.error = Some("not a Kubernetes object".into());
        return result;
    }
    match plan(
        policy,
        object,
        item.namespace.as_deref(),
        &item.operation,
        opts,
    ) {
        Ok(m) => {
            let mut after = object.clone();
            if let Err(e) = json_patch::patch(&mut after, &m.patch) {
                result.error = Some(format!("the patch does not apply: {e}"));
            }
            result.object = Some(after);
            result.patch = Some(m.patch);
            result.decisions = m.decisions;
            result.pull_secrets = Some(m.pull_secrets);
            result.managed_secrets = Some(m.managed_secrets);
            result.annotations = Some(m.annotations);
            result.serverless = Some(m.serverless);
            result.warnings = Some(m.warnings);
        }
        Err(e) => result.warnings = Some(vec![e.to_string()]),
    }
    result
}

pub fn evaluate_all(policy: &Policy, items: &[Item], opts: Options<'_>) -> DryRunReport {
    DryRunReport {
        results: items.iter().map(|i| evaluate(policy, i, opts)).collect(),
    }
}

/// Explains single references; a namespace that the policy excludes is honoured.
pub fn explain(
    policy: &Policy,
    images: &[String],
    namespace: Option<&str>,
    verdicts: Option<&Verdicts>,
) -> DryRunReport {
    let decisions = images
        .iter()
        .map(|image| {
            let mut decision = decide(policy, image, verdicts.and_then(|v| v.get(image)));
            if let Some(ns) = namespace.filter(|ns| policy.excludes_namespace(ns)) {
                decision.result = Some(image.clone()).filter(|_| decision.error.is_none());
                decision.rule = None;
                decision.denied = false;
                decision.reason = format!("namespace {ns} is excluded");
            }
            FieldDecision {
                container: None,
                field: None,
                decision: decision.into(),
            }
        })
        .collect();
    DryRunReport {
        results: vec![ObjectResult {
            decisions,
            ..ObjectResult::default()
        }],
    }
}
