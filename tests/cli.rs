//! The `check` and `dry-run` commands as a user runs them: exit codes, one-line errors, no panics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_image-mirror-webhook"))
}

fn data(name: &str) -> String {
    common::data(name).display().to_string()
}

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).ok();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "panic for {args:?}: {stderr}");
    out
}

fn temp(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("imw-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_reports_with_places_and_exit_codes() {
    let ok = run(
        &[
            "check",
            "--policy-file",
            &data("examples/k3s-registries-tls-auth.yaml"),
        ],
        "",
    );
    assert_eq!(ok.status.code(), Some(0));
    assert!(
        stdout(&ok)
            .contains("k3s-registries-tls-auth.yaml:9:3: warning: configs[mycustomreg:5000]"),
        "{}",
        stdout(&ok)
    );
    assert!(!stdout(&ok).contains("xxxxxx"), "a password was printed");

    let bad = temp("bad.yaml", "mirrors:\n  docker.io:\n    endpoint: [\"https://m.example.com\"]\n    rewrite:\n      \"^(a\": b\nfoo: 1\n");
    let out = run(&["check", "--policy-file", &bad], "");
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("bad.yaml:5:7: error:"), "{text}");
    assert!(
        text.contains("bad.yaml:6:1: error: foo: unknown key `foo`"),
        "{text}"
    );
    assert!(text.contains("invalid policy; 2 error(s)"), "{text}");

    let broken = temp("broken.yaml", "mirrors: {docker.io: [\n");
    let out = run(&["check", "--policy-file", &broken], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("not valid YAML"), "{}", stdout(&out));

    let out = run(&["check", "--policy-file", "/nonexistent/policy.yaml"], "");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).starts_with("error: cannot read /nonexistent/policy.yaml"));
}

#[test]
fn bad_usage_exits_2_and_help_exits_0() {
    assert_eq!(run(&["check"], "").status.code(), Some(2));
    assert_eq!(run(&["frobnicate"], "").status.code(), Some(2));
    assert_eq!(
        run(&["dry-run", "--policy-file", "x", "-o", "xml"], "")
            .status
            .code(),
        Some(2)
    );
    for args in [
        &["--help"][..],
        &["check", "--help"],
        &["dry-run", "--help"],
    ] {
        let out = run(args, "");
        assert_eq!(out.status.code(), Some(0));
        assert!(stdout(&out).contains("Usage"));
    }
}

#[test]
fn dry_run_images() {
    let out = run(
        &[
            "dry-run",
            "--policy-file",
            &data("examples/k3s-registries-rewrite.yaml"),
            "--image",
            "rancher/coredns-coredns:1.6.3",
            "--image",
            "quay.io/a/b",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let d = &v["results"][0]["decisions"];
    assert_eq!(
        d[0]["result"],
        "registry.example.com:5000/mirrorproject/rancher-images/coredns-coredns:1.6.3"
    );
    assert_eq!(d[0]["rule"], "mirrors[docker.io].endpoint[0]");
    assert_eq!(d[1]["result"], "quay.io/a/b");

    let out = run(
        &[
            "dry-run",
            "--policy-file",
            &data("examples/k3s-registries-rewrite.yaml"),
            "--image",
            "NGINX",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["results"][0]["decisions"][0]["result"], Value::Null);
    assert!(v["results"][0]["decisions"][0]["error"]
        .as_str()
        .unwrap()
        .contains("lowercase"));
}

#[test]
fn dry_run_objects_from_files_and_stdin() {
    let policy = data("kci-policy.yaml");
    let out = run(
        &[
            "dry-run",
            "--policy-file",
            &policy,
            &data("examples/kci-pods.yaml"),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["results"].as_array().unwrap().len(), 3);

    let review = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","kind":{"group":"","version":"v1","kind":"Pod"},"namespace":"shop","operation":"CREATE",
        "object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"nginx"}]}}}}"#;
    let out = run(&["dry-run", "--policy-file", &policy, "-"], review);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["results"][0]["namespace"], "shop");
    assert_eq!(
        v["results"][0]["object"]["spec"]["containers"][0]["image"],
        "192.168.1.5:5000/library/nginx"
    );

    let list = "apiVersion: v1\nkind: List\nitems:\n- kind: Pod\n  metadata: {name: a}\n  spec: {containers: [{name: c, image: nginx}]}\n- kind: Pod\n  metadata: {name: b}\n  spec: {containers: [{name: c, image: quay.io/x}]}\n";
    let out = run(&["dry-run", "--policy-file", &policy, "-o", "yaml"], list);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("name: a") && text.contains("name: b"),
        "{text}"
    );
    assert!(text.contains("192.168.1.5:5000/library/nginx"), "{text}");

    // --namespace places objects that name none, as `kubectl apply -n` does: here an excluded
    // one. An object's own namespace, or a review's, is kept.
    let excluding = temp(
        "excluding.yaml",
        "mirrors:\n  docker.io:\n    endpoint: [\"https://mirror.example.com\"]\nexclude:\n  namespaces: [quiet]\n",
    );
    let pods = "kind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: nginx}]}\n---\nkind: Pod\nmetadata: {name: b, namespace: shop}\nspec: {containers: [{name: c, image: nginx}]}\n";
    let out = run(
        &["dry-run", "--policy-file", &excluding, "-n", "quiet", "-"],
        pods,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["results"][0]["namespace"], "quiet");
    assert_eq!(
        v["results"][0]["object"]["spec"]["containers"][0]["image"],
        "nginx"
    );
    assert_eq!(v["results"][1]["namespace"], "shop");
    assert_eq!(
        v["results"][1]["object"]["spec"]["containers"][0]["image"],
        "mirror.example.com/library/nginx"
    );
}

#[test]
fn dry_run_bad_input_is_one_line_and_non_zero() {
    let policy = data("kci-policy.yaml");
    let cases: &[(&[&str], &str, &str)] = &[
        (&["-"], "kind: Pod\nspec: [\n", "not valid YAML"),
        (&["-"], "{\"kind\": \"Pod\",", "not valid JSON"),
        (&["/nonexistent.yaml"], "", "cannot read"),
    ];
    for (extra, input, needle) in cases {
        let mut args = vec!["dry-run", "--policy-file", &policy];
        args.extend_from_slice(extra);
        let out = run(&args, input);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
    let bad_policy = temp("bad-policy.yaml", "mirrorz: {}\n");
    let out = run(
        &["dry-run", "--policy-file", &bad_policy, "--image", "nginx"],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("bad-policy.yaml:1:1: error: mirrorz: unknown key"),
        "{}",
        stderr(&out)
    );
    let binary = run(
        &["dry-run", "--policy-file", &policy, "-"],
        "\u{0}\u{1}\u{2}garbage",
    );
    assert_eq!(binary.status.code(), Some(1));
    assert!(
        stderr(&binary).contains("binary data"),
        "{}",
        stderr(&binary)
    );
    let empty = run(&["dry-run", "--policy-file", &policy, "-"], "# nothing\n");
    assert_eq!(empty.status.code(), Some(1));
    assert!(
        stderr(&empty).contains("no objects found"),
        "{}",
        stderr(&empty)
    );
}
