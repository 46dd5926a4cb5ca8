//! `verify` against real registries on loopback (Debian's docker-registry): one with TLS from a test
//! CA and htpasswd authentication, one over plain HTTP, with images pushed by skopeo from an OCI
//! layout the test makes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TempDir;
use image_mirror_webhook::policy::Policy;
use image_mirror_webhook::registry::Checker;
use serde_json::json;

const USER: &str = "mirror";
const PASSWORD: &str = "mirror-pw";

struct Registry {
    child: Child,
    port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn sha256(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A minimal OCI image layout: one empty (uncompressed tar) layer, a config, a manifest.
fn oci_layout(dir: &Path, tag: &str) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = sha256(bytes);
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let (layer, layer_size) = put(&[0u8; 1024]);
    let config = json!({"architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer]}})
    .to_string();
    let (config_digest, config_size) = put(config.as_bytes());
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size}]}).to_string();
    let (manifest_digest, manifest_size) = put(manifest.as_bytes());
    let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest, "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

fn start_registry(
    dir: &Path,
    name: &str,
    tls: Option<(&Path, &Path)>,
    htpasswd: Option<&Path>,
) -> Registry {
    let port = common::free_port();
    let root = dir.join(format!("{name}-data"));
    let mut config = format!("version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp:\n  addr: 127.0.0.1:{port}\n", root.display());
    if let Some((cert, key)) = tls {
        config.push_str(&format!(
            "  tls: {{certificate: {}, key: {}}}\n",
            cert.display(),
            key.display()
        ));
    }
    if let Some(h) = htpasswd {
        config.push_str(&format!(
            "auth:\n  htpasswd: {{realm: test, path: {}}}\n",
            h.display()
        ));
    }
    let path = dir.join(format!("{name}.yml"));
    std::fs::write(&path, config).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry is needed (the README's test command installs it)");
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{name} registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Registry { child, port }
}

fn push(layout: &Path, tag: &str, target: &str, creds: Option<&str>) {
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy", "copy", "--dest-tls-verify=false"]);
    if let Some(c) = creds {
        cmd.arg(format!("--dest-creds={c}"));
    }
    let out = cmd
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{target}"))
        .output()
        .expect("skopeo is needed (the README's test command installs it)");
    assert!(
        out.status.success(),
        "skopeo copy to {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

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
    Arc::new(Policy::load(&text).unwrap().policy)
}

async fn chosen(p: &Arc<Policy>, image: &str) -> (Option<usize>, Vec<String>) {
    let c = Checker::new(Arc::new(|_: &str, _: Duration| {}));
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
    let c = Checker::new(Arc::new(|_: &str, _: Duration| {}));
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
