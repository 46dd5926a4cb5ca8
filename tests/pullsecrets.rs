//! Managed pull secrets against a fake Kubernetes API: creation, reuse, a burst, racing replicas,
//! rotation, sources (inline, Docker config file, Secret reference), failures, dryRun, existing
//! Secrets in the namespace, and no credential anywhere in logs, metrics or dry-run output.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::fake_api::FakeApi;
use common::{ApiServe, TempDir};
use image_mirror_webhook::dockerconfig::managed_name;
use image_mirror_webhook::policy::Policy;
use image_mirror_webhook::secrets::PullSecrets;
use serde_json::{json, Value};

const HOST: &str = "mirror.example.com:5000";
const USER: &str = "robot$mirror";
const PASSWORD: &str = "s3cr3t-Pa55word";

fn policy_with(auth: &str) -> Policy {
    let text = format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"https://{HOST}\"]\nconfigs:\n  \"{HOST}\":\n    {auth}\n"
    );
    common::policy(&text)
}

fn inline() -> Policy {
    policy_with(&format!(
        "auth: {{username: \"{USER}\", password: \"{PASSWORD}\"}}"
    ))
}

fn stored_config(api: &FakeApi, ns: &str) -> Value {
    serde_json::from_str(
        &api.secret_text(ns, &managed_name(HOST), ".dockerconfigjson")
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn creates_the_secret_kubectl_would_and_reuses_it() {
    let api = FakeApi::start().await;
    let ps = PullSecrets::new(api.client(), None);
    let name = ps.ensure(&inline(), "shop", HOST, HOST).await.unwrap();
    assert_eq!(name, managed_name(HOST));
    let secret = api.secret("shop", &name).unwrap();
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "image-mirror-webhook"
    );
    assert_eq!(
        secret["metadata"]["annotations"]["image-mirror-webhook.io/registry"],
        HOST
    );

    // What `kubectl create secret docker-registry` makes for the same server, user and password.
    let out = std::process::Command::new("kubectl")
        .args([
            "create",
            "secret",
            "docker-registry",
            "x",
            "--dry-run=client",
            "-o",
            "json",
        ])
        .arg(format!("--docker-server={HOST}"))
        .arg(format!("--docker-username={USER}"))
        .arg(format!("--docker-password={PASSWORD}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kubectl: Value = serde_json::from_slice(&out.stdout).unwrap();
    let theirs = base64::engine::general_purpose::STANDARD
        .decode(kubectl["data"][".dockerconfigjson"].as_str().unwrap())
        .unwrap();
    let theirs: Value = serde_json::from_slice(&theirs).unwrap();
    assert_eq!(stored_config(&api, "shop"), theirs);

    assert_eq!(api.secret_writes(), 1);
    ps.ensure(&inline(), "shop", HOST, HOST).await.unwrap();
    let again = PullSecrets::new(api.client(), None);
    again.ensure(&inline(), "shop", HOST, HOST).await.unwrap();
    assert_eq!(
        api.secret_writes(),
        1,
        "an existing, current Secret is reused, not rewritten"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_in_a_new_namespace_creates_each_secret_once() {
    let api = FakeApi::start().await;
    let replicas = [
        Arc::new(PullSecrets::new(api.client(), None)),
        Arc::new(PullSecrets::new(api.client(), None)),
    ];
    let policy = Arc::new(inline());
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (ps, policy) = (replicas[i % 2].clone(), policy.clone());
            tokio::spawn(async move { ps.ensure(&policy, "new-ns", HOST, HOST).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(api.secret_writes(), 1);
}

#[tokio::test]
async fn rotation_reaches_managed_secrets_without_any_pod() {
    let api = FakeApi::start().await;
    let ps = PullSecrets::new(api.client(), None);
    ps.ensure(&inline(), "a", HOST, HOST).await.unwrap();
    ps.ensure(&inline(), "b", HOST, HOST).await.unwrap();
    let rotated = policy_with(&format!(
        "auth: {{username: \"{USER}\", password: \"rotated-pw\"}}"
    ));
    assert_eq!(ps.resync(&rotated).await.unwrap(), 2);
    for ns in ["a", "b"] {
        assert_eq!(
            stored_config(&api, ns)["auths"][HOST]["password"],
            "rotated-pw"
        );
    }
    assert_eq!(
        ps.resync(&rotated).await.unwrap(),
        0,
        "nothing left to update"
    );
}

#[tokio::test]
async fn credentials_from_a_secret_reference_and_a_docker_config_file() {
    let api = FakeApi::start().await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    api.put_secret("default", "mirror-login", json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
        "metadata": {"name": "mirror-login", "namespace": "default"}, "data": {"username": b64(USER), "password": b64(PASSWORD)}}));
    let ps = PullSecrets::new(api.client(), None);
    let by_ref = policy_with("credentialsSecret: mirror-login");
    ps.ensure(&by_ref, "shop", HOST, HOST).await.unwrap();
    assert_eq!(
        stored_config(&api, "shop")["auths"][HOST]["password"],
        PASSWORD
    );
    // The source Secret rotates: the next resync carries it over.
    api.put_secret("default", "mirror-login", json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
        "metadata": {"name": "mirror-login", "namespace": "default"}, "data": {"username": b64(USER), "password": b64("next-pw")}}));
    assert_eq!(ps.resync(&by_ref).await.unwrap(), 1);
    assert_eq!(
        stored_config(&api, "shop")["auths"][HOST]["password"],
        "next-pw"
    );

    // Anthos pullCredentialConfigPath: a Docker config.json whose key has a scheme.
    let dir = TempDir::new("docker-config");
    let path = dir.path("config.json");
    let token = b64("file-user:file-pw");
    std::fs::write(
        &path,
        json!({"auths": {"https://172.18.0.20:5000": {"auth": token}}}).to_string(),
    )
    .unwrap();
    let anthos = Policy::load(&format!(
        "registryMirrors:\n  - endpoint: https://172.18.0.20:5000/v2/ns\n    pullCredentialConfigPath: {}\n",
        path.display()
    ))
    .unwrap()
    .policy;
    let name = ps
        .ensure(&anthos, "shop", "172.18.0.20:5000", "172.18.0.20:5000")
        .await
        .unwrap();
    let text = api.secret_text("shop", &name, ".dockerconfigjson").unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["auths"]["172.18.0.20:5000"]["auth"], token);
}

#[tokio::test]
async fn api_failures_are_errors_not_panics() {
    let api = FakeApi::start().await;
    api.fail_secret_writes(true);
    let ps = PullSecrets::new(api.client(), None);
    let err = ps.ensure(&inline(), "shop", HOST, HOST).await.unwrap_err();
    assert!(
        err.to_string().contains("500") || err.to_string().contains("timed out"),
        "{err}"
    );
    assert!(!format!("{err:?}").contains(PASSWORD));
    let missing = policy_with("credentialsSecret: nope");
    assert!(ps.ensure(&missing, "shop", HOST, HOST).await.is_err());
}

fn secret_names(pod: &Value) -> Vec<String> {
    pod["spec"]["imagePullSecrets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

fn serve_policy() -> String {
    format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"https://{HOST}\"]\nconfigs:\n  \"{HOST}\":\n    auth: {{username: \"{USER}\", password: \"{PASSWORD}\"}}\npullSecrets:\n  fromNamespace: true\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_makes_secrets_before_admission_and_never_on_dry_run() {
    let api = FakeApi::start().await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    // A registry credential made in Rancher, in the Pod's namespace, and one in another namespace.
    for ns in ["default", "elsewhere"] {
        api.put_secret(ns, "testquay", json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "testquay", "namespace": ns},
            "data": {".dockerconfigjson": b64(r#"{"auths":{"https://quay.io/v1/":{"auth":"cXVheTpwdw=="}}}"#)}}));
    }
    let s = ApiServe::start(&api, &serve_policy(), &[]).await;

    let (answer, pod) = s.review("shop", "nginx:1.25", true).await;
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(secret_names(&pod), vec![managed_name(HOST)]);
    assert_eq!(api.secret_writes(), 0, "dryRun writes nothing");

    let (_, pod) = s.review("shop", "nginx:1.25", false).await;
    assert_eq!(secret_names(&pod), vec![managed_name(HOST)]);
    assert_eq!(api.secret_writes(), 1);
    assert!(
        api.secret("shop", &managed_name(HOST)).is_some(),
        "created before the answer"
    );

    // Existing Secrets in the Pod's namespace that cover the registry are attached; others are not.
    let (_, pod) = s.review("default", "quay.io/profile/image", false).await;
    assert_eq!(secret_names(&pod), vec!["testquay".to_owned()]);
    let (_, pod) = s.review("shop", "quay.io/profile/image", false).await;
    assert!(secret_names(&pod).is_empty());

    // The dry-run endpoint names what would be made, and makes nothing.
    let writes = api.secret_writes();
    let objects = "kind: Pod\nmetadata: {name: x, namespace: fresh}\nspec:\n  containers: [{name: c, image: nginx}]\n";
    let (_, v) = common::post(
        &s.client,
        &s.url("/dry-run"),
        Some("application/yaml"),
        objects.into(),
    )
    .await;
    assert_eq!(
        v["results"][0]["managedSecrets"][0]["name"],
        managed_name(HOST)
    );
    assert_eq!(api.secret_writes(), writes);

    // No credential anywhere: logs, metrics, dry-run output, warnings.
    let dry = s
        .client
        .get(s.url("/dry-run?image=nginx"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metrics = s.server.metrics().await;
    let auth = b64(&format!("{USER}:{PASSWORD}"));
    for (what, text) in [
        ("logs", s.logs()),
        ("metrics", metrics),
        ("dry-run", dry),
        ("dry-run objects", v.to_string()),
        ("answer", answer.to_string()),
    ] {
        for secret in [PASSWORD, auth.as_str(), "cXVheTpwdw=="] {
            assert!(!text.contains(secret), "{what} shows a credential");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_follows_registry_credentials_made_and_removed_while_it_runs() {
    let api = FakeApi::start().await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let s = ApiServe::start(&api, &serve_policy(), &[]).await;
    let attached =
        || async { secret_names(&s.review("shop", "quay.io/profile/image", false).await.1) };
    assert!(attached().await.is_empty());
    let secret = |registry: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "testquay", "namespace": "shop"},
            "data": {".dockerconfigjson": b64(&format!(r#"{{"auths":{{"{registry}":{{"auth":"cXVheTpwdw=="}}}}}}"#))}})
    };
    // Made, repointed to another registry, then deleted, each seen through the watch.
    let until = |want: Vec<String>| {
        common::wait_until("the attached secrets", Duration::from_secs(5), move || {
            let want = want.clone();
            async move { attached().await == want }
        })
    };
    api.put_secret("shop", "testquay", secret("https://quay.io/v1/"));
    until(vec!["testquay".to_owned()]).await;
    api.put_secret("shop", "testquay", secret("ghcr.io"));
    until(vec![]).await;
    api.put_secret("shop", "testquay", secret("quay.io"));
    until(vec!["testquay".to_owned()]).await;
    api.delete_secret("shop", "testquay");
    until(vec![]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn api_failure_admits_with_a_warning_or_denies_when_fail_closed() {
    let api = FakeApi::start().await;
    api.fail_secret_writes(true);
    let s = ApiServe::start(&api, &serve_policy(), &[]).await;
    let (answer, pod) = s.review("shop", "nginx", false).await;
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(secret_names(&pod), vec![managed_name(HOST)]);
    let warnings = answer["response"]["warnings"].to_string();
    assert!(warnings.contains("could not be made yet"), "{warnings}");
    let metrics = s.server.metrics().await;
    assert!(
        metrics.contains("image_mirror_pull_secret_errors_total 1"),
        "{metrics}"
    );
    drop(s);

    let s = ApiServe::start(&api, &serve_policy(), &["--fail-closed"]).await;
    let (answer, _) = s.review("shop", "nginx", false).await;
    assert_eq!(answer["response"]["allowed"], false);
    assert!(!answer.to_string().contains(PASSWORD));
}
