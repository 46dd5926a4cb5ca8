//! OpenShift ImageDigestMirrorSet, ImageTagMirrorSet and ImageContentSourcePolicy objects under
//! `imageMirrorSets`, checked against openshift/runtime-utils' own tables
//! (`pkg/registries/registries_test.go`): the merged mirror order, digest-only and tag-only
//! mirrors, NeverContactSource, and nested scopes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use image_mirror_webhook::policy::sources::PullFrom;
use image_mirror_webhook::policy::{Policy, Severity};
use image_mirror_webhook::rewrite::decide;

const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// One object of `kind` per list of (source, mirrors, NeverContactSource).
fn sets(kind: &str, objects: &[&[(&str, &[&str], bool)]]) -> String {
    let (api, key) = match kind {
        "ImageDigestMirrorSet" => ("config.openshift.io/v1", "imageDigestMirrors"),
        "ImageTagMirrorSet" => ("config.openshift.io/v1", "imageTagMirrors"),
        _ => ("operator.openshift.io/v1alpha1", "repositoryDigestMirrors"),
    };
    let mut y = String::new();
    for (i, entries) in objects.iter().enumerate() {
        y.push_str(&format!("  - apiVersion: {api}\n    kind: {kind}\n    metadata:\n      name: set-{i}\n    spec:\n      {key}:\n"));
        for (source, mirrors, never) in entries.iter() {
            let quoted: Vec<String> = mirrors.iter().map(|m| format!("{m:?}")).collect();
            y.push_str(&format!(
                "        - source: {source:?}\n          mirrors: [{}]\n",
                quoted.join(", ")
            ));
            if *never {
                y.push_str("          mirrorSourcePolicy: NeverContactSource\n");
            }
        }
    }
    y
}

fn policy(parts: &[String]) -> Policy {
    let y = format!("imageMirrorSets:\n{}", parts.concat());
    Policy::load(&y)
        .unwrap_or_else(|e| panic!("{e}\n{y}"))
        .policy
}

fn mirrors(p: &Policy, prefix: &str) -> Vec<(String, PullFrom)> {
    let reg = p
        .sources
        .registries
        .iter()
        .find(|r| r.prefix == prefix)
        .unwrap();
    reg.mirrors
        .iter()
        .map(|m| (m.location.clone(), m.pull_from))
        .collect()
}

fn locations(p: &Policy, prefix: &str) -> Vec<String> {
    mirrors(p, prefix).into_iter().map(|(l, _)| l).collect()
}

/// `mergedMirrorsetsTestcases`, for each of the three kinds.
#[test]
fn merged_mirror_sets() {
    type Case<'a> = (
        &'a str,
        Vec<&'a [(&'a str, &'a [&'a str], bool)]>,
        Vec<(&'a str, Vec<&'a str>)>,
    );
    let cases: Vec<Case> = vec![
        (
            "Separate mirror sets",
            vec![
                &[(
                    "source.example.net",
                    &["z1.example.net", "y2.example.net", "x3.example.net"],
                    false,
                )],
                &[(
                    "source.example.com",
                    &["z1.example.com", "y2.example.com", "x3.example.com"],
                    false,
                )],
            ],
            vec![
                (
                    "source.example.com",
                    vec!["z1.example.com", "y2.example.com", "x3.example.com"],
                ),
                (
                    "source.example.net",
                    vec!["z1.example.net", "y2.example.net", "x3.example.net"],
                ),
            ],
        ),
        (
            "Sets with a shared element - strict order",
            vec![
                &[
                    (
                        "source.example.net",
                        &["z1.example.net", "y2.example.net"],
                        false,
                    ),
                    (
                        "source.example.com",
                        &["z1.example.com", "y2.example.com"],
                        false,
                    ),
                ],
                &[
                    (
                        "source.example.net",
                        &["y2.example.net", "x3.example.net"],
                        false,
                    ),
                    (
                        "source.example.com",
                        &["y2.example.com", "x3.example.com"],
                        false,
                    ),
                ],
            ],
            vec![
                (
                    "source.example.com",
                    vec!["z1.example.com", "y2.example.com", "x3.example.com"],
                ),
                (
                    "source.example.net",
                    vec!["z1.example.net", "y2.example.net", "x3.example.net"],
                ),
            ],
        ),
        (
            "Source included in mirrors",
            vec![&[
                (
                    "source.example.com",
                    &["z1.example.com", "source.example.com", "y2.example.com"],
                    false,
                ),
                (
                    "source.example.com",
                    &["source.example.com", "y2.example.com", "x3.example.com"],
                    false,
                ),
            ]],
            vec![(
                "source.example.com",
                vec![
                    "z1.example.com",
                    "source.example.com",
                    "y2.example.com",
                    "x3.example.com",
                ],
            )],
        ),
        (
            "Example",
            vec![
                &[("source.vendor.com", &["registry2.vendor.com"], false)],
                &[(
                    "source.vendor2.com",
                    &["registry1.vendor2.com", "registry2.vendor2.com"],
                    false,
                )],
                &[
                    ("source.vendor.com", &["local-mirror.example.com"], false),
                    (
                        "source.vendor2.com",
                        &[
                            "local-mirror2.example.com",
                            "registry2.vendor2.com",
                            "registry1.vendor2.com",
                        ],
                        false,
                    ),
                ],
            ],
            vec![
                (
                    "source.vendor.com",
                    vec!["local-mirror.example.com", "registry2.vendor.com"],
                ),
                (
                    "source.vendor2.com",
                    vec![
                        "local-mirror2.example.com",
                        "registry1.vendor2.com",
                        "registry2.vendor2.com",
                    ],
                ),
            ],
        ),
    ];
    for kind in [
        "ImageDigestMirrorSet",
        "ImageTagMirrorSet",
        "ImageContentSourcePolicy",
    ] {
        for (name, input, want) in &cases {
            let p = policy(&[sets(kind, input)]);
            assert_eq!(p.sources.registries.len(), want.len(), "{kind} {name}");
            for (source, mirrors) in want {
                assert_eq!(locations(&p, source), *mirrors, "{kind} {name}: {source}");
            }
        }
    }
    // Mirrors that only repeat the source are no mirror set at all.
    let p = policy(&[sets(
        "ImageDigestMirrorSet",
        &[&[
            ("source.example.com", &["source.example.com"], false),
            (
                "source.example.net",
                &["source.example.net", "source.example.net"],
                false,
            ),
        ]],
    )]);
    assert!(p.sources.registries.is_empty());
}

#[test]
fn digest_and_tag_sets_on_one_registry() {
    let p = policy(&[
        sets(
            "ImageDigestMirrorSet",
            &[&[
                (
                    "registry-a.com",
                    &[
                        "mirror-digest-1.registry-a.com",
                        "mirror-digest-2.registry-a.com",
                    ],
                    false,
                ),
                (
                    "registry-b.com",
                    &[
                        "mirror-digest-1.registry-b.com",
                        "mirror-digest-2.registry-b.com",
                    ],
                    false,
                ),
            ]],
        ),
        sets(
            "ImageTagMirrorSet",
            &[&[
                (
                    "registry-a.com",
                    &["mirror-tag-1.registry-a.com", "mirror-tag-2.registry-a.com"],
                    false,
                ),
                (
                    "registry-b.com",
                    &["mirror-tag-1.registry-b.com", "mirror-tag-2.registry-b.com"],
                    false,
                ),
            ]],
        ),
    ]);
    for r in ["registry-a.com", "registry-b.com"] {
        assert_eq!(
            mirrors(&p, r),
            [
                (format!("mirror-digest-1.{r}"), PullFrom::DigestOnly),
                (format!("mirror-digest-2.{r}"), PullFrom::DigestOnly),
                (format!("mirror-tag-1.{r}"), PullFrom::TagOnly),
                (format!("mirror-tag-2.{r}"), PullFrom::TagOnly),
            ]
        );
        let tag = decide(&p, &format!("{r}/team/app:1"), None);
        assert_eq!(
            tag.result,
            Some(format!("mirror-tag-1.{r}/team/app:1")),
            "{}",
            tag.reason
        );
        let digest = decide(&p, &format!("{r}/team/app@{DIGEST}"), None);
        assert_eq!(
            digest.result,
            Some(format!("mirror-digest-1.{r}/team/app@{DIGEST}"))
        );
    }
}

#[test]
fn never_contact_source_blocks_it_and_refuses_what_no_mirror_serves() {
    let p = policy(&[
        sets(
            "ImageDigestMirrorSet",
            &[&[
                (
                    "registry-a.com",
                    &[
                        "mirror-digest-1.registry-a.com",
                        "mirror-digest-2.registry-a.com",
                    ],
                    true,
                ),
                ("registry-b.com", &["mirror-digest-1.registry-b.com"], false),
            ]],
        ),
        sets(
            "ImageTagMirrorSet",
            &[&[("registry-b.com", &["mirror-tag-1.registry-b.com"], true)]],
        ),
    ]);
    let a = p
        .sources
        .registries
        .iter()
        .find(|r| r.prefix == "registry-a.com")
        .unwrap();
    assert!(a.blocked);
    assert!(
        p.sources
            .registries
            .iter()
            .find(|r| r.prefix == "registry-b.com")
            .unwrap()
            .blocked
    );
    // A digest goes to its mirror; a tag has only the blocked source: the node could not pull it.
    let d = decide(&p, &format!("registry-a.com/app@{DIGEST}"), None);
    assert_eq!(
        d.result,
        Some(format!("mirror-digest-1.registry-a.com/app@{DIGEST}"))
    );
    let d = decide(&p, "registry-a.com/app:1", None);
    assert!(d.denied, "{}", d.reason);
    assert!(
        d.reason.contains("ImageDigestMirrorSet/set-0"),
        "names the rule: {}",
        d.reason
    );
    assert!(d.reason.contains("blocked"), "{}", d.reason);
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["denied"], true);
}

#[test]
fn nested_scopes_take_their_parents_mirrors() {
    // A digest set for the registry and a tag set for one namespace: the namespace's entry is the
    // longest prefix, so it keeps its own mirrors (`mirrorsAdjustedForNestedScope` only fills
    // entries without any).
    let p = policy(&[
        sets(
            "ImageDigestMirrorSet",
            &[&[(
                "example.com",
                &["mirror-1.com", "mirror-2.com/nested"],
                false,
            )]],
        ),
        String::from(""),
    ]);
    assert_eq!(
        locations(&p, "example.com"),
        ["mirror-1.com", "mirror-2.com/nested"]
    );
    let y = format!(
        "registries.conf: |\n  [[registry]]\n  location = \"example.com/subscope\"\n  insecure = true\nimageMirrorSets:\n{}",
        sets("ImageDigestMirrorSet", &[&[("example.com", &["mirror-1.com", "mirror-2.com/nested"], false)]])
    );
    let p = Policy::load(&y).unwrap().policy;
    assert_eq!(
        locations(&p, "example.com/subscope"),
        ["mirror-1.com/subscope", "mirror-2.com/nested/subscope"]
    );
}

#[test]
fn validation_as_the_machine_config_operator_does() {
    for (input, message) in [
        (
            sets(
                "ImageDigestMirrorSet",
                &[&[("registry.example.com", &["*.mirror.example.com"], false)]],
            ),
            "mirrors cannot be wildcards",
        ),
        (
            sets(
                "ImageDigestMirrorSet",
                &[&[("registry.example.com", &["registry.example.com"], true)]],
            ),
            "needs at least one mirror",
        ),
        (
            sets(
                "ImageDigestMirrorSet",
                &[&[("**.example.com", &["m.example.com"], false)]],
            ),
            "invalid source",
        ),
        (
            sets(
                "ImageDigestMirrorSet",
                &[
                    &[("registry.example.com", &["m1.example.com"], true)],
                    &[("registry.example.com", &["m2.example.com"], false)],
                ],
            ),
            "conflicting mirrorSourcePolicy",
        ),
    ] {
        let d = common::first_error(&format!("imageMirrorSets:\n{input}"));
        assert!(d.message.contains(message), "{d}");
        assert!(d.pos.line > 1, "{d}");
    }
    let y = "imageMirrorSets:\n  - apiVersion: v1\n    kind: ConfigMap\n";
    assert!(Policy::load(y)
        .unwrap_err()
        .to_string()
        .contains("not a mirror set kind"));
    // Wildcard sources are allowed.
    let p = policy(&[sets(
        "ImageDigestMirrorSet",
        &[&[("*.example.com", &["mirror.example.net"], false)]],
    )]);
    let d = decide(&p, &format!("registry.example.com/app@{DIGEST}"), None);
    assert_eq!(
        d.result,
        Some(format!("mirror.example.net/app@{DIGEST}")),
        "{}",
        d.reason
    );
}

#[test]
fn check_notes_each_derived_entry() {
    let y = format!(
        "mirrors:\n  registry-a.com:\n    endpoint: [\"https://k3s-mirror.example.com\"]\nimageMirrorSets:\n{}",
        sets("ImageDigestMirrorSet", &[&[("registry-a.com/team", &["mirror.example.com/team"], true)]])
    );
    let l = Policy::load(&y).unwrap();
    let notes: Vec<String> = l
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Note)
        .map(|d| d.message.clone())
        .collect();
    assert!(
        notes.iter().any(|n| n == "registry-a.com/team: pulled from mirror.example.com/team (digest-only pulls), then registry-a.com/team (blocked)"),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains("mirrors[registry-a.com] names this registry too")),
        "{notes:?}"
    );
}

/// runtime-utils' `TestIsValidRegistriesConfScope`, as sources of a mirror set.
#[test]
fn valid_registries_conf_scopes() {
    for (scope, valid) in [
        ("example.com", true),
        ("*.example.com", true),
        ("**.example.com", false),
        ("example.*.com", false),
        ("*.example.com/foo/bar", false),
        ("*.example.com:foo", false),
        ("*.example.com/foo:sha@bar", false),
        ("*.example.com.*.bar.com", false),
        ("*example.com", false),
        ("*/example.com", false),
        ("*.*example.com", false),
        ("", false),
    ] {
        let y = format!(
            "imageMirrorSets:\n{}",
            sets(
                "ImageDigestMirrorSet",
                &[&[(scope, &["mirror.example.net"], false)]]
            )
        );
        assert_eq!(Policy::load(&y).is_ok(), valid, "{scope:?}");
    }
}
