//! Reference parsing and normalisation against the rules of distribution/reference and go-digest
//! (SEMANTICS.md §1–2). Each row: input, then the normalised form or the class of error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use image_mirror_webhook::reference::{Reference, ReferenceError};

const SHA256: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn class(e: &ReferenceError) -> &'static str {
    match e {
        ReferenceError::Empty => "!empty",
        ReferenceError::HexIdentifier => "!hex",
        ReferenceError::Uppercase => "!upper",
        ReferenceError::Format(_) => "!format",
        ReferenceError::NameTooLong(_) => "!long",
        ReferenceError::DigestUnsupported(_) => "!alg",
        ReferenceError::DigestLength { .. } => "!length",
        ReferenceError::DigestFormat => "!digest",
    }
}

fn cases() -> Vec<(String, String)> {
    let d = format!("sha256:{SHA256}");
    let d512 = format!("sha512:{SHA256}{SHA256}");
    let s = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    let mut c = vec![
        // Docker Hub and library/
        s("nginx", "docker.io/library/nginx"),
        s("nginx:latest", "docker.io/library/nginx:latest"),
        s("nginx:1.25", "docker.io/library/nginx:1.25"),
        s("library/nginx", "docker.io/library/nginx"),
        s("docker.io/nginx", "docker.io/library/nginx"),
        s("docker.io/library/nginx", "docker.io/library/nginx"),
        s("docker.io/foo/bar", "docker.io/foo/bar"),
        s("docker.io/library/foo/bar", "docker.io/library/foo/bar"),
        s("index.docker.io/nginx", "docker.io/library/nginx"),
        s(
            "index.docker.io/library/nginx:1",
            "docker.io/library/nginx:1",
        ),
        s("index.docker.io/foo/bar", "docker.io/foo/bar"),
        s("docker.io", "docker.io/library/docker.io"),
        // only index.docker.io is an alias; other spellings are other registries
        s("registry-1.docker.io/nginx", "registry-1.docker.io/nginx"),
        s(
            "registry-1.docker.io/library/nginx",
            "registry-1.docker.io/library/nginx",
        ),
        s("Docker.io/nginx", "Docker.io/nginx"),
        s("DOCKER.IO/nginx", "DOCKER.IO/nginx"),
        s(
            "rancher/rke-tools:v0.1.14",
            "docker.io/rancher/rke-tools:v0.1.14",
        ),
        s("foo/bar", "docker.io/foo/bar"),
        s("foo/bar/baz", "docker.io/foo/bar/baz"),
        s("a", "docker.io/library/a"),
        s("a/b", "docker.io/a/b"),
        s("foo:bar", "docker.io/library/foo:bar"),
        s("foo:BAR", "docker.io/library/foo:BAR"),
        // a first component is a registry only with `.`, `:`, localhost or upper case
        s("localhost/app", "localhost/app"),
        s("localhost:5000/app", "localhost:5000/app"),
        s("localhost", "docker.io/library/localhost"),
        s("localhost:5000", "docker.io/library/localhost:5000"),
        s("example.com", "docker.io/library/example.com"),
        s(
            "registry.example.com:5000",
            "docker.io/library/registry.example.com:5000",
        ),
        s("a.b.c", "docker.io/library/a.b.c"),
        s("registry.example.com/app", "registry.example.com/app"),
        s(
            "registry.example.com:5000/app:1.0",
            "registry.example.com:5000/app:1.0",
        ),
        s("a.b/c", "a.b/c"),
        s("a.b:5000/c", "a.b:5000/c"),
        s("gcr.io/library/busybox", "gcr.io/library/busybox"),
        s("gcr.io/busybox", "gcr.io/busybox"),
        s("quay.io/coreos/etcd:v3.5.0", "quay.io/coreos/etcd:v3.5.0"),
        s("k8s.gcr.io/pause:3.1", "k8s.gcr.io/pause:3.1"),
        s(
            "gcr.io/kubernetes-e2e-test-images/nautilus:1.0",
            "gcr.io/kubernetes-e2e-test-images/nautilus:1.0",
        ),
        s(
            "mcr.microsoft.com/dotnet/sdk:8.0",
            "mcr.microsoft.com/dotnet/sdk:8.0",
        ),
        s(
            "public.ecr.aws/nginx/nginx:1.25",
            "public.ecr.aws/nginx/nginx:1.25",
        ),
        s(
            "ACCOUNTID.dkr.ecr.REGION.amazonaws.com/app",
            "ACCOUNTID.dkr.ecr.REGION.amazonaws.com/app",
        ),
        s(
            "192.168.1.5:5000/library/nginx:latest",
            "192.168.1.5:5000/library/nginx:latest",
        ),
        s(
            "harbor.example.com/library/nginx:v1",
            "harbor.example.com/library/nginx:v1",
        ),
        s("my.registry.com/a/b/c/d:tag", "my.registry.com/a/b/c/d:tag"),
        s(
            "1.1.1.1:5555/artifactory/rancher/rke-tools",
            "1.1.1.1:5555/artifactory/rancher/rke-tools",
        ),
        s("1.1.1.1/app", "1.1.1.1/app"),
        s("127.0.0.1:5000/app", "127.0.0.1:5000/app"),
        s("localhost.localdomain/app", "localhost.localdomain/app"),
        s("xn--bcher-kva.example/app", "xn--bcher-kva.example/app"),
        s("ex--ample.com/app", "ex--ample.com/app"),
        s("foo.com/bar/baz:tag", "foo.com/bar/baz:tag"),
        // upper case: a registry, except where the path must be lower case
        s("Team/app", "Team/app"),
        s("TEAM/app", "TEAM/app"),
        s("FOO/bar", "FOO/bar"),
        s("LOCALHOST/app", "LOCALHOST/app"),
        s("Registry.Example.com/foo", "Registry.Example.com/foo"),
        s("Nginx", "!upper"),
        s("FOO:bar", "!upper"),
        s("nginx/Foo", "!upper"),
        s("registry.example.com/Foo", "!upper"),
        s("localhost/Foo", "!upper"),
        s("localhost:5000/Foo", "!upper"),
        s("a.b/C", "!upper"),
        s("Foo_bar/app", "!upper"),
        // ports: digits, no range check
        s("localhost:0/app", "localhost:0/app"),
        s("localhost:99999/app", "localhost:99999/app"),
        s("localhost:/app", "!format"),
        s("a.b:port/c", "!format"),
        s("a:b/c", "!format"),
        s("example.com:5000:6000/app", "!format"),
        s("my_registry:5000/app", "!format"),
        s("foo_bar.com:8080/app", "!format"),
        // IPv6: bracketed and followed by a path
        s("[::1]/app", "[::1]/app"),
        s("[::1]:5000/app", "[::1]:5000/app"),
        s("[2001:db8::1]:5000/app:tag", "[2001:db8::1]:5000/app:tag"),
        s("[2001:DB8::1]/app", "[2001:DB8::1]/app"),
        s("[::]/app", "[::]/app"),
        s("[::1]:5000", "!format"),
        s("[2001:db8::1]", "!format"),
        s("::1/app", "!format"),
        s("[fe80::1%eth0]/app", "!format"),
        s("[::ffff:1.2.3.4]/app", "!format"),
        s("[::1/app", "!format"),
        s("[]/app", "!format"),
        s("[::1]:/app", "!format"),
        s("[::1]x/app", "!format"),
        // an invalid host that is still a valid path component parses with no domain
        s("foo_bar.com/app", "foo_bar.com/app"),
        s("exa_mple.com/app", "exa_mple.com/app"),
        s("-example.com/app", "!format"),
        s("example-.com/app", "!format"),
        // path components and separators
        s("a-b/c", "docker.io/a-b/c"),
        s("a--b/c", "docker.io/a--b/c"),
        s("a__b/c", "docker.io/a__b/c"),
        s("a_b/c", "docker.io/a_b/c"),
        s("a.b/c.d", "a.b/c.d"),
        s("a.b/c-d_e.f", "a.b/c-d_e.f"),
        s("a.b/c__d", "a.b/c__d"),
        s("a.b/c---d", "a.b/c---d"),
        s("a___b/c", "!format"),
        s("a._b", "!format"),
        s("a.b/c..d", "!format"),
        s("a.b/c-", "!format"),
        s("a.b/-c", "!format"),
        s("a.b/c_", "!format"),
        s("a.b/_c", "!format"),
        s("a-", "!format"),
        s("-a", "!format"),
        s("a_", "!format"),
        s(".a", "!format"),
        s("a//b", "!format"),
        s("/a", "!format"),
        s("a/", "!format"),
        s("registry.example.com/", "!format"),
        s("docker.io/", "!format"),
        s("a.b/c/-/d", "!format"),
        // whitespace, schemes, queries and other characters
        s(" nginx", "!format"),
        s("nginx ", "!format"),
        s("nginx\n", "!format"),
        s("nginx\t", "!format"),
        s("ng inx", "!format"),
        s("ngínx", "!format"),
        s("https://registry.example.com/app", "!format"),
        s("registry.example.com/app?x=1", "!format"),
        s("registry.example.com/app#x", "!format"),
        s("", "!empty"),
        // tags
        s("nginx:_1", "docker.io/library/nginx:_1"),
        s("nginx:A", "docker.io/library/nginx:A"),
        s("a.b/c:TAG_1.0-rc", "a.b/c:TAG_1.0-rc"),
        s("nginx:", "!format"),
        s("nginx::1", "!format"),
        s("nginx:-1", "!format"),
        s("nginx:.1", "!format"),
        s("nginx:a+b", "!format"),
        s("nginx:a/b", "!format"),
        s("nginx:1.25:1.26", "!format"),
        // digests: after the tag, a registered algorithm, its exact length, lower-case hex
        (format!("nginx@{d}"), format!("docker.io/library/nginx@{d}")),
        (
            format!("nginx:1.25@{d}"),
            format!("docker.io/library/nginx:1.25@{d}"),
        ),
        (
            format!("nginx:latest@{d}"),
            format!("docker.io/library/nginx:latest@{d}"),
        ),
        (format!("a.b:5000/c/d:e@{d}"), format!("a.b:5000/c/d:e@{d}")),
        (
            format!("foo/bar:tag@{d512}"),
            format!("docker.io/foo/bar:tag@{d512}"),
        ),
        (
            format!("nginx@{d512}"),
            format!("docker.io/library/nginx@{d512}"),
        ),
        (
            format!("nginx@sha256:{}", SHA256.to_uppercase()),
            "!digest".into(),
        ),
        (format!("nginx@sha256:{}", &SHA256[..63]), "!length".into()),
        (format!("nginx@sha256:{SHA256}0"), "!length".into()),
        (format!("nginx@sha512:{SHA256}"), "!length".into()),
        (
            format!("nginx@sha384:{SHA256}{}", &SHA256[..32]),
            "!alg".into(),
        ),
        (format!("nginx@md5:{}", &SHA256[..32]), "!alg".into()),
        (format!("foo@sha256+b64:{SHA256}"), "!alg".into()),
        (format!("foo@sha_256:{SHA256}"), "!format".into()),
        (format!("foo@sha_x256:{SHA256}"), "!alg".into()),
        (format!("nginx@sha256:{}", &SHA256[..31]), "!format".into()),
        (format!("foo@1sha:{SHA256}"), "!format".into()),
        (format!("foo@SHA256:{SHA256}"), "!upper".into()),
        (format!("nginx@{d}:tag"), "!format".into()),
        (format!("nginx@{d}@{d}"), "!format".into()),
        (format!("nginx@@{d}"), "!format".into()),
        (format!("@{d}"), "!format".into()),
        s("nginx@latest", "!format"),
        s("nginx@", "!format"),
        // 64 hex characters alone are an image ID
        (SHA256.to_owned(), "!hex".into()),
        (
            format!("docker.io/{SHA256}"),
            format!("docker.io/library/{SHA256}"),
        ),
        (SHA256.to_uppercase(), "!upper".into()),
        (
            SHA256[..63].to_owned(),
            format!("docker.io/library/{}", &SHA256[..63]),
        ),
        (format!("{SHA256}a"), format!("docker.io/library/{SHA256}a")),
    ];
    // Lengths: tags up to 128; paths up to 255 with library/ counted and the domain not.
    let tag128 = "t".repeat(128);
    c.push((format!("a.b/c:{tag128}"), format!("a.b/c:{tag128}")));
    c.push((format!("a.b/c:{tag128}x"), "!format".into()));
    let p255 = "p".repeat(255);
    c.push((
        format!("registry.example.com/{p255}"),
        format!("registry.example.com/{p255}"),
    ));
    c.push((format!("registry.example.com/{p255}p"), "!long".into()));
    c.push((
        "p".repeat(247),
        format!("docker.io/library/{}", "p".repeat(247)),
    ));
    c.push(("p".repeat(248), "!long".into()));
    let long_domain = format!("{}.com", "a".repeat(300));
    c.push((format!("{long_domain}/app"), format!("{long_domain}/app")));
    c.push((
        format!("foo_bar.com/{}", "p".repeat(243)),
        format!("foo_bar.com/{}", "p".repeat(243)),
    ));
    c.push((format!("foo_bar.com/{}", "p".repeat(244)), "!long".into()));
    c
}

#[test]
fn reference_table() {
    let cases = cases();
    assert!(cases.len() >= 150, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for (input, expected) in &cases {
        let got = match Reference::parse(input) {
            Ok(r) => r.to_string(),
            Err(e) => class(&e).to_owned(),
        };
        if &got != expected {
            failures.push(format!("{input:?}: expected {expected}, got {got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn parts_are_kept_byte_for_byte() {
    let r = Reference::parse(&format!("Reg.Example.com:5000/a/b:V1.0_x@sha256:{SHA256}")).unwrap();
    assert_eq!(r.domain(), "Reg.Example.com:5000");
    assert_eq!(r.path(), "a/b");
    assert_eq!(r.tag(), Some("V1.0_x"));
    assert_eq!(r.digest(), Some(format!("sha256:{SHA256}").as_str()));
    assert!(r.domain_written());
    assert_eq!(r.suffix(), format!(":V1.0_x@sha256:{SHA256}"));

    let hub = Reference::parse("rancher/rke-tools").unwrap();
    assert!(!hub.domain_written(), "Docker Hub was implied, not written");
    assert_eq!(
        (hub.domain(), hub.path(), hub.tag()),
        ("docker.io", "rancher/rke-tools", None)
    );
    assert!(Reference::parse("docker.io/rancher/rke-tools")
        .unwrap()
        .domain_written());

    let quirk = Reference::parse("foo_bar.com/app").unwrap();
    assert_eq!((quirk.domain(), quirk.path()), ("", "foo_bar.com/app"));
}

#[test]
fn errors_say_what_is_wrong() {
    let msg = |s: &str| Reference::parse(s).unwrap_err().to_string();
    assert!(msg("Nginx").contains("lowercase"));
    assert!(msg(&format!("nginx@sha256:{}", &SHA256[..63])).contains("64"));
    assert!(msg(&format!("nginx@md5:{}", &SHA256[..32])).contains("md5"));
    assert!(msg(SHA256).contains("image ID"));
    assert!(msg(&"p".repeat(248)).contains("256"));
    assert!(msg("nginx:-1").contains("tag"));
}
