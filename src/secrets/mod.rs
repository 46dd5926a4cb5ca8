//! Pull secrets in the cluster (I/O): the managed ones the webhook keeps (`store`) and the ones
//! already in each namespace (`index`). Their data is `dockerconfig`'s (pure).

mod index;
mod store;

pub use index::{watch_namespace_secrets, NamespaceSecrets};
pub use store::{resolve_entry, PullSecrets, SecretError};
