//! `audit` against the fake Kubernetes API and a fake registry: a cluster of a few hundred
//! objects of every kind, listed in pages (a continue token that expires, a kind that is
//! forbidden), exact counts and per-image results, one manifest request per image and endpoint
//! with --verify, every output format, and the exit codes a CI job reads.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Output};

use common::fake_api::FakeApi;
use common::fake_registry::FakeRegistry;
use common::TempDir;
use serde_json::{json, Value};

const KINDS: &[(&str, &str)] = &[
    ("Pod", "v1"),
    ("Deployment", "apps/v1"),
    ("StatefulSet", "apps/v1"),
    ("DaemonSet", "apps/v1"),
    ("ReplicaSet", "apps/v1"),
    ("ReplicationController", "v1"),
    ("Job", "batch/v1"),
    ("CronJob", "batch/v1"),
];
/// The images workloads use, in turn: four from Docker Hub (the mirror has all but busybox), one
/// from quay.io (no mirror), one excluded by `exclude.images`.
const IMAGES: &[&str] = &[
    "nginx:1.25",
    "nginx:1.26",
    "redis:7",
    "busybox:1.36",
    "quay.io/prom/prometheus:v2.0.0",
    "quay.io/excluded/tool:1",
];
const INVALID: &str = "nginx:@@";
const PER_KIND: usize = 40;
const NAMESPACES: &[&str] = &["a", "b", "c", "d"];

/// A workload of `kind` whose pod template runs `images` (the first as a container, the rest as
/// init containers), where each kind keeps its template.
fn workload(
    kind: &str,
    api_version: &str,
    ns: &str,
    name: &str,
    images: &[&str],
    owner: Option<&str>,
) -> Value {
    let containers: Vec<Value> = images[..1]
        .iter()
        .map(|i| json!({"name": "main", "image": i}))
        .collect();
    let inits: Vec<Value> = images[1..]
        .iter()
        .enumerate()
        .map(|(n, i)| json!({"name": format!("init{n}"), "image": i}))
        .collect();
    let spec = json!({"containers": containers, "initContainers": inits});
    let template = json!({"metadata": {"labels": {"app": name}}, "spec": spec});
    let mut o = json!({"apiVersion": api_version, "kind": kind,
        "metadata": {"name": name, "namespace": ns, "labels": {"team": if name.ends_with('0') { "zero" } else { "other" }}}});
    match kind {
        "Pod" => o["spec"] = spec,
        "CronJob" => {
            o["spec"] =
                json!({"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}})
        }
        _ => o["spec"] = json!({"template": template}),
    }
    if let Some(owner) = owner {
        o["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": owner, "name": "x", "uid": "1", "controller": true}]);
    }
    o
}

/// The fixture cluster; returns what an audit must find, computed from how it was built.
struct Expected {
    workloads: usize,
    /// Workloads per image (as audited outside kube-system).
    users: BTreeMap<&'static str, usize>,
    excluded_ns_users: usize,
}

fn fill(api: &FakeApi) -> Expected {
    let mut users: BTreeMap<&str, usize> = BTreeMap::new();
    let mut workloads = 0;
    for (kind, version) in KINDS {
        for i in 0..PER_KIND {
            let image = IMAGES[i % IMAGES.len()];
            let mut images = vec![image];
            if i % 10 == 0 {
                images.push(INVALID);
            }
            for im in &images {
                *users.entry(im).or_default() += 1;
            }
            api.put_workload(workload(
                kind,
                version,
                NAMESPACES[i % 4],
                &format!("{}-{i}", kind.to_lowercase()),
                &images,
                None,
            ));
            workloads += 1;
        }
        // kube-system is excluded: its nginx:1.25 is left alone there.
        for i in 0..2 {
            api.put_workload(workload(
                kind,
                version,
                "kube-system",
                &format!("sys-{}-{i}", kind.to_lowercase()),
                &["nginx:1.25"],
                None,
            ));
            workloads += 1;
        }
    }
    // Objects whose controller's template is audited already: never counted, their image never seen.
    for (kind, version, owner) in [
        ("ReplicaSet", "apps/v1", "Deployment"),
        ("Job", "batch/v1", "CronJob"),
        ("Pod", "v1", "ReplicaSet"),
        ("Pod", "v1", "ReplicationController"),
    ] {
        for i in 0..10 {
            api.put_workload(workload(
                kind,
                version,
                "a",
                &format!("owned-{}-{i}", kind.to_lowercase()),
                &["alpine:owned"],
                Some(owner),
            ));
        }
    }
    Expected {
        workloads,
        users,
        excluded_ns_users: KINDS.len() * 2,
    }
}

fn policy_text(registry: &FakeRegistry) -> String {
    format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"http://{}\"]\nexclude:\n  namespaces: [kube-system]\n  images: ['^quay\\.io/excluded/']\n",
        registry.host()
    )
}

struct Run {
    _dir: TempDir,
    kubeconfig: std::path::PathBuf,
    policy: std::path::PathBuf,
}

impl Run {
    fn new(api: &FakeApi, policy: &str) -> Run {
        let dir = TempDir::new("audit");
        let kubeconfig = api.kubeconfig(&dir.0);
        let path = dir.path("policy.yaml");
        std::fs::write(&path, policy).unwrap();
        Run {
            _dir: dir,
            kubeconfig,
            policy: path,
        }
    }

    /// Runs `audit --policy-file` with `args`, off the test's runtime (it blocks).
    async fn audit(&self, args: &[&str]) -> Output {
        let policy = self.policy.to_string_lossy().into_owned();
        let mut all = vec!["--policy-file", &policy];
        all.extend_from_slice(args);
        self.audit_with(&all).await
    }

    /// Runs `audit` with `args` only.
    async fn audit_with(&self, args: &[&str]) -> Output {
        self.audit_in(args, &[("KUBECONFIG", self.kubeconfig.as_os_str())])
            .await
    }

    /// Runs `audit` with `args` and `env`, never in-cluster.
    async fn audit_in(&self, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Output {
        self.command("audit", args, env).await
    }

    /// Runs `command` with `args` and `env`, never in-cluster.
    async fn command(
        &self,
        command: &str,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_image-mirror-webhook"));
        cmd.arg(command)
            .args(args)
            .envs(env.iter().copied())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(std::process::Stdio::null());
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }

    async fn json(&self, args: &[&str]) -> (Value, Output) {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let out = self.audit(&all).await;
        let report = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (report, out)
    }
}

fn image<'a>(report: &'a Value, image: &str, status: &str) -> &'a Value {
    report["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image"] == image && i["status"] == status)
        .unwrap_or_else(|| panic!("{image} ({status}) not in {report:#}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_counts_every_kind_exactly_across_pages_and_a_relist() {
    let api = FakeApi::start().await;
    let registry = FakeRegistry::start().await;
    let expected = fill(&api);
    let run = Run::new(&api, &policy_text(&registry));
    // Small pages, and the Deployments' continue token expires once mid-list.
    api.expire_next_continue("deployments");
    let (report, out) = run.json(&["--page-size", "7"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["errors"], json!([]));
    let totals = &report["totals"];
    assert_eq!(totals["workloads"], expected.workloads);
    // Six images, the invalid one, and nginx:1.25 a second time as kube-system has it (excluded).
    assert_eq!(totals["images"], IMAGES.len() + 2);
    assert_eq!(totals["wouldChange"], 4);
    assert_eq!(totals["invalid"], 1);
    assert_eq!(totals["excluded"], 2);
    assert_eq!(totals["missing"], 0, "not checked without --verify");
    for (im, status) in [
        ("nginx:1.25", "change"),
        ("nginx:1.26", "change"),
        ("redis:7", "change"),
        ("busybox:1.36", "change"),
        ("quay.io/prom/prometheus:v2.0.0", "unchanged"),
        ("quay.io/excluded/tool:1", "excluded"),
        (INVALID, "invalid"),
    ] {
        let entry = image(&report, im, status);
        assert_eq!(
            entry["workloads"].as_array().unwrap().len(),
            expected.users[im],
            "{im}"
        );
    }
    let nginx = image(&report, "nginx:1.25", "change");
    assert_eq!(
        nginx["result"],
        format!("{}/library/nginx:1.25", registry.host())
    );
    assert_eq!(nginx["rule"], "mirrors[docker.io].endpoint[0]");
    assert!(nginx["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w == "CronJob/a/cronjob-0"));
    let sys = image(&report, "nginx:1.25", "excluded");
    assert_eq!(
        sys["workloads"].as_array().unwrap().len(),
        expected.excluded_ns_users
    );
    assert!(image(&report, INVALID, "invalid")["error"].is_string());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("alpine:owned"));

    let summary: Vec<(String, String, u64, u64, u64)> = report["summary"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["source"].as_str().unwrap().to_owned(),
                r["mirror"].as_str().unwrap().to_owned(),
                r["images"].as_u64().unwrap(),
                r["wouldChange"].as_u64().unwrap(),
                r["excluded"].as_u64().unwrap(),
            )
        })
        .collect();
    let hub_users: usize = ["nginx:1.25", "nginx:1.26", "redis:7", "busybox:1.36"]
        .iter()
        .map(|i| expected.users[i])
        .sum();
    assert_eq!(
        summary,
        vec![
            ("(invalid)".into(), "-".into(), 1, 0, 0),
            ("docker.io".into(), "-".into(), 1, 0, 1),
            ("docker.io".into(), registry.host(), 4, 4, 0),
            ("quay.io".into(), "-".into(), 2, 0, 1),
        ]
    );
    let hub = report["summary"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["mirror"] == registry.host())
        .unwrap();
    // Every workload using a Docker Hub image uses exactly one of them.
    assert_eq!(hub["workloads"], hub_users);

    // Every list asked for pages of 7; the Deployments were listed again from the start.
    let lists = api.workload_lists();
    assert!(lists
        .iter()
        .all(|(_, limit, _)| limit.as_deref() == Some("7")));
    let deployment_starts = lists
        .iter()
        .filter(|(p, _, t)| p == "deployments" && t.is_none())
        .count();
    assert_eq!(deployment_starts, 2, "relisted once after the 410");
    let pages = lists.iter().filter(|(p, _, _)| p == "pods").count();
    assert_eq!(pages, (PER_KIND + 2 + 10).div_ceil(7));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forbidden_kind_is_reported_and_the_rest_audited() {
    let api = FakeApi::start().await;
    let registry = FakeRegistry::start().await;
    let expected = fill(&api);
    api.forbid("statefulsets");
    let run = Run::new(&api, &policy_text(&registry));
    let (report, out) = run.json(&[]).await;
    assert_eq!(out.status.code(), Some(1), "a partial audit is no pass");
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .as_str()
            .unwrap()
            .contains("cannot list statefulsets: Forbidden (403)"),
        "{errors:?}"
    );
    assert_eq!(
        report["totals"]["workloads"],
        expected.workloads - PER_KIND - 2
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 kind(s) could not be listed"));
}

/// Where the cluster is: one clear line without any configuration, `--context` picks a context
/// of the kubeconfig, and a server that cannot be reached is named in the errors.
#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_is_named_and_chosen() {
    let api = FakeApi::start().await;
    let registry = FakeRegistry::start().await;
    fill(&api);
    let run = Run::new(&api, &policy_text(&registry));
    let dead = format!("https://127.0.0.1:{}", common::free_port());
    let text = std::fs::read_to_string(&run.kubeconfig)
        .unwrap()
        .replace(
            "current-context: fake\n",
            "- name: dead\n  context:\n    cluster: dead\n    user: u\ncurrent-context: dead\n",
        )
        .replace(
            "users:\n",
            &format!("- name: dead\n  cluster:\n    server: {dead}\nusers:\n"),
        );
    std::fs::write(&run.kubeconfig, text).unwrap();

    let out = run.audit(&["-o", "json"]).await;
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["errors"]
            .to_string()
            .contains(&format!("(API server {dead}/)")),
        "{report}"
    );
    let (report, out) = run.json(&["--context", "fake"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["errors"], json!([]));

    let home = TempDir::new("audit-home");
    let policy_path = run.policy.to_string_lossy().into_owned();
    let none = home.path("none");
    let out = run
        .audit_in(
            &["--policy-file", &policy_path],
            &[
                ("KUBECONFIG", none.as_os_str()),
                ("HOME", home.0.as_os_str()),
            ],
        )
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("no Kubernetes configuration"), "{err}");
}

/// A server that answers every page with the same continue token would keep `audit` listing for
/// ever: the repeated token is an error for that kind, and the others are audited.
#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_continue_token_ends_the_listing() {
    let api = FakeApi::start().await;
    let registry = FakeRegistry::start().await;
    fill(&api);
    api.list_endlessly("jobs");
    let run = Run::new(&api, &policy_text(&registry));
    let started = std::time::Instant::now();
    let (report, out) = run.json(&["--page-size", "2"]).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1));
    let errors = report["errors"].to_string();
    assert!(
        errors.contains("cannot list jobs: the server repeated a continue token"),
        "{errors}"
    );
    let jobs = api
        .workload_lists()
        .iter()
        .filter(|(plural, _, _)| plural == "jobs")
        .count();
    assert_eq!(
        jobs, 2,
        "the first page and the one that repeated its token"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_asks_each_mirror_once_per_image_and_fails_on_missing() {
    let api = FakeApi::start().await;
    let registry = FakeRegistry::start().await;
    for repo in ["library/nginx", "library/redis"] {
        registry.add(repo);
    }
    fill(&api);
    let run = Run::new(&api, &policy_text(&registry));
    let (report, out) = run.json(&["--verify", "--concurrency", "3"]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "busybox is missing in the mirror"
    );
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("1 image(s) would be rewritten to a mirror that lacks them"));
    assert_eq!(report["verified"], true);
    assert_eq!(report["totals"]["missing"], 1);
    let busybox = image(&report, "busybox:1.36", "change");
    assert_eq!(busybox["mirror"]["result"], "missing");
    assert_eq!(busybox["mirror"]["tried"][0]["reason"], "not found");
    assert_eq!(
        image(&report, "nginx:1.26", "change")["mirror"]["result"],
        "present"
    );
    // One manifest request per distinct image and endpoint: two nginx tags, one redis, one busybox;
    // nothing for images that stay or are excluded.
    assert_eq!(registry.heads("library/nginx"), 2);
    assert_eq!(registry.heads("library/redis"), 1);
    assert_eq!(registry.heads("library/busybox"), 1);
    assert_eq!(
        registry.heads("prom/prometheus") + registry.heads("excluded/tool"),
        0
    );

    // Fail on what the CI job asks for.
    let (_, out) = run.json(&["--fail-on", "invalid"]).await;
    assert_eq!(out.status.code(), Some(1));
    let (_, out) = run
        .json(&["--fail-on", "missing", "-n", "b", "-l", "team=other"])
        .await;
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn scope_narrows_to_a_namespace_and_labels() {
    let api = FakeApi::start().await;
    let registry = FakeRegistry::start().await;
    fill(&api);
    let run = Run::new(&api, &policy_text(&registry));
    let (report, _) = run.json(&["-n", "a", "-l", "team=zero"]).await;
    // In namespace a (i % 4 == 0), labelled zero (i ends in 0): i = 0, 20 per kind.
    assert_eq!(report["totals"]["workloads"], KINDS.len() * 2);
    // The scope is the API server's to apply: one page per kind, no continue token needed.
    let lists = api.workload_lists();
    assert_eq!(lists.len(), KINDS.len(), "{lists:?}");
    assert!(lists.iter().all(|(_, _, token)| token.is_none()));
}

#[tokio::test(flavor = "multi_thread")]
async fn markdown_table_and_yaml_outputs_hold_the_same_report() {
    let api = FakeApi::start().await;
    let registry = FakeRegistry::start().await;
    registry.add("library/nginx");
    fill(&api);
    let run = Run::new(&api, &policy_text(&registry));
    let md = String::from_utf8(run.audit(&["-o", "markdown", "--verify"]).await.stdout).unwrap();
    // Every table: a header row, a separator row of --- cells, rows with as many cells, each line
    // opening and closing with a pipe (what a Markdown renderer needs to draw it as a table).
    let tables: Vec<Vec<&str>> = md
        .split("\n\n")
        .map(|block| {
            block
                .lines()
                .filter(|l| l.starts_with('|'))
                .collect::<Vec<_>>()
        })
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(tables.len(), 2, "{md}");
    let cells = |line: &str| -> usize {
        assert!(line.starts_with("| ") && line.ends_with(" |"), "{line}");
        // Pipes escaped inside cells do not split them.
        line.replace("\\|", "").matches('|').count() - 1
    };
    for table in &tables {
        let width = cells(table[0]);
        assert!(
            table[1]
                .split('|')
                .filter(|c| !c.is_empty())
                .all(|c| c.trim() == "---"),
            "{}",
            table[1]
        );
        assert!(table.iter().all(|l| cells(l) == width), "{table:#?}");
    }
    assert_eq!(
        tables[0][0],
        "| source | mirror | images | workloads | would change | missing | invalid | excluded |"
    );
    assert!(
        tables[1]
            .iter()
            .any(|l| l.starts_with("| busybox:1.36 | change |") && l.contains("| missing |")),
        "{md}"
    );
    // Only nginx is in the mirror: redis and busybox are missing.
    assert!(
        md.contains("**4 would change**, **2 missing in their mirror**"),
        "{md}"
    );

    let table = String::from_utf8(run.audit(&["-o", "table"]).await.stdout).unwrap();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("SOURCE") && l.contains("WOULD CHANGE")),
        "{table}"
    );
    assert!(table.contains("not checked: --verify"));
    let yaml = String::from_utf8(run.audit(&["-o", "yaml"]).await.stdout).unwrap();
    let (json_report, _) = run.json(&[]).await;
    let from_yaml = image_mirror_webhook::yaml::parse_single(&yaml)
        .unwrap()
        .to_json();
    assert_eq!(from_yaml["totals"], json_report["totals"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_can_be_the_webhooks_own_configmap() {
    let api = FakeApi::start().await;
    let registry = FakeRegistry::start().await;
    let expected = fill(&api);
    let text = policy_text(&registry);
    api.put_configmap(
        "imw",
        "imw-policy",
        Some([("policy.yaml", text.as_str())].into()),
    );
    let run = Run::new(&api, "unused: true\n");
    let out = run
        .audit_with(&["--policy-configmap", "imw/imw-policy", "-o", "json"])
        .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["policy"]
        .as_str()
        .unwrap()
        .starts_with("ConfigMap imw/imw-policy (hash "));
    assert_eq!(report["totals"]["workloads"], expected.workloads);
    assert_eq!(report["totals"]["wouldChange"], 4);
    let out = run.audit_with(&["--policy-configmap", "imw/nope"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read ConfigMap imw/nope"));
}

/// `check` and `dry-run` take the policy from the same flags as `audit` and `serve`.
#[tokio::test(flavor = "multi_thread")]
async fn check_and_dry_run_read_the_policy_configmap() {
    let api = FakeApi::start().await;
    let policy = "mirrors:\n  docker.io:\n    endpoint: [\"https://mirror.example.com\"]\n";
    api.put_configmap("imw", "imw-policy", Some([("policy.yaml", policy)].into()));
    api.put_configmap(
        "imw",
        "bad",
        Some([("policy.yaml", "mirrors: [x]\n")].into()),
    );
    let run = Run::new(&api, "unused: true\n");
    let env = [("KUBECONFIG", run.kubeconfig.as_os_str())];
    let cm = ["--policy-configmap", "imw/imw-policy"];
    let out = run.command("check", &cm, &env).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("ConfigMap imw/imw-policy: valid policy"),
        "{stdout}"
    );
    let out = run
        .command("check", &["--policy-configmap", "imw/bad"], &env)
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("ConfigMap imw/bad:1:10: error"), "{stdout}");
    let out = run
        .command("dry-run", &[&cm[..], &["--image", "nginx"]].concat(), &env)
        .await;
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(
        report["results"][0]["decisions"][0]["result"],
        "mirror.example.com/library/nginx"
    );
    // A policy file and a ConfigMap at once is a usage error.
    let out = run
        .command(
            "check",
            &[&cm[..], &["--policy-file", "x.yaml"]].concat(),
            &env,
        )
        .await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_usage_exits_2_and_a_bad_policy_1() {
    let api = FakeApi::start().await;
    let run = Run::new(&api, "mirrors: [not, a, map]\n");
    let out = run.audit(&["--fail-on", "sometimes"]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = run.audit(&[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a valid policy"));
}

#[tokio::test(flavor = "multi_thread")]
async fn images_admission_would_refuse_are_counted_and_can_fail_the_audit() {
    let api = FakeApi::start().await;
    api.put_workload(workload(
        "Deployment",
        "apps/v1",
        "a",
        "ubi",
        &["registry.redhat.io/ubi9/ubi:9.4", "nginx:1.27"],
        None,
    ));
    let policy = "imageMirrorSets:\n  - apiVersion: config.openshift.io/v1\n    kind: ImageDigestMirrorSet\n    metadata: {name: release}\n    spec:\n      imageDigestMirrors:\n        - source: registry.redhat.io/ubi9\n          mirrors: [mirror.example.com/ubi9]\n          mirrorSourcePolicy: NeverContactSource\n";
    let run = Run::new(&api, policy);
    let (report, out) = run.json(&[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["totals"]["refused"], 1, "{report}");
    let refused = image(&report, "registry.redhat.io/ubi9/ubi:9.4", "refused");
    assert_eq!(refused["denied"], true);
    assert!(refused["reason"]
        .as_str()
        .unwrap()
        .contains("ImageDigestMirrorSet/release"));
    let out = run.audit(&["-o", "json", "--fail-on", "refused"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 image(s) would be refused at admission")
    );
}
