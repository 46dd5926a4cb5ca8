//! Names this product reads and writes in the cluster: Kubernetes object names and the label it
//! puts on what it manages. Pure.

/// The label on every object the webhook makes (pull secrets, its certificate Secret).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "image-mirror-webhook";

/// The API server refuses an object whose annotations (keys and values) pass 256 KiB.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// A Kubernetes object name (RFC 1123 subdomain): lower-case alphanumeric labels with `-`, joined
/// by `.`, at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// A namespace name (RFC 1123 label): lower-case alphanumerics and `-`, at most 63 characters.
/// Checked before a name goes into an API path, where `/`, `#` or `?` would change the path.
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
}

/// An annotation or label key as the API server accepts one: an optional DNS-subdomain prefix and
/// `/`, then a name of at most 63 characters, alphanumeric at both ends, with `-`, `_` and `.`
/// between (apimachinery's IsQualifiedName).
pub fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let b = name.as_bytes();
    prefix.is_none_or(is_dns_subdomain)
        && !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_names() {
        for good in ["mirror-cred", "a.b-c", "image-mirror", "x1"] {
            assert!(is_dns_subdomain(good), "{good}");
        }
        for bad in ["Mirror", "-x", "x-", "", "a..b", "a_b", &"a".repeat(254)] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
        for good in [
            "k8s.ksyun.com/kci-http-registry",
            "a",
            "A_b.c-D",
            "example.com/Key_1",
        ] {
            assert!(is_qualified_name(good), "{good}");
        }
        for bad in [
            "a/b/c",
            "Not A Valid Key!!",
            "/a",
            "a/",
            "-a",
            "Example.com/a",
            &"a".repeat(64),
        ] {
            assert!(!is_qualified_name(bad), "{bad}");
        }
        for good in ["default", "kube-system", "a", &"a".repeat(63)] {
            assert!(is_dns_label(good), "{good}");
        }
        for bad in [
            "kube-system/secrets/victim#",
            "a.b",
            "a/b",
            "a?b",
            "A",
            "",
            &"a".repeat(64),
        ] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }
}
