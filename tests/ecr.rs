//! ECR tokens against a real AWS API double (moto's server on loopback): RKE's ECR example with
//! its plugin keys, the webhook's own AWS identity, tokens reaching every managed Secret when they
//! change, the last token kept while AWS is down, and verify sending the token to a real registry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fake_api::FakeApi;
use common::real_registry::{oci_layout, push, start_registry_at};
use common::{ApiServe, TempDir};
use image_mirror_webhook::dockerconfig::managed_name;
use serde_json::{json, Value};

const ECR: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

/// moto's server: GetAuthorizationToken answers `AWS:<account>-auth-token`, the account being
/// MOTO_ACCOUNT_ID.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start(port: u16, account: &str) -> Moto {
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .env("MOTO_ACCOUNT_ID", account)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with moto[server] is needed (the README's test command installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { child, port }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The value of one series in a scrape (0 when absent).
fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn token(account: &str) -> String {
    format!("{account}-auth-token")
}

/// The environment of a webhook whose AWS endpoint is moto and that has no instance metadata.
fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("AWS_CONFIG_FILE", "/nonexistent".to_owned()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".to_owned()),
    ]
}

fn pairs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The `auths` entry of the managed Secret for the ECR registry in `ns`.
fn stored(api: &FakeApi, ns: &str) -> Option<Value> {
    let text = api.secret_text(ns, &managed_name(ECR), ".dockerconfigjson")?;
    let config: Value = serde_json::from_str(&text).unwrap();
    Some(config["auths"][ECR].clone())
}

fn stored_password(api: &FakeApi, ns: &str) -> Option<String> {
    stored(api, ns).and_then(|e| e["password"].as_str().map(str::to_owned))
}

/// RKE's ECR example (tests/data/examples/rke-ecr.yaml) with its placeholders filled in.
fn rke_example() -> String {
    std::fs::read_to_string(common::data("examples/rke-ecr.yaml"))
        .unwrap()
        .replace("ACCOUNTID", "123456789012")
        .replace("REGION", "us-east-1")
}

#[tokio::test(flavor = "multi_thread")]
async fn rke_ecr_example_makes_pull_secrets_from_the_token_its_keys_get() {
    let moto = Moto::start(common::free_port(), "123456789012");
    let policy = rke_example();
    let loaded = image_mirror_webhook::policy::Policy::load(&policy).unwrap();
    let said: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        !said
            .iter()
            .any(|d| d.contains("ignored") && d.contains("ecr")),
        "{said:?}"
    );
    assert!(
        said.iter().any(|d| d.contains(
            "ECR token for account 123456789012 in us-east-1, from the ecrCredentialPlugin keys"
        )),
        "{said:?}"
    );

    let api = FakeApi::start().await;
    let mut env = aws_env(&moto.endpoint());
    // No level shows a secret: trace too (the SDK, hyper and kube log the wire there).
    env.push(("RUST_LOG", "trace".to_owned()));
    let s = ApiServe::start_with(&api, &policy, &[], &pairs(&env)).await;
    let (answer, pod) = s.review("shop", "nginx:1.25", false).await;
    assert_eq!(
        pod["spec"]["containers"][0]["image"],
        format!("{ECR}/nginx:1.25"),
        "{answer}"
    );
    assert_eq!(
        pod["spec"]["imagePullSecrets"],
        json!([{"name": managed_name(ECR)}])
    );
    // What `aws ecr get-login-password` gives: user AWS, the token's password.
    let entry = stored(&api, "shop").unwrap();
    assert_eq!(entry["username"], "AWS");
    assert_eq!(
        entry["password"].as_str(),
        Some(token("123456789012").as_str())
    );

    let dry = s.dry_run_pod("shop", "nginx:1.25").await;
    assert!(
        dry.contains(
            "ECR token for account 123456789012 in us-east-1, from the ecrCredentialPlugin keys"
        ),
        "{dry}"
    );
    let metrics = s.server.metrics().await;
    assert!(
        metrics
            .contains(r#"image_mirror_credential_fetches_total{source="ecr",result="success"} 1"#),
        "{metrics}"
    );
    use base64::Engine;
    let wire =
        base64::engine::general_purpose::STANDARD.encode(format!("AWS:{}", token("123456789012")));
    assert!(
        s.logs().contains(" TRACE "),
        "RUST_LOG=trace was not in force"
    );
    for text in [&dry, &metrics, &s.logs(), &answer.to_string()] {
        assert!(!text.contains(&token("123456789012")));
        assert!(!text.contains(&wire));
        assert!(!text.contains("SECRETKEY"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_token_reaches_every_managed_secret_and_aws_down_keeps_the_last() {
    let port = common::free_port();
    let mut moto = Moto::start(port, "111111111111");
    // RKE's instance-profile form: no keys, the webhook's own identity (here its environment).
    let policy = format!("private_registries:\n  - url: {ECR}\n    is_default: true\n");
    let api = FakeApi::start().await;
    let mut env = aws_env(&moto.endpoint());
    env.push(("AWS_ACCESS_KEY_ID", "AKIDWEBHOOKIDENTITY".into()));
    env.push(("AWS_SECRET_ACCESS_KEY", "webhook-secret-key".into()));
    let s = ApiServe::start_with(
        &api,
        &policy,
        &["--ecr-token-max-age", "1s", "--pull-secret-resync", "1s"],
        &pairs(&env),
    )
    .await;
    for ns in ["a", "b"] {
        s.review(ns, "nginx:1.25", false).await;
        assert_eq!(stored_password(&api, ns), Some(token("111111111111")));
    }

    // AWS down: the refresh fails, is counted, and the last token stays in use.
    moto.stop();
    common::wait_until(
        "a failed ECR refresh is counted",
        Duration::from_secs(20),
        || async {
            let metrics = s.server.metrics().await;
            counter(
                &metrics,
                r#"image_mirror_credential_fetches_total{source="ecr",result="failure"}"#,
            ) >= 1
        },
    )
    .await;
    let (answer, pod) = s.review("c", "nginx:1.25", false).await;
    assert_eq!(
        pod["spec"]["imagePullSecrets"],
        json!([{"name": managed_name(ECR)}]),
        "{answer}"
    );
    assert_eq!(stored_password(&api, "c"), Some(token("111111111111")));
    assert!(s
        .logs()
        .contains("cannot refresh the ECR token; using the last one"));

    // AWS back, issuing another token: it reaches every managed Secret without a Pod change.
    let _moto = Moto::start(port, "222222222222");
    common::wait_until(
        "the new token in every managed Secret",
        Duration::from_secs(30),
        || async {
            ["a", "b", "c"]
                .iter()
                .all(|ns| stored_password(&api, ns) == Some(token("222222222222")))
        },
    )
    .await;
    for text in [s.logs(), s.server.metrics().await] {
        assert!(!text.contains("auth-token") && !text.contains("webhook-secret-key"));
    }
}

/// The ECR host must resolve to the test registry: an /etc/hosts line, as a private DNS zone
/// would make it (the test command runs as root, as CI does).
/// The `/etc/hosts` line a test added, taken out again when dropped (also when the test fails):
/// the host is left as it was found.
struct HostsLine(Option<String>);

impl Drop for HostsLine {
    fn drop(&mut self) {
        let Some(line) = &self.0 else { return };
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let kept: String = hosts
            .lines()
            .filter(|l| l.trim() != line)
            .map(|l| format!("{l}\n"))
            .collect();
        let _ = std::fs::write("/etc/hosts", kept);
    }
}

fn point_ecr_host_at(ip: &str) -> HostsLine {
    let line = format!("{ip} {ECR}");
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    if hosts.lines().any(|l| l.trim() == line) {
        return HostsLine(None);
    }
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open("/etc/hosts")
        .expect(
            "this test adds a line to /etc/hosts: run it as root (the README's test command does)",
        );
    writeln!(f, "{line}").unwrap();
    HostsLine(Some(line))
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_sends_the_ecr_token_to_the_registry() {
    const IP: &str = "127.0.0.42";
    // At first AWS issues a token the registry refuses (another account's).
    let moto_port = common::free_port();
    let mut moto = Moto::start(moto_port, "999999999999");
    let _hosts = point_ecr_host_at(IP);
    let dir = TempDir::new("ecr-registry");
    let cert = image_mirror_webhook::server::tls::generate(&[ECR]).unwrap();
    let (crt, key, ca) = (dir.path("tls.crt"), dir.path("tls.key"), dir.path("ca.crt"));
    std::fs::write(&crt, &cert.cert_pem).unwrap();
    std::fs::write(&key, &cert.key_pem).unwrap();
    std::fs::write(&ca, &cert.ca_pem).unwrap();
    // The registry knows one user: AWS, with the token moto issues as its password.
    let out = Command::new("htpasswd")
        .args(["-Bbn", "AWS", &token("123456789012")])
        .output()
        .expect("htpasswd (apache2-utils) is needed");
    std::fs::write(dir.path("htpasswd"), &out.stdout).unwrap();
    let _registry = start_registry_at(
        &dir.0,
        "ecr",
        IP,
        443,
        Some((&crt, &key)),
        Some(&dir.path("htpasswd")),
    );
    let layout = dir.path("layout");
    oci_layout(&layout, "1.0");
    push(
        &layout,
        "1.0",
        &format!("{ECR}/library/nginx:1.0"),
        Some(&format!("AWS:{}", token("123456789012"))),
    );

    let policy = format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"https://{ECR}\"]\nconfigs:\n  {ECR}:\n    tls: {{ca_file: {}}}\nverify: {{enabled: true, timeout: 5s, negativeCacheTTL: 1s}}\n",
        ca.display()
    );
    let mut env = aws_env(&format!("http://127.0.0.1:{moto_port}"));
    env.push(("AWS_ACCESS_KEY_ID", "AKIDWEBHOOKIDENTITY".into()));
    env.push(("AWS_SECRET_ACCESS_KEY", "webhook-secret-key".into()));
    let server = common::Server::start(common::Options {
        policy: Some(&policy),
        env: &pairs(&env),
        ..common::Options::default()
    });
    let explain = |image: &str| {
        let (client, url) = (
            server.client(),
            server.url(&format!("/dry-run?image={image}")),
        );
        async move { common::get_json(&client, &url).await }
    };
    let refused = explain("nginx:1.0").await;
    let d = &refused["results"][0]["decisions"][0];
    assert_eq!(
        d["tried"][0]["reason"], "unauthorized: the credentials were refused",
        "{refused}"
    );
    // The refusal makes the next check fetch a token at once (not at half its life), and this
    // time AWS issues the one the registry takes.
    moto.stop();
    let _moto = Moto::start(moto_port, "123456789012");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let found = explain("nginx:1.0").await;
    let d = &found["results"][0]["decisions"][0];
    assert_eq!(d["result"], format!("{ECR}/library/nginx:1.0"), "{found}");
    assert_eq!(d["tried"][0]["result"], "present", "{found}");
    let missing = explain("nginx:9.9").await;
    let d = &missing["results"][0]["decisions"][0];
    assert_eq!(d["result"], "nginx:9.9", "{missing}");
    assert_eq!(d["tried"][0]["reason"], "not found", "{missing}");
    assert!(!server.logs().contains(&token("123456789012")));
    let metrics = server.metrics().await;
    assert!(
        metrics
            .contains(r#"image_mirror_credential_fetches_total{source="ecr",result="success"} 2"#),
        "{metrics}"
    );
}

/// An AWS endpoint that accepts connections and then misbehaves: never answers, or answers with
/// a body that never ends.
async fn hostile_aws(endless_body: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = conn.read(&mut buf).await;
                if !endless_body {
                    tokio::time::sleep(Duration::from_secs(600)).await;
                    return;
                }
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
                if conn.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
                // 1 GiB at most, or until the client hangs up.
                for _ in 0..16_384 {
                    if conn.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// An ECR API that never answers or answers without end: reviews are answered within the
/// webhook's timeout (with a warning), each call ends within the SDK's 10 s and is counted as a
/// failure, and an endless answer is read no further than 64 KiB.
#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_or_endless_ecr_api_costs_a_warning_not_the_review() {
    for endless in [false, true] {
        let endpoint = hostile_aws(endless).await;
        let api = FakeApi::start().await;
        let s = ApiServe::start_with(
            &api,
            &rke_example(),
            &["--webhook-timeout", "2s"],
            &pairs(&aws_env(&endpoint)),
        )
        .await;
        let pid = s.server.child.id();
        let started = Instant::now();
        let (answer, pod) = s.review("shop", "nginx:1.25", false).await;
        assert!(started.elapsed() < Duration::from_secs(2), "{endless}");
        assert_eq!(
            pod["spec"]["containers"][0]["image"],
            format!("{ECR}/nginx:1.25")
        );
        assert!(
            answer["response"]["warnings"]
                .to_string()
                .contains("could not be made yet"),
            "{answer}"
        );
        common::wait_until(
            "the ECR call counted as failed",
            Duration::from_secs(20),
            || async {
                counter(
                    &s.server.metrics().await,
                    r#"image_mirror_credential_fetches_total{source="ecr",result="failure"} "#,
                ) >= 1
            },
        )
        .await;
        let peak = common::proc_kib(pid, "VmHWM");
        assert!(peak < 96 * 1024, "{endless}: peak RSS {peak} KiB");
        assert!(!s.logs().contains("panicked"));
    }
}
