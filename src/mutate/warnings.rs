//! What a mutation tells whoever made the Pod: warnings kubectl prints, bounded as the API server
//! bounds them, and the refusals that deny a review.

use super::{singular, ImageField, Mutation};
use crate::policy::Policy;
use crate::rewrite::Decision;

/// The API server may cut warnings past 256 characters; kubectl prints each on one line.
const MAX_WARNING: usize = 256;
/// Warnings sent with one answer; past it one line says how many more there were. The API server
/// keeps at most 4 KiB of warnings per request and drops duplicates; so does this.
const MAX_WARNINGS: usize = 10;

impl Mutation {
    /// Adds a warning, once, while there is room; past it only counts it.
    pub fn warn(&mut self, warning: String) {
        let warning = clip(warning);
        if self.warnings.contains(&warning) {
            return;
        }
        match self.warnings.len() < MAX_WARNINGS {
            true => self.warnings.push(warning),
            false => self.more_warnings += 1,
        }
    }

    /// Ends the warnings with how many were left out.
    pub(super) fn close_warnings(&mut self) {
        if self.more_warnings > 0 {
            let more = std::mem::take(&mut self.more_warnings);
            self.warnings.push(format!(
                "... and {more} more warnings (the dry-run lists every decision)"
            ));
        }
    }
}

/// What `verify` found that the user should hear: no mirror has the image, or it is not pinned.
pub(super) fn warn_of_verdict(
    m: &mut Mutation,
    policy: &Policy,
    image: &str,
    decision: &Decision,
    verdict: Option<&crate::verdict::Verdict>,
) {
    if verdict.is_some_and(|v| v.chosen.is_none() && !v.tried.is_empty()) {
        m.warn(format!(
            "image {image}: no mirror has it; pulled from its own registry"
        ));
    } else if decision.changed()
        && crate::rewrite::unpinned(policy.verify.pin_digest, image.contains('@'), verdict)
    {
        m.warn(format!("image {image}: {}", crate::rewrite::NOT_PINNED));
    }
}

/// An image no source could serve: a refusal, or with `unpullable: warn` a warning.
pub(super) fn refuse_or_warn(
    m: &mut Mutation,
    policy: &Policy,
    f: &ImageField<'_>,
    decision: &Decision,
) {
    let (list, name, image) = (singular(f.list), f.name, f.image);
    let why = format!("{list} {name}: image \"{image}\": {}", decision.reason);
    if policy.unpullable_warn {
        m.warn(why);
    } else if m.refusals.len() < MAX_WARNINGS {
        m.refusals.push(clip(why));
    }
}

/// "image X rewritten to Y", within `MAX_WARNING`: the new reference, what a user needs to find
/// the image on the mirror, is kept whole; the original is shortened first.
pub(super) fn rewrite_warning(image: &str, result: &str) -> String {
    const SHAPE: usize = "image  rewritten to ".len();
    let room = MAX_WARNING.saturating_sub(SHAPE + result.len());
    if image.len() <= room {
        return format!("image {image} rewritten to {result}");
    }
    let mut end = room.saturating_sub(3);
    while !image.is_char_boundary(end) {
        end -= 1;
    }
    format!("image {}... rewritten to {result}", &image[..end])
}

fn clip(mut s: String) -> String {
    if s.len() > MAX_WARNING {
        let mut end = MAX_WARNING - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_warnings_keep_the_new_reference_whole() {
        let short = rewrite_warning("nginx:1.25", "mirror.example.com/library/nginx:1.25");
        assert_eq!(
            short,
            "image nginx:1.25 rewritten to mirror.example.com/library/nginx:1.25"
        );
        // Two long references: the new one whole, the original shortened, within the limit.
        let image = format!("quay.io/{}app:1", "team/".repeat(28));
        let result = format!("mirror.example.com:5000/quay/{}app:1", "team/".repeat(28));
        let warning = rewrite_warning(&image, &result);
        assert!(warning.len() <= MAX_WARNING, "{} {warning}", warning.len());
        assert!(
            warning.ends_with(&format!(" rewritten to {result}")),
            "{warning}"
        );
        assert!(warning.starts_with("image quay.io/team/"), "{warning}");
        assert!(warning.contains("... rewritten to"), "{warning}");
        let fits = rewrite_warning(&"a".repeat(100), &"b".repeat(120));
        assert!(fits.len() <= MAX_WARNING, "{}", fits.len());
        assert!(fits.contains(&"b".repeat(120)));
    }
}
