//! The audit report for people: a table for a terminal and Markdown for a change ticket.

use std::fmt::Write as _;

use super::{AuditReport, Status};

impl AuditReport {
    /// A table for a terminal: the summary, then each image that changes, is missing, invalid or
    /// excluded, with its workloads (the first few).
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "policy: {}", self.policy);
        let _ = writeln!(out, "{}\n", self.headline("", " (not checked: --verify)"));
        out.push_str(&columns(&SUMMARY_HEAD, &self.summary_cells()));
        let detail = self.detail_cells(3);
        if !detail.is_empty() {
            out.push('\n');
            out.push_str(&columns(&DETAIL_HEAD, &detail));
        }
        for e in &self.errors {
            let _ = writeln!(out, "\nerror: {e}");
        }
        out
    }

    /// Markdown for a change ticket: the same two tables.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "## Image mirror audit\n");
        let headline = self.headline("**", " (mirrors not checked)");
        let _ = writeln!(out, "Policy: {}. {headline}.\n", md(&self.policy));
        out.push_str(&md_table(&SUMMARY_HEAD, &self.summary_cells()));
        let detail = self.detail_cells(10);
        if !detail.is_empty() {
            out.push_str("\n### Images\n\n");
            out.push_str(&md_table(&DETAIL_HEAD, &detail));
        }
        if !self.errors.is_empty() {
            out.push_str("\n### Not audited\n\n");
            for e in &self.errors {
                let _ = writeln!(out, "- {}", md(e));
            }
        }
        out
    }

    /// The totals in one sentence, the two counts that matter most set off by `strong`.
    fn headline(&self, strong: &str, unchecked: &str) -> String {
        let t = &self.totals;
        let refused = match t.refused {
            0 => String::new(),
            n => format!(", {strong}{n} refused{strong}"),
        };
        format!(
            "{} workloads, {} images: {strong}{} would change{strong}, {strong}{} missing in their mirror{strong}{}, {} invalid, {} excluded{refused}",
            t.workloads,
            t.images,
            t.would_change,
            t.missing,
            if self.verified { "" } else { unchecked },
            t.invalid,
            t.excluded
        )
    }

    fn summary_cells(&self) -> Vec<Vec<String>> {
        self.summary
            .iter()
            .map(|r| {
                let c = &r.counts;
                vec![
                    r.source.clone(),
                    r.mirror.clone(),
                    c.images.to_string(),
                    c.workloads.to_string(),
                    c.would_change.to_string(),
                    if self.verified {
                        c.missing.to_string()
                    } else {
                        "-".into()
                    },
                    c.invalid.to_string(),
                    c.excluded.to_string(),
                ]
            })
            .collect()
    }

    /// One row per image that is not simply unchanged.
    fn detail_cells(&self, shown: usize) -> Vec<Vec<String>> {
        self.images
            .iter()
            .filter(|i| i.status != Status::Unchanged)
            .map(|i| {
                let mut workloads = i
                    .workloads
                    .iter()
                    .take(shown)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                if i.workloads.len() > shown {
                    let _ = write!(workloads, " and {} more", i.workloads.len() - shown);
                }
                let d = &i.decision;
                vec![
                    d.image.clone(),
                    i.status.as_str().to_owned(),
                    d.result
                        .clone()
                        .or_else(|| d.error.clone())
                        .unwrap_or_default(),
                    i.mirror.as_ref().map_or("-", |m| m.result).to_owned(),
                    workloads,
                ]
            })
            .collect()
    }
}

const SUMMARY_HEAD: [&str; 8] = [
    "SOURCE",
    "MIRROR",
    "IMAGES",
    "WORKLOADS",
    "WOULD CHANGE",
    "MISSING",
    "INVALID",
    "EXCLUDED",
];
const DETAIL_HEAD: [&str; 5] = ["IMAGE", "STATUS", "RESULT", "MIRROR HAS IT", "WORKLOADS"];

/// Left-aligned columns, two spaces apart.
fn columns(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let head: Vec<String> = head.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&head).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// Text safe in a Markdown table cell.
fn md(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

fn md_table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    out.push_str(&line(head.iter().map(|h| md(&h.to_lowercase())).collect()));
    out.push_str(&line(head.iter().map(|_| "---".to_owned()).collect()));
    for row in rows {
        out.push_str(&line(row.iter().map(|c| md(c)).collect()));
    }
    out
}
