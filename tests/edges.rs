//! The second hardening pass, against the real binary: the edges added after the first (dry-run
//! YAML, credential providers, durations, the body budget's accounting, TLS handshakes, names
//! taken from a review, serverless profiles, policy files) tried as an attacker would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::fake_api::FakeApi;
use common::{ApiServe, Options, Server, TempDir};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1024;

/// A few hundred bytes of YAML whose aliases expand to 9^9 (387 million) scalars.
fn alias_bomb() -> String {
    let mut text = String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
    let mut prev = 'a';
    for next in 'b'..='i' {
        let refs = vec![format!("*{prev}"); 9].join(",");
        text.push_str(&format!("{next}: &{next} [{refs}]\n"));
        prev = next;
    }
    text
}

/// 1. The alias bomb gets a clear 400 and the server barely notices it, four at once included.
#[tokio::test(flavor = "multi_thread")]
async fn a_yaml_alias_bomb_is_refused_for_what_its_size_allows() {
    let server = Server::start(Options::default());
    let pid = server.child.id();
    let before = common::proc_kib(pid, "VmHWM");
    let bomb = alias_bomb();
    assert!(bomb.len() < 400, "{}", bomb.len());
    let sends = (0..4).map(|_| {
        let (client, url, body) = (server.client(), server.url("/dry-run"), bomb.clone());
        tokio::spawn(async move {
            common::post(&client, &url, Some("application/yaml"), body.into_bytes()).await
        })
    });
    for sent in futures::future::join_all(sends).await {
        let (status, answer) = sent.unwrap();
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("expands past"),
            "{answer}"
        );
    }
    let grew = common::proc_kib(pid, "VmHWM").saturating_sub(before);
    assert!(grew < 8 * MIB, "peak grew by {grew} KiB");
    // The same manifest without aliases still reads.
    let (status, _) = common::post(
        &server.client(),
        &server.url("/dry-run"),
        Some("application/yaml"),
        b"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: c, image: nginx}\n".to_vec(),
    )
    .await;
    assert_eq!(status, 200);
}

/// A directory of credential provider plugins, each a small shell script.
struct Plugins(TempDir);

impl Plugins {
    fn new() -> Self {
        Plugins(TempDir::new("edges-plugins"))
    }

    fn script(&self, name: &str, body: &str) {
        let path = self.0.path(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn dir(&self) -> String {
        self.0 .0.to_string_lossy().into_owned()
    }

    fn lines(&self, file: &str) -> Vec<String> {
        std::fs::read_to_string(self.0.path(file))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

const API: &str = "credentialprovider.kubelet.k8s.io/v1";

fn provider_policy(name: &str, default_duration: &str) -> String {
    format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"https://mirror.example.com\"]\ncredentialProviderConfig:\n  apiVersion: kubelet.config.k8s.io/v1\n  kind: CredentialProviderConfig\n  providers:\n    - name: {name}\n      matchImages: [\"*.example.com\"]\n      defaultCacheDuration: \"{default_duration}\"\n      apiVersion: {API}\n"
    )
}

/// 2. Durations past any clock: refused by `check` wherever a policy takes one, and a provider
/// answering one is a failed run (counted), not a panic on every review.
#[tokio::test(flavor = "multi_thread")]
async fn durations_past_any_clock_are_refused_not_panics() {
    const FAR: &str = "15000000000000000000s";
    let dir = TempDir::new("edges-durations");
    for policy in [
        format!("verify:\n  enabled: true\n  cacheTTL: {FAR}\n"),
        format!("verify:\n  negativeCacheTTL: {FAR}\n"),
        provider_policy("p", FAR),
    ] {
        let out = common::check(&dir, &policy);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{policy}\n{text}");
        assert!(text.contains("longer than the longest duration"), "{text}");
    }

    let plugins = Plugins::new();
    plugins.script(
        "far",
        &format!(
            r#"echo '{{"apiVersion":"{API}","kind":"CredentialProviderResponse","cacheKeyType":"Registry","cacheDuration":"{FAR}","auth":{{"*.example.com":{{"username":"u","password":"p"}}}}}}'"#
        ),
    );
    let api = FakeApi::start().await;
    let s = ApiServe::start(
        &api,
        &provider_policy("far", "1h"),
        &["--image-credential-provider-bin-dir", &plugins.dir()],
    )
    .await;
    for _ in 0..3 {
        let (answer, _) = s.review("shop", "nginx:1.25", false).await;
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
        assert!(
            answer["response"]["warnings"]
                .to_string()
                .contains("could not be made"),
            "{answer}"
        );
    }
    let metrics = s.server.metrics().await;
    let failures: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                r#"image_mirror_credential_fetches_total{source="provider",result="failure"} "#,
            )
        })
        .unwrap()
        .parse()
        .unwrap();
    assert!(failures >= 3, "{metrics}");
    assert!(
        metrics.contains(r#"image_mirror_task_restarts_total{task="pull_secret_resync"} 0"#),
        "{metrics}"
    );
    assert!(!s.logs().contains("panicked"), "{}", s.logs());
}

fn small_review(uid: &str) -> Value {
    let pod = json!({"metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}});
    common::create_review(uid, "default", &pod, false)
}

/// Reviews answered within `limit` each, out of `n` sent one after another.
async fn answered_within(server: &Server, n: usize, limit: Duration) -> usize {
    let client = server.client();
    let mut answered = 0;
    for i in 0..n {
        let (url, review) = (server.url("/mutate"), small_review(&i.to_string()));
        let send = common::post_json(&client, &url, &review);
        if let Ok(answer) = tokio::time::timeout(limit, send).await {
            assert_eq!(answer["response"]["uid"], i.to_string());
            answered += 1;
        }
    }
    answered
}

/// 3. Two connections that announce 8 MiB and send 5 bytes hold 5 bytes, not the budget: every
/// other review goes on, and the stalled bodies get 408 at --body-idle-timeout.
#[tokio::test(flavor = "multi_thread")]
async fn announced_bodies_that_never_arrive_stall_nobody() {
    let server = Server::start(Options {
        extra: &["--body-idle-timeout", "2s"],
        ..Options::default()
    });
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut c = common::connect_tls(&server, b"http/1.1").await.unwrap();
        c.write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 8388608\r\n\r\n{\"api")
            .await
            .unwrap();
        stalled.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    assert_eq!(
        answered_within(&server, 20, Duration::from_secs(5)).await,
        20
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    for mut c in stalled {
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("a stalled body was not answered")
            .unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    }
}

/// 4. Connections that never start TLS: far more than --max-connections, yet reviews still get
/// in (the oldest pending handshake makes room for the newest).
#[tokio::test(flavor = "multi_thread")]
async fn connections_that_never_start_tls_do_not_lock_anyone_out() {
    let server = Server::start(Options {
        extra: &["--max-connections", "16"],
        ..Options::default()
    });
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(
            tokio::net::TcpStream::connect(("127.0.0.1", server.port))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        answered_within(&server, 10, Duration::from_secs(3)).await,
        10
    );
    drop(silent);
}

/// 5. A namespace that is no namespace name is not put into an API path: no Secret is read or
/// written, and the review is answered as unreadable (admitted unchanged, fail-open).
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_namespace_never_reaches_an_api_path() {
    const HOST: &str = "mirror.example.com:5000";
    let api = FakeApi::start().await;
    let policy = format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"https://{HOST}\"]\nconfigs:\n  \"{HOST}\":\n    auth: {{username: u, password: p}}\n"
    );
    let s = ApiServe::start(&api, &policy, &[]).await;
    let name = image_mirror_webhook::dockerconfig::managed_name(HOST);
    api.put_secret(
        "kube-system",
        "victim",
        json!({"type": "Opaque", "data": {}}),
    );
    let writes = api.secret_writes();
    for forged in [
        "kube-system/secrets/victim#",
        "kube-system/secrets/victim?x=",
        "a.b",
    ] {
        let pod = json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}});
        let review = common::create_review("forged", forged, &pod, false);
        let answer = common::post_json(&s.client, &s.url("/mutate"), &review).await;
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
        assert!(answer["response"]["patch"].is_null(), "{answer}");
        assert!(
            answer["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("is not a namespace name"),
            "{answer}"
        );
    }
    assert_eq!(
        api.secret_writes(),
        writes,
        "a forged namespace wrote a Secret"
    );
    assert!(api.secret("kube-system", &name).is_none());
    let (answer, _) = s.review("shop", "nginx:1.25", false).await;
    assert_eq!(answer["response"]["allowed"], true);
    assert!(api.secret("shop", &name).is_some());
}

/// 6 and 7. Plugins are bounded: one run serves every review waiting for the same image, runs
/// at once are capped, and a review answers before the API server's timeout whatever a plugin
/// does; its stderr (which may hold a secret) stays out of the logs, and a child it leaves
/// behind is stopped with it.
#[tokio::test(flavor = "multi_thread")]
async fn credential_plugins_are_bounded_in_number_and_time() {
    let plugins = Plugins::new();
    let dir = plugins.dir();
    // Records each run and how many ran at once, leaves a detached child, then hangs.
    plugins.script(
        "slow",
        &format!(
            r#"cat > /dev/null
touch "{dir}/running.$$"
ls "{dir}" | grep -c '^running' >> "{dir}/concurrency"
echo run >> "{dir}/runs"
(sleep 30; echo escaped >> "{dir}/escaped") > /dev/null 2>&1 &
echo "$!" >> "{dir}/children"
echo 'SECRET-IN-STDERR' >&2
sleep 2
rm -f "{dir}/running.$$"
exit 1"#
        ),
    );
    let api = FakeApi::start().await;
    let s = ApiServe::start(
        &api,
        &provider_policy("slow", "1h"),
        &[
            "--image-credential-provider-bin-dir",
            &dir,
            "--credential-provider-timeout",
            "10s",
            "--webhook-timeout",
            "2s",
        ],
    )
    .await;

    // Four reviews of one image at once: one run, each answered within the 2 s timeout.
    let started = Instant::now();
    let reviews = (0..4).map(|_| {
        let (client, url) = (s.client.clone(), s.url("/mutate"));
        let pod = json!({"metadata": {"name": "p", "namespace": "shop"},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}});
        tokio::spawn(async move {
            let answer = common::post_json(
                &client,
                &url,
                &common::create_review("u", "shop", &pod, false),
            )
            .await;
            (answer, started.elapsed())
        })
    });
    for r in futures::future::join_all(reviews).await {
        let (answer, took) = r.unwrap();
        assert!(took < Duration::from_secs(2), "answered after {took:?}");
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
        assert!(
            answer["response"]["warnings"]
                .to_string()
                .contains("could not be made yet"),
            "{answer}"
        );
    }
    common::wait_until("the run to end", Duration::from_secs(10), || async {
        plugins.lines("runs").len() == 1 && !plugins.lines("concurrency").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(plugins.lines("runs").len(), 1, "one run for one image");

    // A Pod pulling from 12 registries the provider serves: a run each, at most 4 at once.
    let images: Vec<Value> = (0..12)
        .map(|i| json!({"name": format!("c{i}"), "image": format!("app{i}.example.com/app:1")}))
        .collect();
    let pod =
        json!({"metadata": {"name": "p", "namespace": "shop"}, "spec": {"containers": images}});
    let answer = common::post_json(
        &s.client,
        &s.url("/mutate"),
        &common::create_review("wide", "shop", &pod, false),
    )
    .await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    common::wait_until("13 runs", Duration::from_secs(20), || async {
        plugins.lines("runs").len() >= 13
    })
    .await;
    common::wait_until("every run to end", Duration::from_secs(10), || async {
        !std::fs::read_dir(&plugins.0 .0).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("running")
        })
    })
    .await;
    let most = plugins
        .lines("concurrency")
        .iter()
        .map(|l| l.trim().parse::<usize>().unwrap())
        .max()
        .unwrap();
    assert!(most <= 4, "{most} plugin runs at once");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The detached children went with their plugins' process groups (gone, or a zombie that
    // nobody has reaped yet).
    for pid in plugins.lines("children") {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(") ").next().and_then(|r| r.split(' ').next());
        assert!(
            stat.is_empty() || state == Some("Z"),
            "child {pid} outlived its plugin: {stat}"
        );
    }
    assert!(plugins.lines("escaped").is_empty());
    assert!(!s.logs().contains("SECRET-IN-STDERR"), "{}", s.logs());
    assert!(!s.logs().contains("panicked"));
    for pid in plugins.lines("children") {
        let _ = std::process::Command::new("kill").arg(pid).status();
    }
}

/// 8. Serverless profiles whose annotations the API server would refuse are `check` errors.
#[test]
fn serverless_profiles_that_kubernetes_refuses_are_errors() {
    let dir = TempDir::new("edges-profiles");
    let profile = |key: &str, extra: &str| {
        format!(
            "serverlessProfiles:\n  - name: mine\n    match:\n      labels: {{runtime: mine}}\n    annotations:\n      plainHttp: \"{key}\"\n{extra}"
        )
    };
    for key in ["a/b/c", "Not A Valid Key!!", "-x"] {
        let out = common::check(&dir, &profile(key, ""));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{key}: {text}");
        assert!(text.contains("not an annotation key"), "{text}");
    }
    let many: Vec<String> = (0..12_000)
        .map(|i| {
            format!(
                "{{ip: \"10.0.{}.{}\", hostnames: [\"host-{i}.example.com\"]}}",
                i / 250,
                i % 250
            )
        })
        .collect();
    let out = common::check(
        &dir,
        &format!("kci:\n  hostAliases: [{}]\n", many.join(", ")),
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("bytes of annotations"), "{text}");
    let out = common::check(&dir, &profile("example.com/plain-http", ""));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

/// 9. Reviews are charged their working memory, not only their bodies: eight 75,000-container
/// Pods at once stay under the chart's 128 MiB.
#[tokio::test(flavor = "multi_thread")]
async fn wide_pods_at_once_stay_within_the_memory_limit() {
    let server = Server::start(Options {
        extra: &["--request-timeout", "30s"],
        ..Options::default()
    });
    let pid = server.child.id();
    let containers: Vec<Value> = (0..75_000)
        .map(|i| json!({"name": format!("c{i}"), "image": "nginx:1.25"}))
        .collect();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "wide", "namespace": "default"},
        "spec": {"containers": containers}});
    let body =
        bytes::Bytes::from(common::create_review("wide", "default", &pod, false).to_string());
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(server.ca_pem.as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let sends = (0..8).map(|_| {
        let (client, url, body) = (client.clone(), server.url("/mutate"), body.clone());
        tokio::spawn(async move {
            client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    });
    let statuses: Vec<u16> = futures::future::join_all(sends)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");
    let peak = common::proc_kib(pid, "VmHWM");
    assert!(peak < 128 * MIB, "peak RSS {peak} KiB");
}

/// The output of `args` run to its end, or a failure (and the process killed) past `limit`.
fn output_within(args: &[&str], limit: Duration) -> std::process::Output {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_image-mirror-webhook"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    let started = Instant::now();
    while !waiter.is_finished() {
        if started.elapsed() > limit {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            panic!("{args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    waiter.join().unwrap()
}

/// 10. Policy files are read no further than the policy limit: /dev/zero is an error at once,
/// for `check`, for `serve` at start, and for `serve`'s watcher when the file becomes it (the
/// server keeps its policy, stays small and stops on SIGTERM).
#[tokio::test(flavor = "multi_thread")]
async fn an_endless_policy_file_is_an_error_not_a_wait() {
    let out = output_within(&["check", "/dev/zero"], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("larger than 1048576 bytes"), "{err}");

    let dir = TempDir::new("edges-devzero");
    let link = dir.path("policy.yaml");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let port = common::free_port().to_string();
    let certs = dir.path("certs").to_string_lossy().into_owned();
    let out = output_within(
        &[
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--dev-cert-dir",
            &certs,
            "--policy-file",
            &link.to_string_lossy(),
        ],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("larger than"),
        "{out:?}"
    );

    let mut server = Server::with_policy("mirrors: {}\n");
    let policy = server.dir.path("policy.yaml");
    std::fs::remove_file(&policy).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &policy).unwrap();
    common::wait_until(
        "the endless file refused",
        Duration::from_secs(10),
        || async { server.logs().contains("at most 1048576 are accepted") },
    )
    .await;
    let rss = common::proc_kib(server.child.id(), "VmHWM");
    assert!(rss < 64 * MIB, "peak RSS {rss} KiB");
    server.wait_ready().await;
    let started = Instant::now();
    assert!(server.terminate().success());
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// 11. A body over the limit gets its 413 over HTTP/2 too.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_body_gets_413_over_http2() {
    let server = Server::start(Options {
        extra: &["--max-body-bytes", "1000"],
        ..Options::default()
    });
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(server.ca_pem.as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for size in [2_000, 1_000_000] {
        let resp = client
            .post(server.url("/mutate"))
            .header("content-type", "application/json")
            .body(vec![b'a'; size])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        assert_eq!(resp.status(), 413, "{size} bytes");
    }
}
