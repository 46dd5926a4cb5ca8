//! The workloads of a live cluster, listed through the Kubernetes API for `audit` (I/O): every
//! kind in `mutate::WORKLOADS`, page by page, each page dropped once handed on.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::Client;

use crate::mutate::Workload;
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
/// The most pages of one kind: ten million objects at 1,000 a page. A server that keeps
/// answering with more is not listing a finite cluster.
const MAX_PAGES: usize = 10_000;
/// One page must arrive within this; the API server answers a page of 500 in well under a second.
const PAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Lists one kind page by page, handing each object to `each`. An expired continue token (410)
/// starts the list again, as client-go's pager does. A page that does not arrive within
/// `PAGE_TIMEOUT`, a continue token already seen, a page larger than asked for, and more than
/// `MAX_PAGES` pages are errors: a hostile or broken server cannot keep `audit` going for ever.
/// One page after `token`, within `PAGE_TIMEOUT`.
async fn page(
    api: &Api<DynamicObject>,
    scope: &Scope,
    token: Option<&str>,
    plural: &str,
) -> Result<kube::Result<kube::core::ObjectList<DynamicObject>>, String> {
    let mut params = ListParams::default().limit(scope.page_size);
    if let Some(s) = &scope.selector {
        params = params.labels(s);
    }
    if let Some(t) = token {
        params = params.continue_token(t);
    }
    tokio::time::timeout(PAGE_TIMEOUT, api.list(&params))
        .await
        .map_err(|_| {
            format!(
                "cannot list {plural}: no page within {} s",
                PAGE_TIMEOUT.as_secs()
            )
        })
}

pub async fn list_kind(
    client: &Client,
    scope: &Scope,
    workload: &Workload,
    mut each: impl FnMut(Listed),
) -> Result<(), String> {
    let Workload {
        kind,
        api_version,
        plural,
        ..
    } = *workload;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    let api: Api<DynamicObject> = match &scope.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let mut relists = 0;
    let mut token: Option<String> = None;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..MAX_PAGES {
        match page(&api, scope, token.as_deref(), plural).await? {
            Ok(page) => {
                if page.items.len() > scope.page_size as usize {
                    return Err(format!(
                        "cannot list {plural}: the server sent {} objects in a page of {}",
                        page.items.len(),
                        scope.page_size
                    ));
                }
                for item in page.items {
                    if let Ok(v) = serde_json::to_value(&item) {
                        each(Listed::Object(v));
                    }
                }
                token = page.metadata.continue_.filter(|t| !t.is_empty());
                match &token {
                    None => return Ok(()),
                    Some(t) if !seen.insert(t.clone()) => {
                        return Err(format!(
                            "cannot list {plural}: the server repeated a continue token"
                        ))
                    }
                    Some(_) => {}
                }
            }
            Err(kube::Error::Api(e)) if e.code == 410 && token.is_some() && relists < RELISTS => {
                relists += 1;
                token = None;
                seen.clear();
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
    Err(format!(
        "cannot list {plural}: more than {MAX_PAGES} pages (the server keeps sending continue tokens)"
    ))
}
