//! The `verify` settings.

use std::time::Duration;

use crate::policy::diagnostics::Diagnostics;
use crate::policy::document::{Document, Spanned};
use crate::policy::Verify;

/// Admission webhooks time out after 30 s at most; a check that runs longer is never useful.
const MAX_VERIFY_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn compile(r: &mut Diagnostics, doc: &Document) -> Verify {
    let v = &doc.verify;
    let mut out = Verify::default();
    let mut duration = |s: &Option<Spanned<String>>, name: &str, into: &mut Duration| {
        if let Some(s) = s {
            match crate::duration::parse(&s.value) {
                Ok(d) => *into = d,
                Err(e) => r.error(s.pos, &format!("verify.{name}"), e.to_string()),
            }
        }
    };
    duration(&v.timeout, "timeout", &mut out.timeout);
    duration(&v.cache_ttl, "cacheTTL", &mut out.cache_ttl);
    duration(
        &v.negative_cache_ttl,
        "negativeCacheTTL",
        &mut out.negative_cache_ttl,
    );
    if let Some(t) = &v.timeout {
        if out.timeout.is_zero() || out.timeout > MAX_VERIFY_TIMEOUT {
            r.error(
                t.pos,
                "verify.timeout",
                "must be more than 0 and at most 30s, the longest an admission webhook may take",
            );
        }
    }
    out.enabled = v.enabled.unwrap_or(false);
    out.pin_digest = v.pin_digest.unwrap_or(false);
    out
}
