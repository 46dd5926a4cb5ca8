//! containers-registries.conf(5) pasted into the policy, checked against containers/image's own
//! tables (`image/pkg/sysregistriesv2/system_registries_v2_test.go` and `shortnames_test.go`)
//! over its own `testdata/*.conf`, copied unchanged into tests/data/registries-conf.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use image_mirror_webhook::policy::sources::{ref_matching_prefix, rewrite_reference};
use image_mirror_webhook::policy::{Policy, Rejected, Severity};
use image_mirror_webhook::reference::Reference;
use image_mirror_webhook::rewrite::decide;

const DATA: &str = "registries-conf";

/// `text` as a YAML literal block, indented by `indent`.
fn block(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    text.lines()
        .map(|l| {
            if l.trim().is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A policy of one registries.conf from the data, and the `*.conf` (and other) files of a
/// drop-in directory, as a user would paste them.
fn yaml(main: &str, dir: Option<&str>) -> String {
    let mut y = format!(
        "registries.conf: |\n{}\n",
        block(&common::data_text(&format!("{DATA}/{main}")), 2)
    );
    if let Some(dir) = dir {
        y.push_str("registries.conf.d:\n");
        let mut names: Vec<String> = std::fs::read_dir(common::data(&format!("{DATA}/{dir}")))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        for name in names {
            let text = common::data_text(&format!("{DATA}/{dir}/{name}"));
            y.push_str(&format!("  {name}: |\n{}\n", block(&text, 4)));
        }
    }
    y
}

fn load(main: &str, dir: Option<&str>) -> Policy {
    match Policy::load(&yaml(main, dir)) {
        Ok(l) => l.policy,
        Err(e) => panic!("{main}: {e}"),
    }
}

fn rejected(main: &str) -> Rejected {
    match Policy::load(&yaml(main, None)) {
        Ok(_) => panic!("{main} should be refused"),
        Err(e) => e,
    }
}

fn location(p: &Policy, name: &str) -> Option<String> {
    p.sources.find(name).map(|r| r.endpoint.location.clone())
}

#[test]
fn mirrors() {
    let p = load("mirrors.conf", None);
    assert_eq!(p.sources.registries.len(), 2);
    let reg = p.sources.find("registry.com/image:tag").unwrap();
    assert_eq!(reg.mirrors.len(), 2);
    assert_eq!(reg.mirrors[0].location, "mirror-1.registry.com");
    assert!(!reg.mirrors[0].insecure);
    assert_eq!(reg.mirrors[1].location, "mirror-2.registry.com");
    assert!(reg.mirrors[1].insecure);
}

#[test]
fn ref_matching_subdomain_prefix() {
    let a64 = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let rows: &[(&str, &str, Option<usize>)] = &[
        ("docker.io", "*.io", Some(9)),
        ("docker.io/foo", "*.com", None),
        ("example.com/foo", "*.co", None),
        ("example.com/foo", "*.example.com", None),
        ("example.com/foo", "*.com", Some(11)),
        ("example.com/foo:bar", "*.com", Some(11)),
        ("example.com/foo/bar:baz", "*.com", Some(11)),
        ("yet.another.example.com/foo", "**.example.com", None),
        (
            "yet.another.example.com/foo",
            "***.another.example.com",
            None,
        ),
        (
            "yet.another.example.com/foo",
            "**********.another.example.com",
            None,
        ),
        (
            "yet.another.example.com/foo/bar",
            "**********.another.example.com",
            None,
        ),
        (
            "yet.another.example.com/foo/bar",
            "*.another.example.com",
            Some(23),
        ),
        (
            "another.example.com/namespace.com/foo/bar/bbq:baz",
            "*.example.com",
            Some(19),
        ),
        (
            "example.net/namespace-ends-in.com/foo/bar/bbq:baz",
            "*.com",
            None,
        ),
        (
            "another.example.com/namespace.com/foo/bar/bbq:baz",
            "*.namespace.com",
            None,
        ),
        ("sub.example.com/foo/bar", "*.com", Some(15)),
        ("sub.example.com/foo/bar", "*.example.com", Some(15)),
        (
            "another.sub.example.com/foo/bar/bbq:baz",
            "*.example.com",
            Some(23),
        ),
        (
            "another.sub.example.com/foo/bar/bbq:baz",
            "*.sub.example.com",
            Some(23),
        ),
    ];
    for (r, prefix, want) in rows {
        assert_eq!(ref_matching_prefix(r, prefix), *want, "{r} vs. {prefix}");
    }
    let digested = format!("yet.another.example.com/foo/bar@{a64}");
    assert_eq!(ref_matching_prefix(&digested, "*.example.com"), Some(23));
    let digested = format!("yet.another.sub.example.com/foo/bar@{a64}");
    assert_eq!(
        ref_matching_prefix(&digested, "*.sub.example.com"),
        Some(27)
    );
}

#[test]
fn ref_matching_prefix_table() {
    let a = "@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let b = "@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let rows: Vec<(String, String, Option<usize>)> = [
        ("docker.io", "docker.io", Some(9)),
        ("docker.io", "example.com", None),
        ("example.com:5000", "example.com:5000", Some(16)),
        ("example.com:50000", "example.com:5000", None),
        ("example.com:5000", "example.com", Some(11)),
        ("example.com/foo", "example.com", Some(11)),
        ("example.com/foo/bar", "example.com", Some(11)),
        ("example.com/foo/bar:baz", "example.com", Some(11)),
        ("docker.io", "docker.io/library", None),
        ("docker.io/library", "docker.io/library", Some(17)),
        ("example.com/library", "docker.io/library", None),
        ("docker.io/libraryy", "docker.io/library", None),
        ("docker.io/library/busybox", "docker.io/library", Some(17)),
        ("docker.io", "docker.io/library/busybox", None),
        (
            "docker.io/library/busybox",
            "docker.io/library/busybox",
            Some(25),
        ),
        (
            "example.com/library/busybox",
            "docker.io/library/busybox",
            None,
        ),
        (
            "docker.io/library/busybox2",
            "docker.io/library/busybox",
            None,
        ),
        ("example.com", "example.com/foo:bar", None),
        ("example.com/foo", "example.com/foo:bar", None),
        ("example.com/foo:bar", "example.com/foo:bar", Some(19)),
        ("example.com/foo:bar2", "example.com/foo:bar", None),
        ("example.com/foo", "*", None),
    ]
    .iter()
    .map(|(r, p, n)| (r.to_string(), p.to_string(), *n))
    .chain([
        (
            format!("example.com/foo/bar{a}"),
            "example.com".into(),
            Some(11),
        ),
        ("example.com".into(), format!("example.com/foo{a}"), None),
        (
            "example.com/foo".into(),
            format!("example.com/foo{a}"),
            None,
        ),
        (
            format!("example.com/foo{a}"),
            format!("example.com/foo{a}"),
            Some(15 + a.len()),
        ),
        (
            format!("example.com/foo{b}"),
            format!("example.com/foo{a}"),
            None,
        ),
    ])
    .collect();
    for (r, prefix, want) in rows {
        assert_eq!(ref_matching_prefix(&r, &prefix), want, "{r} vs. {prefix}");
    }
}

#[test]
fn find_registry() {
    let p = load("find-registry.conf", Some("registries.conf.d"));
    assert_eq!(p.sources.registries.len(), 19);
    let reg = p.sources.find("simple-prefix.com/foo/bar:latest").unwrap();
    assert_eq!(reg.prefix, "simple-prefix.com");
    assert_eq!(reg.endpoint.location, "registry.com:5000");
    assert!(p.sources.find("simple-prefix.com/").is_some());
    assert!(p.sources.find("simple-prefix.com").is_some());
    let rows = [
        ("not.so.simple-prefix.com/", "subdomain-prefix.com"),
        ("not.quite.simple-prefix.com/", "subdomain-prefix-2.com"),
        ("not.quite.simple-prefix.com:5000/with/path/and/beyond:tag", "subdomain-prefix-2.com"),
        // The drop-in subdomain-override-1.conf replaces this prefix's entry.
        ("really.not.quite.simple-prefix.com:5000/with/path/and/beyond:tag", "subdomain-prefix-1-overridden-by-dropin-location.com"),
        // subdomain-override-2.conf's *.docker.com does not match.
        ("foo.docker.io:5000/omg/wtf/bbq:foo", "subdomain-prefix-2.com"),
        ("foo.bar.example.com:6000/omg/wtf/bbq@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "subdomain-prefix-3-overridden-by-dropin-location.com"),
        // The longer wildcard wins over *.docker.io.
        ("foo.bar.docker.io:5000/omg/wtf/bbq:foo", "subdomain-prefix-4.com"),
        // A longer plain prefix wins over *.example.com.
        ("foo.bar.example.com:5000/omg/wtf/bbq:foo", "subdomain-prefix-5.com"),
    ];
    for (name, want) in rows {
        assert_eq!(location(&p, name).as_deref(), Some(want), "{name}");
    }
    assert!(p.sources.find("simple-prefix.comx").is_none());
    let reg = p
        .sources
        .find("complex-prefix.com:4000/with/path/and/beyond:tag")
        .unwrap();
    assert_eq!(reg.prefix, "complex-prefix.com:4000/with/path");
    assert_eq!(reg.endpoint.location, "another-registry.com:5000");
    for host in ["no-prefix.com", "empty-prefix.com"] {
        let reg = p.sources.find(&format!("{host}/foo:tag")).unwrap();
        assert_eq!(
            (reg.prefix.as_str(), reg.endpoint.location.as_str()),
            (host, host)
        );
    }
}

#[test]
fn unqualified_search_registries() {
    let p = load("unqualified-search.conf", None);
    assert_eq!(p.sources.registries.len(), 4);
    assert_eq!(
        p.sources.search,
        ["registry-a.com", "registry-c.com", "registry-d.com"]
    );
    assert_eq!(p.sources.search_origin, "registries.conf");
    let e = rejected("invalid-search.conf");
    assert!(
        e.to_string()
            .contains("Invalid unqualified-search-registries entry"),
        "{e}"
    );
}

#[test]
fn invalid_v2_configs() {
    for (file, message) in [
        ("insecure-conflicts.conf", "registry 'registry.com' is defined multiple times with conflicting 'insecure' setting"),
        ("blocked-conflicts.conf", "registry 'registry.com' is defined multiple times with conflicting 'blocked' setting"),
        ("missing-mirror-location.conf", "invalid condition: mirror location is unset"),
        ("invalid-prefix.conf", "invalid location"),
        ("invalid-config-level-mirror.conf", "pull-from-mirror must not be set for a non-mirror registry \"registry-a.com/foo\""),
        ("invalid-conflict-mirror.conf", "cannot set mirror usage mirror-by-digest-only for the registry (\"registry-a.com/foo\") and pull-from-mirror for per-mirror (\"mirror-1.registry-a.com\") at the same time"),
        ("invalid-value-mirror.conf", "unsupported pull-from-mirror value \"notvalid\" for mirror \"mirror-1.registry-a.com\""),
        ("invalid-short-name-mode.conf", "invalid short-name mode"),
        ("try-update-cache-invalid.conf", "not valid TOML"),
    ] {
        let e = rejected(file);
        let errors: Vec<String> = e
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.to_string())
            .collect();
        assert!(errors.iter().any(|m| m.contains(message)), "{file}: {errors:?}");
        // Every error points into the pasted file, which starts on line 2.
        for d in e.diagnostics.iter().filter(|d| d.severity == Severity::Error) {
            assert!(d.pos.line >= 2, "{file}: {d}");
        }
    }
}

#[test]
fn errors_name_the_line_and_column_in_the_policy() {
    let y = "verify:\n  enabled: false\nregistries.conf: |\n  [[registry]]\n  location = \"a.example.com\"\n\n  [[registry.mirror]]\n  location = \"https://m.example.com\"\n";
    let e = Policy::load(y).unwrap_err();
    let d = e
        .diagnostics
        .iter()
        .find(|d| d.severity == Severity::Error)
        .unwrap();
    assert_eq!((d.pos.line, d.pos.col), (8, 14), "{d}");
    assert!(d.message.contains("URI schemes are not supported"), "{d}");
    let bad = "registries.conf: |\n  [[registry]]\n  location = \"a.example.com\n";
    let e = Policy::load(bad).unwrap_err();
    let d = &e.diagnostics[0];
    assert_eq!(d.pos.line, 3, "{d}");
    assert!(d.message.starts_with("not valid TOML"), "{d}");
}

#[test]
fn unmarshal() {
    assert_eq!(load("unmarshal.conf", None).sources.registries.len(), 4);
    assert_eq!(
        load("try-update-cache-valid.conf", None)
            .sources
            .registries
            .len(),
        1
    );
    assert!(load("empty.conf", None).sources.registries.is_empty());
}

#[test]
fn v1_backwards_compatibility() {
    let p = load("v1-compatibility.conf", None);
    assert_eq!(p.sources.registries.len(), 4);
    assert_eq!(
        p.sources.search,
        ["registry-a.com", "registry-c.com", "registry-d.com"]
    );
    let reg = p
        .sources
        .find("registry-b.com/bar/foo/barfoo:latest")
        .unwrap();
    assert!(reg.endpoint.insecure);
    assert!(reg.blocked);
    for file in [
        "v1-invalid-block.conf",
        "v1-invalid-insecure.conf",
        "v1-invalid-search.conf",
    ] {
        rejected(file);
    }
}

#[test]
fn mixing_v1_and_v2() {
    for file in ["mixing-v1-v2.conf", "mixing-v1-v2-empty.conf"] {
        let e = rejected(file);
        assert!(
            e.to_string()
                .contains("mixing sysregistry v1/v2 is not supported"),
            "{file}: {e}"
        );
    }
}

#[test]
fn rewrite_reference_success() {
    let a = "@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let rows: Vec<(String, &str, &str, String)> = [
        (
            "example.com/image",
            "example.com",
            "example.com",
            "example.com/image",
        ),
        (
            "example.com/image:latest",
            "example.com",
            "example.com",
            "example.com/image:latest",
        ),
        (
            "example.com:5000/image",
            "example.com:5000",
            "example.com:5000",
            "example.com:5000/image",
        ),
        (
            "example.com:5000/image:latest",
            "example.com:5000",
            "example.com:5000",
            "example.com:5000/image:latest",
        ),
        (
            "example.com/foo/image:latest",
            "example.com/foo",
            "example.com",
            "example.com/image:latest",
        ),
        (
            "example.com/foo/image:latest",
            "example.com/foo",
            "example.com/path",
            "example.com/path/image:latest",
        ),
        (
            "docker.io/library/image:latest",
            "docker.io",
            "docker.io",
            "docker.io/library/image:latest",
        ),
        (
            "docker.io/library/image",
            "docker.io/library",
            "example.com",
            "example.com/image",
        ),
        (
            "docker.io/library/image",
            "docker.io",
            "example.com",
            "example.com/library/image",
        ),
        (
            "docker.io/library/prefix/image",
            "docker.io/library/prefix",
            "example.com",
            "example.com/image",
        ),
        (
            "docker.io/namespace/image",
            "*.io",
            "example.com",
            "example.com/namespace/image",
        ),
        (
            "docker.io/library/prefix/image",
            "*.io",
            "example.com",
            "example.com/library/prefix/image",
        ),
        (
            "sub.example.io/library/prefix/image",
            "*.example.io",
            "example.com",
            "example.com/library/prefix/image",
        ),
        (
            "another.sub.example.io:5000/library/prefix/image:latest",
            "*.sub.example.io",
            "example.com",
            "example.com:5000/library/prefix/image:latest",
        ),
        (
            "foo.bar.io/ns1/ns2/ns3/ns4",
            "*.bar.io",
            "omg.bbq.com/roflmao",
            "omg.bbq.com/roflmao/ns1/ns2/ns3/ns4",
        ),
        (
            "abc.internal.registry.com/foo:bar",
            "*.internal.registry.com",
            "",
            "abc.internal.registry.com/foo:bar",
        ),
        (
            "blah.foo.bar.com/omg:bbq",
            "*.com",
            "",
            "blah.foo.bar.com/omg:bbq",
        ),
        (
            "alien.vs.predator.foobar.io:5000/omg",
            "*.foobar.io",
            "",
            "alien.vs.predator.foobar.io:5000/omg",
        ),
        (
            "alien.vs.predator.foobar.io:5000/omg:bbq",
            "*.foobar.io",
            "",
            "alien.vs.predator.foobar.io:5000/omg:bbq",
        ),
    ]
    .iter()
    .map(|(r, p, l, w)| (r.to_string(), *p, *l, w.to_string()))
    .chain([
        (
            format!("example.com/foo{a}"),
            "example.com",
            "example.com",
            format!("example.com/foo{a}"),
        ),
        (
            format!("alien.vs.predator.foobar.io:5000/foo{a}"),
            "*.foobar.io",
            "",
            format!("alien.vs.predator.foobar.io:5000/foo{a}"),
        ),
    ])
    .collect();
    for (input, prefix, location, want) in rows {
        let r = Reference::parse(&input).unwrap().to_string();
        let got =
            rewrite_reference(&r, prefix, location).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(got.to_string(), want, "{input} by {prefix} → {location}");
    }
}

#[test]
fn rewrite_reference_failures() {
    let a = "@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let rows: Vec<(String, &str, &str)> = [
        (
            "example.com/foo/image:latest",
            "example.com/foo",
            "example.com/path/",
        ),
        ("example.com:5000/image:latest", "example.com", ""),
        (
            "example.com:5000/image:latest",
            "example.com",
            "example.com:5000",
        ),
        (
            "example.com/foo/image:latest",
            "example.com//foo",
            "example.com/path",
        ),
        ("example.com/image:latest", "image", "anotherimage"),
        (
            "example.com/foo/image:latest",
            "example.com/foo/",
            "example.com",
        ),
        ("example.com/foo/image", "example.com/f", "example.com/foo"),
        ("example.com/foo:latest", "example.com/f", "example.com/foo"),
        ("docker.io/library/image", "example.com", "example.com"),
        ("docker.io/library/image", "*.com", "example.com"),
        (
            "foo.docker.io/library/image",
            "*.example.com",
            "example.com/image",
        ),
        (
            "foo.docker.io/library/image",
            "*.docker.com",
            "example.com/image",
        ),
    ]
    .iter()
    .map(|(r, p, l)| (r.to_string(), *p, *l))
    .chain([
        (
            format!("example.com/foo{a}"),
            "example.com/foo",
            "example.com",
        ),
        (
            format!("example.com/foo{a}"),
            "example.com/f",
            "example.com/foo",
        ),
    ])
    .collect();
    for (input, prefix, location) in rows {
        let r = Reference::parse(&input).unwrap().to_string();
        assert!(
            rewrite_reference(&r, prefix, location).is_err(),
            "{input} by {prefix} → {location}"
        );
    }
}

#[test]
fn pull_sources_from_reference() {
    let p = load("pull-sources-from-reference.conf", None);
    assert_eq!(p.sources.registries.len(), 9);
    let digest = "@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let tag = ":aaa";
    type Row<'a> = (
        &'a str,
        &'a [&'a str],
        &'a [bool],
        &'a [&'a str],
        &'a [bool],
    );
    let rows: &[Row] = &[
        (
            "registry-a.com/foo",
            &[
                "mirror-1.registry-a.com",
                "mirror-2.registry-a.com",
                "registry-a.com/bar",
            ],
            &[false, true, false],
            &[
                "mirror-1.registry-a.com",
                "mirror-2.registry-a.com",
                "registry-a.com/bar",
            ],
            &[false, true, false],
        ),
        (
            "registry-b.com/foo",
            &[
                "mirror-1.registry-b.com",
                "mirror-2.registry-b.com",
                "registry-b.com/bar",
            ],
            &[false, false, false],
            &["registry-b.com/bar"],
            &[false],
        ),
        (
            "registry-a.com/baz",
            &[
                "mirror-1.registry-a.com",
                "mirror-2.registry-a.com",
                "registry-a.com/bar",
            ],
            &[false, true, false],
            &[
                "mirror-1.registry-a.com",
                "mirror-2.registry-a.com",
                "registry-a.com/bar",
            ],
            &[false, true, false],
        ),
        (
            "registry-b.com/baz",
            &[
                "mirror-1.registry-b.com",
                "mirror-2.registry-b.com",
                "registry-b.com/bar",
            ],
            &[false, false, false],
            &["registry-b.com/bar"],
            &[false],
        ),
        (
            "registry-c.com/baz",
            &[
                "mirror-1.registry-c.com",
                "mirror-2.registry-c.com",
                "registry-c.com/bar",
            ],
            &[false, false, false],
            &["mirror-1.registry-c.com", "registry-c.com/bar"],
            &[false, false],
        ),
        (
            "registry-d.com/baz",
            &[
                "mirror-1.registry-d.com",
                "mirror-2.registry-d.com",
                "registry-d.com/bar",
            ],
            &[false, false, false],
            &["registry-d.com/bar"],
            &[false],
        ),
        (
            "registry-e.com/baz",
            &["registry-e.com/bar"],
            &[false],
            &[
                "mirror-1.registry-e.com",
                "mirror-2.registry-e.com",
                "registry-e.com/bar",
            ],
            &[false, false, false],
        ),
        (
            "registry-f.com/baz",
            &["mirror-1.registry-f.com", "registry-f.com/bar"],
            &[false, false],
            &[
                "mirror-1.registry-f.com",
                "mirror-2.registry-f.com",
                "registry-f.com/bar",
            ],
            &[false, false, false],
        ),
        (
            "registry-g.com/baz",
            &[
                "mirror-1.registry-g.com",
                "mirror-3.registry-g.com",
                "mirror-4.registry-g.com",
                "registry-g.com/bar",
            ],
            &[false, false, false, false],
            &[
                "mirror-2.registry-g.com",
                "mirror-3.registry-g.com",
                "mirror-4.registry-g.com",
                "registry-g.com/bar",
            ],
            &[false, false, false, false],
        ),
    ];
    for (prefix, d_locs, d_insecure, t_locs, t_insecure) in rows {
        for (suffix, locs, insecure) in [(digest, d_locs, d_insecure), (tag, t_locs, t_insecure)] {
            let image = format!("{prefix}/image{suffix}");
            let reference = Reference::parse(&image).unwrap();
            let reg = p.sources.find(&reference.name()).unwrap();
            let sources = reg.pull_sources(&reference).unwrap();
            let got: Vec<(&str, String, bool)> = sources
                .iter()
                .map(|s| (s.location.as_str(), s.reference.to_string(), s.insecure))
                .collect();
            let want: Vec<(&str, String, bool)> = locs
                .iter()
                .zip(insecure.iter())
                .map(|(l, i)| (*l, format!("{l}/image{suffix}"), *i))
                .collect();
            assert_eq!(got, want, "{image}");
            // The first source is what admission writes into the Pod.
            let d = decide(&p, &image, None);
            assert_eq!(
                d.result.as_deref(),
                Some(want[0].1.as_str()),
                "{image}: {}",
                d.reason
            );
        }
    }
}

#[test]
fn registries_conf_directory() {
    let p = load("base-for-registries.d.conf", Some("registries.conf.d"));
    assert_eq!(p.sources.search, ["example-overwrite.com"]);
    assert_eq!(p.sources.search_origin, "registries.conf.d/config-1.conf");
    let locations: Vec<&str> = p
        .sources
        .registries
        .iter()
        .map(|r| r.endpoint.location.as_str())
        .collect();
    assert_eq!(
        locations,
        [
            "subdomain-prefix-3-overridden-by-dropin-location.com",
            "subdomain-prefix-2-overridden-by-dropin-location.com",
            "subdomain-prefix-1-overridden-by-dropin-location.com",
            "1.com",
            "2.com",
            "base.com"
        ]
    );
    assert!(p.sources.find("base.com/test:latest").unwrap().blocked);
    // A drop-in without the key leaves the base file's list; one with `[]` empties it.
    let p = load("unqualified-search.conf", Some("registries.conf.d-usr1"));
    assert_eq!(
        p.sources.search,
        ["registry-a.com", "registry-c.com", "registry-d.com"]
    );
    let p = load("unqualified-search.conf", Some("registries.conf.d-usr2"));
    assert!(p.sources.search.is_empty());
}

#[test]
fn a_drop_in_in_version_1_is_refused_and_other_files_are_skipped() {
    let y = "registries.conf.d:\n  10-old.conf: |\n    [registries.search]\n    registries = [\"a.com\"]\n  README: |\n    not read\n";
    let e = Policy::load(y).unwrap_err();
    assert!(
        e.to_string()
            .contains("registry must be in v2 format but is in v1"),
        "{e}"
    );
    let y = "registries.conf.d:\n  README: |\n    not read\n";
    let l = Policy::load(y).unwrap();
    assert!(
        l.diagnostics
            .iter()
            .any(|d| d.message.contains("only *.conf")),
        "{:?}",
        l.diagnostics
    );
}

#[test]
fn short_name_aliases() {
    let p = load("aliases.conf", None);
    assert_eq!(p.sources.aliases.len(), 4);
    for (name, want) in [
        ("docker", "docker.io/library/foo"),
        ("quay/foo", "quay.io/library/foo"),
        ("example", "example.com/library/foo"),
    ] {
        let alias = &p.sources.aliases[name];
        assert_eq!(alias.target.as_deref(), Some(want), "{name}");
        let d = decide(&p, &format!("{name}:1.0"), None);
        assert_eq!(
            d.result.as_deref(),
            Some(format!("{want}:1.0").as_str()),
            "{name}"
        );
    }
    assert_eq!(p.sources.aliases["empty"].target, None);
    // No alias and no search registries: the node cannot resolve it, so admission refuses.
    let d = decide(&p, "idonotexist", None);
    assert!(d.denied, "{}", d.reason);
    assert!(d.reason.contains("no alias"), "{}", d.reason);
    let e = rejected("invalid-aliases.conf");
    let errors: Vec<String> = e.diagnostics.iter().map(|d| d.message.clone()).collect();
    assert_eq!(
        errors
            .iter()
            .filter(|m| m.contains("must not contain tag"))
            .count(),
        2,
        "{errors:?}"
    );
}

#[test]
fn aliases_with_drop_ins() {
    let p = load("aliases.conf", Some("registries.conf.d"));
    assert_eq!(p.sources.aliases.len(), 8);
    for (name, want, origin) in [
        (
            "docker",
            Some("docker.io/library/config1"),
            "registries.conf.d/config-1.conf",
        ),
        (
            "quay/foo",
            Some("quay.io/library/foo"),
            "registries.conf aliases",
        ),
        (
            "config1",
            Some("config1.com/image"),
            "registries.conf.d/config-1.conf",
        ),
        (
            "barz",
            Some("barz.com/config2"),
            "registries.conf.d/config-2.conf",
        ),
        (
            "config2",
            Some("config2.com/image"),
            "registries.conf.d/config-2.conf",
        ),
        (
            "added3",
            Some("xxx.com/image"),
            "registries.conf.d/config-2.conf",
        ),
        ("example", None, "registries.conf.d/config-2.conf"),
    ] {
        let alias = &p.sources.aliases[name];
        assert_eq!(alias.target.as_deref(), want, "{name}");
        assert!(alias.origin.starts_with(origin), "{name}: {}", alias.origin);
    }
}

#[test]
fn parse_short_name_values_and_names() {
    for (value, valid) in [
        ("docker.io/library/fedora", true),
        ("localhost/fedora", true),
        ("localhost:5000/fedora", true),
        ("localhost:5000/namespace/fedora", true),
        ("docker.io/library/fedora:latest", false),
        ("docker.io/library/fedora@sha256:b87dd5f837112a9e1e9882963a6406387597698268c0ad371b187151a5dfe6bf", false),
        ("fedora", false),
        ("fedora:latest", false),
        ("library/fedora", false),
        ("library/fedora:latest", false),
        ("$$4455%%", false),
        ("docker://foo", false),
        ("docker-archive://foo", false),
    ] {
        let y = format!("registries.conf: |\n  [aliases]\n  fedora = {value:?}\n");
        assert_eq!(Policy::load(&y).is_ok(), valid, "alias value {value:?}");
    }
    for (name, valid) in [
        ("library/fedora", true),
        ("fedora", true),
        ("1234567489", true),
        ("docker.io/library/fedora:latest", false),
        ("fedora:latest", false),
        ("library/fedora:latest", false),
        ("$$4455%%", false),
        ("docker://foo", false),
        ("docker-archive://foo", false),
    ] {
        let y = format!("registries.conf: |\n  [aliases]\n  {name:?} = \"quay.io/fedora\"\n");
        assert_eq!(Policy::load(&y).is_ok(), valid, "short name {name:?}");
    }
}

#[test]
fn a_rewritten_image_stays_even_under_its_own_source() {
    let y = "registries.conf: |\n  [[registry]]\n  location = \"example.com\"\n  [[registry.mirror]]\n  location = \"example.com/mirror\"\n";
    let p = Policy::load(y).unwrap().policy;
    let d = decide(&p, "example.com/app:1", None);
    assert_eq!(
        d.result.as_deref(),
        Some("example.com/mirror/app:1"),
        "{}",
        d.reason
    );
    let again = decide(&p, "example.com/mirror/app:1", None);
    assert!(!again.changed(), "{}", again.reason);
    assert!(
        again.reason.contains("already a pull source"),
        "{}",
        again.reason
    );
}

#[test]
fn several_search_registries_take_the_first_with_a_warning_or_the_first_that_has_it() {
    let y = "registries.conf: |\n  unqualified-search-registries = [\"registry.example.com\", \"docker.io\"]\nverify: {enabled: true}\n";
    let p = Policy::load(y).unwrap().policy;
    let d = decide(&p, "team/app:1", None);
    assert_eq!(d.result.as_deref(), Some("registry.example.com/team/app:1"));
    let warning = d.warning.unwrap();
    assert!(
        warning.contains("ambiguous") && warning.contains("registry.example.com, docker.io"),
        "{warning}"
    );
    // verify asks each registry in order; the second has it.
    let candidates = image_mirror_webhook::rewrite::candidates(&p, "team/app:1");
    let hosts: Vec<&str> = candidates.iter().map(|c| c.host.as_str()).collect();
    assert_eq!(hosts, ["registry.example.com", "docker.io"]);
    assert_eq!(
        candidates[1].manifest_url,
        "https://registry-1.docker.io/v2/team/app/manifests/1"
    );
    let verdict = image_mirror_webhook::verdict::Verdict {
        chosen: Some(1),
        ..Default::default()
    };
    let d = decide(&p, "team/app:1", Some(&verdict));
    assert_eq!(
        d.result.as_deref(),
        Some("docker.io/team/app:1"),
        "{}",
        d.reason
    );
    assert!(d.warning.is_none());
}

#[test]
fn a_short_name_made_whole_goes_on_to_the_other_rules() {
    let y = "registries.conf: |\n  unqualified-search-registries = [\"docker.io\"]\nmirrors:\n  docker.io:\n    endpoint: [\"https://mirror.example.com\"]\n";
    let p = Policy::load(y).unwrap().policy;
    let d = decide(&p, "nginx:1.27", None);
    assert_eq!(
        d.result.as_deref(),
        Some("mirror.example.com/library/nginx:1.27"),
        "{}",
        d.reason
    );
    assert_eq!(d.image, "nginx:1.27");
    assert!(
        d.reason
            .starts_with("short name nginx is searched in docker.io"),
        "{}",
        d.reason
    );
    assert!(!decide(&p, "mirror.example.com/library/nginx:1.27", None).changed());
    // Without a mirror for it, the whole name is written: what CRI-O pulls.
    let d = decide(&p, "quay.io/org/app:1", None);
    assert!(!d.changed());
    let y = "registries.conf: |\n  unqualified-search-registries = [\"quay.io\"]\n";
    let p = Policy::load(y).unwrap().policy;
    assert_eq!(
        decide(&p, "org/app:1", None).result.as_deref(),
        Some("quay.io/org/app:1")
    );
}

#[test]
fn with_verify_each_search_registry_is_tried_as_its_own_rules_try_it() {
    let y = "registries.conf: |\n  unqualified-search-registries = [\"registry.example.com\", \"docker.io\"]\nmirrors:\n  docker.io:\n    endpoint: [\"https://mirror.example.com\"]\nverify: {enabled: true}\n";
    let p = Policy::load(y).unwrap().policy;
    let candidates = image_mirror_webhook::rewrite::candidates(&p, "nginx:1.27");
    let urls: Vec<&str> = candidates.iter().map(|c| c.manifest_url.as_str()).collect();
    assert_eq!(
        urls,
        [
            "https://registry.example.com/v2/nginx/manifests/1.27",
            "https://mirror.example.com/v2/library/nginx/manifests/1.27",
            "https://registry-1.docker.io/v2/library/nginx/manifests/1.27",
        ]
    );
    let chosen = |i: Option<usize>| {
        let v = image_mirror_webhook::verdict::Verdict {
            chosen: i,
            ..Default::default()
        };
        decide(&p, "nginx:1.27", Some(&v)).result.unwrap()
    };
    assert_eq!(chosen(Some(0)), "registry.example.com/nginx:1.27");
    assert_eq!(chosen(Some(1)), "mirror.example.com/library/nginx:1.27");
    assert_eq!(chosen(Some(2)), "docker.io/library/nginx:1.27");
    // None has it: the first search registry, as the node tries it first.
    assert_eq!(chosen(None), "registry.example.com/nginx:1.27");
}

#[test]
fn configs_for_a_runtime_files_source_are_not_taken_for_a_typo() {
    let y = "registries.conf: |\n  [[registry]]\n  location = \"docker.io/library\"\n  [[registry.mirror]]\n  location = \"harbor.example.com/hub\"\ncerts.d:\n  ghcr.io: |\n    [host.\"https://ghcr-cache.example.com\"]\nconfigs:\n  harbor.example.com:\n    pullSecret: harbor\n  ghcr-cache.example.com:\n    pullSecret: ghcr\n  harbr.example.com:\n    pullSecret: typo\n";
    let l = Policy::load(y).unwrap();
    let unmatched: Vec<String> = l
        .diagnostics
        .iter()
        .filter(|d| d.message.contains("matches no mirror endpoint"))
        .map(|d| d.path.clone())
        .collect();
    assert_eq!(unmatched, ["configs[harbr.example.com]"]);
}
