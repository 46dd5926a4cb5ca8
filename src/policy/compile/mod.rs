//! Turns a read document into a `Policy`: one converter per source format, called in the order
//! their precedence needs, each reporting every rule that cannot work as written.

mod anthos;
mod configs;
mod hosts_toml;
mod k3s;
mod mirror_sets;
mod profiles;
mod providers;
mod regex;
mod registries_conf;
mod rke;
mod sources;
mod verify;

use std::collections::{HashMap, HashSet};

use super::diagnostics::Diagnostics;
use super::document::Document;
use super::endpoint::Scheme;
use super::{DefaultRegistry, Mirror, Policy, RegistryConfig};
use crate::yaml::Pos;

/// What the converters build up, in the shape the policy keeps it.
#[derive(Default)]
struct Parts {
    mirrors: HashMap<String, Mirror>,
    /// The `"*"` mirror.
    wildcard: Option<Mirror>,
    configs: HashMap<String, RegistryConfig>,
    /// The `"*"` config.
    wildcard_config: Option<RegistryConfig>,
    http: HashSet<String>,
    insecure: HashSet<String>,
    default_registry: Option<DefaultRegistry>,
    /// registries.conf, mirror sets and hosts.toml.
    sources: super::sources::Sources,
}

impl Parts {
    fn add_mirror(&mut self, mirror: Mirror) {
        for e in &mirror.endpoints {
            if e.endpoint.scheme == Scheme::Http {
                self.http.insert(e.endpoint.host.clone());
            }
        }
        if mirror.key == "*" {
            self.wildcard = Some(mirror);
        } else {
            self.mirrors.insert(mirror.key.clone(), mirror);
        }
    }

    /// The hosts images are rewritten to.
    fn endpoint_hosts(&self) -> HashSet<String> {
        self.mirrors
            .values()
            .chain(self.wildcard.as_ref())
            .flat_map(|m| m.endpoints.iter().map(|e| e.endpoint.host.clone()))
            .chain(self.default_registry.as_ref().map(|d| d.host.clone()))
            .collect()
    }
}

/// K3s first (its `mirrors` entries are the base), then Anthos (adds endpoints), then `configs`
/// (whose keys name the endpoints), then RKE and `defaultRegistry`, then what needs them all.
pub(super) fn compile(doc: Document, d: &mut Diagnostics) -> Policy {
    if doc.empty {
        d.warning(
            Pos { line: 1, col: 1 },
            "",
            "the policy is empty: no image will be rewritten",
            None,
        );
    }
    let mut regexes = regex::Regexes::default();
    let mut parts = Parts {
        sources: registries_conf::compile(d, doc.registries_conf.as_ref(), &doc.registries_conf_d),
        ..Parts::default()
    };
    mirror_sets::compile(d, &doc.mirror_sets, &mut parts.sources);
    hosts_toml::compile(d, &doc.certs_d, &mut parts);
    k3s::mirrors(d, &mut regexes, &doc, &mut parts);
    sources::notes(d, &parts.sources, &parts.mirrors);
    anthos::registry_mirrors(d, &doc, &mut parts);
    configs::configs(d, &doc, &mut parts);
    let written_hosts = rke::private_registries(d, &doc, &mut parts);
    rke::default_registry(d, &doc, &mut parts);
    let http_fallback = sources::insecure_hosts(&mut parts);
    providers::ecr_identity(&mut parts.configs);
    providers::note_ecr(d, &parts.configs, written_hosts);
    let own_registries = parts.endpoint_hosts();
    let credential_providers = providers::credential_providers(d, &doc, &own_registries);
    let (exclude_images, exclude_image_patterns) = regex::exclude_images(d, &mut regexes, &doc);
    let profiles = profiles::compile(d, &doc);
    let verify = verify::compile(d, &doc);
    k3s::note_unused_endpoints(d, &doc, &verify);
    Policy {
        mirrors: parts.mirrors,
        wildcard: parts.wildcard,
        default_registry: parts.default_registry,
        exclude_namespaces: doc
            .exclude_namespaces
            .into_iter()
            .map(|n| n.value)
            .collect(),
        exclude_images,
        exclude_image_patterns,
        own_registries,
        configs: parts.configs,
        wildcard_config: parts.wildcard_config,
        http_registries: parts.http,
        insecure_registries: parts.insecure,
        http_fallback,
        profiles,
        verify,
        annotate_original: doc.annotate_original.unwrap_or(true),
        warnings: doc.warnings.unwrap_or(true),
        pull_secrets_from_namespace: doc.pull_secrets_from_namespace.unwrap_or(false),
        credential_providers,
        sources: parts.sources,
        unpullable_warn: doc.unpullable_warn.unwrap_or(false),
    }
}
