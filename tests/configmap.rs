//! The policy from a ConfigMap, against a fake Kubernetes API on loopback: initial load, updates,
//! refusals, deletion, Events, and `serve` switching policies live. Lost watches and 410 Gone are
//! tested against the real API server (tests/cluster/e2e.py: etcd compacted, the server restarted).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_api::FakeApi;
use image_mirror_webhook::rewrite::decide;
use image_mirror_webhook::server::{AppState, StateConfig};
use image_mirror_webhook::source::configmap;
use image_mirror_webhook::source::NamespacedName;

const NS: &str = "image-mirror";
const NAME: &str = "policy";

fn policy_for(mirror: &str) -> String {
    format!("mirrors:\n  docker.io:\n    endpoint: [\"https://{mirror}\"]\n")
}

fn configmap_data(text: &str) -> Option<BTreeMap<&str, &str>> {
    Some(BTreeMap::from([("policy.yaml", text)]))
}

/// The image nginx decided by the policy in force, or None before one has loaded.
fn current(state: &AppState) -> Option<String> {
    state
        .policy
        .current()
        .and_then(|p| decide(&p, "nginx", None).result)
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

struct Watch {
    api: FakeApi,
    state: Arc<AppState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(initial: Option<&str>) -> Watch {
    let api = FakeApi::start().await;
    if let Some(text) = initial {
        api.put_configmap(NS, NAME, configmap_data(text));
    }
    let state = Arc::new(AppState::build(StateConfig::new(1 << 20)));
    let target = NamespacedName {
        namespace: NS.into(),
        name: NAME.into(),
    };
    let task = tokio::spawn(configmap::watch(
        api.client(),
        target,
        state.policy.clone(),
        None,
    ));
    Watch { api, state, task }
}

fn metric(state: &AppState, name: &str) -> f64 {
    state
        .metrics
        .encode()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn loads_updates_and_refuses_bad_changes() {
    let w = start(Some(&policy_for("one.example.com"))).await;
    eventually("the initial policy", || {
        current(&w.state).as_deref() == Some("one.example.com/library/nginx")
    })
    .await;
    assert_eq!(w.state.not_ready(), None);
    eventually("a PolicyLoaded event", || {
        w.api.events().iter().any(|(r, _)| r == "PolicyLoaded")
    })
    .await;

    w.api
        .put_configmap(NS, NAME, configmap_data(&policy_for("two.example.com")));
    eventually("the update", || {
        current(&w.state).as_deref() == Some("two.example.com/library/nginx")
    })
    .await;

    // Refused: the old policy keeps answering, the reason goes to the log, a metric and an Event.
    w.api.put_configmap(
        NS,
        NAME,
        configmap_data("mirrors:\n  docker.io:\n    endpiont: []\n"),
    );
    eventually("a PolicyRejected event", || {
        w.api.events().iter().any(|(r, _)| r == "PolicyRejected")
    })
    .await;
    let (_, note) = w
        .api
        .events()
        .into_iter()
        .find(|(r, _)| r == "PolicyRejected")
        .unwrap();
    assert!(note.contains("3:5") && note.contains("endpiont"), "{note}");
    assert_eq!(
        current(&w.state).as_deref(),
        Some("two.example.com/library/nginx")
    );
    assert_eq!(
        metric(
            &w.state,
            "image_mirror_policy_reloads_total{result=\"failure\"}"
        ),
        1.0
    );
    assert_eq!(w.state.not_ready(), None);

    // A missing key and a deletion keep it too.
    w.api
        .put_configmap(NS, NAME, Some(BTreeMap::from([("other.yaml", "x")])));
    eventually("a PolicyMissing event", || {
        w.api.events().iter().any(|(r, _)| r == "PolicyMissing")
    })
    .await;
    w.api.delete_configmap(NS, NAME);
    eventually("a PolicyDeleted event", || {
        w.api.events().iter().any(|(r, _)| r == "PolicyDeleted")
    })
    .await;
    assert_eq!(
        current(&w.state).as_deref(),
        Some("two.example.com/library/nginx")
    );
    assert_eq!(
        metric(
            &w.state,
            "image_mirror_policy_reloads_total{result=\"failure\"}"
        ),
        3.0
    );

    // Back again: loaded.
    w.api
        .put_configmap(NS, NAME, configmap_data(&policy_for("three.example.com")));
    eventually("the recreated policy", || {
        current(&w.state).as_deref() == Some("three.example.com/library/nginx")
    })
    .await;
}

#[tokio::test]
async fn not_ready_until_the_configmap_exists() {
    let w = start(None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.state.not_ready(), Some("no policy loaded"));
    w.api
        .put_configmap(NS, NAME, configmap_data(&policy_for("late.example.com")));
    eventually("the late policy", || {
        current(&w.state).as_deref() == Some("late.example.com/library/nginx")
    })
    .await;
    assert_eq!(w.state.not_ready(), None);
}

#[tokio::test]
async fn events_are_best_effort() {
    let api = FakeApi::start().await;
    api.deny_events(true);
    api.put_configmap(NS, NAME, configmap_data(&policy_for("one.example.com")));
    let state = Arc::new(AppState::build(StateConfig::new(1 << 20)));
    let target = NamespacedName {
        namespace: NS.into(),
        name: NAME.into(),
    };
    let task = tokio::spawn(configmap::watch(
        api.client(),
        target,
        state.policy.clone(),
        None,
    ));
    eventually("the policy without Events", || current(&state).is_some()).await;
    api.put_configmap(NS, NAME, configmap_data(&policy_for("two.example.com")));
    eventually("the update without Events", || {
        current(&state).as_deref() == Some("two.example.com/library/nginx")
    })
    .await;
    assert!(api.events().is_empty());
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_switches_policies_live_without_a_failed_review() {
    use common::TempDir;
    use serde_json::{json, Value};
    let api = FakeApi::start().await;
    api.put_configmap(NS, NAME, configmap_data(&policy_for("one.example.com")));
    let dir = TempDir::new("configmap-serve");
    let kubeconfig = api.kubeconfig(&dir.0);
    let target = format!("{NS}/{NAME}");
    let server = common::Server::start(common::Options {
        policy: None,
        extra: &["--policy-configmap", &target],
        kubeconfig: Some(&kubeconfig),
        ..common::Options::default()
    });
    server.wait_ready().await;
    let client = server.client();
    let pod = json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
    let review = common::create_review("u", "shop", &pod, false);
    let image_of = |answer: &Value| -> Option<String> {
        let patch = common::decode_patch(answer)?;
        let mut pod = pod.clone();
        json_patch::patch(&mut pod, &patch).ok()?;
        pod["spec"]["containers"][0]["image"]
            .as_str()
            .map(str::to_owned)
    };

    let mut changed_at = None;
    let mut switched_after = None;
    let started = Instant::now();
    let mut sent = 0;
    while switched_after.is_none() && started.elapsed() < Duration::from_secs(15) {
        let answer = common::post_json(&client, &server.url("/mutate"), &review).await;
        assert_eq!(answer["response"]["allowed"], true);
        let image = image_of(&answer).expect("every review is answered with a rewrite");
        sent += 1;
        match (changed_at, image.as_str()) {
            (None, "one.example.com/library/nginx") if sent == 20 => {
                api.put_configmap(NS, NAME, configmap_data(&policy_for("two.example.com")));
                changed_at = Some(Instant::now());
            }
            (_, "one.example.com/library/nginx") => {}
            (Some(t), "two.example.com/library/nginx") => switched_after = Some(t.elapsed()),
            (_, other) => panic!("unexpected image {other}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = switched_after.expect("answers never switched to the new policy");
    assert!(took < Duration::from_secs(2), "switched after {took:?}");
}
