//! Kubelet credential provider plugins: the kubelet's `matchImages` glob rules, plugins run as
//! the kubelet runs them (small scripts speaking the documented JSON), its three cache key types,
//! plugins that hang, fail or print garbage, and `serve` making pull secrets from a plugin's answer
//! without its password reaching a log, a metric or the dry-run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_api::FakeApi;
use common::{ApiServe, TempDir};
use image_mirror_webhook::credentials::{Cloud, CloudSettings};
use image_mirror_webhook::credprovider::glob_matches;
use image_mirror_webhook::dockerconfig::managed_name;
use image_mirror_webhook::policy::Policy;
use serde_json::{json, Value};

/// The kubelet's documented matching rules (kubelet-config.v1 `matchImages`, the credential
/// provider API's `auth` keys, and keyring.go's examples), one row each.
#[test]
fn match_images_globs_follow_the_kubelet() {
    let rows: &[(&str, &str, bool)] = &[
        // Documented example values of matchImages.
        (
            "123456789.dkr.ecr.us-east-1.amazonaws.com",
            "123456789.dkr.ecr.us-east-1.amazonaws.com/app:v1",
            true,
        ),
        ("*.azurecr.io", "myregistry.azurecr.io/team/app", true),
        ("gcr.io", "gcr.io/project/image:tag", true),
        ("*.*.registry.io", "a.b.registry.io/image", true),
        ("registry.io:8080/path", "registry.io:8080/path/image", true),
        // Globs as subdomains, in the middle, as the top-level domain, and partial labels.
        ("*.k8s.io", "app.k8s.io/image", true),
        ("k8s.*.io", "k8s.example.io/image", true),
        ("k8s.*", "k8s.io/image", true),
        ("app*.k8s.io", "app1.k8s.io/image", true),
        ("app*.k8s.io", "web.k8s.io/image", false),
        // Each glob matches one label: *.io does not match *.k8s.io.
        ("*.io", "app.k8s.io/image", false),
        ("*.k8s.io", "k8s.io/image", false),
        ("*.*.registry.io", "b.registry.io/image", false),
        (
            "*.dkr.ecr.*.amazonaws.com",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app",
            true,
        ),
        (
            "*.dkr.ecr.*.amazonaws.com",
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/app",
            false,
        ),
        // keyring.go: globURL=*.docker.io matches blah.docker.io, not not.right.io.
        ("*.docker.io", "blah.docker.io", true),
        ("*.docker.io", "not.right.io", false),
        // Ports must match, both ways; no globs in ports.
        ("registry.io:8080/path", "registry.io/path/image", false),
        ("registry.io/path", "registry.io:8080/path/image", false),
        ("registry.io:*", "registry.io:5000/image", false),
        ("registry.io:5000", "registry.io:5000/image", true),
        // The glob's path is a prefix of the image's path (as text).
        ("registry.io/path", "registry.io/path/image", true),
        ("registry.io/path", "registry.io/other/image", false),
        ("registry.io/foo", "registry.io/foobar/image", true),
        // filepath.Match's other forms within a label.
        // `?` begins a URL's query to Go's parser, so it is no glob there.
        ("?.k8s.io", "a.k8s.io/image", false),
        ("[a-c].k8s.io", "b.k8s.io/image", true),
        ("[^a-c].k8s.io", "b.k8s.io/image", false),
        // Case is compared as written, as Go does.
        ("gcr.io", "GCR.io/image", false),
    ];
    assert!(rows.len() >= 20);
    for (glob, image, expected) in rows {
        assert_eq!(glob_matches(glob, image), *expected, "{glob} vs {image}");
    }
}

const API: &str = "credentialprovider.kubelet.k8s.io/v1";

/// A plugin directory with scripts the tests write.
struct Plugins {
    dir: TempDir,
}

impl Plugins {
    fn new() -> Plugins {
        Plugins {
            dir: TempDir::new("plugins"),
        }
    }

    fn path(&self) -> &Path {
        &self.dir.0
    }

    /// A plugin that records its stdin, args and one env var, then prints `<name>.response`.
    fn answering(&self, name: &str, response: &Value) {
        self.write_response(name, response);
        self.script(
            name,
            r#"cat >> "$0.requests"; echo >> "$0.requests"
printf '%s %s\n' "$*" "$PLUGIN_ENV" >> "$0.argv"
cat "$0.response""#,
        );
    }

    fn write_response(&self, name: &str, response: &Value) {
        std::fs::write(
            self.dir.path(&format!("{name}.response")),
            response.to_string(),
        )
        .unwrap();
    }

    fn script(&self, name: &str, body: &str) {
        let path = self.dir.path(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn runs(&self, name: &str) -> usize {
        std::fs::read_to_string(self.dir.path(&format!("{name}.argv")))
            .unwrap_or_default()
            .lines()
            .count()
    }

    fn cloud(&self, timeout: Duration) -> Cloud {
        Cloud::new(
            CloudSettings {
                plugin_dir: Some(self.path().to_owned()),
                plugin_timeout: timeout,
                ..CloudSettings::default()
            },
            Arc::new(|_, _| {}),
        )
    }
}

fn response(key_type: &str, duration: Option<&str>, auth: Value) -> Value {
    let mut r = json!({"apiVersion": API, "kind": "CredentialProviderResponse",
        "cacheKeyType": key_type, "auth": auth});
    if let Some(d) = duration {
        r["cacheDuration"] = json!(d);
    }
    r
}

/// A policy whose `credentialProviderConfig` holds `providers` (YAML list items, indented).
fn providers_policy(providers: &str) -> Policy {
    let text = format!(
        "credentialProviderConfig:\n  apiVersion: kubelet.config.k8s.io/v1\n  kind: CredentialProviderConfig\n  providers:\n{providers}"
    );
    common::policy(&text)
}

fn provider(name: &str, globs: &str, default: &str) -> String {
    format!("    - name: {name}\n      matchImages: [{globs}]\n      defaultCacheDuration: \"{default}\"\n      apiVersion: {API}\n")
}

fn password(entry: &Value) -> &str {
    entry["password"].as_str().unwrap()
}

#[tokio::test]
async fn a_plugin_is_run_as_the_kubelet_runs_it() {
    let plugins = Plugins::new();
    plugins.answering(
        "example-provider",
        &response(
            "Image",
            None,
            json!({"*.example.com": {"username": "robot", "password": "pw-1"}}),
        ),
    );
    let policy = providers_policy(&format!(
        "{}      args: [--region, eu-west-1]\n      env:\n        - name: PLUGIN_ENV\n          value: from-config\n",
        provider("example-provider", "\"*.example.com\"", "1h")
    ));
    let cloud = plugins.cloud(Duration::from_secs(10));
    let entry = cloud
        .provider_entry(&policy, "registry.example.com/team/app")
        .await
        .unwrap();
    assert_eq!(entry["username"], "robot");
    assert_eq!(password(&entry), "pw-1");
    let request: Value = serde_json::from_str(
        std::fs::read_to_string(plugins.dir.path("example-provider.requests"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(
        request,
        json!({"apiVersion": API, "kind": "CredentialProviderRequest", "image": "registry.example.com/team/app"})
    );
    let argv = std::fs::read_to_string(plugins.dir.path("example-provider.argv")).unwrap();
    assert_eq!(argv.trim(), "--region eu-west-1 from-config");
    // An image the answer's keys do not cover gets nothing from it.
    plugins.answering(
        "other",
        &response(
            "Image",
            None,
            json!({"only.example.org": {"username": "u", "password": "p"}}),
        ),
    );
    let policy = providers_policy(&provider("other", "\"*.example.org\"", "1h"));
    let err = cloud
        .provider_entry(&policy, "else.example.org/app")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no credentials for this image"),
        "{err}"
    );
}

#[tokio::test]
async fn each_cache_key_type_answers_what_the_kubelet_would() {
    let plugins = Plugins::new();
    let auth = json!({"*.example.com": {"username": "u", "password": "p"}});
    let cloud = plugins.cloud(Duration::from_secs(10));
    // (cacheKeyType, cacheDuration, defaultCacheDuration, then images asked and runs after each)
    type Case<'a> = (&'a str, Option<&'a str>, &'a str, &'a [(&'a str, usize)]);
    let cases: &[Case] = &[
        // Image: the same image is answered from the cache; another image of the registry is not.
        (
            "Image",
            Some("1h"),
            "1h",
            &[
                ("a.example.com/app", 1),
                ("a.example.com/app", 1),
                ("a.example.com/other", 2),
            ],
        ),
        // Registry: every image of the registry; another registry is asked.
        (
            "Registry",
            Some("1h"),
            "1h",
            &[
                ("a.example.com/app", 1),
                ("a.example.com/other", 1),
                ("b.example.com/app", 2),
            ],
        ),
        // Global: every image the provider serves.
        (
            "Global",
            Some("1h"),
            "1h",
            &[("a.example.com/app", 1), ("b.example.com/other", 1)],
        ),
        // A cacheDuration of zero is not kept.
        (
            "Global",
            Some("0s"),
            "1h",
            &[("a.example.com/app", 1), ("a.example.com/app", 2)],
        ),
        // No cacheDuration: the provider's defaultCacheDuration (here zero, so not kept).
        (
            "Registry",
            None,
            "0s",
            &[("a.example.com/app", 1), ("a.example.com/app", 2)],
        ),
        (
            "Registry",
            None,
            "10m",
            &[("a.example.com/app", 1), ("a.example.com/app", 1)],
        ),
    ];
    for (i, (kind, duration, default, calls)) in cases.iter().enumerate() {
        let name = format!("p{i}");
        plugins.answering(&name, &response(kind, *duration, auth.clone()));
        let policy = providers_policy(&provider(&name, "\"*.example.com\"", default));
        for (image, runs) in *calls {
            cloud.provider_entry(&policy, image).await.unwrap();
            assert_eq!(
                plugins.runs(&name),
                *runs,
                "{kind} {duration:?}: after {image}"
            );
        }
    }
    // An answer kept for one second is asked for again after it.
    plugins.answering("short", &response("Global", Some("1s"), auth));
    let policy = providers_policy(&provider("short", "\"*.example.com\"", "1h"));
    cloud
        .provider_entry(&policy, "a.example.com/app")
        .await
        .unwrap();
    cloud
        .provider_entry(&policy, "a.example.com/app")
        .await
        .unwrap();
    assert_eq!(plugins.runs("short"), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    cloud
        .provider_entry(&policy, "a.example.com/app")
        .await
        .unwrap();
    assert_eq!(plugins.runs("short"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_plugins_give_clear_errors_and_the_others_still_work() {
    let plugins = Plugins::new();
    plugins.script("hangs", "sleep 30");
    plugins.script("fails", "echo 'cannot reach the token service' >&2; exit 3");
    plugins.script("garbage", "echo 'this is not json'");
    plugins.script(
        "wrong-version",
        r#"echo '{"apiVersion":"credentialprovider.kubelet.k8s.io/v1beta1","kind":"CredentialProviderResponse","cacheKeyType":"Image"}'"#,
    );
    plugins.script(
        "bad-key-type",
        &format!(r#"echo '{{"apiVersion":"{API}","kind":"CredentialProviderResponse","cacheKeyType":"Forever"}}'"#),
    );
    plugins.answering(
        "good",
        &response(
            "Image",
            None,
            json!({"*.example.com": {"username": "u", "password": "good-pw"}}),
        ),
    );
    let cloud = Arc::new(plugins.cloud(Duration::from_secs(1)));
    let cases = [
        ("hangs", "no answer within 1s; stopped"),
        (
            "fails",
            "exited with exit status: 3 (31 bytes on stderr, not shown)",
        ),
        ("garbage", "not JSON"),
        (
            "wrong-version",
            "apiVersion `credentialprovider.kubelet.k8s.io/v1beta1`",
        ),
        ("bad-key-type", "cacheKeyType: Image, Registry or Global"),
        ("missing", "cannot run"),
    ];
    for (name, expected) in cases {
        let policy = providers_policy(&provider(name, "\"*.example.com\"", "1h"));
        let started = Instant::now();
        let err = cloud
            .provider_entry(&policy, "a.example.com/app")
            .await
            .unwrap_err();
        assert!(err.to_string().contains(expected), "{name}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{name} took {:?}",
            started.elapsed()
        );
    }
    // A hanging provider does not hold up another; and after a failing provider the next one
    // serving the same image answers (the kubelet combines providers).
    let hanging = providers_policy(&provider("hangs", "\"*.example.org\"", "1h"));
    let both = providers_policy(&format!(
        "{}{}",
        provider("fails", "\"*.example.com\"", "1h"),
        provider("good", "\"*.example.com\"", "1h")
    ));
    let slow = {
        let cloud = cloud.clone();
        tokio::spawn(async move { cloud.provider_entry(&hanging, "a.example.org/app").await })
    };
    let started = Instant::now();
    let entry = cloud
        .provider_entry(&both, "a.example.com/app")
        .await
        .unwrap();
    assert_eq!(password(&entry), "good-pw");
    assert!(started.elapsed() < Duration::from_millis(900));
    assert!(slow.await.unwrap().is_err());
}

#[test]
fn check_explains_providers_and_refuses_what_the_kubelet_refuses() {
    let text = format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"https://mirror.example.com\"]\ncredentialProviderConfig:\n  apiVersion: kubelet.config.k8s.io/v1\n  kind: CredentialProviderConfig\n  providers:\n{}",
        provider("example-provider", "\"*.example.com\"", "12h")
    );
    let loaded = Policy::load(&text).unwrap();
    let said: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        said.iter().any(|d| d.contains("credential provider example-provider serves images matching *.example.com; of the policy's registries: mirror.example.com")),
        "{said:?}"
    );
    for (providers, expected) in [
        (format!("{}{}", provider("a", "x.io", "1h"), provider("a", "y.io", "1h")), "duplicate provider name `a`"),
        (provider("../a", "x.io", "1h"), "not a plugin file name"),
        (provider("a", "x.io", "forever"), "not a duration"),
        ("    - name: a\n      matchImages: [x.io]\n      defaultCacheDuration: 1h\n".to_owned(), "apiVersion is required"),
        ("    - name: a\n      defaultCacheDuration: 1h\n      apiVersion: credentialprovider.kubelet.k8s.io/v1\n".to_owned(), "at least one matchImages entry"),
    ] {
        let text = format!("credentialProviderConfig:\n  apiVersion: kubelet.config.k8s.io/v1\n  kind: CredentialProviderConfig\n  providers:\n{providers}");
        let err = Policy::load(&text).unwrap_err();
        assert!(err.to_string().contains(expected), "{expected}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_makes_pull_secrets_from_a_plugin_and_never_shows_its_password() {
    const PASSWORD: &str = "plugin-issued-Pa55";
    let plugins = Plugins::new();
    plugins.answering(
        "example-provider",
        &response(
            "Registry",
            Some("1h"),
            json!({"*.example.com": {"username": "robot", "password": PASSWORD}}),
        ),
    );
    let api = FakeApi::start().await;
    let policy_text = format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"https://mirror.example.com\"]\ncredentialProviderConfig:\n  apiVersion: kubelet.config.k8s.io/v1\n  kind: CredentialProviderConfig\n  providers:\n{}",
        provider("example-provider", "\"*.example.com\"", "12h")
    );
    let dir = plugins.path().to_string_lossy().into_owned();
    let s = ApiServe::start(
        &api,
        &policy_text,
        &["--image-credential-provider-bin-dir", &dir],
    )
    .await;
    let (answer, pod) = s.review("shop", "nginx:1.25", false).await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let name = managed_name("mirror.example.com");
    assert_eq!(pod["spec"]["imagePullSecrets"], json!([{"name": name}]));
    let config: Value =
        serde_json::from_str(&api.secret_text("shop", &name, ".dockerconfigjson").unwrap())
            .unwrap();
    let entry = &config["auths"]["mirror.example.com"];
    assert_eq!(
        (entry["username"].as_str(), entry["password"].as_str()),
        (Some("robot"), Some(PASSWORD))
    );
    // The plugin was asked about the repository the Pod pulls, as the kubelet asks.
    let request = std::fs::read_to_string(plugins.dir.path("example-provider.requests")).unwrap();
    assert!(
        request.contains(r#""image":"mirror.example.com/library/nginx""#),
        "{request}"
    );

    // The dry-run names where the credentials come from, never what they are.
    let dry = s.dry_run_pod("shop", "nginx:1.25").await;
    assert!(
        dry.contains("kubelet credential provider example-provider"),
        "{dry}"
    );
    let metrics = s.server.metrics().await;
    assert!(
        metrics.contains(
            r#"image_mirror_credential_fetches_total{source="provider",result="success"} 1"#
        ),
        "{metrics}"
    );
    for text in [&dry, &metrics, &s.logs(), &answer.to_string()] {
        assert!(!text.contains(PASSWORD));
    }
}
