//! Serverless runtimes: which profile recognises a pod (KCI, ECI, a user's), the annotations each
//! gets, how they merge with the pod's own, and what `check` says about profiles.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use image_mirror_webhook::dryrun::{self, Options};
use image_mirror_webhook::mutate::{Mutation, Operation};
use image_mirror_webhook::policy::{Policy, Severity};
use serde_json::{json, Value};

const MIRRORS: &str = "mirrors:\n  docker.io:\n    endpoint: [\"http://192.168.1.5:5000\"]\nconfigs:\n  harbor.example.com:\n    tls: {insecure_skip_verify: true}\n";
const ECI_HTTP: &str = "k8s.aliyun.com/plain-http-registry";
const ECI_INSECURE: &str = "k8s.aliyun.com/insecure-registry";
const KCI_HTTP: &str = "k8s.ksyun.com/kci-http-registry";

fn policy(extra: &str) -> Policy {
    common::policy(&format!("{MIRRORS}{extra}"))
}

/// A pod pulling from the plain-HTTP mirror and the insecure registry, with `meta` and `spec` merged in.
fn pod(meta: Value, spec: Value) -> Value {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}, {"name": "app", "image": "harbor.example.com/app:1"}]}});
    for (k, v) in meta.as_object().unwrap() {
        pod["metadata"][k] = v.clone();
    }
    for (k, v) in spec.as_object().unwrap() {
        pod["spec"][k] = v.clone();
    }
    pod
}

fn decide(p: &Policy, pod: &Value, op: Operation) -> Mutation {
    dryrun::plan(p, pod, None, &op, Options::default()).unwrap()
}

fn profiles(m: &Mutation) -> Vec<String> {
    m.serverless.iter().map(|s| s.profile.clone()).collect()
}

fn selector() -> Value {
    json!({"type": "virtual-kubelet"})
}

fn toleration(key: &str) -> Value {
    json!([{"key": key, "operator": "Exists"}])
}

fn affinity() -> Value {
    json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "type", "operator": "In", "values": ["virtual-kubelet"]}]}]}}})
}

#[test]
fn eci_recognises_its_pods_in_every_documented_form() {
    let eci_only = policy("kci: {enabled: never}\neci: {enabled: auto}\n");
    let vk = "virtual-kubelet.io/provider";
    let cases = [
        (
            "the label",
            json!({"labels": {"alibabacloud.com/eci": "true"}}),
            json!({}),
            Some("pod label alibabacloud.com/eci=true"),
        ),
        (
            "nodeSelector and toleration",
            json!({}),
            json!({"nodeSelector": selector(), "tolerations": toleration(vk)}),
            Some("node selector type=virtual-kubelet with toleration virtual-kubelet.io/provider"),
        ),
        (
            "affinity and toleration",
            json!({}),
            json!({"affinity": affinity(), "tolerations": toleration(vk)}),
            Some("node selector type=virtual-kubelet with toleration virtual-kubelet.io/provider"),
        ),
        (
            "nodeSelector alone",
            json!({}),
            json!({"nodeSelector": selector()}),
            None,
        ),
        (
            "toleration alone",
            json!({}),
            json!({"tolerations": toleration(vk)}),
            None,
        ),
        (
            "the label, false",
            json!({"labels": {"alibabacloud.com/eci": "false"}}),
            json!({}),
            None,
        ),
        ("nothing", json!({}), json!({}), None),
    ];
    for (what, meta, spec, want) in cases {
        let m = decide(&eci_only, &pod(meta, spec), Operation::Create);
        match want {
            Some(reason) => {
                assert_eq!(profiles(&m), ["eci"], "{what}");
                assert_eq!(m.serverless[0].reason, reason, "{what}");
                assert_eq!(
                    m.annotations.get(ECI_HTTP).map(String::as_str),
                    Some("192.168.1.5:5000"),
                    "{what}"
                );
                assert_eq!(
                    m.annotations.get(ECI_INSECURE).map(String::as_str),
                    Some("harbor.example.com"),
                    "{what}"
                );
            }
            None => {
                assert!(m.serverless.is_empty(), "{what}: {:?}", m.serverless);
                assert!(!m.annotations.contains_key(ECI_HTTP), "{what}");
            }
        }
    }
}

#[test]
fn always_and_never_and_the_default() {
    let plain = pod(json!({}), json!({}));
    let always = decide(
        &policy("eci: {enabled: always}\n"),
        &plain,
        Operation::Create,
    );
    assert!(profiles(&always).contains(&"eci".to_owned()));
    assert_eq!(
        always
            .serverless
            .iter()
            .find(|s| s.profile == "eci")
            .unwrap()
            .reason,
        "enabled: always"
    );
    let labelled = pod(
        json!({"labels": {"alibabacloud.com/eci": "true"}}),
        json!({}),
    );
    let never = decide(
        &policy("eci: {enabled: false}\n"),
        &labelled,
        Operation::Create,
    );
    assert!(never.serverless.is_empty());
    // ECI is opt-in: a policy without `eci` leaves ECI pods alone, as it did before ECI existed.
    assert!(decide(&policy(""), &labelled, Operation::Create)
        .serverless
        .is_empty());
}

#[test]
fn annotations_merge_with_the_pods_own_and_its_own_values_win() {
    let p = policy("kci: {enabled: never, hostAliases: [{ip: 10.0.0.1, hostnames: [r.local]}]}\neci: {enabled: auto}\n");
    let own = pod(
        json!({"labels": {"alibabacloud.com/eci": "true"},
               "annotations": {ECI_HTTP: "registry.internal:5000, 192.168.1.5:5000", ECI_INSECURE: "other.example.com"}}),
        json!({}),
    );
    let m = decide(&p, &own, Operation::Create);
    // Already listed: nothing to add to the first; the second gets the registry appended.
    assert!(!m.annotations.contains_key(ECI_HTTP), "{:?}", m.annotations);
    assert_eq!(
        m.annotations[ECI_INSECURE],
        "other.example.com,harbor.example.com"
    );
    // A second pass over the admitted pod changes nothing.
    let mut after = own.clone();
    json_patch::patch(&mut after, &m.patch).unwrap();
    assert!(decide(&p, &after, Operation::Create).patch.0.is_empty());
}

#[test]
fn updates_leave_annotations_alone() {
    let p = policy("eci: {enabled: auto}\n");
    let labelled = pod(
        json!({"labels": {"alibabacloud.com/eci": "true"}}),
        json!({}),
    );
    let m = decide(&p, &labelled, Operation::Update);
    assert!(m.annotations.is_empty(), "{:?}", m.annotations);
    assert!(m
        .patch
        .0
        .iter()
        .all(|op| !serde_json::to_string(op).unwrap().contains("annotations")));
}

#[test]
fn kci_and_eci_both_on_never_both_annotate_a_pod() {
    let both = policy("kci: {enabled: auto}\neci: {enabled: auto}\n");
    let cases = [
        (
            "only the node selector",
            json!({"nodeSelector": selector()}),
            vec![],
        ),
        (
            "selector and KCI's toleration",
            json!({"nodeSelector": selector(), "tolerations": toleration("rbkci-virtual-kubelet.io/provider")}),
            vec!["kci"],
        ),
        (
            "selector and ECI's toleration",
            json!({"nodeSelector": selector(), "tolerations": toleration("virtual-kubelet.io/provider")}),
            vec!["eci"],
        ),
    ];
    for (what, spec, want) in cases {
        let m = decide(&both, &pod(json!({}), spec), Operation::Create);
        assert_eq!(profiles(&m), want, "{what}");
        assert_eq!(
            m.annotations.contains_key(KCI_HTTP),
            want == ["kci"],
            "{what}"
        );
        assert_eq!(
            m.annotations.contains_key(ECI_HTTP),
            want == ["eci"],
            "{what}"
        );
    }
    let m = decide(
        &both,
        &pod(
            json!({"labels": {"alibabacloud.com/eci": "true"}}),
            json!({"nodeSelector": selector()}),
        ),
        Operation::Create,
    );
    assert_eq!(profiles(&m), ["eci"], "ECI's label claims the pod");
    // KCI alone keeps today's meaning: the node selector is enough.
    let m = decide(
        &policy(""),
        &pod(json!({}), json!({"nodeSelector": selector()})),
        Operation::Create,
    );
    assert_eq!(profiles(&m), ["kci"]);
}

#[test]
fn check_says_when_both_are_on() {
    let both = Policy::load(&format!(
        "{MIRRORS}kci: {{enabled: auto}}\neci: {{enabled: auto}}\n"
    ))
    .unwrap();
    let note = both
        .diagnostics
        .iter()
        .find(|d| d.severity == Severity::Note && d.message.contains("matched by neither"))
        .unwrap_or_else(|| panic!("{:?}", both.diagnostics));
    assert!(
        note.message.starts_with("kci and eci are both on"),
        "{}",
        note.message
    );
    let one = Policy::load(&format!(
        "{MIRRORS}eci: {{enabled: auto}}\nkci: {{enabled: never}}\n"
    ))
    .unwrap();
    assert!(!one
        .diagnostics
        .iter()
        .any(|d| d.message.contains("matched by neither")));
}

#[test]
fn a_profile_of_ones_own_round_trips() {
    let p = policy(
        "kci: {enabled: never}\nserverlessProfiles:\n  - name: acme\n    match:\n      nodeSelector: {acme.io/virtual: \"yes\"}\n      tolerations: [acme.io/provider]\n    annotations: {plainHttp: acme.io/http, insecure: acme.io/insecure, separator: \";\", dnsConfig: acme.io/dns}\n    dnsConfig: {nameservers: [10.0.0.10]}\n",
    );
    let own = pod(
        json!({"annotations": {"acme.io/http": "a.local:5000", "acme.io/dns": "{\"nameservers\":[\"1.1.1.1\"]}"}}),
        json!({"nodeSelector": {"acme.io/virtual": "yes"}}),
    );
    let m = decide(&p, &own, Operation::Create);
    assert_eq!(profiles(&m), ["acme"]);
    assert_eq!(m.serverless[0].reason, "node selector acme.io/virtual=yes");
    assert_eq!(
        m.annotations["acme.io/http"],
        "a.local:5000;192.168.1.5:5000"
    );
    assert_eq!(m.annotations["acme.io/insecure"], "harbor.example.com");
    assert!(
        !m.annotations.contains_key("acme.io/dns"),
        "the pod's own DNS config wins"
    );
    let tolerating = pod(
        json!({}),
        json!({"tolerations": toleration("acme.io/provider")}),
    );
    let m = decide(&p, &tolerating, Operation::Create);
    assert_eq!(m.serverless[0].reason, "toleration acme.io/provider");
    assert_eq!(
        m.annotations["acme.io/dns"],
        "{\"nameservers\":[\"10.0.0.10\"]}"
    );

    // The dry-run names the profile and why.
    let items = dryrun::read_objects(&tolerating.to_string()).unwrap();
    let report =
        serde_json::to_value(dryrun::evaluate_all(&p, &items, Options::default())).unwrap();
    assert_eq!(
        report["results"][0]["serverless"],
        json!([{"profile": "acme", "reason": "toleration acme.io/provider"}])
    );
}

#[test]
fn profiles_that_cannot_work_are_refused_with_their_place() {
    let cases = [
        ("serverlessProfiles:\n  - match: {labels: {a: b}}\n    annotations: {plainHttp: x/y}\n", "a profile needs a name"),
        ("serverlessProfiles:\n  - name: eci\n    match: {labels: {a: b}}\n    annotations: {plainHttp: x/y}\n", "is taken"),
        ("serverlessProfiles:\n  - name: acme\n    match: {labels: {a: b}}\n", "name at least one of plainHttp and insecure"),
        ("serverlessProfiles:\n  - name: acme\n    annotations: {plainHttp: x/y}\n", "say how its pods are recognised"),
        ("serverlessProfiles:\n  - name: acme\n    match: {labelz: {a: b}}\n    annotations: {plainHttp: x/y}\n", "labelz"),
        ("eci: {enabled: auto, hostAliases: []}\n", "hostAliases"),
        ("eci: {enabled: sometimes}\n", "not one of auto, always, never"),
    ];
    for (text, want) in cases {
        let err = Policy::load(&format!("{MIRRORS}{text}"))
            .err()
            .unwrap_or_else(|| panic!("loaded: {text}"));
        let all: Vec<String> = err.diagnostics.iter().map(ToString::to_string).collect();
        assert!(
            all.iter().any(|d| d.contains(want) && d.contains(':')),
            "{text}: {all:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_review_log_names_the_profile_and_why() {
    let server = common::Server::with_policy(&format!("{MIRRORS}eci: {{enabled: auto}}\n"));
    let labelled = pod(
        json!({"labels": {"alibabacloud.com/eci": "true"}}),
        json!({}),
    );
    let answer = common::post_json(
        &server.client(),
        &server.url("/mutate"),
        &common::create_review("eci-1", "default", &labelled, false),
    )
    .await;
    assert!(common::decode_patch(&answer).is_some(), "{answer}");
    common::wait_until(
        "the review's log line",
        std::time::Duration::from_secs(5),
        || async {
            server
                .logs()
                .contains("serverless=eci (pod label alibabacloud.com/eci=true)")
        },
    )
    .await;
}
