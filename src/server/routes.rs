//! The HTTP surface: routes, methods, media types and body limits. Handlers only translate
//! between HTTP and the review pipeline (`review`) or the dry-run.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::AppState;
use crate::dryrun;

/// The webhook listener: admission, dry-run and the probes.
pub fn webhook(state: Arc<AppState>) -> Router {
    let bodies = state.bodies.clone();
    Router::new()
        .route("/mutate", post(mutate))
        .route("/dry-run", post(dry_run_objects).get(dry_run_image))
        .merge(probes())
        .layer(axum::middleware::from_fn_with_state(
            bodies,
            super::body::bounded,
        ))
        // The body is whole and within --max-body-bytes by now (`body::bounded`).
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// The plain-HTTP admin listener: probes and metrics only.
pub fn admin(state: Arc<AppState>) -> Router {
    probes().with_state(state)
}

fn probes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.not_ready() {
        None => "ok".into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

/// OpenMetrics to scrapers that ask for it (Prometheus does), the classic text format to others
/// (curl, promtool).
async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let (content_type, body) = match openmetrics {
        true => (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.encode(),
        ),
        false => (
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics.encode_classic(),
        ),
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn unsupported(expected: &str) -> Response {
    (
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Json(json!({ "error": format!("content type must be {expected}") })),
    )
        .into_response()
}

async fn mutate(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    if media_type(&headers) != "application/json" {
        return unsupported("application/json");
    }
    let body = super::review::answer(&state, &body).await;
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn no_policy() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "error": "no policy has loaded yet" })),
    )
        .into_response()
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

async fn dry_run_objects(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    const TYPES: [&str; 6] = [
        "application/json",
        "application/yaml",
        "application/x-yaml",
        "text/yaml",
        "text/x-yaml",
        "text/plain",
    ];
    if !TYPES.contains(&media_type(&headers).as_str()) {
        return unsupported("application/json or application/yaml");
    }
    let Some(policy) = state.policy.current() else {
        return no_policy();
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return bad_request("the body is not UTF-8 text".into());
    };
    state.metrics.reviews.dry_runs.inc();
    match dryrun::read_objects(text) {
        Ok(items) => {
            let verdicts = state
                .checker
                .verdicts(&policy, &dryrun::images(&items), state.review_deadline())
                .await;
            let opts = dryrun::Options {
                verdicts: verdicts.as_ref(),
                pull_secrets: state.pull_secrets.is_some(),
            };
            Json(dryrun::evaluate_all(&policy, &items, opts)).into_response()
        }
        Err(e) => bad_request(e.to_string()),
    }
}

async fn dry_run_image(State(state): State<Arc<AppState>>, RawQuery(query): RawQuery) -> Response {
    let Some(policy) = state.policy.current() else {
        return no_policy();
    };
    let mut images = Vec::new();
    let mut namespace = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "image" => images.push(v.into_owned()),
            "namespace" => namespace = Some(v.into_owned()),
            _ => {
                return bad_request(format!(
                    "unknown query parameter `{k}`; use image and namespace"
                ))
            }
        }
    }
    if images.is_empty() {
        return bad_request("name an image: /dry-run?image=nginx:1.25".into());
    }
    state.metrics.reviews.dry_runs.inc();
    let verdicts = state
        .checker
        .verdicts(&policy, &images, state.review_deadline())
        .await;
    Json(dryrun::explain(
        &policy,
        &images,
        namespace.as_deref(),
        verdicts.as_ref(),
    ))
    .into_response()
}
