//! The pure path: a realistic three-container Pod against policies of 10, 100 and 1,000 rules.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use image_mirror_webhook::mutate::{Extras, Operation};
use image_mirror_webhook::policy::Policy;
use image_mirror_webhook::reference::Reference;
use image_mirror_webhook::{admission, dryrun};

/// Half the rules are mirror entries for other registries, half are rewrite rules under Docker Hub
/// (all scanned for the Pod's Docker Hub image), plus exclusion regexes.
fn policy(rules: usize) -> Policy {
    let mut text = String::from("mirrors:\n");
    for i in 0..rules / 2 {
        text.push_str(&format!(
            "  reg{i}.example.com:\n    endpoint: [\"https://mirror{i}.example.com\"]\n"
        ));
    }
    text.push_str("  quay.io:\n    endpoint: [\"https://quay-mirror.example.com\"]\n");
    text.push_str(
        "  docker.io:\n    endpoint: [\"https://hub-mirror.example.com:5000\"]\n    rewrite:\n",
    );
    for i in 0..rules / 2 {
        text.push_str(&format!(
            "      \"^team{i}/(.*)\": \"mirrored/team{i}/$1\"\n"
        ));
    }
    text.push_str("configs:\n  hub-mirror.example.com:5000:\n    pullSecret: hub-cred\n");
    text.push_str("exclude:\n  namespaces: [kube-system]\n  images: ['^internal\\.example\\.com/', 'busybox$']\n");
    match Policy::load(&text) {
        Ok(l) => l.policy,
        Err(e) => panic!("{e}"),
    }
}

fn pod() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-7d4b9c", "namespace": "shop", "labels": {"app": "web", "pod-template-hash": "7d4b9c"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-01T10:00:00Z"}},
        "spec": {
            "containers": [
                {"name": "web", "image": "nginx:1.25.3", "ports": [{"containerPort": 80}],
                 "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
                {"name": "cache", "image": "quay.io/coreos/etcd:v3.5.0"},
                {"name": "agent", "image": "reg3.example.com/team/agent:2.1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
            ],
            "serviceAccountName": "web",
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}]
        }
    })
}

fn bench(c: &mut Criterion) {
    let pod = pod();
    let mut group = c.benchmark_group("pod");
    for rules in [10, 100, 1000] {
        let p = policy(rules);
        group.bench_with_input(BenchmarkId::new("plan", rules), &p, |b, p| {
            b.iter(|| {
                dryrun::plan(
                    p,
                    black_box(&pod),
                    None,
                    &Operation::Create,
                    dryrun::Options::default(),
                )
            })
        });
    }
    group.finish();
    let p = policy(10);
    for image in ["nginx:1.25.3", "quay.io/coreos/etcd:v3.5.0"] {
        c.bench_function(&format!("decide/{image}"), |b| {
            b.iter(|| image_mirror_webhook::rewrite::decide(&p, black_box(image), None))
        });
    }
    c.bench_function("template/deserialize", |b| {
        b.iter(|| image_mirror_webhook::mutate::PodTemplate::deserialize_from(black_box(&pod)))
    });
    // A whole review as `serve` answers it: the AdmissionReview read, the Pod decided, the answer
    // (with its base64 patch) written.
    let body = std::fs::read("tests/data/reviews/create.json").unwrap();
    let text = std::fs::read_to_string("tests/data/reviews/policy.yaml").unwrap();
    let reviewed = Policy::load(&text).unwrap().policy;
    c.bench_function("review/answer", |b| {
        b.iter(|| match admission::read(black_box(&body), false) {
            admission::Read::Pod(pod) => {
                pod.decide(Some(&reviewed), false, Extras::default()).body()
            }
            admission::Read::Answered(answer) => answer.body(),
        })
    });
    c.bench_function("reference/parse", |b| {
        b.iter(|| Reference::parse(black_box("registry.example.com:5000/team/app:1.0")))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
