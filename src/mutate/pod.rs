//! The parts of a Pod that decisions read, and the workload kinds that hold a pod template.
//! Everything else in an object passes through untouched.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// `null` reads as the empty value, as the API server treats it.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

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

impl PodTemplate {
    pub fn deserialize_from(v: &Value) -> Result<Self, serde_json::Error> {
        Deserialize::deserialize(v)
    }

    /// The names of its ephemeral containers: an update of `pods/ephemeralcontainers` may decide
    /// only the others.
    pub fn ephemeral_names(&self) -> HashSet<String> {
        self.spec
            .ephemeral_containers
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }
}

/// A kind that holds a pod template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    pub kind: &'static str,
    /// `group/version`, or `v1` for the core group.
    pub api_version: &'static str,
    pub plural: &'static str,
    /// Where its pod template sits in the object.
    pub template: &'static [&'static str],
}

const TEMPLATE: &[&str] = &["spec", "template"];

/// Every kind that holds a pod template, in the order `audit` lists them.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        kind: "Pod",
        api_version: "v1",
        plural: "pods",
        template: &[],
    },
    Workload {
        kind: "Deployment",
        api_version: "apps/v1",
        plural: "deployments",
        template: TEMPLATE,
    },
    Workload {
        kind: "StatefulSet",
        api_version: "apps/v1",
        plural: "statefulsets",
        template: TEMPLATE,
    },
    Workload {
        kind: "DaemonSet",
        api_version: "apps/v1",
        plural: "daemonsets",
        template: TEMPLATE,
    },
    Workload {
        kind: "ReplicaSet",
        api_version: "apps/v1",
        plural: "replicasets",
        template: TEMPLATE,
    },
    Workload {
        kind: "ReplicationController",
        api_version: "v1",
        plural: "replicationcontrollers",
        template: TEMPLATE,
    },
    Workload {
        kind: "Job",
        api_version: "batch/v1",
        plural: "jobs",
        template: TEMPLATE,
    },
    Workload {
        kind: "CronJob",
        api_version: "batch/v1",
        plural: "cronjobs",
        template: &["spec", "jobTemplate", "spec", "template"],
    },
];

/// The workload kind named `kind`.
pub fn workload(kind: &str) -> Option<&'static Workload> {
    WORKLOADS.iter().find(|w| w.kind == kind)
}
