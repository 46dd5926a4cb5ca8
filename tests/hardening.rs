//! Every resource the server holds is bounded, tried as an attacker would against the real binary:
//! registry answers, idle and stalled connections, their number, concurrent large bodies, a Pod
//! that amplifies, Secrets written where a forged review says, clients without a certificate,
//! policy size, and the smaller edges (unpinned digests, downgrading redirects, replacements that
//! cannot make a valid reference, a review that is not UTF-8).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Router;
use common::{Options, Server};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1024;

/// A registry on loopback that behaves as `app` says.
async fn registry(app: Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

fn verify_policy(endpoint: &str, extra: &str) -> String {
    format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"{endpoint}\"]\nverify:\n  enabled: true\n  timeout: 1s\n{extra}"
    )
}

async fn explain(server: &Server, image: &str) -> Value {
    common::get_json(
        &server.client(),
        &server.url(&format!("/dry-run?image={image}")),
    )
    .await["results"][0]["decisions"][0]
        .clone()
}

/// 1. A token service whose answer never ends, fast or slow: the check reads at most 64 KiB of it
/// and ends within `verify.timeout`.
#[tokio::test(flavor = "multi_thread")]
async fn registry_answers_are_capped_and_a_check_ends_within_its_timeout() {
    use axum::routing::get;
    let port_cell = Arc::new(std::sync::OnceLock::<u16>::new());
    let cell = port_cell.clone();
    let challenge = move |realm: &'static str| {
        let cell = cell.clone();
        move || async move {
            let port = cell.get().copied().unwrap();
            (
                StatusCode::UNAUTHORIZED,
                [(
                    "www-authenticate",
                    format!("Bearer realm=\"http://127.0.0.1:{port}/{realm}\",service=\"x\""),
                )],
            )
        }
    };
    let endless = || async {
        // 1 GiB in 64 KiB chunks, as fast as the reader takes it.
        let chunk = axum::body::Bytes::from(vec![b' '; 64 * 1024]);
        let stream =
            futures::stream::iter((0..16_384).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
        Response::new(Body::from_stream(stream))
    };
    let trickle = || async {
        let stream = futures::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Some((
                Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b" ")),
                (),
            ))
        });
        Response::new(Body::from_stream(stream))
    };
    let app = Router::new()
        .route("/v2/library/big/manifests/{tag}", get(challenge("big")))
        .route("/v2/library/slow/manifests/{tag}", get(challenge("slow")))
        .route("/big", get(endless))
        .route("/slow", get(trickle));
    let port = registry(app).await;
    port_cell.set(port).unwrap();
    let server = Server::with_policy(&verify_policy(&format!("http://127.0.0.1:{port}"), ""));
    let pid = server.child.id();
    let before = common::proc_kib(pid, "VmHWM");

    let started = Instant::now();
    let d = explain(&server, "big:1").await;
    let took = started.elapsed();
    // The check ends at verify.timeout (1 s); the rest is the dry-run's own round trip, with the
    // other tests of this file loading the machine.
    let reason = d["tried"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("over 64 KiB"), "{d}");
    assert!(took < Duration::from_millis(1300), "{took:?}");
    assert!(
        common::proc_kib(pid, "VmHWM") < before + 16 * MIB,
        "peak RSS grew by a big answer"
    );

    let started = Instant::now();
    let d = explain(&server, "slow:1").await;
    let took = started.elapsed();
    assert_eq!(d["tried"][0]["result"], "absent", "{d}");
    assert!(took >= Duration::from_millis(950), "{took:?}");
    assert!(
        took < Duration::from_millis(1300),
        "a trickling answer outlived the check: {took:?}"
    );
}

/// Reads until the server closes the connection; how long that took.
async fn time_to_close(stream: &mut common::Tls, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the connection was still open after {limit:?}"),
        }
    }
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// 2. An idle connection closes after --idle-timeout (HTTP/1.1 and HTTP/2); a body that stalls
/// gets 408 at --request-timeout.
#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_close_and_stalled_bodies_time_out() {
    let server = Server::start(Options {
        extra: &["--idle-timeout", "1s", "--request-timeout", "2s"],
        ..Options::default()
    });

    let mut h1 = common::connect_tls(&server, b"http/1.1").await.unwrap();
    h1.write_all(HEALTHZ).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = h1.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let closed = time_to_close(&mut h1, Duration::from_secs(5)).await;
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_secs(3),
        "{closed:?}"
    );

    let h2 = common::connect_tls(&server, b"h2").await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(h2),
    )
    .await
    .unwrap();
    let driver = tokio::spawn(conn);
    let req = hyper::Request::get("https://localhost/healthz")
        .body(http_body_util::Empty::<axum::body::Bytes>::new())
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
    let answered = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("the HTTP/2 connection was still open after 5 s")
        .unwrap()
        .ok();
    let closed = answered.elapsed();
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_secs(3),
        "{closed:?}"
    );

    let mut stalled = common::connect_tls(&server, b"http/1.1").await.unwrap();
    stalled
        .write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"apiVersion\":")
        .await
        .unwrap();
    let sent = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(6), stalled.read(&mut buf))
        .await
        .expect("no answer to a stalled body within 6 s")
        .unwrap();
    let took = sent.elapsed();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert!(server
        .metrics()
        .await
        .contains("image_mirror_requests_refused_total{reason=\"body_timeout\"} 1"));
}

/// 2. Past --max-connections a new connection is closed at once; a freed slot takes the next.
#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_limit_are_closed_at_once() {
    let server = Server::start(Options {
        extra: &["--max-connections", "4"],
        ..Options::default()
    });
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut c = common::connect_tls(&server, b"http/1.1").await.unwrap();
        c.write_all(HEALTHZ).await.unwrap();
        let mut buf = [0u8; 512];
        assert!(c.read(&mut buf).await.unwrap() > 0);
        open.push(c);
    }
    // Slots count connections past their handshake: the fifth is closed right after it.
    let refused = tokio::time::timeout(Duration::from_secs(2), async {
        let mut c = common::connect_tls(&server, b"http/1.1").await?;
        c.write_all(HEALTHZ).await?;
        let mut buf = [0u8; 512];
        match c.read(&mut buf).await? {
            0 => Err(std::io::Error::other("closed")),
            _ => Ok(()),
        }
    })
    .await
    .expect("the fifth connection was neither served nor closed");
    assert!(refused.is_err(), "a fifth connection got through");
    drop(open.pop());
    common::wait_until(
        "a freed connection slot",
        Duration::from_secs(5),
        || async { common::connect_tls(&server, b"http/1.1").await.is_ok() },
    )
    .await;
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("image_mirror_connections_refused_total"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("image_mirror_connections_refused_total 0\n"),
        "{metrics}"
    );
}

/// An AdmissionReview of a Pod whose annotation makes the body `size` bytes.
fn big_review(uid: &str, size: usize) -> Vec<u8> {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big", "namespace": "default",
        "annotations": {"filler": ""}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}});
    let mut text = common::create_review(uid, "default", &pod, false).to_string();
    let pad = size - text.len();
    text = text.replacen(
        "\"filler\":\"\"",
        &format!("\"filler\":\"{}\"", "x".repeat(pad)),
        1,
    );
    assert_eq!(text.len(), size);
    text.into_bytes()
}

/// 3. 128 concurrent 8 MiB reviews: memory stays under the chart's 128 MiB limit, every request
/// gets its answer or a 503, and the memory is given back afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_large_bodies_stay_within_the_memory_budget() {
    let server = Server::start(Options {
        extra: &["--request-timeout", "20s"],
        ..Options::default()
    });
    let pid = server.child.id();
    let idle = common::proc_kib(pid, "VmRSS");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(server.ca_pem.as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .http1_only()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let body = axum::body::Bytes::from(big_review("big", 8 * 1024 * 1024 - 1024));
    let sends = (0..128).map(|_| {
        let (client, body, url) = (client.clone(), body.clone(), server.url("/mutate"));
        tokio::spawn(async move {
            let resp = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let answer: Value = resp.json().await.unwrap_or(Value::Null);
            (status, answer)
        })
    });
    let mut answered = 0;
    for r in futures::future::join_all(sends).await {
        let (status, answer) = r.unwrap();
        match status {
            200 => {
                assert_eq!(answer["response"]["uid"], "big");
                assert!(answer["response"]["patch"].is_string(), "{answer}");
                answered += 1;
            }
            503 => assert!(answer["error"]
                .as_str()
                .unwrap()
                .contains("--max-bodies-bytes")),
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    assert!(answered > 0, "no review was answered");
    drop(client);
    let peak = common::proc_kib(pid, "VmHWM");
    assert!(peak < 128 * MIB, "peak RSS {peak} KiB");
    common::wait_until(
        "memory given back after the burst",
        Duration::from_secs(10),
        || async { common::proc_kib(pid, "VmRSS") < idle + 16 * MIB },
    )
    .await;
}

/// 4. A Pod with 75,000 containers (what the API server accepts): a few warnings and "and N
/// more", an answer and a peak memory a small multiple of the body.
#[tokio::test(flavor = "multi_thread")]
async fn one_review_does_not_amplify() {
    let server = Server::start(Options::default());
    let pid = server.child.id();
    let containers: Vec<Value> = (0..75_000)
        .map(|i| json!({"name": format!("c{i}"), "image": "nginx:1.25"}))
        .collect();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "wide", "namespace": "default"},
        "spec": {"containers": containers}});
    let body = common::create_review("wide", "default", &pod, false).to_string();
    let before = common::proc_kib(pid, "VmHWM");
    let (status, answer) = common::post(
        &server.client(),
        &server.url("/mutate"),
        Some("application/json"),
        body.clone().into_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    let warnings: Vec<&str> = answer["response"]["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(
        warnings.len(),
        2,
        "identical warnings are sent once: {warnings:?}"
    );
    // The record of 75,000 original images would pass the API server's 256 KiB of annotations.
    assert!(
        warnings[1].contains("original-images not recorded"),
        "{warnings:?}"
    );
    let patch = common::decode_patch(&answer).unwrap();
    assert_eq!(patch.0.len(), 75_000);
    let size = answer.to_string().len();
    // One replace operation per container, base64-encoded, and the original images: a few times
    // the body, never the 20 MB of one warning per container.
    assert!(
        size < 6 * body.len(),
        "answer of {size} bytes for a body of {}",
        body.len()
    );
    let grew = common::proc_kib(pid, "VmHWM").saturating_sub(before) * 1024;
    // Parsed containers, decisions, patch operations and the answer: about 20 times the body.
    assert!(
        grew < 24 * body.len() as u64,
        "peak grew by {grew} bytes for a body of {}",
        body.len()
    );

    // Distinct warnings are cut at ten, with a count of the rest.
    let containers: Vec<Value> = (0..500)
        .map(|i| json!({"name": format!("c{i}"), "image": format!("nginx:{i}")}))
        .collect();
    let pod = json!({"metadata": {"name": "many", "namespace": "default"}, "spec": {"containers": containers}});
    let answer = common::post_json(
        &server.client(),
        &server.url("/mutate"),
        &common::create_review("many", "default", &pod, false),
    )
    .await;
    let warnings = answer["response"]["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 11, "{warnings:?}");
    assert!(warnings[10]
        .as_str()
        .unwrap()
        .starts_with("... and 490 more warnings"));
}

/// 5. Secrets are written only in `request.namespace`, whatever the object says; with none, none.
#[tokio::test(flavor = "multi_thread")]
async fn pull_secrets_go_only_where_the_api_server_says() {
    use common::fake_api::FakeApi;
    use image_mirror_webhook::dockerconfig::managed_name;
    const HOST: &str = "mirror.example.com:5000";
    let api = FakeApi::start().await;
    let kube = common::TempDir::new("hardening-kube");
    let kubeconfig = api.kubeconfig(&kube.0);
    let policy = format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"https://{HOST}\"]\nconfigs:\n  \"{HOST}\":\n    auth: {{username: u, password: p}}\n"
    );
    let server = Server::start(Options {
        policy: Some(&policy),
        extra: &["--pull-secrets"],
        kubeconfig: Some(&kubeconfig),
        ..Options::default()
    });
    server.wait_ready().await;
    let review = |request_ns: &str, object_ns: &str| {
        let pod = json!({"metadata": {"name": "p", "namespace": object_ns},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}});
        common::create_review("forged", request_ns, &pod, false)
    };
    let answer = common::post_json(
        &server.client(),
        &server.url("/mutate"),
        &review("team-a", "kube-system"),
    )
    .await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let name = managed_name(HOST);
    assert!(api.secret("team-a", &name).is_some());
    assert!(
        api.secret("kube-system", &name).is_none(),
        "written where the object said"
    );

    let writes = api.secret_writes();
    let answer = common::post_json(&server.client(), &server.url("/mutate"), &review("", "")).await;
    assert_eq!(
        api.secret_writes(),
        writes,
        "a review without a namespace wrote a Secret"
    );
    let warnings = answer["response"]["warnings"].to_string();
    assert!(warnings.contains("names no namespace"), "{answer}");
}

fn https_get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").into_bytes()
}

/// A GET over TLS with an optional client certificate; the status line, or why there was none.
async fn get_with_identity(
    server: &Server,
    identity: Option<&tls::DevCertificate>,
) -> Result<String, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connector = common::tls_connector(
        &server.ca_pem,
        b"http/1.1",
        identity.map(|i| (i.cert_pem.as_str(), i.key_pem.as_str())),
    );
    let mut s = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(&https_get("/healthz"))
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out);
    text.lines()
        .next()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| "no answer".into())
}

use image_mirror_webhook::server::tls;

/// 5. `--client-ca-file`: only clients with a certificate from that CA are served; a new CA file
/// applies without a restart; the admin listener (probes) is unaffected.
#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_are_required_and_their_ca_reloads() {
    let dir = common::TempDir::new("client-ca");
    let first = tls::generate(&["kube-apiserver"]).unwrap();
    let second = tls::generate(&["kube-apiserver"]).unwrap();
    dir.write_atomic("client-ca.crt", first.ca_pem.as_bytes());
    let ca_path = dir.path("client-ca.crt");
    let ca_arg = ca_path.to_str().unwrap();
    let server = Server::start(Options {
        extra: &["--client-ca-file", ca_arg],
        ..Options::default()
    });
    assert!(
        get_with_identity(&server, None).await.is_err(),
        "served a client without a certificate"
    );
    assert!(
        get_with_identity(&server, Some(&second)).await.is_err(),
        "served a certificate of another CA"
    );
    assert_eq!(
        get_with_identity(&server, Some(&first)).await.unwrap(),
        "HTTP/1.1 200 OK"
    );
    let probe = reqwest::get(server.admin_url("/healthz")).await.unwrap();
    assert_eq!(probe.status(), 200);

    dir.write_atomic("client-ca.crt", second.ca_pem.as_bytes());
    common::wait_until("the new client CA", Duration::from_secs(5), || async {
        get_with_identity(&server, Some(&second)).await.is_ok()
    })
    .await;
    assert!(
        get_with_identity(&server, Some(&first)).await.is_err(),
        "the old CA still works"
    );

    dir.write_atomic("client-ca.crt", b"not a certificate");
    common::wait_until("a refused client CA", Duration::from_secs(5), || async {
        server
            .metrics()
            .await
            .contains("image_mirror_tls_reloads_total{result=\"failure\"} 1")
    })
    .await;
    assert_eq!(
        get_with_identity(&server, Some(&second)).await.unwrap(),
        "HTTP/1.1 200 OK"
    );
}

/// A policy of about `bytes`: many mirrors, and rewrite rules up to the regex limit.
fn large_policy(bytes: usize, tag: &str) -> String {
    let mut text = String::from("mirrors:\n");
    let mut i = 0;
    while text.len() < bytes {
        text.push_str(&format!(
            "  \"registry{i}.example.com\":\n    endpoint: [\"https://{tag}{i}.example.com:5000\"]\n"
        ));
        if i < 1_000 {
            text.push_str(&format!(
                "    rewrite:\n      \"^team{i}/(.*)\": \"mirror/team{i}/$1\"\n"
            ));
        }
        i += 1;
    }
    text.push_str(&format!(
        "  docker.io:\n    endpoint: [\"https://{tag}.example.com\"]\n"
    ));
    text
}

/// 6. A policy over the size limit is refused; a 1 MiB policy with a thousand regexes loads off
/// the thread that answers reviews, so none waits for it, and costs a bounded amount of memory.
#[tokio::test(flavor = "multi_thread")]
async fn large_policies_are_bounded_and_load_beside_the_reviews() {
    let server = Server::start(Options::default());
    let pid = server.child.id();
    let client = server.client();

    // Written whole (by rename), so the server never reads half of it.
    server
        .dir
        .write_atomic("policy.yaml", large_policy(1_100_000, "huge").as_bytes());
    common::wait_until(
        "the oversized policy refused",
        Duration::from_secs(10),
        || async {
            server
                .metrics()
                .await
                .contains("image_mirror_policy_reloads_total{result=\"failure\"} 1")
        },
    )
    .await;
    assert!(
        server.logs().contains("at most 1048576 are accepted"),
        "{}",
        server.logs()
    );

    let text = large_policy(1_000_000, "big");
    assert!(text.len() < 1 << 20);
    let before = common::proc_kib(pid, "VmRSS");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reviews = {
        let (client, url, stop) = (client.clone(), server.url("/mutate"), stop.clone());
        let pod = json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}});
        let review = common::create_review("r", "default", &pod, false);
        tokio::spawn(async move {
            let (mut worst, mut seen_new) = (Duration::ZERO, false);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                let answer = common::post_json(&client, &url, &review).await;
                worst = worst.max(started.elapsed());
                seen_new |= answer["response"]["warnings"]
                    .to_string()
                    .contains("big.example.com");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (worst, seen_new)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.dir.write_atomic("policy.yaml", text.as_bytes());
    common::wait_until(
        "the large policy loaded",
        Duration::from_secs(20),
        || async {
            server
                .metrics()
                .await
                .contains("image_mirror_policy_reloads_total{result=\"success\"} 2")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (worst, seen_new) = reviews.await.unwrap();
    assert!(seen_new, "reviews never saw the new policy");
    // Loading took about 2 s on the reviewing thread before; now it is elsewhere (the bound leaves
    // room for the other tests of this file loading the machine).
    assert!(
        worst < Duration::from_millis(500),
        "a review waited {worst:?} during the reload"
    );
    let grew = common::proc_kib(pid, "VmRSS").saturating_sub(before);
    assert!(grew < 64 * MIB, "a 1 MiB policy took {grew} KiB");

    // `check` refuses a 10 MB policy at once, without reading it into a tree.
    let big = server.dir.path("ten.yaml");
    std::fs::write(&big, large_policy(10_000_000, "ten")).unwrap();
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_image-mirror-webhook"))
        .args(["check", "--policy-file"])
        .arg(&big)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // Read no further than the limit: the error is the read's (stderr).
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most 1048576 are accepted"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// 7. `pinDigest` with a mirror that sends no digest, or a malformed one: used unpinned, and the
/// reason and a warning say so; nothing malformed ever reaches the reference.
#[tokio::test(flavor = "multi_thread")]
async fn pin_digest_says_when_it_cannot_pin() {
    use axum::routing::get;
    let app = Router::new()
        .route(
            "/v2/library/plain/manifests/{tag}",
            get(|| async { StatusCode::OK }),
        )
        .route(
            "/v2/library/forged/manifests/{tag}",
            get(|| async {
                (
                    StatusCode::OK,
                    [("docker-content-digest", "sha256:abc@evil")],
                )
            }),
        );
    let port = registry(app).await;
    let server = Server::with_policy(&verify_policy(
        &format!("http://127.0.0.1:{port}"),
        "  pinDigest: true\n",
    ));
    for image in ["plain:1", "forged:1"] {
        let d = explain(&server, image).await;
        let result = d["result"].as_str().unwrap();
        assert!(
            result.starts_with(&format!("127.0.0.1:{port}/library/")),
            "{d}"
        );
        assert!(!result.contains('@'), "{d}");
        assert!(d["reason"].as_str().unwrap().contains("not pinned"), "{d}");
        let pod = json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": image}]}});
        let answer = common::post_json(
            &server.client(),
            &server.url("/mutate"),
            &common::create_review("pin", "default", &pod, false),
        )
        .await;
        assert!(
            answer["response"]["warnings"]
                .to_string()
                .contains("not pinned"),
            "{answer}"
        );
    }
}

/// 7. A registry reached over HTTPS that redirects to plain HTTP is not followed.
#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_from_https_to_http_is_refused() {
    use axum::routing::get;
    let plain =
        registry(Router::new().route("/v2/{*rest}", get(|| async { StatusCode::OK }))).await;
    let cert = tls::generate(&["localhost"]).unwrap();
    let key = tls::certified_key(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()).unwrap();
    let config = tls::server_config(Arc::new(tls::Resolver::new(key)), None).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let redirect = Router::new().route(
        "/v2/{*rest}",
        get(
            move |axum::extract::Path(rest): axum::extract::Path<String>| async move {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [("location", format!("http://127.0.0.1:{plain}/v2/{rest}"))],
                )
            },
        ),
    );
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, app) = (acceptor.clone(), redirect.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    let dir = common::TempDir::new("redirect");
    std::fs::write(dir.path("ca.crt"), &cert.ca_pem).unwrap();
    let policy = verify_policy(
        &format!("https://localhost:{port}"),
        &format!(
            "configs:\n  \"localhost:{port}\":\n    tls:\n      ca_file: {}\n",
            dir.path("ca.crt").display()
        ),
    );
    let server = Server::with_policy(&policy);
    let d = explain(&server, "nginx:1.25").await;
    assert_eq!(d["result"], "nginx:1.25", "{d}");
    assert!(
        d["tried"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("refused a redirect"),
        "{d}"
    );
}

/// `check` of a policy text.
/// 7. `check` warns, with line and column, when a replacement can only make invalid references.
#[test]
fn check_warns_of_replacements_that_make_only_invalid_references() {
    let dir = common::TempDir::new("replacement");
    let cases = [
        ("\"MirrorProject/$1\"", "contains `M`"),
        ("\"mirror//$1\"", "contains `//`"),
        ("\"/mirror/$1\"", "starts with `/`"),
        ("\"mirror/$1/\"", "ends with `/`"),
        ("\"mirror:$1\"", "contains `:`"),
        ("\"\"", "it is empty"),
        ("\"-$1\"", "starts with `-`"),
        ("\"../$1\"", "a path component ends with `.`"),
        ("\"mirror-/$1\"", "a path component ends with `-`"),
        ("\"mirror/_$1\"", "a path component starts with `_`"),
        ("\"$1.\"", "ends with `.`"),
    ];
    for (replacement, why) in cases {
        let text = format!(
            "mirrors:\n  docker.io:\n    endpoint: [\"https://mirror.example.com\"]\n    rewrite:\n      \"^(.*)$\": {replacement}\n"
        );
        let out = common::check(&dir, &text);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        assert!(
            stdout.contains(":5:17: warning:"),
            "{replacement}: {stdout}"
        );
        assert!(stdout.contains(why), "{replacement}: {stdout}");
    }
    let fine = "mirrors:\n  docker.io:\n    endpoint: [\"https://mirror.example.com\"]\n    rewrite:\n      \"^(.*)$\": \"mirror/${1}-x\"\n";
    let out = common::check(&dir, fine);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(": warning:"));
}

/// 7. A review that is not valid UTF-8 is answered with its uid, so the API server can match it.
#[tokio::test(flavor = "multi_thread")]
async fn a_review_that_is_not_utf8_keeps_its_uid() {
    let server = Server::start(Options::default());
    let pod = json!({"metadata": {"name": "p", "namespace": "default", "annotations": {"a": "MARK"}},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}});
    let text = common::create_review("uid-7", "default", &pod, false).to_string();
    for bad in [&b"\xff\xfe"[..], &b"\xc3\x28"[..], &b"\xed\xa0\x80"[..]] {
        let body = text.replace("MARK", "\u{1}").into_bytes();
        let at = body.iter().position(|b| *b == 1).unwrap();
        let mut body = body;
        body.splice(at..=at, bad.iter().copied());
        let (status, answer) = common::post(
            &server.client(),
            &server.url("/mutate"),
            Some("application/json"),
            body,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(answer["response"]["uid"], "uid-7", "{answer}");
        assert_eq!(answer["response"]["allowed"], true);
    }
}
