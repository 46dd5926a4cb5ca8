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

mod common;

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = common::args();
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

    let senders = common::connect(&url, &std::fs::read(&a["ca"]).unwrap(), connections).await;

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
        let (url, body, tx) = (url.clone(), body.clone(), tx.clone());
        tokio::spawn(async move {
            let (status, took) = common::post(&mut sender, &url, body).await;
            tx.send((i, sent, status, took)).ok();
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
