//! image-mirror-webhook: one cluster-wide image mirror policy, applied at admission.
//!
//! The core is pure: `reference` parses image references, `policy` loads and compiles the policy,
//! `rewrite` decides one image, `mutate` turns a pod template into decisions and a JSON patch,
//! `admission` reads and answers reviews, and `dryrun` evaluates whole objects (with `yaml`,
//! `verdict`, `dockerconfig`, `names` and `sync` beside them). The edges do the I/O: `registry`
//! (verify), `secrets`, `source` (where the policy comes from), `server` and the commands in `cli`.
//! tests/layering.rs keeps it so.

pub mod admission;
pub mod audit;
pub mod cli;
pub mod credentials;
pub mod credprovider;
pub mod dockerconfig;
pub mod dryrun;
pub mod duration;
pub mod ecr;
pub mod flight;
pub mod mutate;
pub mod names;
pub mod policy;
pub mod redacted;
pub mod reference;
pub mod rewrite;
pub mod secrets;
pub mod server;
pub mod source;
pub mod sync;
pub mod verdict;
pub mod verify;
pub mod yaml;
