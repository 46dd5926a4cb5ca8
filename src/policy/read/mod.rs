//! Reads the policy YAML into a `Document`, reporting every problem with its line and column.

mod keys;
mod mirror_sets;
mod product;
mod runtimes;
mod toml;

pub(super) use mirror_sets::cluster_mirror_sets;

use super::diagnostics::{closest, Diagnostics};
use super::document::*;
use super::Severity;
use crate::redacted::Redacted;
use crate::yaml::{self, Kind, Node};
use keys::{
    misplaced, slipped_field, ANTHOS_KEYS, AUTH_KEYS, CONFIG_KEYS, EXCLUDE_KEYS, MIRROR_KEYS,
    PROFILE_KEYS, PULL_SECRETS_KEYS, RKE_KEYS, TLS_KEYS, TOP_KEYS,
};
use product::{read_profile, read_provider_config, read_verify};

/// Walks the YAML tree, reporting what does not fit where it stands.
#[derive(Default)]
struct Reader<'t> {
    diags: Diagnostics,
    /// The policy text, for the places of the files pasted into it.
    source: &'t str,
}

impl std::ops::Deref for Reader<'_> {
    type Target = Diagnostics;
    fn deref(&self) -> &Diagnostics {
        &self.diags
    }
}

impl std::ops::DerefMut for Reader<'_> {
    fn deref_mut(&mut self) -> &mut Diagnostics {
        &mut self.diags
    }
}

impl Reader<'_> {
    /// The entries of a mapping; null counts as empty, anything else is an error.
    fn map<'a>(&mut self, node: &'a Node, path: &str) -> &'a [(Node, Node)] {
        match &node.kind {
            Kind::Map(entries) => entries,
            _ if node.is_null() => &[],
            _ => {
                self.error(
                    node.pos,
                    path,
                    format!("expected a mapping, found {}", node.type_name()),
                );
                &[]
            }
        }
    }

    fn list<'a>(&mut self, node: &'a Node, path: &str) -> &'a [Node] {
        match &node.kind {
            Kind::Seq(items) => items,
            _ if node.is_null() => &[],
            _ => {
                self.error(
                    node.pos,
                    path,
                    format!("expected a list, found {}", node.type_name()),
                );
                &[]
            }
        }
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<Spanned<String>> {
        match &node.kind {
            Kind::Scalar { .. } if node.is_null() => None,
            Kind::Scalar { value, .. } => Some(Spanned {
                value: value.clone(),
                pos: node.pos,
            }),
            _ => {
                self.error(
                    node.pos,
                    path,
                    format!("expected a string, found {}", node.type_name()),
                );
                None
            }
        }
    }

    fn secret(&mut self, node: &Node, path: &str) -> Option<Spanned<Redacted>> {
        self.string(node, path).map(|s| Spanned {
            value: Redacted::new(s.value),
            pos: s.pos,
        })
    }

    fn strings(&mut self, node: &Node, path: &str) -> Vec<Spanned<String>> {
        let items = self.list(node, path);
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.string(item, &format!("{path}[{i}]")))
            .collect()
    }

    fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        if node.is_null() {
            return None;
        }
        let b = node.as_bool();
        if b.is_none() {
            self.error(node.pos, path, "expected true or false");
        }
        b
    }

    fn unknown(&mut self, key: &Node, path: &str, known: &[&str]) {
        let name = key.as_str().unwrap_or_default();
        let hint = closest(name, known)
            .map(|k| format!("did you mean `{k}`?"))
            .or_else(|| misplaced(name, path));
        let at = join(path, name);
        self.push(
            Severity::Error,
            key.pos,
            &at,
            format!("unknown key `{name}`"),
            hint.or_else(|| Some(format!("known keys here: {}", known.join(", ")))),
        );
    }

    /// A map keyed by registry (`mirrors`, `configs`): each entry's name, value and path, a key
    /// that is one of the entries' `fields` (indented too little) reported and left out.
    fn registries<'n>(
        &mut self,
        node: &'n Node,
        map: &str,
        fields: &[&str],
    ) -> Vec<(Spanned<String>, &'n Node, String)> {
        let mut out = Vec::new();
        for (key, value) in self.map(node, map) {
            let Some(name) = self.string(key, map) else {
                continue;
            };
            if !self.slipped(key, &name.value, fields, map) {
                let path = format!("{map}[{}]", name.value);
                out.push((name, value, path));
            }
        }
        out
    }

    /// Reports a registry map's key that is one of its entries' `fields`, indented too little.
    fn slipped(&mut self, key: &Node, name: &str, fields: &[&str], map: &str) -> bool {
        let Some(hint) = slipped_field(name, fields, map) else {
            return false;
        };
        let message = format!("`{name}` is not a registry");
        self.error_hint(key.pos, map, message, Some(hint));
        true
    }

    fn ignored(&mut self, key: &Node, path: &str, what: &str) {
        let name = key.as_str().unwrap_or_default();
        self.push(
            Severity::Note,
            key.pos,
            &join(path, name),
            format!("{what} key, ignored: it has no effect at admission"),
            None,
        );
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Reads a policy text. `None` when the text is not YAML or not a mapping at all.
pub(super) fn read(text: &str) -> (Option<Document>, Diagnostics) {
    let mut r = Reader {
        diags: Diagnostics::default(),
        source: text,
    };
    let root = match yaml::parse_single(text) {
        Ok(root) => root,
        Err(e) => {
            r.push(
                Severity::Error,
                e.pos,
                "",
                format!("not valid YAML: {}", e.message),
                None,
            );
            return (None, r.diags);
        }
    };
    let mut doc = Document {
        // `{}` too: what a Helm chart renders from an empty map.
        empty: root.is_null() || matches!(&root.kind, Kind::Map(entries) if entries.is_empty()),
        ..Document::default()
    };
    if !root.is_null() && !matches!(root.kind, Kind::Map(_)) {
        r.error(
            root.pos,
            "",
            format!("a policy is a mapping, found {}", root.type_name()),
        );
        return (None, r.diags);
    }
    for (key, value) in r.map(&root, "") {
        read_key(&mut r, &mut doc, key, value);
    }
    (Some(doc), r.diags)
}

/// One top-level key into `doc`: a key of K3s, RKE or Anthos it knows, or of this product.
fn read_key(r: &mut Reader, doc: &mut Document, key: &Node, value: &Node) {
    let name = key.as_str().unwrap_or_default();
    match name {
        "mirrors" => doc.mirrors = read_mirrors(r, value),
        "configs" => doc.configs = read_configs(r, value),
        "private_registries" => doc.private_registries = read_private_registries(r, value),
        "registryMirrors" => doc.registry_mirrors = read_registry_mirrors(r, value),
        "defaultRegistry" => doc.default_registry = r.string(value, name),
        "exclude" => {
            for (k, v) in r.map(value, name) {
                match k.as_str().unwrap_or_default() {
                    "namespaces" => doc.exclude_namespaces = r.strings(v, "exclude.namespaces"),
                    "images" => doc.exclude_images = r.strings(v, "exclude.images"),
                    _ => r.unknown(k, name, EXCLUDE_KEYS),
                }
            }
        }
        "pullSecrets" => {
            for (k, v) in r.map(value, name) {
                match k.as_str().unwrap_or_default() {
                    "fromNamespace" => {
                        doc.pull_secrets_from_namespace = r.bool(v, "pullSecrets.fromNamespace")
                    }
                    _ => r.unknown(k, name, PULL_SECRETS_KEYS),
                }
            }
        }
        "kci" => doc.kci = read_profile(r, value, "kci", &["enabled", "hostAliases", "dnsConfig"]),
        "eci" => doc.eci = read_profile(r, value, "eci", &["enabled"]),
        "serverlessProfiles" => {
            doc.profiles = r
                .list(value, name)
                .iter()
                .enumerate()
                .map(|(i, p)| read_profile(r, p, &format!("serverlessProfiles[{i}]"), PROFILE_KEYS))
                .collect()
        }
        "verify" => doc.verify = read_verify(r, value),
        "annotateOriginal" => doc.annotate_original = r.bool(value, name),
        "warnings" => doc.warnings = r.bool(value, name),
        "credentialProviderConfig" => {
            doc.credential_provider_config = Some(read_provider_config(r, value))
        }
        "registries.conf" => {
            doc.registries_conf = runtimes::read_registries_conf(r, value, name.to_owned())
        }
        "registries.conf.d" => doc.registries_conf_d = runtimes::read_drop_ins(r, value),
        "certs.d" => doc.certs_d = runtimes::read_certs_d(r, value),
        "imageMirrorSets" => doc.mirror_sets = mirror_sets::read_mirror_sets(r, value, name),
        "unpullable" => doc.unpullable_warn = runtimes::read_unpullable(r, value),
        _ if RKE_KEYS.contains(&name) => r.ignored(key, "", "RKE cluster.yml"),
        _ if ANTHOS_KEYS.contains(&name) => r.ignored(key, "", "Anthos cluster configuration"),
        _ => r.unknown(key, "", TOP_KEYS),
    }
}

fn read_mirrors(r: &mut Reader, node: &Node) -> Vec<MirrorDoc> {
    let mut out = Vec::new();
    for (name, value, path) in r.registries(node, "mirrors", MIRROR_KEYS) {
        let mut mirror = MirrorDoc {
            key: name,
            endpoints: Vec::new(),
            rewrites: Vec::new(),
        };
        for (k, v) in r.map(value, &path) {
            match k.as_str().unwrap_or_default() {
                "endpoint" => mirror.endpoints = r.strings(v, &format!("{path}.endpoint")),
                "rewrite" => {
                    let rpath = format!("{path}.rewrite");
                    for (pat, rep) in r.map(v, &rpath) {
                        let (Some(p), Some(rep)) = (r.string(pat, &rpath), r.string(rep, &rpath))
                        else {
                            continue;
                        };
                        mirror.rewrites.push((p, rep));
                    }
                }
                _ => r.unknown(k, &path, MIRROR_KEYS),
            }
        }
        out.push(mirror);
    }
    out
}

fn read_configs(r: &mut Reader, node: &Node) -> Vec<ConfigDoc> {
    let mut out = Vec::new();
    for (name, value, path) in r.registries(node, "configs", CONFIG_KEYS) {
        let mut config = ConfigDoc {
            key: name,
            auth: None,
            tls: TlsDoc::default(),
            pull_secret: None,
            credentials_secret: None,
        };
        for (k, v) in r.map(value, &path) {
            let field = k.as_str().unwrap_or_default();
            let at = format!("{path}.{field}");
            match field {
                "auth" => {
                    let mut auth = AuthDoc::default();
                    for (ak, av) in r.map(v, &at) {
                        let f = ak.as_str().unwrap_or_default();
                        let fat = format!("{at}.{f}");
                        match f {
                            "username" => auth.username = r.string(av, &fat),
                            "password" => auth.password = r.secret(av, &fat),
                            "auth" => auth.auth = r.secret(av, &fat),
                            "identity_token" => auth.identity_token = r.secret(av, &fat),
                            _ => r.unknown(ak, &at, AUTH_KEYS),
                        }
                    }
                    config.auth = Some(auth);
                }
                "tls" => {
                    for (tk, tv) in r.map(v, &at) {
                        let f = tk.as_str().unwrap_or_default();
                        let fat = format!("{at}.{f}");
                        match f {
                            "ca_file" => config.tls.ca_file = r.string(tv, &fat),
                            "cert_file" => config.tls.cert_file = r.string(tv, &fat),
                            "key_file" => config.tls.key_file = r.string(tv, &fat),
                            "insecure_skip_verify" => {
                                config.tls.insecure_skip_verify = r.bool(tv, &fat).unwrap_or(false)
                            }
                            _ => r.unknown(tk, &at, TLS_KEYS),
                        }
                    }
                }
                "pullSecret" => config.pull_secret = r.string(v, &at),
                "credentialsSecret" => config.credentials_secret = r.string(v, &at),
                _ => r.unknown(k, &path, CONFIG_KEYS),
            }
        }
        out.push(config);
    }
    out
}

fn read_private_registries(r: &mut Reader, node: &Node) -> Vec<PrivateRegistryDoc> {
    let mut out = Vec::new();
    for (i, item) in r.list(node, "private_registries").iter().enumerate() {
        let path = format!("private_registries[{i}]");
        let mut reg = PrivateRegistryDoc {
            pos: item.pos,
            url: None,
            user: None,
            password: None,
            is_default: false,
            ecr_plugin: None,
        };
        for (k, v) in r.map(item, &path) {
            let f = k.as_str().unwrap_or_default();
            let at = format!("{path}.{f}");
            match f {
                "url" => reg.url = r.string(v, &at),
                "user" => reg.user = r.string(v, &at),
                "password" => reg.password = r.secret(v, &at),
                "is_default" => reg.is_default = r.bool(v, &at).unwrap_or(false),
                "ecrCredentialPlugin" | "ecr_credential_plugin" => {
                    let mut plugin = EcrPluginDoc {
                        pos: k.pos,
                        access_key_id: None,
                        secret_access_key: None,
                        session_token: None,
                    };
                    for (pk, pv) in r.map(v, &at) {
                        let pf = pk.as_str().unwrap_or_default();
                        let pat = format!("{at}.{pf}");
                        match pf {
                            "aws_access_key_id" => plugin.access_key_id = r.string(pv, &pat),
                            "aws_secret_access_key" => {
                                plugin.secret_access_key = r.secret(pv, &pat)
                            }
                            "aws_session_token" => plugin.session_token = r.secret(pv, &pat),
                            _ => r.unknown(
                                pk,
                                &at,
                                &[
                                    "aws_access_key_id",
                                    "aws_secret_access_key",
                                    "aws_session_token",
                                ],
                            ),
                        }
                    }
                    reg.ecr_plugin = Some(plugin);
                }
                _ => r.unknown(
                    k,
                    &path,
                    &[
                        "url",
                        "user",
                        "password",
                        "is_default",
                        "ecrCredentialPlugin",
                    ],
                ),
            }
        }
        out.push(reg);
    }
    out
}

fn read_registry_mirrors(r: &mut Reader, node: &Node) -> Vec<RegistryMirrorDoc> {
    let mut out = Vec::new();
    for (i, item) in r.list(node, "registryMirrors").iter().enumerate() {
        let path = format!("registryMirrors[{i}]");
        let mut endpoint = None;
        let mut mirror = RegistryMirrorDoc {
            endpoint: Spanned {
                value: String::new(),
                pos: item.pos,
            },
            ca_cert_path: None,
            pull_credential_config_path: None,
            hosts: Vec::new(),
        };
        for (k, v) in r.map(item, &path) {
            let f = k.as_str().unwrap_or_default();
            let at = format!("{path}.{f}");
            match f {
                "endpoint" => endpoint = r.string(v, &at),
                "caCertPath" => mirror.ca_cert_path = r.string(v, &at),
                "pullCredentialConfigPath" => mirror.pull_credential_config_path = r.string(v, &at),
                "hosts" => mirror.hosts = r.strings(v, &at),
                _ => r.unknown(
                    k,
                    &path,
                    &[
                        "endpoint",
                        "caCertPath",
                        "pullCredentialConfigPath",
                        "hosts",
                    ],
                ),
            }
        }
        match endpoint {
            Some(e) => {
                mirror.endpoint = e;
                out.push(mirror);
            }
            None => r.error(item.pos, &path, "a registry mirror needs an `endpoint`"),
        }
    }
    out
}
