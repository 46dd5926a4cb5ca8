//! K3s `configs`: credentials, TLS and Secret names per registry host.

use std::collections::HashSet;

use super::Parts;
use crate::names::is_dns_subdomain;
use crate::policy::diagnostics::{edit_distance, Diagnostics};
use crate::policy::document::{ConfigDoc, Document, Spanned};
use crate::policy::{Credentials, RegistryConfig, Severity, Tls};
use crate::reference::is_domain;
use crate::yaml::Pos;

pub(super) fn configs(r: &mut Diagnostics, doc: &Document, parts: &mut Parts) {
    // Hosts images are pulled from: the K3s and Anthos endpoints, and the runtime files' sources.
    let mut endpoint_hosts = parts.endpoint_hosts();
    endpoint_hosts.extend(parts.sources.location_hosts());
    for c in &doc.configs {
        let key = c.key.value.as_str();
        let path = format!("configs[{key}]");
        let key_ok = key == "*" || is_domain(key);
        if !key_ok {
            r.error(
                c.key.pos,
                &path,
                "a configs key is a registry host[:port] or \"*\"",
            );
        } else if key != "*" && !endpoint_hosts.contains(key) && !parts.mirrors.contains_key(key) {
            note_unmatched(r, c, &path, &endpoint_hosts);
        }
        let config = config_of(r, c, &path);
        if !key_ok {
            continue;
        }
        if config.tls.insecure_skip_verify || config.tls.ca_file.is_some() {
            parts.insecure.insert(key.to_owned());
        }
        if key == "*" {
            parts.wildcard_config = Some(config);
        } else {
            merge_config(parts.configs.entry(key.to_owned()).or_default(), config);
        }
    }
}

/// A key that names no endpoint is most often a typo for one.
fn note_unmatched(
    r: &mut Diagnostics,
    c: &ConfigDoc,
    path: &str,
    endpoint_hosts: &HashSet<String>,
) {
    let key = c.key.value.as_str();
    let near = endpoint_hosts
        .iter()
        .filter(|h| similar_hosts(key, h))
        .min_by_key(|h| edit_distance(key, h));
    let (message, hint) = match near {
        Some(h) => (
            format!("matches no mirror endpoint; the endpoint `{h}` gets no credentials or TLS settings from it"),
            Some(format!("did you mean `{h}`? configs are looked up by the endpoint host")),
        ),
        None => (
            "matches no mirror endpoint; it applies only to images pulled from it directly".into(),
            None,
        ),
    };
    r.push(Severity::Warning, c.key.pos, path, message, hint);
}

fn config_of(r: &mut Diagnostics, c: &ConfigDoc, path: &str) -> RegistryConfig {
    let mut config = RegistryConfig::default();
    if let Some(a) = &c.auth {
        if let Some(p) = a
            .password
            .as_ref()
            .or(a.auth.as_ref())
            .or(a.identity_token.as_ref())
        {
            plain_text_warning(r, p.pos, &format!("{path}.auth"));
        }
        config.credentials = Some(Credentials {
            username: a.username.as_ref().map(|u| u.value.clone()),
            password: a.password.as_ref().map(|p| p.value.clone()),
            auth: a.auth.as_ref().map(|p| p.value.clone()),
            identity_token: a.identity_token.as_ref().map(|p| p.value.clone()),
        });
    }
    let span = |s: &Option<Spanned<String>>| s.as_ref().map(|s| s.value.clone());
    config.tls = Tls {
        ca_file: span(&c.tls.ca_file),
        cert_file: span(&c.tls.cert_file),
        key_file: span(&c.tls.key_file),
        insecure_skip_verify: c.tls.insecure_skip_verify,
    };
    if c.tls.cert_file.is_some() != c.tls.key_file.is_some() {
        r.error(
            c.key.pos,
            &format!("{path}.tls"),
            "cert_file and key_file go together",
        );
    }
    config.credentials_secret = secret_name(
        r,
        &c.credentials_secret,
        &format!("{path}.credentialsSecret"),
    );
    if let (Some(p), true) = (
        &c.pull_secret,
        c.auth.is_some() || c.credentials_secret.is_some(),
    ) {
        r.push(
            Severity::Warning,
            p.pos,
            &format!("{path}.pullSecret"),
            "both pullSecret and credentials are set; pullSecret is attached and no managed Secret is made",
            None,
        );
    }
    config.pull_secret = secret_name(r, &c.pull_secret, &format!("{path}.pullSecret"));
    config
}

/// Two hosts a person could have meant as one: same port and a shared first label, or a small typo.
fn similar_hosts(a: &str, b: &str) -> bool {
    let split = |h: &str| -> (String, String) {
        let (name, port) = h.rsplit_once(':').unwrap_or((h, ""));
        (
            name.split('.').next().unwrap_or_default().to_owned(),
            port.to_owned(),
        )
    };
    let (la, pa) = split(a);
    let (lb, pb) = split(b);
    (la == lb && pa == pb) || edit_distance(a, b) <= 2
}

/// A Secret name from the policy, if it is a valid one; an error where it is not.
fn secret_name(r: &mut Diagnostics, name: &Option<Spanned<String>>, path: &str) -> Option<String> {
    let name = name.as_ref()?;
    if is_dns_subdomain(&name.value) {
        return Some(name.value.clone());
    }
    r.error(
        name.pos,
        path,
        format!(
            "`{}` is not a valid Secret name (lower-case letters, digits, `-` and `.`)",
            name.value
        ),
    );
    None
}

pub(super) fn plain_text_warning(r: &mut Diagnostics, pos: Pos, path: &str) {
    r.push(
        Severity::Warning,
        pos,
        path,
        "plain-text credential in the policy",
        Some("keep credentials in a Secret in the webhook's namespace and name it with configs.<host>.credentialsSecret".into()),
    );
}

fn merge_config(into: &mut RegistryConfig, from: RegistryConfig) {
    if from.credentials.is_some() {
        into.credentials = from.credentials;
    }
    if from.pull_secret.is_some() {
        into.pull_secret = from.pull_secret;
    }
    if from.credentials_secret.is_some() {
        into.credentials_secret = from.credentials_secret;
    }
    if from.ecr.is_some() {
        into.ecr = from.ecr;
    }
    if from.tls != Tls::default() {
        into.tls = from.tls;
    }
}
