//! Reconcile behaviour against the in-memory cluster and an in-memory provider.

use std::time::Duration;

use sealkit_api::StoreProvider;

use super::*;
use crate::external::memory::{FixedFactory, MemorySyncApi};
use crate::external::provider::FetchError;
use crate::external::provider::memory::MemoryProvider;
use crate::external::store::{CredentialScope, store_status};

fn es(name: &str, v: serde_json::Value) -> ExternalSecret {
    let mut e: ExternalSecret = serde_json::from_value(serde_json::json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": name, "namespace": "app", "uid": format!("uid-{name}"), "generation": 1},
        "spec": v
    }))
    .expect("es");
    e.metadata.generation = Some(1);
    e
}

fn basic(name: &str) -> ExternalSecret {
    es(
        name,
        serde_json::json!({
            "refreshInterval": "1h",
            "secretStoreRef": {"name": "aws", "kind": "SecretStore"},
            "data": [{"secretKey": "password", "remoteRef": {"key": "prod/db", "property": "password"}}]
        }),
    )
}

fn setup() -> (
    MemorySyncApi,
    Arc<MemoryProvider>,
    SyncContext<FixedFactory>,
) {
    let api = MemorySyncApi::default();
    let store: SecretStore = serde_json::from_value(serde_json::json!({
        "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
        "metadata": {"name": "aws", "namespace": "app"},
        "spec": {"provider": {"aws": {"service": "SecretsManager", "region": "us-east-1",
            "auth": {"secretRef": {
                "accessKeyIDSecretRef": {"name": "awssm", "key": "id"},
                "secretAccessKeySecretRef": {"name": "awssm", "key": "secret"}}}}}}
    }))
    .expect("store");
    locked(&api.stores).insert("app/aws".into(), store);
    let creds = Secret {
        metadata: ObjectMeta {
            name: Some("awssm".into()),
            namespace: Some("app".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            ("id".to_string(), ByteString(b"AKIDTEST".to_vec())),
            (
                "secret".to_string(),
                ByteString(b"credential-never-shown".to_vec()),
            ),
        ])),
        ..Default::default()
    };
    locked(&api.secrets).insert("app/awssm".into(), creds);
    let provider = Arc::new(MemoryProvider::default());
    provider.put("prod/db", r#"{"password":"pw-1"}"#);
    // Stores are re-read on every reconcile here, so tests can change them in between;
    // `one_batch_for_many_external_secrets` checks the sharing.
    let ctx = SyncContext::new(
        FixedFactory(provider.clone()),
        Fetcher::new(Duration::from_millis(50), Duration::from_millis(5)),
        Arc::new(Metrics::default()),
    )
    .with_store_ttl(Duration::ZERO);
    (api, provider, ctx)
}

fn value(api: &MemorySyncApi, name: &str, key: &str) -> Option<String> {
    locked(&api.secrets)
        .get(&format!("app/{name}"))
        .and_then(|s| s.data.clone())
        .and_then(|d| d.get(key).cloned())
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

fn ready_of(api: &MemorySyncApi, name: &str) -> (String, String, String) {
    let st = locked(&api.statuses);
    let c = st
        .get(&format!("app/{name}"))
        .and_then(|s| s.conditions.clone())
        .expect("status")[0]
        .clone();
    (
        c.status,
        c.reason.unwrap_or_default(),
        c.message.unwrap_or_default(),
    )
}

/// The object as the next watch event would show it (with the status we wrote).
fn observed(api: &MemorySyncApi, e: &ExternalSecret) -> ExternalSecret {
    let mut e = e.clone();
    e.status = locked(&api.statuses)
        .get(&format!("app/{}", e.name_any()))
        .cloned();
    e
}

#[tokio::test]
async fn create_skip_refresh_and_keep_last_good() {
    let (api, provider, ctx) = setup();
    let e = basic("db");
    let next = reconcile(&e, &api, &ctx).await.expect("sync");
    assert!(
        matches!(next, Next::After(d) if d >= Duration::from_secs(3600) && d <= Duration::from_secs(3900))
    );
    assert_eq!(value(&api, "db", "password").as_deref(), Some("pw-1"));
    assert_eq!(ready_of(&api, "db").0, "True");
    let s = locked(&api.secrets).get("app/db").cloned().expect("secret");
    assert_eq!(
        s.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_LABEL))
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(s.metadata.owner_references.as_ref().map(Vec::len), Some(1));
    assert_eq!(s.type_.as_deref(), Some("Opaque"));

    let metrics = ctx.metrics.encode();
    assert!(
        metrics.contains(r#"externalsecret_status_condition{name="db",namespace="app",condition="Ready",status="True"} 1"#)
            && metrics.contains(r#"externalsecret_status_condition{name="db",namespace="app",condition="Ready",status="False"} 0"#),
        "{metrics}"
    );

    // Nothing due: no provider call, no write.
    let calls = *locked(&provider.calls);
    let writes = *locked(&api.writes);
    let e2 = observed(&api, &e);
    reconcile(&e2, &api, &ctx).await.expect("skip");
    assert_eq!(
        (*locked(&provider.calls), *locked(&api.writes)),
        (calls, writes)
    );

    // A hand edit makes the Secret invalid: rewritten from the provider.
    locked(&api.secrets)
        .get_mut("app/db")
        .and_then(|s| s.data.as_mut())
        .expect("data")
        .insert("password".into(), ByteString(b"edited".to_vec()));
    reconcile(&e2, &api, &ctx).await.expect("heal");
    assert_eq!(value(&api, "db", "password").as_deref(), Some("pw-1"));

    // A label change (force-sync) refreshes: the new value arrives.
    provider.put("prod/db", r#"{"password":"pw-2"}"#);
    tokio::time::sleep(Duration::from_millis(60)).await; // past the cache TTL
    let mut e3 = observed(&api, &e);
    e3.metadata.annotations = Some(BTreeMap::from([(
        "force-sync".to_string(),
        "1".to_string(),
    )]));
    reconcile(&e3, &api, &ctx).await.expect("refresh");
    assert_eq!(value(&api, "db", "password").as_deref(), Some("pw-2"));

    // Provider down: the Secret stays, Ready=False names the cause, no credential in it.
    *locked(&provider.fail) = Some(FetchError::AccessDenied(
        "AccessDeniedException: not authorized".into(),
    ));
    tokio::time::sleep(Duration::from_millis(60)).await;
    let mut e4 = observed(&api, &e3);
    e4.metadata.annotations = Some(BTreeMap::from([(
        "force-sync".to_string(),
        "2".to_string(),
    )]));
    assert!(reconcile(&e4, &api, &ctx).await.is_err());
    assert_eq!(
        value(&api, "db", "password").as_deref(),
        Some("pw-2"),
        "last good value kept"
    );
    let (status, reason, message) = ready_of(&api, "db");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "SecretSyncedError")
    );
    assert!(message.contains("access denied"), "{message}");
    for text in locked(&api.events)
        .iter()
        .map(|e| e.2.clone())
        .chain([message])
    {
        assert!(
            !text.contains("pw-") && !text.contains("credential-never-shown"),
            "{text}"
        );
    }
    // Back: Ready again.
    *locked(&provider.fail) = None;
    let e5 = observed(&api, &e4);
    reconcile(&e5, &api, &ctx).await.expect("recovered");
    assert_eq!(ready_of(&api, "db").0, "True");
}

#[tokio::test]
async fn bad_references_give_clear_status_and_others_continue() {
    let (api, _provider, ctx) = setup();
    let mut missing = basic("missing-store");
    missing.spec.secret_store_ref = Some(sealkit_api::SecretStoreRef {
        name: "nope".into(),
        kind: None,
    });
    assert!(reconcile(&missing, &api, &ctx).await.is_err());
    assert!(
        ready_of(&api, "missing-store")
            .2
            .contains("SecretStore \"nope\" not found in namespace app")
    );

    let vault: ClusterSecretStore = serde_json::from_value(serde_json::json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
        "metadata": {"name": "vault"},
        "spec": {"provider": {"vault": {"server": "https://vault"}}}
    }))
    .expect("css");
    locked(&api.cluster_stores).insert("vault".into(), vault);
    let mut v = basic("vault");
    v.spec.secret_store_ref = Some(sealkit_api::SecretStoreRef {
        name: "vault".into(),
        kind: Some("ClusterSecretStore".into()),
    });
    assert!(reconcile(&v, &api, &ctx).await.is_err());
    assert!(
        ready_of(&api, "vault")
            .2
            .contains("provider vault is not supported"),
        "{:?}",
        ready_of(&api, "vault")
    );

    let restricted: ClusterSecretStore = serde_json::from_value(serde_json::json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
        "metadata": {"name": "shared"},
        "spec": {"provider": {"aws": {"service": "SecretsManager", "region": "us-east-1"}},
                 "conditions": [{"namespaces": ["other"]}, {"namespaceSelector": {"matchLabels": {"team": "a"}}}]}
    }))
    .expect("css");
    locked(&api.cluster_stores).insert("shared".into(), restricted);
    let mut c = basic("shared");
    c.spec.secret_store_ref = Some(sealkit_api::SecretStoreRef {
        name: "shared".into(),
        kind: Some("ClusterSecretStore".into()),
    });
    assert!(reconcile(&c, &api, &ctx).await.is_err());
    assert!(
        ready_of(&api, "shared")
            .2
            .contains("does not allow namespace app")
    );
    locked(&api.namespaces).insert(
        "app".into(),
        BTreeMap::from([("team".to_string(), "a".to_string())]),
    );
    reconcile(&c, &api, &ctx).await.expect("allowed by label");

    locked(&api.secrets)
        .get_mut("app/awssm")
        .and_then(|s| s.data.as_mut())
        .expect("creds")
        .remove("secret");
    let other = basic("creds");
    assert!(reconcile(&other, &api, &ctx).await.is_err());
    assert!(
        ready_of(&api, "creds").2.contains("has no key \"secret\""),
        "{:?}",
        ready_of(&api, "creds")
    );
    // The good ExternalSecret from before still holds its Secret.
    assert!(value(&api, "shared", "password").is_some());
}

#[tokio::test]
async fn creation_and_deletion_policies() {
    let (api, provider, ctx) = setup();
    // Merge into a Secret someone else made: only our key changes.
    locked(&api.secrets).insert(
        "app/merged".into(),
        Secret {
            metadata: ObjectMeta {
                name: Some("merged".into()),
                namespace: Some("app".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                "theirs".to_string(),
                ByteString(b"keep".to_vec()),
            )])),
            ..Default::default()
        },
    );
    let mut m = basic("merged");
    m.spec.target =
        Some(serde_json::from_value(serde_json::json!({"creationPolicy": "Merge"})).expect("t"));
    reconcile(&m, &api, &ctx).await.expect("merge");
    assert_eq!(value(&api, "merged", "theirs").as_deref(), Some("keep"));
    assert_eq!(value(&api, "merged", "password").as_deref(), Some("pw-1"));
    let mut none_yet = basic("absent");
    none_yet.spec.target = m.spec.target.clone();
    assert!(reconcile(&none_yet, &api, &ctx).await.is_err());

    // Orphan: no ownerReference. None: nothing written.
    let mut o = basic("orphan");
    o.spec.target =
        Some(serde_json::from_value(serde_json::json!({"creationPolicy": "Orphan"})).expect("t"));
    reconcile(&o, &api, &ctx).await.expect("orphan");
    assert!(
        locked(&api.secrets)
            .get("app/orphan")
            .expect("s")
            .metadata
            .owner_references
            .is_none()
    );
    let mut n = basic("nothing");
    n.spec.target =
        Some(serde_json::from_value(serde_json::json!({"creationPolicy": "None"})).expect("t"));
    reconcile(&n, &api, &ctx).await.expect("none");
    assert!(!locked(&api.secrets).contains_key("app/nothing"));
    assert_eq!(ready_of(&api, "nothing").0, "True");

    // deletionPolicy Delete: the remote secret is gone, so is ours.
    let mut d = basic("deleted");
    d.spec.target =
        Some(serde_json::from_value(serde_json::json!({"deletionPolicy": "Delete"})).expect("t"));
    reconcile(&d, &api, &ctx).await.expect("create");
    locked(&provider.values).remove("prod/db");
    tokio::time::sleep(Duration::from_millis(60)).await;
    let mut d2 = observed(&api, &d);
    d2.metadata.labels = Some(BTreeMap::from([("x".to_string(), "y".to_string())]));
    reconcile(&d2, &api, &ctx).await.expect("delete");
    assert!(!locked(&api.secrets).contains_key("app/deleted"));
    assert_eq!(ready_of(&api, "deleted").1, "SecretDeleted");
    // A Secret of that name this ExternalSecret does not control is never deleted.
    provider.put("prod/db", r#"{"password":"pw-1"}"#);
    let foreign = Secret {
        metadata: ObjectMeta {
            name: Some("foreign".into()),
            namespace: Some("app".into()),
            uid: Some("uid-foreign".into()),
            labels: Some(BTreeMap::from([(
                MANAGED_LABEL.to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "keep".to_string(),
            ByteString(b"me".to_vec()),
        )])),
        ..Default::default()
    };
    locked(&api.secrets).insert("app/foreign".into(), foreign);
    let mut f = basic("foreign");
    f.spec.target =
        Some(serde_json::from_value(serde_json::json!({"deletionPolicy": "Delete"})).expect("t"));
    locked(&provider.values).remove("prod/db");
    reconcile(&f, &api, &ctx).await.expect("handled");
    assert!(
        locked(&api.secrets).contains_key("app/foreign"),
        "not ours: kept"
    );
    assert!(
        ready_of(&api, "foreign").2.contains("left alone"),
        "{}",
        ready_of(&api, "foreign").2
    );
    // Retain (default): kept, and the status says the key is gone.
    let mut r = observed(&api, &basic("shared-retain"));
    r.metadata.name = Some("db".into());
    let (api2, provider2, ctx2) = setup();
    reconcile(&r, &api2, &ctx2).await.expect("create");
    locked(&provider2.values).remove("prod/db");
    tokio::time::sleep(Duration::from_millis(60)).await;
    let mut r2 = observed(&api2, &r);
    r2.metadata.labels = Some(BTreeMap::from([("x".to_string(), "y".to_string())]));
    assert!(reconcile(&r2, &api2, &ctx2).await.is_err());
    assert_eq!(value(&api2, "db", "password").as_deref(), Some("pw-1"));
    assert!(ready_of(&api2, "db").2.contains("prod/db was not found"));
}

#[tokio::test]
async fn one_batch_for_many_external_secrets() {
    let (api, provider, ctx) = setup();
    for i in 0..100 {
        provider.put(
            &format!("app/s{i}"),
            &format!("{{\"a\":\"{i}\",\"b\":\"x\",\"c\":\"y\"}}"),
        );
    }
    let objects: Vec<ExternalSecret> = (0..1000)
        .map(|i| {
            es(
                &format!("es{i}"),
                serde_json::json!({
                    "secretStoreRef": {"name": "aws"},
                    "data": [
                        {"secretKey": "a", "remoteRef": {"key": format!("app/s{}", i % 100), "property": "a"}},
                        {"secretKey": "b", "remoteRef": {"key": format!("app/s{}", (i + 1) % 100), "property": "b"}},
                        {"secretKey": "c", "remoteRef": {"key": format!("app/s{}", (i + 2) % 100), "property": "c"}}
                    ]
                }),
            )
        })
        .collect();
    // The production store TTL: the store and its credentials are read once for all 1,000.
    let ctx = SyncContext::new(ctx.factory, ctx.fetcher, ctx.metrics);
    let before = *locked(&provider.calls);
    let results = futures::future::join_all(objects.iter().map(|e| reconcile(e, &api, &ctx))).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(
        *locked(&api.store_reads),
        1,
        "one store read for 1,000 ExternalSecrets"
    );
    let calls = *locked(&provider.calls) - before;
    assert!(
        calls <= 2,
        "1000 ExternalSecrets x 3 keys cost {calls} get_many calls"
    );
    assert_eq!(value(&api, "es123", "a").as_deref(), Some("23"));
}

/// The shared cache never serves a refresh a value older than that ExternalSecret's
/// `refreshInterval`, whatever the cache TTL; ExternalSecrets refreshing together still share.
#[tokio::test]
async fn a_refresh_never_reads_a_value_older_than_its_interval() {
    let (api, provider, ctx) = setup();
    // A long cache TTL, as in production (30 s) relative to a short interval.
    let ctx = SyncContext::new(
        ctx.factory,
        Fetcher::new(Duration::from_secs(3600), Duration::from_millis(5)),
        ctx.metrics,
    )
    .with_store_ttl(Duration::ZERO);
    let with_interval = |name: &str, interval: &str| {
        es(
            name,
            serde_json::json!({
                "refreshInterval": interval,
                "secretStoreRef": {"name": "aws", "kind": "SecretStore"},
                "data": [{"secretKey": "password", "remoteRef": {"key": "prod/db", "property": "password"}}]
            }),
        )
    };
    // refreshTime has a resolution of one second, so the interval is a few of them.
    let fast = with_interval("fast", "2s");
    reconcile(&fast, &api, &ctx).await.expect("first sync");
    assert_eq!(value(&api, "fast", "password").as_deref(), Some("pw-1"));
    let calls = *locked(&provider.calls);
    // The watch may hand us the object before it shows our status write (the Secret's event
    // comes first): that is not a reason to sync again.
    let writes = *locked(&api.writes);
    reconcile(&fast, &api, &ctx).await.expect("stale view");
    assert_eq!(*locked(&provider.calls), calls, "no second fetch");
    assert_eq!(*locked(&api.writes), writes, "no second write");

    // Another ExternalSecret in the same wave shares the fetched value: no call.
    provider.put("prod/db", r#"{"password":"pw-2"}"#);
    reconcile(&with_interval("slow", "1h"), &api, &ctx)
        .await
        .expect("shared");
    assert_eq!(*locked(&provider.calls), calls, "served from the cache");
    assert_eq!(value(&api, "slow", "password").as_deref(), Some("pw-1"));

    // One interval later the fast one is due, and the cached value is too old for it.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let fast = observed(&api, &fast);
    reconcile(&fast, &api, &ctx).await.expect("refresh");
    assert_eq!(
        value(&api, "fast", "password").as_deref(),
        Some("pw-2"),
        "the changed value arrives within one refresh interval"
    );
    assert_eq!(*locked(&provider.calls), calls + 1);
}

#[tokio::test]
async fn template_from_config_map_and_errors_name_the_source() {
    let (api, _provider, ctx) = setup();
    locked(&api.config_maps).insert(
        "app/tpl".into(),
        BTreeMap::from([
            (
                "config.yaml".to_string(),
                "db:\n  password: {{ .password | quote }}\n".to_string(),
            ),
            (
                "labels".to_string(),
                "tier: \"{{ .password | len }}\"".to_string(),
            ),
        ]),
    );
    let mut e = basic("templated");
    e.spec.target = Some(
        serde_json::from_value(serde_json::json!({"template": {"templateFrom": [
            {"configMap": {"name": "tpl", "items": [{"key": "config.yaml"}]}}
        ]}}))
        .expect("target"),
    );
    reconcile(&e, &api, &ctx).await.expect("sync");
    assert_eq!(
        value(&api, "templated", "config.yaml").as_deref(),
        Some("db:\n  password: \"pw-1\"\n")
    );
    assert_eq!(
        value(&api, "templated", "password"),
        None,
        "Replace: only templated keys"
    );
    let mut bad = basic("bad-template");
    bad.spec.target = Some(
        serde_json::from_value(serde_json::json!({"template": {"templateFrom": [
            {"configMap": {"name": "tpl", "items": [{"key": "labels", "templateAs": "KeysAndValues"}]}, "target": "Labels"}
        ]}}))
        .expect("target"),
    );
    assert!(reconcile(&bad, &api, &ctx).await.is_err());
    let msg = ready_of(&api, "bad-template").2;
    assert!(
        msg.contains("templateFrom[0].configMap tpl/labels") && msg.contains("len"),
        "{msg}"
    );
    assert!(!msg.contains("pw-1"));
}

#[tokio::test]
async fn store_status_is_truthful() {
    let (api, _provider, _ctx) = setup();
    let store = locked(&api.stores).get("app/aws").cloned().expect("store");
    let ok = store_status(
        &api,
        &store.spec.provider,
        "SecretStore app/aws".into(),
        CredentialScope::Namespaced("app"),
        None,
    )
    .await;
    let c = &ok.conditions.as_ref().expect("conditions")[0];
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref()),
        ("True", Some("Valid"))
    );
    // Same answer again: the same status (no write), transition time kept.
    let again = store_status(
        &api,
        &store.spec.provider,
        "SecretStore app/aws".into(),
        CredentialScope::Namespaced("app"),
        Some(&ok),
    )
    .await;
    assert_eq!(again, ok);

    let vault: StoreProvider =
        serde_json::from_value(serde_json::json!({"vault": {"server": "https://v"}})).expect("p");
    let bad = store_status(
        &api,
        &vault,
        "SecretStore app/vault".into(),
        CredentialScope::Namespaced("app"),
        Some(&ok),
    )
    .await;
    let c = &bad.conditions.as_ref().expect("conditions")[0];
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref()),
        ("False", Some("InvalidProviderConfig"))
    );
    assert!(
        c.message
            .as_deref()
            .unwrap_or("")
            .contains("provider vault is not supported")
    );

    locked(&api.secrets).remove("app/awssm");
    let missing = store_status(
        &api,
        &store.spec.provider,
        "SecretStore app/aws".into(),
        CredentialScope::Namespaced("app"),
        None,
    )
    .await;
    let msg = missing.conditions.as_ref().expect("c")[0]
        .message
        .clone()
        .unwrap_or_default();
    assert!(msg.contains("Secret app/awssm does not exist"), "{msg}");
    // A ClusterSecretStore whose refs name no namespace resolves them per ExternalSecret.
    let referent = store_status(
        &api,
        &store.spec.provider,
        "ClusterSecretStore aws".into(),
        CredentialScope::ClusterOnly,
        None,
    )
    .await;
    assert_eq!(referent.conditions.as_ref().expect("c")[0].status, "True");
}

#[tokio::test]
async fn identical_finds_share_one_listing() {
    let (api, provider, ctx) = setup();
    // A cache TTL far longer than the test: on a loaded machine the 100 reconciles may take
    // longer than setup()'s 50 ms, and the point here is sharing, not expiry.
    let ctx = SyncContext::new(
        ctx.factory,
        Fetcher::new(Duration::from_secs(3600), Duration::from_millis(5)),
        ctx.metrics,
    )
    .with_store_ttl(Duration::ZERO);
    for i in 0..30 {
        provider.put(&format!("team/s{i}"), "v");
    }
    let objects: Vec<ExternalSecret> = (0..100)
        .map(|i| {
            es(
                &format!("f{i}"),
                serde_json::json!({"secretStoreRef": {"name": "aws"}, "dataFrom": [{"find": {"path": "team/"}}]}),
            )
        })
        .collect();
    let before = *locked(&provider.calls);
    let results = futures::future::join_all(objects.iter().map(|e| reconcile(e, &api, &ctx))).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(
        *locked(&provider.calls) - before,
        1,
        "100 identical finds, one listing"
    );
    assert_eq!(value(&api, "f42", "team_s7").as_deref(), Some("v"));
}

#[test]
fn refresh_policies() {
    let now = SystemTime::now();
    let mut e = basic("p");
    let synced = |e: &mut ExternalSecret, ago: u64| {
        e.status = Some(ExternalSecretStatus {
            refresh_time: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(
                    (now - Duration::from_secs(ago))
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .expect("t")
                        .as_secs() as i64,
                )
                .expect("ts"),
            )),
            synced_resource_version: Some(synced_resource_version(e)),
            conditions: Some(vec![StatusCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            binding: None,
        });
    };
    let mut data = BTreeMap::new();
    data.insert("k".to_string(), ByteString(b"v".to_vec()));
    let secret = Secret {
        metadata: ObjectMeta {
            labels: Some(BTreeMap::from([(
                MANAGED_LABEL.to_string(),
                "true".to_string(),
            )])),
            annotations: Some(BTreeMap::from([(
                DATA_HASH_ANNOTATION.to_string(),
                sync::data_hash(&data),
            )])),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    // Periodic: due after the interval, not before.
    synced(&mut e, 10);
    assert!(!due(&e, Some(&secret), now).expect("due").0);
    synced(&mut e, 3700);
    assert!(due(&e, Some(&secret), now).expect("due").0);
    // OnChange: never by time, but on a metadata change.
    e.spec.refresh_policy = Some("OnChange".into());
    assert!(!due(&e, Some(&secret), now).expect("due").0);
    e.metadata.labels = Some(BTreeMap::from([("force".to_string(), "1".to_string())]));
    assert!(due(&e, Some(&secret), now).expect("due").0);
    // CreatedOnce: not even then, unless the Secret is gone.
    e.spec.refresh_policy = Some("CreatedOnce".into());
    assert!(!due(&e, Some(&secret), now).expect("due").0);
    assert!(due(&e, None, now).expect("due").0);
    // refreshInterval 0: once, then only on change.
    e.spec.refresh_policy = None;
    e.spec.refresh_interval = Some("0".into());
    synced(&mut e, 999_999);
    assert_eq!(
        due(&e, Some(&secret), now).expect("due"),
        (false, Next::Wait)
    );
    e.spec.refresh_interval = Some("soon".into());
    assert!(
        due(&e, Some(&secret), now)
            .unwrap_err()
            .message
            .contains("refreshInterval")
    );
}

#[tokio::test]
async fn throttling_keeps_the_secret_and_says_so() {
    let (api, provider, ctx) = setup();
    let e = basic("db");
    reconcile(&e, &api, &ctx).await.expect("sync");
    *locked(&provider.fail) = Some(FetchError::Throttled(
        "ThrottlingException: Rate exceeded".into(),
    ));
    tokio::time::sleep(Duration::from_millis(60)).await;
    let mut again = observed(&api, &e);
    again.metadata.labels = Some(BTreeMap::from([("force".to_string(), "1".to_string())]));
    assert!(
        reconcile(&again, &api, &ctx).await.is_err(),
        "an error: retried with backoff"
    );
    assert_eq!(value(&api, "db", "password").as_deref(), Some("pw-1"));
    assert!(
        ready_of(&api, "db").2.contains("throttled by the provider"),
        "{:?}",
        ready_of(&api, "db")
    );
}

/// A duration no interval arithmetic survives (it used to abort the process) is reported on
/// the object; nothing is fetched, other objects go on.
#[tokio::test]
async fn an_absurd_refresh_interval_is_a_status_not_a_crash() {
    let (api, provider, ctx) = setup();
    let mut bad = basic("bad");
    bad.spec.refresh_interval = Some("18446744073709551615s".into());
    let next = reconcile(&bad, &api, &ctx).await.expect("handled");
    assert_eq!(next, Next::Wait);
    let (st, _, msg) = ready_of(&api, "bad");
    assert_eq!(st, "False");
    assert!(
        msg.contains("spec.refreshInterval") && msg.contains("too long"),
        "{msg}"
    );
    assert_eq!(*locked(&provider.calls), 0);
    reconcile(&basic("good"), &api, &ctx)
        .await
        .expect("others sync");
    assert_eq!(value(&api, "good", "password").as_deref(), Some("pw-1"));
}

/// A namespaced SecretStore may not read credentials from another namespace (ESO allows that
/// only on ClusterSecretStores), and its status does not tell whether that Secret exists.
#[tokio::test]
async fn a_secret_store_cannot_borrow_another_namespaces_credentials() {
    let (api, provider, ctx) = setup();
    let platform = Secret {
        metadata: ObjectMeta {
            name: Some("aws-creds".into()),
            namespace: Some("platform".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            ("id".to_string(), ByteString(b"AKIDPLATFORM".to_vec())),
            (
                "secret".to_string(),
                ByteString(b"platform-secret".to_vec()),
            ),
        ])),
        ..Default::default()
    };
    locked(&api.secrets).insert("platform/aws-creds".into(), platform);
    let store_for = |secret: &str| -> SecretStore {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
            "metadata": {"name": "aws", "namespace": "app"},
            "spec": {"provider": {"aws": {"service": "SecretsManager", "region": "us-east-1",
                "auth": {"secretRef": {
                    "accessKeyIDSecretRef": {"name": secret, "key": "id", "namespace": "platform"},
                    "secretAccessKeySecretRef": {"name": secret, "key": "secret", "namespace": "platform"}}}}}}
        }))
        .expect("store")
    };
    let mut messages = Vec::new();
    for secret in ["aws-creds", "does-not-exist"] {
        locked(&api.stores).insert("app/aws".into(), store_for(secret));
        let e = basic(&format!("es-{secret}"));
        reconcile(&e, &api, &ctx).await.expect_err("refused");
        let (st, _, msg) = ready_of(&api, &format!("es-{secret}"));
        assert_eq!(st, "False");
        assert!(msg.contains("may not name another namespace"), "{msg}");
        messages.push(msg.replace(secret, "X"));
        let status = store_status(
            &api,
            &store_for(secret).spec.provider,
            "SecretStore app/aws".into(),
            CredentialScope::Namespaced("app"),
            None,
        )
        .await;
        let c = &status.conditions.expect("conditions")[0];
        assert_eq!(c.status, "False");
        messages.push(c.message.clone().unwrap_or_default().replace(secret, "X"));
    }
    assert_eq!(messages[0], messages[2], "existence is not revealed");
    assert_eq!(messages[1], messages[3], "existence is not revealed");
    assert_eq!(
        *locked(&provider.calls),
        0,
        "no fetch with borrowed credentials"
    );
}

/// Everything that defines an AWS identity separates the caches: a different external id,
/// role, region, credentials Secret version or credential never reuses a client or a value.
#[test]
fn cache_identity_covers_the_whole_identity() {
    use sealkit_keys::secret::SecretString;
    let base = || ResolvedStore {
        id: "SecretStore app/aws".into(),
        prefix: String::new(),
        credential_sources: vec!["app/awssm@1".into()],
        aws: crate::external::provider::aws::AwsSettings {
            service: "SecretsManager".into(),
            region: "us-east-1".into(),
            role: Some("arn:aws:iam::1:role/r".into()),
            external_id: Some("tenant-a".into()),
            credentials: Some(crate::external::provider::aws::StaticCredentials {
                access_key_id: "AKID".into(),
                secret_access_key: SecretString::from("s1".to_string()),
                session_token: None,
            }),
            endpoint: None,
        },
    };
    let id = base().cache_id();
    let mut variants = Vec::new();
    let mut v = base();
    v.aws.external_id = Some("tenant-b".into());
    variants.push(v);
    let mut v = base();
    v.aws.role = Some("arn:aws:iam::1:role/other".into());
    variants.push(v);
    let mut v = base();
    v.aws.region = "eu-west-1".into();
    variants.push(v);
    let mut v = base();
    v.aws.endpoint = Some("http://127.0.0.1:1".into());
    variants.push(v);
    let mut v = base();
    v.credential_sources = vec!["app/awssm@2".into()];
    variants.push(v);
    let mut v = base();
    if let Some(c) = v.aws.credentials.as_mut() {
        c.secret_access_key = SecretString::from("s2".to_string());
    }
    variants.push(v);
    let mut v = base();
    if let Some(c) = v.aws.credentials.as_mut() {
        c.session_token = Some(SecretString::from("t".to_string()));
    }
    variants.push(v);
    for (i, v) in variants.iter().enumerate() {
        assert_ne!(v.cache_id(), id, "variant {i} shares the cache");
    }
    assert_eq!(base().cache_id(), id, "stable");
    assert!(!id.contains("s1"), "no secret in the id");
}
