//! The JSON patch: minimal, escaped, adding missing parents whole, honouring what an UPDATE or the
//! ephemeral-containers subresource may change.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;

use image_mirror_webhook::dryrun;
use image_mirror_webhook::mutate::Operation;
use image_mirror_webhook::policy::Policy;
use serde_json::{json, Value};

const POLICY: &str = r#"
mirrors:
  docker.io:
    endpoint: ["https://mirror.example.com:5000"]
  quay.io:
    endpoint: ["http://quay-mirror.local:5000"]
configs:
  "mirror.example.com:5000":
    pullSecret: mirror-cred
  "quay-mirror.local:5000":
    pullSecret: quay-cred
exclude:
  namespaces: [kube-system]
"#;

fn policy() -> Policy {
    common::policy(POLICY)
}

/// What a CREATE of `object` gets under `policy`.
fn create(policy: &Policy, object: &Value) -> image_mirror_webhook::mutate::Mutation {
    dryrun::plan(
        policy,
        object,
        None,
        &Operation::Create,
        dryrun::Options::default(),
    )
    .unwrap()
}

fn patch_of(object: &Value, op: Operation) -> Value {
    let m = dryrun::plan(&policy(), object, None, &op, dryrun::Options::default()).unwrap();
    serde_json::to_value(&m.patch).unwrap()
}

#[test]
fn minimal_patch_for_a_plain_pod() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"containers": [
            {"name": "web", "image": "nginx:1.25"},
            {"name": "side", "image": "mirror.example.com:5000/library/envoy:1"}
        ]}
    });
    assert_eq!(
        patch_of(&pod, Operation::Create),
        json!([
            {"op": "replace", "path": "/spec/containers/0/image", "value": "mirror.example.com:5000/library/nginx:1.25"},
            {"op": "add", "path": "/metadata/annotations", "value": {
                "image-mirror-webhook.io/original-images": "{\"containers/web\":\"nginx:1.25\"}"}},
            {"op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": "mirror-cred"}]}
        ])
    );
}

#[test]
fn existing_parents_are_added_into_with_escaped_keys() {
    let pod = json!({
        "kind": "Pod",
        "metadata": {"name": "web", "annotations": {"a~b/c": "x"}},
        "spec": {
            "containers": [{"name": "web", "image": "quay.io/org/app:1"}],
            "imagePullSecrets": [{"name": "mine"}]
        }
    });
    assert_eq!(
        patch_of(&pod, Operation::Create),
        json!([
            {"op": "replace", "path": "/spec/containers/0/image", "value": "quay-mirror.local:5000/org/app:1"},
            {"op": "add", "path": "/metadata/annotations/image-mirror-webhook.io~1original-images",
             "value": "{\"containers/web\":\"quay.io/org/app:1\"}"},
            {"op": "add", "path": "/spec/imagePullSecrets/-", "value": {"name": "quay-cred"}}
        ])
    );
}

#[test]
fn a_template_without_metadata_gets_it_whole() {
    let deploy = json!({
        "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    });
    let patch = patch_of(&deploy, Operation::Create);
    assert_eq!(patch[1]["path"], "/spec/template/metadata");
    assert_eq!(
        patch[1]["value"]["annotations"]["image-mirror-webhook.io/original-images"],
        "{\"containers/c\":\"nginx\"}"
    );
    let mut after = deploy.clone();
    json_patch::patch(
        &mut after,
        &serde_json::from_value::<json_patch::Patch>(patch).unwrap(),
    )
    .unwrap();
    assert_eq!(
        after["spec"]["template"]["spec"]["containers"][0]["image"],
        "mirror.example.com:5000/library/nginx"
    );
}

#[test]
fn update_changes_images_only() {
    let pod = json!({
        "kind": "Pod", "metadata": {"name": "web"},
        "spec": {
            "containers": [{"name": "web", "image": "nginx:1.26"}],
            "initContainers": [{"name": "i", "image": "busybox"}],
            "ephemeralContainers": [{"name": "dbg", "image": "busybox"}],
            "volumes": [{"name": "v", "image": {"reference": "quay.io/a/b:1"}}]
        }
    });
    let patch = patch_of(&pod, Operation::Update);
    let paths: Vec<&str> = patch
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["/spec/containers/0/image", "/spec/initContainers/0/image"]
    );
    assert!(patch
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["op"] == "replace"));
}

#[test]
fn ephemeral_subresource_touches_only_new_ephemeral_containers() {
    let pod = json!({
        "kind": "Pod", "metadata": {"name": "web"},
        "spec": {
            "containers": [{"name": "web", "image": "nginx"}],
            "ephemeralContainers": [
                {"name": "old", "image": "busybox"},
                {"name": "new", "image": "busybox:1.36"}
            ]
        }
    });
    let existing: HashSet<String> = ["old".to_owned()].into();
    let patch = patch_of(&pod, Operation::AddEphemeral { existing });
    assert_eq!(
        patch,
        json!([{"op": "replace", "path": "/spec/ephemeralContainers/1/image",
                "value": "mirror.example.com:5000/library/busybox:1.36"}])
    );
}

#[test]
fn excluded_namespaces_and_skip_label_leave_the_pod_alone() {
    let pod = |ns: &str, labels: Value| {
        json!({
            "kind": "Pod", "metadata": {"name": "p", "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}
        })
    };
    assert_eq!(
        patch_of(&pod("kube-system", json!({})), Operation::Create),
        json!([])
    );
    assert_eq!(
        patch_of(
            &pod("shop", json!({"image-mirror-webhook.io/skip": "true"})),
            Operation::Create
        ),
        json!([])
    );
    assert_ne!(
        patch_of(
            &pod("shop", json!({"image-mirror-webhook.io/skip": "false"})),
            Operation::Create
        ),
        json!([])
    );
    let m = dryrun::plan(
        &policy(),
        &pod("kube-system", json!({})),
        None,
        &Operation::Create,
        dryrun::Options::default(),
    )
    .unwrap();
    assert!(m.decisions[0].decision.reason.contains("kube-system"));
}

#[test]
fn the_request_namespace_applies_when_the_object_has_none() {
    let pod = json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
    let m = dryrun::plan(
        &policy(),
        &pod,
        Some("kube-system"),
        &Operation::Create,
        dryrun::Options::default(),
    )
    .unwrap();
    assert!(m.is_empty());
}

#[test]
fn invalid_images_are_left_with_a_warning() {
    let pod = json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "image": "NGINX:latest"}, {"name": "d", "image": ""}, {"name": "e"}
    ]}});
    let m = create(&policy(), &pod);
    assert!(m.is_empty());
    assert_eq!(m.decisions.len(), 1);
    assert!(
        m.warnings[0].contains("invalid image \"NGINX:latest\""),
        "{:?}",
        m.warnings
    );
}

#[test]
fn warnings_are_short_and_can_be_turned_off() {
    let long = format!("team/{}:1", "a".repeat(200));
    let pod = json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": long}]}});
    let m = create(&policy(), &pod);
    assert_eq!(m.warnings.len(), 1);
    // Within the 256 characters the API server keeps, the new reference whole.
    assert!(m.warnings[0].len() <= 256, "{}", m.warnings[0]);
    let result = m.decisions[0].decision.result.clone().unwrap();
    assert!(
        m.warnings[0].ends_with(&format!(" rewritten to {result}")),
        "{}",
        m.warnings[0]
    );
    let quiet = Policy::load(&format!(
        "{POLICY}\nwarnings: false\nannotateOriginal: false\n"
    ))
    .unwrap()
    .policy;
    let m = create(&quiet, &pod);
    assert!(m.warnings.is_empty());
    assert!(m.annotations.is_empty());
    assert_eq!(m.patch.0.len(), 2, "image and pull secret only");
}

#[test]
fn original_images_merge_with_an_earlier_pass() {
    let pod = json!({"kind": "Pod", "metadata": {"name": "p", "annotations": {
            "image-mirror-webhook.io/original-images": "{\"containers/app\":\"nginx\"}"}},
        "spec": {"containers": [
            {"name": "app", "image": "mirror.example.com:5000/library/nginx"},
            {"name": "sidecar", "image": "envoyproxy/envoy:v1"}
        ], "imagePullSecrets": [{"name": "mirror-cred"}]}});
    let m = create(&policy(), &pod);
    assert_eq!(
        m.annotations["image-mirror-webhook.io/original-images"],
        "{\"containers/app\":\"nginx\",\"containers/sidecar\":\"envoyproxy/envoy:v1\"}"
    );
    assert!(m.pull_secrets.is_empty());
}

#[test]
fn kci_annotations_merge_with_what_the_pod_says() {
    let p = Policy::load(&format!(
        "{POLICY}\nkci:\n  enabled: always\n  dnsConfig: {{nameservers: [1.1.1.1]}}\n"
    ))
    .unwrap()
    .policy;
    let pod = json!({"kind": "Pod", "metadata": {"name": "p", "annotations": {
            "k8s.ksyun.com/kci-http-registry": "192.168.1.5:5000, other:80",
            "k8s.ksyun.com/kci-dns-config": "{\"nameservers\":[\"8.8.8.8\"]}"}},
        "spec": {"containers": [{"name": "c", "image": "quay.io/a/b"}, {"name": "d", "image": "quay.io/a/c"}]}});
    let m = create(&p, &pod);
    assert_eq!(
        m.annotations["k8s.ksyun.com/kci-http-registry"],
        "192.168.1.5:5000,other:80,quay-mirror.local:5000"
    );
    assert!(
        !m.annotations.contains_key("k8s.ksyun.com/kci-dns-config"),
        "the pod's own value wins"
    );
    let never = Policy::load(&format!("{POLICY}\nkci:\n  enabled: never\n"))
        .unwrap()
        .policy;
    let tolerating = json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {
        "containers": [{"name": "c", "image": "quay.io/a/b"}],
        "tolerations": [{"key": "rbkci-virtual-kubelet.io/provider"}]}});
    let m = create(&never, &tolerating);
    assert!(!m
        .annotations
        .contains_key("k8s.ksyun.com/kci-http-registry"));
    let m = create(&policy(), &tolerating);
    assert_eq!(
        m.annotations["k8s.ksyun.com/kci-http-registry"],
        "quay-mirror.local:5000"
    );
}

#[test]
fn unreadable_templates_are_an_error_not_a_panic() {
    for bad in [
        json!({"kind": "Pod", "spec": {"containers": "nginx"}}),
        json!({"kind": "Pod", "spec": {"containers": [{"name": "c", "image": 5}]}}),
        json!({"kind": "Pod", "metadata": {"annotations": {"a": 1}}, "spec": {}}),
        json!({"kind": "Deployment", "spec": {}}),
        json!({"kind": "Service"}),
    ] {
        assert!(
            dryrun::plan(
                &policy(),
                &bad,
                None,
                &Operation::Create,
                dryrun::Options::default()
            )
            .is_err(),
            "{bad}"
        );
    }
}
