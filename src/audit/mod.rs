//! What the policy would do to a running cluster (pure): workloads in, one decision per distinct
//! image with the workloads that use it, a summary by source registry and mirror, and the
//! renderings a person or a CI job reads. `cli` lists the cluster and checks the mirrors.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::mutate::Operation;
use crate::policy::Policy;
use crate::rewrite::Decision;
use crate::verdict::{Absence, Presence, Verdict};

mod render;

/// Whether an object of `kind` is audited on its own: not when its controller's template is
/// audited already (a Deployment's ReplicaSets, a CronJob's Jobs, the Pods of any listed kind).
pub fn audited_alone(kind: &str, object: &Value) -> bool {
    let controller = object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|o| o.get("kind").and_then(Value::as_str));
    match (kind, controller) {
        (_, None) => true,
        ("ReplicaSet", Some(owner)) => owner != "Deployment",
        ("Job", Some(owner)) => owner != "CronJob",
        ("Pod", Some(owner)) => crate::mutate::workload(owner).is_none(),
        _ => true,
    }
}

/// What an image comes to under the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    /// Rewritten to a mirror.
    Change,
    /// Left as it is: no mirror for it, or already on one.
    Unchanged,
    /// Left alone by an exclusion.
    Excluded,
    /// Not a valid reference.
    Invalid,
    /// No source could serve it: admission would refuse the Pod (or warn, `unpullable: warn`).
    Refused,
}

impl Status {
    fn of(d: &Decision) -> Status {
        if d.error.is_some() {
            Status::Invalid
        } else if d.denied {
            Status::Refused
        } else if d.excluded {
            Status::Excluded
        } else if d.changed() {
            Status::Change
        } else {
            Status::Unchanged
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Status::Change => "change",
            Status::Unchanged => "unchanged",
            Status::Excluded => "excluded",
            Status::Invalid => "invalid",
            Status::Refused => "refused",
        }
    }
}

/// What the mirror said about an image that would be rewritten (`--verify`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorCheck {
    /// `present`, `missing` (every endpoint said not found) or `unknown` (an endpoint could not say).
    pub result: &'static str,
    /// The endpoint that has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub tried: Vec<crate::verdict::Tried>,
}

impl MirrorCheck {
    pub fn of(v: &Verdict) -> MirrorCheck {
        let result = if v.chosen.is_some() {
            "present"
        } else if !v.tried.is_empty()
            && v.tried.iter().all(|t| {
                matches!(
                    t.answer,
                    Presence::Absent {
                        kind: Absence::NotFound,
                        ..
                    }
                )
            })
        {
            "missing"
        } else {
            "unknown"
        };
        MirrorCheck {
            result,
            endpoint: v
                .chosen
                .and_then(|i| v.tried.get(i))
                .map(|t| t.endpoint.clone()),
            tried: v.tried.clone(),
        }
    }
}

/// One distinct image, as written in the cluster: its decision (image, normalized, result, rule,
/// reason, error), where it comes from, and who uses it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReport {
    #[serde(flatten)]
    pub decision: Arc<Decision>,
    /// The registry it is pulled from today.
    pub source: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorCheck>,
    /// `Kind/namespace/name` of every workload that uses it, sorted.
    pub workloads: Vec<String>,
}

/// One line of the summary: images from one source registry, and where they would go.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SummaryRow {
    pub source: String,
    /// The mirror registry the images would be pulled from; `-` when they would stay.
    pub mirror: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// How many workloads and images, and of the images how many in each state.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub workloads: usize,
    pub images: usize,
    pub would_change: usize,
    pub missing: usize,
    pub invalid: usize,
    pub excluded: usize,
    /// Images admission would refuse: no source the node would try can serve them.
    pub refused: usize,
}

impl Counts {
    fn count(&mut self, i: &ImageReport) {
        self.images += 1;
        self.would_change += usize::from(i.status == Status::Change);
        self.missing += usize::from(i.mirror.as_ref().is_some_and(|m| m.result == "missing"));
        self.invalid += usize::from(i.status == Status::Invalid);
        self.excluded += usize::from(i.status == Status::Excluded);
        self.refused += usize::from(i.status == Status::Refused);
    }
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditReport {
    /// Where the policy came from, and the hash `serve` logs and exports for it.
    pub policy: String,
    pub totals: Counts,
    pub summary: Vec<SummaryRow>,
    pub images: Vec<ImageReport>,
    /// Kinds that could not be listed (the audit of the rest stands).
    pub errors: Vec<String>,
    /// Whether `--verify` checked the mirrors.
    pub verified: bool,
}

/// The image decisions of workloads seen so far: each distinct image decided once (twice when
/// an exclusion leaves it alone in some namespaces only), with the workloads that use it; the
/// objects themselves are not kept.
#[derive(Default)]
pub struct Audit {
    /// By image and whether an exclusion left it alone.
    images: HashMap<(String, bool), Seen>,
    workloads: usize,
}

/// One image's decision and the `Kind/namespace/name` of the workloads that use it.
type Seen = (Arc<Decision>, BTreeSet<Arc<str>>);

impl Audit {
    /// Adds one object of `kind` (as listed; its `kind` field may be missing). Objects without a
    /// pod template are passed over.
    pub fn add(&mut self, policy: &Policy, kind: &str, mut object: Value) {
        if let Some(map) = object.as_object_mut() {
            map.insert("kind".into(), Value::String(kind.to_owned()));
        }
        let meta = |k: &str| {
            object
                .pointer(&format!("/metadata/{k}"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let id: Arc<str> = format!("{kind}/{}/{}", meta("namespace"), meta("name")).into();
        let options = crate::dryrun::Options::default();
        let Ok(m) = crate::dryrun::plan(policy, &object, None, &Operation::Create, options) else {
            return;
        };
        self.workloads += 1;
        for d in m.decisions {
            let entry = self
                .images
                .entry((d.decision.image.clone(), d.decision.excluded))
                .or_insert_with(|| (d.decision.clone(), BTreeSet::new()));
            entry.1.insert(id.clone());
        }
    }

    /// Takes in what another audit saw (a kind listed on its own).
    pub fn merge(&mut self, other: Audit) {
        self.workloads += other.workloads;
        for (image, (d, users)) in other.images {
            self.images
                .entry(image)
                .or_insert_with(|| (d, BTreeSet::new()))
                .1
                .extend(users);
        }
    }

    /// Workloads seen so far.
    pub fn workloads(&self) -> usize {
        self.workloads
    }

    /// The images that would be rewritten, for `--verify`.
    pub fn changing_images(&self) -> Vec<String> {
        let out: BTreeSet<&String> = self
            .images
            .iter()
            .filter(|(_, (d, _))| Status::of(d) == Status::Change)
            .map(|((i, _), _)| i)
            .collect();
        out.into_iter().cloned().collect()
    }

    /// The report, with what `--verify` found for each image (when it ran).
    pub fn report(
        self,
        policy: String,
        checks: Option<&HashMap<String, MirrorCheck>>,
        errors: Vec<String>,
    ) -> AuditReport {
        let mut images: Vec<ImageReport> = self
            .images
            .into_iter()
            .map(|((image, _), (d, workloads))| {
                // An exclusion decides before parsing, so the image itself names its registry.
                let source =
                    crate::reference::Reference::parse(d.normalized.as_deref().unwrap_or(&image))
                        .ok()
                        .filter(|_| d.error.is_none())
                        .map_or_else(|| "(invalid)".to_owned(), |r| r.domain().to_owned());
                let status = Status::of(&d);
                ImageReport {
                    mirror: checks
                        .filter(|_| status == Status::Change)
                        .and_then(|c| c.get(&image))
                        .cloned(),
                    decision: d,
                    source,
                    status,
                    workloads: workloads.iter().map(|w| w.to_string()).collect(),
                }
            })
            .collect();
        images.sort_by(|a, b| {
            (&a.source, &a.decision.image, a.status).cmp(&(&b.source, &b.decision.image, b.status))
        });
        let mut rows: BTreeMap<(String, String), (SummaryRow, BTreeSet<&str>)> = BTreeMap::new();
        let mut totals = Counts {
            workloads: self.workloads,
            ..Counts::default()
        };
        for i in &images {
            let mirror = match i.status {
                Status::Change => i
                    .decision
                    .result
                    .as_deref()
                    .and_then(|r| crate::reference::Reference::parse(r).ok())
                    .map_or_else(|| "-".to_owned(), |r| r.domain().to_owned()),
                _ => "-".to_owned(),
            };
            let (row, workloads) = rows
                .entry((i.source.clone(), mirror.clone()))
                .or_insert_with(|| {
                    let row = SummaryRow {
                        source: i.source.clone(),
                        mirror,
                        counts: Counts::default(),
                    };
                    (row, BTreeSet::new())
                });
            row.counts.count(i);
            totals.count(i);
            workloads.extend(i.workloads.iter().map(String::as_str));
        }
        let summary = rows
            .into_values()
            .map(|(mut row, workloads)| {
                row.counts.workloads = workloads.len();
                row
            })
            .collect();
        AuditReport {
            policy,
            totals,
            summary,
            images,
            errors,
            verified: checks.is_some(),
        }
    }
}

/// What makes `audit` exit 1 (`--fail-on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    /// An image would be rewritten to a mirror that lacks it (needs --verify).
    Missing,
    /// An image reference is invalid.
    Invalid,
    /// Any image would be rewritten.
    Change,
    /// Admission would refuse an image (registries.conf `blocked`, NeverContactSource, short names).
    Refused,
}

impl AuditReport {
    /// Why the audit fails under `fail_on`, if it does; a kind that could not be listed always
    /// fails it (an audit that did not see everything is no pass).
    pub fn failures(&self, fail_on: &[FailOn]) -> Vec<String> {
        let mut out = Vec::new();
        if !self.errors.is_empty() {
            out.push(format!("{} kind(s) could not be listed", self.errors.len()));
        }
        for f in fail_on {
            let (n, what) = match f {
                FailOn::Missing => (
                    self.totals.missing,
                    "would be rewritten to a mirror that lacks them",
                ),
                FailOn::Invalid => (self.totals.invalid, "are invalid references"),
                FailOn::Change => (self.totals.would_change, "would be rewritten"),
                FailOn::Refused => (self.totals.refused, "would be refused at admission"),
            };
            if n > 0 {
                out.push(format!("{n} image(s) {what}"));
            }
        }
        out
    }
}
