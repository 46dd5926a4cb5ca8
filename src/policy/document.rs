//! The policy as written: plain data with the place of every value, read by `read` and turned
//! into a `Policy` by `compile`.

pub use super::sources::MirrorSetKind;
use crate::redacted::Redacted;
use crate::yaml::Pos;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Spanned<T> {
    pub value: T,
    pub pos: Pos,
}

#[derive(Debug, Default)]
pub struct Document {
    pub mirrors: Vec<MirrorDoc>,
    pub configs: Vec<ConfigDoc>,
    pub private_registries: Vec<PrivateRegistryDoc>,
    pub registry_mirrors: Vec<RegistryMirrorDoc>,
    pub default_registry: Option<Spanned<String>>,
    pub exclude_namespaces: Vec<Spanned<String>>,
    pub exclude_images: Vec<Spanned<String>>,
    pub pull_secrets_from_namespace: Option<bool>,
    pub kci: ProfileDoc,
    pub eci: ProfileDoc,
    pub profiles: Vec<ProfileDoc>,
    pub verify: VerifyDoc,
    pub annotate_original: Option<bool>,
    pub warnings: Option<bool>,
    pub credential_provider_config: Option<ProviderConfigDoc>,
    pub registries_conf: Option<RegistriesConfDoc>,
    /// By file name, in the order the directory would be read.
    pub registries_conf_d: Vec<RegistriesConfDoc>,
    pub certs_d: Vec<HostsDoc>,
    pub mirror_sets: Vec<MirrorSetDoc>,
    /// `unpullable: warn`: admit an image no source can serve, with a warning.
    pub unpullable_warn: Option<bool>,
    pub empty: bool,
}

#[derive(Debug)]
pub struct MirrorDoc {
    pub key: Spanned<String>,
    pub endpoints: Vec<Spanned<String>>,
    pub rewrites: Vec<(Spanned<String>, Spanned<String>)>,
}

#[derive(Debug, Default)]
pub struct AuthDoc {
    pub username: Option<Spanned<String>>,
    pub password: Option<Spanned<Redacted>>,
    pub auth: Option<Spanned<Redacted>>,
    pub identity_token: Option<Spanned<Redacted>>,
}

#[derive(Debug, Default)]
pub struct TlsDoc {
    pub ca_file: Option<Spanned<String>>,
    pub cert_file: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
    pub insecure_skip_verify: bool,
}

#[derive(Debug)]
pub struct ConfigDoc {
    pub key: Spanned<String>,
    pub auth: Option<AuthDoc>,
    pub tls: TlsDoc,
    pub pull_secret: Option<Spanned<String>>,
    pub credentials_secret: Option<Spanned<String>>,
}

#[derive(Debug)]
pub struct PrivateRegistryDoc {
    pub pos: Pos,
    pub url: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    pub password: Option<Spanned<Redacted>>,
    pub is_default: bool,
    /// RKE's `ecrCredentialPlugin`.
    pub ecr_plugin: Option<EcrPluginDoc>,
}

#[derive(Debug)]
pub struct EcrPluginDoc {
    pub pos: Pos,
    pub access_key_id: Option<Spanned<String>>,
    pub secret_access_key: Option<Spanned<Redacted>>,
    pub session_token: Option<Spanned<Redacted>>,
}

/// A kubelet `CredentialProviderConfig`, as written.
#[derive(Debug, Default)]
pub struct ProviderConfigDoc {
    pub pos: Pos,
    pub api_version: Option<Spanned<String>>,
    pub kind: Option<Spanned<String>>,
    pub providers: Vec<ProviderDoc>,
}

#[derive(Debug, Default)]
pub struct ProviderDoc {
    pub pos: Pos,
    pub name: Option<Spanned<String>>,
    pub match_images: Vec<Spanned<String>>,
    pub default_cache_duration: Option<Spanned<String>>,
    pub api_version: Option<Spanned<String>>,
    pub args: Vec<Spanned<String>>,
    pub env: Vec<(Spanned<String>, Spanned<String>)>,
    /// `tokenAttributes`: service account tokens, which only the kubelet has.
    pub token_attributes: Option<Pos>,
}

#[derive(Debug)]
pub struct RegistryMirrorDoc {
    pub endpoint: Spanned<String>,
    pub ca_cert_path: Option<Spanned<String>>,
    pub pull_credential_config_path: Option<Spanned<String>>,
    pub hosts: Vec<Spanned<String>>,
}

/// A serverless runtime's profile as written: `kci`, `eci`, or an entry of `serverlessProfiles`.
#[derive(Debug, Default)]
pub struct ProfileDoc {
    pub pos: Pos,
    pub name: Option<Spanned<String>>,
    pub enabled: Option<Spanned<String>>,
    pub host_aliases: Option<Spanned<serde_json::Value>>,
    pub dns_config: Option<Spanned<serde_json::Value>>,
    pub node_selector: Vec<(Spanned<String>, Spanned<String>)>,
    pub node_selector_tolerations: Vec<Spanned<String>>,
    pub tolerations: Vec<Spanned<String>>,
    pub labels: Vec<(Spanned<String>, Spanned<String>)>,
    /// Annotation names: plainHttp, insecure, separator, hostAliases, dnsConfig.
    pub annotations: Vec<(Spanned<String>, Spanned<String>)>,
}

#[derive(Debug, Default)]
pub struct VerifyDoc {
    pub enabled: Option<bool>,
    pub timeout: Option<Spanned<String>>,
    pub cache_ttl: Option<Spanned<String>>,
    pub negative_cache_ttl: Option<Spanned<String>>,
    pub pin_digest: Option<bool>,
}

/// One registries.conf file: the main one or a drop-in.
#[derive(Debug, Default)]
pub struct RegistriesConfDoc {
    /// `registries.conf`, or `registries.conf.d/<name>`.
    pub file: String,
    pub registries: Vec<SourceRegistryDoc>,
    /// `unqualified-search-registries`; `Some(empty)` clears what an earlier file set.
    pub search: Option<Vec<Spanned<String>>>,
    pub aliases: Vec<(Spanned<String>, Spanned<String>)>,
    pub short_name_mode: Option<Spanned<String>>,
    /// Version 1 tables (`[registries.search]` and the like), where they were written.
    pub v1: Option<V1Doc>,
    /// Where a version 2 key was written, to refuse mixing the versions.
    pub v2_at: Option<Pos>,
}

#[derive(Debug, Default)]
pub struct V1Doc {
    pub pos: Pos,
    pub search: Vec<Spanned<String>>,
    pub insecure: Vec<Spanned<String>>,
    pub block: Vec<Spanned<String>>,
}

/// A `[[registry]]` table.
#[derive(Debug, Default)]
pub struct SourceRegistryDoc {
    pub pos: Pos,
    pub prefix: Option<Spanned<String>>,
    pub location: Option<Spanned<String>>,
    pub insecure: bool,
    pub blocked: bool,
    pub mirror_by_digest_only: bool,
    pub pull_from_mirror: Option<Spanned<String>>,
    pub mirrors: Vec<SourceMirrorDoc>,
}

/// A `[[registry.mirror]]` table.
#[derive(Debug, Default)]
pub struct SourceMirrorDoc {
    pub pos: Pos,
    pub location: Option<Spanned<String>>,
    pub insecure: bool,
    pub pull_from_mirror: Option<Spanned<String>>,
}

/// One containerd hosts.toml, under the directory name it would have in `config_path`.
#[derive(Debug, Default)]
pub struct HostsDoc {
    pub dir: Spanned<String>,
    pub server: Option<Spanned<String>>,
    /// The server's own settings (top-level `capabilities`, `skip_verify`, ...).
    pub server_host: HostEntryDoc,
    pub hosts: Vec<HostEntryDoc>,
}

/// A `[host."url"]` table, or the top level's settings for `server`.
#[derive(Debug, Default)]
pub struct HostEntryDoc {
    pub url: Spanned<String>,
    pub capabilities: Option<Vec<Spanned<String>>>,
    pub skip_verify: Option<bool>,
    pub override_path: bool,
    pub ca: Vec<Spanned<String>>,
    pub client: Vec<Spanned<String>>,
    pub header: Vec<(Spanned<String>, Vec<String>)>,
}

/// An OpenShift ImageDigestMirrorSet, ImageTagMirrorSet or ImageContentSourcePolicy.
#[derive(Debug, Default)]
pub struct MirrorSetDoc {
    pub kind: MirrorSetKind,
    /// `kind/name`, as decisions name it.
    pub name: String,
    pub entries: Vec<MirrorSetEntryDoc>,
}

#[derive(Debug, Default)]
pub struct MirrorSetEntryDoc {
    pub pos: Pos,
    pub source: Option<Spanned<String>>,
    pub mirrors: Vec<Spanned<String>>,
    pub never_contact_source: Option<Pos>,
}
