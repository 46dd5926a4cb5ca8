//! `verify` against fake registries on loopback: endpoint order, failover, authentication (Basic
//! and Bearer; credentials inline, from a Docker config file or a Secret), 500s, a registry that
//! is down, never answers or hangs and recovers, caches, one request for a burst (also through
//! `serve`: 500 reviews), pinned digests, and what the dry-run says about each endpoint tried.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::fake_registry::{FakeRegistry, DIGEST};
use image_mirror_webhook::dryrun;
use image_mirror_webhook::policy::Policy;
use image_mirror_webhook::verify::{Access, Checker, Presence};

fn checker() -> Checker {
    Checker::new(Access::default())
}

/// A policy mirroring Docker Hub to `endpoints` with verify on; `extra` goes under `verify`.
fn policy_text(endpoints: &[String], extra: &str) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "mirrors:\n  docker.io:\n    endpoint: [{}]\nverify:\n  enabled: true\n  timeout: 500ms\n  cacheTTL: 30s\n  negativeCacheTTL: 10s\n{extra}",
        list.join(", ")
    )
}

fn policy(endpoints: &[String], extra: &str) -> Arc<Policy> {
    Arc::new(common::policy(&policy_text(endpoints, extra)))
}

fn http(r: &FakeRegistry) -> String {
    format!("http://{}", r.host())
}

async fn result(c: &Checker, p: &Arc<Policy>, image: &str) -> (Option<String>, Vec<String>) {
    let verdicts = c.verify(p, &[image.to_owned()]).await;
    let report = dryrun::explain(p, &[image.to_owned()], None, Some(&verdicts));
    let d = &report.results[0].decisions[0].decision;
    let tried = d
        .tried
        .iter()
        .map(|t| match &t.answer {
            Presence::Present { .. } => "present".to_owned(),
            Presence::Absent { reason, .. } => reason.clone(),
        })
        .collect();
    (d.result.clone().filter(|_| d.changed()), tried)
}

#[tokio::test]
async fn the_first_endpoint_that_has_it_wins_and_none_fails_over() {
    let (a, b) = (FakeRegistry::start().await, FakeRegistry::start().await);
    a.add("library/nginx");
    b.add("library/nginx");
    b.add("library/redis");
    let p = policy(&[http(&a), http(&b)], "");
    let c = checker();
    assert_eq!(
        result(&c, &p, "nginx:1.25").await,
        (
            Some(format!("{}/library/nginx:1.25", a.host())),
            vec!["present".into()]
        )
    );
    assert_eq!(
        result(&c, &p, "redis:7").await,
        (
            Some(format!("{}/library/redis:7", b.host())),
            vec!["not found".into(), "present".into()]
        )
    );
    assert_eq!(
        result(&c, &p, "busybox").await,
        (None, vec!["not found".into(), "not found".into()])
    );
    assert_eq!(
        b.heads("library/nginx"),
        0,
        "the second endpoint is not asked when the first has it"
    );
}

#[tokio::test]
async fn authentication_basic_and_bearer_with_the_policy_credentials() {
    let (a, b) = (FakeRegistry::start().await, FakeRegistry::start().await);
    a.add("library/nginx");
    b.add("library/nginx");
    a.require("robot:pw", true);
    b.require("robot:pw", false);
    for (registry, other) in [(&a, &b), (&b, &a)] {
        let creds = |pw: &str| {
            format!(
                "configs:\n  \"{}\":\n    auth: {{username: robot, password: {pw}}}\n",
                registry.host()
            )
        };
        let good = policy(&[http(registry), http(other)], &creds("pw"));
        let (chosen, tried) = result(&checker(), &good, "nginx").await;
        assert_eq!(
            chosen,
            Some(format!("{}/library/nginx", registry.host())),
            "{tried:?}"
        );
        let wrong = policy(&[http(registry)], &creds("nope"));
        let (chosen, tried) = result(&checker(), &wrong, "nginx").await;
        assert_eq!(chosen, None);
        assert!(tried[0].starts_with("unauthorized"), "{tried:?}");
        let none = policy(&[http(registry)], "");
        let (chosen, tried) = result(&checker(), &none, "nginx").await;
        assert_eq!(chosen, None);
        assert!(tried[0].starts_with("unauthorized"), "{tried:?}");
    }
    assert!(a.tokens_issued() >= 1);
}

#[tokio::test]
async fn errors_down_and_silent_registries_are_passed_over() {
    let (failing, good) = (FakeRegistry::start().await, FakeRegistry::start().await);
    failing.add("library/nginx");
    failing.fail_with(500);
    good.add("library/nginx");
    let down = format!("http://127.0.0.1:{}", common::free_port());
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let p = policy(&[http(&failing), down, http(&good)], "");
    let (chosen, tried) = result(&checker(), &p, "nginx").await;
    assert_eq!(chosen, Some(format!("{}/library/nginx", good.host())));
    assert_eq!(
        tried,
        vec![
            "answered 500".to_owned(),
            "cannot connect".to_owned(),
            "present".to_owned()
        ]
    );

    let p = policy(&[silent_url, http(&good)], "");
    let started = Instant::now();
    let (chosen, tried) = result(&checker(), &p, "nginx").await;
    assert_eq!(chosen, None, "{tried:?}");
    assert!(tried[0].contains("timed out"), "{tried:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the check is bounded by verify.timeout"
    );
    held.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_makes_one_request_per_endpoint_and_answers_are_cached() {
    let (a, b) = (FakeRegistry::start().await, FakeRegistry::start().await);
    a.delay(Duration::from_millis(100));
    b.delay(Duration::from_millis(100));
    b.add("library/nginx");
    let p = policy(&[http(&a), http(&b)], "");
    let c = Arc::new(checker());
    let burst: Vec<_> = (0..500)
        .map(|_| {
            let (c, p) = (c.clone(), p.clone());
            tokio::spawn(async move { c.verify(&p, &["nginx:1.25".to_owned()]).await })
        })
        .collect();
    for t in burst {
        let v = t.await.unwrap();
        assert_eq!(v["nginx:1.25"].chosen, Some(1));
    }
    assert_eq!((a.heads("library/nginx"), b.heads("library/nginx")), (1, 1));
    // Both answers are cached: the negative one for a short while, the positive one longer.
    c.verify(&p, &["nginx:1.25".to_owned()]).await;
    assert_eq!((a.heads("library/nginx"), b.heads("library/nginx")), (1, 1));
}

#[tokio::test]
async fn pin_digest_adds_the_digest_the_mirror_answered() {
    let a = FakeRegistry::start().await;
    a.add("team/app");
    let p = policy(&[http(&a)], "");
    let pinned = Arc::new(
        Policy::load(&format!(
            "mirrors:\n  docker.io:\n    endpoint: [\"{}\"]\nverify: {{enabled: true, pinDigest: true}}\n",
            http(&a)
        ))
        .unwrap()
        .policy,
    );
    let c = checker();
    assert_eq!(
        result(&c, &p, "team/app:1").await.0,
        Some(format!("{}/team/app:1", a.host()))
    );
    assert_eq!(
        result(&c, &pinned, "team/app:1").await.0,
        Some(format!("{}/team/app:1@{DIGEST}", a.host()))
    );
    // A reference that already has a digest keeps its own.
    let own = "team/app@sha256:2222222222222222222222222222222222222222222222222222222222222222";
    assert_eq!(
        result(&c, &pinned, own).await.0,
        Some(format!("{}/{}", a.host(), own))
    );
}

#[tokio::test]
async fn a_pod_whose_images_no_mirror_has_gets_a_warning_and_keeps_them() {
    let a = FakeRegistry::start().await;
    a.add("library/nginx");
    let p = policy(&[http(&a)], "");
    let c = checker();
    let pod = serde_json::json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "a", "image": "nginx"}, {"name": "b", "image": "redis"}]}});
    let items = vec![dryrun::Item {
        object: pod,
        namespace: None,
        operation: Default::default(),
        skip: None,
    }];
    let verdicts = c.verify(&p, &dryrun::images(&items)).await;
    let opts = dryrun::Options {
        verdicts: Some(&verdicts),
        ..dryrun::Options::default()
    };
    let report = dryrun::evaluate_all(&p, &items, opts);
    let r = &report.results[0];
    let after = r.object.as_ref().unwrap();
    assert_eq!(
        after["spec"]["containers"][0]["image"],
        format!("{}/library/nginx", a.host())
    );
    assert_eq!(after["spec"]["containers"][1]["image"], "redis");
    let warnings = r.warnings.as_ref().unwrap().join("\n");
    assert!(
        warnings.contains("image redis: no mirror has it"),
        "{warnings}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_checks_before_answering_and_the_dry_run_shows_what_was_tried() {
    let (a, b) = (FakeRegistry::start().await, FakeRegistry::start().await);
    b.add("library/nginx");
    let text = format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"{}\", \"{}\"]\nverify: {{enabled: true, timeout: 1s}}\n",
        http(&a),
        http(&b)
    );
    let server = common::Server::with_policy(&text);
    let pod = serde_json::json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "a", "image": "nginx:1.25"}, {"name": "b", "image": "redis:7"}]}});
    let review = common::create_review("v", "shop", &pod, false);
    let answer = common::post_json(&server.client(), &server.url("/mutate"), &review).await;
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &common::decode_patch(&answer).unwrap()).unwrap();
    assert_eq!(
        pod["spec"]["containers"][0]["image"],
        format!("{}/library/nginx:1.25", b.host())
    );
    assert_eq!(pod["spec"]["containers"][1]["image"], "redis:7");
    assert!(answer["response"]["warnings"]
        .to_string()
        .contains("image redis:7: no mirror has it"));
    let v = common::get_json(&server.client(), &server.url("/dry-run?image=nginx:1.25")).await;
    let tried = &v["results"][0]["decisions"][0]["tried"];
    assert_eq!(tried[0]["result"], "absent");
    assert_eq!(tried[0]["reason"], "not found");
    assert_eq!(tried[1]["result"], "present");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("image_mirror_verify_checks_total{result=\"present\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_registry_that_hangs_is_asked_again_once_its_negative_answer_expires() {
    let a = FakeRegistry::start().await;
    a.add("library/nginx");
    a.delay(Duration::from_secs(30));
    let p = Arc::new(
        Policy::load(&format!(
            "mirrors:\n  docker.io:\n    endpoint: [\"{}\"]\nverify: {{enabled: true, timeout: 300ms, negativeCacheTTL: 500ms}}\n",
            http(&a)
        ))
        .unwrap()
        .policy,
    );
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let observed = seen.clone();
    let c = Checker::new(Access {
        on_check: Some(Arc::new(move |label: &str, _: Duration| {
            observed.lock().unwrap().push(label.to_owned())
        })),
        ..Access::default()
    });
    let (chosen, tried) = result(&c, &p, "nginx").await;
    assert_eq!(chosen, None);
    assert!(tried[0].contains("timed out"), "{tried:?}");
    // The timeout is an answer for a while: no review waits on the hung registry again.
    let started = Instant::now();
    let (_, tried) = result(&c, &p, "nginx").await;
    assert!(tried[0].contains("timed out"), "{tried:?}");
    assert!(started.elapsed() < Duration::from_millis(300));
    assert_eq!(a.heads("library/nginx"), 1);
    // The registry recovers; once the answer expires, a new request finds the image.
    a.delay(Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (chosen, tried) = result(&c, &p, "nginx").await;
    assert_eq!(
        chosen,
        Some(format!("{}/library/nginx", a.host())),
        "{tried:?}"
    );
    assert_eq!(a.heads("library/nginx"), 2);
    assert_eq!(
        *seen.lock().unwrap(),
        ["timeout", "present"],
        "each request counted once, the timed-out one too"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_from_a_docker_config_file_and_from_a_secret() {
    let a = FakeRegistry::start().await;
    a.add("library/nginx");
    a.require("robot:pw", false);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);

    // Anthos pullCredentialConfigPath: a Docker config.json on the webhook's file system.
    let dir = common::TempDir::new("verify-config");
    let path = dir.path("config.json");
    let config = serde_json::json!({"auths": {(a.host()): {"auth": b64("robot:pw")}}});
    std::fs::write(&path, config.to_string()).unwrap();
    let anthos = Arc::new(
        Policy::load(&format!(
            "registryMirrors:\n  - endpoint: {}\n    pullCredentialConfigPath: {}\nverify: {{enabled: true}}\n",
            http(&a),
            path.display()
        ))
        .unwrap()
        .policy,
    );
    let (chosen, tried) = result(&checker(), &anthos, "nginx").await;
    assert_eq!(
        chosen,
        Some(format!("{}/library/nginx", a.host())),
        "{tried:?}"
    );

    // credentialsSecret: read through the Kubernetes API by `serve --pull-secrets`; without it
    // the endpoint is passed over with the reason.
    let by_secret = policy(
        &[http(&a)],
        &format!(
            "configs:\n  \"{}\":\n    credentialsSecret: mirror-login\n",
            a.host()
        ),
    );
    let (chosen, tried) = result(&checker(), &by_secret, "nginx").await;
    assert_eq!(chosen, None);
    assert!(tried[0].contains("--pull-secrets"), "{tried:?}");

    let api = common::fake_api::FakeApi::start().await;
    api.put_secret("default", "mirror-login", serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "type": "kubernetes.io/basic-auth", "metadata": {"name": "mirror-login", "namespace": "default"},
        "data": {"username": b64("robot"), "password": b64("pw")}}));
    let pull_secrets = Arc::new(image_mirror_webhook::secrets::PullSecrets::new(
        api.client(),
        None,
    ));
    let c = Checker::new(Access {
        pull_secrets: Some(pull_secrets),
        ..Access::default()
    });
    let (chosen, tried) = result(&c, &by_secret, "nginx").await;
    assert_eq!(
        chosen,
        Some(format!("{}/library/nginx", a.host())),
        "{tried:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_answers_a_burst_of_500_reviews_with_one_head_per_endpoint() {
    let (a, b) = (FakeRegistry::start().await, FakeRegistry::start().await);
    a.delay(Duration::from_millis(50));
    b.delay(Duration::from_millis(50));
    b.add("team/app");
    let text = format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"{}\", \"{}\"]\nverify: {{enabled: true, timeout: 5s}}\n",
        http(&a),
        http(&b)
    );
    let server = common::Server::with_policy(&text);
    let client = server.client();
    let url = server.url("/mutate");
    let pod = serde_json::json!({"kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a", "image": "team/app:3"}]}});
    // As the API server does, the burst comes over a connection already open (HTTP/2, by ALPN):
    // 500 TLS handshakes at once would be a flood the handshake pool is there to shed.
    let warm = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(warm.version(), reqwest::Version::HTTP_2);
    let burst: Vec<_> = (0..500)
        .map(|i| {
            let review = common::create_review(&format!("u{i}"), "shop", &pod, false);
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { common::post_json(&client, &url, &review).await })
        })
        .collect();
    for t in burst {
        let answer = t.await.unwrap();
        let mut after = pod.clone();
        json_patch::patch(&mut after, &common::decode_patch(&answer).unwrap()).unwrap();
        assert_eq!(
            after["spec"]["containers"][0]["image"],
            format!("{}/team/app:3", b.host())
        );
    }
    assert_eq!((a.heads("team/app"), b.heads("team/app")), (1, 1));
}

#[tokio::test]
async fn pin_digest_passes_over_a_tag_whose_manifest_is_gone() {
    let (stale, good) = (FakeRegistry::start().await, FakeRegistry::start().await);
    // A pull-through cache that still answers for the tag but no longer has its manifest.
    stale.add("team/app");
    stale.lose_digests();
    good.add("team/app");
    let endpoints = [http(&stale), http(&good)];
    let c = checker();
    let (chosen, tried) =
        result(&c, &policy(&endpoints, "  pinDigest: true\n"), "team/app:1").await;
    assert_eq!(chosen, Some(format!("{}/team/app:1@{DIGEST}", good.host())));
    assert!(
        tried[0].starts_with("not found: the tag names sha256:"),
        "{tried:?}"
    );
    assert_eq!((stale.digest_heads(), good.digest_heads()), (1, 1));
    // Without pinning the node pulls the tag, and only the tag is asked for.
    let (chosen, _) = result(&c, &policy(&endpoints, ""), "team/app:1").await;
    assert_eq!(chosen, Some(format!("{}/team/app:1", stale.host())));
    assert_eq!((stale.digest_heads(), good.digest_heads()), (1, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dry_run_command_asks_the_registries_too() {
    let (a, b) = (FakeRegistry::start().await, FakeRegistry::start().await);
    b.add("library/nginx");
    let dir = common::TempDir::new("verify-cli");
    let path = dir.path("policy.yaml");
    std::fs::write(
        &path,
        format!(
            "mirrors:\n  docker.io:\n    endpoint: [\"{}\", \"{}\"]\nverify: {{enabled: true}}\n",
            http(&a),
            http(&b)
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_image-mirror-webhook"))
            .args([
                "dry-run",
                "-o",
                "json",
                "--image",
                "nginx:1.25",
                "--policy-file",
            ])
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = &v["results"][0]["decisions"][0];
    assert_eq!(d["result"], format!("{}/library/nginx:1.25", b.host()));
    assert_eq!(d["tried"][0]["result"], "absent");
    assert_eq!(d["tried"][1]["result"], "present");
    assert_eq!((a.heads("library/nginx"), b.heads("library/nginx")), (1, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_images_a_review_may_change_are_checked() {
    let a = FakeRegistry::start().await;
    for repo in ["library/nginx", "library/busybox", "nicolaka/netshoot"] {
        a.add(repo);
    }
    let server = common::Server::with_policy(&policy_text(&[http(&a)], ""));
    // kubectl debug: the ephemeralcontainers subresource adds netshoot to a Pod that already runs
    // nginx and a busybox ephemeral container; only netshoot may change, so only it is asked for.
    let review: serde_json::Value =
        serde_json::from_slice(&std::fs::read(common::data("reviews/ephemeral.json")).unwrap())
            .unwrap();
    let answer = common::post_json(&server.client(), &server.url("/mutate"), &review).await;
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(
        (
            a.heads("library/nginx"),
            a.heads("library/busybox"),
            a.heads("nicolaka/netshoot")
        ),
        (0, 0, 1)
    );
}
