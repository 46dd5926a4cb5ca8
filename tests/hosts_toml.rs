//! containerd's hosts.toml pasted under `certs.d`, checked against containerd's own tables
//! (`core/remotes/docker/config/hosts_test.go`: `TestParseHostFile`, `TestDefaultHosts`): the
//! hosts it reads, in order, become the pull sources an image reference can name.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::fake_registry::FakeRegistry;
use image_mirror_webhook::policy::{Policy, Severity};
use image_mirror_webhook::rewrite::decide;
use image_mirror_webhook::verify::{Access, Checker};

const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// containerd's `TestParseHostFile` file, as it is.
const PARSE_HOST_FILE: &str = r#"
server = "https://test-default.registry"
ca = "/etc/path/default"
[header]
  x-custom-1 = "custom header"

[host."https://mirror.registry"]
  capabilities = ["pull"]
  ca = "/etc/certs/mirror.pem"
  skip_verify = false
  [host."https://mirror.registry".header]
    x-custom-2 = ["value1", "value2"]

[host."https://mirror-bak.registry/us"]
  capabilities = ["pull"]
  skip_verify = true

[host."http://mirror.registry"]
  capabilities = ["pull"]

[host."https://test-1.registry"]
  capabilities = ["pull", "resolve", "push", "referrers"]
  ca = ["/etc/certs/test-1-ca.pem", "/etc/certs/special.pem"]
  client = [["/etc/certs/client.cert", "/etc/certs/client.key"],["/etc/certs/client.pem", ""]]

[host."https://test-2.registry"]
  client = "/etc/certs/client.pem"

[host."https://test-3.registry"]
  client = ["/etc/certs/client-1.pem", "/etc/certs/client-2.pem"]

[host."https://no-referrers.registry"]
  capabilities = ["pull", "resolve", "push"]
  client = ["/etc/certs/client-1.pem", "/etc/certs/client-2.pem"]

[host."https://noncompliantmirror.registry/v2/namespaceprefix"]
  capabilities = ["pull"]
  override_path = true

[host."https://noprefixnoncompliant.registry"]
  override_path = true

[host."https://onlyheader.registry".header]
  x-custom-1 = "justaheader"

[host."https://dial-timeout.registry"]
  dial_timeout = "3s"
"#;

fn certs_d(dirs: &[(&str, &str)]) -> String {
    let mut y = String::from("certs.d:\n");
    for (dir, text) in dirs {
        y.push_str(&format!("  {dir}: |\n"));
        for line in text.lines() {
            if line.trim().is_empty() {
                y.push('\n');
            } else {
                y.push_str(&format!("    {line}\n"));
            }
        }
    }
    y
}

fn load(y: &str) -> image_mirror_webhook::policy::Loaded {
    Policy::load(y).unwrap_or_else(|e| panic!("{e}\n{y}"))
}

/// The locations an image is pulled from, in order, as `PullSource`s.
fn sources(p: &Policy, image: &str) -> Vec<String> {
    let r = image_mirror_webhook::reference::Reference::parse(image).unwrap();
    let entry = p.sources.entry_for(&r).unwrap();
    entry
        .pull_sources(&r)
        .unwrap()
        .into_iter()
        .map(|s| s.location)
        .collect()
}

#[test]
fn parse_host_file() {
    let l = load(&certs_d(&[("registry.example.com", PARSE_HOST_FILE)]));
    let p = &l.policy;
    // A digest only needs `pull`; hosts whose API root no reference can name are passed over.
    assert_eq!(
        sources(p, &format!("registry.example.com/app@{DIGEST}")),
        [
            "mirror.registry",
            "mirror.registry",
            "test-1.registry",
            "test-2.registry",
            "test-3.registry",
            "no-referrers.registry",
            "noncompliantmirror.registry/namespaceprefix",
            "onlyheader.registry",
            "dial-timeout.registry",
            "test-default.registry",
        ]
    );
    // A tag needs `pull` and `resolve`: the pull-only hosts drop out.
    assert_eq!(
        sources(p, "registry.example.com/app:1"),
        [
            "test-1.registry",
            "test-2.registry",
            "test-3.registry",
            "no-referrers.registry",
            "onlyheader.registry",
            "dial-timeout.registry",
            "test-default.registry",
        ]
    );
    assert_eq!(
        decide(p, "registry.example.com/app:1", None)
            .result
            .as_deref(),
        Some("test-1.registry/app:1")
    );
    assert_eq!(
        decide(p, &format!("registry.example.com/app@{DIGEST}"), None).result,
        Some(format!("mirror.registry/app@{DIGEST}"))
    );
    // The two hosts passed over are warned of where they are written.
    let passed: Vec<_> = l
        .diagnostics
        .iter()
        .filter(|d| {
            d.severity == Severity::Warning
                && d.message
                    .contains("cannot be written as an image reference")
        })
        .collect();
    assert_eq!(passed.len(), 2, "{passed:?}");
    assert!(
        passed[0]
            .message
            .contains("https://mirror-bak.registry/us/v2"),
        "{}",
        passed[0]
    );
    assert_eq!(passed[0].pos.line, 16, "{}", passed[0]);
    assert!(
        passed[1].message.contains("noprefixnoncompliant.registry"),
        "{}",
        passed[1]
    );
    // Plain HTTP and skip_verify reach verify.
    assert!(p.is_http("mirror.registry"));
    let tls = &p.config_for("test-1.registry").unwrap().tls;
    assert_eq!(tls.ca_file.as_deref(), Some("/etc/certs/test-1-ca.pem"));
}

#[test]
fn docker_hub_and_directory_names() {
    let y = certs_d(&[
        (
            "docker.io",
            "server = \"https://registry-1.docker.io\"\n[host.\"https://harbor.example.com/v2/dockerhub\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n",
        ),
        ("registry.example.com_5000_", "[host.\"https://mirror.example.com:8443\"]\n"),
        ("_default", "[host.\"https://cache.example.com\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
    ]);
    let p = load(&y).policy;
    for (image, want) in [
        (
            "nginx:1.27",
            "harbor.example.com/dockerhub/library/nginx:1.27",
        ),
        (
            "docker.io/bitnami/redis",
            "harbor.example.com/dockerhub/bitnami/redis",
        ),
        (
            "registry.example.com:5000/team/app:v1",
            "mirror.example.com:8443/team/app:v1",
        ),
        // No directory of its own: `_default`, whose server is the registry itself.
        (
            "quay.io/prometheus/node-exporter:v1",
            "cache.example.com/prometheus/node-exporter:v1",
        ),
    ] {
        let d = decide(&p, image, None);
        assert_eq!(d.result.as_deref(), Some(want), "{image}: {}", d.reason);
        // A second pass leaves it, though `_default` would take any registry.
        let again = decide(&p, want, None);
        assert!(!again.changed(), "{want}: {}", again.reason);
    }
    assert_eq!(
        sources(&p, "quay.io/a/b:1"),
        ["cache.example.com", "quay.io"]
    );
    // Exact host match: registry.example.com without the port has no directory but `_default`.
    assert_eq!(
        sources(&p, "registry.example.com/app:1"),
        ["cache.example.com", "registry.example.com"]
    );
}

#[test]
fn default_hosts() {
    // TestDefaultHosts: with no hosts.toml, docker.io is pulled from registry-1.docker.io, i.e.
    // the image stays as written.
    let p = load("certs.d:\n  _default: |\n    # no hosts\n").policy;
    let image = "docker.io/library/alpine:3";
    assert_eq!(sources(&p, image), ["docker.io"]);
    let d = decide(&p, image, None);
    assert!(!d.changed(), "{}", d.reason);
    let asked: Vec<String> = image_mirror_webhook::rewrite::candidates(&p, image)
        .into_iter()
        .map(|c| c.manifest_url)
        .collect();
    assert_eq!(
        asked,
        ["https://registry-1.docker.io/v2/library/alpine/manifests/3"]
    );
}

#[test]
fn invalid_files_are_errors_that_say_what_containerd_would_do() {
    for (text, message) in [
        (
            "[host.\"https://m.example.com\"]\n  capabilities = [\"pull\", \"fetch\"]\n",
            "unknown capability fetch",
        ),
        ("server = \"https://r.example.com\n", "not valid TOML"),
        (
            "[host.\"https://m.example.com\"]\n  skip_verify = \"yes\"\n",
            "expected true or false",
        ),
    ] {
        let d = common::first_error(&certs_d(&[("registry.example.com", text)]));
        assert!(d.message.contains(message), "{d}");
        assert!(d.pos.line >= 3, "points into the file: {d}");
    }
    let y = certs_d(&[(
        "registry.example.com",
        "[host.\"https://m.example.com\"]\n  capabilities = [\"fetch\"]\n",
    )]);
    let e = Policy::load(&y).unwrap_err();
    assert!(e.to_string().contains("drops every mirror"), "{e}");
}

/// As containerd's resolver test: a host's `[header]` reaches that host (and no other), so a
/// mirror that needs it answers verify, and the server's own headers stay the server's.
#[tokio::test(flavor = "multi_thread")]
async fn headers_reach_their_host_in_verify() {
    let mirror = FakeRegistry::start().await;
    mirror.add("org/app");
    mirror.require_header("x-mirror-key", "m-123");
    let server = FakeRegistry::start().await;
    server.add("org/app");
    server.require_header("x-server-key", "s-456");
    let hosts = format!(
        "server = \"http://{}\"\n[header]\n  x-server-key = \"s-456\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  [host.\"http://{}\".header]\n    x-mirror-key = [\"m-123\"]\n",
        server.host(),
        mirror.host(),
        mirror.host()
    );
    let y = format!(
        "{}verify: {{enabled: true, timeout: 2s}}\n",
        certs_d(&[("ghcr.io", &hosts)])
    );
    let p = Arc::new(load(&y).policy);
    let checker = Checker::new(Access::default());
    let image = "ghcr.io/org/app:1".to_owned();
    let v = checker
        .verify(&p, std::slice::from_ref(&image))
        .await
        .remove(&image)
        .unwrap();
    assert_eq!(v.chosen, Some(0), "{:?}", v.tried);
    let d = decide(&p, &image, Some(&v));
    assert_eq!(d.result, Some(format!("{}/org/app:1", mirror.host())));
    // The mirror loses the image: the server answers, with its own header.
    let gone = FakeRegistry::start().await;
    let y = y.replace(&mirror.host(), &gone.host());
    let p = Arc::new(load(&y).policy);
    let v = checker
        .verify(&p, std::slice::from_ref(&image))
        .await
        .remove(&image)
        .unwrap();
    assert_eq!(v.chosen, Some(1), "{:?}", v.tried);
    // Without the header the server refuses: the header is what made it answer.
    let y = y.replace("x-server-key = \"s-456\"", "x-other = \"1\"");
    let p = Arc::new(load(&y).policy);
    let v = Checker::new(Access::default())
        .verify(&p, std::slice::from_ref(&image))
        .await
        .remove(&image)
        .unwrap();
    assert_eq!(v.chosen, None, "{:?}", v.tried);
}

#[test]
fn host_port_directories_win_over_host_colon_port_whatever_the_order() {
    for dirs in [
        [
            (
                "\"r.example.com:5000\"",
                "[host.\"https://colon.example.com\"]\n",
            ),
            (
                "r.example.com_5000_",
                "[host.\"https://underscore.example.com\"]\n",
            ),
        ],
        [
            (
                "r.example.com_5000_",
                "[host.\"https://underscore.example.com\"]\n",
            ),
            (
                "\"r.example.com:5000\"",
                "[host.\"https://colon.example.com\"]\n",
            ),
        ],
    ] {
        let l = load(&certs_d(&dirs));
        let d = decide(&l.policy, "r.example.com:5000/app:1", None);
        assert_eq!(
            d.result.as_deref(),
            Some("underscore.example.com/app:1"),
            "{}",
            d.reason
        );
        assert!(
            l.diagnostics
                .iter()
                .any(|d| d.severity == Severity::Warning && d.message.contains("host_port_")),
            "{:?}",
            l.diagnostics
        );
    }
}

/// `check` on the command line: an invalid pasted file exits 1, with the policy file's own line
/// and column; a valid one notes what each entry gives.
#[test]
fn check_points_into_the_pasted_files() {
    let dir = common::TempDir::new("check-runtimes");
    let bad = "certs.d:\n  ghcr.io: |\n    [host.\"https://m.example.com\"]\n      capabilities = [\"pull\", \"fetch\"]\n";
    let out = common::check(&dir, bad);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("policy.yaml:4:31: error: certs.d[ghcr.io] host.\"https://m.example.com\": unknown capability fetch"), "{stdout}");
    let good = "certs.d:\n  ghcr.io: |\n    [host.\"https://m.example.com\"]\n";
    let out = common::check(&dir, good);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("policy.yaml:2:3: note: certs.d[ghcr.io]: ghcr.io: pulled from m.example.com, then ghcr.io"), "{stdout}");
}

#[test]
fn relative_certificate_paths_are_the_host_directorys() {
    let y = certs_d(&[(
        "registry.example.com_5000_",
        "[host.\"https://m.example.com\"]\n  ca = \"ca.pem\"\n  client = [[\"client.cert\", \"client.key\"]]\n",
    )]);
    let p = load(&y).policy;
    let tls = &p.config_for("m.example.com").unwrap().tls;
    let dir = "/etc/containerd/certs.d/registry.example.com_5000_";
    assert_eq!(tls.ca_file, Some(format!("{dir}/ca.pem")));
    assert_eq!(tls.cert_file, Some(format!("{dir}/client.cert")));
    assert_eq!(tls.key_file, Some(format!("{dir}/client.key")));
}
