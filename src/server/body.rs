//! Request bodies and the memory their answers take. Each body is at most `max_body` bytes, read
//! within the request deadline with no pause over `idle`; the bytes that have arrived are held in
//! one budget (`--max-bodies-bytes`), and, once whole, the work an answer takes (an estimate,
//! a multiple of the body) in another (`--max-work-bytes`). A request that finds no room waits
//! until its deadline, then gets 503; handlers only ever see a body that is whole and within the
//! limits.
//!
//! Why it cannot stall: the budget holds bytes that arrived, never bytes announced, so a client
//! that announces 8 MiB and sends 5 bytes holds 5. A small body (its announced length at most
//! `SMALL`) reserves that length whole before reading, so small bodies never wait holding part of
//! the budget. A larger or unannounced body reads past `SMALL` only while holding the one large
//! lane: at most one request waits for room while holding some, so waiting requests cannot hold
//! each other up. The work budget is taken all at once, by requests whose bodies are whole.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::BytesMut;
use http_body_util::BodyExt;
use serde_json::json;
use tokio::sync::{Mutex, MutexGuard, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::metrics::Metrics;

/// Bodies up to this size (announced) reserve their length before reading; the API server's
/// reviews are a few KB.
const SMALL: usize = 64 * 1024;

/// What an answer takes beside its body, as a multiple of the body: parsed JSON, decisions, the
/// patch and the answer (measured: a 75,000-container Pod peaks at about 20 times its body).
const REVIEW_WORK: usize = 24;
/// The dry-run also parses YAML (nodes with positions, then JSON) and returns each object whole.
const DRY_RUN_WORK: usize = 48;

/// The bounds `Bodies` keeps.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body (`--max-body-bytes`).
    pub max_body: usize,
    /// Bytes of bodies held at once (`--max-bodies-bytes`).
    pub bodies: usize,
    /// Estimated working memory of requests being answered at once (`--max-work-bytes`).
    pub work: usize,
    /// A body must be whole within this (`--request-timeout`).
    pub timeout: Duration,
    /// Longest pause between two parts of a body (`--body-idle-timeout`).
    pub idle: Duration,
}

/// What the body limits need.
pub struct Bodies {
    limits: BodyLimits,
    budget: Arc<Semaphore>,
    work: Arc<Semaphore>,
    /// Held by the one body that may read past `SMALL` bytes.
    large: Mutex<()>,
    metrics: Arc<Metrics>,
}

fn permits(bytes: usize) -> usize {
    bytes.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize)
}

impl Bodies {
    /// The budgets are raised to `max_body` if smaller, so that any acceptable body can be read.
    pub fn new(limits: BodyLimits, metrics: Arc<Metrics>) -> Self {
        let budget = permits(limits.bodies.max(limits.max_body));
        let work = permits(limits.work.max(limits.max_body));
        Bodies {
            limits: BodyLimits {
                bodies: budget,
                work,
                ..limits
            },
            budget: Arc::new(Semaphore::new(budget)),
            work: Arc::new(Semaphore::new(work)),
            large: Mutex::new(()),
            metrics,
        }
    }

    fn refuse(&self, status: StatusCode, reason: Reason, message: String) -> Response {
        self.metrics.refused(reason.label());
        let mut response = (status, Json(json!({ "error": message }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }

    fn too_large(&self) -> Response {
        self.refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            Reason::TooLarge,
            format!(
                "the body is over {} bytes (--max-body-bytes)",
                self.limits.max_body
            ),
        )
    }

    fn busy(&self, budget: &str) -> Response {
        self.refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            Reason::Busy,
            format!("too many requests in memory at once ({budget}); retry"),
        )
    }

    fn timed_out(&self, message: String) -> Response {
        self.refuse(StatusCode::REQUEST_TIMEOUT, Reason::BodyTimeout, message)
    }
}

/// Why a request is refused before it is read, as `requests_refused_total` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    TooLarge,
    BodyTimeout,
    Busy,
}

impl Reason {
    pub const ALL: [Reason; 3] = [Reason::TooLarge, Reason::BodyTimeout, Reason::Busy];

    pub fn label(self) -> &'static str {
        match self {
            Reason::TooLarge => "too_large",
            Reason::BodyTimeout => "body_timeout",
            Reason::Busy => "busy",
        }
    }
}

/// Now and `d` on tokio's clock, never past what it can hold.
fn later(d: Duration) -> Instant {
    Instant::from_std(crate::duration::after(std::time::Instant::now(), d))
}

/// `n` permits of `semaphore`, waiting until `deadline`.
async fn reserve(
    semaphore: &Arc<Semaphore>,
    n: usize,
    deadline: Instant,
) -> Option<OwnedSemaphorePermit> {
    let n = u32::try_from(n).ok()?;
    match tokio::time::timeout_at(deadline, semaphore.clone().acquire_many_owned(n)).await {
        Ok(Ok(permit)) => Some(permit),
        _ => None,
    }
}

/// What a request holds while it is read and answered; released when dropped.
#[derive(Default)]
struct Held<'a> {
    bytes: Option<OwnedSemaphorePermit>,
    lane: Option<MutexGuard<'a, ()>>,
}

impl Held<'_> {
    fn reserved(&self) -> usize {
        self.bytes.as_ref().map_or(0, |p| p.num_permits())
    }

    fn add(&mut self, more: OwnedSemaphorePermit) {
        match self.bytes.as_mut() {
            Some(p) => p.merge(more),
            None => self.bytes = Some(more),
        }
    }
}

/// The middleware: reads the body within the limits, takes room for the work on it, then hands
/// it on whole. Both are held until the answer is made.
pub async fn bounded(State(bodies): State<Arc<Bodies>>, request: Request, next: Next) -> Response {
    let limits = bodies.limits;
    let deadline = later(limits.timeout);
    let (parts, mut body) = request.into_parts();
    let h2 = parts.version == axum::http::Version::HTTP_2;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return too_large(&bodies, &mut body, h2, deadline).await;
    }
    let declared = declared.and_then(|n| usize::try_from(n).ok());
    let factor = match parts.uri.path() {
        "/dry-run" => DRY_RUN_WORK,
        _ => REVIEW_WORK,
    };
    let mut held = Held::default();
    let whole = match read(&bodies, &mut body, declared, deadline, &mut held).await {
        Ok(whole) => whole,
        Err(Refusal::TooLarge) => {
            drop(held);
            return too_large(&bodies, &mut body, h2, deadline).await;
        }
        Err(Refusal::Other(refusal)) => return refusal,
    };
    // The body is whole: the lane is free for the next large one.
    held.lane = None;
    let work = match whole.len() {
        0 => None,
        n => {
            let want = permits(n.saturating_mul(factor)).min(limits.work);
            match reserve(&bodies.work, want, deadline).await {
                Some(p) => Some(p),
                None => return bodies.busy("--max-work-bytes"),
            }
        }
    };
    let answer = next
        .run(Request::from_parts(parts, Body::from(whole)))
        .await;
    drop((held, work));
    answer
}

/// A body over the limit gets 413. Over HTTP/2 the rest of it is read first (and dropped, up to
/// `DRAIN` bytes, by the deadline): an answer sent while the client still sends is reset with
/// the stream, and the client sees no 413 (HTTP/1.1 closes the connection after the answer).
async fn too_large(bodies: &Bodies, body: &mut Body, h2: bool, deadline: Instant) -> Response {
    const DRAIN: usize = 64 * 1024 * 1024;
    if h2 {
        let mut dropped = 0;
        while dropped <= DRAIN {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(Ok(frame))) => dropped += frame.data_ref().map_or(0, Bytes::len),
                _ => break,
            }
        }
    }
    bodies.too_large()
}

enum Refusal {
    TooLarge,
    Other(Response),
}

impl From<Response> for Refusal {
    fn from(r: Response) -> Self {
        Refusal::Other(r)
    }
}

async fn read<'a>(
    bodies: &'a Bodies,
    body: &mut Body,
    declared: Option<usize>,
    deadline: Instant,
    held: &mut Held<'a>,
) -> Result<Bytes, Refusal> {
    let limits = bodies.limits;
    if let Some(n @ 1..=SMALL) = declared {
        held.bytes = Some(
            reserve(&bodies.budget, n, deadline)
                .await
                .ok_or_else(|| bodies.busy("--max-bodies-bytes"))?,
        );
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(SMALL));
    loop {
        let pause = later(limits.idle);
        let frame = match tokio::time::timeout_at(pause.min(deadline), body.frame()).await {
            Err(_) if pause < deadline => {
                return Err(bodies
                    .timed_out(format!(
                        "the body stopped arriving for {} s (--body-idle-timeout)",
                        limits.idle.as_secs_f64()
                    ))
                    .into())
            }
            Err(_) => {
                return Err(bodies
                    .timed_out(format!(
                        "the body did not arrive within {} s (--request-timeout)",
                        limits.timeout.as_secs_f64()
                    ))
                    .into())
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "request body unreadable");
                return Err((StatusCode::BAD_REQUEST, "the body could not be read")
                    .into_response()
                    .into());
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let total = buf.len() + data.len();
        if total > limits.max_body {
            return Err(Refusal::TooLarge);
        }
        if total > held.reserved() {
            if total > SMALL && held.lane.is_none() {
                held.lane = Some(
                    tokio::time::timeout_at(deadline, bodies.large.lock())
                        .await
                        .map_err(|_| bodies.busy("--max-bodies-bytes"))?,
                );
            }
            let more = reserve(&bodies.budget, total - held.reserved(), deadline)
                .await
                .ok_or_else(|| bodies.busy("--max-bodies-bytes"))?;
            held.add(more);
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}
