//! Turns a read document into a `Policy`: endpoints normalised, regexes compiled, lookups built,
//! and every rule that cannot work as written reported.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use regex::bytes::{Regex, RegexSet};

use super::document::{
    edit_distance, Document, EcrPluginDoc, MirrorDoc, ProfileDoc, ProviderConfigDoc, Reader,
    Spanned,
};
use super::endpoint::{self, reads_as_registry, Scheme};
use super::{
    AwsKeys, CredentialSource, Credentials, DefaultRegistry, Diagnostic, EcrSource, Mirror,
    MirrorEndpoint, Policy, Profile, ProfileMode, RegistryConfig, Rewrite, Severity, Tls, Verify,
};
use crate::names::is_dns_subdomain;
use crate::reference::{is_domain, Reference, DOCKER_HUB};
use crate::yaml::Pos;

/// A built regex may not grow past this; it bounds memory and compile time for hostile input.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Regexes in one policy (rewrite rules and exclude.images). A compiled regex takes about 15 KB,
/// so this bounds them to about 15 MB; real policies have tens.
pub const MAX_REGEXES: usize = 1_000;
/// Up to this many rewrite rules a mirror tries them one by one; past it, one `RegexSet` finds
/// the first match in one scan.
const FEW_RULES: usize = 4;
/// Admission webhooks time out after 30 s at most; a check that runs longer is never useful.
const MAX_VERIFY_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn compile(doc: Document, diags: &mut Vec<Diagnostic>) -> Option<Policy> {
    let mut r = Reader {
        diags: std::mem::take(diags),
        regexes: 0,
    };
    if doc.empty {
        r.push(
            Severity::Warning,
            Pos { line: 1, col: 1 },
            "",
            "the policy is empty: no image will be rewritten",
            None,
        );
    }
    let mut mirrors: HashMap<String, Mirror> = HashMap::new();
    let mut wildcard = None;
    let mut http = HashSet::new();
    let mut insecure = HashSet::new();
    let config_keys: HashSet<&str> = doc.configs.iter().map(|c| c.key.value.as_str()).collect();

    for m in &doc.mirrors {
        let Some(mirror) = compile_mirror(&mut r, m, &config_keys) else {
            continue;
        };
        for e in &mirror.endpoints {
            if e.endpoint.scheme == Scheme::Http {
                http.insert(e.endpoint.host.clone());
            }
        }
        if mirror.key == "*" {
            wildcard = Some(mirror);
        } else {
            mirrors.insert(mirror.key.clone(), mirror);
        }
    }

    let mut configs: HashMap<String, RegistryConfig> = HashMap::new();
    for (i, rm) in doc.registry_mirrors.iter().enumerate() {
        let rule = format!("registryMirrors[{i}]");
        let ep = match endpoint::parse(&rm.endpoint.value) {
            Ok(ep) => ep,
            Err(e) => {
                r.push(
                    Severity::Error,
                    rm.endpoint.pos,
                    &format!("{rule}.endpoint"),
                    e.message,
                    e.hint,
                );
                continue;
            }
        };
        if ep.scheme == Scheme::Http {
            http.insert(ep.host.clone());
        }
        let config = configs.entry(ep.host.clone()).or_default();
        if let Some(ca) = &rm.ca_cert_path {
            config.tls.ca_file = Some(ca.value.clone());
            insecure.insert(ep.host.clone());
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
            let entry = mirrors.entry(host.clone()).or_insert_with(|| Mirror {
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

    let mut endpoint_hosts: HashSet<String> = mirrors
        .values()
        .chain(wildcard.as_ref())
        .flat_map(|m| m.endpoints.iter().map(|e| e.endpoint.host.clone()))
        .collect();

    let mut wildcard_config = None;
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
        }
        if key_ok && key != "*" && !endpoint_hosts.contains(key) && !mirrors.contains_key(key) {
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
            r.push(Severity::Warning, c.key.pos, &path, message, hint);
        }
        let mut config = RegistryConfig::default();
        if let Some(a) = &c.auth {
            if let Some(p) = a
                .password
                .as_ref()
                .or(a.auth.as_ref())
                .or(a.identity_token.as_ref())
            {
                plain_text_warning(&mut r, p.pos, &format!("{path}.auth"));
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
            &mut r,
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
        config.pull_secret = secret_name(&mut r, &c.pull_secret, &format!("{path}.pullSecret"));
        if !key_ok {
            continue;
        }
        if config.tls.insecure_skip_verify || config.tls.ca_file.is_some() {
            insecure.insert(key.to_owned());
        }
        if key == "*" {
            wildcard_config = Some(config);
        } else {
            let entry = configs.entry(key.to_owned()).or_default();
            merge_config(entry, config);
        }
    }

    let mut default_registry = None;
    // Where each registry host is written, for the notes on its ECR tokens.
    let mut written_hosts: Vec<(String, Pos)> = doc
        .configs
        .iter()
        .map(|c| (c.key.value.clone(), c.key.pos))
        .collect();
    for (i, reg) in doc.private_registries.iter().enumerate() {
        let path = format!("private_registries[{i}]");
        let url = match &reg.url {
            Some(u) => strip_scheme(&mut r, u, &format!("{path}.url")),
            None => DOCKER_HUB.to_owned(),
        };
        if let Some(p) = &reg.password {
            plain_text_warning(&mut r, p.pos, &format!("{path}.password"));
        }
        let host = url.split('/').next().unwrap_or_default().to_owned();
        if let Some(u) = &reg.url {
            written_hosts.push((host.clone(), u.pos));
        }
        if let Some(plugin) = &reg.ecr_plugin {
            let source = ecr_plugin_source(
                &mut r,
                plugin,
                &host,
                &format!("{path}.ecrCredentialPlugin"),
            );
            if let Some(source) = source {
                let entry = configs.entry(host.clone()).or_default();
                entry.ecr.get_or_insert(source);
            }
        } else if crate::ecr::parse_host(&host).is_some() {
            // RKE's instance-profile form: the node's (here, the webhook's) own AWS identity.
            configs.entry(host.clone()).or_default();
        }
        if reg.user.is_some() || reg.password.is_some() {
            let entry = configs.entry(host.clone()).or_default();
            if entry.credentials.is_none() {
                entry.credentials = Some(Credentials {
                    username: reg.user.as_ref().map(|u| u.value.clone()),
                    password: reg.password.as_ref().map(|p| p.value.clone()),
                    ..Credentials::default()
                });
            }
        }
        if reg.is_default && default_registry.is_none() {
            let pos = reg.url.as_ref().map_or(reg.pos, |u| u.pos);
            default_registry = compile_default(&mut r, &url, pos, &path);
        }
    }
    // An ECR registry with no credentials of its own gets tokens from the webhook's AWS identity.
    for (host, config) in configs.iter_mut() {
        if config.source().is_none() {
            config.ecr = crate::ecr::parse_host(host).map(|registry| EcrSource {
                registry,
                keys: None,
            });
        }
    }
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
    let credential_providers = doc
        .credential_provider_config
        .as_ref()
        .map(|c| compile_providers(&mut r, c))
        .unwrap_or_default();
    if let Some(c) = &doc.credential_provider_config {
        for p in &credential_providers {
            let mut served: Vec<&str> = endpoint_hosts
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
    }

    if let Some(d) = &doc.default_registry {
        let url = strip_scheme(&mut r, d, "defaultRegistry");
        if default_registry.is_some() {
            r.push(
                Severity::Warning,
                d.pos,
                "defaultRegistry",
                "both defaultRegistry and a private_registries entry with is_default are set; defaultRegistry wins",
                None,
            );
        }
        default_registry = compile_default(&mut r, &url, d.pos, "defaultRegistry");
    }
    if let Some(d) = &default_registry {
        endpoint_hosts.insert(d.host.clone());
    }

    let mut exclude_image_patterns = Vec::new();
    for (i, pat) in doc.exclude_images.iter().enumerate() {
        if compile_regex(&mut r, pat, &format!("exclude.images[{i}]")).is_some() {
            exclude_image_patterns.push(pat.value.clone());
        }
    }
    let exclude_images = build_set(&mut r, &exclude_image_patterns, "exclude.images");

    let profiles = compile_profiles(&mut r, &doc);
    let verify = compile_verify(&mut r, &doc);
    if !verify.enabled {
        for m in doc.mirrors.iter().filter(|m| m.endpoints.len() > 1) {
            r.push(
                Severity::Note,
                m.key.pos,
                &format!("mirrors[{}].endpoint", m.key.value),
                "only the first endpoint is used: the webhook picks one endpoint per image (containerd would try the others at pull time)",
                Some("turn verify on to choose the first endpoint that has the image".into()),
            );
        }
    }

    let policy = Policy {
        mirrors,
        wildcard,
        default_registry,
        exclude_namespaces: doc
            .exclude_namespaces
            .into_iter()
            .map(|n| n.value)
            .collect(),
        exclude_images,
        exclude_image_patterns,
        own_registries: endpoint_hosts,
        configs,
        wildcard_config,
        http_registries: http,
        insecure_registries: insecure,
        profiles,
        verify,
        annotate_original: doc.annotate_original.unwrap_or(true),
        warnings: doc.warnings.unwrap_or(true),
        pull_secrets_from_namespace: doc.pull_secrets_from_namespace.unwrap_or(false),
        credential_providers,
    };
    *diags = r.diags;
    Some(policy)
}

fn compile_mirror(r: &mut Reader, m: &MirrorDoc, config_keys: &HashSet<&str>) -> Option<Mirror> {
    let key = m.key.value.as_str();
    let path = format!("mirrors[{key}]");
    if key != "*" && !is_domain(key) {
        r.push(
            Severity::Error,
            m.key.pos,
            &path,
            "a mirror key is a registry host[:port], or \"*\" for every registry",
            Some("mirrors apply to whole registries, not to repositories".into()),
        );
        return None;
    }
    if key == "index.docker.io" {
        r.push(
            Severity::Warning,
            m.key.pos,
            &path,
            "never matches: Docker Hub images are normalised to docker.io",
            Some("use `docker.io` as the key".into()),
        );
    }
    let mut endpoints = Vec::new();
    let mut seen = HashSet::new();
    for (i, raw) in m.endpoints.iter().enumerate() {
        let at = format!("{path}.endpoint[{i}]");
        match endpoint::parse(&raw.value) {
            Ok(ep) if !seen.insert(ep.url.clone()) => r.push(
                Severity::Note,
                raw.pos,
                &at,
                format!("repeats `{}`; the first occurrence is used", ep.url),
                None,
            ),
            Ok(ep) => {
                if ep.scheme == Scheme::Http {
                    // An image reference carries no scheme: the node decides how to reach it.
                    r.push(
                        Severity::Warning,
                        raw.pos,
                        &at,
                        format!("plain HTTP: images rewritten to `{}` carry no scheme, and a node's runtime pulls them over HTTPS unless it knows this registry is plain HTTP", ep.host),
                        Some("configure the nodes too, as a K3s node with this registries.yaml is (containerd hosts.toml, CRI-O registries.conf insecure = true); serverless pods get the runtime's annotation from this policy".into()),
                    );
                }
                endpoints.push(MirrorEndpoint {
                    endpoint: ep,
                    rule: format!("mirrors[{key}].endpoint[{i}]"),
                })
            }
            Err(e) => r.push(Severity::Error, raw.pos, &at, e.message, e.hint),
        }
    }
    let mut rewrites = Vec::new();
    for (pat, rep) in &m.rewrites {
        let at = format!("{path}.rewrite[{}]", pat.value);
        let Some(regex) = compile_regex(r, pat, &at) else {
            continue;
        };
        check_replacement(r, &regex, rep, &at);
        rewrites.push(Rewrite {
            regex,
            replacement: rep.value.clone(),
        });
    }
    if m.endpoints.is_empty() {
        if !m.rewrites.is_empty() {
            r.push(
                Severity::Warning,
                m.key.pos,
                &path,
                "rewrite rules have no effect without endpoints",
                None,
            );
        }
        // As in K3s: an entry with neither endpoints nor a config is dropped, so it does not
        // shadow "*"; with a config it means "pull from the registry itself".
        if !config_keys.contains(key) {
            return None;
        }
    }
    let patterns: Vec<&str> = rewrites.iter().map(|w| w.regex.as_str()).collect();
    Some(Mirror {
        key: key.to_owned(),
        endpoints,
        rewrite_set: (patterns.len() > FEW_RULES)
            .then(|| build_set(r, &patterns, &format!("{path}.rewrite"))),
        rewrites,
    })
}

/// One automaton over a list of regexes that each compiled alone; it can still fail on size.
fn build_set<S: AsRef<str>>(r: &mut Reader, patterns: &[S], path: &str) -> RegexSet {
    let build = |unicode: bool| {
        regex::bytes::RegexSetBuilder::new(patterns)
            .unicode(unicode)
            .size_limit(REGEX_SIZE_LIMIT.saturating_mul(patterns.len().max(1)))
            .build()
    };
    match build(false).or_else(|_| build(true)) {
        Ok(set) => set,
        Err(e) => {
            r.error(
                Pos::default(),
                path,
                format!("these regexes together are too large: {e}"),
            );
            RegexSet::empty()
        }
    }
}

fn compile_regex(r: &mut Reader, pat: &Spanned<String>, path: &str) -> Option<Regex> {
    r.regexes += 1;
    if r.regexes > MAX_REGEXES {
        if r.regexes == MAX_REGEXES + 1 {
            r.error(
                pat.pos,
                path,
                format!("more than {MAX_REGEXES} regexes (rewrite rules and exclude.images) in one policy; the rest are not read"),
            );
        }
        return None;
    }
    // The names and paths matched are ASCII: without Unicode a regex is smaller and matches the
    // same. A pattern that needs Unicode (a `\p{..}` class, say) keeps it.
    let build = |unicode: bool| {
        regex::bytes::RegexBuilder::new(&pat.value)
            .unicode(unicode)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
    };
    match build(false).or_else(|_| build(true)) {
        Ok(re) => Some(re),
        Err(e) => {
            let detail = e.to_string();
            let why = detail
                .lines()
                .last()
                .unwrap_or("invalid regex")
                .trim()
                .trim_start_matches("error: ");
            r.error(
                pat.pos,
                path,
                format!("invalid regex `{}`: {why}", pat.value),
            );
            None
        }
    }
}

/// A replacement that names a group the regex lacks expands to nothing, which is never meant:
/// `$1_x` names group `1_x`, not group 1 followed by `_x`.
fn check_replacement(r: &mut Reader, regex: &Regex, rep: &Spanned<String>, path: &str) {
    let names: HashSet<&str> = regex.capture_names().flatten().collect();
    let groups = regex.captures_len();
    let b = rep.value.as_bytes();
    let mut i = 0;
    // The text between group references, which every rewritten path contains as written.
    let mut literals: Vec<&str> = Vec::new();
    let mut literal_start = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        if b.get(i + 1) == Some(&b'$') {
            i += 2;
            continue;
        }
        literals.push(&rep.value[literal_start..i]);
        let (name, braced, next) = if b.get(i + 1) == Some(&b'{') {
            match rep.value[i + 2..].find('}') {
                Some(end) => (&rep.value[i + 2..i + 2 + end], true, i + 3 + end),
                None => ("", true, b.len()),
            }
        } else {
            let len = b[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                .count();
            (&rep.value[i + 1..i + 1 + len], false, i + 1 + len)
        };
        i = next.max(i + 1);
        literal_start = i;
        if name.is_empty() {
            continue;
        }
        let exists = match name.parse::<usize>() {
            Ok(n) => n < groups,
            Err(_) => names.contains(name),
        };
        if !exists {
            let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
            let hint = (!braced && !digits.is_empty() && digits.len() < name.len()).then(|| {
                format!(
                    "write `${{{digits}}}{}` for group {digits} followed by `{}`",
                    &name[digits.len()..],
                    &name[digits.len()..]
                )
            });
            r.push(
                Severity::Error,
                rep.pos,
                path,
                format!("the replacement names group `{name}`, which the regex does not have (it would expand to nothing)"),
                hint,
            );
        }
    }
    literals.push(&rep.value[literal_start..]);
    if let Some(why) = never_a_path(&literals) {
        r.push(
            Severity::Warning,
            rep.pos,
            path,
            format!("every path this replacement makes is an invalid image reference: {why}; such images are left as they are"),
            Some("repository paths are lower-case letters, digits and `.`, `_`, `-` between `/`-separated components".into()),
        );
    }
}

/// Why text that every rewritten path contains makes it invalid, if it does: characters a
/// repository path never has, an empty path or component, a leading or trailing `/`, or a
/// component that starts or ends with a separator (`.`, `_`, `-`: `-x`, `../x`, `x-/y`).
fn never_a_path(literals: &[&str]) -> Option<String> {
    let allowed = |c: char| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-' | '/');
    let separator = |c: char| matches!(c, '.' | '_' | '-');
    if literals.iter().all(|l| l.is_empty()) && literals.len() == 1 {
        return Some("it is empty".into());
    }
    for lit in literals {
        if let Some(c) = lit.chars().find(|c| !allowed(*c)) {
            return Some(format!("it contains `{c}`"));
        }
        if lit.contains("//") {
            return Some("it contains `//`".into());
        }
        for (i, _) in lit.match_indices('/') {
            let (before, after) = (&lit[..i], &lit[i + 1..]);
            if let Some(c) = before.chars().next_back().filter(|c| separator(*c)) {
                return Some(format!("a path component ends with `{c}`"));
            }
            if let Some(c) = after.chars().next().filter(|c| separator(*c)) {
                return Some(format!("a path component starts with `{c}`"));
            }
        }
    }
    let first = literals.first().copied().unwrap_or_default();
    let last = literals.last().copied().unwrap_or_default();
    if first.starts_with('/') {
        return Some("it starts with `/`".into());
    }
    if last.ends_with('/') {
        return Some("it ends with `/`".into());
    }
    if let Some(c) = first.chars().next().filter(|c| separator(*c)) {
        return Some(format!("it starts with `{c}`"));
    }
    if let Some(c) = last.chars().next_back().filter(|c| separator(*c)) {
        return Some(format!("it ends with `{c}`"));
    }
    None
}

fn plain_text_warning(r: &mut Reader, pos: Pos, path: &str) {
    r.push(
        Severity::Warning,
        pos,
        path,
        "plain-text credential in the policy",
        Some("keep credentials in a Secret in the webhook's namespace and name it with configs.<host>.credentialsSecret".into()),
    );
}

fn strip_scheme(r: &mut Reader, url: &Spanned<String>, path: &str) -> String {
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

fn compile_default(r: &mut Reader, url: &str, pos: Pos, rule: &str) -> Option<DefaultRegistry> {
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

const KCI_HTTP_REGISTRY: &str = "k8s.ksyun.com/kci-http-registry";
const KCI_INSECURE_REGISTRY: &str = "k8s.ksyun.com/kci-insecure-registry";
const KCI_HOST_ALIASES: &str = "k8s.ksyun.com/kci-host-aliases";
const KCI_DNS_CONFIG: &str = "k8s.ksyun.com/kci-dns-config";
const ECI_HTTP_REGISTRY: &str = "k8s.aliyun.com/plain-http-registry";
const ECI_INSECURE_REGISTRY: &str = "k8s.aliyun.com/insecure-registry";
const VIRTUAL_KUBELET: (&str, &str) = ("type", "virtual-kubelet");

/// The serverless profiles: KCI (Kingsoft Cloud, on by default as before), ECI (Alibaba Cloud,
/// opt-in), then the user's, each compiled from its document.
fn compile_profiles(r: &mut Reader, doc: &Document) -> Vec<Profile> {
    let pair = |(k, v): (&str, &str)| (k.to_owned(), v.to_owned());
    let (kci_aliases, kci_dns) = (
        host_aliases(r, &doc.kci, "kci"),
        dns_config(r, &doc.kci, "kci"),
    );
    check_fixed_size(r, &doc.kci, "kci", &kci_aliases, &kci_dns);
    let kci = Profile {
        name: "kci".into(),
        mode: mode_of(r, &doc.kci, "kci", ProfileMode::Auto),
        node_selector: vec![pair(VIRTUAL_KUBELET)],
        tolerations: vec!["rbkci-virtual-kubelet.io/provider".into()],
        plain_http: Some(KCI_HTTP_REGISTRY.into()),
        insecure: Some(KCI_INSECURE_REGISTRY.into()),
        separator: ",".into(),
        host_aliases: kci_aliases.map(|j| (KCI_HOST_ALIASES.into(), j)),
        dns_config: kci_dns.map(|j| (KCI_DNS_CONFIG.into(), j)),
        ..Profile::default()
    };
    let eci = Profile {
        name: "eci".into(),
        mode: mode_of(r, &doc.eci, "eci", ProfileMode::Never),
        node_selector: vec![pair(VIRTUAL_KUBELET)],
        node_selector_tolerations: vec!["virtual-kubelet.io/provider".into()],
        labels: vec![pair(("alibabacloud.com/eci", "true"))],
        plain_http: Some(ECI_HTTP_REGISTRY.into()),
        insecure: Some(ECI_INSECURE_REGISTRY.into()),
        separator: ",".into(),
        ..Profile::default()
    };
    let mut profiles = vec![kci, eci];
    for (i, p) in doc.profiles.iter().enumerate() {
        let path = format!("serverlessProfiles[{i}]");
        if let Some(profile) = compile_profile(r, p, &path, &profiles) {
            profiles.push(profile);
        }
    }
    note_shared_selectors(r, doc, &profiles);
    profiles
}

fn mode_of(r: &mut Reader, p: &ProfileDoc, path: &str, default: ProfileMode) -> ProfileMode {
    match p.enabled.as_ref().map(|s| (s.value.as_str(), s.pos)) {
        None => default,
        Some(("auto", _)) => ProfileMode::Auto,
        Some(("always", _)) => ProfileMode::Always,
        Some(("never", _)) => ProfileMode::Never,
        Some((other, pos)) => {
            r.error(
                pos,
                &format!("{path}.enabled"),
                format!("`{other}` is not one of auto, always, never"),
            );
            default
        }
    }
}

fn host_aliases(r: &mut Reader, p: &ProfileDoc, path: &str) -> Option<String> {
    let well_formed = |v: &serde_json::Value| {
        v.as_array().is_some_and(|items| {
            items.iter().all(|a| {
                a.get("ip").is_some_and(serde_json::Value::is_string)
                    && a.get("hostnames").is_some_and(serde_json::Value::is_array)
            })
        })
    };
    compact_json(
        r,
        p.host_aliases.as_ref()?,
        &format!("{path}.hostAliases"),
        well_formed,
        "expected a list of {ip, hostnames} entries, as in a Pod's spec.hostAliases",
    )
}

fn dns_config(r: &mut Reader, p: &ProfileDoc, path: &str) -> Option<String> {
    const KEYS: [&str; 3] = ["nameservers", "searches", "options"];
    let well_formed = |v: &serde_json::Value| {
        v.as_object()
            .is_some_and(|m| m.keys().all(|k| KEYS.contains(&k.as_str())))
    };
    compact_json(
        r,
        p.dns_config.as_ref()?,
        &format!("{path}.dnsConfig"),
        well_formed,
        "expected a mapping of nameservers, searches and options, as in a Pod's spec.dnsConfig",
    )
}

/// A value passed on as an annotation: its compact JSON when it has the Pod field's shape.
fn compact_json(
    r: &mut Reader,
    value: &Spanned<serde_json::Value>,
    path: &str,
    well_formed: impl Fn(&serde_json::Value) -> bool,
    expected: &str,
) -> Option<String> {
    if !well_formed(&value.value) {
        r.error(value.pos, path, expected);
        return None;
    }
    Some(value.value.to_string())
}

/// What a profile's fixed annotations may take of a Pod's 256 KiB: half, leaving the rest to
/// the Pod's own and to the registry lists.
const MAX_PROFILE_ANNOTATION_BYTES: usize = crate::names::MAX_ANNOTATIONS_BYTES / 2;

/// A profile's fixed annotations must leave room in the Pod's.
fn check_fixed_size(
    r: &mut Reader,
    p: &ProfileDoc,
    path: &str,
    host_aliases: &Option<String>,
    dns_config: &Option<String>,
) {
    let fixed: usize = [host_aliases, dns_config]
        .into_iter()
        .flatten()
        .map(String::len)
        .sum();
    if fixed > MAX_PROFILE_ANNOTATION_BYTES {
        r.error(
            p.pos,
            path,
            format!("its hostAliases and dnsConfig make {fixed} bytes of annotations; a Pod's annotations may hold {} in all, so at most {MAX_PROFILE_ANNOTATION_BYTES} may go to a profile", crate::names::MAX_ANNOTATIONS_BYTES),
        );
    }
}

/// A user's profile: a unique name, the annotations it writes, and a way to recognise its pods.
fn compile_profile(
    r: &mut Reader,
    p: &ProfileDoc,
    path: &str,
    before: &[Profile],
) -> Option<Profile> {
    let Some(name) = &p.name else {
        r.error(p.pos, path, "a profile needs a name");
        return None;
    };
    if before.iter().any(|b| b.name == name.value) {
        r.error(
            name.pos,
            &format!("{path}.name"),
            format!("`{}` is taken (kci and eci are built in)", name.value),
        );
        return None;
    }
    let annotation = |key: &str| {
        p.annotations
            .iter()
            .find(|(k, _)| k.value == key)
            .map(|(_, v)| v.value.clone())
    };
    for (what, key) in &p.annotations {
        if what.value != "separator" && !crate::names::is_qualified_name(&key.value) {
            r.error(
                key.pos,
                &format!("{path}.annotations.{}", what.value),
                format!("`{}` is not an annotation key the API server accepts: an optional DNS-name prefix and `/`, then at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit", key.value),
            );
        }
    }
    let mode = mode_of(r, p, path, ProfileMode::Auto);
    let plain_http = annotation("plainHttp");
    let insecure = annotation("insecure");
    if plain_http.is_none() && insecure.is_none() {
        r.error(
            p.pos,
            &format!("{path}.annotations"),
            "name at least one of plainHttp and insecure",
        );
    }
    let recognisable =
        !p.node_selector.is_empty() || !p.tolerations.is_empty() || !p.labels.is_empty();
    if mode == ProfileMode::Auto && !recognisable {
        r.error(p.pos, &format!("{path}.match"), "with enabled: auto, say how its pods are recognised: nodeSelector, tolerations or labels");
    }
    let value_with_annotation =
        |r: &mut Reader, what: &str, value: Option<String>| match (annotation(what), value) {
            (Some(a), Some(v)) => Some((a, v)),
            (None, Some(_)) => {
                r.push(
                    Severity::Warning,
                    p.pos,
                    &format!("{path}.{what}"),
                    format!("annotations.{what} is not named, so this is not passed on"),
                    None,
                );
                None
            }
            _ => None,
        };
    let host_aliases = host_aliases(r, p, path);
    let dns_config = dns_config(r, p, path);
    check_fixed_size(r, p, path, &host_aliases, &dns_config);
    let strings = |v: &[Spanned<String>]| v.iter().map(|s| s.value.clone()).collect();
    let pairs = |v: &[(Spanned<String>, Spanned<String>)]| {
        v.iter()
            .map(|(k, v)| (k.value.clone(), v.value.clone()))
            .collect()
    };
    Some(Profile {
        name: name.value.clone(),
        mode,
        node_selector: pairs(&p.node_selector),
        node_selector_tolerations: strings(&p.node_selector_tolerations),
        tolerations: strings(&p.tolerations),
        labels: pairs(&p.labels),
        plain_http,
        insecure,
        separator: annotation("separator").unwrap_or_else(|| ",".into()),
        host_aliases: value_with_annotation(r, "hostAliases", host_aliases),
        dns_config: value_with_annotation(r, "dnsConfig", dns_config),
    })
}

/// Profiles on `auto` that share a node selector recognise a pod with only that selector as
/// neither's: say so, since such pods get no annotations.
fn note_shared_selectors(r: &mut Reader, doc: &Document, profiles: &[Profile]) {
    let auto: Vec<&Profile> = profiles
        .iter()
        .filter(|p| p.mode == ProfileMode::Auto)
        .collect();
    for (i, a) in auto.iter().enumerate() {
        for b in &auto[i + 1..] {
            if let Some((k, v)) = a.node_selector.iter().find(|s| b.node_selector.contains(s)) {
                let pos = [&doc.eci, &doc.kci]
                    .into_iter()
                    .chain(&doc.profiles)
                    .find(|d| d.enabled.is_some())
                    .map_or(Pos { line: 1, col: 1 }, |d| d.pos);
                r.push(
                    Severity::Note,
                    pos,
                    "",
                    format!("{} and {} are both on and both run pods selected by {k}={v}: a pod with only that selector is matched by neither", a.name, b.name),
                    Some(format!("give such pods {}'s or {}'s toleration or label, or set one of them to never", a.name, b.name)),
                );
            }
        }
    }
}

fn compile_verify(r: &mut Reader, doc: &Document) -> Verify {
    let v = &doc.verify;
    let mut out = Verify::default();
    let mut duration = |s: &Option<Spanned<String>>, name: &str, into: &mut Duration| {
        if let Some(s) = s {
            match crate::duration::parse(&s.value) {
                Ok(d) => *into = d,
                Err(e) => r.error(s.pos, &format!("verify.{name}"), e.to_string()),
            }
        }
    };
    duration(&v.timeout, "timeout", &mut out.timeout);
    duration(&v.cache_ttl, "cacheTTL", &mut out.cache_ttl);
    duration(
        &v.negative_cache_ttl,
        "negativeCacheTTL",
        &mut out.negative_cache_ttl,
    );
    if let Some(t) = &v.timeout {
        if out.timeout.is_zero() || out.timeout > MAX_VERIFY_TIMEOUT {
            r.error(
                t.pos,
                "verify.timeout",
                "must be more than 0 and at most 30s, the longest an admission webhook may take",
            );
        }
    }
    out.enabled = v.enabled.unwrap_or(false);
    out.pin_digest = v.pin_digest.unwrap_or(false);
    out
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
fn secret_name(r: &mut Reader, name: &Option<Spanned<String>>, path: &str) -> Option<String> {
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

/// RKE's `ecrCredentialPlugin` for the registry `host`: its keys, or the webhook's own identity
/// when it names none.
fn ecr_plugin_source(
    r: &mut Reader,
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

/// The providers of a kubelet `CredentialProviderConfig`, validated as the kubelet does.
fn compile_providers(r: &mut Reader, c: &ProviderConfigDoc) -> Vec<crate::credprovider::Provider> {
    use crate::credprovider::{Provider, CONFIG_API_VERSIONS, PLUGIN_API_VERSIONS};
    const PATH: &str = "credentialProviderConfig";
    match &c.api_version {
        Some(v) if CONFIG_API_VERSIONS.contains(&v.value.as_str()) => {}
        Some(v) => r.push(
            Severity::Error,
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
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, p) in c.providers.iter().enumerate() {
        let path = format!("{PATH}.providers[{i}]");
        let before = r.diags.len();
        let error = |r: &mut Reader, pos: Pos, what: &str, msg: String| {
            r.error(pos, &format!("{path}{what}"), msg)
        };
        let name = match &p.name {
            Some(n)
                if n.value.is_empty()
                    || n.value.contains(['/', '\\'])
                    || n.value == "."
                    || n.value == ".." =>
            {
                error(
                    r,
                    n.pos,
                    ".name",
                    format!("`{}` is not a plugin file name", n.value),
                );
                None
            }
            Some(n) if !names.insert(n.value.clone()) => {
                error(
                    r,
                    n.pos,
                    ".name",
                    format!("duplicate provider name `{}`", n.value),
                );
                None
            }
            Some(n) => Some(n.value.clone()),
            None => {
                error(r, p.pos, "", "name is required".into());
                None
            }
        };
        if p.match_images.is_empty() {
            error(
                r,
                p.pos,
                ".matchImages",
                "at least one matchImages entry is required".into(),
            );
        }
        for m in &p.match_images {
            if m.value.is_empty() || m.value.contains(char::is_whitespace) {
                error(
                    r,
                    m.pos,
                    ".matchImages",
                    format!("`{}` is not an image pattern", m.value),
                );
            }
        }
        let duration = match &p.default_cache_duration {
            Some(d) => match crate::duration::parse(&d.value) {
                Ok(d) => Some(d),
                Err(e) => {
                    error(r, d.pos, ".defaultCacheDuration", e.to_string());
                    None
                }
            },
            None => {
                error(r, p.pos, "", "defaultCacheDuration is required".into());
                None
            }
        };
        match &p.api_version {
            Some(v) if PLUGIN_API_VERSIONS.contains(&v.value.as_str()) => {}
            Some(v) => error(
                r,
                v.pos,
                ".apiVersion",
                format!(
                    "unknown plugin apiVersion `{}` (one of {})",
                    v.value,
                    PLUGIN_API_VERSIONS.join(", ")
                ),
            ),
            None => error(
                r,
                p.pos,
                "",
                "apiVersion is required (credentialprovider.kubelet.k8s.io/v1)".into(),
            ),
        }
        if let Some(pos) = p.token_attributes {
            r.push(
                Severity::Warning,
                pos,
                &format!("{path}.tokenAttributes"),
                "this provider needs the pulling Pod's service account token, which only the kubelet has; the webhook does not use it",
                None,
            );
            continue;
        }
        if r.diags.len() > before
            && r.diags[before..]
                .iter()
                .any(|d| d.severity == Severity::Error)
        {
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
