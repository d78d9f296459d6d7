//! The endpoints over real TCP on 127.0.0.1, with kubeseal-format bodies.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use sealkit_keys::seal::manifest::{SealOptions, seal_secret, to_json};
use sealkit_keys::seal::{PrivateKey, PublicKey};

use super::*;
use crate::unseal::keys::{load, new_key_secret};

fn request(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

async fn serve(keys: SealingKeys) -> std::net::SocketAddr {
    let mut state = AppState::new(keys, Arc::new(Metrics::default()));
    // A burst of 3 (upstream: 2) and a refill so slow that timing on a loaded machine cannot
    // matter (the refill itself is governor's).
    state.limit = server::ClientLimiter::with_quota(
        governor::Quota::per_hour(std::num::NonZeroU32::MIN)
            .allow_burst(std::num::NonZeroU32::new(3).expect("3")),
    );
    let state = Arc::new(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = router(state.clone()).merge(metrics_router(state));
    tokio::spawn(server::serve(listener, app, Default::default()));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_behave_like_upstream() {
    let (secret, _) =
        new_key_secret("k", "kube-system", 2048, Duration::from_secs(3600), "").expect("key");
    let mut secret = secret;
    secret.metadata.name = Some("k1".into());
    let keys = load(&[secret]);
    let cert = keys.newest.as_ref().expect("newest").cert_pem.clone();
    let addr = serve(keys).await;

    let (code, body) = tokio::task::spawn_blocking(move || request(addr, "GET", "/healthz", ""))
        .await
        .expect("join");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, served) =
        tokio::task::spawn_blocking(move || request(addr, "GET", "/v1/cert.pem", ""))
            .await
            .expect("join");
    assert_eq!(code, 200);
    assert_eq!(served, cert);

    let public = PublicKey::from_certificate_pem(served.as_bytes()).expect("cert");
    let doc = seal_secret(
        &serde_json::json!({"kind": "Secret", "metadata": {"name": "db", "namespace": "prod"}, "stringData": {"password": "hunter2"}}),
        &SealOptions::default(),
        &public,
    )
    .expect("seal");
    let good = to_json(&doc);
    let g = good.clone();
    let (code, _) = tokio::task::spawn_blocking(move || request(addr, "POST", "/v1/verify", &g))
        .await
        .expect("join");
    assert_eq!(code, 200);
    // Sealed for another key: 409 with the reason, no secret value.
    let other = PrivateKey::generate(2048).expect("key");
    let foreign = to_json(
        &seal_secret(
            &serde_json::json!({"kind": "Secret", "metadata": {"name": "db", "namespace": "prod"}, "stringData": {"password": "hunter2"}}),
            &SealOptions::default(),
            other.public_key(),
        )
        .expect("seal"),
    );
    let (code, body) =
        tokio::task::spawn_blocking(move || request(addr, "POST", "/v1/verify", &foreign))
            .await
            .expect("join");
    assert_eq!(code, 409, "{body}");
    assert_eq!(body, "", "verify gives no detail");
    let g = good.clone();
    let (code, rotated) =
        tokio::task::spawn_blocking(move || request(addr, "POST", "/v1/rotate", &g))
            .await
            .expect("join");
    assert_eq!(code, 200, "{rotated}");
    let v: serde_json::Value = serde_json::from_str(&rotated).expect("json");
    assert_eq!(v["kind"], "SealedSecret");
    // Rate limit: the burst is used up.
    let g = good.clone();
    let (code, _) = tokio::task::spawn_blocking(move || request(addr, "POST", "/v1/rotate", &g))
        .await
        .expect("join");
    assert_eq!(code, 429);
    let (code, metrics) = tokio::task::spawn_blocking(move || request(addr, "GET", "/metrics", ""))
        .await
        .expect("join");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("sealed_secrets_controller_build_info")
            && metrics.contains("sealkit_rsa_private_key_operations_total"),
        "{metrics}"
    );
    assert!(!metrics.contains("hunter2"));
}
