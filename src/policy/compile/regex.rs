//! Rewrite rules and exclude.images: regexes built small and bounded, and replacements checked
//! for groups the regex lacks and paths no registry accepts.

use std::collections::HashSet;

use regex::bytes::{Regex, RegexSet};

use crate::policy::diagnostics::Diagnostics;
use crate::policy::document::{Document, Spanned};
use crate::policy::Severity;
use crate::yaml::Pos;

/// A built regex may not grow past this; it bounds memory and compile time for hostile input.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Regexes in one policy (rewrite rules and exclude.images). A compiled regex takes about 15 KB,
/// so this bounds them to about 15 MB; real policies have tens.
pub const MAX_REGEXES: usize = 1_000;

/// Counts the regexes of one policy as they are built, refusing past `MAX_REGEXES`.
#[derive(Default)]
pub(super) struct Regexes {
    built: usize,
}

impl Regexes {
    pub fn build(
        &mut self,
        r: &mut Diagnostics,
        pat: &Spanned<String>,
        path: &str,
    ) -> Option<Regex> {
        self.built += 1;
        if self.built > MAX_REGEXES {
            if self.built == MAX_REGEXES + 1 {
                r.error(
                pat.pos,
                path,
                format!("more than {MAX_REGEXES} regexes (rewrite rules and exclude.images) in one policy; the rest are not read"),
            );
            }
            return None;
        }
        // The names and paths matched are ASCII: without Unicode a regex is smaller and matches the
        // same. A pattern that needs Unicode (a `\p{..}` class, say) keeps it.
        let build = |unicode: bool| {
            regex::bytes::RegexBuilder::new(&pat.value)
                .unicode(unicode)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
        };
        match build(false).or_else(|_| build(true)) {
            Ok(re) => Some(re),
            Err(e) => {
                let detail = e.to_string();
                let why = detail
                    .lines()
                    .last()
                    .unwrap_or("invalid regex")
                    .trim()
                    .trim_start_matches("error: ");
                r.error(
                    pat.pos,
                    path,
                    format!("invalid regex `{}`: {why}", pat.value),
                );
                None
            }
        }
    }
}

/// `exclude.images`: the set, and the patterns as written for dry-run's explanations.
pub(super) fn exclude_images(
    r: &mut Diagnostics,
    regexes: &mut Regexes,
    doc: &Document,
) -> (RegexSet, Vec<String>) {
    let mut patterns = Vec::new();
    for (i, pat) in doc.exclude_images.iter().enumerate() {
        if regexes
            .build(r, pat, &format!("exclude.images[{i}]"))
            .is_some()
        {
            patterns.push(pat.value.clone());
        }
    }
    (build_set(r, &patterns, "exclude.images"), patterns)
}

/// One automaton over a list of regexes that each compiled alone; it can still fail on size.
pub(super) fn build_set<S: AsRef<str>>(
    r: &mut Diagnostics,
    patterns: &[S],
    path: &str,
) -> RegexSet {
    let build = |unicode: bool| {
        regex::bytes::RegexSetBuilder::new(patterns)
            .unicode(unicode)
            .size_limit(REGEX_SIZE_LIMIT.saturating_mul(patterns.len().max(1)))
            .build()
    };
    match build(false).or_else(|_| build(true)) {
        Ok(set) => set,
        Err(e) => {
            r.error(
                Pos::default(),
                path,
                format!("these regexes together are too large: {e}"),
            );
            RegexSet::empty()
        }
    }
}

/// A replacement that names a group the regex lacks expands to nothing, which is never meant:
/// `$1_x` names group `1_x`, not group 1 followed by `_x`.
pub(super) fn check_replacement(
    r: &mut Diagnostics,
    regex: &Regex,
    rep: &Spanned<String>,
    path: &str,
) {
    let names: HashSet<&str> = regex.capture_names().flatten().collect();
    let groups = regex.captures_len();
    let b = rep.value.as_bytes();
    let mut i = 0;
    // The text between group references, which every rewritten path contains as written.
    let mut literals: Vec<&str> = Vec::new();
    let mut literal_start = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        if b.get(i + 1) == Some(&b'$') {
            i += 2;
            continue;
        }
        literals.push(&rep.value[literal_start..i]);
        let (name, braced, next) = if b.get(i + 1) == Some(&b'{') {
            match rep.value[i + 2..].find('}') {
                Some(end) => (&rep.value[i + 2..i + 2 + end], true, i + 3 + end),
                None => ("", true, b.len()),
            }
        } else {
            let len = b[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                .count();
            (&rep.value[i + 1..i + 1 + len], false, i + 1 + len)
        };
        i = next.max(i + 1);
        literal_start = i;
        if name.is_empty() {
            continue;
        }
        let exists = match name.parse::<usize>() {
            Ok(n) => n < groups,
            Err(_) => names.contains(name),
        };
        if !exists {
            let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
            let hint = (!braced && !digits.is_empty() && digits.len() < name.len()).then(|| {
                format!(
                    "write `${{{digits}}}{}` for group {digits} followed by `{}`",
                    &name[digits.len()..],
                    &name[digits.len()..]
                )
            });
            r.push(
                Severity::Error,
                rep.pos,
                path,
                format!("the replacement names group `{name}`, which the regex does not have (it would expand to nothing)"),
                hint,
            );
        }
    }
    literals.push(&rep.value[literal_start..]);
    if let Some(why) = never_a_path(&literals) {
        r.push(
            Severity::Warning,
            rep.pos,
            path,
            format!("every path this replacement makes is an invalid image reference: {why}; such images are left as they are"),
            Some("repository paths are lower-case letters, digits and `.`, `_`, `-` between `/`-separated components".into()),
        );
    }
}

/// Why text that every rewritten path contains makes it invalid, if it does: characters a
/// repository path never has, an empty path or component, a leading or trailing `/`, or a
/// component that starts or ends with a separator (`.`, `_`, `-`: `-x`, `../x`, `x-/y`).
fn never_a_path(literals: &[&str]) -> Option<String> {
    let allowed = |c: char| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-' | '/');
    let separator = |c: char| matches!(c, '.' | '_' | '-');
    if literals.iter().all(|l| l.is_empty()) && literals.len() == 1 {
        return Some("it is empty".into());
    }
    for lit in literals {
        if let Some(c) = lit.chars().find(|c| !allowed(*c)) {
            return Some(format!("it contains `{c}`"));
        }
        if lit.contains("//") {
            return Some("it contains `//`".into());
        }
        for (i, _) in lit.match_indices('/') {
            let (before, after) = (&lit[..i], &lit[i + 1..]);
            if let Some(c) = before.chars().next_back().filter(|c| separator(*c)) {
                return Some(format!("a path component ends with `{c}`"));
            }
            if let Some(c) = after.chars().next().filter(|c| separator(*c)) {
                return Some(format!("a path component starts with `{c}`"));
            }
        }
    }
    let first = literals.first().copied().unwrap_or_default();
    let last = literals.last().copied().unwrap_or_default();
    if first.starts_with('/') {
        return Some("it starts with `/`".into());
    }
    if last.ends_with('/') {
        return Some("it ends with `/`".into());
    }
    if let Some(c) = first.chars().next().filter(|c| separator(*c)) {
        return Some(format!("it starts with `{c}`"));
    }
    if let Some(c) = last.chars().next_back().filter(|c| separator(*c)) {
        return Some(format!("it ends with `{c}`"));
    }
    None
}
