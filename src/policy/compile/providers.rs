//! Where pull credentials come from besides `configs`: ECR tokens for the webhook's own AWS
//! identity, and a kubelet `CredentialProviderConfig`, validated as the kubelet validates it.

use std::collections::{HashMap, HashSet};

use crate::credprovider::{Provider, CONFIG_API_VERSIONS, PLUGIN_API_VERSIONS};
use crate::policy::diagnostics::Diagnostics;
use crate::policy::document::{Document, ProviderConfigDoc, ProviderDoc};
use crate::policy::{CredentialSource, EcrSource, RegistryConfig, Severity};
use crate::yaml::Pos;

/// An ECR registry with no credentials of its own gets tokens from the webhook's AWS identity.
pub(super) fn ecr_identity(configs: &mut HashMap<String, RegistryConfig>) {
    for (host, config) in configs.iter_mut() {
        if config.source().is_none() {
            config.ecr = crate::ecr::parse_host(host).map(|registry| EcrSource {
                registry,
                keys: None,
            });
        }
    }
}

/// A note where each ECR registry is first written, saying where its tokens come from.
pub(super) fn note_ecr(
    r: &mut Diagnostics,
    configs: &HashMap<String, RegistryConfig>,
    written_hosts: Vec<(String, Pos)>,
) {
    let mut noted = HashSet::new();
    for (host, pos) in written_hosts {
        let Some(ecr) = configs.get(&host).and_then(|c| c.ecr.as_ref()) else {
            continue;
        };
        if noted.insert(host.clone()) {
            r.push(
                Severity::Note,
                pos,
                &host,
                format!(
                    "pulls use an {} (fetched by serve, renewed at half its life)",
                    CredentialSource::Ecr(ecr.clone())
                ),
                ecr.keys.is_none().then(|| {
                    "the webhook's AWS identity: its environment, IRSA web identity, EKS Pod Identity or instance profile".to_owned()
                }),
            );
        }
    }
}

/// The config's providers, each noted with the policy's registries it serves.
pub(super) fn credential_providers(
    r: &mut Diagnostics,
    doc: &Document,
    own_registries: &HashSet<String>,
) -> Vec<Provider> {
    let Some(c) = &doc.credential_provider_config else {
        return Vec::new();
    };
    let providers = compile(r, c);
    for p in &providers {
        let mut served: Vec<&str> = own_registries
            .iter()
            .map(String::as_str)
            .filter(|h| p.serves(h))
            .collect();
        served.sort_unstable();
        r.push(
            Severity::Note,
            c.pos,
            "credentialProviderConfig",
            format!(
                "credential provider {} serves images matching {}{}",
                p.name,
                p.match_images.join(", "),
                match served.is_empty() {
                    true => String::new(),
                    false => format!("; of the policy's registries: {}", served.join(", ")),
                }
            ),
            Some("serve runs it from --image-credential-provider-bin-dir for registries without credentials of their own".into()),
        );
    }
    providers
}

/// The providers of a kubelet `CredentialProviderConfig`, validated as the kubelet does.
fn compile(r: &mut Diagnostics, c: &ProviderConfigDoc) -> Vec<Provider> {
    check_header(r, c);
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, p) in c.providers.iter().enumerate() {
        let path = format!("{PATH}.providers[{i}]");
        let before = r.list.len();
        let name = provider_name(r, p, &path, &mut names);
        let duration = check_provider(r, p, &path);
        if let Some(pos) = p.token_attributes {
            r.warning(
                pos,
                &format!("{path}.tokenAttributes"),
                "this provider needs the pulling Pod's service account token, which only the kubelet has; the webhook does not use it",
                None,
            );
            continue;
        }
        if r.errors_since(before) {
            continue;
        }
        let (Some(name), Some(duration), Some(api_version)) =
            (name, duration, p.api_version.as_ref())
        else {
            continue;
        };
        out.push(Provider {
            name,
            match_images: p.match_images.iter().map(|m| m.value.clone()).collect(),
            default_cache_duration: duration,
            api_version: api_version.value.clone(),
            args: p.args.iter().map(|a| a.value.clone()).collect(),
            env: p
                .env
                .iter()
                .map(|(n, v)| (n.value.clone(), v.value.clone()))
                .collect(),
        });
    }
    out
}

const PATH: &str = "credentialProviderConfig";

fn check_header(r: &mut Diagnostics, c: &ProviderConfigDoc) {
    match &c.api_version {
        Some(v) if CONFIG_API_VERSIONS.contains(&v.value.as_str()) => {}
        Some(v) => r.error_hint(
            v.pos,
            &format!("{PATH}.apiVersion"),
            format!("unknown apiVersion `{}`", v.value),
            Some(format!("one of {}", CONFIG_API_VERSIONS.join(", "))),
        ),
        None => r.error(
            c.pos,
            PATH,
            "apiVersion is required (kubelet.config.k8s.io/v1)",
        ),
    }
    match &c.kind {
        Some(k) if k.value == "CredentialProviderConfig" => {}
        Some(k) => r.error(
            k.pos,
            &format!("{PATH}.kind"),
            format!("kind `{}` is not CredentialProviderConfig", k.value),
        ),
        None => r.error(c.pos, PATH, "kind is required (CredentialProviderConfig)"),
    }
    if c.providers.is_empty() {
        r.error(c.pos, PATH, "at least one provider is required");
    }
}

/// The plugin's file name: unique, and no path.
fn provider_name(
    r: &mut Diagnostics,
    p: &ProviderDoc,
    path: &str,
    names: &mut HashSet<String>,
) -> Option<String> {
    let at = format!("{path}.name");
    let Some(n) = &p.name else {
        r.error(p.pos, path, "name is required");
        return None;
    };
    let v = n.value.as_str();
    if v.is_empty() || v.contains(['/', '\\']) || v == "." || v == ".." {
        r.error(n.pos, &at, format!("`{v}` is not a plugin file name"));
        return None;
    }
    if !names.insert(v.to_owned()) {
        r.error(n.pos, &at, format!("duplicate provider name `{v}`"));
        return None;
    }
    Some(v.to_owned())
}

/// `matchImages`, `apiVersion` and `defaultCacheDuration`, which is returned.
fn check_provider(r: &mut Diagnostics, p: &ProviderDoc, path: &str) -> Option<std::time::Duration> {
    if p.match_images.is_empty() {
        r.error(
            p.pos,
            &format!("{path}.matchImages"),
            "at least one matchImages entry is required",
        );
    }
    for m in &p.match_images {
        if m.value.is_empty() || m.value.contains(char::is_whitespace) {
            r.error(
                m.pos,
                &format!("{path}.matchImages"),
                format!("`{}` is not an image pattern", m.value),
            );
        }
    }
    match &p.api_version {
        Some(v) if PLUGIN_API_VERSIONS.contains(&v.value.as_str()) => {}
        Some(v) => r.error(
            v.pos,
            &format!("{path}.apiVersion"),
            format!(
                "unknown plugin apiVersion `{}` (one of {})",
                v.value,
                PLUGIN_API_VERSIONS.join(", ")
            ),
        ),
        None => r.error(
            p.pos,
            path,
            "apiVersion is required (credentialprovider.kubelet.k8s.io/v1)",
        ),
    }
    let Some(d) = &p.default_cache_duration else {
        r.error(p.pos, path, "defaultCacheDuration is required");
        return None;
    };
    crate::duration::parse(&d.value)
        .map_err(|e| {
            r.error(
                d.pos,
                &format!("{path}.defaultCacheDuration"),
                e.to_string(),
            )
        })
        .ok()
}
