//! The layering the README describes, checked on the source: the pure core (reference, yaml,
//! policy, verdict, dockerconfig, rewrite, mutate, dryrun, admission, audit, ecr, credprovider,
//! ...: CORE below) imports no I/O crate and no
//! module outside the core, directly or through another module, and the modules import one
//! another without a loop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const CORE: &[&str] = &[
    "reference",
    "yaml",
    "policy",
    "verdict",
    "dockerconfig",
    "rewrite",
    "mutate",
    "dryrun",
    "admission",
    "names",
    "sync",
    "redacted",
    "ecr",
    "credprovider",
    "audit",
    "duration",
];
const IO_CRATES: &[&str] = &[
    "reqwest",
    "kube",
    "k8s_openapi",
    "tokio",
    "tokio_rustls",
    "hyper",
    "hyper_util",
    "axum",
    "tower",
    "rustls",
];

/// Top-level module → the text of its files (`src/x.rs` or `src/x/**.rs`).
fn modules() -> BTreeMap<String, String> {
    fn read_dir(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                read_dir(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" || name == "main" {
            continue;
        }
        let mut text = String::new();
        if path.is_dir() {
            read_dir(&path, &mut text);
        } else if path.extension().is_some_and(|e| e == "rs") {
            text = std::fs::read_to_string(&path).unwrap();
        } else {
            continue;
        }
        out.insert(name, without_tests_and_comments(&text));
    }
    out
}

/// The code of a file without its `#[cfg(test)]` module and comments.
fn without_tests_and_comments(text: &str) -> String {
    let code = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `code` names `word` as a path root (`word::`), not as part of a longer name.
fn names_root(code: &str, word: &str) -> bool {
    code.match_indices(&format!("{word}::")).any(|(i, _)| {
        code[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'))
    })
}

fn imports(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    mods.iter()
        .map(|(name, code)| {
            let deps = mods
                .keys()
                .filter(|other| *other != name && code.contains(&format!("crate::{other}")))
                .cloned()
                .collect();
            (name.clone(), deps)
        })
        .collect()
}

#[test]
fn the_pure_core_imports_no_io() {
    let mods = modules();
    for name in CORE {
        let code = mods
            .get(*name)
            .unwrap_or_else(|| panic!("no module {name}"));
        for krate in IO_CRATES {
            assert!(!names_root(code, krate), "core module {name} uses {krate}");
        }
    }
    // Through another module: everything the core imports is core.
    let graph = imports(&mods);
    for name in CORE {
        for dep in &graph[*name] {
            assert!(
                CORE.contains(&dep.as_str()),
                "core module {name} imports {dep}, which is not core"
            );
        }
    }
}

#[test]
fn the_modules_import_one_another_without_a_loop() {
    let graph = imports(&modules());
    // Depth-first search for a back edge.
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == n) {
            panic!("import loop: {} -> {n}", path[i..].join(" -> "));
        }
        if done.contains(n) {
            return;
        }
        path.push(n.to_owned());
        for d in &graph[n] {
            visit(d, graph, path, done);
        }
        path.pop();
        done.insert(n.to_owned());
    }
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        visit(n, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_checks_see_the_modules() {
    // A check over nothing would pass: make sure it reads what it judges.
    let graph = imports(&modules());
    assert!(graph["mutate"].contains("rewrite"));
    assert!(graph["verify"].contains("verdict"));
    assert!(names_root(&modules()["verify"], "reqwest"));
}
