//! The review pipeline in-process, without sockets: the service itself over tests/data/reviews,
//! and the router with tower's `oneshot` for what HTTP adds (methods, media types, body limits).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use image_mirror_webhook::admission::Outcome;
use image_mirror_webhook::server::{review, routes, AppState, StateConfig};
use serde_json::Value;
use tower::ServiceExt;

async fn state() -> Arc<AppState> {
    let state = AppState::build(StateConfig::new(64 * 1024));
    let policy = std::fs::read_to_string(common::data("reviews/policy.yaml")).unwrap();
    state.policy.apply("test", policy).await.unwrap();
    Arc::new(state)
}

fn fixture(name: &str) -> (Vec<u8>, Value) {
    let body = std::fs::read(common::data(&format!("reviews/{name}.json"))).unwrap();
    let review = serde_json::from_slice(&body).unwrap();
    (body, review)
}

#[tokio::test]
async fn the_service_answers_each_review_fixture() {
    let state = state().await;
    for name in ["create", "update", "ephemeral"] {
        let (body, review) = fixture(name);
        let answer = review::review(&state, &body).await;
        assert_eq!(answer.outcome, Outcome::Mutated, "{name}");
        let sent: Value = serde_json::from_slice(&answer.body()).unwrap();
        assert_eq!(sent["response"]["uid"], review["request"]["uid"]);
        let mut pod = review["request"]["object"].clone();
        json_patch::patch(&mut pod, &common::decode_patch(&sent).unwrap()).unwrap();
        let expected: Value = serde_json::from_slice(
            &std::fs::read(common::data(&format!("reviews/{name}.expected.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(pod, expected, "{name}");
    }
    for name in ["delete", "status"] {
        let (body, review) = fixture(name);
        let answer = review::review(&state, &body).await;
        assert!(
            matches!(answer.outcome, Outcome::Skipped(_)),
            "{name}: {:?}",
            answer.outcome
        );
        let sent: Value = serde_json::from_slice(&answer.body()).unwrap();
        assert_eq!(sent["response"]["uid"], review["request"]["uid"]);
        assert!(sent["response"].get("patch").is_none(), "{name}");
    }
    let metrics = state.metrics.encode();
    assert!(
        metrics.contains("image_mirror_reviews_total{outcome=\"mutated\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("image_mirror_reviews_total{outcome=\"skipped\"} 2"),
        "{metrics}"
    );
}

async fn send(state: &Arc<AppState>, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let resp = routes::webhook(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    (
        status,
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

fn post(path: &str, content_type: &str, body: Vec<u8>) -> Request<Body> {
    Request::post(path)
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn the_router_checks_what_http_adds() {
    let state = state().await;
    let (body, review) = fixture("create");
    let (status, out) = send(&state, post("/mutate", "application/json", body.clone())).await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");

    let cases = [
        (
            post("/mutate", "text/plain", body.clone()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            post("/nowhere", "application/json", body.clone()),
            StatusCode::NOT_FOUND,
        ),
        (
            Request::get("/mutate").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            post("/mutate", "application/json", vec![b' '; 65 * 1024]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            post(
                "/dry-run",
                "application/yaml",
                b"kind: Pod\nspec: {containers: [{name: c, image: nginx}]}\n".to_vec(),
            ),
            StatusCode::OK,
        ),
        (
            Request::get("/readyz").body(Body::empty()).unwrap(),
            StatusCode::OK,
        ),
    ];
    for (req, want) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let (status, out) = send(&state, req).await;
        assert_eq!(status, want, "{what}: {}", String::from_utf8_lossy(&out));
    }
}
