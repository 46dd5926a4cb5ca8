//! What a new user meets first, against the real binary: the dry-run tells what `serve` with the
//! same settings does (pull secrets included), unused credentials are said once, `serve` logs the
//! policy's findings, `check` notes unused endpoints, `--image` takes no file, the policy may be
//! given as an argument, and the startup hint is a command that works as copied.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Output};

use common::{Options, Server};
use serde_json::{json, Value};

const RKE: &str = "private_registries:\n  - url: registry.com\n    user: u\n    password: p\n    is_default: true\n";

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_image-mirror-webhook"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}})
}

/// 3. The dry-run of a policy with credentials shows what `serve` does: no pull secret without
/// --pull-secrets (and one line says why), the managed one with it.
#[tokio::test(flavor = "multi_thread")]
async fn the_dry_run_attaches_what_serve_attaches() {
    let dir = common::TempDir::new("firstday");
    std::fs::write(dir.path("policy.yaml"), RKE).unwrap();
    std::fs::write(dir.path("pod.json"), pod().to_string()).unwrap();
    let policy = dir.path("policy.yaml").display().to_string();
    let pod_file = dir.path("pod.json").display().to_string();

    let out = bin(&["dry-run", "--policy-file", &policy, &pod_file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["results"][0]["pullSecrets"], json!([]));
    assert_eq!(report["results"][0]["managedSecrets"], json!([]));
    let note = text(&out.stderr);
    assert_eq!(note.lines().count(), 1, "{note}");
    assert!(
        note.contains("credentials for registry.com") && note.contains("--pull-secrets"),
        "{note}"
    );

    let out = bin(&[
        "dry-run",
        "--pull-secrets",
        "--policy-file",
        &policy,
        &pod_file,
    ]);
    let with: Value = serde_json::from_slice(&out.stdout).unwrap();
    let name = with["results"][0]["managedSecrets"][0]["name"]
        .as_str()
        .unwrap();
    assert!(name.starts_with("imw-pull-registry-com-"), "{with}");
    assert_eq!(with["results"][0]["pullSecrets"], json!([name]));
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));

    // `serve` without --pull-secrets: the same patch as the dry-run, and the same line in its log.
    let server = Server::with_policy(RKE);
    let answer = common::post_json(
        &server.client(),
        &server.url("/mutate"),
        &common::create_review("u", "shop", &pod(), false),
    )
    .await;
    let served = common::decode_patch(&answer).unwrap();
    let dry: json_patch::Patch =
        serde_json::from_value(report["results"][0]["patch"].clone()).unwrap();
    assert_eq!(served, dry);
    assert!(server.logs().contains("credentials for registry.com; pull secrets are made from them only with serve --pull-secrets"));
    let endpoint = common::post_json(&server.client(), &server.url("/dry-run"), &pod()).await;
    assert_eq!(
        endpoint["results"][0]["pullSecrets"],
        json!([]),
        "{endpoint}"
    );

    let out = bin(&["check", &policy]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("note: the policy has credentials for registry.com"));
}

/// 4. `serve` logs each warning of the policy it loads, as `check` prints it.
#[test]
fn serve_logs_each_policy_warning() {
    let policy = "mirrors:\n  docker.io:\n    endpoint: [\"https://m.example.com\"]\nconfigs:\n  m.example.com:\n    auth: {username: u, password: p}\n";
    let server = Server::with_policy(policy);
    let logs = server.logs();
    assert!(logs.contains("policy 6:35: warning: configs[m.example.com].auth: plain-text credential in the policy"), "{logs}");
}

/// 5. A second endpoint only matters with `verify` on: `check` says so where it does not.
#[test]
fn check_notes_endpoints_that_only_verify_uses() {
    let dir = common::TempDir::new("endpoints");
    let two = "mirrors:\n  docker.io:\n    endpoint: [\"https://a.example.com\", \"https://b.example.com\"]\n";
    std::fs::write(dir.path("p.yaml"), two).unwrap();
    let out = bin(&["check", dir.path("p.yaml").to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(":2:3: note: mirrors[docker.io].endpoint: only the first endpoint is used"),
        "{stdout}"
    );
    std::fs::write(
        dir.path("p.yaml"),
        format!("{two}verify: {{enabled: true}}\n"),
    )
    .unwrap();
    let out = bin(&["check", dir.path("p.yaml").to_str().unwrap()]);
    assert!(
        !text(&out.stdout).contains("only the first endpoint"),
        "{}",
        text(&out.stdout)
    );
}

/// 6. `--image` takes one reference each; a file after it is not read as an image.
#[test]
fn image_takes_one_reference_per_flag() {
    let policy = common::data("examples/k3s-registries-rewrite.yaml")
        .display()
        .to_string();
    let pods = common::data("pods.yaml").display().to_string();
    let out = bin(&[
        "dry-run",
        "--policy-file",
        &policy,
        "--image",
        "nginx:1.25",
        &pods,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("--image explains references and reads no objects"),
        "{}",
        text(&out.stderr)
    );
    let out = bin(&[
        "dry-run",
        &policy,
        "--image",
        "nginx:1.25",
        "--image",
        "quay.io/a/b",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["results"][0]["decisions"].as_array().unwrap().len(), 2);
    let help = text(&bin(&["dry-run", "--help"]).stdout);
    assert!(help.contains("one per --image, repeat it"), "{help}");
}

/// 7. The policy as an argument, as users type it; and `check` without one is a usage error.
#[test]
fn the_policy_may_be_given_as_an_argument() {
    let policy = common::data("examples/k3s-registries-rewrite.yaml")
        .display()
        .to_string();
    let pods = common::data("pods.yaml").display().to_string();
    let out = bin(&["check", &policy]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("valid policy"));
    let by_flag = bin(&["dry-run", "--policy-file", &policy, &pods]);
    let by_arg = bin(&["dry-run", &policy, &pods]);
    assert_eq!(by_arg.status.code(), Some(0), "{}", text(&by_arg.stderr));
    assert_eq!(by_arg.stdout, by_flag.stdout);
    assert_eq!(bin(&["check"]).status.code(), Some(2));
    assert_eq!(bin(&["dry-run"]).status.code(), Some(2));
}

/// 7. With no certificate, the startup log holds a curl command that works as it is copied.
#[test]
fn the_startup_hint_is_a_command_that_works() {
    let server = Server::start(Options {
        policy: None,
        own_tls: false,
        ..Options::default()
    });
    let logs = server.logs();
    let command = logs
        .lines()
        .find_map(|l| l.split_once("try: ").map(|(_, c)| c.trim().to_owned()))
        .unwrap_or_else(|| panic!("no hint: {logs}"));
    let command = command.replace(":8443/", &format!(":{}/", server.port));
    let out = Command::new("sh")
        .args(["-c", &format!("{command} -sS")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{command}: {}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["results"][0]["decisions"][0]["result"],
        "mirror.example.com:5000/library/nginx:1.25"
    );
}

/// The development server (no certificate flags, a certificate for this machine only) listens on
/// loopback unless told otherwise; with a certificate it listens on every address.
#[test]
fn the_development_server_listens_on_loopback() {
    let dir = common::TempDir::new("firstday-listen");
    let mut child = Command::new(env!("CARGO_BIN_EXE_image-mirror-webhook"))
        .args(["serve", "--dev-cert-dir"])
        .arg(dir.path("certs"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path("log")).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(dir.path("log")).unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // Listening, or refused because another process holds the port: either names the address.
    while !log().contains("127.0.0.1:8443") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let log = log();
    assert!(log.contains("127.0.0.1:8443"), "{log}");
    assert!(!log.contains("0.0.0.0"), "{log}");
}
