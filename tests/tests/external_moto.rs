//! The ExternalSecret syncer against `moto_server`: the real AWS wire protocol (Secrets Manager
//! JSON-RPC and SSM), data seeded by boto3 (an AWS client we did not write).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use sealkit_api::{ExternalSecret, SecretStore};
use sealkit_controller::external::cache::Fetcher;
use sealkit_controller::external::memory::{FixedFactory, MemorySyncApi};
use sealkit_controller::external::provider::aws::{
    AwsLimits, AwsSettings, Limiters, StaticCredentials, provider,
};
use sealkit_controller::external::provider::{FetchError, FindQuery, Provider, RemoteKey};
use sealkit_controller::external::reconcile::{SyncContext, reconcile};
use sealkit_controller::runtime::metrics::Metrics;
use sealkit_tests::Moto;

fn settings(moto: &Moto, service: &str) -> AwsSettings {
    AwsSettings {
        service: service.into(),
        region: "us-east-1".into(),
        role: None,
        external_id: None,
        credentials: Some(StaticCredentials {
            access_key_id: "testing".into(),
            secret_access_key: "testing".to_string().into(),
            session_token: None,
        }),
        endpoint: Some(moto.endpoint.clone()),
    }
}

async fn client(moto: &Moto, service: &str, metrics: &Arc<Metrics>) -> Arc<dyn Provider> {
    provider(
        &settings(moto, service),
        &AwsLimits::default(),
        Arc::new(Limiters::default()),
        metrics.clone(),
    )
    .await
    .expect("provider")
}

fn calls(metrics: &Metrics, call: &str) -> u64 {
    metrics
        .encode()
        .lines()
        .filter(|l| {
            l.starts_with("sealkit_provider_api_calls_total")
                && l.contains(&format!("call=\"{call}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn text(r: &Result<sealkit_controller::external::provider::SecretValue, FetchError>) -> String {
    String::from_utf8_lossy(r.as_ref().expect("value").bytes()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_manager_batches_versions_and_find() {
    let Some(moto) = Moto::start() else { return };
    moto.py(
        r#"
for i in range(25):
    sm.create_secret(Name=f"app/s{i:02d}", SecretString=json.dumps({"n": i}), Tags=[{"Key": "team", "Value": "a" if i % 2 else "b"}])
sm.create_secret(Name="bin", SecretBinary=b"\x00\x01binary")
sm.create_secret(Name="versioned", SecretString="v1")
v2 = sm.put_secret_value(SecretId="versioned", SecretString="v2")
print(v2["VersionId"])
"#,
    );
    let metrics = Arc::new(Metrics::default());
    let sm = client(&moto, "SecretsManager", &metrics).await;
    let mut keys: Vec<RemoteKey> = (0..25)
        .map(|i| RemoteKey::current(format!("app/s{i:02}")))
        .collect();
    keys.push(RemoteKey::current("bin"));
    keys.push(RemoteKey::current("does-not-exist"));
    keys.push(RemoteKey {
        key: "versioned".into(),
        version: Some("AWSPREVIOUS".into()),
    });
    keys.push(RemoteKey {
        key: "versioned".into(),
        version: Some("AWSCURRENT".into()),
    });
    let got: BTreeMap<RemoteKey, _> = sm.get_many(&keys).await.into_iter().collect();
    assert_eq!(got.len(), keys.len());
    assert_eq!(text(&got[&RemoteKey::current("app/s07")]), r#"{"n": 7}"#);
    assert_eq!(
        got[&RemoteKey::current("bin")]
            .as_ref()
            .expect("bin")
            .bytes(),
        b"\x00\x01binary"
    );
    assert!(
        matches!(&got[&RemoteKey::current("does-not-exist")], Err(FetchError::NotFound(k)) if k == "does-not-exist")
    );
    assert_eq!(
        text(
            &got[&RemoteKey {
                key: "versioned".into(),
                version: Some("AWSPREVIOUS".into())
            }]
        ),
        "v1"
    );
    assert_eq!(
        text(
            &got[&RemoteKey {
                key: "versioned".into(),
                version: Some("AWSCURRENT".into())
            }]
        ),
        "v2"
    );
    // 28 current keys in batches of 20, one GetSecretValue for the previous version.
    assert_eq!(calls(&metrics, "BatchGetSecretValue"), 2);
    assert_eq!(calls(&metrics, "GetSecretValue"), 1);

    let by_tag = sm
        .find(&FindQuery {
            tags: BTreeMap::from([("team".into(), "a".into())]),
            ..Default::default()
        })
        .await
        .expect("find by tag");
    assert_eq!(by_tag.len(), 12, "odd-numbered secrets");
    let (lists, batches) = (
        calls(&metrics, "ListSecrets"),
        calls(&metrics, "BatchGetSecretValue"),
    );
    let by_name = sm
        .find(&FindQuery {
            path: Some("app/".into()),
            name_regexp: Some("s1[0-4]$".into()),
            ..Default::default()
        })
        .await
        .expect("find by path and name");
    assert_eq!(
        by_name.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["app/s10", "app/s11", "app/s12", "app/s13", "app/s14"]
    );
    // By path: BatchGetSecretValue with a name filter (25 matches = 2 pages of 20), no listing.
    assert_eq!(calls(&metrics, "ListSecrets"), lists);
    assert_eq!(calls(&metrics, "BatchGetSecretValue") - batches, 2);
    let bad = sm
        .find(&FindQuery {
            name_regexp: Some("(".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("regexp"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_store_batches_and_paths() {
    let Some(moto) = Moto::start() else { return };
    moto.py(r#"
for i in range(12):
    ssm.put_parameter(Name=f"/app/p{i:02d}", Value=f"value-{i}", Type="SecureString")
ssm.put_parameter(Name="/other/x", Value="x", Type="String")
ssm.put_parameter(Name="/app/p00", Value="value-0-v2", Type="SecureString", Overwrite=True)
"#);
    let metrics = Arc::new(Metrics::default());
    let ps = client(&moto, "ParameterStore", &metrics).await;
    let mut keys: Vec<RemoteKey> = (0..12)
        .map(|i| RemoteKey::current(format!("/app/p{i:02}")))
        .collect();
    keys.push(RemoteKey::current("/app/missing"));
    keys.push(RemoteKey {
        key: "/app/p00".into(),
        version: Some("1".into()),
    });
    let got: BTreeMap<RemoteKey, _> = ps.get_many(&keys).await.into_iter().collect();
    assert_eq!(
        text(&got[&RemoteKey::current("/app/p05")]),
        "value-5",
        "SecureString decrypted"
    );
    assert_eq!(text(&got[&RemoteKey::current("/app/p00")]), "value-0-v2");
    assert_eq!(
        text(
            &got[&RemoteKey {
                key: "/app/p00".into(),
                version: Some("1".into())
            }]
        ),
        "value-0"
    );
    assert!(matches!(
        &got[&RemoteKey::current("/app/missing")],
        Err(FetchError::NotFound(_))
    ));
    assert_eq!(
        calls(&metrics, "GetParameters"),
        2,
        "14 names in batches of 10"
    );
    let found = ps
        .find(&FindQuery {
            path: Some("/app".into()),
            ..Default::default()
        })
        .await
        .expect("by path");
    assert_eq!(found.len(), 12);
}

fn store_and_creds(api: &MemorySyncApi) {
    let store: SecretStore = serde_json::from_value(serde_json::json!({
        "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
        "metadata": {"name": "aws", "namespace": "app"},
        "spec": {"provider": {"aws": {"service": "SecretsManager", "region": "us-east-1",
            "auth": {"secretRef": {
                "accessKeyIDSecretRef": {"name": "awssm", "key": "access-key"},
                "secretAccessKeySecretRef": {"name": "awssm", "key": "secret-access-key"}}}}}}
    }))
    .expect("store");
    api.stores
        .lock()
        .expect("lock")
        .insert("app/aws".into(), store);
    let creds = Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("awssm".into()),
            namespace: Some("app".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            ("access-key".to_string(), ByteString(b"testing".to_vec())),
            (
                "secret-access-key".to_string(),
                ByteString(b"testing".to_vec()),
            ),
        ])),
        ..Default::default()
    };
    api.secrets
        .lock()
        .expect("lock")
        .insert("app/awssm".into(), creds);
}

fn password(api: &MemorySyncApi) -> Option<String> {
    api.secrets
        .lock()
        .expect("lock")
        .get("app/db")
        .and_then(|s| s.data.clone())
        .and_then(|d| d.get("password").cloned())
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_secret_syncs_survives_an_outage_and_recovers() {
    let Some(mut moto) = Moto::start() else {
        return;
    };
    let seed =
        r#"sm.create_secret(Name="prod/db", SecretString=json.dumps({"password": "first-pw"}))"#;
    moto.py(seed);
    let metrics = Arc::new(Metrics::default());
    let api = MemorySyncApi::default();
    store_and_creds(&api);
    let ctx = SyncContext::new(
        FixedFactory(client(&moto, "SecretsManager", &metrics).await),
        Fetcher::new(Duration::ZERO, Duration::from_millis(5)),
        metrics.clone(),
    );
    let mut es: ExternalSecret = serde_json::from_value(serde_json::json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": "db", "namespace": "app", "uid": "u1", "generation": 1},
        "spec": {"refreshInterval": "1s", "secretStoreRef": {"name": "aws", "kind": "SecretStore"},
                 "data": [{"secretKey": "password", "remoteRef": {"key": "prod/db", "property": "password"}}]}
    }))
    .expect("es");
    let observe = |es: &mut ExternalSecret| {
        es.status = api.statuses.lock().expect("lock").get("app/db").cloned();
    };
    reconcile(&es, &api, &ctx).await.expect("first sync");
    assert_eq!(password(&api).as_deref(), Some("first-pw"));

    // Changed in AWS: the next refresh (interval 1 s) brings it.
    moto.py(r#"sm.put_secret_value(SecretId="prod/db", SecretString=json.dumps({"password": "second-pw"}))"#);
    observe(&mut es);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    reconcile(&es, &api, &ctx).await.expect("refresh");
    assert_eq!(password(&api).as_deref(), Some("second-pw"));

    // Outage: the Secret is kept, Ready=False says why, without any value.
    moto.stop();
    observe(&mut es);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let err = reconcile(&es, &api, &ctx).await.unwrap_err();
    assert!(
        !err.contains("second-pw") && !err.contains("testing"),
        "{err}"
    );
    assert_eq!(password(&api).as_deref(), Some("second-pw"));
    let status = api
        .statuses
        .lock()
        .expect("lock")
        .get("app/db")
        .cloned()
        .expect("status");
    let ready = &status.conditions.as_ref().expect("conditions")[0];
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("False", Some("SecretSyncedError"))
    );

    // Back: Ready=True again.
    moto.restart();
    moto.py(seed);
    observe(&mut es);
    reconcile(&es, &api, &ctx).await.expect("recovered");
    let status = api
        .statuses
        .lock()
        .expect("lock")
        .get("app/db")
        .cloned()
        .expect("status");
    assert_eq!(
        status.conditions.as_ref().expect("conditions")[0].status,
        "True"
    );
    assert_eq!(password(&api).as_deref(), Some("first-pw"));
}

/// `role`: the static credentials assume the role through STS (moto serves it too), and the
/// assumed credentials read the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_then_read() {
    let Some(moto) = Moto::start() else { return };
    moto.py(r#"sm.create_secret(Name="via-role", SecretString="role-value")"#);
    let mut s = settings(&moto, "SecretsManager");
    s.role = Some("arn:aws:iam::123456789012:role/sealkit-reader".into());
    s.external_id = Some("e2e".into());
    let metrics = Arc::new(Metrics::default());
    let p = provider(
        &s,
        &AwsLimits::default(),
        Arc::new(Limiters::default()),
        metrics,
    )
    .await
    .expect("provider");
    let got = p.get_many(&[RemoteKey::current("via-role")]).await;
    assert_eq!(text(&got[0].1), "role-value");
}
