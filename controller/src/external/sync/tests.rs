//! Data building: property paths, decoding, extract, find keys, rewrites, templates.

use super::*;
use sealkit_api::{ExternalSecretData, ExternalSecretDataFrom};

fn spec(v: serde_json::Value) -> ExternalSecretSpec {
    serde_json::from_value(v).expect("spec")
}

fn values(pairs: &[(&str, &str)]) -> HashMap<RemoteKey, Result<SecretValue, FetchError>> {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                RemoteKey::current(*k),
                Ok(SecretValue::new(v.as_bytes().to_vec())),
            )
        })
        .collect()
}

fn text(d: &Data, k: &str) -> String {
    String::from_utf8_lossy(d.get(k).expect(k)).into_owned()
}

#[test]
fn data_property_decoding_and_extract() {
    let s = spec(serde_json::json!({
        "data": [
            {"secretKey": "user", "remoteRef": {"key": "db", "property": "user"}},
            {"secretKey": "port", "remoteRef": {"key": "db", "property": "conn.port"}},
            {"secretKey": "cert", "remoteRef": {"key": "b64", "decodingStrategy": "Base64"}},
            {"secretKey": "raw", "remoteRef": {"key": "plain"}}
        ],
        "dataFrom": [{"extract": {"key": "db"}, "rewrite": [{"regexp": {"source": "^(.*)$", "target": "db_$1"}}]}]
    }));
    assert_eq!(
        needed_keys(&s, "")
            .iter()
            .map(|k| k.key.as_str())
            .collect::<Vec<_>>(),
        ["b64", "db", "plain"],
        "deduplicated"
    );
    let v = values(&[
        ("db", r#"{"user":"app","conn":{"port":5432}}"#),
        ("b64", "aGVsbG8="),
        ("plain", "x y"),
    ]);
    let d = build(&s, "", &v, &HashMap::new(), false).expect("build");
    assert_eq!(text(&d, "user"), "app");
    assert_eq!(text(&d, "port"), "5432");
    assert_eq!(text(&d, "cert"), "hello");
    assert_eq!(text(&d, "raw"), "x y");
    assert_eq!(text(&d, "db_user"), "app");
    assert_eq!(text(&d, "db_conn"), r#"{"port":5432}"#);
}

#[test]
fn errors_name_the_entry_and_never_the_value() {
    let s = spec(serde_json::json!({
        "data": [{"secretKey": "k", "remoteRef": {"key": "plain", "property": "a"}}]
    }));
    let v = values(&[("plain", "not-json-very-secret")]);
    let e = build(&s, "", &v, &HashMap::new(), false).unwrap_err();
    assert!(
        e.message.contains("data[0]") && e.message.contains("not valid JSON"),
        "{e}"
    );
    assert!(!e.message.contains("very-secret"));

    let s = spec(serde_json::json!({
        "data": [{"secretKey": "k", "remoteRef": {"key": "gone"}}, {"secretKey": "p", "remoteRef": {"key": "plain"}}]
    }));
    let mut v = values(&[("plain", "v")]);
    v.insert(
        RemoteKey::current("gone"),
        Err(FetchError::NotFound("gone".into())),
    );
    let e = build(&s, "", &v, &HashMap::new(), false).unwrap_err();
    assert!(e.not_found && e.message.contains("gone"), "{e}");
    // deletionPolicy Merge: the missing key is dropped, the rest kept.
    let d = build(&s, "", &v, &HashMap::new(), true).expect("merge");
    assert_eq!(d.keys().collect::<Vec<_>>(), ["p"]);
}

#[test]
fn find_keys_are_made_safe_and_rewritten() {
    let s = ExternalSecretSpec {
        data_from: Some(vec![ExternalSecretDataFrom {
            find: Some(sealkit_api::FindRef {
                path: Some("prod/".into()),
                ..Default::default()
            }),
            rewrite: Some(vec![sealkit_api::Rewrite {
                regexp: Some(sealkit_api::RewriteRegexp {
                    source: "^prod_".into(),
                    target: "".into(),
                }),
                transform: None,
            }]),
            ..Default::default()
        }]),
        data: Some(Vec::<ExternalSecretData>::new()),
        ..Default::default()
    };
    assert_eq!(
        find_queries(&s, "team/")[0].1.path.as_deref(),
        Some("team/prod/")
    );
    let found = HashMap::from([(
        0,
        vec![(
            "prod/db password".to_string(),
            SecretValue::new(b"pw".to_vec()),
        )],
    )]);
    let d = build(&s, "", &HashMap::new(), &found, false).expect("build");
    assert_eq!(text(&d, "db_password"), "pw");
}

#[test]
fn templates_replace_or_merge_and_template_from() {
    let mut fetched = Data::new();
    fetched.insert("user".into(), Zeroizing::new(b"app".to_vec()));
    fetched.insert("pass".into(), Zeroizing::new(b"pw".to_vec()));
    let s = spec(serde_json::json!({"target": {"template": {
        "type": "kubernetes.io/basic-auth",
        "data": {"url": "postgres://{{ .user }}:{{ .pass | urlquery }}@db"}
    }}}));
    let e = render(&s, fetched.clone(), &[]).unwrap_err();
    assert!(
        e.message.contains("target.template.data.url") && e.message.contains("urlquery"),
        "{e}"
    );
    let s = spec(serde_json::json!({"target": {"template": {
        "data": {"url": "postgres://{{ .user }}:{{ .pass }}@db"}
    }}}));
    let r = render(&s, fetched.clone(), &[]).expect("render");
    assert_eq!(
        r.data.keys().collect::<Vec<_>>(),
        ["url"],
        "Replace keeps only templated keys"
    );
    let s = spec(serde_json::json!({"target": {"template": {
        "mergePolicy": "Merge", "data": {"url": "{{ .user | upper }}"}
    }}}));
    let r = render(&s, fetched.clone(), &[]).expect("render");
    assert_eq!(r.data.len(), 3);
    assert_eq!(text(&r.data, "url"), "APP");
    let sources = [
        TemplateSource {
            target: "Data".into(),
            origin: "templateFrom[0].configMap t/config".into(),
            key: Some("config.ini".into()),
            text: "[db]\nuser={{ .user }}".into(),
        },
        TemplateSource {
            target: "Annotations".into(),
            origin: "templateFrom[1].literal".into(),
            key: None,
            text: "owner: \"{{ .user }}\"".into(),
        },
    ];
    let s =
        spec(serde_json::json!({"target": {"template": {"metadata": {"labels": {"team": "a"}}}}}));
    let r = render(&s, fetched, &sources).expect("render");
    assert_eq!(
        r.labels.get("team").map(String::as_str),
        Some("a"),
        "template.metadata labels"
    );
    assert_eq!(text(&r.data, "config.ini"), "[db]\nuser=app");
    assert_eq!(r.annotations.get("owner").map(String::as_str), Some("app"));
}

#[test]
fn data_hash_changes_with_any_byte() {
    let mut a = BTreeMap::new();
    a.insert("k".to_string(), k8s_openapi::ByteString(b"v1".to_vec()));
    let h1 = data_hash(&a);
    a.insert("k".to_string(), k8s_openapi::ByteString(b"v2".to_vec()));
    assert_ne!(h1, data_hash(&a));
    assert_eq!(h1.len(), 56);
}
