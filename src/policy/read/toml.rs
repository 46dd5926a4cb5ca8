//! TOML pasted into the policy as a YAML string (registries.conf, hosts.toml), parsed with
//! toml_edit, which keeps the byte span of every key and value, each mapped back to the policy's
//! own line and column.

use std::ops::Range;

use toml_edit::{Item, TableLike, Value};

use super::super::diagnostics::closest;
use super::super::document::Spanned;
use super::super::Severity;
use super::Reader;
use crate::yaml::{Node, Pos};

/// Where an embedded text's bytes stand in the policy.
#[derive(Debug, Clone, Copy)]
struct Place {
    /// The node itself, for texts whose lines are not the policy's (quoted, folded).
    pos: Pos,
    /// A literal block's first content line and indentation, when its lines are the policy's.
    block: Option<(usize, usize)>,
}

impl Place {
    /// A literal block (`|`) keeps each line as written, so a TOML line is a policy line, shifted
    /// by the indentation; any other scalar maps to where it starts. The parser marks a block
    /// either at its `|` or at its first line; both are checked against the text itself.
    fn of(source: &str, node: &Node, text: &str) -> Place {
        let line_of = |n: usize| source.lines().nth(n.wrapping_sub(1));
        let literal_header = |l: &str| {
            let t = l.trim_end();
            let indicator =
                t.trim_end_matches(|c: char| c == '-' || c == '+' || c.is_ascii_digit());
            indicator.ends_with('|')
        };
        let first_text = text.lines().position(|l| !l.trim().is_empty());
        let block = first_text.and_then(|skipped| {
            let first = text.lines().nth(skipped)?;
            // The header is the marked line, or the first line above it that is not blank.
            let header = (1..=node.pos.line).rev().find(|&n| {
                n == node.pos.line && line_of(n).is_some_and(literal_header)
                    || n < node.pos.line && line_of(n).is_some_and(|l| !l.trim().is_empty())
            })?;
            if !line_of(header).is_some_and(literal_header) {
                return None;
            }
            let line = line_of(header + 1 + skipped)?;
            let indent = line.find(first).filter(|&i| line[..i].trim().is_empty())?;
            Some((header + 1, indent))
        });
        Place {
            pos: node.pos,
            block,
        }
    }

    fn at(&self, text: &str, offset: usize) -> Pos {
        let Some((first, indent)) = self.block else {
            return self.pos;
        };
        let before = text.get(..offset).unwrap_or(text);
        let line = before.matches('\n').count();
        let col = before
            .rsplit('\n')
            .next()
            .unwrap_or_default()
            .chars()
            .count();
        Pos {
            line: first + line,
            col: indent + col + 1,
        }
    }
}

/// Reads one embedded TOML text, reporting into the policy's diagnostics.
pub(super) struct Toml<'r, 'p, 't> {
    pub r: &'r mut Reader<'p>,
    text: &'t str,
    place: Place,
    /// How paths start: `registries.conf`, `certs.d[docker.io]`.
    pub file: String,
}

impl<'r, 'p, 't> Toml<'r, 'p, 't> {
    /// Parses `node`'s text; `None` (with an error) when it is not a string or not TOML.
    pub fn parse(
        r: &'r mut Reader<'p>,
        node: &'t Node,
        file: String,
        what: &str,
    ) -> Option<(Self, toml_edit::Document<&'t str>)> {
        let Some(text) = node.as_str() else {
            r.error(
                node.pos,
                &file,
                format!(
                    "expected the {what} text as a string (`{file}: |` and the file below it), found {}",
                    node.type_name()
                ),
            );
            return None;
        };
        let place = Place::of(r.source, node, text);
        let toml = Toml {
            r,
            text,
            place,
            file,
        };
        match toml_edit::Document::parse(text) {
            Ok(doc) => Some((toml, doc)),
            Err(e) => {
                let pos = toml.at(e.span());
                let message = format!("not valid TOML: {}", e.message().trim_end());
                toml.r.error(pos, &toml.file, message);
                None
            }
        }
    }

    pub fn at(&self, span: Option<Range<usize>>) -> Pos {
        match span {
            Some(s) => self.place.at(self.text, s.start),
            None => self.place.pos,
        }
    }

    /// The position of an item's value.
    pub fn item_at(&self, item: &Item) -> Pos {
        self.at(item.span())
    }

    pub fn path(&self, rest: &str) -> String {
        if rest.is_empty() {
            self.file.clone()
        } else {
            format!("{} {rest}", self.file)
        }
    }

    pub fn error(&mut self, pos: Pos, rest: &str, message: impl Into<String>) {
        let path = self.path(rest);
        self.r.error(pos, &path, message);
    }

    fn wrong_type(&mut self, item: &Item, rest: &str, expected: &str) {
        let found = item.type_name();
        let pos = self.item_at(item);
        self.error(
            pos,
            rest,
            format!("expected {expected}, found {found}: the runtime refuses the whole file"),
        );
    }

    pub fn string(&mut self, item: &Item, rest: &str) -> Option<Spanned<String>> {
        match item.as_str() {
            Some(s) => Some(Spanned {
                value: s.to_owned(),
                pos: self.item_at(item),
            }),
            None => {
                self.wrong_type(item, rest, "a string");
                None
            }
        }
    }

    pub fn bool(&mut self, item: &Item, rest: &str) -> Option<bool> {
        let b = item.as_bool();
        if b.is_none() {
            self.wrong_type(item, rest, "true or false");
        }
        b
    }

    /// An array of strings; a single string counts as one (hosts.toml's `ca` and `client`).
    pub fn strings(&mut self, item: &Item, rest: &str, one_allowed: bool) -> Vec<Spanned<String>> {
        if one_allowed && item.is_str() {
            return self.string(item, rest).into_iter().collect();
        }
        let Some(array) = item.as_array() else {
            self.wrong_type(item, rest, "an array of strings");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, v) in array.iter().enumerate() {
            match v {
                Value::String(s) => out.push(Spanned {
                    value: s.value().clone(),
                    pos: self.at(v.span()),
                }),
                _ => {
                    let pos = self.at(v.span());
                    let message = format!("expected a string, found {}", v.type_name());
                    self.error(pos, &format!("{rest}[{i}]"), message);
                }
            }
        }
        out
    }

    /// The tables of `[[name]]` or `name = [{..}]`, with where each starts.
    pub fn tables<'i>(&mut self, item: &'i Item, rest: &str) -> Vec<(&'i dyn TableLike, Pos)> {
        if let Some(aot) = item.as_array_of_tables() {
            return aot
                .iter()
                .map(|t| (t as &dyn TableLike, self.at(t.span())))
                .collect();
        }
        if let Some(array) = item.as_array() {
            let mut out = Vec::new();
            for v in array.iter() {
                match v.as_inline_table() {
                    Some(t) => out.push((t as &dyn TableLike, self.at(v.span()))),
                    None => self.wrong_type(item, rest, "an array of tables"),
                }
            }
            return out;
        }
        self.wrong_type(item, rest, "an array of tables");
        Vec::new()
    }

    /// A table's keys with where each is written.
    pub fn entries<'i>(&self, table: &'i dyn TableLike) -> Vec<(&'i str, Pos, &'i Item)> {
        table
            .iter()
            .map(|(k, item)| {
                let pos = table
                    .get_key_value(k)
                    .map_or(self.place.pos, |(key, _)| self.at(key.span()));
                (k, pos, item)
            })
            .collect()
    }

    /// A key the runtime does not read: it ignores it, so this is a warning.
    pub fn unknown(&mut self, pos: Pos, name: &str, rest: &str, known: &[&str]) {
        let hint = closest(name, known)
            .map(|k| format!("did you mean `{k}`?"))
            .unwrap_or_else(|| format!("known keys here: {}", known.join(", ")));
        let path = self.path(rest);
        self.r.push(
            Severity::Warning,
            pos,
            &path,
            format!("unknown key `{name}`: the runtime ignores it, and so does the webhook"),
            Some(hint),
        );
    }
}
