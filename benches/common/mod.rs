//! HTTP/2 over TLS client connections for the load benches.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
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
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
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
