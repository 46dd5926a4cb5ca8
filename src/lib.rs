//! image-mirror-webhook: one cluster-wide image mirror policy, applied at admission.
//!
//! The core is pure: `reference` parses image references, `policy` loads and compiles the policy,
//! `rewrite` decides one image, `mutate` turns a pod template into decisions and a JSON patch, and
//! `dryrun` evaluates whole objects. The commands in `cli` are thin edges around it.

pub mod admission;
pub mod cli;
pub mod dockerconfig;
pub mod dryrun;
pub mod mutate;
pub mod names;
pub mod policy;
pub mod reference;
pub mod registry;
pub mod rewrite;
pub mod secrets;
pub mod server;
pub mod source;
pub mod sync;
pub mod verdict;
pub mod yaml;
