//! The server's bounds under attack, measured against the release `serve` on loopback over TLS
//! (README, Limits):
//! 1. 128 concurrent 8 MiB reviews: peak RSS, the answers by status, RSS two seconds after.
//! 2. 19,000 idle TLS connections (this machine's file limit is 20,000 per process, for the client
//!    and the server alike): RSS while they are held, with the default --max-connections (the rest
//!    are closed at once) and with the limit raised to hold them all; time until idle ones close.
//! 3. A 1 MiB policy (1,000 regexes) reloaded while 1,000 reviews/s flow: the longest review.
//! 4. Memory per MiB of policy: RSS growth after loading 1 MiB of mirrors, and of 1,000 regexes.
//!
//!   cargo bench --bench hardening -- [--out target/hardening-report.md]

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use common::proc_kib;
use rustls::pki_types::ServerName;

const MIRROR: &str =
    "mirrors:\n  docker.io:\n    endpoint: [\"https://mirror.example.com:5000\"]\n";

fn review(uid: &str, filler: usize) -> Bytes {
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "shop", "operation": "CREATE",
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web", "namespace": "shop", "annotations": {"filler": "x".repeat(filler)}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}}}
    });
    Bytes::from(serde_json::to_vec(&review).unwrap())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// 1. Concurrent large bodies over HTTP/1.1, one connection each.
async fn large_bodies(dir: &std::path::Path, out: &mut String) {
    let server = common::serve(dir, "bodies", MIRROR, &[]).await;
    let pid = server.child.id();
    let idle = proc_kib(pid, "VmRSS");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&server.ca).unwrap())
        .tls_built_in_root_certs(false)
        .http1_only()
        .build()
        .unwrap();
    let body = review("big", 8 * 1024 * 1024 - 2048);
    let url = server.url.to_string();
    let started = Instant::now();
    let sends = (0..128).map(|_| {
        let (client, body, url) = (client.clone(), body.clone(), url.clone());
        tokio::spawn(async move {
            let resp = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            resp.map(|r| r.status().as_u16()).unwrap_or(0)
        })
    });
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for s in futures::future::join_all(sends).await {
        *statuses.entry(s.unwrap()).or_default() += 1;
    }
    let took = started.elapsed();
    let peak = proc_kib(pid, "VmHWM");
    drop(client);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = proc_kib(pid, "VmRSS");
    writeln!(out, "## 128 concurrent 8 MiB reviews\n").unwrap();
    writeln!(
        out,
        "| RSS idle | peak RSS | RSS 2 s after | answers | all answered in |"
    )
    .unwrap();
    writeln!(out, "|---|---|---|---|---|").unwrap();
    writeln!(
        out,
        "| {} | {} | {} | {statuses:?} | {:.1} s |\n",
        mib(idle),
        mib(peak),
        mib(after),
        took.as_secs_f64()
    )
    .unwrap();
}

/// Opens `n` TLS connections that then say nothing; how many the server kept.
async fn hold_idle(server: &common::Server, n: usize) -> (Vec<impl Send>, usize) {
    let tls = common::tls_connector(&server.ca);
    let mut held = Vec::new();
    let mut refused = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let opened = chunk.iter().map(|_| {
            let tls = tls.clone();
            let port = server.port;
            async move {
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()?;
                tls.connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await
                    .ok()
            }
        });
        for c in futures::future::join_all(opened).await {
            match c {
                Some(c) => held.push(c),
                None => refused += 1,
            }
        }
    }
    let kept = n - refused;
    (held, kept)
}

/// 2. Idle connections: what they cost while held, and when they go.
async fn idle_connections(dir: &std::path::Path, out: &mut String) {
    const N: usize = 19_000;
    writeln!(out, "## {N} idle TLS connections\n").unwrap();
    writeln!(
        out,
        "| --max-connections | kept | RSS before | RSS while held | per kept connection |"
    )
    .unwrap();
    writeln!(out, "|---|---|---|---|---|").unwrap();
    for (name, limit) in [("default", None), ("raised", Some("20000"))] {
        let extra: Vec<&str> = match limit {
            Some(l) => vec!["--max-connections", l],
            None => vec![],
        };
        let server = common::serve(dir, &format!("idle-{name}"), MIRROR, &extra).await;
        let pid = server.child.id();
        let before = proc_kib(pid, "VmRSS");
        let (held, kept) = hold_idle(&server, N).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let during = proc_kib(pid, "VmRSS");
        let each = (during.saturating_sub(before) * 1024) / kept.max(1) as u64;
        writeln!(
            out,
            "| {} | {kept} | {} | {} | {:.1} KiB |",
            limit.unwrap_or("256 (default)"),
            mib(before),
            mib(during),
            each as f64 / 1024.0
        )
        .unwrap();
        drop(held);
    }
    let server = common::serve(dir, "idle-timeout", MIRROR, &["--idle-timeout", "2s"]).await;
    let mut senders = common::connect(&server.url, &server.ca, 1).await;
    let healthz: hyper::Uri = format!("https://localhost:{}/healthz", server.port)
        .parse()
        .unwrap();
    common::get(&mut senders[0], &healthz).await;
    let answered = Instant::now();
    while !senders[0].is_closed() && answered.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    writeln!(
        out,
        "\nAn idle HTTP/2 connection with `--idle-timeout 2s` was closed {:.2} s after its last answer; a connection that sends no request is closed after 10 s.\n",
        answered.elapsed().as_secs_f64()
    )
    .unwrap();
}

/// A policy of about `bytes`: mirrors, with rewrite rules on the first `regexes` of them.
fn policy_of(bytes: usize, regexes: usize, tag: &str) -> String {
    let mut text = String::from(MIRROR);
    let mut i = 0;
    while text.len() < bytes {
        write!(text, "  \"registry{i}.example.com\":\n    endpoint: [\"https://{tag}{i}.example.com:5000\"]\n").unwrap();
        if i < regexes {
            write!(
                text,
                "    rewrite:\n      \"^team{i}/(.*)\": \"mirror/team{i}/$1\"\n"
            )
            .unwrap();
        }
        i += 1;
    }
    text
}

async fn reloads(server: &common::Server, sender: &mut common::Sender) -> u64 {
    let text = common::get(sender, &server.metrics).await;
    text.lines()
        .find(|l| l.starts_with("image_mirror_policy_reloads_total{result=\"success\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// 3. The longest review while a 1 MiB policy reloads under 1,000 reviews/s.
async fn reload_under_load(dir: &std::path::Path, out: &mut String) {
    let server = common::serve(dir, "reload", MIRROR, &["--reload-interval", "100ms"]).await;
    let senders = common::connect(&server.url, &server.ca, 4).await;
    let mut probe = common::connect(&server.url, &server.ca, 1).await.remove(0);
    let body = review("steady", 0);
    let rate = 1000.0;
    let seconds = 8.0;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = (rate * seconds) as usize;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now();
    let policy = policy_of(1_000_000, 1_000, "big");
    let path = server.policy_file.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        std::fs::write(&path, policy).unwrap();
        Instant::now()
    });
    for i in 0..total {
        tokio::time::sleep_until((start + interval * i as u32).into()).await;
        let mut sender = senders[i % senders.len()].clone();
        let (url, body, tx) = (server.url.clone(), body.clone(), tx.clone());
        tokio::spawn(async move {
            let sent = Instant::now();
            let (status, took) = common::post(&mut sender, &url, body).await;
            tx.send((sent, status, took)).ok();
        });
    }
    drop(tx);
    let written = writer.await.unwrap();
    let mut all = Vec::new();
    while let Some(r) = rx.recv().await {
        all.push(r);
    }
    let loaded = reloads(&server, &mut probe).await >= 2;
    let failed = all.iter().filter(|(_, s, _)| *s != 200).count();
    let mut lat: Vec<Duration> = all.iter().map(|(_, _, t)| *t).collect();
    lat.sort();
    let p99 = lat[lat.len() * 99 / 100];
    let window = all
        .iter()
        .filter(|(sent, _, _)| *sent >= written && *sent < written + Duration::from_secs(3))
        .map(|(_, _, t)| *t)
        .max()
        .unwrap_or_default();
    let before = all
        .iter()
        .filter(|(sent, _, _)| *sent < written)
        .map(|(_, _, t)| *t)
        .max()
        .unwrap_or_default();
    writeln!(
        out,
        "## A 1 MiB policy (1,000 regexes) reloaded under 1,000 reviews/s\n"
    )
    .unwrap();
    writeln!(out, "| reviews | failed | p99 | longest before the reload | longest in the 3 s from the write | reloaded |").unwrap();
    writeln!(out, "|---|---|---|---|---|---|").unwrap();
    writeln!(
        out,
        "| {} | {failed} | {:.2} ms | {:.2} ms | {:.2} ms | {loaded} |\n",
        all.len(),
        p99.as_secs_f64() * 1e3,
        before.as_secs_f64() * 1e3,
        window.as_secs_f64() * 1e3
    )
    .unwrap();
}

/// 4. RSS growth per MiB of policy once loaded, of plain mirrors and of 1,000 regexes.
async fn policy_memory(dir: &std::path::Path, out: &mut String) {
    writeln!(out, "## Memory per policy\n").unwrap();
    writeln!(
        out,
        "| policy | size | RSS growth once loaded | per policy byte |"
    )
    .unwrap();
    writeln!(out, "|---|---|---|---|").unwrap();
    for (name, regexes) in [("mirrors only", 0), ("1,000 rewrite regexes", 1_000)] {
        let server = common::serve(
            dir,
            &format!("mem-{regexes}"),
            MIRROR,
            &["--reload-interval", "100ms"],
        )
        .await;
        let mut probe = common::connect(&server.url, &server.ca, 1).await.remove(0);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pid = server.child.id();
        let before = proc_kib(pid, "VmRSS");
        let text = policy_of(1_000_000, regexes, "mem");
        std::fs::write(&server.policy_file, &text).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while reloads(&server, &mut probe).await < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The YAML tree is dropped once compiled; let the allocator give it back.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let grew = proc_kib(pid, "VmRSS").saturating_sub(before) * 1024;
        writeln!(
            out,
            "| {name} | {:.2} MiB | {} | {:.1} bytes |",
            text.len() as f64 / 1048576.0,
            mib(grew / 1024),
            grew as f64 / text.len() as f64
        )
        .unwrap();
    }
    out.push('\n');
}

#[tokio::main]
async fn main() {
    let a = common::args();
    if a.keys().any(|k| k != "out") {
        eprintln!("hardening: takes only --out FILE");
        return;
    }
    let out_file = a
        .get("out")
        .cloned()
        .unwrap_or_else(|| "target/hardening-report.md".into());
    let dir = std::env::temp_dir().join(format!("imw-hardening-{}", std::process::id()));
    let mut out = String::from("# Bounds under attack (release `serve`, loopback, TLS)\n\n");
    large_bodies(&dir, &mut out).await;
    idle_connections(&dir, &mut out).await;
    reload_under_load(&dir, &mut out).await;
    policy_memory(&dir, &mut out).await;
    std::fs::write(&out_file, &out).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    print!("{out}");
    eprintln!("hardening: report written to {out_file}");
}
