//! Webhook receiver: a push to the repository triggers an immediate fetch instead of waiting for
//! the interval.
//!
//! It listens on a port of its own (`--listen-webhook-addr`, default `:9292` as Flux's
//! notification-controller), apart from the endpoints kubeseal uses, and answers only
//! `POST /hook/<digest>`: the digest is `sha256(token + name + namespace)` in hex, Flux
//! Receiver's formula, so the URL can only be known by whoever holds the token. The
//! GitRepository opts in with the annotation `sealkit.dev/webhook-secret: <Secret name>` (same
//! namespace, key `token`; the old `sealkit.io/` name still reads). The request must also be
//! signed with that token: GitHub's `X-Hub-Signature-256: sha256=<hex>` or the generic
//! `X-Signature: sha256=<hex>` (HMAC-SHA256 of the body). A valid hook sets Flux's
//! `reconcile.fluxcd.io/requestedAt` annotation on the GitRepository, which wakes its loop.
//!
//! An unknown digest and a bad signature get the same `404` with no body: nothing tells whether
//! a repository exists. The digest index is rebuilt at most every few seconds, so random digests
//! cannot make the receiver read every token Secret per request, and each client IP has its
//! own rate limit.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

use crate::runtime::server::{BODY_LIMIT, ClientLimiter, Peer};

/// The opt-in annotation naming the Secret with the token.
pub const SECRET_ANNOTATION: &str = "sealkit.dev/webhook-secret";
/// The same annotation under its former domain, still read.
pub const LEGACY_SECRET_ANNOTATION: &str = "sealkit.io/webhook-secret";

/// How often the digest index may be rebuilt at most.
const REINDEX_EVERY: Duration = Duration::from_secs(5);
/// How long an index is trusted before a lookup rebuilds it.
const INDEX_TTL: Duration = Duration::from_secs(30);

/// A GitRepository that accepts hooks, with its token.
pub struct Receiver {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The token (never logged, never in a message).
    pub token: Vec<u8>,
}

/// What the receiver needs from the cluster.
pub trait HookApi: Send + Sync + 'static {
    /// Every GitRepository that opted in, with its token.
    fn receivers(&self) -> impl Future<Output = Result<Vec<Receiver>, String>> + Send;
    /// Asks for an immediate reconcile.
    fn request(&self, ns: &str, name: &str) -> impl Future<Output = Result<(), String>> + Send;
}

/// The URL path of a GitRepository's hook: `/hook/` + hex(sha256(token + name + namespace)).
pub fn hook_path(token: &[u8], name: &str, namespace: &str) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(token);
    ctx.update(name.as_bytes());
    ctx.update(namespace.as_bytes());
    format!("/hook/{}", hex::encode(ctx.finish().as_ref()))
}

/// Checks a GitHub or generic HMAC-SHA256 signature of `body`.
pub fn verify(token: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    let sig = headers
        .get("x-hub-signature-256")
        .or_else(|| headers.get("x-signature"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="));
    let Some(tag) = sig.and_then(|h| hex::decode(h).ok()) else {
        return false;
    };
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, token);
    aws_lc_rs::hmac::verify(&key, body, &tag).is_ok()
}

#[derive(Default)]
struct Index {
    built: Option<Instant>,
    by_digest: HashMap<String, Arc<Receiver>>,
}

/// The receiver: the cluster, the digest index, per-client limits.
pub struct Hooks<A> {
    api: A,
    index: tokio::sync::Mutex<Index>,
    limit: ClientLimiter,
}

impl<A: HookApi> Hooks<A> {
    /// A receiver over `api`, allowing each client 5 hooks a second (burst 20).
    pub fn new(api: A) -> Self {
        Hooks {
            api,
            index: Default::default(),
            limit: ClientLimiter::new(5, 20),
        }
    }

    async fn lookup(&self, digest: &str) -> Option<Arc<Receiver>> {
        let mut idx = self.index.lock().await;
        let fresh = idx.built.is_some_and(|b| b.elapsed() < INDEX_TTL);
        let hit = idx.by_digest.get(digest).cloned();
        if hit.is_some() && fresh {
            return hit;
        }
        // A miss (a new repository, a rotated token) or an old index: rebuild, but not more
        // often than every few seconds, whatever the requests.
        if idx.built.is_none_or(|b| b.elapsed() >= REINDEX_EVERY) {
            match self.api.receivers().await {
                Ok(list) => {
                    idx.by_digest = list
                        .into_iter()
                        .map(|r| {
                            let path = hook_path(&r.token, &r.name, &r.namespace);
                            (path["/hook/".len()..].to_string(), Arc::new(r))
                        })
                        .collect();
                    idx.built = Some(Instant::now());
                }
                Err(e) => tracing::warn!(error = %e, "webhook: cannot list the receivers"),
            }
        }
        idx.by_digest.get(digest).cloned()
    }

    /// Handles one hook for `digest`.
    pub async fn handle(&self, digest: &str, headers: &HeaderMap, body: &[u8]) -> StatusCode {
        let Some(r) = self.lookup(digest).await else {
            return StatusCode::NOT_FOUND;
        };
        if !verify(&r.token, headers, body) {
            return StatusCode::NOT_FOUND;
        }
        if headers.get("x-github-event").and_then(|v| v.to_str().ok()) == Some("ping") {
            return StatusCode::OK;
        }
        match self.api.request(&r.namespace, &r.name).await {
            Ok(()) => {
                tracing::info!(namespace = %r.namespace, name = %r.name, "webhook: fetch requested");
                StatusCode::ACCEPTED
            }
            Err(e) => {
                tracing::warn!(namespace = %r.namespace, name = %r.name, error = %e, "webhook: cannot request a fetch");
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

async fn hook<A: HookApi>(
    State(st): State<Arc<Hooks<A>>>,
    Path(digest): Path<String>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let client = peer.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |Extension(p)| {
        p.0.ip()
    });
    if !st.limit.try_take(client) {
        return StatusCode::TOO_MANY_REQUESTS;
    }
    st.handle(&digest, &headers, &body).await
}

/// The receiver's listener routes.
pub fn router<A: HookApi>(api: A) -> Router {
    Router::new()
        .route("/hook/{digest}", post(hook::<A>))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(Arc::new(Hooks::new(api)))
}

/// The cluster-backed receiver.
pub struct KubeHook {
    /// Client.
    pub client: kube::Client,
    /// Only GitRepositories of this namespace (`--watch-namespace`).
    pub namespace: Option<String>,
}

impl HookApi for KubeHook {
    async fn receivers(&self) -> Result<Vec<Receiver>, String> {
        use kube::api::{Api, ListParams};
        let repos = match &self.namespace {
            Some(ns) => Api::<sealkit_api::GitRepository>::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let list = repos
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for repo in list.items {
            let annotations = repo.metadata.annotations.clone().unwrap_or_default();
            let Some(secret_name) = annotations
                .get(SECRET_ANNOTATION)
                .or_else(|| annotations.get(LEGACY_SECRET_ANNOTATION))
            else {
                continue;
            };
            let (Some(ns), Some(name)) = (repo.metadata.namespace, repo.metadata.name) else {
                continue;
            };
            // The Secret of the GitRepository's own namespace, never another's.
            let secret =
                Api::<k8s_openapi::api::core::v1::Secret>::namespaced(self.client.clone(), &ns)
                    .get_opt(secret_name)
                    .await
                    .ok()
                    .flatten();
            let token = secret
                .and_then(|s| s.data)
                .and_then(|mut d| d.remove("token"))
                .map(|b| b.0)
                .filter(|t| !t.is_empty());
            if let Some(token) = token {
                out.push(Receiver {
                    namespace: ns,
                    name,
                    token,
                });
            }
        }
        Ok(out)
    }

    async fn request(&self, ns: &str, name: &str) -> Result<(), String> {
        use kube::api::{Api, Patch, PatchParams};
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let patch = serde_json::json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": now}}});
        Api::<sealkit_api::GitRepository>::namespaced(self.client.clone(), ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests;
