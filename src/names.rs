//! Names this product reads and writes in the cluster: Kubernetes object names and the label it
//! puts on what it manages. Pure.

/// The label on every object the webhook makes (pull secrets, its certificate Secret).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "image-mirror-webhook";

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
    }
}
