//! Request bodies: each at most `max_body` bytes and read within the request deadline, and all of
//! them together within a byte budget. A request over the budget waits for room until its
//! deadline, then gets 503; handlers only ever see a body that is whole and within the limits.

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
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::metrics::Metrics;

/// What the body limits need.
pub struct Bodies {
    max_body: usize,
    timeout: Duration,
    budget: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl Bodies {
    /// `budget` is raised to `max_body` if smaller, so that any acceptable body can be read.
    pub fn new(max_body: usize, budget: usize, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        let budget = budget.max(max_body).min(Semaphore::MAX_PERMITS);
        Bodies {
            max_body,
            timeout,
            budget: Arc::new(Semaphore::new(budget)),
            metrics,
        }
    }

    fn refuse(&self, status: StatusCode, reason: &str, message: String) -> Response {
        self.metrics.refused(reason);
        let mut response = (status, Json(json!({ "error": message }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }

    /// Room for `bytes` more, waiting until `deadline`; `None` when there was none in time.
    async fn reserve(&self, bytes: usize, deadline: Instant) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(bytes).ok()?;
        match tokio::time::timeout_at(deadline, self.budget.clone().acquire_many_owned(n)).await {
            Ok(Ok(permit)) => Some(permit),
            _ => None,
        }
    }

    fn too_large(&self) -> Response {
        self.refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the body is over {} bytes (--max-body-bytes)",
                self.max_body
            ),
        )
    }

    fn busy(&self) -> Response {
        self.refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many request bodies in memory at once (--max-bodies-bytes); retry".into(),
        )
    }
}

/// The middleware: reads the body within the limits, then hands it on whole. Its share of the
/// budget is held until the answer is made.
pub async fn bounded(State(bodies): State<Arc<Bodies>>, request: Request, next: Next) -> Response {
    let deadline = Instant::now() + bodies.timeout;
    let (parts, mut body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > bodies.max_body as u64) {
        return bodies.too_large();
    }
    // A declared length is reserved whole before reading, so that bodies never hold part of the
    // budget while waiting for the rest; an undeclared one reserves as it arrives.
    let declared = declared.and_then(|n| usize::try_from(n).ok());
    let mut held = match declared {
        Some(0) | None => None,
        Some(n) => match bodies.reserve(n, deadline).await {
            Some(p) => Some(p),
            None => return bodies.busy(),
        },
    };
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0));
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return bodies.refuse(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                        "the body did not arrive within {} s (--request-timeout)",
                        bodies.timeout.as_secs_f64()
                    ),
                )
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "request body unreadable");
                return (StatusCode::BAD_REQUEST, "the body could not be read").into_response();
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let total = buf.len() + data.len();
        if total > bodies.max_body {
            return bodies.too_large();
        }
        let reserved = held.as_ref().map_or(0, |p| p.num_permits());
        if total > reserved {
            match bodies.reserve(total - reserved, deadline).await {
                Some(more) => match held.as_mut() {
                    Some(p) => p.merge(more),
                    None => held = Some(more),
                },
                None => return bodies.busy(),
            }
        }
        buf.extend_from_slice(&data);
    }
    let whole: Bytes = buf.freeze();
    let answer = next
        .run(Request::from_parts(parts, Body::from(whole)))
        .await;
    drop(held);
    answer
}
