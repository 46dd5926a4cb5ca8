//! The mirror policy: one YAML document that is a superset of K3s `registries.yaml`, RKE
//! `private_registries` and Anthos `registryMirrors`, plus this product's own keys.
//!
//! `read` reads the YAML into `document`'s plain data and `compile` turns that into the `Policy`
//! the request path uses, with all regexes and lookups built once; both report every problem with
//! its place into `diagnostics`.

mod compile;
mod diagnostics;
mod document;
mod endpoint;
mod read;
pub mod sources;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

// Byte regexes: repository paths and image names are ASCII, so Unicode tables buy nothing and
// cost about 40% of each compiled regex (`compile::compile_regex` falls back when a pattern
// needs them).
use regex::bytes::{Regex, RegexSet};

pub use diagnostics::{Diagnostic, Severity};
pub use endpoint::{Endpoint, Scheme};

use crate::yaml::Pos;

/// The largest policy accepted by default: what a ConfigMap can hold.
pub const MAX_POLICY_BYTES: usize = 1024 * 1024;

/// The sample policy `serve` runs on when given none.
pub const SAMPLE_POLICY: &str = include_str!("sample-policy.yaml");

use crate::redacted::Redacted;

/// Credentials the policy holds for one registry host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<Redacted>,
    pub auth: Option<Redacted>,
    pub identity_token: Option<Redacted>,
}

/// TLS settings for one registry host, as K3s `configs.<host>.tls` has them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tls {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub insecure_skip_verify: bool,
}

/// `configs.<host>` (and what RKE and Anthos entries contribute for their hosts).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistryConfig {
    pub credentials: Option<Credentials>,
    pub tls: Tls,
    /// A Secret the user manages, attached to pods as it is.
    pub pull_secret: Option<String>,
    /// A Docker `config.json` on the webhook's file system (Anthos `pullCredentialConfigPath`).
    pub credential_file: Option<String>,
    /// A Secret in the webhook's own namespace that holds the credentials (basic-auth or
    /// dockerconfigjson): the recommended form, which keeps passwords out of the policy.
    pub credentials_secret: Option<String>,
    /// Tokens from ECR's GetAuthorizationToken, for an ECR registry.
    pub ecr: Option<EcrSource>,
    /// Headers sent with every request to the host (hosts.toml `[header]`), for verify. Their
    /// values may be keys, so they are held as credentials are.
    pub headers: Vec<(String, Redacted)>,
}

/// Where an ECR registry's tokens come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrSource {
    pub registry: crate::ecr::Registry,
    /// RKE's `ecrCredentialPlugin` keys; `None`: the webhook's own AWS identity.
    pub keys: Option<AwsKeys>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsKeys {
    pub access_key_id: String,
    pub secret_access_key: Redacted,
    pub session_token: Option<Redacted>,
}

/// Where a registry's credentials come from, as `check` and `dry-run` name it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// `pullSecret`: a Secret the user keeps, attached as it is.
    UserSecret(String),
    /// Inline in the policy.
    Policy,
    /// A Docker config file on the webhook's file system.
    File(String),
    /// A Secret in the webhook's namespace.
    Secret(String),
    Ecr(EcrSource),
    /// A kubelet credential provider plugin, by name.
    Provider(String),
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::UserSecret(n) => write!(f, "Secret {n}, attached as it is"),
            CredentialSource::Policy => f.write_str("credentials in the policy"),
            CredentialSource::File(p) => write!(f, "Docker config file {p}"),
            CredentialSource::Secret(n) => write!(f, "Secret {n} in the webhook's namespace"),
            CredentialSource::Ecr(e) => write!(
                f,
                "ECR token for account {} in {}, from {}",
                e.registry.account,
                e.registry.region,
                match e.keys {
                    Some(_) => "the ecrCredentialPlugin keys",
                    None => "the webhook's AWS identity",
                }
            ),
            CredentialSource::Provider(n) => write!(f, "kubelet credential provider {n}"),
        }
    }
}

impl RegistryConfig {
    /// Where this registry's credentials come from: the user's own Secret, else what the webhook
    /// reads itself (`read_source`).
    pub fn source(&self) -> Option<CredentialSource> {
        match &self.pull_secret {
            Some(n) => Some(CredentialSource::UserSecret(n.clone())),
            None => self.read_source(),
        }
    }

    /// The credentials the webhook reads itself, for managed Secrets and verify.
    pub fn read_source(&self) -> Option<CredentialSource> {
        if let Some(n) = &self.credentials_secret {
            Some(CredentialSource::Secret(n.clone()))
        } else if self.credentials.is_some() {
            Some(CredentialSource::Policy)
        } else if let Some(p) = &self.credential_file {
            Some(CredentialSource::File(p.clone()))
        } else {
            self.ecr.clone().map(CredentialSource::Ecr)
        }
    }

    /// Whether the webhook makes a managed pull secret for this registry: it has credentials and
    /// the user names no Secret of their own for it.
    pub fn wants_managed_secret(&self) -> bool {
        self.pull_secret.is_none() && self.read_source().is_some()
    }
}

/// One rewrite rule of a mirror: a regex over the repository path and its replacement.
#[derive(Debug, Clone)]
pub struct Rewrite {
    pub regex: Regex,
    pub replacement: String,
}

#[derive(Debug, Clone)]
pub struct MirrorEndpoint {
    pub endpoint: Endpoint,
    /// How decisions name it: `mirrors[docker.io].endpoint[0]`, `registryMirrors[0]`.
    pub rule: String,
}

/// The endpoints that serve one registry, in the order they are tried.
#[derive(Debug, Clone)]
pub struct Mirror {
    pub key: String,
    pub endpoints: Vec<MirrorEndpoint>,
    pub rewrites: Vec<Rewrite>,
    /// All rewrite regexes at once, so the first match costs one scan however many rules there
    /// are; only for more than a few rules, since a set costs as much memory as its regexes again.
    pub rewrite_set: Option<RegexSet>,
}

/// Where images written without a registry go (RKE `is_default`, or `defaultRegistry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRegistry {
    /// Prepended with a `/`, exactly as RKE does: `registry.com` or `1.1.1.1:5555/artifactory`.
    pub prefix: String,
    /// The host part of the prefix.
    pub host: String,
    pub rule: String,
}

/// When a serverless profile applies: to the pods it recognises, to every pod, or to none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProfileMode {
    #[default]
    Auto,
    Always,
    Never,
}

/// A serverless runtime (virtual-kubelet provider) whose pods carry registry settings as
/// annotations: how its pods are recognised and which annotations it reads. KCI and ECI are
/// built in; `serverlessProfiles` adds others.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub name: String,
    pub mode: ProfileMode,
    /// nodeSelector (or required node affinity `In`) values of the runtime's virtual nodes.
    pub node_selector: Vec<(String, String)>,
    /// When set, the node selector recognises a pod only together with one of these tolerations.
    pub node_selector_tolerations: Vec<String>,
    /// Tolerations that alone say the pod runs on this runtime.
    pub tolerations: Vec<String>,
    /// Pod labels that alone say the pod runs on this runtime.
    pub labels: Vec<(String, String)>,
    /// Annotation listing registries pulled over plain HTTP.
    pub plain_http: Option<String>,
    /// Annotation listing registries whose certificate is not verified.
    pub insecure: Option<String>,
    /// Between the hosts of those lists.
    pub separator: String,
    /// (annotation, compact JSON) of the host aliases and DNS config to pass on.
    pub host_aliases: Option<(String, String)>,
    pub dns_config: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verify {
    pub enabled: bool,
    pub timeout: Duration,
    pub cache_ttl: Duration,
    pub negative_cache_ttl: Duration,
    pub pin_digest: bool,
}

impl Default for Verify {
    fn default() -> Self {
        Verify {
            enabled: false,
            timeout: Duration::from_secs(1),
            cache_ttl: Duration::from_secs(30),
            negative_cache_ttl: Duration::from_secs(10),
            pin_digest: false,
        }
    }
}

/// A compiled policy: everything the request path needs, built and validated once at load.
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) mirrors: HashMap<String, Mirror>,
    pub(crate) wildcard: Option<Mirror>,
    pub(crate) default_registry: Option<DefaultRegistry>,
    pub(crate) exclude_namespaces: HashSet<String>,
    pub(crate) exclude_images: RegexSet,
    pub(crate) exclude_image_patterns: Vec<String>,
    /// Registries that are this policy's own output: images already there are left alone, which
    /// keeps a second pass from changing anything.
    pub(crate) own_registries: HashSet<String>,
    pub(crate) configs: HashMap<String, RegistryConfig>,
    pub(crate) wildcard_config: Option<RegistryConfig>,
    pub(crate) http_registries: HashSet<String>,
    pub(crate) insecure_registries: HashSet<String>,
    /// registries.conf `insecure` hosts: verify tries HTTPS, then plain HTTP.
    pub(crate) http_fallback: HashSet<String>,
    /// KCI, ECI, then the user's `serverlessProfiles`, in that order.
    pub profiles: Vec<Profile>,
    pub verify: Verify,
    pub annotate_original: bool,
    pub warnings: bool,
    pub pull_secrets_from_namespace: bool,
    /// `credentialProviderConfig`'s providers, in order.
    pub credential_providers: Vec<crate::credprovider::Provider>,
    /// registries.conf (with its drop-ins), hosts.toml and OpenShift mirror sets, merged.
    pub sources: sources::Sources,
    /// `unpullable: warn`: admit what no source could serve, with a warning.
    pub unpullable_warn: bool,
}

/// A policy that loaded, with what `check` has to say about it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub policy: Policy,
    pub diagnostics: Vec<Diagnostic>,
}

/// A policy that did not load: at least one diagnostic is an error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", first_error(.diagnostics))]
pub struct Rejected {
    pub diagnostics: Vec<Diagnostic>,
}

fn first_error(diags: &[Diagnostic]) -> String {
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    match diags.iter().find(|d| d.severity == Severity::Error) {
        Some(d) if errors > 1 => format!("{d} (and {} more errors)", errors - 1),
        Some(d) => d.to_string(),
        None => "invalid policy".into(),
    }
}

impl Policy {
    /// Reads, validates and compiles a policy document of at most `MAX_POLICY_BYTES`.
    pub fn load(text: &str) -> Result<Loaded, Rejected> {
        Policy::load_limited(text, MAX_POLICY_BYTES)
    }

    /// Reads, validates and compiles a policy document of at most `max_bytes`; a larger one is
    /// refused before it is read, so its size never becomes memory or time.
    pub fn load_limited(text: &str, max_bytes: usize) -> Result<Loaded, Rejected> {
        Policy::load_with_cluster_sets(text, max_bytes, "")
    }

    /// As `load_limited`, with the cluster's ImageDigestMirrorSet, ImageTagMirrorSet and
    /// ImageContentSourcePolicy objects (a YAML list; empty for none) merged after the policy's.
    pub fn load_with_cluster_sets(
        text: &str,
        max_bytes: usize,
        cluster_sets: &str,
    ) -> Result<Loaded, Rejected> {
        if text.len() > max_bytes {
            return Err(Rejected {
                diagnostics: vec![Diagnostic {
                    severity: Severity::Error,
                    pos: Pos { line: 1, col: 1 },
                    path: String::new(),
                    message: format!(
                        "the policy is {} bytes; at most {max_bytes} are accepted",
                        text.len()
                    ),
                    hint: Some("split it, or raise serve --max-policy-bytes".into()),
                }],
            });
        }
        let (mut doc, mut d) = read::read(text);
        if let (Some(doc), false) = (doc.as_mut(), cluster_sets.is_empty()) {
            read::cluster_mirror_sets(cluster_sets, doc, &mut d);
        }
        let policy = doc.map(|doc| compile::compile(doc, &mut d));
        let mut diagnostics = d.list;
        diagnostics.sort_by_key(|d| (d.pos.line, d.pos.col));
        match policy {
            Some(policy) if !diagnostics.iter().any(|d| d.severity == Severity::Error) => {
                Ok(Loaded {
                    policy,
                    diagnostics,
                })
            }
            _ => Err(Rejected { diagnostics }),
        }
    }

    /// The mirror for a registry host: its own entry, else `"*"`.
    pub(crate) fn mirror_for(&self, host: &str) -> Option<&Mirror> {
        self.mirrors.get(host).or(self.wildcard.as_ref())
    }

    /// `configs` are looked up by the host images are pulled from; `docker.io` also covers
    /// `registry-1.docker.io`; `"*"` is the fallback.
    pub fn config_for(&self, host: &str) -> Option<&RegistryConfig> {
        let host = crate::reference::canonical_host(host);
        self.configs.get(host).or(self.wildcard_config.as_ref())
    }

    /// Where the credentials for pulling `image` from `host` come from: the registry's `configs`
    /// source, else the first credential provider that serves the image.
    pub fn credential_source(&self, host: &str, image: &str) -> Option<CredentialSource> {
        self.config_for(host)
            .and_then(RegistryConfig::source)
            .or_else(|| self.provider_source(image))
    }

    /// As `credential_source`, leaving out a `pullSecret` the user keeps: what the webhook reads.
    pub fn read_source(&self, host: &str, image: &str) -> Option<CredentialSource> {
        self.config_for(host)
            .and_then(RegistryConfig::read_source)
            .or_else(|| self.provider_source(image))
    }

    fn provider_source(&self, image: &str) -> Option<CredentialSource> {
        self.providers_for(image)
            .next()
            .map(|p| CredentialSource::Provider(p.name.clone()))
    }

    /// The ECR registries the policy gets tokens for, with where from.
    pub fn ecr_registries(&self) -> impl Iterator<Item = (&str, &EcrSource)> {
        self.configs
            .iter()
            .filter_map(|(h, c)| c.ecr.as_ref().map(|e| (h.as_str(), e)))
    }

    /// The credential providers that serve `image`, in the config's order.
    pub fn providers_for<'a>(
        &'a self,
        image: &'a str,
    ) -> impl Iterator<Item = &'a crate::credprovider::Provider> + 'a {
        self.credential_providers
            .iter()
            .filter(move |p| p.serves(image))
    }

    pub fn is_http(&self, host: &str) -> bool {
        self.http_registries.contains(host)
    }

    pub fn is_insecure(&self, host: &str) -> bool {
        self.insecure_registries.contains(host)
    }

    pub fn falls_back_to_http(&self, host: &str) -> bool {
        self.http_fallback.contains(host)
    }

    /// Registries whose policy credentials become managed pull secrets, in a stable order.
    pub fn credential_hosts(&self) -> Vec<&str> {
        let mut hosts: Vec<&str> = self
            .configs
            .iter()
            .filter(|(_, c)| c.wants_managed_secret())
            .map(|(h, _)| h.as_str())
            .collect();
        hosts.sort_unstable();
        hosts
    }

    /// One line saying that the policy's credentials make no pull secret, when `pull_secrets`
    /// (`serve --pull-secrets`) is off and there are some.
    pub fn unused_credentials(&self, pull_secrets: bool) -> Option<String> {
        let hosts = self.credential_hosts();
        (!pull_secrets && !hosts.is_empty()).then(|| {
            format!(
                "the policy has credentials for {}; pull secrets are made from them only with serve --pull-secrets (chart: pullSecrets.enabled)",
                hosts.join(", ")
            )
        })
    }

    pub fn excludes_namespace(&self, ns: &str) -> bool {
        self.exclude_namespaces.contains(ns)
    }
}
