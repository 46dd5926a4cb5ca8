//! `audit` at scale, the release binary against the fake Kubernetes API and a fake registry on
//! loopback: 50,000 Pods in 50 namespaces running 2,000 distinct images, listed in pages of 500,
//! with and without --verify (every image present in the mirror). Reports wall time and the
//! audit process's peak RSS (VmHWM, sampled until it exits).
//!
//!   cargo bench --bench audit -- [--out target/audit-report.md]

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../tests/common/fake_api.rs"]
mod fake_api;
#[path = "../tests/common/fake_registry.rs"]
mod fake_registry;

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::proc_kib;
use serde_json::{json, Value};

const PODS: usize = 50_000;
const IMAGES: usize = 2_000;

/// Runs the audit, sampling its high-water RSS until it exits: (wall time, peak KiB, report).
fn run(
    kubeconfig: &std::path::Path,
    policy: &std::path::Path,
    extra: &[&str],
) -> (Duration, u64, Value) {
    let out = std::env::temp_dir().join(format!("imw-audit-bench-{}.json", std::process::id()));
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_image-mirror-webhook"))
        .arg("audit")
        .arg("--policy-file")
        .arg(policy)
        .args(["-o", "json"])
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(proc_kib(child.id(), "VmHWM"));
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = started.elapsed();
    let report: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    std::fs::remove_file(&out).ok();
    (took, peak, report)
}

fn main() {
    let out_path = std::env::args()
        .skip_while(|a| a != "--out")
        .nth(1)
        .unwrap_or_else(|| "target/audit-report.md".into());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    let (api, registry) = runtime.block_on(async {
        (
            fake_api::FakeApi::start().await,
            fake_registry::FakeRegistry::start().await,
        )
    });
    for i in 0..IMAGES {
        registry.add(&format!("team{}/app{i}", i % 40));
    }
    registry.add("envoyproxy/envoy");
    for p in 0..PODS {
        let i = p % IMAGES;
        api.put_workload(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("pod-{p}"), "namespace": format!("ns-{}", p % 50),
                "labels": {"app": format!("app{i}")}},
            "spec": {"containers": [
                {"name": "app", "image": format!("team{}/app{i}:1.{}", i % 40, i % 7)},
                {"name": "sidecar", "image": "envoyproxy/envoy:v1.30.0"}]}}));
    }
    let dir = std::env::temp_dir().join(format!("imw-audit-bench-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = api.kubeconfig(&dir);
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "mirrors:\n  docker.io:\n    endpoint: [\"http://{}\"]\n",
            registry.host()
        ),
    )
    .unwrap();

    let mut report =
        String::from("# audit at scale (release binary, fake API and registry on loopback)\n\n");
    let _ = writeln!(
        report,
        "{PODS} Pods in 50 namespaces, {} distinct images, pages of 500.\n",
        IMAGES + 1
    );
    let _ = writeln!(
        report,
        "| run | wall time | peak RSS | workloads | images | list requests |"
    );
    let _ = writeln!(report, "|---|---|---|---|---|---|");
    for (name, extra) in [
        ("listing only", &[][..]),
        (
            "--verify --concurrency 32",
            &["--verify", "--concurrency", "32"][..],
        ),
    ] {
        let lists_before = api.workload_lists().len();
        let (took, peak, r) = run(&kubeconfig, &policy, extra);
        assert_eq!(r["totals"]["workloads"], PODS, "{}", r["errors"]);
        let _ = writeln!(
            report,
            "| {name} | {:.2} s | {:.1} MiB | {} | {} | {} |",
            took.as_secs_f64(),
            peak as f64 / 1024.0,
            r["totals"]["workloads"],
            r["totals"]["images"],
            api.workload_lists().len() - lists_before
        );
        if extra.is_empty() {
            continue;
        }
        assert_eq!(r["totals"]["missing"], 0);
        let heads: usize = (0..IMAGES)
            .map(|i| registry.heads(&format!("team{}/app{i}", i % 40)))
            .sum::<usize>()
            + registry.heads("envoyproxy/envoy");
        let _ = writeln!(
            report,
            "\nManifest requests with --verify: {heads} for {} distinct images (one each).\n",
            IMAGES + 1
        );
    }
    std::fs::remove_dir_all(&dir).ok();
    print!("{report}");
    std::fs::write(&out_path, &report).unwrap();
}
