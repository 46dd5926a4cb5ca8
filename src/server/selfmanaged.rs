//! Self-managed serving certificates: the webhook makes a CA and a certificate, keeps them in one
//! Secret that every replica shares, renews them before they expire, and keeps the CA bundle of its
//! MutatingWebhookConfiguration current.
//!
//! Renewal makes a new CA too; the bundle carries the new CA and the previous one, so replicas that
//! still serve the old certificate stay trusted until they pick up the new one.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::Engine;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, PatchParams};
use kube::{Api, Client};

use super::tls;
use crate::names::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::secrets::{converge, Want};
use crate::source::NamespacedName;

const CA_KEY: &str = "ca.crt";
const CERT_KEY: &str = "tls.crt";
const KEY_KEY: &str = "tls.key";

#[derive(Debug, Clone)]
pub struct CertificateSettings {
    /// The Secret, as NAMESPACE/NAME.
    pub secret: NamespacedName,
    pub dns_names: Vec<String>,
    pub validity: Duration,
    pub renew_before: Duration,
    /// The MutatingWebhookConfiguration whose CA bundle is kept current.
    pub webhook_configuration: Option<String>,
}

/// PEM material as it sits in the Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Material {
    /// The current CA, then the previous one.
    pub ca_bundle: String,
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Material { key: <redacted>, .. }")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("the Secret kept changing under us; giving up for now")]
    Contended,
}

fn get(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

fn material(secret: &Secret) -> Option<Material> {
    Some(Material {
        ca_bundle: get(secret, CA_KEY)?,
        cert: get(secret, CERT_KEY)?,
        key: get(secret, KEY_KEY)?,
    })
}

/// Whether the material can be served until it is due for renewal: it parses, the key fits, it
/// covers every name, and more than `renew_before` is left.
pub fn usable(m: &Material, s: &CertificateSettings, now: SystemTime) -> bool {
    if tls::certified_key(m.cert.as_bytes(), m.key.as_bytes()).is_err() {
        return false;
    }
    match tls::inspect(m.cert.as_bytes()) {
        Ok((not_after, names)) => {
            s.dns_names.iter().all(|n| names.contains(n))
                && not_after
                    .duration_since(now)
                    .is_ok_and(|left| left > s.renew_before)
        }
        Err(_) => false,
    }
}

fn first_pem(bundle: &str) -> &str {
    const END: &str = "-----END CERTIFICATE-----";
    bundle
        .find(END)
        .map_or(bundle, |i| &bundle[..i + END.len()])
}

fn fresh(s: &CertificateSettings, previous: Option<&Material>) -> Result<Material, CertError> {
    let names: Vec<&str> = s.dns_names.iter().map(String::as_str).collect();
    let made = tls::generate_valid(&names, s.validity)?;
    let mut ca_bundle = made.ca_pem;
    if let Some(prev) = previous {
        ca_bundle.push_str(first_pem(&prev.ca_bundle));
        ca_bundle.push('\n');
    }
    Ok(Material {
        ca_bundle,
        cert: made.cert_pem,
        key: made.key_pem,
    })
}

fn tls_secret(s: &CertificateSettings, m: &Material) -> Secret {
    let data = BTreeMap::from([
        (
            CA_KEY.to_owned(),
            ByteString(m.ca_bundle.clone().into_bytes()),
        ),
        (CERT_KEY.to_owned(), ByteString(m.cert.clone().into_bytes())),
        (KEY_KEY.to_owned(), ByteString(m.key.clone().into_bytes())),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(s.secret.name.clone()),
            namespace: Some(s.secret.namespace.clone()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_owned(),
                MANAGED_BY.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The material to serve: the Secret's when usable, else new material written to it. Replicas
/// racing to create or renew it settle on whichever write the API server took first.
pub async fn ensure(
    client: &Client,
    s: &CertificateSettings,
    now: SystemTime,
) -> Result<Material, CertError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &s.secret.namespace);
    let settled = converge(&secrets, &s.secret.name, 5, |existing| -> Result<_, CertError> {
        let current = existing.and_then(material);
        if let Some(m) = current.as_ref().filter(|m| usable(m, s, now)) {
            return Ok(Want::Keep(m.clone()));
        }
        let next = fresh(s, current.as_ref())?;
        tracing::info!(secret = %s.secret, renewing = existing.is_some(), "writing a serving certificate");
        Ok(Want::Write(tls_secret(s, &next), next))
    })
    .await?;
    settled.ok_or(CertError::Contended)
}

/// Writes the CA bundle into every webhook of the configuration that does not have it yet.
pub async fn publish_ca(client: &Client, name: &str, m: &Material) -> Result<bool, CertError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let config = api.get(name).await?;
    let bundle = ByteString(m.ca_bundle.clone().into_bytes());
    let webhooks = config.webhooks.unwrap_or_default();
    let ops: Vec<PatchOperation> = webhooks
        .iter()
        .enumerate()
        .filter(|(_, w)| w.client_config.ca_bundle.as_ref() != Some(&bundle))
        .map(|(i, _)| {
            PatchOperation::Add(AddOperation {
                path: jsonptr::PointerBuf::from_tokens([
                    "webhooks",
                    &i.to_string(),
                    "clientConfig",
                    "caBundle",
                ]),
                value: serde_json::Value::String(
                    base64::engine::general_purpose::STANDARD.encode(&bundle.0),
                ),
            })
        })
        .collect();
    if ops.is_empty() {
        return Ok(false);
    }
    api.patch(
        name,
        &PatchParams::default(),
        &kube::api::Patch::Json::<()>(Patch(ops)),
    )
    .await?;
    tracing::info!(webhook_configuration = name, "CA bundle published");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(validity: u64, renew: u64) -> CertificateSettings {
        CertificateSettings {
            secret: "ns/tls".parse().unwrap(),
            dns_names: vec!["svc.ns.svc".into(), "127.0.0.1".into()],
            validity: Duration::from_secs(validity),
            renew_before: Duration::from_secs(renew),
            webhook_configuration: None,
        }
    }

    #[test]
    fn usability_follows_expiry_names_and_key() {
        let s = settings(3600, 600);
        let m = fresh(&s, None).unwrap();
        let now = SystemTime::now();
        assert!(usable(&m, &s, now));
        assert!(
            !usable(&m, &s, now + Duration::from_secs(3100)),
            "inside the renewal window"
        );
        let other = CertificateSettings {
            dns_names: vec!["other.ns.svc".into()],
            ..s.clone()
        };
        assert!(!usable(&m, &other, now), "names not covered");
        let wrong_key = Material {
            key: fresh(&s, None).unwrap().key,
            ..m.clone()
        };
        assert!(!usable(&wrong_key, &s, now));
    }

    #[test]
    fn a_renewal_keeps_the_previous_ca_in_the_bundle() {
        let s = settings(3600, 600);
        let first = fresh(&s, None).unwrap();
        let second = fresh(&s, Some(&first)).unwrap();
        assert_eq!(second.ca_bundle.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(second.ca_bundle.contains(first_pem(&first.ca_bundle)));
        let third = fresh(&s, Some(&second)).unwrap();
        assert_eq!(
            third.ca_bundle.matches("BEGIN CERTIFICATE").count(),
            2,
            "only one previous CA is kept"
        );
        assert!(!format!("{third:?}").contains("PRIVATE KEY"));
    }
}
