//! What `verify` learns about an image's endpoints, as plain data: the decisions read it and
//! `registry` fills it in. Pure: no I/O here.

use std::collections::HashMap;

use serde::Serialize;

/// One endpoint `verify` may check for an image, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The registry host as references write it.
    pub host: String,
    /// The endpoint's API root, for the dry-run.
    pub endpoint_url: String,
    /// `HEAD` this to know whether the endpoint has the image.
    pub manifest_url: String,
}

/// What one endpoint said about one manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "result")]
pub enum Presence {
    /// It has the manifest; the digest it answered with, when it said one.
    Present { digest: Option<String> },
    /// It does not have it, or would not say: why, for the dry-run and the logs.
    Absent {
        reason: String,
        #[serde(skip)]
        kind: Absence,
    },
}

/// Which way an endpoint failed to have an image, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absence {
    NotFound,
    TimedOut,
    Error,
}

impl Presence {
    pub fn absent(kind: Absence, reason: impl Into<String>) -> Self {
        Presence::Absent {
            reason: reason.into(),
            kind,
        }
    }

    pub fn error(reason: impl Into<String>) -> Self {
        Presence::absent(Absence::Error, reason)
    }

    /// Every label `label` gives, for metrics that start at 0.
    pub const LABELS: [&'static str; 4] = ["present", "absent", "timeout", "error"];

    pub fn label(&self) -> &'static str {
        match self {
            Presence::Present { .. } => "present",
            Presence::Absent { kind, .. } => match kind {
                Absence::NotFound => "absent",
                Absence::TimedOut => "timeout",
                Absence::Error => "error",
            },
        }
    }
}

/// One endpoint tried for an image, as the dry-run shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tried {
    pub endpoint: String,
    #[serde(flatten)]
    pub answer: Presence,
}

/// Verdicts by image, as the decisions take them.
pub type Verdicts = HashMap<String, Verdict>;

/// The outcome of checking one image's endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Verdict {
    /// Index of the chosen candidate; `None`: no endpoint has the image (failover to the original).
    pub chosen: Option<usize>,
    pub digest: Option<String>,
    pub tried: Vec<Tried>,
}

impl Verdict {
    /// Adds one endpoint's answer; whether it chose that endpoint.
    pub fn record(&mut self, i: usize, c: &Candidate, answer: Presence) -> bool {
        let present = match &answer {
            Presence::Present { digest } => {
                self.digest = digest.clone();
                self.chosen = Some(i);
                true
            }
            Presence::Absent { .. } => false,
        };
        self.tried.push(Tried {
            endpoint: c.endpoint_url.clone(),
            answer,
        });
        present
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_presence_label_is_listed_for_the_metrics() {
        let all = [
            Presence::Present { digest: None },
            Presence::absent(Absence::NotFound, "x"),
            Presence::absent(Absence::TimedOut, "x"),
            Presence::absent(Absence::Error, "x"),
        ];
        let labels: Vec<&str> = all.iter().map(Presence::label).collect();
        assert_eq!(labels, Presence::LABELS);
    }
}
