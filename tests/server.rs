//! `serve` end to end: the real binary on loopback over real TLS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{data, decode_patch, get_json, post, wait_until, Options, Server};
use serde_json::{json, Value};

const JSON: &str = "application/json";

fn review_policy() -> String {
    std::fs::read_to_string(data("reviews/policy.yaml")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn review_fixtures_patch_to_the_expected_pods() {
    let policy = review_policy();
    let server = Server::with_policy(&policy);
    let client = server.client();
    for name in ["create", "update", "ephemeral"] {
        let review: Value =
            serde_json::from_slice(&std::fs::read(data(&format!("reviews/{name}.json"))).unwrap())
                .unwrap();
        let expected: Value = serde_json::from_slice(
            &std::fs::read(data(&format!("reviews/{name}.expected.json"))).unwrap(),
        )
        .unwrap();
        let (status, answer) = post(
            &client,
            &server.url("/mutate"),
            Some(JSON),
            serde_json::to_vec(&review).unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(
            answer["response"]["uid"], review["request"]["uid"],
            "{name}"
        );
        assert_eq!(answer["response"]["allowed"], true);
        assert_eq!(answer["response"]["patchType"], "JSONPatch", "{name}");
        let patch = decode_patch(&answer).unwrap();
        let mut pod = review["request"]["object"].clone();
        json_patch::patch(&mut pod, &patch).unwrap();
        assert_eq!(pod, expected, "{name}: {answer}");
    }
    // A rewrite is reported back: warnings for kubectl, audit annotations for the audit log.
    let review = std::fs::read(data("reviews/create.json")).unwrap();
    let (_, answer) = post(&client, &server.url("/mutate"), Some(JSON), review).await;
    let warnings = answer["response"]["warnings"].as_array().unwrap();
    assert!(warnings
        .iter()
        .any(|w| w == "image nginx:1.25 rewritten to mirror.example.com:5000/library/nginx:1.25"));
    assert!(answer["response"]["auditAnnotations"]["rewritten-images"]
        .as_str()
        .unwrap()
        .contains("quay-mirror.local:5000"));
}

/// One reader for both: the dry-run of every review fixture (DELETE and a `pods/status` UPDATE
/// among them) patches exactly what `/mutate` answers for it.
#[tokio::test(flavor = "multi_thread")]
async fn the_dry_run_of_each_review_is_what_mutate_answers() {
    let server = Server::with_policy(&review_policy());
    let client = server.client();
    let mut names: Vec<String> = std::fs::read_dir(data("reviews"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && !n.ends_with(".expected.json"))
        .collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    for name in &names {
        let body = std::fs::read(data(&format!("reviews/{name}"))).unwrap();
        let (_, answer) = post(&client, &server.url("/mutate"), Some(JSON), body.clone()).await;
        let served = decode_patch(&answer).map_or(Vec::new(), |p| p.0);
        let (status, report) = post(&client, &server.url("/dry-run"), Some(JSON), body).await;
        assert_eq!(status, 200, "{name}: {report}");
        let dry: json_patch::Patch =
            serde_json::from_value(report["results"][0]["patch"].clone()).unwrap();
        assert_eq!(dry.0, served, "{name}: dry-run {report} vs answer {answer}");
        if name == "delete.json" || name == "status.json" {
            assert!(served.is_empty(), "{name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_needing_nothing_gets_no_patch() {
    let policy = review_policy();
    let server = Server::with_policy(&policy);
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "x", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE", "namespace": "kube-system",
        "object": {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    let (status, answer) = post(
        &server.client(),
        &server.url("/mutate"),
        Some(JSON),
        review.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["response"], json!({"uid": "x", "allowed": true}));
}

fn review_with(request: Value) -> Vec<u8> {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
        .to_string()
        .into_bytes()
}

fn pod_request(op: &str, object: Value) -> Value {
    json!({"uid": "bad-1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": op, "namespace": "default", "object": object})
}

struct Row {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    /// For 200 answers to /mutate: allowed, whether a patch is expected, text in status.message.
    review: Option<(bool, bool, &'static str)>,
}

fn row(name: &'static str, body: Vec<u8>, review: (bool, bool, &'static str)) -> Row {
    Row {
        name,
        method: "POST",
        path: "/mutate",
        content_type: Some(JSON),
        body,
        status: 200,
        review: Some(review),
    }
}

fn bad_input_rows() -> Vec<Row> {
    let pod = |image: Value| json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": image}]}});
    let many: Vec<Value> = (0..3000)
        .map(|i| json!({"name": format!("c{i}"), "image": format!("team/app{i}:1")}))
        .collect();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let unreadable = (true, false, "unreadable");
    vec![
        row("malformed JSON", b"{\"apiVersion\":".to_vec(), unreadable),
        row("empty body", Vec::new(), unreadable),
        row("a JSON array", b"[]".to_vec(), (true, false, "AdmissionReview")),
        row("JSON null", b"null".to_vec(), (true, false, "AdmissionReview")),
        row("binary garbage", vec![0, 159, 146, 150, 255, 1, 2], unreadable),
        row("invalid UTF-8 in a string", b"{\"apiVersion\":\"\xff\xfe\"}".to_vec(), unreadable),
        row("v1beta1", json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": pod_request("CREATE", pod(json!("nginx")))}).to_string().into_bytes(), (true, false, "expected kind AdmissionReview")),
        row("wrong kind", json!({"apiVersion": "admission.k8s.io/v1", "kind": "Pod"}).to_string().into_bytes(), (true, false, "expected kind AdmissionReview")),
        row("no request", json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).to_string().into_bytes(), (true, false, "no request")),
        row("no uid", review_with(json!({"kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE", "object": pod(json!("nginx"))})), (true, false, "no uid")),
        row("no object", review_with(json!({"uid": "1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE"})), (true, false, "no object")),
        row("a Deployment", review_with(json!({"uid": "1", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"}, "operation": "CREATE", "object": {}})), (true, false, "")),
        row("a ConfigMap", review_with(json!({"uid": "1", "kind": {"group": "", "version": "v1", "kind": "ConfigMap"}, "operation": "CREATE", "object": {}})), (true, false, "")),
        row("DELETE", review_with(pod_request("DELETE", pod(json!("nginx")))), (true, false, "")),
        row("CONNECT", review_with(json!({"uid": "1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CONNECT", "subResource": "exec"})), (true, false, "")),
        row("status subresource", review_with(json!({"uid": "1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "UPDATE", "subResource": "status", "object": pod(json!("nginx"))})), (true, false, "")),
        row("object is a string", review_with(pod_request("CREATE", json!("nginx"))), (true, false, "unreadable Pod")),
        row("containers not a list", review_with(pod_request("CREATE", json!({"spec": {"containers": "nginx"}}))), (true, false, "unreadable Pod")),
        row("image is a number", review_with(pod_request("CREATE", pod(json!(42)))), (true, false, "unreadable Pod")),
        row("invalid image", review_with(pod_request("CREATE", pod(json!("NGINX:latest")))), (true, false, "")),
        row("thousands of containers", review_with(pod_request("CREATE", json!({"metadata": {"name": "p"}, "spec": {"containers": many}}))), (true, true, "")),
        row("deeply nested body", format!("{{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"x\":{deep}}}").into_bytes(), (true, false, "no request")),
        row("deeply nested pod", String::from_utf8(review_with(pod_request("CREATE", json!({"spec": {"containers": [{"name": "c", "image": "nginx", "x": "DEEP"}]}})))).unwrap().replace("\"DEEP\"", &deep).into_bytes(), (true, true, "")),
        row("duplicate field", b"{\"apiVersion\":\"admission.k8s.io/v1\",\"apiVersion\":\"x\"}".to_vec(), (true, false, "duplicate field")),
        Row { name: "body over the limit", method: "POST", path: "/mutate", content_type: Some(JSON), body: vec![b' '; 9 * 1024 * 1024], status: 413, review: None },
        Row { name: "wrong content type", method: "POST", path: "/mutate", content_type: Some("text/plain"), body: b"{}".to_vec(), status: 415, review: None },
        Row { name: "no content type", method: "POST", path: "/mutate", content_type: None, body: b"{}".to_vec(), status: 415, review: None },
        Row { name: "wrong method", method: "GET", path: "/mutate", content_type: None, body: Vec::new(), status: 405, review: None },
        Row { name: "wrong path", method: "POST", path: "/validate", content_type: Some(JSON), body: b"{}".to_vec(), status: 404, review: None },
        Row { name: "dry-run bad YAML", method: "POST", path: "/dry-run", content_type: Some("application/yaml"), body: b"kind: Pod\nspec: [\n".to_vec(), status: 400, review: None },
        Row { name: "dry-run binary", method: "POST", path: "/dry-run", content_type: Some("application/yaml"), body: vec![0, 1, 2, 255], status: 400, review: None },
        Row { name: "dry-run without image", method: "GET", path: "/dry-run", content_type: None, body: Vec::new(), status: 400, review: None },
        Row { name: "dry-run unknown parameter", method: "GET", path: "/dry-run?img=nginx", content_type: None, body: Vec::new(), status: 400, review: None },
        Row { name: "dry-run wrong content type", method: "POST", path: "/dry-run", content_type: Some("image/png"), body: b"x".to_vec(), status: 415, review: None },
    ]
}

async fn send(client: &reqwest::Client, server: &Server, r: &Row) -> (u16, Value) {
    if r.method == "GET" {
        let resp = client.get(server.url(r.path)).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    } else {
        post(client, &server.url(r.path), r.content_type, r.body.clone()).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_its_defined_answer_and_the_server_keeps_serving() {
    let server = Server::start(Options::default());
    let client = server.client();
    let rows = bad_input_rows();
    assert!(rows.len() >= 25);
    let mut failures = Vec::new();
    for r in &rows {
        let (status, answer) = send(&client, &server, r).await;
        if status != r.status {
            failures.push(format!(
                "{}: status {status}, expected {}: {answer}",
                r.name, r.status
            ));
            continue;
        }
        if let Some((allowed, patched, message)) = r.review {
            let resp = &answer["response"];
            let ok = answer["kind"] == "AdmissionReview"
                && resp["allowed"] == allowed
                && resp.get("patch").is_some() == patched
                && resp.get("patchType").is_some() == patched
                && resp["status"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(message);
            if !ok {
                failures.push(format!(
                    "{}: unexpected answer {}",
                    r.name,
                    truncate(&answer)
                ));
            }
            // The patch applies wherever the test itself can read the body.
            if let (true, Ok(body)) = (patched, serde_json::from_slice::<Value>(&r.body)) {
                let patch = decode_patch(&answer).unwrap();
                let mut pod = body["request"]["object"].clone();
                json_patch::patch(&mut pod, &patch).unwrap();
            }
        }
        let health = client.get(server.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200, "not serving after {}", r.name);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The v1beta1 answer speaks the request's version, and uids are echoed where known.
    let (_, answer) = send(&client, &server, &rows[6]).await;
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1beta1");
    let (_, answer) = send(&client, &server, &rows[13]).await;
    assert_eq!(answer["response"]["uid"], "bad-1");
    let (_, answer) = send(&client, &server, &rows[19]).await;
    assert!(answer["response"]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("invalid image"));
}

fn truncate(v: &Value) -> String {
    let s = v.to_string();
    s.chars().take(400).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_do_not_block_others() {
    let server = Server::start(Options::default());
    // Connections that never finish a TLS handshake or never send headers.
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", server.port))
                .await
                .unwrap(),
        );
    }
    let client = server.client();
    for _ in 0..20 {
        let resp = client.get(server.url("/healthz")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    drop(idle);
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_closed_denies_what_it_cannot_read() {
    let server = Server::start(Options {
        extra: &["--fail-closed"],
        ..Options::default()
    });
    let (status, answer) = post(
        &server.client(),
        &server.url("/mutate"),
        Some(JSON),
        b"{nope".to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["status"]["code"], 400);
    // What it can read is still admitted, and kinds it does not handle are not denied.
    let ok = review_with(pod_request(
        "CREATE",
        json!({"spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
    ));
    let (_, answer) = post(&server.client(), &server.url("/mutate"), Some(JSON), ok).await;
    assert_eq!(answer["response"]["allowed"], true);
    let del = review_with(pod_request("DELETE", json!({})));
    let (_, answer) = post(&server.client(), &server.url("/mutate"), Some(JSON), del).await;
    assert_eq!(answer["response"]["allowed"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn both_http_versions_and_both_listeners() {
    let server = Server::start(Options::default());
    let resp = server
        .client()
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let h1 = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(server.ca_pem.as_bytes()).unwrap())
        .http1_only()
        .build()
        .unwrap();
    let resp = h1.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(
        (resp.version(), resp.status().as_u16()),
        (reqwest::Version::HTTP_11, 200)
    );
    let plain = reqwest::Client::new();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let resp = plain.get(server.admin_url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let resp = server.client().get(server.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    // The admin listener serves no admission.
    let resp = plain
        .post(server.admin_url("/mutate"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_endpoints() {
    let policy = review_policy();
    let server = Server::with_policy(&policy);
    let client = server.client();
    let resp = client
        .get(server.url("/dry-run?image=rancher/rke-tools:v1&image=NGINX&namespace=shop"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let d = &v["results"][0]["decisions"];
    assert_eq!(
        d[0]["result"],
        "mirror.example.com:5000/mirrorproject/rancher-images/rke-tools:v1"
    );
    assert_eq!(d[1]["result"], Value::Null);
    assert!(d[1]["error"].as_str().unwrap().contains("lowercase"));
    let v = get_json(
        &client,
        &server.url("/dry-run?image=nginx&namespace=kube-system"),
    )
    .await;
    assert_eq!(v["results"][0]["decisions"][0]["result"], "nginx");

    let yaml = std::fs::read(data("pods.yaml")).unwrap();
    let (status, v) = post(
        &client,
        &server.url("/dry-run"),
        Some("application/yaml"),
        yaml,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["results"].as_array().unwrap().len(), 3);
    assert_eq!(
        v["results"][0]["object"]["spec"]["containers"][0]["image"],
        "mirror.example.com:5000/library/nginx:1.25"
    );
    let review = std::fs::read(data("reviews/create.json")).unwrap();
    let (status, v) = post(&client, &server.url("/dry-run"), Some(JSON), review).await;
    assert_eq!(status, 200);
    assert_eq!(v["results"][0]["pullSecrets"], json!(["mirror-cred"]));
}

async fn metric(server: &Server, name: &str) -> f64 {
    server
        .metrics()
        .await
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_reviews_and_rewrites_by_rule() {
    let policy = review_policy();
    let server = Server::with_policy(&policy);
    let review = std::fs::read(data("reviews/create.json")).unwrap();
    for _ in 0..3 {
        post(
            &server.client(),
            &server.url("/mutate"),
            Some(JSON),
            review.clone(),
        )
        .await;
    }
    post(
        &server.client(),
        &server.url("/mutate"),
        Some(JSON),
        b"x".to_vec(),
    )
    .await;
    assert_eq!(
        metric(&server, "image_mirror_reviews_total{outcome=\"mutated\"}").await,
        3.0
    );
    assert_eq!(
        metric(&server, "image_mirror_reviews_total{outcome=\"failed\"}").await,
        1.0
    );
    assert_eq!(
        metric(
            &server,
            "image_mirror_rewrites_total{rule=\"mirrors[docker.io].endpoint[0]\"}"
        )
        .await,
        9.0
    );
    assert_eq!(
        metric(
            &server,
            "image_mirror_rewrites_total{rule=\"mirrors[quay.io].endpoint[0]\"}"
        )
        .await,
        3.0
    );
    assert_eq!(
        metric(&server, "image_mirror_review_duration_seconds_count").await,
        4.0
    );
    // One structured line per review, naming it.
    let logs = server.logs();
    assert!(
        logs.contains("review answered") && logs.contains("705ab4f5-6393-11e8-b7cc-42010a800002"),
        "{logs}"
    );
}

async fn decide(server: &Server, image: &str) -> Value {
    let v = get_json(
        &server.client(),
        &server.url(&format!("/dry-run?image={image}")),
    )
    .await;
    v["results"][0]["decisions"][0]["result"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_file_reloads_and_a_bad_one_keeps_the_last_good() {
    let server = Server::start(Options::default());
    assert_eq!(
        decide(&server, "nginx").await,
        "mirror.example.com:5000/library/nginx"
    );
    // An atomic rename, as editors and kubelet write.
    server.dir.write_atomic(
        "policy.yaml",
        b"mirrors:\n  docker.io:\n    endpoint: [\"https://second.example.com\"]\n",
    );
    wait_until("the new policy", Duration::from_secs(5), || async {
        decide(&server, "nginx").await == "second.example.com/library/nginx"
    })
    .await;
    // A broken policy is refused; the last good one keeps answering and the server stays ready.
    server.dir.write_atomic(
        "policy.yaml",
        b"mirrors:\n  docker.io:\n    endpointz: []\n",
    );
    wait_until("the rejection", Duration::from_secs(5), || async {
        metric(
            &server,
            "image_mirror_policy_reloads_total{result=\"failure\"}",
        )
        .await
            >= 1.0
    })
    .await;
    assert_eq!(
        decide(&server, "nginx").await,
        "second.example.com/library/nginx"
    );
    assert_eq!(
        reqwest::get(server.admin_url("/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(server.logs().contains("policy rejected"));
    // A mounted ConfigMap swaps a symlink.
    server.dir.kubelet_swap(
        "v1",
        "policy.yaml",
        b"mirrors:\n  docker.io:\n    endpoint: [\"https://third.example.com\"]\n",
    );
    wait_until("the symlinked policy", Duration::from_secs(5), || async {
        decide(&server, "nginx").await == "third.example.com/library/nginx"
    })
    .await;
    server.dir.kubelet_swap(
        "v2",
        "policy.yaml",
        b"mirrors:\n  docker.io:\n    endpoint: [\"https://fourth.example.com\"]\n",
    );
    wait_until("the swapped policy", Duration::from_secs(5), || async {
        decide(&server, "nginx").await == "fourth.example.com/library/nginx"
    })
    .await;
}

async fn served_certificate(client: &reqwest::Client, url: &str) -> Vec<u8> {
    let resp = client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let info = resp.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
    info.peer_certificate().unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_rotate_without_a_restart_or_a_failed_request() {
    use image_mirror_webhook::server::tls;
    let server = Server::start(Options::default());
    let next = tls::generate(&["localhost", "127.0.0.1"]).unwrap();
    // New connections every time, so each request sees the certificate served at that moment.
    let fresh = || {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(server.ca_pem.as_bytes()).unwrap())
            .add_root_certificate(reqwest::Certificate::from_pem(next.ca_pem.as_bytes()).unwrap())
            .pool_max_idle_per_host(0)
            .tls_info(true)
            .build()
            .unwrap()
    };
    let url = server.url("/healthz");
    let before = served_certificate(&fresh(), &url).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, url, client) = (stop.clone(), url.clone(), fresh());
        tokio::spawn(async move {
            let mut sent = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 5000 {
                let status = client.get(&url).send().await.map(|r| r.status().as_u16());
                assert_eq!(status.ok(), Some(200), "a request failed during rotation");
                sent += 1;
            }
            sent
        })
    };
    // A key that does not fit the certificate is refused; the old pair keeps serving.
    server.dir.write_atomic("tls.key", next.key_pem.as_bytes());
    wait_until("the refused pair", Duration::from_secs(5), || async {
        metric(
            &server,
            "image_mirror_tls_reloads_total{result=\"failure\"}",
        )
        .await
            >= 1.0
    })
    .await;
    assert_eq!(served_certificate(&fresh(), &url).await, before);
    server.dir.write_atomic("tls.crt", next.cert_pem.as_bytes());
    wait_until("the new certificate", Duration::from_secs(5), || async {
        served_certificate(&fresh(), &url).await != before
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = load.await.unwrap();
    assert!(sent > 0);
    let after = served_certificate(&fresh(), &url).await;
    assert_eq!(after, rustls_der(&next.cert_pem));
}

fn rustls_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_readiness_then_finishes_reviews_in_flight() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut server = Server::start(Options {
        extra: &["--drain-delay", "1s"],
        ..Options::default()
    });
    // A review whose body is half sent when SIGTERM arrives.
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(server.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let body = review_with(pod_request(
        "CREATE",
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
    ));
    let head = format!("POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len());
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body[..body.len() / 2]).await.unwrap();
    tls.flush().await.unwrap();

    let pid = server.child.id();
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    wait_until("not ready", Duration::from_secs(5), || async {
        matches!(reqwest::get(server.admin_url("/readyz")).await, Ok(r) if r.status() == 503)
    })
    .await;
    tls.write_all(&body[body.len() / 2..]).await.unwrap();
    tls.flush().await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\"allowed\"") {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "connection closed before the answer: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"patchType\":\"JSONPatch\""), "{text}");
    drop(tls);
    let status = server.terminate();
    assert!(status.success(), "exit status {status}: {}", server.logs());
    assert!(server.logs().contains("stopped"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_certs_script_makes_a_pair_that_serve_uses() {
    let server = Server::start(Options::default());
    let out = server.dir.path("script");
    let status = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/certs/make-dev-certs.sh"
        ))
        .arg("-o")
        .arg(&out)
        .args(["localhost", "127.0.0.1"])
        .status()
        .unwrap();
    assert!(status.success());
    let read = |name: &str| std::fs::read(out.join(name)).unwrap();
    server.dir.write_atomic("tls.key", &read("tls.key"));
    server.dir.write_atomic("tls.crt", &read("tls.crt"));
    let ca = String::from_utf8(read("ca.crt")).unwrap();
    let trusting_script_ca = common::client_trusting(&[&ca]);
    wait_until(
        "the script's certificate",
        Duration::from_secs(5),
        || async {
            trusting_script_ca
                .get(server.url("/healthz"))
                .send()
                .await
                .is_ok()
        },
    )
    .await;
    let served = served_certificate(&trusting_script_ca, &server.url("/healthz")).await;
    assert_eq!(
        served,
        rustls_der(&String::from_utf8(read("tls.crt")).unwrap())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_one_structured_line_per_review() {
    let server = Server::start(Options {
        extra: &["--log-format", "json"],
        ..Options::default()
    });
    let review = std::fs::read(data("reviews/create.json")).unwrap();
    post(&server.client(), &server.url("/mutate"), Some(JSON), review).await;
    let line = server
        .logs()
        .lines()
        .find(|l| l.contains("review answered"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no review line: {}", server.logs()));
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["message"], "review answered");
    assert_eq!(v["mutated"], true);
    assert_eq!(
        v["rewrites"], 3,
        "nginx, rancher/db-migrate and the image volume"
    );
    assert_eq!(v["span"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(v["span"]["namespace"], "shop");
    assert_eq!(v["span"]["operation"], "CREATE");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_no_flags_it_serves_the_sample_policy_on_a_certificate_it_made() {
    // The README's one-command start: no policy file, no certificate.
    let server = Server::start(Options {
        policy: None,
        own_tls: false,
        ..Options::default()
    });
    let ca = std::fs::read_to_string(server.dir.path("dev/ca.crt")).unwrap();
    assert!(server.logs().contains("built-in sample policy"));
    let client = common::client_trusting(&[&ca]);
    for host in ["localhost", "127.0.0.1"] {
        let url = format!(
            "https://{host}:{}/dry-run?image=rancher/rke-tools:v0.1.14",
            server.port
        );
        let v = common::get_json(&client, &url).await;
        assert_eq!(
            v["results"][0]["decisions"][0]["result"],
            "mirror.example.com:5000/mirrorproject/rancher-images/rke-tools:v0.1.14",
            "{host}"
        );
    }
}
