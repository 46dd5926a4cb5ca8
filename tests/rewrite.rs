//! Decisions for single images under every kind of rule: K3s mirrors and rewrites, RKE default
//! registries, Anthos registry mirrors, their precedence, exclusions and idempotency.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use image_mirror_webhook::policy::Policy;
use image_mirror_webhook::rewrite::decide;

use common::policy;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Runs a table of (image, expected result, expected rule) rows against one policy; `None` as the
/// rule means the image must stay as it is. Every rewritten result is run again and must stay.
fn table(p: &Policy, rows: &[(&str, &str, Option<&str>)]) {
    let mut failures = Vec::new();
    for (image, want, rule) in rows {
        let d = decide(p, image, None);
        let got = d.result.clone().unwrap_or_else(|| "<invalid>".into());
        if got != *want || d.rule.as_deref() != *rule {
            failures.push(format!(
                "{image}: expected {want} by {rule:?}, got {got} by {:?} ({})",
                d.rule, d.reason
            ));
        }
        if d.changed() {
            let again = decide(p, &got, None);
            if again.changed() {
                failures.push(format!(
                    "{image}: second pass changed {got} to {:?}",
                    again.result
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn k3s_mirrors_and_rewrites() {
    let p = policy(
        r#"
mirrors:
  docker.io:
    endpoint:
      - "https://registry.example.com:5000"
      - "https://second.example.com"
    rewrite:
      "^rancher/(.*)": "mirrorproject/rancher-images/$1"
      "^library/(redis)$": "cache/${1}-mirror"
      "^bitnami/": "vendor/bitnami/"
  quay.io:
    endpoint: ["http://quay-mirror.local:5000"]
  "registry.example.com:5000":
    endpoint: ["https://ignored.example.com"]
  localhost:5000:
    endpoint: ["https://from-localhost.example.com"]
"#,
    );
    let dk = Some("mirrors[docker.io].endpoint[0]");
    let qy = Some("mirrors[quay.io].endpoint[0]");
    let dig = format!("nginx:1.25@{DIGEST}");
    let dig_out = format!("registry.example.com:5000/library/nginx:1.25@{DIGEST}");
    let only_dig = format!("nginx@{DIGEST}");
    let only_dig_out = format!("registry.example.com:5000/library/nginx@{DIGEST}");
    table(
        &p,
        &[
            (
                "nginx:1.25",
                "registry.example.com:5000/library/nginx:1.25",
                dk,
            ),
            ("nginx", "registry.example.com:5000/library/nginx", dk),
            (
                "library/nginx:1",
                "registry.example.com:5000/library/nginx:1",
                dk,
            ),
            (
                "docker.io/library/nginx:1",
                "registry.example.com:5000/library/nginx:1",
                dk,
            ),
            (
                "index.docker.io/nginx:1",
                "registry.example.com:5000/library/nginx:1",
                dk,
            ),
            (&dig, &dig_out, dk),
            (&only_dig, &only_dig_out, dk),
            // the documented K3s example
            (
                "docker.io/rancher/mirrored-pause:3.6",
                "registry.example.com:5000/mirrorproject/rancher-images/mirrored-pause:3.6",
                dk,
            ),
            (
                "rancher/coredns-coredns:1.6.3",
                "registry.example.com:5000/mirrorproject/rancher-images/coredns-coredns:1.6.3",
                dk,
            ),
            // rules see library/redis, not redis; ${1} is group 1
            (
                "redis:7",
                "registry.example.com:5000/cache/redis-mirror:7",
                dk,
            ),
            // unanchored at the end: every match is replaced, the rest kept
            (
                "bitnami/postgresql:16",
                "registry.example.com:5000/vendor/bitnami/postgresql:16",
                dk,
            ),
            // a rule that does not match leaves the path alone
            (
                "myorg/rancher:1",
                "registry.example.com:5000/myorg/rancher:1",
                dk,
            ),
            (
                "quay.io/coreos/etcd:v3.5.0",
                "quay-mirror.local:5000/coreos/etcd:v3.5.0",
                qy,
            ),
            // keys match host[:port] exactly
            (
                "registry.example.com/app:1",
                "registry.example.com/app:1",
                None,
            ),
            (
                "localhost:5000/app",
                "from-localhost.example.com/app",
                Some("mirrors[localhost:5000].endpoint[0]"),
            ),
            ("localhost/app", "localhost/app", None),
            // Docker Hub's other spellings are other registries
            (
                "registry-1.docker.io/library/nginx",
                "registry-1.docker.io/library/nginx",
                None,
            ),
            ("Docker.io/nginx", "Docker.io/nginx", None),
            ("gcr.io/pause:3.9", "gcr.io/pause:3.9", None),
            // already on a mirror endpoint: left alone, even where a mirror exists for that host
            (
                "registry.example.com:5000/library/nginx:1",
                "registry.example.com:5000/library/nginx:1",
                None,
            ),
            (
                "second.example.com/library/nginx:1",
                "second.example.com/library/nginx:1",
                None,
            ),
            (
                "quay-mirror.local:5000/coreos/etcd:v3",
                "quay-mirror.local:5000/coreos/etcd:v3",
                None,
            ),
            // an image with no valid registry host
            ("foo_bar.com/app", "foo_bar.com/app", None),
        ],
    );
    let invalid = decide(&p, "Nginx:1", None);
    assert_eq!(invalid.result, None);
    assert!(invalid
        .error
        .as_deref()
        .unwrap_or_default()
        .contains("lowercase"));
}

#[test]
fn first_matching_rewrite_in_file_order_wins() {
    let p = policy(
        r#"
mirrors:
  docker.io:
    endpoint: ["mirror.example.com"]
    rewrite:
      "^team/(.*)": "first/$1"
      "^team/app$": "second/app"
"#,
    );
    table(
        &p,
        &[(
            "team/app:1",
            "mirror.example.com/first/app:1",
            Some("mirrors[docker.io].endpoint[0]"),
        )],
    );
    let p = policy(
        r#"
mirrors:
  docker.io:
    endpoint: ["mirror.example.com"]
    rewrite:
      "^team/app$": "second/app"
      "^team/(.*)": "first/$1"
"#,
    );
    table(
        &p,
        &[(
            "team/app:1",
            "mirror.example.com/second/app:1",
            Some("mirrors[docker.io].endpoint[0]"),
        )],
    );
}

#[test]
fn wildcard_mirror_and_its_precedence() {
    let p = policy(
        r#"
mirrors:
  "*":
    endpoint: ["https://all.example.com"]
  quay.io:
    endpoint: ["https://quay.example.com"]
  docker.io: {}
  gcr.io:
    endpoint: ["https://gcr.io"]
"#,
    );
    let all = Some("mirrors[*].endpoint[0]");
    table(
        &p,
        &[
            ("nginx", "all.example.com/library/nginx", all),
            ("ghcr.io/org/app:1", "all.example.com/org/app:1", all),
            ("localhost:5000/app", "all.example.com/app", all),
            (
                "quay.io/a/b",
                "quay.example.com/a/b",
                Some("mirrors[quay.io].endpoint[0]"),
            ),
            // the first endpoint is the registry itself: pulled from upstream
            ("gcr.io/pause", "gcr.io/pause", None),
            ("all.example.com/app", "all.example.com/app", None),
        ],
    );
}

#[test]
fn rke_default_registry() {
    let p = policy(
        r#"
private_registries:
  - url: myregistry.com
  - url: 1.1.1.1:5555/artifactory
    is_default: true
  - url: registry.com
    is_default: true
"#,
    );
    let rule = Some("private_registries[1]");
    table(
        &p,
        &[
            // string concatenation with the image as written: no library/
            (
                "rancher/rke-tools:v0.1.14",
                "1.1.1.1:5555/artifactory/rancher/rke-tools:v0.1.14",
                rule,
            ),
            ("nginx:1.25", "1.1.1.1:5555/artifactory/nginx:1.25", rule),
            ("busybox", "1.1.1.1:5555/artifactory/busybox", rule),
            // written with a registry, Docker Hub's included: not a default case
            (
                "docker.io/library/nginx:1",
                "docker.io/library/nginx:1",
                None,
            ),
            ("quay.io/a/b", "quay.io/a/b", None),
            ("myregistry.com/app", "myregistry.com/app", None),
            // the output is recognised and left alone
            (
                "1.1.1.1:5555/artifactory/nginx:1.25",
                "1.1.1.1:5555/artifactory/nginx:1.25",
                None,
            ),
        ],
    );
    let own = policy("defaultRegistry: registry.local:5000\nprivate_registries:\n  - url: registry.com\n    is_default: true\n");
    table(
        &own,
        &[(
            "nginx",
            "registry.local:5000/nginx",
            Some("defaultRegistry"),
        )],
    );
}

#[test]
fn mirrors_take_precedence_over_the_default_registry() {
    let p = policy(
        r#"
defaultRegistry: registry.local
mirrors:
  docker.io:
    endpoint: ["https://hub-mirror.local"]
"#,
    );
    table(
        &p,
        &[(
            "nginx",
            "hub-mirror.local/library/nginx",
            Some("mirrors[docker.io].endpoint[0]"),
        )],
    );
}

#[test]
fn anthos_registry_mirrors() {
    let p = policy(
        r#"
registryMirrors:
  - endpoint: https://172.18.0.20:5000/v2/test-namespace
    caCertPath: /root/ca.crt
  - endpoint: https://second.example.com
"#,
    );
    let rule = Some("registryMirrors[0]");
    table(
        &p,
        &[
            (
                "gcr.io/kubernetes-e2e-test-images/nautilus:1.0",
                "172.18.0.20:5000/test-namespace/kubernetes-e2e-test-images/nautilus:1.0",
                rule,
            ),
            (
                "nginx:1",
                "172.18.0.20:5000/test-namespace/library/nginx:1",
                rule,
            ),
            ("k8s.gcr.io/pause:3.1", "k8s.gcr.io/pause:3.1", None),
            (
                "172.18.0.20:5000/test-namespace/library/nginx:1",
                "172.18.0.20:5000/test-namespace/library/nginx:1",
                None,
            ),
        ],
    );
    let hosts =
        policy("registryMirrors:\n  - endpoint: https://m.example.com\n    hosts: [quay.io]\n");
    table(
        &hosts,
        &[
            (
                "quay.io/a/b:1",
                "m.example.com/a/b:1",
                Some("registryMirrors[0]"),
            ),
            ("gcr.io/a:1", "gcr.io/a:1", None),
            ("nginx", "nginx", None),
        ],
    );
}

#[test]
fn exclusions() {
    let p = policy(
        r#"
mirrors:
  "*":
    endpoint: ["mirror.example.com"]
exclude:
  images: ['^docker\.io/library/busybox$', 'internal']
"#,
    );
    let all = Some("mirrors[*].endpoint[0]");
    table(
        &p,
        &[
            ("busybox:1.36", "busybox:1.36", None),
            (
                "busybox-extra:1",
                "mirror.example.com/library/busybox-extra:1",
                all,
            ),
            ("quay.io/internal/tool", "quay.io/internal/tool", None),
            ("nginx", "mirror.example.com/library/nginx", all),
        ],
    );
    let d = decide(&p, "busybox", None);
    assert!(d.reason.contains("exclude.images[0]"), "{}", d.reason);
}

#[test]
fn rewrite_output_that_would_not_parse_is_refused() {
    let p = policy(
        r#"
mirrors:
  docker.io:
    endpoint: ["mirror.example.com"]
    rewrite:
      "^library/(.*)": "Upper/$1"
"#,
    );
    let d = decide(&p, "nginx:1", None);
    assert!(!d.changed(), "{d:?}");
    assert!(d.reason.contains("invalid"), "{}", d.reason);
}

/// Rules are matched without Unicode tables (paths are ASCII); a rule that needs them still works,
/// and so do case-insensitive and word-class rules, the same as with them.
#[test]
fn rules_that_need_unicode_still_compile_and_ascii_ones_match_the_same() {
    let p = policy(
        "mirrors:\n  docker.io:\n    endpoint: [\"https://m.example.com\"]\n    rewrite:\n      '^\\p{Ll}+/keep$': 'kept/$0'\n      '(?i)^TEAM/(\\w+)$': 'teams/${1}'\n      '^(.)(.*)$': 'x$1$2'\n",
    );
    table(
        &p,
        &[
            (
                "abc/keep:1",
                "m.example.com/kept/abc/keep:1",
                Some("mirrors[docker.io].endpoint[0]"),
            ),
            (
                "team/web_1:2",
                "m.example.com/teams/web_1:2",
                Some("mirrors[docker.io].endpoint[0]"),
            ),
            (
                "nginx:1",
                "m.example.com/xlibrary/nginx:1",
                Some("mirrors[docker.io].endpoint[0]"),
            ),
        ],
    );
}
