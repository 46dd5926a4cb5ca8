//! A Pod (or a workload's pod template) in, decisions and a minimal JSON patch out. Pure.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use jsonptr::PointerBuf;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::policy::{Policy, Profile, ProfileMode};
use crate::rewrite::{decide, Decision};

pub const SKIP_LABEL: &str = "image-mirror-webhook.io/skip";
pub const ORIGINAL_IMAGES: &str = "image-mirror-webhook.io/original-images";
/// The API server may cut warnings past 256 characters; kubectl prints each on one line.
const MAX_WARNING: usize = 256;
/// Warnings sent with one answer; past it one line says how many more there were. The API server
/// keeps at most 4 KiB of warnings per request and drops duplicates; so does this.
const MAX_WARNINGS: usize = 10;

/// `null` reads as the empty value, as the API server treats it.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Only the parts of a Pod that decisions read; everything else passes through untouched.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    #[serde(default)]
    pub metadata: Option<Metadata>,
    #[serde(default, deserialize_with = "nullable")]
    pub spec: PodSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub generate_name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub namespace: String,
    #[serde(default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, deserialize_with = "nullable")]
    pub containers: Vec<Container>,
    #[serde(default, deserialize_with = "nullable")]
    pub init_containers: Vec<Container>,
    #[serde(default, deserialize_with = "nullable")]
    pub ephemeral_containers: Vec<Container>,
    #[serde(default, deserialize_with = "nullable")]
    pub volumes: Vec<Volume>,
    #[serde(default)]
    pub image_pull_secrets: Option<Vec<NameRef>>,
    #[serde(default, deserialize_with = "nullable")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    pub affinity: Affinity,
    #[serde(default, deserialize_with = "nullable")]
    pub tolerations: Vec<Toleration>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Container {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default)]
    pub image: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Volume {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default)]
    pub image: Option<ImageVolume>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ImageVolume {
    #[serde(default)]
    pub reference: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct NameRef {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Affinity {
    #[serde(default, deserialize_with = "nullable")]
    pub node_affinity: NodeAffinity,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAffinity {
    #[serde(default, deserialize_with = "nullable")]
    pub required_during_scheduling_ignored_during_execution: NodeSelector,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelector {
    #[serde(default, deserialize_with = "nullable")]
    pub node_selector_terms: Vec<NodeSelectorTerm>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorTerm {
    #[serde(default, deserialize_with = "nullable")]
    pub match_expressions: Vec<Requirement>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Requirement {
    #[serde(default, deserialize_with = "nullable")]
    pub key: String,
    #[serde(default, deserialize_with = "nullable")]
    pub operator: String,
    #[serde(default, deserialize_with = "nullable")]
    pub values: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Toleration {
    #[serde(default, deserialize_with = "nullable")]
    pub key: String,
}

/// What the request asks for, as far as it limits what may change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Operation {
    #[default]
    Create,
    /// A Pod update: only container and init-container images may change.
    Update,
    /// The `ephemeralcontainers` subresource: only the images of ephemeral containers that the
    /// old object did not have may change.
    AddEphemeral { existing: HashSet<String> },
}

/// Where a pod template sits inside an object of the given kind.
pub fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod" => &[],
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return None,
    })
}

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
    /// The serverless runtimes whose annotations the pod gets, and why.
    pub serverless: Vec<ServerlessMatch>,
    /// Warnings past `MAX_WARNINGS`, counted, not kept.
    #[serde(skip)]
    more_warnings: usize,
}

impl Mutation {
    /// Adds a warning, once, while there is room; past it only counts it.
    pub fn warn(&mut self, warning: String) {
        let warning = clip(warning);
        if self.warnings.contains(&warning) {
            return;
        }
        match self.warnings.len() < MAX_WARNINGS {
            true => self.warnings.push(warning),
            false => self.more_warnings += 1,
        }
    }

    /// Ends the warnings with how many were left out.
    fn close_warnings(&mut self) {
        if self.more_warnings > 0 {
            let more = std::mem::take(&mut self.more_warnings);
            self.warnings.push(format!(
                "... and {more} more warnings (the dry-run lists every decision)"
            ));
        }
    }

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

fn pointer(base: &[&str], tokens: &[String]) -> PointerBuf {
    PointerBuf::from_tokens(
        base.iter()
            .copied()
            .chain(tokens.iter().map(String::as_str)),
    )
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
    let mut m = Mutation::default();
    let meta = template.metadata.as_ref();
    let fields = image_fields(&template.spec, op);
    let skip = if policy.excludes_namespace(namespace) {
        Some(format!("namespace {namespace} is excluded"))
    } else if meta
        .and_then(|m| m.labels.get(SKIP_LABEL))
        .map(String::as_str)
        == Some("true")
    {
        Some(format!("the pod is labelled {SKIP_LABEL}=true"))
    } else {
        None
    };
    if let Some(reason) = skip {
        m.decisions = fields
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
                }),
            })
            .collect();
        return m;
    }

    let mut registries: Vec<String> = Vec::new();
    // The first image pulled from each registry, for a credential provider.
    let mut seen_registries: HashMap<String, String> = HashMap::new();
    // A Pod may name one image in many containers: each distinct one is decided once.
    let mut decided: HashMap<&str, Arc<Decision>> = HashMap::new();
    m.decisions.reserve_exact(fields.len());
    m.patch.0.reserve(fields.len());
    let mut originals: BTreeMap<String, String> = BTreeMap::new();
    for f in &fields {
        let verdict = extras.verdicts.and_then(|v| v.get(f.image));
        let decision = decided
            .entry(f.image)
            .or_insert_with(|| Arc::new(decide(policy, f.image, verdict)))
            .clone();
        if verdict.is_some_and(|v| v.chosen.is_none() && !v.tried.is_empty()) {
            m.warn(format!(
                "image {}: no mirror has it; pulled from its own registry",
                f.image
            ));
        } else if decision.changed()
            && crate::rewrite::unpinned(policy.verify.pin_digest, f.image.contains('@'), verdict)
        {
            m.warn(format!("image {}: {}", f.image, crate::rewrite::NOT_PINNED));
        }
        let path = pointer(base, &f.tokens());
        if let Some(reg) = &decision.registry {
            if !seen_registries.contains_key(reg) {
                let pulled = decision.result.as_deref().unwrap_or(f.image);
                seen_registries.insert(reg.clone(), crate::credprovider::repository(pulled));
                registries.push(reg.clone());
            }
        }
        if let Some(err) = &decision.error {
            m.warn(format!(
                "{} {}: invalid image \"{}\": {err}",
                singular(f.list),
                f.name,
                f.image
            ));
        }
        if decision.changed() {
            if let Some(result) = &decision.result {
                m.patch.0.push(PatchOperation::Replace(ReplaceOperation {
                    path: path.clone(),
                    value: Value::String(result.clone()),
                }));
                if policy.warnings {
                    m.warn(rewrite_warning(f.image, result));
                }
                originals.insert(format!("{}/{}", f.list, f.name), f.image.to_owned());
            }
        }
        m.decisions.push(FieldDecision {
            container: Some(f.name.to_owned()),
            field: Some(path.to_string()),
            decision,
        });
    }

    let wanted_secrets = secrets_for(policy, namespace, &registries, &seen_registries, extras);
    if *op != Operation::Create {
        // Pod updates may change image fields only (ValidatePodUpdate).
        for (s, _) in wanted_secrets
            .iter()
            .filter(|(s, _)| !has_secret(&template.spec, s))
        {
            m.warn(format!(
                "pull secret {s} is needed but cannot be added to a running pod"
            ));
        }
        m.close_warnings();
        return m;
    }

    let annotations = meta.and_then(|m| m.annotations.as_ref());
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    if policy.annotate_original && !originals.is_empty() {
        // Merge with earlier passes (reinvocation after another webhook added containers).
        let mut all: BTreeMap<String, String> = annotations
            .and_then(|a| a.get(ORIGINAL_IMAGES))
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default();
        for (k, v) in originals {
            all.entry(k).or_insert(v);
        }
        if let Ok(json) = serde_json::to_string(&all) {
            wanted.insert(ORIGINAL_IMAGES.into(), json);
        }
    }
    let no_labels = BTreeMap::new();
    let labels = meta.map_or(&no_labels, |m| &m.labels);
    for (profile, reason) in serverless(policy, &template.spec, labels) {
        profile_annotations(policy, profile, &registries, annotations, &mut wanted);
        m.serverless.push(ServerlessMatch {
            profile: profile.name.clone(),
            reason,
        });
    }
    wanted.retain(|k, v| annotations.and_then(|a| a.get(k)) != Some(v));
    fit_annotations(&mut m, annotations, &mut wanted);
    add_annotations(&mut m, base, meta, wanted);

    let mut secrets: Vec<String> = Vec::new();
    for (name, managed) in wanted_secrets {
        if has_secret(&template.spec, &name) || secrets.contains(&name) {
            continue;
        }
        if let Some(managed) = managed {
            m.managed_secrets.push(managed);
        }
        secrets.push(name);
    }
    add_pull_secrets(&mut m, base, &template.spec, secrets);
    m.close_warnings();
    m
}

/// The pull secrets the Pod's registries need, each with the registry and an image pulled from
/// it when it is a managed one.
fn secrets_for(
    policy: &Policy,
    namespace: &str,
    registries: &[String],
    images: &HashMap<String, String>,
    extras: Extras<'_>,
) -> Vec<(String, Option<ManagedSecret>)> {
    let mut out = Vec::new();
    for reg in registries {
        let image = images.get(reg).cloned().unwrap_or_else(|| reg.clone());
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

/// "image X rewritten to Y", within `MAX_WARNING`: the new reference, what a user needs to find
/// the image on the mirror, is kept whole; the original is shortened first.
fn rewrite_warning(image: &str, result: &str) -> String {
    const SHAPE: usize = "image  rewritten to ".len();
    let room = MAX_WARNING.saturating_sub(SHAPE + result.len());
    if image.len() <= room {
        return format!("image {image} rewritten to {result}");
    }
    let mut end = room.saturating_sub(3);
    while !image.is_char_boundary(end) {
        end -= 1;
    }
    format!("image {}... rewritten to {result}", &image[..end])
}

fn clip(mut s: String) -> String {
    if s.len() > MAX_WARNING {
        let mut end = MAX_WARNING - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// The serverless profiles that apply to a pod, each with why. A profile's own signals (its pod
/// labels, its tolerations, its node selector with its toleration) claim the pod; a node selector
/// alone counts only when no profile claims the pod that way and no other profile on `auto`
/// selects it too, so two runtimes sharing `type: virtual-kubelet` never both annotate a pod.
pub fn serverless<'p>(
    policy: &'p Policy,
    spec: &PodSpec,
    labels: &BTreeMap<String, String>,
) -> Vec<(&'p Profile, String)> {
    let selects = |p: &Profile| {
        p.node_selector
            .iter()
            .find(|(k, v)| node_selects(spec, k, v))
            .map(|(k, v)| format!("{k}={v}"))
    };
    let tolerates = |keys: &[String]| {
        keys.iter()
            .find(|k| spec.tolerations.iter().any(|t| &t.key == *k))
            .cloned()
    };
    let mut claimed = Vec::new();
    let mut selected = Vec::new();
    for p in &policy.profiles {
        match p.mode {
            ProfileMode::Never => {}
            ProfileMode::Always => claimed.push((p, "enabled: always".to_owned())),
            ProfileMode::Auto => {
                if let Some((k, v)) = p.labels.iter().find(|(k, v)| labels.get(k) == Some(v)) {
                    claimed.push((p, format!("pod label {k}={v}")));
                } else if let Some(t) = tolerates(&p.tolerations) {
                    claimed.push((p, format!("toleration {t}")));
                } else if let Some(s) = selects(p) {
                    match (
                        p.node_selector_tolerations.is_empty(),
                        tolerates(&p.node_selector_tolerations),
                    ) {
                        (true, _) => selected.push((p, format!("node selector {s}"))),
                        (false, Some(t)) => {
                            claimed.push((p, format!("node selector {s} with toleration {t}")))
                        }
                        (false, None) => {}
                    }
                }
            }
        }
    }
    let claimed_on_auto = claimed.iter().any(|(p, _)| p.mode == ProfileMode::Auto);
    let selecting = policy
        .profiles
        .iter()
        .filter(|p| p.mode == ProfileMode::Auto && selects(p).is_some())
        .count();
    if !claimed_on_auto && selecting == 1 {
        claimed.extend(selected);
    }
    claimed
}

/// Whether the pod asks for nodes labelled `key=value`: in its nodeSelector or in a required node
/// affinity term with operator In.
fn node_selects(spec: &PodSpec, key: &str, value: &str) -> bool {
    spec.node_selector.get(key).map(String::as_str) == Some(value)
        || spec
            .affinity
            .node_affinity
            .required_during_scheduling_ignored_during_execution
            .node_selector_terms
            .iter()
            .flat_map(|t| &t.match_expressions)
            .any(|r| r.key == key && r.operator == "In" && r.values.iter().any(|v| v == value))
}

/// Keeps the Pod within the API server's annotation limit: the record of original images goes
/// first (it is only a record), then every annotation this pass would add, each with a warning.
fn fit_annotations(
    m: &mut Mutation,
    existing: Option<&BTreeMap<String, String>>,
    wanted: &mut BTreeMap<String, String>,
) {
    let size = |wanted: &BTreeMap<String, String>| {
        let kept = existing
            .into_iter()
            .flatten()
            .filter(|(k, _)| !wanted.contains_key(*k));
        kept.chain(wanted.iter())
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
    };
    const MAX: usize = crate::names::MAX_ANNOTATIONS_BYTES;
    if size(wanted) <= MAX {
        return;
    }
    if wanted.remove(ORIGINAL_IMAGES).is_some() {
        m.warn(format!(
            "{ORIGINAL_IMAGES} not recorded: the pod's annotations would pass the API server's {MAX}-byte limit"
        ));
    }
    if size(wanted) > MAX && !wanted.is_empty() {
        let keys: Vec<String> = std::mem::take(wanted).into_keys().collect();
        m.warn(format!(
            "annotations {} not added: the pod's annotations would pass the API server's {MAX}-byte limit",
            keys.join(", ")
        ));
    }
}

/// The annotations `profile` reads, from the registries the pod pulls from after rewriting.
fn profile_annotations(
    policy: &Policy,
    profile: &Profile,
    registries: &[String],
    existing: Option<&BTreeMap<String, String>>,
    wanted: &mut BTreeMap<String, String>,
) {
    let current = |k: &str| existing.and_then(|a| a.get(k)).map(String::as_str);
    let lists = [
        (
            &profile.plain_http,
            registries
                .iter()
                .filter(|r| policy.is_http(r))
                .collect::<Vec<_>>(),
        ),
        (
            &profile.insecure,
            registries
                .iter()
                .filter(|r| policy.is_insecure(r))
                .collect(),
        ),
    ];
    for (annotation, hosts) in lists {
        let Some(annotation) = annotation else {
            continue;
        };
        if let Some(v) = merge_list(current(annotation), hosts.into_iter(), &profile.separator) {
            wanted.insert(annotation.clone(), v);
        }
    }
    // A value the pod set itself wins.
    for (key, value) in [&profile.host_aliases, &profile.dns_config]
        .into_iter()
        .flatten()
    {
        if current(key).is_none() {
            wanted.insert(key.clone(), value.clone());
        }
    }
}

/// A `separator` list with `hosts` appended where missing; `None` when it already has them all.
fn merge_list<'a>(
    current: Option<&str>,
    hosts: impl Iterator<Item = &'a String>,
    separator: &str,
) -> Option<String> {
    let mut items: Vec<&str> = current
        .unwrap_or_default()
        .split(separator)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let before = items.len();
    for h in hosts {
        if !items.contains(&h.as_str()) {
            items.push(h);
        }
    }
    (items.len() > before).then(|| items.join(separator))
}

/// `add` needs the parent to exist: a missing map is added whole, never written into.
fn add_annotations(
    m: &mut Mutation,
    base: &[&str],
    meta: Option<&Metadata>,
    wanted: BTreeMap<String, String>,
) {
    if wanted.is_empty() {
        return;
    }
    let as_map = || {
        Value::Object(
            wanted
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    };
    match meta {
        None => m.patch.0.push(PatchOperation::Add(AddOperation {
            path: pointer(base, &["metadata".into()]),
            value: serde_json::json!({ "annotations": as_map() }),
        })),
        Some(meta) if meta.annotations.is_none() => {
            m.patch.0.push(PatchOperation::Add(AddOperation {
                path: pointer(base, &["metadata".into(), "annotations".into()]),
                value: as_map(),
            }))
        }
        Some(_) => {
            for (k, v) in &wanted {
                m.patch.0.push(PatchOperation::Add(AddOperation {
                    path: pointer(base, &["metadata".into(), "annotations".into(), k.clone()]),
                    value: Value::String(v.clone()),
                }));
            }
        }
    }
    m.annotations = wanted;
}

fn add_pull_secrets(m: &mut Mutation, base: &[&str], spec: &PodSpec, secrets: Vec<String>) {
    if secrets.is_empty() {
        return;
    }
    let entry = |name: &String| serde_json::json!({ "name": name });
    if spec.image_pull_secrets.is_none() {
        m.patch.0.push(PatchOperation::Add(AddOperation {
            path: pointer(base, &["spec".into(), "imagePullSecrets".into()]),
            value: Value::Array(secrets.iter().map(entry).collect()),
        }));
    } else {
        for s in &secrets {
            m.patch.0.push(PatchOperation::Add(AddOperation {
                path: pointer(
                    base,
                    &["spec".into(), "imagePullSecrets".into(), "-".into()],
                ),
                value: entry(s),
            }));
        }
    }
    m.pull_secrets = secrets;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_warnings_keep_the_new_reference_whole() {
        let short = rewrite_warning("nginx:1.25", "mirror.example.com/library/nginx:1.25");
        assert_eq!(
            short,
            "image nginx:1.25 rewritten to mirror.example.com/library/nginx:1.25"
        );
        // Two long references: the new one whole, the original shortened, within the limit.
        let image = format!("quay.io/{}app:1", "team/".repeat(28));
        let result = format!("mirror.example.com:5000/quay/{}app:1", "team/".repeat(28));
        let warning = rewrite_warning(&image, &result);
        assert!(warning.len() <= MAX_WARNING, "{} {warning}", warning.len());
        assert!(
            warning.ends_with(&format!(" rewritten to {result}")),
            "{warning}"
        );
        assert!(warning.starts_with("image quay.io/team/"), "{warning}");
        assert!(warning.contains("... rewritten to"), "{warning}");
        let fits = rewrite_warning(&"a".repeat(100), &"b".repeat(120));
        assert!(fits.len() <= MAX_WARNING, "{}", fits.len());
        assert!(fits.contains(&"b".repeat(120)));
    }
}
