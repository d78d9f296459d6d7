//! The planner against real sealed values (keys generated here, values sealed with the same
//! envelope kubeseal uses).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use sealkit_api::SealedSecret;
use sealkit_keys::seal::manifest::{SealOptions, seal_secret};
use sealkit_keys::seal::{Keyring, PrivateKey};
use serde_json::json;

use super::*;

fn key(n: usize) -> &'static PrivateKey {
    static KEYS: OnceLock<Vec<PrivateKey>> = OnceLock::new();
    &KEYS.get_or_init(|| {
        (0..2)
            .map(|_| PrivateKey::generate(2048).expect("keygen"))
            .collect()
    })[n]
}

fn ring(keys: &[usize]) -> Keyring {
    let mut r = Keyring::new();
    for &i in keys {
        let pem = key(i).to_pkcs1_pem().expect("pem");
        r.add(
            PrivateKey::from_pem_all(pem.as_bytes())
                .expect("parse")
                .remove(0),
        );
    }
    r
}

fn sealed(with: usize, password: &str) -> SealedSecret {
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db", "namespace": "prod", "labels": {"app": "shop"}},
        "type": "Opaque",
        "stringData": {"password": password, "user": "admin"}
    });
    let doc = seal_secret(&secret, &SealOptions::default(), key(with).public_key()).expect("seal");
    let mut ss: SealedSecret = serde_json::from_value(doc).expect("typed");
    ss.metadata.uid = Some("uid-1".into());
    ss
}

fn applied(p: Plan) -> Secret {
    match p {
        Plan::Apply(s) => *s,
        other => panic!("expected Apply, got {other:?}"),
    }
}

fn value(s: &Secret, k: &str) -> Vec<u8> {
    s.data
        .as_ref()
        .and_then(|d| d.get(k))
        .map(|b| b.0.clone())
        .unwrap_or_default()
}

#[test]
fn create_then_up_to_date_without_rsa() {
    let ss = sealed(0, "hunter2");
    let keys = ring(&[0]);
    let secret = applied(plan(&ss, None, &keys));
    assert_eq!(value(&secret, "password"), b"hunter2");
    assert_eq!(
        secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app"))
            .map(String::as_str),
        Some("shop")
    );
    let owner = &secret.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("SealedSecret", "uid-1", Some(true))
    );
    assert!(keys.private_key_operations() >= 2, "two values were opened");
    // The Secret as the API server would return it: the next reconcile does nothing, and
    // performs no RSA private-key operation.
    let before = keys.private_key_operations();
    assert!(matches!(plan(&ss, Some(&secret), &keys), Plan::UpToDate));
    assert_eq!(
        keys.private_key_operations(),
        before,
        "the restart path must not touch RSA"
    );
    // A key added by rotation does not invalidate it either.
    assert!(matches!(
        plan(&ss, Some(&secret), &ring(&[0, 1])),
        Plan::UpToDate
    ));
}

#[test]
fn hand_edits_and_spec_changes_are_healed() {
    let ss = sealed(0, "hunter2");
    let keys = ring(&[0]);
    let secret = applied(plan(&ss, None, &keys));
    let mut edited = secret.clone();
    edited
        .data
        .get_or_insert_with(BTreeMap::new)
        .insert("password".into(), ByteString(b"changed".to_vec()));
    let healed = applied(plan(&ss, Some(&edited), &keys));
    assert_eq!(value(&healed, "password"), b"hunter2");
    // Forged annotations do not help: the MAC is keyed.
    let mut forged = edited.clone();
    forged.metadata.annotations = secret.metadata.annotations.clone();
    assert!(matches!(plan(&ss, Some(&forged), &keys), Plan::Apply(_)));
    // A new value in Git: re-unsealed.
    let newer = sealed(0, "new-password");
    let mut newer = newer;
    newer.metadata.uid = Some("uid-1".into());
    assert_eq!(
        value(&applied(plan(&newer, Some(&secret), &keys)), "password"),
        b"new-password"
    );
}

#[test]
fn collisions_managed_and_patch() {
    let ss = sealed(0, "hunter2");
    let keys = ring(&[0]);
    let foreign = Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("db".into()),
            namespace: Some("prod".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match plan(&ss, Some(&foreign), &keys) {
        Plan::Collision(m) => assert!(m.contains("not managed by SealedSecret"), "{m}"),
        other => panic!("{other:?}"),
    }
    let mut managed = foreign.clone();
    managed.metadata.annotations = Some(BTreeMap::from([(
        MANAGED_ANNOTATION.to_string(),
        "true".to_string(),
    )]));
    let s = applied(plan(&ss, Some(&managed), &keys));
    assert!(
        s.metadata.owner_references.is_some(),
        "managed Secrets are adopted"
    );
    let mut patch = foreign.clone();
    patch.metadata.annotations = Some(BTreeMap::from([(
        PATCH_ANNOTATION.to_string(),
        "true".to_string(),
    )]));
    let s = applied(plan(&ss, Some(&patch), &keys));
    assert!(
        s.metadata.owner_references.is_none(),
        "patch merges without taking ownership"
    );
    assert_eq!(value(&s, "user"), b"admin");
}

#[test]
fn failures_are_explained_without_values() {
    let ss = sealed(1, "hunter2");
    match plan(&ss, None, &ring(&[0])) {
        Plan::Failed(m) => {
            assert!(
                m.contains("encryptedData.password") && m.contains("not among"),
                "{m}"
            );
            assert!(!m.contains("hunter2"));
        }
        other => panic!("{other:?}"),
    }
    let mut moved = sealed(0, "hunter2");
    moved.metadata.namespace = Some("staging".into());
    match plan(&moved, None, &ring(&[0])) {
        Plan::Failed(m) => assert!(m.contains("'prod/db'") && m.contains("'staging/db'"), "{m}"),
        other => panic!("{other:?}"),
    }
    let mut bad = sealed(0, "x");
    bad.spec
        .encrypted_data
        .insert("broken".into(), "!!!".into());
    match plan(&bad, None, &ring(&[0])) {
        Plan::Failed(m) => assert!(
            m.contains("encryptedData.broken") && m.contains("base64"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn managed_keys_follow_template_data() {
    let mut ss = sealed(0, "x");
    ss.spec.template.get_or_insert_with(Default::default).data = Some(BTreeMap::from([
        ("url".to_string(), Some("{{ .user }}@db".to_string())),
        ("password".to_string(), None),
    ]));
    let keys = managed_keys(&ss);
    assert!(keys.contains("url") && keys.contains("user") && !keys.contains("password"));
    let s = applied(plan(&ss, None, &ring(&[0])));
    assert_eq!(value(&s, "url"), b"admin@db");
    assert!(matches!(plan(&ss, Some(&s), &ring(&[0])), Plan::UpToDate));
}
