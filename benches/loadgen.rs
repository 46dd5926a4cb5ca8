//! An open-loop load generator for `serve`: one request every 1/rate seconds, spread over keep-alive
//! HTTP/2 connections, sent on schedule whether or not earlier answers have come (so a server stall
//! is counted, not hidden by waiting). Latency runs from the moment a request is sent; the timer's
//! own lateness (tokio's timer ticks in milliseconds) is not charged to the server. Used by
//! `benches/load.sh` for the steady-rate run, because h2load's `--rps` sends in bursts.
//!
//!   cargo bench --bench loadgen -- --url URL --ca FILE --body FILE --rate N --connections N
//!       --seconds N --warm-up N --out FILE
//!
//! Writes one line per request as h2load's `--log-file` does: send time (µs since the epoch),
//! status (-1 for a failure), microseconds until the whole answer was read.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

fn args() -> HashMap<String, String> {
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

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = args();
    if !a.contains_key("url") {
        // `cargo bench` with no arguments runs every bench target: nothing to do here.
        eprintln!("loadgen: no --url given; see benches/load.sh");
        return;
    }
    let url: hyper::Uri = a["url"].parse().unwrap();
    let rate: f64 = a["rate"].parse().unwrap();
    let connections: usize = a["connections"].parse().unwrap();
    let seconds: f64 = a["seconds"].parse().unwrap();
    let warm_up: f64 = a.get("warm-up").map_or(2.0, |w| w.parse().unwrap());
    let body = Bytes::from(std::fs::read(&a["body"]).unwrap());

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&std::fs::read(&a["ca"]).unwrap()).unwrap())
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
    for _ in 0..connections {
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

    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = ((seconds + warm_up) * rate) as usize;
    let skip = (warm_up * rate) as usize;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now();
    let epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    for i in 0..total {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let sent = Instant::now();
        let mut sender = senders[i % connections].clone();
        let req = hyper::Request::post(url.clone())
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .unwrap();
        let tx = tx.clone();
        tokio::spawn(async move {
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
            tx.send((i, sent, status, sent.elapsed())).ok();
        });
    }
    drop(tx);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&a["out"]).unwrap());
    let mut n = 0;
    while let Some((i, sent, status, took)) = rx.recv().await {
        if i < skip {
            continue;
        }
        let sent_us = (epoch + (sent - start)).as_micros();
        writeln!(out, "{sent_us}\t{status}\t{}", took.as_micros()).unwrap();
        n += 1;
    }
    out.flush().unwrap();
    eprintln!("loadgen: {n} requests measured");
}
