//! Webhook receiver: a push to the repository triggers an immediate fetch instead of waiting for
//! the interval.
//!
//! `POST /hook/gitrepository/<namespace>/<name>` on the HTTP port. The GitRepository opts in with
//! the annotation `sealkit.io/webhook-secret: <Secret name>` (same namespace, key `token`); the
//! request must be signed with that token: GitHub's `X-Hub-Signature-256: sha256=<hex>` or the
//! generic `X-Signature: sha256=<hex>` (HMAC-SHA256 of the body). A valid hook sets Flux's
//! `reconcile.fluxcd.io/requestedAt` annotation on the GitRepository, which wakes its loop (and,
//! on a new revision, the Kustomizations that follow it). Unknown repositories, repositories
//! without the annotation and bad signatures all get the same 404/401 answers and no detail.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

use crate::http::RateLimit;

/// The opt-in annotation naming the Secret with the token.
pub const SECRET_ANNOTATION: &str = "sealkit.io/webhook-secret";

/// What the receiver needs from the cluster.
pub trait HookApi: Send + Sync + 'static {
    /// The token of the GitRepository's webhook Secret (`None`: unknown repository, no
    /// annotation, or no token).
    fn token(&self, ns: &str, name: &str) -> impl Future<Output = Option<Vec<u8>>> + Send;
    /// Asks for an immediate reconcile.
    fn request(&self, ns: &str, name: &str) -> impl Future<Output = Result<(), String>> + Send;
}

/// Checks a GitHub or generic HMAC-SHA256 signature of `body`.
pub fn verify(token: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    let sig = headers
        .get("x-hub-signature-256")
        .or_else(|| headers.get("x-signature"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="));
    let Some(hex) = sig else { return false };
    let Some(tag) = decode_hex(hex) else {
        return false;
    };
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, token);
    aws_lc_rs::hmac::verify(&key, body, &tag).is_ok()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Handles one hook.
pub async fn handle<A: HookApi>(
    api: &A,
    ns: &str,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> StatusCode {
    let Some(token) = api.token(ns, name).await else {
        return StatusCode::NOT_FOUND;
    };
    if !verify(&token, headers, body) {
        return StatusCode::UNAUTHORIZED;
    }
    if headers.get("x-github-event").and_then(|v| v.to_str().ok()) == Some("ping") {
        return StatusCode::OK;
    }
    match api.request(ns, name).await {
        Ok(()) => {
            tracing::info!(namespace = ns, name, "webhook: fetch requested");
            StatusCode::ACCEPTED
        }
        Err(e) => {
            tracing::warn!(namespace = ns, name, error = %e, "webhook: cannot request a fetch");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

struct HookState<A> {
    api: A,
    limit: RateLimit,
}

async fn hook<A: HookApi>(
    State(st): State<Arc<HookState<A>>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if !st.limit.try_take() {
        return StatusCode::TOO_MANY_REQUESTS;
    }
    handle(&st.api, &ns, &name, &headers, &body).await
}

/// The receiver's routes (merged into the HTTP port's router).
pub fn router<A: HookApi>(api: A) -> Router {
    let state = Arc::new(HookState {
        api,
        limit: RateLimit::new(5.0, 20.0),
    });
    Router::new()
        .route("/hook/gitrepository/{namespace}/{name}", post(hook::<A>))
        .with_state(state)
}

/// The cluster-backed receiver.
pub struct KubeHook {
    /// Client.
    pub client: kube::Client,
}

impl HookApi for KubeHook {
    async fn token(&self, ns: &str, name: &str) -> Option<Vec<u8>> {
        use kube::api::Api;
        let repo = Api::<sealkit_api::GitRepository>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .ok()??;
        let secret_name = repo
            .metadata
            .annotations
            .as_ref()?
            .get(SECRET_ANNOTATION)?
            .clone();
        let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(self.client.clone(), ns)
            .get_opt(&secret_name)
            .await
            .ok()??;
        secret
            .data?
            .remove("token")
            .map(|b| b.0)
            .filter(|t| !t.is_empty())
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
