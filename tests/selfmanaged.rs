//! Self-managed certificates against a fake Kubernetes API: the first start creates the Secret and
//! publishes the CA bundle, other replicas reuse it, a certificate near expiry is renewed, and
//! `serve` picks up a renewal made elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use common::fake_api::FakeApi;
use image_mirror_webhook::server::selfmanaged::{self, CertificateSettings};
use serde_json::{json, Value};

const NS: &str = "imw";

fn settings() -> CertificateSettings {
    CertificateSettings {
        secret: format!("{NS}/imw-tls").parse().unwrap(),
        dns_names: vec!["localhost".into(), "127.0.0.1".into(), "imw.imw.svc".into()],
        validity: Duration::from_secs(3600),
        renew_before: Duration::from_secs(600),
        webhook_configuration: Some("imw".into()),
    }
}

fn webhook_config(webhooks: usize) -> Value {
    let hooks: Vec<Value> = (0..webhooks)
        .map(|i| json!({"name": format!("h{i}.image-mirror-webhook.io"), "admissionReviewVersions": ["v1"], "sideEffects": "NoneOnDryRun",
            "clientConfig": {"service": {"name": "imw", "namespace": NS, "path": "/mutate"}}}))
        .collect();
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration", "metadata": {"name": "imw"}, "webhooks": hooks})
}

fn bundles(api: &FakeApi) -> Vec<String> {
    let config = api.webhook_config("imw").unwrap();
    config["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let b64 = w["clientConfig"]["caBundle"].as_str().unwrap_or_default();
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap(),
            )
            .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn the_first_start_creates_the_secret_and_publishes_the_ca() {
    let api = FakeApi::start().await;
    api.put_webhook_config("imw", webhook_config(2));
    let client = api.client();
    let s = settings();
    let m = selfmanaged::ensure(&client, &s, SystemTime::now())
        .await
        .unwrap();
    assert_eq!(api.secret_writes(), 1);
    let secret = api.secret(NS, "imw-tls").unwrap();
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "image-mirror-webhook"
    );
    assert_eq!(api.secret_text(NS, "imw-tls", "tls.crt").unwrap(), m.cert);
    assert!(selfmanaged::publish_ca(&client, "imw", &m).await.unwrap());
    assert_eq!(
        bundles(&api),
        vec![m.ca_bundle.clone(), m.ca_bundle.clone()]
    );
    assert!(
        !selfmanaged::publish_ca(&client, "imw", &m).await.unwrap(),
        "nothing to change the second time"
    );
}

#[tokio::test]
async fn other_replicas_reuse_the_secret_even_when_racing() {
    let api = FakeApi::start().await;
    let client = api.client();
    let s = settings();
    let racers: Vec<_> = (0..5)
        .map(|_| {
            let (client, s) = (client.clone(), s.clone());
            tokio::spawn(async move {
                selfmanaged::ensure(&client, &s, SystemTime::now())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut results = Vec::new();
    for r in racers {
        results.push(r.await.unwrap());
    }
    assert!(
        results.windows(2).all(|w| w[0] == w[1]),
        "replicas disagree on the certificate"
    );
    assert_eq!(
        api.secret_writes(),
        1,
        "exactly one replica wrote the Secret"
    );
    let later = selfmanaged::ensure(&client, &s, SystemTime::now())
        .await
        .unwrap();
    assert_eq!(later, results[0]);
    assert_eq!(api.secret_writes(), 1);
}

#[tokio::test]
async fn a_certificate_near_expiry_is_renewed_and_both_cas_are_trusted() {
    let api = FakeApi::start().await;
    api.put_webhook_config("imw", webhook_config(1));
    let client = api.client();
    let s = settings();
    let old = selfmanaged::ensure(&client, &s, SystemTime::now())
        .await
        .unwrap();
    // 55 minutes on, 5 minutes are left: inside the 10-minute renewal window.
    let later = SystemTime::now() + Duration::from_secs(55 * 60);
    let new = selfmanaged::ensure(&client, &s, later).await.unwrap();
    assert_ne!(new.cert, old.cert);
    assert_eq!(api.secret_writes(), 2);
    assert_eq!(api.secret_text(NS, "imw-tls", "tls.crt").unwrap(), new.cert);
    assert!(
        new.ca_bundle.contains(old.ca_bundle.trim()),
        "the previous CA stays trusted"
    );
    selfmanaged::publish_ca(&client, "imw", &new).await.unwrap();
    assert_eq!(bundles(&api), vec![new.ca_bundle.clone()]);
    // A Secret that is not usable at all (a key that does not fit) is replaced too.
    let mut secret = api.secret(NS, "imw-tls").unwrap();
    secret["data"]["tls.key"] =
        json!(base64::engine::general_purpose::STANDARD.encode(old.key.as_bytes()));
    api.put_secret(NS, "imw-tls", secret);
    let fixed = selfmanaged::ensure(&client, &s, SystemTime::now())
        .await
        .unwrap();
    assert_ne!(fixed.cert, new.cert);
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_with_a_self_managed_certificate() {
    use common::TempDir;
    let api = FakeApi::start().await;
    api.put_webhook_config("imw", webhook_config(1));
    let dir = TempDir::new("selfmanaged");
    let kubeconfig = api.kubeconfig(&dir.0);
    let secret = format!("{NS}/imw-tls");
    let server = common::Server::start(common::Options {
        own_tls: false,
        extra: &[
            "--cert-secret",
            &secret,
            "--cert-dns-names",
            "localhost,127.0.0.1",
            "--webhook-configuration",
            "imw",
            "--cert-check-interval",
            "200ms",
        ],
        kubeconfig: Some(&kubeconfig),
        ..common::Options::default()
    });
    let logs = || server.logs();
    let url = server.url("/healthz");
    let deadline = Instant::now() + Duration::from_secs(20);
    let first_ca = loop {
        assert!(Instant::now() < deadline, "never served: {}", logs());
        if let Some(ca) = api.secret_text(NS, "imw-tls", "ca.crt") {
            if common::client_trusting(&[&ca])
                .get(&url)
                .send()
                .await
                .is_ok()
            {
                break ca;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while bundles(&api) != vec![first_ca.clone()] {
        assert!(
            Instant::now() < deadline,
            "CA bundle not published: {}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Another replica renews: this one picks the new pair up and publishes its CA.
    let next = image_mirror_webhook::server::tls::generate(&["localhost", "127.0.0.1"]).unwrap();
    let mut secret = api.secret(NS, "imw-tls").unwrap();
    let b64 = |s: &str| json!(base64::engine::general_purpose::STANDARD.encode(s.as_bytes()));
    secret["data"] = json!({"ca.crt": b64(&next.ca_pem), "tls.crt": b64(&next.cert_pem), "tls.key": b64(&next.key_pem)});
    api.put_secret(NS, "imw-tls", secret);
    let trusting_next = common::client_trusting(&[&next.ca_pem]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while trusting_next.get(&url).send().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "renewal not picked up: {}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bundles(&api), vec![next.ca_pem.clone()]);
}
