//! Anthos `registryMirrors`: each endpoint a mirror of its `hosts` (Docker Hub and gcr.io when
//! none are named), with its CA and pull credentials.

use super::Parts;
use crate::policy::diagnostics::Diagnostics;
use crate::policy::document::Document;
use crate::policy::endpoint::{self, Scheme};
use crate::policy::{Mirror, MirrorEndpoint, Severity};
use crate::reference::DOCKER_HUB;

pub(super) fn registry_mirrors(r: &mut Diagnostics, doc: &Document, parts: &mut Parts) {
    for (i, rm) in doc.registry_mirrors.iter().enumerate() {
        let rule = format!("registryMirrors[{i}]");
        let ep = match endpoint::parse(&rm.endpoint.value) {
            Ok(ep) => ep,
            Err(e) => {
                r.error_hint(
                    rm.endpoint.pos,
                    &format!("{rule}.endpoint"),
                    e.message,
                    e.hint,
                );
                continue;
            }
        };
        if ep.scheme == Scheme::Http {
            parts.http.insert(ep.host.clone());
        }
        let config = parts.configs.entry(ep.host.clone()).or_default();
        if let Some(ca) = &rm.ca_cert_path {
            config.tls.ca_file = Some(ca.value.clone());
            parts.insecure.insert(ep.host.clone());
        }
        if let Some(path) = &rm.pull_credential_config_path {
            config.credential_file = Some(path.value.clone());
        }
        let hosts: Vec<String> = if rm.hosts.is_empty() {
            vec![DOCKER_HUB.into(), "gcr.io".into()]
        } else {
            rm.hosts.iter().map(|h| h.value.clone()).collect()
        };
        for host in hosts {
            if let Some(k3s) = parts.mirrors.get(&host).filter(|m| !m.endpoints.is_empty()) {
                r.push(
                    Severity::Note,
                    rm.endpoint.pos,
                    &rule,
                    format!("{host} has a mirrors entry too: its endpoints come first, then this one (mirrors, then registryMirrors in order)"),
                    (!k3s.rewrites.is_empty()).then(|| format!("mirrors[{host}]'s rewrite rules apply to this endpoint too"))
                );
            }
            let entry = parts.mirrors.entry(host.clone()).or_insert_with(|| Mirror {
                key: host,
                endpoints: Vec::new(),
                rewrites: Vec::new(),
                rewrite_set: None,
            });
            entry.endpoints.push(MirrorEndpoint {
                endpoint: ep.clone(),
                rule: rule.clone(),
            });
        }
    }
}
