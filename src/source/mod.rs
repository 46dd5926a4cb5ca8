//! Where policies and certificates come from, and how changes are noticed.

pub mod configmap;
pub mod file;
pub mod mirror_sets;
pub mod store;

pub use store::{PolicyStore, Reload};

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where a command takes its policy from: the same two flags on every command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PolicySource {
    /// The policy, from a file (serve re-reads it when it changes).
    #[arg(long, value_name = "FILE", conflicts_with = "policy_configmap")]
    pub policy_file: Option<PathBuf>,
    /// The policy in this ConfigMap (key policy.yaml), read through the Kubernetes API with the
    /// in-cluster configuration or KUBECONFIG. serve watches it and is not ready until it has
    /// loaded once.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub policy_configmap: Option<NamespacedName>,
}

/// An object named as NAMESPACE/NAME on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacedName {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for NamespacedName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = crate::names::is_dns_subdomain;
        match s.split_once('/') {
            Some((ns, name)) if valid(ns) && valid(name) => Ok(NamespacedName {
                namespace: ns.to_owned(),
                name: name.to_owned(),
            }),
            _ => Err(format!("`{s}` is not NAMESPACE/NAME")),
        }
    }
}
