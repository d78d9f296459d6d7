//! The controller's HTTP endpoints, as upstream serves them (kubeseal reaches them through the
//! API server's service proxy): `GET /healthz`, `GET /v1/cert.pem`, `POST /v1/verify` (200 if
//! the SealedSecret unseals, 409 if not), `POST /v1/rotate` (re-encrypted to the newest key).
//! verify and rotate are rate-limited per client (2/s, burst 2, upstream's defaults, but per
//! client IP so one client cannot starve the others) and run their RSA work off the async
//! workers, at most one per core at a time. Only public material leaves this server:
//! certificates, and sealed values; verify says only yes (200) or no (409). The listeners
//! themselves (timeouts, connection limit, body limit) are in [`crate::runtime::server`].

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sealkit_keys::seal::manifest;

use super::keys::SealingKeys;
use crate::runtime::metrics::Metrics;
use crate::runtime::server;

/// What the HTTP handlers share with the reconciler.
pub struct AppState {
    /// The current keys (replaced when keys are added).
    pub keys: RwLock<Arc<SealingKeys>>,
    /// Rate limit of verify and rotate, per client.
    pub limit: server::ClientLimiter,
    /// RSA work of verify and rotate running at once (one per core).
    pub rsa_slots: Arc<tokio::sync::Semaphore>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Secrets found up to date, by resourceVersion (the unseal loop skips reading them).
    pub verified: super::verified::Verified,
}

impl AppState {
    /// State with upstream's rate limit (per client).
    pub fn new(keys: SealingKeys, metrics: Arc<Metrics>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        AppState {
            keys: RwLock::new(Arc::new(keys)),
            limit: server::ClientLimiter::new(2, 2),
            rsa_slots: Arc::new(tokio::sync::Semaphore::new(cores)),
            metrics,
            verified: Default::default(),
        }
    }

    /// The current keys.
    pub fn keys(&self) -> Arc<SealingKeys> {
        self.keys.read().map(|k| Arc::clone(&k)).unwrap_or_default()
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n")
}

async fn cert(State(state): State<Arc<AppState>>) -> Response {
    match &state.keys().newest {
        Some(k) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-pem-file")],
            k.cert_pem.clone(),
        )
            .into_response(),
        None => text(StatusCode::SERVICE_UNAVAILABLE, "no sealing key yet\n"),
    }
}

/// Rate limit (per client), then the one SealedSecret of the body: what verify and rotate both
/// start with.
fn admit(
    state: &AppState,
    peer: Option<Extension<server::Peer>>,
    body: &Bytes,
) -> Result<serde_json::Value, Box<Response>> {
    let client = peer.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |Extension(p)| {
        p.0.ip()
    });
    if !state.limit.try_take(client) {
        return Err(Box::new(text(
            StatusCode::TOO_MANY_REQUESTS,
            "rate limited\n",
        )));
    }
    parse(body).map_err(|m| Box::new(text(StatusCode::BAD_REQUEST, m)))
}

/// Runs `f` (RSA work) on the blocking pool, at most one per core at a time, and counts its
/// private-key operations into the metric.
async fn counted<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&SealingKeys) -> T + Send + 'static,
) -> Option<T> {
    let _slot = state.rsa_slots.clone().acquire_owned().await.ok()?;
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        let keys = st.keys();
        let out = f(&keys);
        keys.report_ops(&st.metrics.rsa_private_ops);
        out
    })
    .await
    .ok()
}

fn parse(body: &Bytes) -> Result<serde_json::Value, String> {
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8\n".to_string())?;
    let mut docs = manifest::parse_documents(text).map_err(|e| format!("{e}\n"))?;
    if docs.len() != 1 {
        return Err("expected exactly one SealedSecret\n".into());
    }
    Ok(docs.remove(0).value)
}

async fn verify(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<server::Peer>>,
    body: Bytes,
) -> Response {
    let doc = match admit(&state, peer, &body) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    // Only whether every value opens: no template is rendered and no reason is given, so the
    // endpoint (which any pod can reach) cannot be turned into an oracle on the plaintext.
    let opened = counted(&state, move |keys| {
        manifest::open_items(&doc, &keys.keyring).is_ok()
    })
    .await;
    match opened {
        Some(true) => text(StatusCode::OK, ""),
        _ => text(StatusCode::CONFLICT, ""),
    }
}

async fn rotate(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<server::Peer>>,
    body: Bytes,
) -> Response {
    let doc = match admit(&state, peer, &body) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let result = counted(&state, move |keys| {
        let newest = keys.newest.as_ref().and_then(|n| {
            keys.keyring
                .keys()
                .find(|k| k.fingerprint() == &n.fingerprint)
        })?;
        // ManifestError names fields and scopes, never a value.
        Some(manifest::reseal(&doc, &keys.keyring, newest.public_key()).map_err(|e| e.to_string()))
    })
    .await;
    match result {
        Some(Some(Ok(v))) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            manifest::to_json(&v),
        )
            .into_response(),
        Some(Some(Err(e))) => text(StatusCode::CONFLICT, format!("{e}\n")),
        Some(None) => text(StatusCode::SERVICE_UNAVAILABLE, "no sealing key yet\n"),
        None => text(StatusCode::SERVICE_UNAVAILABLE, "busy\n"),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// The main listener's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/cert.pem", get(cert))
        .route("/v1/verify", post(verify))
        .route("/v1/rotate", post(rotate))
        .layer(DefaultBodyLimit::max(server::BODY_LIMIT))
        .with_state(state)
}

/// The metrics listener's routes.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

#[cfg(test)]
mod tests;
