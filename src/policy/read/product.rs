//! This product's own sections: serverless profiles, `verify`, and a kubelet
//! `CredentialProviderConfig`.

use super::keys::{ANNOTATION_KEYS, MATCH_KEYS};
use super::{join, Reader};
use crate::policy::document::*;
use crate::yaml::Node;

pub(super) fn read_provider_config(r: &mut Reader, node: &Node) -> ProviderConfigDoc {
    const PATH: &str = "credentialProviderConfig";
    let mut out = ProviderConfigDoc {
        pos: node.pos,
        ..ProviderConfigDoc::default()
    };
    for (k, v) in r.map(node, PATH) {
        let f = k.as_str().unwrap_or_default();
        let at = join(PATH, f);
        match f {
            "apiVersion" => out.api_version = r.string(v, &at),
            "kind" => out.kind = r.string(v, &at),
            "providers" => {
                for (i, item) in r.list(v, &at).iter().enumerate() {
                    out.providers
                        .push(read_provider(r, item, &format!("{at}[{i}]")));
                }
            }
            _ => r.unknown(k, PATH, &["apiVersion", "kind", "providers"]),
        }
    }
    out
}

fn read_provider(r: &mut Reader, node: &Node, path: &str) -> ProviderDoc {
    let mut p = ProviderDoc {
        pos: node.pos,
        ..ProviderDoc::default()
    };
    for (k, v) in r.map(node, path) {
        let f = k.as_str().unwrap_or_default();
        let at = join(path, f);
        match f {
            "name" => p.name = r.string(v, &at),
            "matchImages" => p.match_images = r.strings(v, &at),
            "defaultCacheDuration" => p.default_cache_duration = r.string(v, &at),
            "apiVersion" => p.api_version = r.string(v, &at),
            "args" => p.args = r.strings(v, &at),
            "env" => {
                for (i, e) in r.list(v, &at).iter().enumerate() {
                    let eat = format!("{at}[{i}]");
                    let (mut name, mut value) = (None, None);
                    for (ek, ev) in r.map(e, &eat) {
                        match ek.as_str().unwrap_or_default() {
                            "name" => name = r.string(ev, &join(&eat, "name")),
                            "value" => value = r.string(ev, &join(&eat, "value")),
                            _ => r.unknown(ek, &eat, &["name", "value"]),
                        }
                    }
                    match (name, value) {
                        (Some(n), Some(v)) => p.env.push((n, v)),
                        _ => r.error(e.pos, &eat, "an env entry needs a name and a value"),
                    }
                }
            }
            "tokenAttributes" => p.token_attributes = Some(k.pos),
            _ => r.unknown(
                k,
                path,
                &[
                    "name",
                    "matchImages",
                    "defaultCacheDuration",
                    "apiVersion",
                    "args",
                    "env",
                    "tokenAttributes",
                ],
            ),
        }
    }
    p
}

/// A serverless profile; `keys` are the ones this place allows (`kci` has no `match`, say).
pub(super) fn read_profile(r: &mut Reader, node: &Node, path: &str, keys: &[&str]) -> ProfileDoc {
    let mut p = ProfileDoc {
        pos: node.pos,
        ..ProfileDoc::default()
    };
    let pairs = |r: &mut Reader, v: &Node, at: &str| -> Vec<(Spanned<String>, Spanned<String>)> {
        r.map(v, at)
            .iter()
            .filter_map(|(k, v)| {
                let key = r.string(k, at)?;
                let value = r.string(v, &format!("{at}.{}", key.value))?;
                Some((key, value))
            })
            .collect()
    };
    for (k, v) in r.map(node, path) {
        let f = k.as_str().unwrap_or_default();
        let at = format!("{path}.{f}");
        let json = || {
            Some(Spanned {
                value: v.to_json(),
                pos: v.pos,
            })
        };
        if !keys.contains(&f) {
            r.unknown(k, path, keys);
            continue;
        }
        match f {
            "name" => p.name = r.string(v, &at),
            "enabled" => {
                // `enabled: true/false` reads naturally too: they mean always and never.
                p.enabled = match v.as_bool() {
                    Some(b) => Some(Spanned {
                        value: if b { "always" } else { "never" }.into(),
                        pos: v.pos,
                    }),
                    None => r.string(v, &at),
                }
            }
            "hostAliases" => p.host_aliases = json(),
            "dnsConfig" => p.dns_config = json(),
            "annotations" => {
                for (key, value) in pairs(r, v, &at) {
                    if ANNOTATION_KEYS.contains(&key.value.as_str()) {
                        p.annotations.push((key, value));
                    } else {
                        r.error(
                            key.pos,
                            &at,
                            format!(
                                "unknown key `{}`; use one of {}",
                                key.value,
                                ANNOTATION_KEYS.join(", ")
                            ),
                        );
                    }
                }
            }
            "match" => {
                for (mk, mv) in r.map(v, &at) {
                    let m = mk.as_str().unwrap_or_default();
                    let mat = format!("{at}.{m}");
                    match m {
                        "nodeSelector" => p.node_selector = pairs(r, mv, &mat),
                        "labels" => p.labels = pairs(r, mv, &mat),
                        "tolerations" => p.tolerations = r.strings(mv, &mat),
                        "nodeSelectorTolerations" => {
                            p.node_selector_tolerations = r.strings(mv, &mat)
                        }
                        _ => r.unknown(mk, &at, MATCH_KEYS),
                    }
                }
            }
            _ => r.unknown(k, path, keys),
        }
    }
    p
}

pub(super) fn read_verify(r: &mut Reader, node: &Node) -> VerifyDoc {
    let mut verify = VerifyDoc::default();
    for (k, v) in r.map(node, "verify") {
        let f = k.as_str().unwrap_or_default();
        let at = format!("verify.{f}");
        match f {
            "enabled" => verify.enabled = r.bool(v, &at),
            "timeout" => verify.timeout = r.string(v, &at),
            "cacheTTL" => verify.cache_ttl = r.string(v, &at),
            "negativeCacheTTL" => verify.negative_cache_ttl = r.string(v, &at),
            "pinDigest" => verify.pin_digest = r.bool(v, &at),
            _ => r.unknown(
                k,
                "verify",
                &[
                    "enabled",
                    "timeout",
                    "cacheTTL",
                    "negativeCacheTTL",
                    "pinDigest",
                ],
            ),
        }
    }
    verify
}
