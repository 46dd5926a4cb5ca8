//! Reads the policy YAML into a `Document`, reporting every problem with its line and column.

use super::diagnostics::{closest, Diagnostics};
use super::document::*;
use super::Severity;
use crate::redacted::Redacted;
use crate::yaml::{self, Kind, Node};

const TOP_KEYS: &[&str] = &[
    "mirrors",
    "configs",
    "private_registries",
    "registryMirrors",
    "defaultRegistry",
    "exclude",
    "pullSecrets",
    "kci",
    "eci",
    "serverlessProfiles",
    "verify",
    "annotateOriginal",
    "warnings",
    "credentialProviderConfig",
];

/// Keys of RKE's `cluster.yml` and Anthos's cluster configuration that mean nothing at admission.
const RKE_KEYS: &[&str] = &[
    "nodes",
    "services",
    "network",
    "authentication",
    "authorization",
    "addons",
    "addons_include",
    "system_images",
    "ssh_key_path",
    "ssh_cert_path",
    "ssh_agent_auth",
    "ignore_docker_version",
    "enable_cri_dockerd",
    "kubernetes_version",
    "cluster_name",
    "cloud_provider",
    "prefix_path",
    "win_prefix_path",
    "addon_job_timeout",
    "bastion_host",
    "monitoring",
    "restore",
    "rotate_encryption_key",
    "dns",
    "ingress",
    "upgrade_strategy",
    "enable_network_policy",
    "docker_root_dir",
];
const ANTHOS_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "spec",
    "gcrKeyPath",
    "sshPrivateKeyPath",
    "gkeConnectAgentServiceAccountKeyPath",
    "gkeConnectRegisterServiceAccountKeyPath",
    "cloudOperationsServiceAccountKeyPath",
];

/// Walks the YAML tree, reporting what does not fit where it stands.
#[derive(Default)]
struct Reader {
    diags: Diagnostics,
}

impl std::ops::Deref for Reader {
    type Target = Diagnostics;
    fn deref(&self) -> &Diagnostics {
        &self.diags
    }
}

impl std::ops::DerefMut for Reader {
    fn deref_mut(&mut self) -> &mut Diagnostics {
        &mut self.diags
    }
}

impl Reader {
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

/// Where a key belongs, for keys that sit at one level of the policy: an unknown key found at
/// another level was most likely indented too little or too much.
const HOMES: &[(&str, &str)] = &[
    ("endpoint", "mirrors.<registry>"),
    ("rewrite", "mirrors.<registry>"),
    ("auth", "configs.<registry>"),
    ("tls", "configs.<registry>"),
    ("credentialsSecret", "configs.<registry>"),
    ("pullSecret", "configs.<registry>"),
    ("username", "configs.<registry>.auth"),
    ("password", "configs.<registry>.auth"),
    ("identitytoken", "configs.<registry>.auth"),
    ("ca_file", "configs.<registry>.tls"),
    ("cert_file", "configs.<registry>.tls"),
    ("key_file", "configs.<registry>.tls"),
    ("insecure_skip_verify", "configs.<registry>.tls"),
    ("url", "private_registries[]"),
    ("is_default", "private_registries[]"),
    ("namespaces", "exclude"),
    ("images", "exclude"),
    ("fromNamespace", "pullSecrets"),
    ("pinDigest", "verify"),
    ("cacheTTL", "verify"),
    ("negativeCacheTTL", "verify"),
    ("matchImages", "credentialProviderConfig.providers[]"),
    (
        "defaultCacheDuration",
        "credentialProviderConfig.providers[]",
    ),
];

/// The hint for a key that is known elsewhere in the policy: where it belongs.
fn misplaced(name: &str, path: &str) -> Option<String> {
    let (_, home) = HOMES.iter().find(|(key, _)| *key == name)?;
    let here = if path.is_empty() {
        "the top level"
    } else {
        path
    };
    Some(format!(
        "`{name}` is a key of {home}, not of {here}: is it indented to the wrong level?"
    ))
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
    let mut r = Reader::default();
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
                    _ => r.unknown(k, name, &["namespaces", "images"]),
                }
            }
        }
        "pullSecrets" => {
            for (k, v) in r.map(value, name) {
                match k.as_str().unwrap_or_default() {
                    "fromNamespace" => {
                        doc.pull_secrets_from_namespace = r.bool(v, "pullSecrets.fromNamespace")
                    }
                    _ => r.unknown(k, name, &["fromNamespace"]),
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
        _ if RKE_KEYS.contains(&name) => r.ignored(key, "", "RKE cluster.yml"),
        _ if ANTHOS_KEYS.contains(&name) => r.ignored(key, "", "Anthos cluster configuration"),
        _ => r.unknown(key, "", TOP_KEYS),
    }
}

/// A field of a registry's entry written where a registry goes: indented one level too little.
fn slipped_field(name: &str, fields: &[&str], map: &str) -> Option<String> {
    fields.contains(&name).then(|| {
        format!("`{name}` is a key of each {map} entry: indent it under its registry ({map}.<registry>.{name})")
    })
}

fn read_mirrors(r: &mut Reader, node: &Node) -> Vec<MirrorDoc> {
    let mut out = Vec::new();
    for (key, value) in r.map(node, "mirrors") {
        let Some(name) = r.string(key, "mirrors") else {
            continue;
        };
        if let Some(hint) = slipped_field(&name.value, &["endpoint", "rewrite"], "mirrors") {
            r.error_hint(
                key.pos,
                "mirrors",
                format!("`{}` is not a registry", name.value),
                Some(hint),
            );
            continue;
        }
        let path = format!("mirrors[{}]", name.value);
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
                _ => r.unknown(k, &path, &["endpoint", "rewrite"]),
            }
        }
        out.push(mirror);
    }
    out
}

fn read_configs(r: &mut Reader, node: &Node) -> Vec<ConfigDoc> {
    let mut out = Vec::new();
    for (key, value) in r.map(node, "configs") {
        let Some(name) = r.string(key, "configs") else {
            continue;
        };
        let fields = ["auth", "tls", "pullSecret", "credentialsSecret"];
        if let Some(hint) = slipped_field(&name.value, &fields, "configs") {
            r.error_hint(
                key.pos,
                "configs",
                format!("`{}` is not a registry", name.value),
                Some(hint),
            );
            continue;
        }
        let path = format!("configs[{}]", name.value);
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
                            _ => r.unknown(
                                ak,
                                &at,
                                &["username", "password", "auth", "identity_token"],
                            ),
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
                            _ => r.unknown(
                                tk,
                                &at,
                                &["ca_file", "cert_file", "key_file", "insecure_skip_verify"],
                            ),
                        }
                    }
                }
                "pullSecret" => config.pull_secret = r.string(v, &at),
                "credentialsSecret" => config.credentials_secret = r.string(v, &at),
                _ => r.unknown(
                    k,
                    &path,
                    &["auth", "tls", "pullSecret", "credentialsSecret"],
                ),
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

fn read_provider_config(r: &mut Reader, node: &Node) -> ProviderConfigDoc {
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

const PROFILE_KEYS: &[&str] = &[
    "name",
    "enabled",
    "match",
    "annotations",
    "hostAliases",
    "dnsConfig",
];
const MATCH_KEYS: &[&str] = &[
    "nodeSelector",
    "nodeSelectorTolerations",
    "tolerations",
    "labels",
];
const ANNOTATION_KEYS: &[&str] = &[
    "plainHttp",
    "insecure",
    "separator",
    "hostAliases",
    "dnsConfig",
];

/// A serverless profile; `keys` are the ones this place allows (`kci` has no `match`, say).
fn read_profile(r: &mut Reader, node: &Node, path: &str, keys: &[&str]) -> ProfileDoc {
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

fn read_verify(r: &mut Reader, node: &Node) -> VerifyDoc {
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
