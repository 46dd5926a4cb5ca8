//! A burst of reviews for one image with `verify` on (the release `serve`, over TLS on loopback),
//! against two fake registries that answer after a fixed delay: the first lacks the image, the
//! second has it. Every round uses a new tag, so the first review finds the cache empty and the
//! rest either wait on that one check or find its answer cached. Reports the HEADs each registry
//! saw, the check's own time (from the server's `verify_check_duration_seconds`) and the review
//! latencies, beside a baseline server with the same policy and `verify` off.
//!
//!   cargo bench --bench verify_burst -- [--reviews 500] [--rounds 10] [--delay-ms 20]
//!       [--rate 1000] [--out target/verify-burst-report.md]
//!
//! `SERVE_ARGS` adds flags to both servers (as in benches/load.sh).
//!
//! Two shapes: paced (reviews evenly spread at --rate over 4 connections, as a controller scaling a
//! Deployment sends them) and at once (all sent together over 10 connections). At once, this
//! 2-core machine needs tens of milliseconds just to answer 500 reviews, with or without `verify`,
//! so that shape is judged against the baseline's p99 for the same burst.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::IntoResponse;

const DIGEST: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

/// A registry that answers every manifest request after `delay`: 200 with a digest, or 404.
struct Registry {
    port: u16,
    heads: Arc<AtomicUsize>,
}

async fn registry(has_image: bool, delay: Duration) -> Registry {
    let heads = Arc::new(AtomicUsize::new(0));
    let counted = heads.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/v2/{*rest}",
        axum::routing::get(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                match has_image {
                    true => (StatusCode::OK, [("docker-content-digest", DIGEST)]).into_response(),
                    false => StatusCode::NOT_FOUND.into_response(),
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Registry { port, heads }
}

fn review(image: &str, i: usize) -> Bytes {
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("burst-{i}"),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop", "operation": "CREATE",
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "web-", "namespace": "shop"},
                "spec": {"containers": [{"name": "web", "image": image}]}
            }
        }
    });
    Bytes::from(serde_json::to_vec(&review).unwrap())
}

/// The sum of `image_mirror_verify_check_duration_seconds`, in seconds.
async fn checked_seconds(sender: &mut common::Sender, server: &common::Server) -> f64 {
    let text = common::get(sender, &server.metrics).await;
    text.lines()
        .find_map(|l| l.strip_prefix("image_mirror_verify_check_duration_seconds_sum "))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[derive(Clone, Copy)]
enum Shape {
    Paced { rate: f64 },
    AtOnce,
}

/// Sends `n` reviews for `image` in `shape`; the latencies, sorted (a failed review panics).
async fn burst(
    senders: &[common::Sender],
    url: &hyper::Uri,
    image: &str,
    n: usize,
    shape: Shape,
) -> Vec<Duration> {
    let bodies: Vec<Bytes> = (0..n).map(|i| review(image, i)).collect();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for (i, body) in bodies.into_iter().enumerate() {
        if let Shape::Paced { rate } = shape {
            tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / rate)).into())
                .await;
        }
        let mut sender = senders[i % senders.len()].clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            common::post(&mut sender, &url, body).await
        }));
    }
    let mut took = Vec::with_capacity(n);
    for t in tasks {
        let (status, d) = t.await.unwrap();
        assert_eq!(status, 200, "a review failed");
        took.push(d);
    }
    took.sort();
    took
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

struct Row {
    heads: (usize, usize),
    check_ms: f64,
    p50: f64,
    p99: f64,
    max: f64,
    base_p99: f64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = common::args();
    let reviews: usize = a.get("reviews").map_or(500, |v| v.parse().unwrap());
    let rounds: usize = a.get("rounds").map_or(10, |v| v.parse().unwrap());
    let delay = Duration::from_millis(a.get("delay-ms").map_or(20, |v| v.parse().unwrap()));
    let rate: f64 = a.get("rate").map_or(1000.0, |v| v.parse().unwrap());
    let out = a
        .get("out")
        .cloned()
        .unwrap_or_else(|| "target/verify-burst-report.md".into());

    let lacking = registry(false, delay).await;
    let having = registry(true, delay).await;
    let mirrors = format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"http://127.0.0.1:{}\", \"http://127.0.0.1:{}\"]\n",
        lacking.port, having.port
    );
    let dir = std::env::temp_dir().join(format!("imw-verify-burst-{}", std::process::id()));
    let verifying = common::serve(
        &dir,
        "verify",
        &format!("{mirrors}verify:\n  enabled: true\n  timeout: 1s\n"),
        &[],
    )
    .await;
    let baseline = common::serve(&dir, "baseline", &mirrors, &[]).await;

    let mut v_senders = common::connect(&verifying.url, &verifying.ca, 10).await;
    let b_senders = common::connect(&baseline.url, &baseline.ca, 10).await;
    // Warm both up (and the VM's scheduler): a cached image at a steady rate.
    for _ in 0..3 {
        burst(
            &v_senders,
            &verifying.url,
            "warm/up:1",
            2000,
            Shape::Paced { rate: 5000.0 },
        )
        .await;
        burst(
            &b_senders,
            &baseline.url,
            "warm/up:1",
            2000,
            Shape::Paced { rate: 5000.0 },
        )
        .await;
    }

    let shapes = [
        (
            format!("paced, {rate:.0}/s over 4 connections"),
            Shape::Paced { rate },
        ),
        ("at once, over 10 connections".to_owned(), Shape::AtOnce),
    ];
    let mut report = vec![
        "# Verify: a burst of reviews for one image".to_owned(),
        String::new(),
        format!(
            "{reviews} reviews for one image per round, a new tag each round (cold cache). Two endpoints, each \
answering after {} ms: the first lacks the image (404), the second has it, so the check is two HEADs in \
turn. `serve` release build, default flags, TLS on loopback; the generator runs on the same machine. \
Baseline: the same policy and burst with `verify` off. All times in ms.",
            delay.as_millis()
        ),
    ];
    let mut tag = 0;
    for (label, shape) in shapes {
        let conns = match shape {
            Shape::Paced { .. } => 4,
            Shape::AtOnce => 10,
        };
        let mut rows = Vec::new();
        for round in 0..=rounds {
            tag += 1;
            let image = format!("burst/app:r{tag}");
            let before = (
                lacking.heads.load(Ordering::SeqCst),
                having.heads.load(Ordering::SeqCst),
            );
            let sum_before = checked_seconds(&mut v_senders[0], &verifying).await;
            let took = burst(&v_senders[..conns], &verifying.url, &image, reviews, shape).await;
            let check_ms =
                (checked_seconds(&mut v_senders[0], &verifying).await - sum_before) * 1000.0;
            let heads = (
                lacking.heads.load(Ordering::SeqCst) - before.0,
                having.heads.load(Ordering::SeqCst) - before.1,
            );
            let base = burst(&b_senders[..conns], &baseline.url, &image, reviews, shape).await;
            // The first round only warms the path up.
            if round > 0 {
                rows.push(Row {
                    heads,
                    check_ms,
                    p50: pct(&took, 50.0),
                    p99: pct(&took, 99.0),
                    max: pct(&took, 100.0),
                    base_p99: pct(&base, 99.0),
                });
            }
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let over_check: Vec<f64> = rows.iter().map(|r| r.p99 - r.check_ms).collect();
        let over_both: Vec<f64> = rows
            .iter()
            .map(|r| r.p99 - r.check_ms - r.base_p99)
            .collect();
        report.push(String::new());
        report.push(format!("## {label}"));
        report.push(String::new());
        report.push(format!(
            "p99 − check: median {:.2}, worst {:.2}. p99 − (check + baseline p99): median {:.2}, worst {:.2}.",
            median(over_check.clone()),
            over_check.iter().copied().fold(f64::MIN, f64::max),
            median(over_both.clone()),
            over_both.iter().copied().fold(f64::MIN, f64::max),
        ));
        report.push(String::new());
        report.push("| round | HEADs (1st, 2nd endpoint) | check | p50 | p99 | max | baseline p99 | p99 − check | p99 − (check + baseline p99) |".into());
        report.push("|---|---|---|---|---|---|---|---|---|".into());
        for (i, r) in rows.iter().enumerate() {
            report.push(format!(
                "| {} | {}, {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                i + 1,
                r.heads.0,
                r.heads.1,
                r.check_ms,
                r.p50,
                r.p99,
                r.max,
                r.base_p99,
                over_check[i],
                over_both[i]
            ));
        }
    }
    let text = report.join("\n") + "\n";
    if let Some(parent) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&out, &text).unwrap();
    print!("{text}");
    std::fs::remove_dir_all(&dir).ok();
}
