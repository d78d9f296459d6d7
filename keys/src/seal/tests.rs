//! Unit tests of the envelope, keys, keyring and documents against our own keys. Interop with
//! independent implementations lives in the workspace `tests/` crate.

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::json;

use super::manifest::{self, SealOptions};
use super::*;
use crate::secret::ExposeSecret;

fn key_a() -> &'static PrivateKey {
    static K: OnceLock<PrivateKey> = OnceLock::new();
    K.get_or_init(|| PrivateKey::generate(2048).expect("keygen"))
}

fn key_b() -> &'static PrivateKey {
    static K: OnceLock<PrivateKey> = OnceLock::new();
    K.get_or_init(|| PrivateKey::generate(2048).expect("keygen"))
}

fn pem_roundtrip(k: &PrivateKey) -> PrivateKey {
    let pem = k.to_pkcs1_pem().expect("pem");
    PrivateKey::from_pem_all(pem.as_bytes())
        .expect("parse")
        .remove(0)
}

#[test]
fn envelope_layout() {
    let blob = seal(key_a().public_key(), b"ns/name", b"hello").expect("seal");
    // u16 length prefix = 256 for a 2048-bit key, then RSA, then 5 bytes + 16-byte tag.
    assert_eq!(&blob[..2], &[0x01, 0x00]);
    assert_eq!(blob.len(), 2 + 256 + 5 + 16);
    let out = open(key_a(), b"ns/name", &blob).expect("open");
    assert_eq!(out.expose_secret(), b"hello");
}

#[test]
fn wrong_label_and_wrong_key_fail() {
    let blob = seal(key_a().public_key(), b"ns/name", b"v").expect("seal");
    assert_eq!(
        open(key_a(), b"ns/other", &blob).unwrap_err(),
        OpenError::NoKey
    );
    assert_eq!(
        open(key_b(), b"ns/name", &blob).unwrap_err(),
        OpenError::NoKey
    );
}

#[test]
fn every_flipped_byte_fails() {
    let blob = seal(key_a().public_key(), b"", b"some value").expect("seal");
    for i in 0..blob.len() {
        let mut t = blob.clone();
        t[i] ^= 0x01;
        assert!(open(key_a(), b"", &t).is_err(), "flip at {i} still opened");
    }
}

#[test]
fn truncation_is_reported() {
    let blob = seal(key_a().public_key(), b"", b"x").expect("seal");
    assert!(matches!(
        open(key_a(), b"", &blob[..1]),
        Err(OpenError::TooShort { .. })
    ));
    assert!(matches!(
        open(key_a(), b"", &blob[..200]),
        Err(OpenError::Truncated { .. })
    ));
    assert!(open(key_a(), b"", &blob[..blob.len() - 1]).is_err());
}

#[test]
fn body_tamper_is_named() {
    let mut blob = seal(key_a().public_key(), b"", b"abc").expect("seal");
    let n = blob.len();
    blob[n - 1] ^= 0x80;
    assert_eq!(open(key_a(), b"", &blob).unwrap_err(), OpenError::Tampered);
}

#[test]
fn empty_and_binary_values() {
    let bin: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    for v in [&b""[..], &bin[..]] {
        let blob = seal(key_a().public_key(), b"x", v).expect("seal");
        assert_eq!(open(key_a(), b"x", &blob).expect("open").expose_secret(), v);
    }
}

#[test]
fn pkcs1_pem_round_trip_keeps_fingerprint() {
    let k = pem_roundtrip(key_a());
    assert_eq!(k.fingerprint(), key_a().fingerprint());
    let pem = key_a().to_pkcs1_pem().expect("pem");
    assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
}

#[test]
fn private_key_debug_hides_material() {
    let pem = key_a().to_pkcs1_pem().expect("pem");
    let shown = format!("{:?}", key_a());
    let body: String = pem
        .lines()
        .nth(1)
        .unwrap_or_default()
        .chars()
        .take(20)
        .collect();
    assert!(!shown.contains(&body));
    assert!(shown.contains("SHA256:"));
}

#[test]
fn certificate_round_trip_and_expiry() {
    let cert = key_a()
        .self_signed_certificate("sealed-secret", Duration::from_secs(3600))
        .expect("cert");
    let pk = PublicKey::from_certificate_pem(cert.as_bytes()).expect("read cert");
    assert_eq!(pk.fingerprint(), key_a().fingerprint());
    let later = std::time::SystemTime::now() + Duration::from_secs(7200);
    let err = PublicKey::from_certificate_pem_at(cert.as_bytes(), later).unwrap_err();
    assert!(matches!(err, KeyError::Expired { .. }), "{err}");
    // The first certificate of a bundle wins.
    let other = key_b()
        .self_signed_certificate("", Duration::from_secs(3600))
        .expect("cert");
    let bundle = format!("{cert}{other}");
    let pk = PublicKey::from_certificate_pem(bundle.as_bytes()).expect("bundle");
    assert_eq!(pk.fingerprint(), key_a().fingerprint());
}

#[test]
fn garbage_certificates_are_rejected() {
    assert!(matches!(
        PublicKey::from_certificate_pem(b"hello"),
        Err(KeyError::NoCertificate)
    ));
    let bogus = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert!(matches!(
        PublicKey::from_certificate_pem(bogus.as_bytes()),
        Err(KeyError::Certificate(_))
    ));
}

#[test]
fn keyring_reports_the_key_and_diagnoses() {
    let mut ring = Keyring::new();
    assert!(ring.add(pem_roundtrip(key_b())));
    assert!(ring.add(pem_roundtrip(key_a())));
    assert!(!ring.add(pem_roundtrip(key_a())), "duplicate kept");
    let blob = seal(key_b().public_key(), b"prod/db", b"pw").expect("seal");
    let opened = ring.open(b"prod/db", &blob).expect("open");
    assert_eq!(opened.key.fingerprint(), key_b().fingerprint());

    let cands = vec![
        Binding {
            scope: Scope::NamespaceWide,
            namespace: "staging".into(),
            name: "db".into(),
        },
        Binding {
            scope: Scope::Strict,
            namespace: "prod".into(),
            name: "db".into(),
        },
    ];
    match ring.diagnose(&blob, &cands) {
        Diagnosis::SealedFor(b, fp) => {
            assert_eq!(b.scope, Scope::Strict);
            assert_eq!(b.namespace, "prod");
            assert_eq!(&fp, key_b().fingerprint());
        }
        other => panic!("unexpected {other:?}"),
    }
    let foreign = seal(key_a().public_key(), b"x", b"pw").expect("seal");
    let mut only_b = Keyring::new();
    only_b.add(pem_roundtrip(key_b()));
    assert_eq!(only_b.diagnose(&foreign, &cands), Diagnosis::UnknownKey);
}

fn secret_doc() -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "db",
            "namespace": "prod",
            "uid": "123",
            "resourceVersion": "9",
            "labels": {"b": "2", "a": "1"},
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"password\":\"hunter2\"}}",
                "note": "<keep & escape>"
            },
            "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "y", "uid": "z"}]
        },
        "type": "Opaque",
        "data": {"password": "aHVudGVyMg=="},
        "stringData": {"user": "admin"}
    })
}

#[test]
fn seal_document_matches_kubeseal_shape() {
    let doc = manifest::seal_secret(&secret_doc(), &SealOptions::default(), key_a().public_key())
        .expect("seal");
    let json = manifest::to_json(&doc);
    let keys: Vec<&str> = doc
        .as_object()
        .expect("obj")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["kind", "apiVersion", "metadata", "spec"]);
    let spec_keys: Vec<&str> = doc["spec"]
        .as_object()
        .expect("obj")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(spec_keys, ["template", "encryptedData"]);
    assert!(json.contains("\"creationTimestamp\": null"));
    assert!(json.contains("\\u003ckeep \\u0026 escape\\u003e"), "{json}");
    assert!(
        !json.contains("last-applied"),
        "last-applied leaked: {json}"
    );
    assert!(!json.contains("hunter2"));
    assert!(!json.contains("ownerReferences"));
    assert!(!json.contains("resourceVersion"));
    assert_eq!(doc["spec"]["template"]["type"], "Opaque");
    assert_eq!(
        doc["spec"]["template"]["metadata"]["labels"],
        json!({"a": "1", "b": "2"})
    );

    let mut ring = Keyring::new();
    ring.add(pem_roundtrip(key_a()));
    let secret = manifest::unseal(&doc, &ring).expect("unseal");
    assert_eq!(secret["data"]["password"], "aHVudGVyMg==");
    assert_eq!(secret["data"]["user"], "YWRtaW4=");
    assert_eq!(secret["metadata"]["namespace"], "prod");
}

#[test]
fn renamed_sealed_secret_is_explained() {
    let mut doc =
        manifest::seal_secret(&secret_doc(), &SealOptions::default(), key_a().public_key())
            .expect("seal");
    doc["metadata"]["namespace"] = json!("staging");
    let mut ring = Keyring::new();
    ring.add(pem_roundtrip(key_a()));
    let err = manifest::unseal(&doc, &ring).unwrap_err().to_string();
    assert!(err.contains("strict scope for 'prod/db'"), "{err}");
    assert!(err.contains("'staging/db'"), "{err}");
}

#[test]
fn scope_flag_sets_annotations_and_label() {
    let opts = SealOptions {
        scope: Some(Scope::ClusterWide),
        ..Default::default()
    };
    let doc = manifest::seal_secret(&secret_doc(), &opts, key_a().public_key()).expect("seal");
    assert_eq!(
        doc["metadata"]["annotations"][CLUSTER_WIDE_ANNOTATION],
        "true"
    );
    assert_eq!(
        doc["spec"]["template"]["metadata"]["annotations"][CLUSTER_WIDE_ANNOTATION],
        "true"
    );
    let blob = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        doc["spec"]["encryptedData"]["user"].as_str().expect("str"),
    )
    .expect("b64");
    assert_eq!(
        open(key_a(), b"", &blob).expect("open").expose_secret(),
        b"admin"
    );
}

#[test]
fn bad_secrets_name_the_field() {
    let k = key_a().public_key();
    let o = SealOptions::default();
    let cases = [
        (
            json!({"kind": "ConfigMap", "metadata": {"name": "x"}}),
            "kind",
        ),
        (
            json!({"kind": "Secret", "metadata": {"name": "x", "namespace": "n"}, "data": {"a": "!!"}}),
            "data.a",
        ),
        (
            json!({"kind": "Secret", "metadata": {"namespace": "n"}, "data": {"a": "YQ=="}}),
            "metadata.name",
        ),
        (
            json!({"kind": "Secret", "metadata": {"name": "x"}, "data": {"a": "YQ=="}}),
            "metadata.namespace",
        ),
        (
            json!({"kind": "Secret", "metadata": {"name": "x", "namespace": "n"}}),
            "data",
        ),
        (
            json!({"kind": "Secret", "metadata": {"name": "x", "namespace": "n"}, "stringData": {"a": 5}}),
            "stringData.a",
        ),
        (
            json!({"kind": "Secret", "metadata": {"name": "x", "namespace": "n"}, "stringData": {"a b": "v"}}),
            "data.a b",
        ),
    ];
    for (doc, want) in cases {
        match manifest::seal_secret(&doc, &o, k) {
            Err(manifest::ManifestError::Field { field, .. }) => assert_eq!(field, want),
            other => panic!("{doc}: expected field error {want}, got {other:?}"),
        }
    }
    // -n disagreeing with the document's namespace.
    let o = SealOptions {
        namespace: Some("other".into()),
        ..Default::default()
    };
    assert!(manifest::seal_secret(&secret_doc(), &o, k).is_err());
}

#[test]
fn parse_multi_documents() {
    let yaml = "# leading comment\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: a}\n---\n---\nkind: Secret\nmetadata:\n  name: b\n";
    let docs = manifest::parse_documents(yaml).expect("parse");
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[1].name(), Some("b"));
    assert_eq!(docs[1].line, 8);
    let json = "{\"kind\":\"Secret\",\"metadata\":{\"name\":\"a\"}}\n{\"kind\":\"Secret\",\"metadata\":{\"name\":\"b\"}}";
    assert_eq!(manifest::parse_documents(json).expect("parse").len(), 2);
    let list = "kind: List\napiVersion: v1\nitems:\n- kind: Secret\n  metadata: {name: a}\n- kind: Secret\n  metadata: {name: b}\n";
    assert_eq!(manifest::parse_documents(list).expect("parse").len(), 2);
    let err = manifest::parse_documents("a: 1\n---\nb: [\n").unwrap_err();
    assert!(err.to_string().starts_with("line 3"), "{err}");
}

#[test]
fn key_secret_backup_loads() {
    let cert = key_a()
        .self_signed_certificate("", Duration::from_secs(60))
        .expect("cert");
    let text = manifest::key_secret("sealed-secrets-keyabc", "kube-system", key_a(), &cert)
        .expect("secret");
    let keys = manifest::load_private_keys(text.as_bytes()).expect("load");
    assert_eq!(keys[0].fingerprint(), key_a().fingerprint());
    let list = format!(
        "apiVersion: v1\nkind: List\nitems:\n{}",
        text.trim_start_matches("---\n")
            .lines()
            .enumerate()
            .map(|(i, l)| if i == 0 {
                format!("- {l}\n")
            } else {
                format!("  {l}\n")
            })
            .collect::<String>()
    );
    assert_eq!(
        manifest::load_private_keys(list.as_bytes())
            .expect("list")
            .len(),
        1
    );
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn seal_open_round_trip(value in proptest::collection::vec(any::<u8>(), 0..2048), label in ".{0,40}") {
            let blob = seal(key_a().public_key(), label.as_bytes(), &value).expect("seal");
            let opened = open(key_a(), label.as_bytes(), &blob).expect("open");
            prop_assert_eq!(opened.expose_secret(), &value[..]);
            let other = format!("{label}x");
            prop_assert!(open(key_a(), other.as_bytes(), &blob).is_err());
        }

        #[test]
        fn split_yaml_keeps_every_document(names in proptest::collection::vec("s-[a-z0-9]{1,8}", 1..6)) {
            let text: String = names.iter().map(|n| format!("---\nkind: Secret\nmetadata:\n  name: {n}\n")).collect();
            let docs = manifest::parse_documents(&text).expect("parse");
            let got: Vec<&str> = docs.iter().filter_map(|d| d.name()).collect();
            prop_assert_eq!(got, names.iter().map(String::as_str).collect::<Vec<_>>());
        }

        #[test]
        fn parse_documents_never_panics(text in "\\PC{0,200}") {
            let _ = manifest::parse_documents(&text);
        }
    }
}

#[test]
fn recovery_unseal_renders_template_data() {
    let mut doc =
        manifest::seal_secret(&secret_doc(), &SealOptions::default(), key_a().public_key())
            .expect("seal");
    doc["spec"]["template"]["data"] =
        json!({"url": "postgres://{{ .user }}:{{ index . \"password\" }}@db", "password": null});
    let mut ring = Keyring::new();
    ring.add(pem_roundtrip(key_a()));
    let secret = manifest::unseal(&doc, &ring).expect("unseal");
    let url = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        secret["data"]["url"].as_str().expect("url"),
    )
    .expect("b64");
    assert_eq!(url, b"postgres://admin:hunter2@db");
    assert!(
        secret["data"].get("password").is_none(),
        "a null template entry removes the key"
    );
    doc["spec"]["template"]["data"] = json!({"x": "{{ .user | sha256sum }}"});
    let err = manifest::unseal(&doc, &ring).unwrap_err().to_string();
    assert!(
        err.contains("spec.template.data.x") && err.contains("unsupported"),
        "{err}"
    );
    assert!(!err.contains("admin"));
}

#[test]
fn deprecated_spec_data_opens_and_reseals() {
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "prod"}, "data": {"password": "aHVudGVyMg=="}});
    let blob = seal(
        key_a().public_key(),
        b"prod/db",
        secret.to_string().as_bytes(),
    )
    .expect("seal");
    let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b);
    let doc = json!({"apiVersion": "bitnami.com/v1alpha1", "kind": "SealedSecret",
        "metadata": {"name": "db", "namespace": "prod"}, "spec": {"data": b64(&blob), "encryptedData": {}}});
    let mut ring = Keyring::new();
    ring.add(pem_roundtrip(key_a()));
    ring.add(pem_roundtrip(key_b()));
    assert_eq!(
        manifest::unseal(&doc, &ring).expect("unseal")["data"]["password"],
        "aHVudGVyMg=="
    );
    let resealed = manifest::reseal(&doc, &ring, key_b().public_key()).expect("reseal");
    assert_ne!(resealed["spec"]["data"], doc["spec"]["data"]);
    let mut only_b = Keyring::new();
    only_b.add(pem_roundtrip(key_b()));
    assert_eq!(
        manifest::unseal(&resealed, &only_b).expect("unseal")["data"]["password"],
        "aHVudGVyMg=="
    );
    let mut both = doc.clone();
    both["spec"]["encryptedData"] = json!({"x": "AAAA"});
    assert!(
        manifest::unseal(&both, &ring)
            .unwrap_err()
            .to_string()
            .contains("cannot be used together")
    );
}
