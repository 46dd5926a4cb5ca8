//! The policy as written: plain data with the place of every value, read by `read` and turned
//! into a `Policy` by `compile`.

use crate::redacted::Redacted;
use crate::yaml::Pos;

#[derive(Debug, Clone, PartialEq)]
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
