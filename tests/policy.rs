//! Policy validation: every problem is reported with its line and column, and what cannot work
//! is refused instead of half-applied.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use image_mirror_webhook::policy::{Diagnostic, Policy, Severity};

fn diagnostics(text: &str) -> (bool, Vec<Diagnostic>) {
    match Policy::load(text) {
        Ok(l) => (true, l.diagnostics),
        Err(r) => (false, r.diagnostics),
    }
}

/// Asserts one diagnostic of `severity` at `line:col` whose text contains `needle`.
fn has(diags: &[Diagnostic], severity: Severity, line: usize, col: usize, needle: &str) {
    let found = diags.iter().any(|d| {
        d.severity == severity
            && (d.pos.line, d.pos.col) == (line, col)
            && d.to_string().contains(needle)
    });
    assert!(
        found,
        "no {severity} at {line}:{col} containing {needle:?} in:\n{}",
        render(diags)
    );
}

fn render(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| format!("  {d}\n")).collect()
}

#[test]
fn unknown_keys_are_errors_with_place_and_suggestion() {
    let (ok, d) = diagnostics(
        "mirrors:\n  docker.io:\n    endpoints: [a.example.com]\nexclud:\n  namespaces: [x]\n",
    );
    assert!(!ok);
    has(&d, Severity::Error, 3, 5, "unknown key `endpoints`");
    has(&d, Severity::Error, 3, 5, "did you mean `endpoint`?");
    has(&d, Severity::Error, 4, 1, "did you mean `exclude`?");
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let text = r#"
mirrors:
  docker.io:
    endpoint:
      - "https://mirror"
      - "ftp://x.example.com"
      - "https://x.example.com/artifactory/api"
    rewrite:
      "^(foo": "bar"
      "(?=look)": "ahead"
      "^a/(.*)$": "b/$1_x"
configs:
  "*.example.com":
    pullSecret: Not_A_Name
defaultRegistry: myregistry
kci:
  enabled: sometimes
verify:
  timeout: fast
"#;
    let (ok, d) = diagnostics(text);
    assert!(!ok);
    has(&d, Severity::Error, 5, 9, "would read as Docker Hub images");
    has(&d, Severity::Error, 6, 9, "unsupported scheme `ftp`");
    has(&d, Severity::Error, 7, 9, "no image reference can express");
    has(&d, Severity::Error, 9, 7, "invalid regex `^(foo`");
    has(&d, Severity::Error, 10, 7, "look-around");
    has(&d, Severity::Error, 11, 19, "group `1_x`");
    has(&d, Severity::Error, 11, 19, "write `${1}_x`");
    has(&d, Severity::Error, 13, 3, "registry host[:port]");
    has(&d, Severity::Error, 14, 17, "not a valid Secret name");
    has(&d, Severity::Error, 15, 18, "does not read as a registry");
    has(
        &d,
        Severity::Error,
        17,
        12,
        "not one of auto, always, never",
    );
    has(&d, Severity::Error, 19, 12, "not a duration");
    let errors = d.iter().filter(|x| x.severity == Severity::Error).count();
    assert_eq!(errors, 11, "{}", render(&d));
}

#[test]
fn broken_yaml_and_wrong_shapes() {
    let (ok, d) = diagnostics("mirrors:\n  docker.io:\n    endpoint: [a\n");
    assert!(!ok);
    assert!(d[0].message.contains("not valid YAML"), "{}", render(&d));
    let (ok, d) = diagnostics("- a\n- b\n");
    assert!(!ok);
    has(&d, Severity::Error, 1, 1, "a policy is a mapping");
    let (ok, d) = diagnostics("mirrors: [a]\n");
    assert!(!ok);
    has(&d, Severity::Error, 1, 10, "expected a mapping");
    let (ok, d) = diagnostics("annotateOriginal: maybe\n");
    assert!(!ok);
    has(&d, Severity::Error, 1, 19, "expected true or false");
    let (ok, d) = diagnostics("mirrors:\n  docker.io: {}\nmirrors:\n  quay.io: {}\n");
    assert!(!ok);
    has(
        &d,
        Severity::Error,
        3,
        1,
        "duplicate key `mirrors` (first at 1:1)",
    );
    // A plain-HTTP mirror: the reference carries no scheme, so the nodes must know.
    let (ok, d) =
        diagnostics("mirrors:\n  docker.io:\n    endpoint: [\"http://m.example.com:5000\"]\n");
    assert!(ok);
    has(
        &d,
        Severity::Warning,
        3,
        16,
        "plain HTTP: images rewritten to `m.example.com:5000`",
    );
    let (ok, d) = diagnostics("a: &x [1]\nb: *y\n");
    assert!(!ok, "{}", render(&d));
}

#[test]
fn alias_bombs_are_refused() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let prev = i - 1;
        text.push_str(&format!("a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"));
    }
    let (ok, d) = diagnostics(&text);
    assert!(!ok);
    assert!(d[0].message.contains("nodes"), "{}", render(&d));
}

#[test]
fn deep_nesting_is_refused() {
    let text = format!("mirrors: {}{}", "[".repeat(10_000), "]".repeat(10_000));
    let (ok, d) = diagnostics(&text);
    assert!(!ok);
    assert!(
        d[0].message.contains("nesting") || d[0].message.contains("recursion"),
        "{}",
        render(&d)
    );
}

#[test]
fn warnings_do_not_reject_a_policy() {
    let text = r#"
mirrors:
  index.docker.io:
    endpoint: ["https://m.example.com"]
  quay.io:
    rewrite:
      "^a": "b"
configs:
  "mycustomreg:5000":
    auth:
      username: u
      password: hunter2
  "m.example.com":
    auth:
      auth: dTpw
private_registries:
  - url: https://registry.example.com/
    password: pw2
"#;
    let (ok, d) = diagnostics(text);
    assert!(ok, "{}", render(&d));
    has(&d, Severity::Warning, 3, 3, "never matches");
    has(&d, Severity::Warning, 3, 3, "use `docker.io`");
    has(&d, Severity::Warning, 5, 3, "no effect without endpoints");
    has(&d, Severity::Warning, 9, 3, "matches no mirror endpoint");
    has(&d, Severity::Warning, 12, 17, "plain-text credential");
    has(&d, Severity::Warning, 15, 13, "plain-text credential");
    has(&d, Severity::Warning, 17, 10, "`https://` is dropped");
    has(&d, Severity::Warning, 18, 15, "plain-text credential");
    for diag in &d {
        let line = diag.to_string();
        for secret in ["hunter2", "dTpw", "pw2"] {
            assert!(
                !line.contains(secret),
                "a diagnostic shows a secret: {line}"
            );
        }
    }
}

#[test]
fn the_common_configs_typo_is_pointed_out() {
    let text = "mirrors:\n  docker.io:\n    endpoint: [\"https://mycustomreg.com:5000\"]\nconfigs:\n  \"mycustomreg:5000\":\n    tls:\n      insecure_skip_verify: true\n";
    let (ok, d) = diagnostics(text);
    assert!(ok);
    has(
        &d,
        Severity::Warning,
        5,
        3,
        "did you mean `mycustomreg.com:5000`?",
    );
}

#[test]
fn rke_and_anthos_keys_that_do_nothing_are_noted_and_ecr_plugins_checked() {
    let text = "nodes:\n  - address: 1.2.3.4\nservices: {}\nkind: Cluster\nprivate_registries:\n  - url: r.example.com\n    ecrCredentialPlugin:\n      aws_access_key_id: AKIA\n";
    let (ok, d) = diagnostics(text);
    assert!(ok, "{}", render(&d));
    has(&d, Severity::Note, 1, 1, "RKE cluster.yml key, ignored");
    has(&d, Severity::Note, 3, 1, "RKE cluster.yml key, ignored");
    has(&d, Severity::Note, 4, 1, "Anthos");
    has(
        &d,
        Severity::Warning,
        7,
        5,
        "`r.example.com` is not an ECR registry",
    );
    assert!(!render(&d).contains("AKIA"));
}

#[test]
fn defaults_and_settings() {
    let p = Policy::load("").unwrap();
    assert!(p.policy.annotate_original && p.policy.warnings);
    assert!(!p.policy.verify.enabled);
    assert_eq!(p.policy.verify.timeout.as_millis(), 1000);
    assert!(p.diagnostics[0].message.contains("empty"));
    let p = Policy::load("annotateOriginal: false\nwarnings: false\nverify:\n  enabled: true\n  timeout: 500ms\n  cacheTTL: 2m\n  negativeCacheTTL: 5s\n  pinDigest: true\n").unwrap().policy;
    assert!(!p.annotate_original && !p.warnings);
    assert_eq!(p.verify.timeout.as_millis(), 500);
    assert_eq!(p.verify.cache_ttl.as_secs(), 120);
    assert_eq!(p.verify.negative_cache_ttl.as_secs(), 5);
    assert!(p.verify.enabled && p.verify.pin_digest);
    let (ok, d) = diagnostics("verify:\n  timeout: 31s\n");
    assert!(!ok);
    has(&d, Severity::Error, 2, 12, "at most 30s");
}

#[test]
fn secrets_never_show_in_debug_output() {
    let p = Policy::load(
        "configs:\n  r.example.com:\n    auth:\n      username: u\n      password: s3cr3t-value\n",
    )
    .unwrap();
    let dump = format!("{:?}", p.policy);
    assert!(!dump.contains("s3cr3t-value"), "{dump}");
    assert!(dump.contains("<redacted>"));
}

#[test]
fn ecr_registries_get_tokens_and_half_keys_are_refused() {
    let ecr = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
    let (ok, d) = diagnostics(&format!(
        "configs:\n  {ecr}:\n    tls: {{insecure_skip_verify: false}}\n"
    ));
    assert!(ok, "{}", render(&d));
    has(
        &d,
        Severity::Note,
        2,
        3,
        "ECR token for account 123456789012 in eu-west-1, from the webhook's AWS identity",
    );
    let (ok, d) = diagnostics(&format!(
        "private_registries:\n  - url: {ecr}\n    ecrCredentialPlugin:\n      aws_access_key_id: AKIA\n"
    ));
    assert!(!ok);
    has(
        &d,
        Severity::Error,
        3,
        5,
        "aws_access_key_id and aws_secret_access_key go together",
    );
    // A configs entry with credentials of its own keeps them.
    let p = Policy::load(&format!(
        "configs:\n  {ecr}:\n    auth: {{username: u, password: p}}\n"
    ))
    .unwrap();
    assert!(!p
        .diagnostics
        .iter()
        .any(|d| d.message.contains("ECR token")));
}

/// Where users stumble: a mirror for every registry, rules that cannot apply, one registry in two
/// formats, and a key indented to the wrong level, each said with its place.
#[test]
fn check_warns_where_users_stumble() {
    let text = "mirrors:\n  \"*\":\n    endpoint: [\"https://m.example.com\"]\n  docker.io:\n    endpoint: [\"https://m.example.com\"]\n    rewrite:\n      \"^docker\\\\.io/(.*)\": \"hub/$1\"\n      \"(.*)\": \"hub/$1\"\n      \"^library/(.*)\": \"lib/$1\"\nregistryMirrors:\n  - endpoint: https://a.example.com\n    hosts: [docker.io]\n";
    let (ok, d) = diagnostics(text);
    assert!(ok, "{d:#?}");
    has(
        &d,
        Severity::Warning,
        2,
        3,
        "ECR, localhost and private registries included",
    );
    has(
        &d,
        Severity::Warning,
        7,
        7,
        "never matches: rules are matched against the repository path without the registry",
    );
    has(
        &d,
        Severity::Warning,
        9,
        7,
        "never applies: the rule `(.*)` before it matches every repository path",
    );
    has(
        &d,
        Severity::Note,
        11,
        15,
        "docker.io has a mirrors entry too: its endpoints come first",
    );
    // `(.*)` itself and the rules of a mirror without such a rule are not flagged.
    assert!(!d.iter().any(|x| x.pos.line == 8), "{d:#?}");

    // A key at the wrong level says where it belongs.
    for (policy, line, col, message) in [
        (
            "mirrors:\n  docker.io:\n  endpoint: [\"https://m.example.com\"]\n",
            3,
            3,
            "`endpoint` is not a registry (hint: `endpoint` is a key of each mirrors entry: indent it under its registry",
        ),
        (
            "mirrors:\n  docker.io:\n    endpoint: [\"https://m.example.com\"]\nrewrite:\n  \"^a\": b\n",
            4,
            1,
            "is a key of mirrors.<registry>, not of the top level: is it indented to the wrong level?",
        ),
        (
            "identity_token: x\n",
            1,
            1,
            "is a key of configs.<registry>.auth, not of the top level",
        ),
        (
            "configs:\n  m.example.com:\n  auth:\n    username: a\n",
            3,
            3,
            "indent it under its registry (configs.<registry>.auth)",
        ),
    ] {
        let (ok, d) = diagnostics(policy);
        assert!(!ok, "{policy}");
        has(&d, Severity::Error, line, col, message);
    }
}
