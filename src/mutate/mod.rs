//! A Pod (or a workload's pod template) in, decisions and a minimal JSON patch out. Pure.
//! `mutate` runs the steps in order: skip, decide each image field, then (on create) annotate
//! and attach pull secrets. `pod` is the model it reads, `serverless` the profiles, `patch` the
//! operations.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

mod patch;
mod pod;
mod serverless;
mod warnings;

use json_patch::{Patch, PatchOperation, ReplaceOperation};
use serde::Serialize;
use serde_json::Value;

use crate::policy::Policy;
use crate::rewrite::{decide, Decision};
use patch::pointer;
use warnings::{rewrite_warning, warn_of_verdict};

pub use pod::*;
pub use serverless::serverless;

pub const SKIP_LABEL: &str = "image-mirror-webhook.io/skip";
pub const ORIGINAL_IMAGES: &str = "image-mirror-webhook.io/original-images";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldDecision {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Shared by every field that names the same image.
    #[serde(flatten)]
    pub decision: Arc<Decision>,
}

/// A serverless profile that applies to a pod, and why (for the dry-run and the log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerlessMatch {
    pub profile: String,
    pub reason: String,
}

/// A pull secret the webhook keeps for a registry the policy has credentials for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManagedSecret {
    pub name: String,
    pub registry: String,
    /// Where its credentials come from (never the credentials).
    pub source: String,
    /// An image the Pod pulls from the registry (its repository, as the kubelet asks a
    /// credential provider about it).
    #[serde(skip)]
    pub image: String,
}

fn no_secrets(_: &str, _: &str) -> Vec<String> {
    Vec::new()
}

/// What a mutation may use beyond the policy and the Pod.
#[derive(Clone, Copy)]
pub struct Extras<'a> {
    /// Attach managed pull secrets for registries with credentials (the caller makes them exist).
    pub managed_secrets: bool,
    /// Names of `kubernetes.io/dockerconfigjson` Secrets in the Pod's namespace whose `auths`
    /// cover a registry (`pullSecrets.fromNamespace`).
    /// Called with the namespace and the registry.
    pub namespace_secrets: &'a (dyn Fn(&str, &str) -> Vec<String> + Sync),
    /// What `verify` found for each image, when it is on.
    pub verdicts: Option<&'a crate::verdict::Verdicts>,
}

impl Default for Extras<'_> {
    fn default() -> Self {
        Extras {
            managed_secrets: true,
            namespace_secrets: &no_secrets,
            verdicts: None,
        }
    }
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mutation {
    pub patch: Patch,
    pub decisions: Vec<FieldDecision>,
    /// Secrets this mutation adds to `spec.imagePullSecrets`.
    pub pull_secrets: Vec<String>,
    /// Of those, the ones the webhook creates or updates before the Pod is admitted.
    pub managed_secrets: Vec<ManagedSecret>,
    /// Annotations this mutation sets, with their new values.
    pub annotations: BTreeMap<String, String>,
    pub warnings: Vec<String>,
    /// Images no source could serve, with why: the review is refused unless the policy says
    /// `unpullable: warn`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refusals: Vec<String>,
    /// The serverless runtimes whose annotations the pod gets, and why.
    pub serverless: Vec<ServerlessMatch>,
    /// Warnings past `MAX_WARNINGS`, counted, not kept.
    #[serde(skip)]
    more_warnings: usize,
}

impl Mutation {
    pub fn is_empty(&self) -> bool {
        self.patch.0.is_empty()
    }

    pub fn rewrites(&self) -> impl Iterator<Item = &FieldDecision> {
        self.decisions.iter().filter(|d| d.decision.changed())
    }
}

/// One image field of the template: which list, its index, the container's name and its image.
struct ImageField<'a> {
    list: &'static str,
    index: usize,
    name: &'a str,
    image: &'a str,
}

impl ImageField<'_> {
    fn tokens(&self) -> Vec<String> {
        let mut t = vec![
            "spec".to_owned(),
            self.list.to_owned(),
            self.index.to_string(),
            "image".to_owned(),
        ];
        if self.list == "volumes" {
            t.push("reference".to_owned());
        }
        t
    }
}

/// The images `op` lets the webhook decide, each once: what `verify` checks before deciding.
pub fn images(spec: &PodSpec, op: &Operation) -> Vec<String> {
    let mut seen = HashSet::new();
    image_fields(spec, op)
        .into_iter()
        .filter(|f| seen.insert(f.image))
        .map(|f| f.image.to_owned())
        .collect()
}

fn image_fields<'a>(spec: &'a PodSpec, op: &Operation) -> Vec<ImageField<'a>> {
    let mut out = Vec::new();
    let mut push_list =
        |list: &'static str, items: &'a [Container], keep: &dyn Fn(&Container) -> bool| {
            for (index, c) in items.iter().enumerate() {
                match c.image.as_deref() {
                    Some(image) if !image.is_empty() && keep(c) => out.push(ImageField {
                        list,
                        index,
                        name: &c.name,
                        image,
                    }),
                    _ => {}
                }
            }
        };
    match op {
        Operation::Create => {
            push_list("containers", &spec.containers, &|_| true);
            push_list("initContainers", &spec.init_containers, &|_| true);
            push_list("ephemeralContainers", &spec.ephemeral_containers, &|_| true);
        }
        Operation::Update => {
            push_list("containers", &spec.containers, &|_| true);
            push_list("initContainers", &spec.init_containers, &|_| true);
        }
        Operation::AddEphemeral { existing } => {
            push_list("ephemeralContainers", &spec.ephemeral_containers, &|c| {
                !existing.contains(&c.name)
            });
        }
    }
    if *op == Operation::Create {
        for (index, v) in spec.volumes.iter().enumerate() {
            if let Some(image) = v.image.as_ref().and_then(|i| i.reference.as_deref()) {
                if !image.is_empty() {
                    out.push(ImageField {
                        list: "volumes",
                        index,
                        name: &v.name,
                        image,
                    });
                }
            }
        }
    }
    out
}

/// Decides every image of a pod template and builds the patch. `base` is where the template sits
/// in the object (empty for a Pod); `namespace` is the namespace the object lands in.
pub fn mutate(
    policy: &Policy,
    template: &PodTemplate,
    base: &[&str],
    namespace: &str,
    op: &Operation,
    extras: Extras<'_>,
) -> Mutation {
    let fields = image_fields(&template.spec, op);
    if let Some(reason) = skip_reason(policy, template, namespace) {
        return skipped(&fields, base, reason);
    }
    let mut m = Mutation::default();
    let pulled = decide_fields(&mut m, policy, &fields, base, extras);
    let wanted_secrets = secrets_for(policy, namespace, &pulled, extras);
    if *op == Operation::Create {
        annotate(&mut m, policy, template, base, pulled);
        attach_secrets(&mut m, base, &template.spec, wanted_secrets);
    } else {
        // Pod updates may change image fields only (ValidatePodUpdate).
        for (s, _) in wanted_secrets
            .iter()
            .filter(|(s, _)| !has_secret(&template.spec, s))
        {
            m.warn(format!(
                "pull secret {s} is needed but cannot be added to a running pod"
            ));
        }
    }
    m.close_warnings();
    m
}

/// Why the webhook leaves this pod alone, if it does.
fn skip_reason(policy: &Policy, template: &PodTemplate, namespace: &str) -> Option<String> {
    let labels = template.metadata.as_ref().map(|m| &m.labels);
    if policy.excludes_namespace(namespace) {
        Some(format!("namespace {namespace} is excluded"))
    } else if labels.and_then(|l| l.get(SKIP_LABEL)).map(String::as_str) == Some("true") {
        Some(format!("the pod is labelled {SKIP_LABEL}=true"))
    } else {
        None
    }
}

/// Every field left as it is, with the reason.
fn skipped(fields: &[ImageField<'_>], base: &[&str], reason: String) -> Mutation {
    let decisions = fields
        .iter()
        .map(|f| FieldDecision {
            container: Some(f.name.to_owned()),
            field: Some(pointer(base, &f.tokens()).to_string()),
            decision: Arc::new(Decision {
                image: f.image.to_owned(),
                normalized: None,
                result: Some(f.image.to_owned()),
                rule: None,
                reason: reason.clone(),
                error: None,
                tried: Vec::new(),
                registry: None,
                excluded: true,
                denied: false,
                warning: None,
            }),
        })
        .collect();
    Mutation {
        decisions,
        ..Mutation::default()
    }
}

/// What the decided images are pulled from, for pull secrets and annotations.
#[derive(Default)]
struct Pulled {
    /// The registries, in the order the pod first names them.
    registries: Vec<String>,
    /// The first image pulled from each registry, for a credential provider.
    first_image: HashMap<String, String>,
    /// `list/name` → the image before rewriting, for `ORIGINAL_IMAGES`.
    originals: BTreeMap<String, String>,
}

fn decide_fields(
    m: &mut Mutation,
    policy: &Policy,
    fields: &[ImageField<'_>],
    base: &[&str],
    extras: Extras<'_>,
) -> Pulled {
    let mut pulled = Pulled::default();
    // A Pod may name one image in many containers: each distinct one is decided once.
    let mut decided: HashMap<&str, Arc<Decision>> = HashMap::new();
    m.decisions.reserve_exact(fields.len());
    m.patch.0.reserve(fields.len());
    for f in fields {
        let verdict = extras.verdicts.and_then(|v| v.get(f.image));
        let decision = decided
            .entry(f.image)
            .or_insert_with(|| Arc::new(decide(policy, f.image, verdict)))
            .clone();
        warn_of_verdict(m, policy, f.image, &decision, verdict);
        if let Some(reg) = &decision.registry {
            if !pulled.first_image.contains_key(reg) {
                let image = decision.result.as_deref().unwrap_or(f.image);
                let repository = crate::credprovider::repository(image);
                pulled.first_image.insert(reg.clone(), repository);
                pulled.registries.push(reg.clone());
            }
        }
        if let Some(err) = &decision.error {
            let (list, name, image) = (singular(f.list), f.name, f.image);
            m.warn(format!("{list} {name}: invalid image \"{image}\": {err}"));
        }
        if decision.denied {
            warnings::refuse_or_warn(m, policy, f, &decision);
        } else if let Some(w) = decision.warning.as_ref().filter(|_| policy.warnings) {
            m.warn(format!("image {}: {w}", f.image));
        }
        let path = pointer(base, &f.tokens());
        if let Some(result) = decision.result.as_ref().filter(|_| decision.changed()) {
            m.patch.0.push(PatchOperation::Replace(ReplaceOperation {
                path: path.clone(),
                value: Value::String(result.clone()),
            }));
            if policy.warnings {
                m.warn(rewrite_warning(f.image, result));
            }
            let key = format!("{}/{}", f.list, f.name);
            pulled.originals.insert(key, f.image.to_owned());
        }
        m.decisions.push(FieldDecision {
            container: Some(f.name.to_owned()),
            field: Some(path.to_string()),
            decision,
        });
    }
    pulled
}

/// The annotations a created pod gets: the original images, and each serverless profile's.
fn annotate(
    m: &mut Mutation,
    policy: &Policy,
    template: &PodTemplate,
    base: &[&str],
    pulled: Pulled,
) {
    let meta = template.metadata.as_ref();
    let annotations = meta.and_then(|m| m.annotations.as_ref());
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    if policy.annotate_original && !pulled.originals.is_empty() {
        // Merge with earlier passes (reinvocation after another webhook added containers).
        let mut all: BTreeMap<String, String> = annotations
            .and_then(|a| a.get(ORIGINAL_IMAGES))
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default();
        for (k, v) in pulled.originals {
            all.entry(k).or_insert(v);
        }
        if let Ok(json) = serde_json::to_string(&all) {
            wanted.insert(ORIGINAL_IMAGES.into(), json);
        }
    }
    let no_labels = BTreeMap::new();
    let labels = meta.map_or(&no_labels, |m| &m.labels);
    for (profile, reason) in serverless(policy, &template.spec, labels) {
        serverless::profile_annotations(
            policy,
            profile,
            &pulled.registries,
            annotations,
            &mut wanted,
        );
        m.serverless.push(ServerlessMatch {
            profile: profile.name.clone(),
            reason,
        });
    }
    wanted.retain(|k, v| annotations.and_then(|a| a.get(k)) != Some(v));
    patch::fit_annotations(m, annotations, &mut wanted);
    patch::add_annotations(m, base, meta, wanted);
}

/// Adds the wanted pull secrets the pod does not have yet, each once.
fn attach_secrets(
    m: &mut Mutation,
    base: &[&str],
    spec: &PodSpec,
    wanted: Vec<(String, Option<ManagedSecret>)>,
) {
    let mut secrets: Vec<String> = Vec::new();
    for (name, managed) in wanted {
        if has_secret(spec, &name) || secrets.contains(&name) {
            continue;
        }
        if let Some(managed) = managed {
            m.managed_secrets.push(managed);
        }
        secrets.push(name);
    }
    patch::add_pull_secrets(m, base, spec, secrets);
}

/// The pull secrets the Pod's registries need, each with the registry and an image pulled from
/// it when it is a managed one.
fn secrets_for(
    policy: &Policy,
    namespace: &str,
    pulled: &Pulled,
    extras: Extras<'_>,
) -> Vec<(String, Option<ManagedSecret>)> {
    let mut out = Vec::new();
    for reg in &pulled.registries {
        let image = pulled
            .first_image
            .get(reg)
            .cloned()
            .unwrap_or_else(|| reg.clone());
        match policy.credential_source(reg, &image) {
            Some(crate::policy::CredentialSource::UserSecret(name)) => out.push((name, None)),
            Some(source) if extras.managed_secrets => {
                let name = crate::dockerconfig::managed_name(reg);
                let managed = ManagedSecret {
                    name: name.clone(),
                    registry: reg.clone(),
                    source: source.to_string(),
                    image,
                };
                out.push((name, Some(managed)))
            }
            _ => {}
        }
        if policy.pull_secrets_from_namespace {
            out.extend(
                (extras.namespace_secrets)(namespace, reg)
                    .into_iter()
                    .map(|n| (n, None)),
            );
        }
    }
    out
}

fn has_secret(spec: &PodSpec, name: &str) -> bool {
    spec.image_pull_secrets
        .as_ref()
        .is_some_and(|s| s.iter().any(|r| r.name == name))
}

fn singular(list: &str) -> &str {
    match list {
        "containers" => "container",
        "initContainers" => "init container",
        "ephemeralContainers" => "ephemeral container",
        _ => "volume",
    }
}
