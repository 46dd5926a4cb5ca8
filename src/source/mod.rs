//! Where policies and certificates come from, and how changes are noticed.

pub mod configmap;
pub mod file;
pub mod store;

pub use store::{PolicyStore, Reload};

use std::fmt;
use std::str::FromStr;

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
