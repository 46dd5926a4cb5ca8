//! A real registry on loopback (Debian's docker-registry), with TLS and htpasswd users when
//! asked, and images pushed into it by skopeo from an OCI layout made here.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

pub struct Registry {
    pub child: Child,
    pub port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A minimal OCI image layout: one empty (uncompressed tar) layer, a config, a manifest.
pub fn oci_layout(dir: &Path, tag: &str) {
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

pub fn start_registry(
    dir: &Path,
    name: &str,
    tls: Option<(&Path, &Path)>,
    htpasswd: Option<&Path>,
) -> Registry {
    start_registry_at(dir, name, "127.0.0.1", super::free_port(), tls, htpasswd)
}

/// As `start_registry`, on a given loopback address and port.
pub fn start_registry_at(
    dir: &Path,
    name: &str,
    ip: &str,
    port: u16,
    tls: Option<(&Path, &Path)>,
    htpasswd: Option<&Path>,
) -> Registry {
    let root = dir.join(format!("{name}-data"));
    let mut config = format!("version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp:\n  addr: {ip}:{port}\n", root.display());
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
    while std::net::TcpStream::connect((ip, port)).is_err() {
        assert!(Instant::now() < deadline, "{name} registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Registry { child, port }
}

pub fn push(layout: &Path, tag: &str, target: &str, creds: Option<&str>) {
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
