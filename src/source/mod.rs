//! Where policies and certificates come from, and how changes are noticed.

pub mod configmap;
pub mod file;
