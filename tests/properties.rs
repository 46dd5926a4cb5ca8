//! Random pods under random policies: the patch always applies, a second pass over the result
//! yields no patch, and `kubectl patch --local` (the API server's own patch library) agrees.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use image_mirror_webhook::dryrun;
use image_mirror_webhook::mutate::Operation;
use image_mirror_webhook::policy::Policy;
use image_mirror_webhook::reference::Reference;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

const DIGEST: &str = "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn image() -> impl Strategy<Value = String> {
    let registry = prop::sample::select(vec![
        "",
        "docker.io/",
        "index.docker.io/",
        "quay.io/",
        "gcr.io/",
        "localhost:5000/",
        "mirror.example.com/",
        "registry.local:5000/",
        "foo_bar.com/",
        "Team/",
    ]);
    let path = prop::sample::select(vec![
        "nginx",
        "library/redis",
        "rancher/pause",
        "team/app/sub",
        "a-b__c",
    ]);
    let tag = prop::sample::select(vec!["", ":1.0", ":latest", ":V_1"]);
    let digest = prop::sample::select(vec!["", DIGEST]);
    let valid = (registry, path, tag, digest).prop_map(|(r, p, t, d)| format!("{r}{p}{t}{d}"));
    prop_oneof![9 => valid, 1 => "[ -~]{0,20}"]
}

fn policy_text() -> impl Strategy<Value = String> {
    let hub = prop::sample::select(vec![
        "",
        "  docker.io:\n    endpoint: [\"https://mirror.example.com\"]\n",
        "  docker.io:\n    endpoint: [\"http://hub.local:5000\", \"https://mirror.example.com\"]\n    rewrite:\n      \"^rancher/(.*)\": \"mirrored/$1\"\n",
        "  docker.io:\n    endpoint: [\"https://registry-1.docker.io\"]\n",
    ]);
    let quay = prop::sample::select(vec![
        "",
        "  quay.io:\n    endpoint: [\"https://quay.local/v2/cache\"]\n",
    ]);
    let star = prop::sample::select(vec![
        "",
        "  \"*\":\n    endpoint: [\"https://all.example.com:8443\"]\n",
    ]);
    let rest = prop::sample::select(vec![
        "",
        "defaultRegistry: registry.local:5000/base\n",
        "registryMirrors:\n  - endpoint: https://anthos.local:5000/v2/ns\n    caCertPath: /ca.crt\n",
        "exclude:\n  images: ['redis']\n  namespaces: [skipped]\n",
    ]);
    let configs = prop::sample::select(vec![
        "",
        "configs:\n  mirror.example.com:\n    pullSecret: mirror-cred\n  quay.local:\n    pullSecret: quay-cred\n",
        "configs:\n  \"*\":\n    pullSecret: any-cred\n    tls:\n      insecure_skip_verify: true\n",
    ]);
    let kci = prop::sample::select(vec![
        "",
        "kci:\n  enabled: always\n  dnsConfig: {nameservers: [1.1.1.1]}\n",
    ]);
    // The runtimes' own files, which decide before the rest where they match.
    let runtimes = prop::sample::select(vec![
        "",
        "registries.conf: |\n  unqualified-search-registries = [\"docker.io\", \"quay.io\"]\n  [[registry]]\n  prefix = \"docker.io/library\"\n  location = \"docker.io/library\"\n  [[registry.mirror]]\n  location = \"mirror.example.com/hub\"\n  [[registry]]\n  prefix = \"*.example.com\"\n  [[registry.mirror]]\n  location = \"cache.example.com/any\"\n",
        "certs.d:\n  docker.io: |\n    [host.\"https://harbor.example.com/v2/hub\"]\n      override_path = true\n  _default: |\n    [host.\"https://cache.example.com\"]\n",
        "imageMirrorSets:\n  - apiVersion: config.openshift.io/v1\n    kind: ImageTagMirrorSet\n    metadata: {name: t}\n    spec:\n      imageTagMirrors:\n        - source: docker.io\n          mirrors: [\"tags.example.com/hub\"]\n",
    ]);
    (hub, quay, star, rest, configs, kci, runtimes).prop_map(|(h, q, s, r, c, k, rt)| {
        let mirrors = format!("{h}{q}{s}");
        let mirrors = if mirrors.is_empty() {
            String::new()
        } else {
            format!("mirrors:\n{mirrors}")
        };
        format!("{mirrors}{r}{c}{k}{rt}")
    })
}

fn containers(prefix: &'static str, max: usize) -> impl Strategy<Value = Vec<Value>> {
    prop::collection::vec(image(), 0..=max).prop_map(move |images| {
        images
            .into_iter()
            .enumerate()
            .map(|(i, image)| json!({"name": format!("{prefix}{i}"), "image": image}))
            .collect()
    })
}

fn pod() -> impl Strategy<Value = Value> {
    let annotations = prop::sample::select(vec![
        Value::Null,
        json!({}),
        json!({"a~b/c": "x", "k8s.ksyun.com/kci-http-registry": "hub.local:5000,x:1"}),
    ]);
    let secrets = prop::sample::select(vec![
        Value::Null,
        json!([]),
        json!([{"name": "mirror-cred"}, {"name": "other"}]),
    ]);
    let namespace = prop::sample::select(vec!["default", "skipped"]);
    let volume = prop::option::of(image());
    (
        containers("c", 4),
        containers("i", 2),
        containers("e", 1),
        volume,
        annotations,
        secrets,
        namespace,
        any::<bool>(),
    )
        .prop_map(|(c, i, e, v, a, s, ns, kci)| {
            let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": ns}, "spec": {"containers": c}});
            if !a.is_null() {
                pod["metadata"]["annotations"] = a;
            }
            if !i.is_empty() {
                pod["spec"]["initContainers"] = Value::Array(i);
            }
            if !e.is_empty() {
                pod["spec"]["ephemeralContainers"] = Value::Array(e);
            }
            if let Some(v) = v {
                pod["spec"]["volumes"] = json!([{"name": "v", "image": {"reference": v}}]);
            }
            if !s.is_null() {
                pod["spec"]["imagePullSecrets"] = s;
            }
            if kci {
                pod["spec"]["tolerations"] = json!([{"key": "rbkci-virtual-kubelet.io/provider"}]);
            }
            pod
        })
}

fn image_fields(pod: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in pod["spec"][list].as_array().into_iter().flatten() {
            out.push(c["image"].as_str().unwrap_or_default().to_owned());
        }
    }
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        out.push(
            v["image"]["reference"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    out
}

/// Applies the engine's patch with the json-patch crate and checks the properties.
fn check(policy_text: &str, pod: &Value) -> Result<(Value, Value), TestCaseError> {
    let policy = Policy::load(policy_text)
        .map_err(|e| TestCaseError::fail(format!("{e}")))?
        .policy;
    let m = dryrun::plan(
        &policy,
        pod,
        None,
        &Operation::Create,
        dryrun::Options::default(),
    )
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut after = pod.clone();
    json_patch::patch(&mut after, &m.patch)
        .map_err(|e| TestCaseError::fail(format!("patch does not apply: {e}")))?;
    let again = dryrun::plan(
        &policy,
        &after,
        None,
        &Operation::Create,
        dryrun::Options::default(),
    )
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(
        again.is_empty(),
        "second pass patched: {:?}",
        serde_json::to_string(&again.patch)
    );
    // Valid images stay valid; invalid ones stay exactly as written.
    for (before, now) in image_fields(pod).iter().zip(image_fields(&after)) {
        if Reference::parse(before).is_ok() {
            prop_assert!(
                Reference::parse(&now).is_ok(),
                "{before} became invalid {now}"
            );
        } else {
            prop_assert_eq!(before, &now);
        }
    }
    let names: Vec<&str> = after["spec"]["imagePullSecrets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .collect();
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    prop_assert_eq!(unique.len(), names.len(), "duplicate pull secrets");
    Ok((serde_json::to_value(&m.patch).unwrap(), after))
}

proptest! {
    #![proptest_config(Config { cases: 2000, ..Config::default() })]
    #[test]
    fn patches_apply_and_converge(policy in policy_text(), pod in pod()) {
        check(&policy, &pod)?;
    }
}

/// The same generator, a fixed seed and a bounded count, compared with kubectl's patch library.
#[test]
fn kubectl_applies_the_patches_the_same_way() {
    let kubectl = Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output();
    assert!(
        kubectl.is_ok_and(|o| o.status.success()),
        "kubectl is needed for this test (the README's test command installs it)"
    );
    let dir = std::env::temp_dir().join(format!("imw-kubectl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut runner = TestRunner::deterministic();
    let strategy = (policy_text(), pod());
    let mut compared = 0;
    for _ in 0..40 {
        let (policy, pod) = strategy.new_tree(&mut runner).unwrap().current();
        let (patch, ours) = check(&policy, &pod).unwrap();
        if patch.as_array().unwrap().is_empty() {
            continue;
        }
        let file = dir.join("pod.json");
        std::fs::write(&file, serde_json::to_vec(&pod).unwrap()).unwrap();
        let out = Command::new("kubectl")
            .args(["patch", "--local", "-o", "json", "--type=json", "-f"])
            .arg(&file)
            .arg("-p")
            .arg(patch.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl refused {patch}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(theirs, ours, "kubectl and json-patch disagree on {patch}");
        compared += 1;
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(compared >= 20, "only {compared} non-empty patches compared");
}
