//! The configurations users bring today, loaded unchanged, applied to example objects: each must
//! produce the rewrites, pull secrets and annotations that `tests/data/examples.yaml` lists.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use image_mirror_webhook::dryrun::{self, Item};
use image_mirror_webhook::mutate::Operation;
use image_mirror_webhook::policy::Policy;
use image_mirror_webhook::yaml;
use serde_json::Value;

use common::data_text as data;

#[test]
fn every_example_policy_loads_unchanged() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/examples");
    let mut policies = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("\nkind:") || text.starts_with("kind:") {
            continue; // objects, not policies
        }
        policies += 1;
        if let Err(r) = Policy::load(&text) {
            panic!("{} was rejected: {:#?}", path.display(), r.diagnostics);
        }
    }
    assert_eq!(policies, 6);
}

#[test]
fn ecr_plugin_fields_are_acted_on_and_placeholders_said_to_be_no_ecr_host() {
    let loaded = Policy::load(&data("examples/rke-ecr.yaml")).unwrap();
    let said: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        !said
            .iter()
            .any(|n| n.contains("ecrCredentialPlugin") && n.contains("ignored")),
        "{said:?}"
    );
    // The docs' placeholders name no ECR registry: said, not refused.
    assert!(
        said.iter().any(|n| n.contains("warning")
            && n.contains("ACCOUNTID.dkr.ecr.REGION.amazonaws.com")
            && n.contains("not an ECR registry")),
        "{said:?}"
    );
    assert!(said.iter().any(|n| n.contains("services")), "{said:?}");
    assert!(!said.concat().contains("SECRETKEY"));
}

#[test]
fn examples_produce_what_they_promise() {
    let cases = yaml::parse_single(&data("examples.yaml"))
        .unwrap()
        .to_json();
    let mut checked = 0;
    for case in cases.as_array().unwrap() {
        let policy_file = case["policy"].as_str().unwrap();
        let objects_file = case["objects"].as_str().unwrap();
        let policy = Policy::load(&data(policy_file)).unwrap().policy;
        let items = dryrun::read_objects(&data(objects_file)).unwrap();
        let report = dryrun::evaluate_all(&policy, &items, dryrun::Options::default());
        let ctx = format!("{policy_file} on {objects_file}");
        for (name, want) in case["expect"].as_object().unwrap() {
            let result = report
                .results
                .iter()
                .find(|r| r.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("{ctx}: no result for {name}"));
            assert!(result.error.is_none(), "{ctx}/{name}: {:?}", result.error);
            let after = result.object.as_ref().unwrap();
            for (pointer, image) in want["images"].as_object().into_iter().flatten() {
                assert_eq!(
                    after.pointer(pointer),
                    Some(image),
                    "{ctx}/{name}: {pointer}"
                );
            }
            if let Some(secrets) = want.get("pullSecrets") {
                let got = serde_json::to_value(result.pull_secrets.as_ref().unwrap()).unwrap();
                assert_eq!(&got, secrets, "{ctx}/{name}: pullSecrets");
            }
            if let Some(names) = want.get("imagePullSecrets") {
                let base = template_base(after);
                let got: Vec<Value> = after
                    .pointer(&format!("{base}/spec/imagePullSecrets"))
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(|s| s["name"].clone()).collect())
                    .unwrap_or_default();
                assert_eq!(&Value::Array(got), names, "{ctx}/{name}: imagePullSecrets");
            }
            if let Some(profiles) = want.get("serverless") {
                let got: Vec<&str> = result
                    .serverless
                    .iter()
                    .flatten()
                    .map(|s| s.profile.as_str())
                    .collect();
                assert_eq!(
                    &serde_json::to_value(got).unwrap(),
                    profiles,
                    "{ctx}/{name}: serverless"
                );
            }
            if let Some(annotations) = want.get("annotations") {
                let got = serde_json::to_value(result.annotations.as_ref().unwrap()).unwrap();
                assert_eq!(&got, annotations, "{ctx}/{name}: annotations");
            }
            // A second pass over the admitted object changes nothing.
            let again = dryrun::evaluate(
                &policy,
                &Item {
                    object: after.clone(),
                    namespace: None,
                    operation: Operation::Create,
                    skip: None,
                },
                dryrun::Options::default(),
            );
            assert_eq!(
                again.patch.map(|p| p.0.len()),
                Some(0),
                "{ctx}/{name}: second pass"
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} objects checked");
}

fn template_base(object: &Value) -> &'static str {
    match object["kind"].as_str() {
        Some("CronJob") => "/spec/jobTemplate/spec/template",
        Some("Pod") | None => "",
        _ => "/spec/template",
    }
}

#[test]
fn objects_without_a_pod_template_are_reported_not_dropped() {
    let policy = Policy::load(&data("quay-secret-policy.yaml"))
        .unwrap()
        .policy;
    let items = dryrun::read_objects(&data("examples/rancher-registry-credential.yaml")).unwrap();
    let report = dryrun::evaluate_all(&policy, &items, dryrun::Options::default());
    assert_eq!(report.results.len(), 2);
    let secret = &report.results[0];
    assert_eq!(secret.kind.as_deref(), Some("Secret"));
    assert!(secret.warnings.as_ref().unwrap()[0].contains("holds no pod template"));
    // The Secret's data is never echoed back.
    let out = serde_json::to_string(&report).unwrap();
    assert!(!out.contains("eyJhdXRocyI6"), "{out}");
}
