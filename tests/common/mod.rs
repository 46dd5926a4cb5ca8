//! Starting the real binary on loopback with real TLS, for the end-to-end tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod fake_api;
pub mod fake_registry;
pub mod real_registry;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use image_mirror_webhook::server::tls;
use serde_json::{json, Value};

/// A line of /proc/PID/status in KiB: VmRSS (now) or VmHWM (peak).
pub fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

/// `check` run on `policy`, written into `dir`.
pub fn check(dir: &TempDir, policy: &str) -> std::process::Output {
    std::fs::write(dir.path("policy.yaml"), policy).unwrap();
    Command::new(env!("CARGO_BIN_EXE_image-mirror-webhook"))
        .args(["check", "--policy-file"])
        .arg(dir.path("policy.yaml"))
        .output()
        .unwrap()
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("imw-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Publishes `contents` as `name` the way kubelet updates a ConfigMap or Secret volume: a new
    /// `<version>/` directory, the `..data` symlink swapped to it, `name` a link through `..data`.
    pub fn kubelet_swap(&self, version: &str, name: &str, contents: &[u8]) {
        std::fs::create_dir_all(self.path(version)).unwrap();
        std::fs::write(self.path(&format!("{version}/{name}")), contents).unwrap();
        std::os::unix::fs::symlink(self.path(version), self.path("..data_tmp")).unwrap();
        std::fs::rename(self.path("..data_tmp"), self.path("..data")).unwrap();
        let link = self.path(name);
        if std::fs::symlink_metadata(&link).is_ok_and(|m| !m.file_type().is_symlink()) {
            std::fs::remove_file(&link).unwrap();
        }
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(self.path(&format!("..data/{name}")), &link).unwrap();
        }
    }

    /// Writes through a temporary file and a rename, as editors and kubelet do.
    pub fn write_atomic(&self, name: &str, contents: &[u8]) {
        let tmp = self.path(&format!(".{name}.tmp"));
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, self.path(name)).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Server {
    pub child: Child,
    pub port: u16,
    pub admin_port: u16,
    pub dir: TempDir,
    pub ca_pem: String,
    pub log: PathBuf,
}

#[derive(Clone, Copy)]
pub struct Options<'a> {
    /// Written to a file and passed with --policy-file; `None` passes none.
    pub policy: Option<&'a str>,
    /// A test CA's certificate in files, passed with --tls-cert/--tls-key; without it the server
    /// makes its own (in `<dir>/dev`) or gets one from the flags in `extra`.
    pub own_tls: bool,
    pub extra: &'a [&'a str],
    /// For flags that reach the Kubernetes API (a fake one).
    pub kubeconfig: Option<&'a Path>,
    /// Environment variables for the server.
    pub env: &'a [(&'a str, &'a str)],
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            policy: Some(
                "mirrors:\n  docker.io:\n    endpoint: [\"https://mirror.example.com:5000\"]\n",
            ),
            own_tls: true,
            extra: &[],
            kubeconfig: None,
            env: &[],
        }
    }
}

impl Server {
    /// Starts `serve` on loopback with an admin port, as `opts` says.
    pub fn start(opts: Options<'_>) -> Server {
        // A port found free can be taken by another test before the server binds it: pick again.
        for _ in 0..3 {
            let mut server = Server::launch(opts);
            if server.wait_healthy() {
                return server;
            }
        }
        panic!("the server's ports were taken three times over");
    }

    fn launch(opts: Options<'_>) -> Server {
        let dir = TempDir::new("server");
        let port = free_port();
        let admin_port = free_port();
        let log = dir.path("server.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_image-mirror-webhook"));
        cmd.arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .args(["--reload-interval", "100ms"]);
        let mut ca_pem = String::new();
        if opts.own_tls {
            let cert = tls::generate(&["localhost", "127.0.0.1"]).unwrap();
            std::fs::write(dir.path("tls.crt"), &cert.cert_pem).unwrap();
            std::fs::write(dir.path("tls.key"), &cert.key_pem).unwrap();
            cmd.arg("--tls-cert")
                .arg(dir.path("tls.crt"))
                .arg("--tls-key")
                .arg(dir.path("tls.key"));
            ca_pem = cert.ca_pem;
        } else {
            cmd.arg("--dev-cert-dir").arg(dir.path("dev"));
        }
        if let Some(policy) = opts.policy {
            std::fs::write(dir.path("policy.yaml"), policy).unwrap();
            cmd.arg("--policy-file").arg(dir.path("policy.yaml"));
        }
        if let Some(k) = opts.kubeconfig {
            cmd.env("KUBECONFIG", k);
        }
        let child = cmd
            .args(opts.extra)
            .env("RUST_LOG", "debug")
            .envs(opts.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Server {
            child,
            port,
            admin_port,
            dir,
            ca_pem,
            log,
        }
    }

    pub fn with_policy(policy: &str) -> Server {
        Server::start(Options {
            policy: Some(policy),
            ..Options::default()
        })
    }

    /// Waits until both listeners accept; false when the server exited because a port was taken.
    fn wait_healthy(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.admin_port)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return true;
            }
            if self.child.try_wait().unwrap().is_some()
                && self.logs().contains("Address already in use")
            {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not start: {}", self.logs());
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The admin listener's metrics text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits until /readyz answers 200.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(self.admin_url("/readyz")).await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "never ready: {}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn client(&self) -> reqwest::Client {
        client_trusting(&[&self.ca_pem])
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

pub fn client_trusting(cas: &[&str]) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10))
        .tls_info(true);
    for ca in cas {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

/// A file under tests/data.
pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// The text of a file under tests/data.
pub fn data_text(name: &str) -> String {
    let path = data(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The policy a text compiles to; a rejection fails the test with every diagnostic.
pub fn policy(text: &str) -> image_mirror_webhook::policy::Policy {
    match image_mirror_webhook::policy::Policy::load(text) {
        Ok(l) => l.policy,
        Err(r) => panic!("policy rejected: {:#?}", r.diagnostics),
    }
}

/// The first error of a policy that must be refused.
pub fn first_error(text: &str) -> image_mirror_webhook::policy::Diagnostic {
    let rejected = match image_mirror_webhook::policy::Policy::load(text) {
        Ok(_) => panic!("should be refused:\n{text}"),
        Err(r) => r,
    };
    let first = rejected
        .diagnostics
        .iter()
        .find(|d| d.severity == image_mirror_webhook::policy::Severity::Error);
    first
        .cloned()
        .unwrap_or_else(|| panic!("refused without an error: {rejected:?}"))
}

/// Decodes a review answer's patch (base64 of the JSON array).
pub fn decode_patch(answer: &serde_json::Value) -> Option<json_patch::Patch> {
    use base64::Engine;
    let b64 = answer["response"]["patch"].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    Some(serde_json::from_slice(&bytes).unwrap())
}

/// POSTs JSON and reads the JSON answer.
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    resp.json().await.unwrap()
}

/// POSTs `body` with an optional content type; the status and the answer as JSON (or as a JSON
/// string when it is not JSON).
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let mut req = client.post(url).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// Polls `check` every 50 ms until it holds; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// An AdmissionReview that creates `pod`.
pub fn create_review(
    uid: &str,
    namespace: &str,
    pod: &serde_json::Value,
    dry_run: bool,
) -> serde_json::Value {
    serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
        "namespace": namespace, "dryRun": dry_run, "object": pod}})
}

/// `serve --pull-secrets` against the fake API, ready.
pub struct ApiServe {
    pub server: Server,
    pub client: reqwest::Client,
    _kube: TempDir,
}

impl ApiServe {
    pub async fn start(api: &fake_api::FakeApi, policy: &str, extra: &[&str]) -> ApiServe {
        ApiServe::start_with(api, policy, extra, &[]).await
    }

    pub async fn start_with(
        api: &fake_api::FakeApi,
        policy: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> ApiServe {
        let kube = TempDir::new("pullsecrets-kube");
        let kubeconfig = api.kubeconfig(&kube.0);
        let mut args = vec!["--pull-secrets"];
        args.extend_from_slice(extra);
        let server = Server::start(Options {
            policy: Some(policy),
            extra: &args,
            kubeconfig: Some(&kubeconfig),
            env,
            ..Options::default()
        });
        server.wait_ready().await;
        ApiServe {
            client: server.client(),
            server,
            _kube: kube,
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    pub fn logs(&self) -> String {
        self.server.logs()
    }

    /// The dry-run endpoint's answer for a Pod in `ns` running `image`.
    pub async fn dry_run_pod(&self, ns: &str, image: &str) -> String {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": ns},
            "spec": {"containers": [{"name": "c", "image": image}]}});
        self.client
            .post(self.url("/dry-run"))
            .header("content-type", "application/json")
            .body(pod.to_string())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn review(&self, ns: &str, image: &str, dry_run: bool) -> (Value, Value) {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": ns},
            "spec": {"containers": [{"name": "c", "image": image}]}});
        let review = create_review("u", ns, &pod, dry_run);
        let answer = post_json(&self.client, &self.url("/mutate"), &review).await;
        let mut after = pod.clone();
        if let Some(patch) = decode_patch(&answer) {
            json_patch::patch(&mut after, &patch).unwrap();
        }
        (answer, after)
    }
}

/// A TLS client that trusts `server`'s CA and offers `alpn`.
pub fn tls_connector(
    ca_pem: &str,
    alpn: &[u8],
    identity: Option<(&str, &str)>,
) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(|c| c.unwrap())
                    .collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

pub type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

pub async fn connect_tls(server: &Server, alpn: &[u8]) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tls_connector(&server.ca_pem, alpn, None)
        .connect(name, tcp)
        .await
}
