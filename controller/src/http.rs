//! The controller's HTTP endpoints, as upstream serves them (kubeseal reaches them through the
//! API server's service proxy): `GET /healthz`, `GET /v1/cert.pem`, `POST /v1/verify` (200 if
//! the SealedSecret unseals, 409 if not), `POST /v1/rotate` (re-encrypted to the newest key).
//! verify and rotate are rate-limited (2/s, burst 2, like upstream's defaults). Only public
//! material leaves this server: certificates, and sealed values.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sealkit_keys::seal::manifest;

use crate::metrics::Metrics;
use crate::unseal::keys::SealingKeys;

/// A token bucket.
pub struct RateLimit {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    /// `rate` tokens per second, at most `burst` saved up.
    pub fn new(rate: f64, burst: f64) -> Self {
        RateLimit {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes a token if one is available.
    pub fn try_take(&self) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
        s.0 = (s.0 + refill).min(self.burst);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the HTTP handlers share with the reconciler.
pub struct AppState {
    /// The current keys (replaced when keys are added).
    pub keys: RwLock<Arc<SealingKeys>>,
    /// Rate limit of verify and rotate.
    pub limit: RateLimit,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// State with upstream's rate limit.
    pub fn new(keys: SealingKeys, metrics: Arc<Metrics>) -> Self {
        AppState {
            keys: RwLock::new(Arc::new(keys)),
            limit: RateLimit::new(2.0, 2.0),
            metrics,
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

/// The one SealedSecret in a request body, or the 400 message.
/// Rate limit, then the one SealedSecret of the body: what verify and rotate both start with.
fn admit(state: &AppState, body: &Bytes) -> Result<serde_json::Value, Box<Response>> {
    if !state.limit.try_take() {
        return Err(Box::new(text(
            StatusCode::TOO_MANY_REQUESTS,
            "rate limited\n",
        )));
    }
    parse(body).map_err(|m| Box::new(text(StatusCode::BAD_REQUEST, m)))
}

/// Runs `f` on the keyring and counts its RSA private-key operations into the metric.
fn counted<T>(state: &AppState, keys: &SealingKeys, f: impl FnOnce() -> T) -> T {
    let out = f();
    keys.report_ops(&state.metrics.rsa_private_ops);
    out
}

fn parse(body: &Bytes) -> Result<serde_json::Value, String> {
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8\n".to_string())?;
    let mut docs = manifest::parse_documents(text).map_err(|e| format!("{e}\n"))?;
    if docs.len() != 1 {
        return Err("expected exactly one SealedSecret\n".into());
    }
    Ok(docs.remove(0).value)
}

async fn verify(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let doc = match admit(&state, &body) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let keys = state.keys();
    // Only whether every value opens: no template is rendered and no reason is given, so the
    // endpoint (which any pod can reach) cannot be turned into an oracle on the plaintext.
    match counted(&state, &keys, || manifest::open_items(&doc, &keys.keyring)) {
        Ok(_) => text(StatusCode::OK, ""),
        Err(_) => text(StatusCode::CONFLICT, ""),
    }
}

async fn rotate(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let doc = match admit(&state, &body) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let keys = state.keys();
    let Some(newest) = keys.newest.as_ref().and_then(|n| {
        keys.keyring
            .keys()
            .find(|k| k.fingerprint() == &n.fingerprint)
    }) else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "no sealing key yet\n");
    };
    let result = counted(&state, &keys, || {
        manifest::reseal(&doc, &keys.keyring, newest.public_key())
    });
    match result {
        Ok(v) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            manifest::to_json(&v),
        )
            .into_response(),
        Err(e) => text(StatusCode::CONFLICT, format!("{e}\n")),
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
