//! One full refresh cycle of 1,000 ExternalSecrets x 3 keys drawn from 100 AWS secrets, against
//! moto_server: AWS API calls, wall time and peak memory, beside a baseline in the same run that
//! fetches every key with its own call (ESO's model: 3,000 calls).
//!
//! Run: `SEALKIT_MOTO_SERVER=…/moto_server SEALKIT_MOTO_PYTHON=…/python cargo bench -p sealkit-tests --bench external_refresh`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use sealkit_api::{ExternalSecret, SecretStore};
use sealkit_controller::external::cache::Fetcher;
use sealkit_controller::external::memory::{FixedFactory, MemorySyncApi};
use sealkit_controller::external::provider::RemoteKey;
use sealkit_controller::external::provider::aws::{
    AwsLimits, AwsSettings, Limiters, StaticCredentials, provider,
};
use sealkit_controller::external::reconcile::{SyncContext, reconcile};
use sealkit_controller::runtime::metrics::Metrics;

fn api_calls(m: &Metrics) -> u64 {
    m.encode()
        .lines()
        .filter(|l| l.starts_with("sealkit_provider_api_calls_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(moto) = sealkit_tests::Moto::start() else {
        eprintln!(
            "moto_server is needed: run scripts/test.sh once (it installs it) and set SEALKIT_MOTO_SERVER"
        );
        std::process::exit(2);
    };
    moto.py("for i in range(100):\n    sm.create_secret(Name=f'app/s{i:03d}', SecretString=json.dumps({'a': f'a{i}', 'b': f'b{i}', 'c': f'c{i}'}))");
    let settings = || AwsSettings {
        service: "SecretsManager".into(),
        region: "us-east-1".into(),
        role: None,
        external_id: None,
        credentials: Some(StaticCredentials {
            access_key_id: "testing".into(),
            secret_access_key: "testing".to_string().into(),
            session_token: None,
        }),
        endpoint: Some(moto.endpoint.clone()),
    };
    // Generous budgets so the benchmark measures calls and work, not our own rate limiter.
    let limits = AwsLimits {
        secretsmanager_qps: 100_000.0,
        ssm_qps: 100_000.0,
    };

    // Baseline: one call per key, as ESO does (its per-reconcile cache only dedupes within one
    // ExternalSecret).
    let base_metrics = Arc::new(Metrics::default());
    let base = provider(
        &settings(),
        &limits,
        Arc::new(Limiters::default()),
        base_metrics.clone(),
    )
    .await
    .expect("provider");
    let started = Instant::now();
    for i in 0..1000 {
        for j in 0..3 {
            let k = RemoteKey::current(format!("app/s{:03}", (i + j * 7) % 100));
            let _ = base.get_many(std::slice::from_ref(&k)).await;
        }
    }
    let base_time = started.elapsed();
    let base_calls = api_calls(&base_metrics);

    let api = MemorySyncApi::default();
    let store: SecretStore = serde_json::from_value(serde_json::json!({
        "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
        "metadata": {"name": "aws", "namespace": "app"},
        "spec": {"provider": {"aws": {"service": "SecretsManager", "region": "us-east-1",
            "auth": {"secretRef": {"accessKeyIDSecretRef": {"name": "awssm", "key": "id"},
                                   "secretAccessKeySecretRef": {"name": "awssm", "key": "secret"}}}}}}
    }))
    .expect("store");
    api.stores
        .lock()
        .expect("lock")
        .insert("app/aws".into(), store);
    api.secrets.lock().expect("lock").insert(
        "app/awssm".into(),
        Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("awssm".into()),
                namespace: Some("app".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                ("id".to_string(), ByteString(b"testing".to_vec())),
                ("secret".to_string(), ByteString(b"testing".to_vec())),
            ])),
            ..Default::default()
        },
    );
    let objects: Vec<ExternalSecret> = (0..1000)
        .map(|i| {
            let data: Vec<serde_json::Value> = ["a", "b", "c"]
                .iter()
                .enumerate()
                .map(|(j, p)| {
                    serde_json::json!({"secretKey": p, "remoteRef": {"key": format!("app/s{:03}", (i + j * 7) % 100), "property": p}})
                })
                .collect();
            serde_json::from_value(serde_json::json!({
                "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                "metadata": {"name": format!("es{i}"), "namespace": "app", "uid": format!("u{i}"), "generation": 1},
                "spec": {"secretStoreRef": {"name": "aws"}, "data": data}
            }))
            .expect("es")
        })
        .collect();
    let metrics = Arc::new(Metrics::default());
    let provider = provider(
        &settings(),
        &limits,
        Arc::new(Limiters::default()),
        metrics.clone(),
    )
    .await
    .expect("provider");
    let ctx = SyncContext::new(
        FixedFactory(provider),
        Fetcher::new(Duration::from_secs(30), Duration::from_millis(20)),
        metrics.clone(),
    );
    let started = Instant::now();
    let results = futures::future::join_all(objects.iter().map(|e| reconcile(e, &api, &ctx))).await;
    let ours_time = started.elapsed();
    let failed = results.iter().filter(|r| r.is_err()).count();
    let ours_calls = api_calls(&metrics);
    let secrets = api.secrets.lock().expect("lock").len() - 1;
    println!("external_refresh: 1000 ExternalSecrets x 3 keys from 100 AWS secrets (moto_server)");
    println!(
        "  baseline, one call per key: {base_calls} calls, {:.2} s",
        base_time.as_secs_f64()
    );
    println!(
        "  sealkit, shared batching cache: {ours_calls} calls, {:.2} s, {secrets} Secrets written, {failed} failed",
        ours_time.as_secs_f64()
    );
    println!(
        "  ratio: {:.4}x the calls, {:.3}x the time; peak RSS of this process {} MiB",
        ours_calls as f64 / base_calls.max(1) as f64,
        ours_time.as_secs_f64() / base_time.as_secs_f64().max(1e-9),
        peak_rss_kib() / 1024
    );
    assert_eq!(failed, 0);
}
