//! A small fake Kubernetes API server on loopback, for what the real one (tests/cluster) cannot
//! be made to do on demand: ConfigMaps and Secrets (list and watch, with resource versions),
//! Events that can be refused, Secret writes that can fail, MutatingWebhookConfigurations, and
//! workloads (Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs) listed in
//! pages with `limit` and `continue`, whose continue tokens can be made to expire (410) or repeat
//! for ever, and whose kinds can be forbidden (403).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::broadcast;

#[derive(Default)]
struct Inner {
    rv: u64,
    configmaps: BTreeMap<(String, String), Value>,
    /// Every change, for watches that start from an older resource version.
    history: Vec<(u64, String, Value)>,
    events: Vec<Value>,
    deny_events: bool,
    secrets: BTreeMap<(String, String), Value>,
    secret_writes: usize,
    fail_secret_writes: bool,
    webhook_configs: BTreeMap<String, Value>,
    /// Workloads by (plural, namespace, name).
    workloads: BTreeMap<(String, String, String), Value>,
    forbidden: std::collections::HashSet<String>,
    /// Plurals whose next continued list answers 410.
    expire_next_continue: std::collections::HashSet<String>,
    /// Plurals whose lists answer the first page with the same continue token for ever (a
    /// hostile or broken server).
    endless: std::collections::HashSet<String>,
    /// Every workload list request: (plural, limit, continue token).
    workload_lists: Vec<(String, Option<String>, Option<String>)>,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    changes: broadcast::Sender<(u64, String, Value)>,
}

impl Inner {
    /// Gives `obj` the next resource version and records the change for watches.
    fn change(
        &mut self,
        changes: &broadcast::Sender<(u64, String, Value)>,
        kind: &str,
        obj: &mut Value,
    ) {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.history.push((self.rv, kind.into(), obj.clone()));
        let _ = changes.send((self.rv, kind.into(), obj.clone()));
    }
}

pub struct FakeApi {
    pub port: u16,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        let (changes, _) = broadcast::channel(1024);
        let shared = Shared {
            inner: Arc::default(),
            changes,
        };
        let app = Router::new()
            .route("/api/v1/namespaces/{ns}/configmaps", get(configmaps))
            .route(
                "/api/v1/namespaces/{ns}/configmaps/{name}",
                get(get_configmap),
            )
            .route(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events",
                post(create_event),
            )
            .route(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events/{name}",
                axum::routing::patch(patch_event),
            )
            .route("/api/v1/namespaces/{ns}/secrets", post(create_secret))
            .route("/api/v1/secrets", get(all_secrets))
            .route(
                "/api/v1/namespaces/{ns}/secrets/{name}",
                get(get_secret).put(replace_secret),
            )
            .route(
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}",
                get(get_webhook_config).patch(patch_webhook_config),
            )
            .route("/api/v1/pods", get(pods_all))
            .route("/api/v1/namespaces/{ns}/pods", get(pods_ns))
            .route("/api/v1/replicationcontrollers", get(rcs_all))
            .route(
                "/api/v1/namespaces/{ns}/replicationcontrollers",
                get(rcs_ns),
            )
            .route("/apis/{group}/v1/{plural}", get(group_workloads_all))
            .route(
                "/apis/{group}/v1/namespaces/{ns}/{plural}",
                get(group_workloads_ns),
            )
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeApi { port, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// A kubeconfig file that points at this server.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: u\ncurrent-context: fake\n",
            self.url()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Creates or replaces a ConfigMap; `None` data means no `data` at all.
    pub fn put_configmap(&self, ns: &str, name: &str, data: Option<BTreeMap<&str, &str>>) {
        let mut inner = self.shared.inner.lock().unwrap();
        let key = (ns.to_owned(), name.to_owned());
        let kind = if inner.configmaps.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")}});
        if let Some(data) = data {
            cm["data"] = json!(data);
        }
        inner.change(&self.shared.changes, kind, &mut cm);
        inner.configmaps.insert(key, cm);
    }

    pub fn delete_configmap(&self, ns: &str, name: &str) {
        let mut inner = self.shared.inner.lock().unwrap();
        if let Some(mut cm) = inner.configmaps.remove(&(ns.to_owned(), name.to_owned())) {
            inner.change(&self.shared.changes, "DELETED", &mut cm);
        }
    }

    pub fn deny_events(&self, deny: bool) {
        self.shared.inner.lock().unwrap().deny_events = deny;
    }

    /// (reason, note) of every Event recorded so far.
    pub fn events(&self) -> Vec<(String, String)> {
        self.shared
            .inner
            .lock()
            .unwrap()
            .events
            .iter()
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or_default().to_owned(),
                    e["note"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    pub fn secret(&self, ns: &str, name: &str) -> Option<Value> {
        self.shared
            .inner
            .lock()
            .unwrap()
            .secrets
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// A Secret key's decoded text.
    pub fn secret_text(&self, ns: &str, name: &str, key: &str) -> Option<String> {
        use base64::Engine;
        let s = self.secret(ns, name)?;
        let b64 = s["data"][key].as_str()?;
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).ok()?).ok()
    }

    /// Creates or replaces a Secret as another client would.
    pub fn put_secret(&self, ns: &str, name: &str, mut secret: Value) {
        let mut inner = self.shared.inner.lock().unwrap();
        let key = (ns.to_owned(), name.to_owned());
        let kind = if inner.secrets.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        inner.change(&self.shared.changes, kind, &mut secret);
        inner.secrets.insert(key, secret);
    }

    pub fn delete_secret(&self, ns: &str, name: &str) {
        let mut inner = self.shared.inner.lock().unwrap();
        if let Some(mut secret) = inner.secrets.remove(&(ns.to_owned(), name.to_owned())) {
            inner.change(&self.shared.changes, "DELETED", &mut secret);
        }
    }

    /// Makes every Secret create and update fail with 500, as an unhealthy API server does.
    pub fn fail_secret_writes(&self, fail: bool) {
        self.shared.inner.lock().unwrap().fail_secret_writes = fail;
    }

    pub fn secret_writes(&self) -> usize {
        self.shared.inner.lock().unwrap().secret_writes
    }

    pub fn put_webhook_config(&self, name: &str, config: Value) {
        self.shared
            .inner
            .lock()
            .unwrap()
            .webhook_configs
            .insert(name.to_owned(), config);
    }

    pub fn webhook_config(&self, name: &str) -> Option<Value> {
        self.shared
            .inner
            .lock()
            .unwrap()
            .webhook_configs
            .get(name)
            .cloned()
    }

    /// Adds a workload; its plural comes from its `kind`.
    pub fn put_workload(&self, object: Value) {
        let plural = format!("{}s", object["kind"].as_str().unwrap().to_lowercase());
        let key = (
            plural,
            object["metadata"]["namespace"].as_str().unwrap().to_owned(),
            object["metadata"]["name"].as_str().unwrap().to_owned(),
        );
        self.shared
            .inner
            .lock()
            .unwrap()
            .workloads
            .insert(key, object);
    }

    /// Lists of `plural` answer 403 Forbidden.
    pub fn forbid(&self, plural: &str) {
        self.shared
            .inner
            .lock()
            .unwrap()
            .forbidden
            .insert(plural.to_owned());
    }

    /// The next list of `plural` that carries a continue token answers 410 Gone, as the API
    /// server does once the token's resource version is compacted.
    pub fn expire_next_continue(&self, plural: &str) {
        let mut inner = self.shared.inner.lock().unwrap();
        inner.expire_next_continue.insert(plural.to_owned());
    }

    /// Every list of `plural` answers its first page again, with the same continue token.
    pub fn list_endlessly(&self, plural: &str) {
        let mut inner = self.shared.inner.lock().unwrap();
        inner.endless.insert(plural.to_owned());
    }

    /// The workload list requests so far: (plural, limit, continue).
    pub fn workload_lists(&self) -> Vec<(String, Option<String>, Option<String>)> {
        self.shared.inner.lock().unwrap().workload_lists.clone()
    }
}

async fn pods_all(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    list_workloads(&s, "pods", None, &q)
}

async fn pods_ns(
    State(s): State<Shared>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    list_workloads(&s, "pods", Some(&ns), &q)
}

async fn rcs_all(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    list_workloads(&s, "replicationcontrollers", None, &q)
}

async fn rcs_ns(
    State(s): State<Shared>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    list_workloads(&s, "replicationcontrollers", Some(&ns), &q)
}

async fn group_workloads_all(
    State(s): State<Shared>,
    Path((_group, plural)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    list_workloads(&s, &plural, None, &q)
}

async fn group_workloads_ns(
    State(s): State<Shared>,
    Path((_group, ns, plural)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    list_workloads(&s, &plural, Some(&ns), &q)
}

/// One page of a workload list: objects after the continue token's position, `limit` of them,
/// and a token for the next page when more remain. Label selectors of `k=v` terms are applied.
fn list_workloads(
    s: &Shared,
    plural: &str,
    ns: Option<&str>,
    q: &HashMap<String, String>,
) -> Response {
    let mut inner = s.inner.lock().unwrap();
    let token = q.get("continue").cloned();
    inner
        .workload_lists
        .push((plural.to_owned(), q.get("limit").cloned(), token.clone()));
    if inner.forbidden.contains(plural) {
        return status(
            403,
            "Forbidden",
            &format!("{plural} is forbidden: User \"auditor\" cannot list resource \"{plural}\""),
        );
    }
    if token.is_some() && inner.expire_next_continue.remove(plural) {
        return status(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result.",
        );
    }
    let endless = inner.endless.contains(plural);
    let after: Option<(String, String)> = token
        .as_deref()
        .filter(|_| !endless)
        .and_then(|t| t.split_once('/'))
        .map(|(a, b)| (a.to_owned(), b.to_owned()));
    let terms: Vec<(String, String)> = q
        .get("labelSelector")
        .map(|l| {
            l.split(',')
                .filter_map(|t| t.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(usize::MAX);
    let mut items = Vec::new();
    let mut next = None;
    for ((p, n, name), obj) in &inner.workloads {
        if p != plural || ns.is_some_and(|ns| ns != n) {
            continue;
        }
        if after
            .as_ref()
            .is_some_and(|(an, aname)| (n, name) <= (an, aname))
        {
            continue;
        }
        if !terms
            .iter()
            .all(|(k, v)| obj["metadata"]["labels"][k] == v.as_str())
        {
            continue;
        }
        if items.len() == limit {
            next = items.last().map(|o: &Value| {
                format!(
                    "{}/{}",
                    o["metadata"]["namespace"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            });
            break;
        }
        // Items of a list carry no kind or apiVersion of their own.
        let mut item = obj.clone();
        if let Some(m) = item.as_object_mut() {
            m.remove("kind");
            m.remove("apiVersion");
        }
        items.push(item);
    }
    let mut metadata = json!({"resourceVersion": inner.rv.to_string()});
    if let Some(n) = next {
        metadata["continue"] = json!(n);
    }
    if endless {
        metadata["continue"] = json!("again");
    }
    Json(json!({"apiVersion": "v1", "kind": "List", "metadata": metadata, "items": items}))
        .into_response()
}

fn selected(cm: &Value, field_selector: Option<&String>) -> bool {
    match field_selector.and_then(|f| f.strip_prefix("metadata.name=")) {
        Some(name) => cm["metadata"]["name"] == name,
        None => true,
    }
}

async fn get_configmap(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    match s.inner.lock().unwrap().configmaps.get(&(ns, name.clone())) {
        Some(cm) => Json(cm.clone()).into_response(),
        None => status(404, "NotFound", &format!("configmaps \"{name}\" not found")),
    }
}

async fn configmaps(
    State(s): State<Shared>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let selector = q.get("fieldSelector").cloned();
    let in_ns = move |cm: &Value| {
        cm["kind"] == "ConfigMap"
            && cm["metadata"]["namespace"] == ns.as_str()
            && selected(cm, selector.as_ref())
    };
    if is_watch(&q) {
        return watch(&s, &q, in_ns);
    }
    let inner = s.inner.lock().unwrap();
    let items: Vec<Value> = inner
        .configmaps
        .values()
        .filter(|cm| in_ns(cm))
        .cloned()
        .collect();
    Json(json!({"apiVersion": "v1", "kind": "ConfigMapList", "metadata": {"resourceVersion": inner.rv.to_string()}, "items": items}))
        .into_response()
}

fn is_watch(q: &HashMap<String, String>) -> bool {
    q.get("watch").is_some_and(|w| w == "true" || w == "1")
}

/// A watch from `resourceVersion`: the recorded changes after it that `wanted` selects, then new
/// ones as they happen.
fn watch(
    s: &Shared,
    q: &HashMap<String, String>,
    wanted: impl Fn(&Value) -> bool + Send + 'static,
) -> Response {
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (backlog, mut changes) = {
        let inner = s.inner.lock().unwrap();
        let backlog: Vec<_> = inner
            .history
            .iter()
            .filter(|(rv, _, obj)| *rv > from && wanted(obj))
            .cloned()
            .collect();
        (backlog, s.changes.subscribe())
    };
    let line = |kind: &str, obj: &Value| {
        Ok(Bytes::from(format!(
            "{}\n",
            json!({"type": kind, "object": obj})
        )))
    };
    let stream = async_stream(
        move |tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>| async move {
            for (_, kind, obj) in backlog {
                let _ = tx.send(line(&kind, &obj)).await;
            }
            loop {
                match changes.recv().await {
                    Ok((rv, kind, obj)) if rv > from && wanted(&obj) => {
                        if tx.send(line(&kind, &obj)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        },
    );
    Body::from_stream(stream).into_response()
}

/// A stream fed by a task, ended when the task ends.
fn async_stream<F, Fut>(
    f: F,
) -> tokio_stream::wrappers::ReceiverStream<Result<Bytes, std::io::Error>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn create_event(State(s): State<Shared>, Json(mut event): Json<Value>) -> Response {
    let mut inner = s.inner.lock().unwrap();
    if inner.deny_events {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
            "message": "events.events.k8s.io is forbidden"});
        return (StatusCode::FORBIDDEN, Json(status)).into_response();
    }
    if event["metadata"]["name"].is_null() {
        let n = inner.events.len();
        event["metadata"]["name"] = json!(format!("event-{n}"));
    }
    inner.events.push(event.clone());
    (StatusCode::CREATED, Json(event)).into_response()
}

async fn patch_event(
    State(s): State<Shared>,
    Path((_ns, name)): Path<(String, String)>,
) -> Response {
    let inner = s.inner.lock().unwrap();
    match inner
        .events
        .iter()
        .find(|e| e["metadata"]["name"] == name.as_str())
    {
        Some(e) => Json(e.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": reason, "message": message, "code": code});
    (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
}

async fn get_secret(State(s): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Response {
    match s.inner.lock().unwrap().secrets.get(&(ns, name.clone())) {
        Some(secret) => Json(secret.clone()).into_response(),
        None => status(404, "NotFound", &format!("secrets \"{name}\" not found")),
    }
}

async fn create_secret(
    State(s): State<Shared>,
    Path(ns): Path<String>,
    Json(mut secret): Json<Value>,
) -> Response {
    let mut inner = s.inner.lock().unwrap();
    if inner.fail_secret_writes {
        return status(500, "InternalError", "etcdserver: request timed out");
    }
    let name = secret["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let key = (ns, name.clone());
    if inner.secrets.contains_key(&key) {
        return status(
            409,
            "AlreadyExists",
            &format!("secrets \"{name}\" already exists"),
        );
    }
    inner.secret_writes += 1;
    inner.change(&s.changes, "ADDED", &mut secret);
    inner.secrets.insert(key, secret.clone());
    (StatusCode::CREATED, Json(secret)).into_response()
}

async fn replace_secret(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    Json(mut secret): Json<Value>,
) -> Response {
    let mut inner = s.inner.lock().unwrap();
    if inner.fail_secret_writes {
        return status(500, "InternalError", "etcdserver: request timed out");
    }
    let key = (ns, name.clone());
    let Some(current) = inner.secrets.get(&key) else {
        return status(404, "NotFound", &format!("secrets \"{name}\" not found"));
    };
    if current["metadata"]["resourceVersion"] != secret["metadata"]["resourceVersion"] {
        return status(
            409,
            "Conflict",
            "the object has been modified; please apply your changes to the latest version",
        );
    }
    inner.secret_writes += 1;
    inner.change(&s.changes, "MODIFIED", &mut secret);
    inner.secrets.insert(key, secret.clone());
    Json(secret).into_response()
}

async fn get_webhook_config(State(s): State<Shared>, Path(name): Path<String>) -> Response {
    match s.inner.lock().unwrap().webhook_configs.get(&name) {
        Some(c) => Json(c.clone()).into_response(),
        None => status(404, "NotFound", "not found"),
    }
}

async fn patch_webhook_config(
    State(s): State<Shared>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let mut inner = s.inner.lock().unwrap();
    let Some(config) = inner.webhook_configs.get_mut(&name) else {
        return status(404, "NotFound", "not found");
    };
    let Ok(patch) = serde_json::from_slice::<json_patch::Patch>(&body) else {
        return status(400, "BadRequest", "not a JSON patch");
    };
    match json_patch::patch(config, &patch) {
        Ok(()) => Json(config.clone()).into_response(),
        Err(e) => status(422, "Invalid", &e.to_string()),
    }
}

/// Secrets of every namespace: a list, or a watch, filtered by `type=` field and (lists only)
/// `k=v` label selectors.
async fn all_secrets(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if is_watch(&q) {
        let field = q
            .get("fieldSelector")
            .and_then(|f| f.strip_prefix("type="))
            .map(str::to_owned);
        return watch(&s, &q, move |obj| {
            obj["kind"] == "Secret" && field.as_ref().is_none_or(|t| obj["type"] == t.as_str())
        });
    }
    let inner = s.inner.lock().unwrap();
    let field = q
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("type="))
        .map(str::to_owned);
    let label = q
        .get("labelSelector")
        .and_then(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let items: Vec<Value> = inner
        .secrets
        .values()
        .filter(|sec| field.as_ref().is_none_or(|t| sec["type"] == t.as_str()))
        .filter(|sec| {
            label
                .as_ref()
                .is_none_or(|(k, v)| sec["metadata"]["labels"][k] == v.as_str())
        })
        .cloned()
        .collect();
    Json(json!({"apiVersion": "v1", "kind": "SecretList", "metadata": {"resourceVersion": inner.rv.to_string()}, "items": items}))
        .into_response()
}
