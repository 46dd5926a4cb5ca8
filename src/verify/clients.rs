//! One HTTP client per registry host, with the TLS settings its `configs` entry has.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::protocol::redirect_policy;
use crate::policy::Policy;
use crate::sync::lock;

/// The clients made so far, by host; forgotten when the policy changes.
#[derive(Default)]
pub(super) struct Clients {
    by_host: Mutex<HashMap<String, reqwest::Client>>,
}

impl Clients {
    pub fn clear(&self) {
        lock(&self.by_host).clear();
    }

    /// A client with the TLS settings `configs` has for `host`.
    pub fn get(&self, policy: &Policy, host: &str) -> Result<reqwest::Client, ClientError> {
        if let Some(c) = lock(&self.by_host).get(host) {
            return Ok(c.clone());
        }
        let mut b = reqwest::Client::builder()
            .redirect(redirect_policy())
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(cfg) = policy.config_for(host) {
            let tls = &cfg.tls;
            if let Some(ca) = &tls.ca_file {
                let pem = read_file(ca)?;
                for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                    ClientError::Ca {
                        path: ca.clone(),
                        source,
                    }
                })? {
                    b = b.add_root_certificate(cert);
                }
            }
            if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
                let mut pem = read_file(cert)?;
                pem.extend(read_file(key)?);
                b = b.identity(reqwest::Identity::from_pem(&pem).map_err(ClientError::Identity)?);
            }
            if tls.insecure_skip_verify {
                b = b.danger_accept_invalid_certs(true);
            }
            if !cfg.headers.is_empty() {
                let mut map = reqwest::header::HeaderMap::new();
                for (name, value) in &cfg.headers {
                    // Checked when the policy loaded; one that still fails is left out.
                    if let (Ok(n), Ok(mut v)) = (
                        reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                        reqwest::header::HeaderValue::from_str(value.expose()),
                    ) {
                        v.set_sensitive(true);
                        map.append(n, v);
                    }
                }
                b = b.default_headers(map);
            }
        }
        let client = b.build().map_err(ClientError::Build)?;
        lock(&self.by_host).insert(host.to_owned(), client.clone());
        Ok(client)
    }
}

/// Why no client could be made for a registry's TLS settings.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("CA {path}: {source}")]
    Ca {
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("client certificate: {0}")]
    Identity(#[source] reqwest::Error),
    #[error("{0}")]
    Build(#[source] reqwest::Error),
}

fn read_file(path: &str) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        path: path.to_owned(),
        source,
    })
}
