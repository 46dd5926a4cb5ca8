//! `verify` against real registries on loopback (Debian's docker-registry): one with TLS from a test
//! CA and htpasswd authentication, one over plain HTTP, with images pushed by skopeo from an OCI
//! layout the test makes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use common::real_registry::{oci_layout, push, start_registry, Registry};
use common::TempDir;
use image_mirror_webhook::policy::Policy;
use image_mirror_webhook::verify::{Access, Checker};

const USER: &str = "mirror";
const PASSWORD: &str = "mirror-pw";

struct Setup {
    dir: TempDir,
    ca: PathBuf,
    secure: Registry,
    plain: Registry,
}

fn setup() -> Setup {
    let dir = TempDir::new("registry");
    let cert = image_mirror_webhook::server::tls::generate(&["localhost", "127.0.0.1"]).unwrap();
    let (crt, key, ca) = (dir.path("tls.crt"), dir.path("tls.key"), dir.path("ca.crt"));
    std::fs::write(&crt, &cert.cert_pem).unwrap();
    std::fs::write(&key, &cert.key_pem).unwrap();
    std::fs::write(&ca, &cert.ca_pem).unwrap();
    let htpasswd = dir.path("htpasswd");
    let out = Command::new("htpasswd")
        .args(["-Bbn", USER, PASSWORD])
        .output()
        .expect("htpasswd (apache2-utils) is needed");
    assert!(out.status.success());
    std::fs::write(&htpasswd, &out.stdout).unwrap();
    let secure = start_registry(&dir.0, "secure", Some((&crt, &key)), Some(&htpasswd));
    let plain = start_registry(&dir.0, "plain", None, None);
    let layout = dir.path("layout");
    oci_layout(&layout, "1.0");
    push(
        &layout,
        "1.0",
        &format!("127.0.0.1:{}/library/nginx:1.0", secure.port),
        Some(&format!("{USER}:{PASSWORD}")),
    );
    push(
        &layout,
        "1.0",
        &format!("127.0.0.1:{}/library/redis:1.0", plain.port),
        None,
    );
    Setup {
        dir,
        ca,
        secure,
        plain,
    }
}

fn policy(s: &Setup, password: &str) -> Arc<Policy> {
    policy_with(s, password, "")
}

fn policy_with(s: &Setup, password: &str, verify: &str) -> Arc<Policy> {
    let text = format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"https://127.0.0.1:{}\", \"http://127.0.0.1:{}\"]\nconfigs:\n  \"127.0.0.1:{}\":\n    auth: {{username: {USER}, password: {password}}}\n    tls: {{ca_file: {}}}\nverify: {{enabled: true, timeout: 2s{verify}}}\n",
        s.secure.port,
        s.plain.port,
        s.secure.port,
        s.ca.display()
    );
    Arc::new(common::policy(&text))
}

async fn chosen(p: &Arc<Policy>, image: &str) -> (Option<usize>, Vec<String>) {
    let c = Checker::new(Access::default());
    let v = c
        .verify(p, &[image.to_owned()])
        .await
        .remove(image)
        .unwrap();
    let tried = v
        .tried
        .iter()
        .map(|t| {
            serde_json::to_value(&t.answer).unwrap()["result"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    (v.chosen, tried)
}

#[tokio::test(flavor = "multi_thread")]
async fn real_registries_with_tls_htpasswd_and_plain_http() {
    let mut s = setup();
    let good = policy(&s, PASSWORD);
    // On the TLS + htpasswd registry (first endpoint).
    assert_eq!(
        chosen(&good, "nginx:1.0").await,
        (Some(0), vec!["present".into()])
    );
    // Only on the plain-HTTP one (second endpoint).
    assert_eq!(
        chosen(&good, "redis:1.0").await,
        (Some(1), vec!["absent".into(), "present".into()])
    );
    // On neither: the original stays.
    assert_eq!(
        chosen(&good, "busybox:1.0").await,
        (None, vec!["absent".into(), "absent".into()])
    );
    // pinDigest: the digest the tag names is asked for too, and pinned.
    let pinned = policy_with(&s, PASSWORD, ", pinDigest: true");
    let c = Checker::new(Access::default());
    let v = c
        .verify(&pinned, &["nginx:1.0".to_owned()])
        .await
        .remove("nginx:1.0")
        .unwrap();
    assert_eq!(v.chosen, Some(0), "{:?}", v.tried);
    assert!(
        v.digest
            .as_deref()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{v:?}"
    );
    // A tag that is not there is not a hit.
    assert_eq!(chosen(&good, "nginx:2.0").await.0, None);
    // Wrong credentials: the secure one is passed over.
    let wrong = policy(&s, "wrong");
    assert_eq!(
        chosen(&wrong, "nginx:1.0").await,
        (None, vec!["absent".into(), "absent".into()])
    );
    // Without the CA the TLS registry cannot be trusted: passed over, not an error.
    let no_ca = Arc::new(
        Policy::load(&format!(
            "mirrors:\n  docker.io:\n    endpoint: [\"https://127.0.0.1:{}\"]\nverify: {{enabled: true}}\n",
            s.secure.port
        ))
        .unwrap()
        .policy,
    );
    assert_eq!(chosen(&no_ca, "nginx:1.0").await.0, None);
    // The plain registry goes down: its images fail over.
    s.plain.child.kill().ok();
    s.plain.child.wait().ok();
    assert_eq!(chosen(&good, "redis:1.0").await.0, None);
    drop(s.dir);
}

/// registries.conf's mirrors walked in order against the same two registries: the TLS one
/// (trusted through `configs`), then the plain one, which `insecure = true` reaches over HTTP
/// after HTTPS fails, as containers/image does; the primary location last.
#[tokio::test(flavor = "multi_thread")]
async fn registries_conf_mirrors_in_order() {
    let s = setup();
    let text = format!(
        "registries.conf: |\n  [[registry]]\n  prefix = \"docker.io/library\"\n  location = \"127.0.0.1:{plain}/upstream\"\n  insecure = true\n  [[registry.mirror]]\n  location = \"127.0.0.1:{secure}/library\"\n  [[registry.mirror]]\n  location = \"127.0.0.1:{plain}/library\"\n  insecure = true\nconfigs:\n  \"127.0.0.1:{secure}\":\n    auth: {{username: {USER}, password: {PASSWORD}}}\n    tls: {{ca_file: {ca}}}\nverify: {{enabled: true, timeout: 3s}}\n",
        plain = s.plain.port,
        secure = s.secure.port,
        ca = s.ca.display()
    );
    let p = Arc::new(common::policy(&text));
    let nginx = "docker.io/library/nginx:1.0";
    assert_eq!(chosen(&p, nginx).await, (Some(0), vec!["present".into()]));
    let redis = "docker.io/library/redis:1.0";
    assert_eq!(
        chosen(&p, redis).await,
        (Some(1), vec!["absent".into(), "present".into()])
    );
    let busybox = "docker.io/library/busybox:1.0";
    assert_eq!(
        chosen(&p, busybox).await,
        (
            None,
            vec!["absent".into(), "absent".into(), "absent".into()]
        )
    );
    // The decisions follow: the first source that has the image, else the node's first source.
    let c = Checker::new(Access::default());
    let images = [nginx.to_owned(), redis.to_owned(), busybox.to_owned()];
    let verdicts = c.verify(&p, &images).await;
    let result = |image: &str| {
        image_mirror_webhook::rewrite::decide(&p, image, verdicts.get(image))
            .result
            .unwrap()
    };
    assert_eq!(
        result(nginx),
        format!("127.0.0.1:{}/library/nginx:1.0", s.secure.port)
    );
    assert_eq!(
        result(redis),
        format!("127.0.0.1:{}/library/redis:1.0", s.plain.port)
    );
    assert_eq!(
        result(busybox),
        format!("127.0.0.1:{}/library/busybox:1.0", s.secure.port)
    );
}
