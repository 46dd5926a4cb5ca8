//! RKE `private_registries`: credentials, `ecrCredentialPlugin` and the `is_default` registry
//! (and this product's `defaultRegistry`).

use super::configs::plain_text_warning;
use super::Parts;
use crate::policy::diagnostics::Diagnostics;
use crate::policy::document::{Document, EcrPluginDoc, PrivateRegistryDoc, Spanned};
use crate::policy::endpoint::reads_as_registry;
use crate::policy::{AwsKeys, Credentials, DefaultRegistry, EcrSource, Severity};
use crate::reference::{Reference, DOCKER_HUB};
use crate::yaml::Pos;

/// Reads the entries into `parts`; returns where each registry host is written (with the
/// `configs` keys), for the notes on its ECR tokens.
pub(super) fn private_registries(
    r: &mut Diagnostics,
    doc: &Document,
    parts: &mut Parts,
) -> Vec<(String, Pos)> {
    let mut written_hosts: Vec<(String, Pos)> = doc
        .configs
        .iter()
        .map(|c| (c.key.value.clone(), c.key.pos))
        .collect();
    for (i, reg) in doc.private_registries.iter().enumerate() {
        let path = format!("private_registries[{i}]");
        let url = match &reg.url {
            Some(u) => strip_scheme(r, u, &format!("{path}.url")),
            None => DOCKER_HUB.to_owned(),
        };
        if let Some(p) = &reg.password {
            plain_text_warning(r, p.pos, &format!("{path}.password"));
        }
        let host = url.split('/').next().unwrap_or_default().to_owned();
        if let Some(u) = &reg.url {
            written_hosts.push((host.clone(), u.pos));
        }
        credentials(r, reg, &host, &path, parts);
        if reg.is_default && parts.default_registry.is_none() {
            let pos = reg.url.as_ref().map_or(reg.pos, |u| u.pos);
            parts.default_registry = compile_default(r, &url, pos, &path);
        }
    }
    written_hosts
}

/// An entry's user and password, or its ECR plugin, as the registry's credentials.
fn credentials(
    r: &mut Diagnostics,
    reg: &PrivateRegistryDoc,
    host: &str,
    path: &str,
    parts: &mut Parts,
) {
    if let Some(plugin) = &reg.ecr_plugin {
        let source = ecr_plugin_source(r, plugin, host, &format!("{path}.ecrCredentialPlugin"));
        if let Some(source) = source {
            let entry = parts.configs.entry(host.to_owned()).or_default();
            entry.ecr.get_or_insert(source);
        }
    } else if crate::ecr::parse_host(host).is_some() {
        // RKE's instance-profile form: the node's (here, the webhook's) own AWS identity.
        parts.configs.entry(host.to_owned()).or_default();
    }
    if reg.user.is_some() || reg.password.is_some() {
        let entry = parts.configs.entry(host.to_owned()).or_default();
        if entry.credentials.is_some() || entry.credentials_secret.is_some() {
            r.push(
                Severity::Note,
                reg.url.as_ref().map_or(reg.pos, |u| u.pos),
                path,
                format!("configs[{host}] has credentials too; they win over this entry's user and password"),
                None,
            );
        }
        if entry.credentials.is_none() {
            entry.credentials = Some(Credentials {
                username: reg.user.as_ref().map(|u| u.value.clone()),
                password: reg.password.as_ref().map(|p| p.value.clone()),
                ..Credentials::default()
            });
        }
    }
}

/// `defaultRegistry`, which wins over an `is_default` entry.
pub(super) fn default_registry(r: &mut Diagnostics, doc: &Document, parts: &mut Parts) {
    let Some(d) = &doc.default_registry else {
        return;
    };
    let url = strip_scheme(r, d, "defaultRegistry");
    if parts.default_registry.is_some() {
        r.push(
            Severity::Warning,
            d.pos,
            "defaultRegistry",
            "both defaultRegistry and a private_registries entry with is_default are set; defaultRegistry wins",
            None,
        );
    }
    parts.default_registry = compile_default(r, &url, d.pos, "defaultRegistry");
}

fn strip_scheme(r: &mut Diagnostics, url: &Spanned<String>, path: &str) -> String {
    let v = url.value.trim_end_matches('/');
    for scheme in ["https://", "http://"] {
        if let Some(rest) = v.strip_prefix(scheme) {
            r.push(
                Severity::Warning,
                url.pos,
                path,
                format!("`{scheme}` is dropped: image references carry no scheme"),
                Some(format!("write `{rest}`")),
            );
            return rest.to_owned();
        }
    }
    v.to_owned()
}

fn compile_default(
    r: &mut Diagnostics,
    url: &str,
    pos: Pos,
    rule: &str,
) -> Option<DefaultRegistry> {
    let host = url.split('/').next().unwrap_or_default();
    if !reads_as_registry(host) {
        r.push(
            Severity::Error,
            pos,
            rule,
            format!("`{url}` does not read as a registry: `{url}/nginx` means docker.io/{url}/nginx, which would be rewritten again on every pass"),
            Some("name the registry with a dot or a port, e.g. `registry.local` or `registry:5000`".into()),
        );
        return None;
    }
    let valid = Reference::parse(&format!("{url}/x")).is_ok_and(|r| r.domain() == host);
    if !valid {
        r.push(
            Severity::Error,
            pos,
            rule,
            format!("`{url}` is not a registry host with an optional lower-case path"),
            None,
        );
        return None;
    }
    if url == DOCKER_HUB {
        // Docker Hub as the default changes nothing an image says.
        return None;
    }
    Some(DefaultRegistry {
        prefix: url.to_owned(),
        host: host.to_owned(),
        rule: rule.to_owned(),
    })
}

/// RKE's `ecrCredentialPlugin` for the registry `host`: its keys, or the webhook's own identity
/// when it names none.
fn ecr_plugin_source(
    r: &mut Diagnostics,
    plugin: &EcrPluginDoc,
    host: &str,
    path: &str,
) -> Option<EcrSource> {
    let Some(registry) = crate::ecr::parse_host(host) else {
        r.push(
            Severity::Warning,
            plugin.pos,
            path,
            format!("`{host}` is not an ECR registry, so no ECR token is fetched for it"),
            Some("the url must read <12-digit account>.dkr.ecr.<region>.amazonaws.com".into()),
        );
        return None;
    };
    if let Some(secret) = &plugin.secret_access_key {
        r.push(
            Severity::Warning,
            secret.pos,
            path,
            "plain-text AWS keys in the policy",
            Some("drop the keys to use the webhook's own AWS identity (IRSA or EKS Pod Identity on its service account)".into()),
        );
    }
    let keys = match (&plugin.access_key_id, &plugin.secret_access_key) {
        (Some(id), Some(secret)) => Some(AwsKeys {
            access_key_id: id.value.clone(),
            secret_access_key: secret.value.clone(),
            session_token: plugin.session_token.as_ref().map(|t| t.value.clone()),
        }),
        (None, None) => None,
        _ => {
            r.error(
                plugin.pos,
                path,
                "aws_access_key_id and aws_secret_access_key go together",
            );
            return None;
        }
    };
    Some(EcrSource { registry, keys })
}
