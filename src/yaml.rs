//! YAML documents as trees that remember where each node stands, so that policy errors can name a
//! line and column, plus conversion to JSON for Kubernetes objects.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Deeper nesting than this is refused: no policy or object needs it, and it bounds recursion.
const MAX_DEPTH: usize = 128;

/// How large a text's tree may grow, scaled to the text so that a few bytes of anchors cannot
/// expand into megabytes: a text without aliases always fits (a node takes at least two bytes
/// of text, Kubernetes YAML about ten), and aliases may add little beyond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Budget {
    nodes: usize,
    bytes: usize,
}

impl Budget {
    fn for_text(text: &str) -> Self {
        Budget {
            nodes: 10_000 + text.len() / 4,
            bytes: 64 * 1024 + 2 * text.len(),
        }
    }
}

/// A place in a YAML text, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        Pos {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `plain` is false for quoted and block scalars, which are always strings.
    Scalar {
        value: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: Kind,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, plain: true } if matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    pub fn as_bool(&self) -> Option<bool> {
        match &self.kind {
            Kind::Scalar { value, plain: true } => match value.as_str() {
                "true" | "True" | "TRUE" => Some(true),
                "false" | "False" | "FALSE" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar { .. } if self.is_null() => "null",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    /// The JSON value of this node with the YAML 1.2 core schema: plain scalars may be null, booleans
    /// or numbers; quoted ones are strings. Mapping keys become strings.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            Kind::Scalar { value, plain } => {
                if !plain {
                    return Value::String(value.clone());
                }
                if self.is_null() {
                    return Value::Null;
                }
                if let Some(b) = self.as_bool() {
                    return Value::Bool(b);
                }
                if let Some(n) = plain_number(value) {
                    return n;
                }
                Value::String(value.clone())
            }
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.as_str().unwrap_or_default().to_owned(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

fn plain_number(v: &str) -> Option<serde_json::Value> {
    let looks_numeric = v
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
        && v.bytes().any(|b| b.is_ascii_digit());
    if !looks_numeric {
        return None;
    }
    if let Ok(i) = v.parse::<i64>() {
        return Some(i.into());
    }
    let f = v.parse::<f64>().ok()?;
    serde_json::Number::from_f64(f).map(serde_json::Value::Number)
}

/// Parses every document in `text`. Empty documents are returned as null scalars.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, YamlError> {
    let mut builder = Builder::new(Budget::for_text(text));
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| YamlError {
        pos: (*e.marker()).into(),
        message: e.info().to_owned(),
    })?;
    match builder.error {
        Some(e) => Err(e),
        None => Ok(builder.docs),
    }
}

/// Parses a text that must hold at most one document; none gives a null scalar.
pub fn parse_single(text: &str) -> Result<Node, YamlError> {
    let mut docs = parse_documents(text)?;
    if docs.len() > 1 {
        return Err(YamlError {
            pos: docs[1].pos,
            message: "a policy is one YAML document; this text holds several".into(),
        });
    }
    Ok(docs.pop().unwrap_or(Node {
        kind: Kind::Scalar {
            value: String::new(),
            plain: true,
        },
        pos: Pos { line: 1, col: 1 },
    }))
}

struct Builder {
    docs: Vec<Node>,
    /// Open collections; a mapping's pending key waits in `keys`.
    stack: Vec<(Node, usize)>,
    keys: Vec<Option<Node>>,
    anchors: HashMap<usize, Node>,
    budget: Budget,
    /// Nodes and scalar bytes built so far, aliases expanded.
    nodes: usize,
    bytes: usize,
    starts: usize,
    error: Option<YamlError>,
}

impl Builder {
    fn new(budget: Budget) -> Self {
        Builder {
            docs: Vec::new(),
            stack: Vec::new(),
            keys: Vec::new(),
            anchors: HashMap::new(),
            budget,
            nodes: 0,
            bytes: 0,
            starts: 0,
            error: None,
        }
    }
}

impl Builder {
    fn fail(&mut self, pos: Pos, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(YamlError {
                pos,
                message: message.into(),
            });
        }
    }

    fn open(&mut self, kind: Kind, anchor: usize, pos: Pos) {
        if self.stack.len() >= MAX_DEPTH {
            self.fail(pos, format!("nesting deeper than {MAX_DEPTH} levels"));
            return;
        }
        if matches!(kind, Kind::Map(_)) {
            self.keys.push(None);
        }
        self.stack.push((Node { kind, pos }, anchor));
    }

    fn close(&mut self) {
        if let Some((node, anchor)) = self.stack.pop() {
            if matches!(node.kind, Kind::Map(_)) {
                self.keys.pop();
            }
            self.insert(node, anchor);
        }
    }

    /// Counts `nodes` and `bytes` more; false (and the error set) past the budget.
    fn spend(&mut self, nodes: usize, bytes: usize, pos: Pos) -> bool {
        self.nodes = self.nodes.saturating_add(nodes);
        self.bytes = self.bytes.saturating_add(bytes);
        let Budget { nodes: n, bytes: b } = self.budget;
        if self.nodes > n || self.bytes > b {
            self.fail(
                pos,
                format!("the document expands past {n} nodes or {b} bytes of text, more than its size allows (aliases?)"),
            );
            return false;
        }
        true
    }

    fn insert(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some((parent, _)) = self.stack.last_mut() else {
            self.docs.push(node);
            return;
        };
        match &mut parent.kind {
            Kind::Seq(items) => items.push(node),
            Kind::Map(entries) => {
                let Some(slot) = self.keys.last_mut() else {
                    return;
                };
                match slot.take() {
                    None => {
                        if !matches!(node.kind, Kind::Scalar { .. }) {
                            let pos = node.pos;
                            self.fail(pos, "mapping keys must be scalars");
                            return;
                        }
                        *slot = Some(node);
                    }
                    Some(key) => {
                        if let Some((first, _)) =
                            entries.iter().find(|(k, _)| k.as_str() == key.as_str())
                        {
                            let (pos, name, first) = (
                                key.pos,
                                key.as_str().unwrap_or_default().to_owned(),
                                first.pos,
                            );
                            self.fail(pos, format!("duplicate key `{name}` (first at {first})"));
                            return;
                        }
                        entries.push((key, node));
                    }
                }
            }
            Kind::Scalar { .. } => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let pos = Pos::from(mark);
        match ev {
            Event::Scalar(value, style, anchor, _tag) => {
                if !self.spend(1, value.len(), pos) {
                    return;
                }
                let plain = style == TScalarStyle::Plain;
                self.insert(
                    Node {
                        kind: Kind::Scalar { value, plain },
                        pos,
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, _) if self.spend(1, 0, pos) => {
                self.open(Kind::Seq(Vec::new()), anchor, pos)
            }
            Event::MappingStart(anchor, _) if self.spend(1, 0, pos) => {
                self.open(Kind::Map(Vec::new()), anchor, pos)
            }
            Event::SequenceEnd | Event::MappingEnd => self.close(),
            Event::Alias(id) => match self.anchors.get(&id).map(count) {
                Some((nodes, bytes)) => {
                    // Counted before the copy is made.
                    if self.spend(nodes, bytes, pos) {
                        if let Some(mut node) = self.anchors.get(&id).cloned() {
                            node.pos = pos;
                            self.insert(node, 0);
                        }
                    }
                }
                None => self.fail(pos, "alias to an unknown anchor"),
            },
            Event::DocumentStart => self.starts += 1,
            // An empty document: keep its place so callers can count documents.
            Event::DocumentEnd if self.stack.is_empty() && self.docs.len() < self.starts => {
                self.docs.push(Node {
                    kind: Kind::Scalar {
                        value: String::new(),
                        plain: true,
                    },
                    pos,
                });
            }
            _ => {}
        }
    }
}

/// Nodes and scalar bytes in a tree.
fn count(node: &Node) -> (usize, usize) {
    let add = |(n, b): (usize, usize), (m, c): (usize, usize)| (n + m, b + c);
    match &node.kind {
        Kind::Scalar { value, .. } => (1, value.len()),
        Kind::Seq(items) => items.iter().map(count).fold((1, 0), add),
        Kind::Map(entries) => entries
            .iter()
            .map(|(k, v)| add(count(k), count(v)))
            .fold((1, 0), add),
    }
}

/// Renders a JSON value as YAML, for `-o yaml`.
pub fn to_yaml(value: &serde_json::Value) -> Result<String, yaml_rust2::EmitError> {
    fn convert(v: &serde_json::Value) -> yaml_rust2::Yaml {
        use serde_json::Value;
        use yaml_rust2::Yaml;
        match v {
            Value::Null => Yaml::Null,
            Value::Bool(b) => Yaml::Boolean(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Yaml::Integer(i),
                None => Yaml::Real(n.to_string()),
            },
            Value::String(s) => Yaml::String(s.clone()),
            Value::Array(items) => Yaml::Array(items.iter().map(convert).collect()),
            Value::Object(map) => Yaml::Hash(
                map.iter()
                    .map(|(k, v)| (Yaml::String(k.clone()), convert(v)))
                    .collect(),
            ),
        }
    }
    let mut out = String::new();
    yaml_rust2::YamlEmitter::new(&mut out).dump(&convert(value))?;
    Ok(out)
}
