//! The workloads of a live cluster, listed through the Kubernetes API for `audit` (I/O): every
//! kind `audit::KINDS` names, page by page, so memory stays flat however large the cluster.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::Client;
use serde_json::Value;

/// Which objects are listed.
#[derive(Debug, Clone)]
pub struct Scope {
    pub namespace: Option<String>,
    pub selector: Option<String>,
    pub page_size: u32,
}

/// What a listing hands its caller.
pub enum Listed {
    /// One object of the kind.
    Object(Value),
    /// The list was restarted (its continue token expired): forget what this kind gave so far.
    Restart,
}

/// How often a kind is listed again from the start after its continue token expired.
const RELISTS: usize = 3;

/// Lists one kind page by page, handing each object to `each`. An expired continue token (410)
/// starts the list again, as client-go's pager does.
pub async fn list_kind(
    client: &Client,
    scope: &Scope,
    (kind, api_version, plural): (&str, &str, &str),
    mut each: impl FnMut(Listed),
) -> Result<(), String> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    let api: Api<DynamicObject> = match &scope.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let mut relists = 0;
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(scope.page_size);
        if let Some(s) = &scope.selector {
            params = params.labels(s);
        }
        if let Some(t) = &token {
            params = params.continue_token(t);
        }
        match api.list(&params).await {
            Ok(page) => {
                for item in page.items {
                    if let Ok(v) = serde_json::to_value(&item) {
                        each(Listed::Object(v));
                    }
                }
                token = page.metadata.continue_.filter(|t| !t.is_empty());
                if token.is_none() {
                    return Ok(());
                }
            }
            Err(kube::Error::Api(e)) if e.code == 410 && token.is_some() && relists < RELISTS => {
                relists += 1;
                token = None;
                each(Listed::Restart);
            }
            Err(kube::Error::Api(e)) => {
                return Err(format!(
                    "cannot list {plural}: {} ({}): {}",
                    e.reason, e.code, e.message
                ))
            }
            Err(e) => return Err(format!("cannot list {plural}: {e}")),
        }
    }
}
