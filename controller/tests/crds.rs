//! The committed CRDs are exactly what `crdgen` generates, and our SealedSecret CRD accepts
//! everything upstream's CRD (in `../shared/reference/crds/`) declares.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn committed_crds_match_generated() {
    for (name, text) in sealkit_controller::crds() {
        let path = root().join("deploy/crds").join(&name);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == text,
            "{} is stale: run `cargo run -p sealkit-controller --bin crdgen`",
            path.display()
        );
    }
}

/// Every (path, type) in `schema`, e.g. `spec.template.metadata.labels: object`.
fn paths(schema: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        out.push((prefix.to_string(), t.to_string()));
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            let p = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            paths(v, &p, out);
        }
    }
    if let Some(items) = schema.get("items") {
        paths(items, &format!("{prefix}[]"), out);
    }
}

fn version_schema(crd: &Value) -> Value {
    crd.pointer("/spec/versions/0/schema/openAPIV3Schema")
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn sealed_secret_crd_covers_upstream() {
    let upstream_path = std::env::var("SEALKIT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("../shared"))
        .join("reference/crds/bitnami.com_sealedsecrets.yaml");
    let Ok(text) = std::fs::read_to_string(&upstream_path) else {
        eprintln!(
            "skipped: upstream CRD not found at {} (set SEALKIT_SHARED)",
            upstream_path.display()
        );
        return;
    };
    let upstream: Value = serde_saphyr::from_str(&text).expect("upstream CRD parses");
    let ours: Value =
        serde_saphyr::from_str(&sealkit_controller::crds()[0].1).expect("our CRD parses");
    for key in [
        "/spec/group",
        "/spec/names/kind",
        "/spec/names/plural",
        "/spec/scope",
        "/spec/versions/0/name",
    ] {
        assert_eq!(ours.pointer(key), upstream.pointer(key), "{key}");
    }
    assert_eq!(
        ours.pointer("/spec/versions/0/additionalPrinterColumns"),
        upstream.pointer("/spec/versions/0/additionalPrinterColumns")
    );
    assert!(
        ours.pointer("/spec/versions/0/subresources/status")
            .is_some()
    );
    let mut want = Vec::new();
    paths(&version_schema(&upstream), "", &mut want);
    let mut have = Vec::new();
    paths(&version_schema(&ours), "", &mut have);
    // apiVersion, kind and metadata are implicit in every CRD; the API server serves them.
    for (path, ty) in want
        .into_iter()
        .filter(|(p, _)| !["apiVersion", "kind", "metadata", ""].contains(&p.as_str()))
    {
        assert!(
            have.contains(&(path.clone(), ty.clone())),
            "upstream field {path} ({ty}) missing or typed differently"
        );
    }
    let preserve = |v: &Value, p: &str| {
        v.pointer(p)
            .and_then(|s| s.get("x-kubernetes-preserve-unknown-fields"))
            .cloned()
    };
    for p in [
        "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/encryptedData",
        "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/template/properties/metadata",
    ] {
        assert_eq!(preserve(&ours, p), preserve(&upstream, p), "{p}");
    }
}

#[test]
fn kubeseal_output_deserializes() {
    let doc = r#"{"kind":"SealedSecret","apiVersion":"bitnami.com/v1alpha1",
      "metadata":{"name":"db","namespace":"prod","creationTimestamp":null},
      "spec":{"template":{"metadata":{"name":"db","namespace":"prod","creationTimestamp":null,
        "labels":{"a":"b"}},"type":"Opaque","data":{"url":"{{ .password }}"}},
        "encryptedData":{"password":"AgBy..."}}}"#;
    let ss: sealkit_api::SealedSecret = serde_json::from_str(doc).expect("parses");
    assert_eq!(ss.spec.encrypted_data["password"], "AgBy...");
    let t = ss.spec.template.expect("template");
    assert_eq!(t.type_.as_deref(), Some("Opaque"));
    let meta = t.metadata.expect("metadata");
    assert!(
        meta.other.contains_key("creationTimestamp"),
        "unknown metadata kept"
    );
}
