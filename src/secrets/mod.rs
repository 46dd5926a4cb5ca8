//! Pull secrets in the cluster (I/O): the managed ones the webhook keeps (`store`) and the ones
//! already in each namespace (`index`). Their data is `dockerconfig`'s (pure).

mod index;
mod store;

pub use index::{watch_namespace_secrets, NamespaceSecrets};
pub use store::{resolve_entry, PullSecrets, SecretError};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

/// What a caller of `converge` wants of the Secret it was shown (absent: `None`).
// Made and taken apart once per round; boxing the Secret would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Want<T> {
    /// It is right as it is.
    Keep(T),
    /// Write this object in its place (created, or replaced at the version read).
    Write(Secret, T),
}

/// Brings one Secret to what `want` says, whatever other writers do meanwhile: read, decide,
/// create or replace at the version read; a conflict (another replica wrote first) reads again.
/// `None` when it kept changing for `attempts` rounds.
pub async fn converge<T, E>(
    api: &Api<Secret>,
    name: &str,
    attempts: usize,
    mut want: impl FnMut(Option<&Secret>) -> Result<Want<T>, E>,
) -> Result<Option<T>, E>
where
    E: From<kube::Error>,
{
    for _ in 0..attempts {
        let existing = api.get_opt(name).await?;
        let (mut object, value) = match want(existing.as_ref())? {
            Want::Keep(value) => return Ok(Some(value)),
            Want::Write(object, value) => (object, value),
        };
        let written = match existing {
            None => api.create(&PostParams::default(), &object).await,
            Some(existing) => {
                object.metadata.resource_version = existing.metadata.resource_version;
                api.replace(name, &PostParams::default(), &object).await
            }
        };
        match written {
            Ok(_) => return Ok(Some(value)),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}
