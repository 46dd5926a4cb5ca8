//! The keys each level of the policy knows, and where a key found at the wrong level belongs.

pub(super) const TOP_KEYS: &[&str] = &[
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
    "registries.conf",
    "registries.conf.d",
    "certs.d",
    "imageMirrorSets",
    "unpullable",
];

/// Keys of RKE's `cluster.yml` and Anthos's cluster configuration that mean nothing at admission.
pub(super) const RKE_KEYS: &[&str] = &[
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
pub(super) const ANTHOS_KEYS: &[&str] = &[
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

pub(super) const PROFILE_KEYS: &[&str] = &[
    "name",
    "enabled",
    "match",
    "annotations",
    "hostAliases",
    "dnsConfig",
];
pub(super) const MATCH_KEYS: &[&str] = &[
    "nodeSelector",
    "nodeSelectorTolerations",
    "tolerations",
    "labels",
];
pub(super) const ANNOTATION_KEYS: &[&str] = &[
    "plainHttp",
    "insecure",
    "separator",
    "hostAliases",
    "dnsConfig",
];

pub(super) const MIRROR_KEYS: &[&str] = &["endpoint", "rewrite"];
pub(super) const CONFIG_KEYS: &[&str] = &["auth", "tls", "pullSecret", "credentialsSecret"];
pub(super) const AUTH_KEYS: &[&str] = &["username", "password", "auth", "identity_token"];
pub(super) const TLS_KEYS: &[&str] = &["ca_file", "cert_file", "key_file", "insecure_skip_verify"];
pub(super) const EXCLUDE_KEYS: &[&str] = &["namespaces", "images"];
pub(super) const PULL_SECRETS_KEYS: &[&str] = &["fromNamespace"];

/// Where keys belong, for keys that sit at one level of the policy: an unknown key found at
/// another level was most likely indented too little or too much. The first home that lists a
/// key is its home (`auth` is a configs entry's before it is a key of its `auth`). Keys shared by
/// several levels (`name`, `enabled`, `timeout`) are left out.
const HOMES: &[(&[&str], &str)] = &[
    (MIRROR_KEYS, "mirrors.<registry>"),
    (CONFIG_KEYS, "configs.<registry>"),
    (AUTH_KEYS, "configs.<registry>.auth"),
    (TLS_KEYS, "configs.<registry>.tls"),
    (&["url", "is_default"], "private_registries[]"),
    (EXCLUDE_KEYS, "exclude"),
    (PULL_SECRETS_KEYS, "pullSecrets"),
    (&["pinDigest", "cacheTTL", "negativeCacheTTL"], "verify"),
    (
        &["matchImages", "defaultCacheDuration"],
        "credentialProviderConfig.providers[]",
    ),
];

/// The hint for a key that is known elsewhere in the policy: where it belongs.
pub(super) fn misplaced(name: &str, path: &str) -> Option<String> {
    let (_, home) = HOMES.iter().find(|(keys, _)| keys.contains(&name))?;
    let here = if path.is_empty() {
        "the top level"
    } else {
        path
    };
    Some(format!(
        "`{name}` is a key of {home}, not of {here}: is it indented to the wrong level?"
    ))
}

/// A field of a registry's entry written where a registry goes: indented one level too little.
pub(super) fn slipped_field(name: &str, fields: &[&str], map: &str) -> Option<String> {
    fields.contains(&name).then(|| {
        format!("`{name}` is a key of each {map} entry: indent it under its registry ({map}.<registry>.{name})")
    })
}
