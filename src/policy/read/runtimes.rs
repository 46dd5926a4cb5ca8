//! The runtimes' own files, pasted as they are on a node: containers-registries.conf(5)
//! (`registries.conf`, `registries.conf.d`) and containerd's hosts.toml (`certs.d`).

use toml_edit::{Item, TableLike};

use super::super::document::*;
use super::toml::Toml;
use super::Reader;
use crate::yaml::Node;

const V2_KEYS: &[&str] = &[
    "registry",
    "unqualified-search-registries",
    "credential-helpers",
    "short-name-mode",
    "additional-layer-store-auth-helper",
    "aliases",
    "registries",
];
const REGISTRY_KEYS: &[&str] = &[
    "prefix",
    "location",
    "insecure",
    "blocked",
    "mirror-by-digest-only",
    "pull-from-mirror",
    "mirror",
];
const MIRROR_KEYS: &[&str] = &["location", "insecure", "pull-from-mirror"];
const V1_KEYS: &[&str] = &["search", "insecure", "block"];
const HOST_KEYS: &[&str] = &[
    "capabilities",
    "skip_verify",
    "override_path",
    "ca",
    "client",
    "header",
    "dial_timeout",
    "dial_addr",
];

/// `registries.conf: |` and its text.
pub(super) fn read_registries_conf(
    r: &mut Reader,
    node: &Node,
    file: String,
) -> Option<RegistriesConfDoc> {
    let (mut t, doc) = Toml::parse(r, node, file.clone(), "registries.conf")?;
    let mut out = RegistriesConfDoc {
        file,
        ..RegistriesConfDoc::default()
    };
    for (key, pos, item) in t.entries(doc.as_table()) {
        if key != "registries" {
            out.v2_at.get_or_insert(pos);
        }
        match key {
            "registry" => {
                for (i, (table, at)) in t.tables(item, key).into_iter().enumerate() {
                    out.registries.push(read_registry(&mut t, table, at, i));
                }
            }
            "unqualified-search-registries" => out.search = Some(t.strings(item, key, false)),
            "short-name-mode" => out.short_name_mode = t.string(item, key),
            "aliases" => out.aliases = read_aliases(&mut t, item),
            "registries" => out.v1 = Some(read_v1(&mut t, item, pos)),
            // Read by the node's credential code, not by pulls' routing.
            "credential-helpers" | "additional-layer-store-auth-helper" => {}
            _ => t.unknown(pos, key, "", V2_KEYS),
        }
    }
    Some(out)
}

fn read_registry(
    t: &mut Toml,
    table: &dyn TableLike,
    pos: crate::yaml::Pos,
    i: usize,
) -> SourceRegistryDoc {
    let path = format!("registry[{i}]");
    let mut reg = SourceRegistryDoc {
        pos,
        ..SourceRegistryDoc::default()
    };
    for (key, kpos, item) in t.entries(table) {
        let at = format!("{path}.{key}");
        match key {
            "prefix" => reg.prefix = t.string(item, &at),
            "location" => reg.location = t.string(item, &at),
            "insecure" => reg.insecure = t.bool(item, &at).unwrap_or_default(),
            "blocked" => reg.blocked = t.bool(item, &at).unwrap_or_default(),
            "mirror-by-digest-only" => {
                reg.mirror_by_digest_only = t.bool(item, &at).unwrap_or_default()
            }
            "pull-from-mirror" => reg.pull_from_mirror = t.string(item, &at),
            "mirror" => {
                for (j, (m, mpos)) in t.tables(item, &at).into_iter().enumerate() {
                    reg.mirrors
                        .push(read_mirror(t, m, mpos, &format!("{at}[{j}]")));
                }
            }
            _ => t.unknown(kpos, key, &path, REGISTRY_KEYS),
        }
    }
    reg
}

fn read_mirror(
    t: &mut Toml,
    table: &dyn TableLike,
    pos: crate::yaml::Pos,
    path: &str,
) -> SourceMirrorDoc {
    let mut m = SourceMirrorDoc {
        pos,
        ..SourceMirrorDoc::default()
    };
    for (key, kpos, item) in t.entries(table) {
        let at = format!("{path}.{key}");
        match key {
            "location" => m.location = t.string(item, &at),
            "insecure" => m.insecure = t.bool(item, &at).unwrap_or_default(),
            "pull-from-mirror" => m.pull_from_mirror = t.string(item, &at),
            _ => t.unknown(kpos, key, path, MIRROR_KEYS),
        }
    }
    m
}

fn read_aliases(t: &mut Toml, item: &Item) -> Vec<(Spanned<String>, Spanned<String>)> {
    let Some(table) = item.as_table_like() else {
        let pos = t.item_at(item);
        t.error(
            pos,
            "aliases",
            "expected a table of short name = \"registry/repository\"",
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, pos, value) in t.entries(table) {
        if let Some(v) = t.string(value, &format!("aliases.{key}")) {
            out.push((
                Spanned {
                    value: key.to_owned(),
                    pos,
                },
                v,
            ));
        }
    }
    out
}

fn read_v1(t: &mut Toml, item: &Item, pos: crate::yaml::Pos) -> V1Doc {
    let mut v1 = V1Doc {
        pos,
        ..V1Doc::default()
    };
    let Some(table) = item.as_table_like() else {
        t.error(pos, "registries", "expected the version 1 tables [registries.search], [registries.insecure], [registries.block]");
        return v1;
    };
    for (key, kpos, value) in t.entries(table) {
        let at = format!("registries.{key}");
        let Some(inner) = value.as_table_like() else {
            t.error(kpos, &at, "expected a table with `registries = [...]`");
            continue;
        };
        let list = inner
            .get("registries")
            .map(|l| t.strings(l, &format!("{at}.registries"), false))
            .unwrap_or_default();
        match key {
            "search" => v1.search = list,
            "insecure" => v1.insecure = list,
            "block" => v1.block = list,
            _ => t.unknown(kpos, key, "registries", V1_KEYS),
        }
    }
    v1
}

/// One directory's hosts.toml.
pub(super) fn read_hosts(r: &mut Reader, dir: Spanned<String>, node: &Node) -> Option<HostsDoc> {
    let file = format!("certs.d[{}]", dir.value);
    let (mut t, doc) = Toml::parse(r, node, file, "hosts.toml")?;
    let mut out = HostsDoc {
        server_host: HostEntryDoc {
            url: Spanned {
                value: String::new(),
                pos: node.pos,
            },
            ..HostEntryDoc::default()
        },
        dir,
        ..HostsDoc::default()
    };
    for (key, pos, item) in t.entries(doc.as_table()) {
        match key {
            "server" => out.server = t.string(item, key),
            "host" => {
                let Some(table) = item.as_table_like() else {
                    t.error(pos, key, "expected [host.\"https://...\"] tables");
                    continue;
                };
                for (url, upos, host) in t.entries(table) {
                    let at = format!("host.\"{url}\"");
                    let Some(h) = host.as_table_like() else {
                        t.error(upos, &at, "expected a table");
                        continue;
                    };
                    let mut entry = HostEntryDoc {
                        url: Spanned {
                            value: url.to_owned(),
                            pos: upos,
                        },
                        ..HostEntryDoc::default()
                    };
                    read_host_keys(&mut t, h, &at, &mut entry);
                    out.hosts.push(entry);
                }
            }
            _ if HOST_KEYS.contains(&key) => {
                let mut top = std::mem::take(&mut out.server_host);
                read_host_key(&mut t, key, pos, item, "", &mut top);
                out.server_host = top;
            }
            _ => t.unknown(pos, key, "", &[&["server", "host"], HOST_KEYS].concat()),
        }
    }
    if let Some(s) = &out.server {
        out.server_host.url = s.clone();
    }
    Some(out)
}

fn read_host_keys(t: &mut Toml, table: &dyn TableLike, path: &str, entry: &mut HostEntryDoc) {
    for (key, pos, item) in t.entries(table) {
        read_host_key(t, key, pos, item, path, entry);
    }
}

fn read_host_key(
    t: &mut Toml,
    key: &str,
    pos: crate::yaml::Pos,
    item: &Item,
    path: &str,
    entry: &mut HostEntryDoc,
) {
    let at = if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    };
    match key {
        "capabilities" => entry.capabilities = Some(t.strings(item, &at, false)),
        "skip_verify" => entry.skip_verify = t.bool(item, &at),
        "override_path" => entry.override_path = t.bool(item, &at).unwrap_or_default(),
        "ca" => entry.ca = t.strings(item, &at, true),
        "client" => entry.client = read_client(t, item, &at),
        "header" => {
            let Some(table) = item.as_table_like() else {
                t.error(pos, &at, "expected a table of header = value or [values]");
                return;
            };
            for (name, hpos, value) in t.entries(table) {
                let values = t.strings(value, &format!("{at}.{name}"), true);
                entry.header.push((
                    Spanned {
                        value: name.to_owned(),
                        pos: hpos,
                    },
                    values.into_iter().map(|v| v.value).collect(),
                ));
            }
        }
        "dial_timeout" | "dial_addr" => {}
        _ => t.unknown(pos, key, path, HOST_KEYS),
    }
}

/// `client`: a path, a list of paths, or a list of `[cert, key]` pairs.
fn read_client(t: &mut Toml, item: &Item, at: &str) -> Vec<Spanned<String>> {
    if let Some(array) = item.as_array() {
        if array.iter().any(|v| v.as_array().is_some()) {
            let pos = t.item_at(item);
            return array
                .iter()
                .filter_map(|v| v.as_array())
                .flat_map(|pair| pair.iter().filter_map(|p| p.as_str()))
                .map(|p| Spanned {
                    value: p.to_owned(),
                    pos,
                })
                .collect();
        }
    }
    t.strings(item, at, true)
}

/// `registries.conf.d`: drop-ins by file name, read in name order as the directory is; only
/// `*.conf` files count, as on the node.
pub(super) fn read_drop_ins(r: &mut Reader, node: &Node) -> Vec<RegistriesConfDoc> {
    let mut files = Vec::new();
    for (k, v) in r.map(node, "registries.conf.d") {
        let Some(name) = r.string(k, "registries.conf.d") else {
            continue;
        };
        if !name.value.ends_with(".conf") || name.value.contains('/') {
            r.warning(
                name.pos,
                "registries.conf.d",
                format!(
                    "`{}` is skipped: the node reads only *.conf files of the directory itself",
                    name.value
                ),
                None,
            );
            continue;
        }
        let file = format!("registries.conf.d/{}", name.value);
        files.extend(read_registries_conf(r, v, file));
    }
    files.sort_by(|a, b| a.file.cmp(&b.file));
    files
}

/// `certs.d: {<directory>: <hosts.toml text>}`.
pub(super) fn read_certs_d(r: &mut Reader, node: &Node) -> Vec<HostsDoc> {
    let mut out = Vec::new();
    for (k, v) in r.map(node, "certs.d") {
        if let Some(dir) = r.string(k, "certs.d") {
            out.extend(read_hosts(r, dir, v));
        }
    }
    out
}

/// `unpullable: refuse | warn`; `Some(true)` for warn.
pub(super) fn read_unpullable(r: &mut Reader, node: &Node) -> Option<bool> {
    let s = r.string(node, "unpullable")?;
    match s.value.as_str() {
        "refuse" => Some(false),
        "warn" => Some(true),
        _ => {
            r.error_hint(
                s.pos,
                "unpullable",
                format!("unknown value `{}`", s.value),
                Some("use refuse (the default) or warn".into()),
            );
            None
        }
    }
}
