//! HTTP/2 over TLS client connections for the load benches.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

pub type Sender = SendRequest<Full<Bytes>>;

/// `n` keep-alive HTTP/2 connections to `url`'s host, trusting the CA in `ca_pem`.
pub async fn connect(url: &hyper::Uri, ca_pem: &[u8], n: usize) -> Vec<Sender> {
    let connector = tls_connector(ca_pem);
    let host = url.host().unwrap().to_owned();
    let port = url.port_u16().unwrap_or(443);
    let mut senders = Vec::new();
    for _ in 0..n {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        let tls = connector
            .connect(ServerName::try_from(host.clone()).unwrap(), tcp)
            .await
            .unwrap();
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        senders.push(sender);
    }
    senders
}

/// A TLS client that trusts the CA in `ca_pem` and offers HTTP/2.
pub fn tls_connector(ca_pem: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// POSTs `body` as JSON; the status (-1 for a failure) and the time until the whole answer was read.
pub async fn post(sender: &mut Sender, url: &hyper::Uri, body: Bytes) -> (i32, Duration) {
    let sent = Instant::now();
    let req = hyper::Request::post(url.clone())
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    let status = match sender.send_request(req).await {
        Ok(resp) => {
            let status = resp.status().as_u16() as i32;
            match resp.into_body().collect().await {
                Ok(_) => status,
                Err(_) => -1,
            }
        }
        Err(_) => -1,
    };
    (status, sent.elapsed())
}

/// GETs `url`; the body as text.
pub async fn get(sender: &mut Sender, url: &hyper::Uri) -> String {
    let req = hyper::Request::get(url.clone())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// `--key value` pairs after `cargo bench --bench NAME --`.
pub fn args() -> HashMap<String, String> {
    let raw: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    raw.chunks(2)
        .map(|kv| {
            (
                kv[0].trim_start_matches("--").to_owned(),
                kv.get(1).cloned().unwrap_or_default(),
            )
        })
        .collect()
}

/// The release `serve` on loopback with its own development certificate.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub url: hyper::Uri,
    pub metrics: hyper::Uri,
    pub ca: Vec<u8>,
    pub policy_file: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Starts `serve` with `policy` in `dir/name`, the flags in `SERVE_ARGS` and `extra`.
pub async fn serve(dir: &Path, name: &str, policy: &str, extra: &[&str]) -> Server {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let policy_file = dir.join("policy.yaml");
    std::fs::write(&policy_file, policy).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_image-mirror-webhook"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(
            std::env::var("SERVE_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .args(extra)
        .arg("--dev-cert-dir")
        .arg(&dir)
        .arg("--policy-file")
        .arg(&policy_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("server.log")).unwrap())
        .spawn()
        .unwrap();
    let ca_file = dir.join("ca.crt");
    for _ in 0..200 {
        if ca_file.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let base = format!("https://localhost:{port}");
    Server {
        child,
        port,
        url: format!("{base}/mutate").parse().unwrap(),
        metrics: format!("{base}/metrics").parse().unwrap(),
        ca: std::fs::read(ca_file).unwrap(),
        policy_file,
    }
}

/// A line of /proc/PID/status in KiB: VmRSS (now) or VmHWM (peak).
pub fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
