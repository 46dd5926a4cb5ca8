//! Serverless profiles: the built-in KCI and ECI ones and the user's, with the annotations each
//! writes and how its pods are recognised.

use crate::policy::diagnostics::Diagnostics;
use crate::policy::document::{Document, ProfileDoc, Spanned};
use crate::policy::{Profile, ProfileMode, Severity};
use crate::yaml::Pos;

const KCI_HTTP_REGISTRY: &str = "k8s.ksyun.com/kci-http-registry";
const KCI_INSECURE_REGISTRY: &str = "k8s.ksyun.com/kci-insecure-registry";
const KCI_HOST_ALIASES: &str = "k8s.ksyun.com/kci-host-aliases";
const KCI_DNS_CONFIG: &str = "k8s.ksyun.com/kci-dns-config";
const ECI_HTTP_REGISTRY: &str = "k8s.aliyun.com/plain-http-registry";
const ECI_INSECURE_REGISTRY: &str = "k8s.aliyun.com/insecure-registry";
const VIRTUAL_KUBELET: (&str, &str) = ("type", "virtual-kubelet");

/// The serverless profiles: KCI (Kingsoft Cloud, on by default as before), ECI (Alibaba Cloud,
/// opt-in), then the user's, each compiled from its document.
pub(super) fn compile(r: &mut Diagnostics, doc: &Document) -> Vec<Profile> {
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

fn mode_of(r: &mut Diagnostics, p: &ProfileDoc, path: &str, default: ProfileMode) -> ProfileMode {
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

fn host_aliases(r: &mut Diagnostics, p: &ProfileDoc, path: &str) -> Option<String> {
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

fn dns_config(r: &mut Diagnostics, p: &ProfileDoc, path: &str) -> Option<String> {
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
    r: &mut Diagnostics,
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
    r: &mut Diagnostics,
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
    r: &mut Diagnostics,
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
    let mode = mode_of(r, p, path, ProfileMode::Auto);
    check_profile(r, p, path, mode);
    let plain_http = annotation("plainHttp");
    let insecure = annotation("insecure");
    let value_with_annotation =
        |r: &mut Diagnostics, what: &str, value: Option<String>| match (annotation(what), value) {
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

/// Annotation keys the API server accepts, at least one registry annotation, and a way to
/// recognise the profile's pods when it is on `auto`.
fn check_profile(r: &mut Diagnostics, p: &ProfileDoc, path: &str, mode: ProfileMode) {
    for (what, key) in &p.annotations {
        if what.value != "separator" && !crate::names::is_qualified_name(&key.value) {
            r.error(
                key.pos,
                &format!("{path}.annotations.{}", what.value),
                format!("`{}` is not an annotation key the API server accepts: an optional DNS-name prefix and `/`, then at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit", key.value),
            );
        }
    }
    let named = |what: &str| p.annotations.iter().any(|(k, _)| k.value == what);
    if !named("plainHttp") && !named("insecure") {
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
}

/// Profiles on `auto` that share a node selector recognise a pod with only that selector as
/// neither's: say so, since such pods get no annotations.
fn note_shared_selectors(r: &mut Diagnostics, doc: &Document, profiles: &[Profile]) {
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
