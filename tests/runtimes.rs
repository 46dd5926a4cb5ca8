//! The three runtime formats served by the binary over TLS: registries.conf (with a short-name
//! alias), containerd hosts.toml and an OpenShift ImageDigestMirrorSet in one policy; a Pod
//! rewritten by all three, one refused because no source could serve it, and the dry-run saying
//! the same.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use serde_json::{json, Value};

use common::{create_review, decode_patch, Server};

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

const POLICY: &str = r#"registries.conf: |
  unqualified-search-registries = ["docker.io"]

  [aliases]
  "busybox" = "quay.io/prometheus/busybox"

  [[registry]]
  prefix = "quay.io/prometheus"
  location = "quay.io/prometheus"
  [[registry.mirror]]
  location = "harbor.example.com/quay-prometheus"
certs.d:
  ghcr.io: |
    server = "https://ghcr.io"
    [host."https://ghcr-cache.example.com"]
      capabilities = ["pull", "resolve"]
imageMirrorSets:
  - apiVersion: config.openshift.io/v1
    kind: ImageDigestMirrorSet
    metadata:
      name: release
    spec:
      imageDigestMirrors:
        - source: registry.redhat.io/ubi9
          mirrors: ["mirror.example.com/ubi9"]
          mirrorSourcePolicy: NeverContactSource
"#;

fn pod(images: &[&str]) -> Value {
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
        .collect();
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}})
}

async fn review(server: &Server, images: &[&str]) -> Value {
    let body = create_review("u1", "default", &pod(images), false);
    server
        .client()
        .post(server.url("/mutate"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn each_format_rewrites_and_an_unpullable_image_is_refused() {
    let server = Server::with_policy(POLICY);
    server.wait_ready().await;
    let ubi = format!("registry.redhat.io/ubi9/ubi@{DIGEST}");
    let answer = review(
        &server,
        &[
            "busybox:1.36",
            "quay.io/prometheus/node-exporter:v1",
            "ghcr.io/org/app:2",
            &ubi,
        ],
    )
    .await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let mut doc = pod(&[
        "busybox:1.36",
        "quay.io/prometheus/node-exporter:v1",
        "ghcr.io/org/app:2",
        &ubi,
    ]);
    json_patch::patch(&mut doc, &decode_patch(&answer).unwrap()).unwrap();
    let images: Vec<&str> = doc["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["image"].as_str().unwrap())
        .collect();
    assert_eq!(
        images,
        [
            "harbor.example.com/quay-prometheus/busybox:1.36",
            "harbor.example.com/quay-prometheus/node-exporter:v1",
            "ghcr-cache.example.com/org/app:2",
            &format!("mirror.example.com/ubi9/ubi@{DIGEST}"),
        ]
    );

    // A tag of a NeverContactSource repository whose mirrors serve digests only.
    let answer = review(&server, &["nginx:1.27", "registry.redhat.io/ubi9/ubi:9.4"]).await;
    let response = &answer["response"];
    assert_eq!(response["allowed"], false, "{answer}");
    assert_eq!(response["status"]["code"], 403);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("container c1: image \"registry.redhat.io/ubi9/ubi:9.4\""),
        "{message}"
    );
    assert!(
        message.contains("ImageDigestMirrorSet/release"),
        "names the rule: {message}"
    );
    assert!(response.get("patch").is_none(), "{answer}");
    let metrics = server.metrics().await;
    assert!(metrics.contains("outcome=\"refused\"} 1"), "{metrics}");

    // The dry-run says the same, per image.
    let report: Value = server
        .client()
        .post(server.url("/dry-run"))
        .header("content-type", "application/yaml")
        .body("kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: \"registry.redhat.io/ubi9/ubi:9.4\"}]}\n")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let decision = &report["results"][0]["decisions"][0];
    assert_eq!(decision["denied"], true, "{report}");
    assert!(
        decision["reason"].as_str().unwrap().contains("blocked"),
        "{report}"
    );
}

#[tokio::test]
async fn unpullable_warn_admits_with_a_warning() {
    let server = Server::with_policy(&format!("{POLICY}unpullable: warn\n"));
    server.wait_ready().await;
    let answer = review(&server, &["registry.redhat.io/ubi9/ubi:9.4"]).await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let warnings = answer["response"]["warnings"].to_string();
    assert!(
        warnings.contains("ImageDigestMirrorSet/release"),
        "{warnings}"
    );
}
