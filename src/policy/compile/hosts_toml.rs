//! containerd's `certs.d/<host>/hosts.toml` into `Sources` entries, as containerd's
//! `core/remotes/docker/config/hosts.go` reads them: hosts in file order, then `server`; each
//! host's API root from its URL (`/v2` appended unless `override_path`); capabilities deciding
//! which pulls may use it.

use super::Parts;
use crate::policy::diagnostics::Diagnostics;
use crate::policy::document::{HostEntryDoc, HostsDoc};
use crate::policy::sources::{PullFrom, SourceEndpoint, SourceRegistry};
use crate::policy::{RegistryConfig, Severity};
use crate::reference::{canonical_host, is_domain};

/// Where containerd keeps the files; relative `ca` and `client` paths are read from here.
const CONFIG_PATH: &str = "/etc/containerd/certs.d";

pub(super) fn compile(d: &mut Diagnostics, docs: &[HostsDoc], parts: &mut Parts) {
    for doc in docs {
        let dir = &doc.dir.value;
        if dir.starts_with('.') {
            d.warning(
                doc.dir.pos,
                "certs.d",
                format!("`{dir}` is a domain directory of newer containerd releases, which the webhook does not read"),
                Some("name the registry's own directory (host or host_port_), or use _default".into()),
            );
            continue;
        }
        let registry = match dir.as_str() {
            "_default" => None,
            _ => match registry_of(dir) {
                Some(r) => Some(r),
                None => {
                    d.error_hint(
                        doc.dir.pos,
                        "certs.d",
                        format!("`{dir}` is not a registry directory name"),
                        Some("name it host, host_port_ (for host:port) or _default, as under /etc/containerd/certs.d".into()),
                    );
                    continue;
                }
            },
        };
        let before = d.list.len();
        let entry = entry(d, doc, registry.as_deref().unwrap_or_default(), parts);
        if d.errors_since(before) {
            continue;
        }
        match registry {
            // containerd tries `host_port_` before `host:port`: that one wins whatever the order.
            Some(r) if dir.contains(':') && parts.sources.hosts.contains_key(&r) => d.warning(
                doc.dir.pos,
                "certs.d",
                format!("`{dir}` is never read: containerd finds the {r} directory written as host_port_ first"),
                None,
            ),
            Some(r) => {
                if parts.sources.hosts.insert(r.clone(), entry).is_some() {
                    d.warning(
                        doc.dir.pos,
                        "certs.d",
                        format!("`{dir}` is read instead of `{r}`: containerd tries host_port_ first"),
                        None,
                    );
                }
            }
            None => parts.sources.default_hosts = Some(entry),
        }
    }
}

/// `host_port_` is how containerd writes `host:port` in a directory name.
fn registry_of(dir: &str) -> Option<String> {
    let name = match dir.strip_suffix('_').and_then(|d| d.rsplit_once('_')) {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{host}:{port}")
        }
        _ => dir.to_owned(),
    };
    // Not canonicalised: containerd looks up `docker.io`, never `registry-1.docker.io`.
    is_domain(&name).then_some(name)
}

fn entry(d: &mut Diagnostics, doc: &HostsDoc, registry: &str, parts: &mut Parts) -> SourceRegistry {
    let file = format!("certs.d[{}]", doc.dir.value);
    let mut mirrors = Vec::new();
    for h in &doc.hosts {
        let origin = format!("{file} host.\"{}\"", h.url.value);
        if let Some(e) = endpoint(d, &origin, h, &h.url.value, &doc.dir.value, parts) {
            mirrors.push(e);
        }
    }
    let server_origin = format!("{file} server");
    let primary = match &doc.server {
        Some(s) => endpoint(
            d,
            &server_origin,
            &doc.server_host,
            &s.value,
            &doc.dir.value,
            parts,
        ),
        // No server: the registry itself, with every capability.
        None => Some(SourceEndpoint {
            location: registry.to_owned(),
            origin: file.clone(),
            pos: doc.dir.pos,
            ..SourceEndpoint::default()
        }),
    };
    let primary = primary.unwrap_or_else(|| SourceEndpoint {
        location: registry.to_owned(),
        pull_from: PullFrom::Never,
        origin: format!("{file} server"),
        pos: doc.dir.pos,
        ..SourceEndpoint::default()
    });
    SourceRegistry {
        prefix: registry.to_owned(),
        endpoint: primary,
        mirrors,
        blocked: false,
        mirror_by_digest_only: false,
    }
}

/// One host (or the server) as the image reference that reaches the same API root, or `None`
/// with a warning when no reference can.
fn endpoint(
    d: &mut Diagnostics,
    origin: &str,
    h: &HostEntryDoc,
    raw: &str,
    dir: &str,
    parts: &mut Parts,
) -> Option<SourceEndpoint> {
    let pull_from = capabilities(d, origin, h)?;
    let url = if raw.starts_with("http") {
        raw.to_owned()
    } else {
        format!("https://{raw}")
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        d.error(h.url.pos, origin, format!("unable to parse server {raw}"));
        return None;
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if !is_domain(host) || !matches!(scheme, "http" | "https") {
        d.error(
            h.url.pos,
            origin,
            format!(
                "unable to parse server {raw}: `{host}` is not a host[:port] with http or https"
            ),
        );
        return None;
    }
    let root = api_root(path, h.override_path);
    let location = match root.strip_prefix("/v2") {
        Some("") => canonical_host(host).to_owned(),
        Some(ns) if ns.starts_with('/') => format!("{}{ns}", canonical_host(host)),
        _ => {
            d.warning(
                h.url.pos,
                origin,
                format!("API root {scheme}://{host}{root} cannot be written as an image reference, so admission passes this host over (the node would still try it)"),
                Some(if h.override_path {
                    "with override_path the path must be /v2 or /v2/<namespace>".into()
                } else {
                    "a path is an API root of its own: add override_path = true and write the path as /v2/<namespace>".into()
                }),
            );
            return None;
        }
    };
    let bare = canonical_host(host).to_owned();
    if scheme == "http" {
        parts.http.insert(bare.clone());
    }
    if h.skip_verify == Some(true) {
        parts.insecure.insert(bare.clone());
    }
    tls(&mut parts.configs, &bare, h, dir);
    headers(d, &mut parts.configs, &bare, h, origin);
    Some(SourceEndpoint {
        location,
        insecure: scheme == "http" || h.skip_verify == Some(true),
        pull_from,
        origin: origin.to_owned(),
        pos: h.url.pos,
    })
}

/// `path.Clean`, then `/v2` appended unless it is there or `override_path` says the path is the root.
fn api_root(path: &str, override_path: bool) -> String {
    let clean = path
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .fold(String::new(), |acc, s| format!("{acc}/{s}"));
    if !override_path && !clean.ends_with("/v2") {
        format!("{clean}/v2")
    } else {
        clean
    }
}

/// A tag needs `pull` and `resolve`; a digest only `pull`. No capabilities means all.
fn capabilities(d: &mut Diagnostics, origin: &str, h: &HostEntryDoc) -> Option<PullFrom> {
    let Some(caps) = &h.capabilities else {
        return Some(PullFrom::All);
    };
    let (mut pull, mut resolve) = (false, false);
    for c in caps {
        match c.value.to_ascii_lowercase().as_str() {
            "pull" => pull = true,
            "resolve" => resolve = true,
            "push" | "referrers" => {}
            other => {
                d.error_hint(
                    c.pos,
                    origin,
                    format!("unknown capability {other}: containerd refuses the file, logs it and drops every mirror in it"),
                    Some("use pull, resolve, push or referrers".into()),
                );
                return None;
            }
        }
    }
    match (pull, resolve) {
        (true, true) => Some(PullFrom::All),
        (true, false) => Some(PullFrom::DigestOnly),
        _ => {
            d.push(
                Severity::Note,
                h.url.pos,
                origin,
                "without the pull capability this host serves no pull; admission passes it over",
                None,
            );
            Some(PullFrom::Never)
        }
    }
}

/// `ca` and `client` become the host's TLS for verify, unless `configs` names its own. Relative
/// paths are the host directory's, as containerd reads them.
fn tls(
    configs: &mut std::collections::HashMap<String, RegistryConfig>,
    host: &str,
    h: &HostEntryDoc,
    dir: &str,
) {
    let absolute = |p: &str| {
        if p.starts_with('/') {
            p.to_owned()
        } else {
            format!("{CONFIG_PATH}/{dir}/{p}")
        }
    };
    if h.ca.is_empty() && h.client.is_empty() && h.skip_verify.is_none() {
        return;
    }
    let config = configs.entry(host.to_owned()).or_default();
    if config.tls.ca_file.is_none() {
        config.tls.ca_file = h.ca.first().map(|c| absolute(&c.value));
    }
    if config.tls.cert_file.is_none() {
        config.tls.cert_file = h.client.first().map(|c| absolute(&c.value));
        config.tls.key_file = h.client.get(1).map(|c| absolute(&c.value));
    }
    if h.skip_verify == Some(true) {
        config.tls.insecure_skip_verify = true;
    }
}

/// `[header]`: sent by verify with each request to the host, its token requests included, as
/// containerd sends them. A name or value HTTP cannot carry is an error.
fn headers(
    d: &mut Diagnostics,
    configs: &mut std::collections::HashMap<String, RegistryConfig>,
    host: &str,
    h: &HostEntryDoc,
    origin: &str,
) {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let mut valid = Vec::new();
    for (name, values) in &h.header {
        if name.value.is_empty() || !name.value.bytes().all(token) {
            d.error(
                name.pos,
                origin,
                format!("`{}` is not a valid header name", name.value),
            );
            continue;
        }
        for v in values {
            if v.bytes().any(|b| b < b' ' && b != b'\t' || b == 0x7f) {
                d.error(
                    name.pos,
                    origin,
                    format!("header {} has a value HTTP cannot carry", name.value),
                );
                continue;
            }
            valid.push((
                name.value.clone(),
                crate::redacted::Redacted::new(v.clone()),
            ));
        }
    }
    if !valid.is_empty() {
        configs
            .entry(host.to_owned())
            .or_default()
            .headers
            .extend(valid);
    }
}
