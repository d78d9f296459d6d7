//! The committed CRDs are exactly what `crdgen` generates, and our SealedSecret CRD accepts
//! everything upstream's CRD (in `../shared/reference/crds/`) declares.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `shared/` (upstream CRDs); a path that does not exist when it cannot be found.
fn shared() -> PathBuf {
    sealkit_skip::shared_dir(&root()).unwrap_or_else(|| root().join("../shared"))
}

#[test]
fn the_crd_kustomization_lists_every_crd() {
    let path = root().join("deploy/crds/kustomization.yaml");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap_or_default(),
        sealkit_controller::crds_kustomization(),
        "{} is stale: run `cargo run -p sealkit-controller --bin crdgen`",
        path.display()
    );
}

#[test]
fn committed_crds_match_generated() {
    for (name, text) in sealkit_controller::crds() {
        let path = root().join("deploy/crds").join(&name);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            !text.lines().any(|l| l.trim_start().starts_with("default:")),
            "{name}: defaults belong in code, not the CRD"
        );
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
    let upstream_path = shared().join("reference/crds/bitnami.com_sealedsecrets.yaml");
    let Ok(text) = std::fs::read_to_string(&upstream_path) else {
        sealkit_skip::missing(
            "upstream CRDs",
            format!("{} not found (set SEALKIT_SHARED)", upstream_path.display()),
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

fn upstream_crd(file: &str) -> Option<Value> {
    let path = shared().join("reference/crds").join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(serde_saphyr::from_str(&text).expect("upstream CRD parses")),
        Err(_) => {
            sealkit_skip::missing(
                "upstream CRDs",
                format!("{} not found (set SEALKIT_SHARED)", path.display()),
            );
            None
        }
    }
}

/// Our ESO and Flux CRDs serve a subset: every field we declare exists upstream with the same type, the
/// identity (group, names, scope, version) is upstream's, unknown fields are preserved (so ESO
/// manifests are never rejected or pruned), and nothing needs a Kubernetes newer than 1.28.
#[test]
fn eso_and_flux_crds_are_a_compatible_subset_of_upstream() {
    for (ours_name, upstream_file) in [
        (
            "externalsecrets.external-secrets.io.yaml",
            "eso-v0.19.2-k8s-1.28/external-secrets.io_externalsecrets.yaml",
        ),
        (
            "secretstores.external-secrets.io.yaml",
            "external-secrets.io_secretstores.yaml",
        ),
        (
            "clustersecretstores.external-secrets.io.yaml",
            "external-secrets.io_clustersecretstores.yaml",
        ),
        (
            "gitrepositories.source.toolkit.fluxcd.io.yaml",
            "source.toolkit.fluxcd.io_gitrepositories.yaml",
        ),
        (
            "kustomizations.kustomize.toolkit.fluxcd.io.yaml",
            "kustomize.toolkit.fluxcd.io_kustomizations.yaml",
        ),
    ] {
        let Some(upstream) = upstream_crd(upstream_file) else {
            return;
        };
        let text = sealkit_controller::crds()
            .into_iter()
            .find(|(n, _)| n == ours_name)
            .map(|(_, t)| t)
            .expect(ours_name);
        assert!(
            !text.contains("selectableFields"),
            "{ours_name}: 1.28 rejects selectableFields"
        );
        let ours: Value = serde_saphyr::from_str(&text).expect("our CRD parses");
        for key in [
            "/spec/group",
            "/spec/names/kind",
            "/spec/names/plural",
            "/spec/scope",
        ] {
            assert_eq!(
                ours.pointer(key),
                upstream.pointer(key),
                "{ours_name} {key}"
            );
        }
        let served = upstream["spec"]["versions"]
            .as_array()
            .expect("versions")
            .iter()
            .find(|v| v["name"] == "v1")
            .cloned()
            .expect("upstream v1");
        assert_eq!(
            ours.pointer("/spec/versions/0/name"),
            Some(&Value::from("v1"))
        );
        let mut want = Vec::new();
        paths(&served["schema"]["openAPIV3Schema"], "", &mut want);
        let mut have = Vec::new();
        paths(&version_schema(&ours), "", &mut have);
        for (path, ty) in have.into_iter().filter(|(p, _)| !p.is_empty()) {
            assert!(
                want.contains(&(path.clone(), ty.clone())),
                "{ours_name}: our field {path} ({ty}) is not upstream's"
            );
        }
        assert_eq!(
            ours.pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec/x-kubernetes-preserve-unknown-fields"),
            Some(&Value::Bool(true)),
            "{ours_name}: unknown spec fields must be kept"
        );
    }
}

#[test]
fn eso_manifest_deserializes() {
    let doc = r#"{"apiVersion":"external-secrets.io/v1","kind":"ExternalSecret",
      "metadata":{"name":"db","namespace":"app"},
      "spec":{"refreshInterval":"1h0m0s","secretStoreRef":{"kind":"ClusterSecretStore","name":"aws"},
        "target":{"name":"db-creds","creationPolicy":"Owner","deletionPolicy":"Retain",
          "template":{"engineVersion":"v2","type":"kubernetes.io/basic-auth","data":{"username":"{{ .user }}"}}},
        "data":[{"secretKey":"user","remoteRef":{"key":"prod/db","property":"user","version":"AWSCURRENT",
          "conversionStrategy":"Default","decodingStrategy":"None","metadataPolicy":"None"}}],
        "dataFrom":[{"extract":{"key":"prod/extra"}},{"find":{"name":{"regexp":"^prod/"},"tags":{"env":"prod"}},
          "rewrite":[{"regexp":{"source":"prod/(.*)","target":"$1"}}]}]}}"#;
    let es: sealkit_api::ExternalSecret = serde_json::from_str(doc).expect("parses");
    assert_eq!(
        es.spec.data.as_ref().expect("data")[0]
            .remote_ref
            .property
            .as_deref(),
        Some("user")
    );
    let from = es.spec.data_from.as_ref().expect("dataFrom");
    assert_eq!(
        from[1]
            .find
            .as_ref()
            .and_then(|f| f.name.as_ref())
            .map(|n| n.regexp.as_str()),
        Some("^prod/")
    );
    let store = r#"{"apiVersion":"external-secrets.io/v1","kind":"SecretStore","metadata":{"name":"aws"},
      "spec":{"provider":{"aws":{"service":"SecretsManager","region":"eu-west-1","role":"arn:aws:iam::1:role/r",
        "auth":{"secretRef":{"accessKeyIDSecretRef":{"name":"awssm","key":"id"},"secretAccessKeySecretRef":{"name":"awssm","key":"secret"}}}}}}}"#;
    let s: sealkit_api::SecretStore = serde_json::from_str(store).expect("parses");
    let aws = s.spec.provider.aws.expect("aws");
    assert_eq!(
        aws.auth
            .and_then(|a| a.secret_ref)
            .and_then(|r| r.access_key_id_secret_ref)
            .map(|k| k.key),
        Some("id".into())
    );
}

#[test]
fn example_flux_manifests_deserialize() {
    let text = std::fs::read_to_string(
        root().join("examples/gitops/clusters/production/flux-system.yaml"),
    )
    .expect("example");
    let docs = sealkit_keys::seal::manifest::parse_documents(&text).expect("parses");
    let repo: sealkit_api::GitRepository =
        serde_json::from_value(docs[0].value.clone()).expect("GitRepository");
    assert_eq!(
        repo.spec.reference.and_then(|r| r.branch).as_deref(),
        Some("main")
    );
    let ks: sealkit_api::Kustomization =
        serde_json::from_value(docs[1].value.clone()).expect("Kustomization");
    assert_eq!(ks.spec.path.as_deref(), Some("./apps/overlays/production"));
    assert!(ks.spec.prune);
    assert_eq!(
        ks.spec
            .decryption
            .and_then(|d| d.secret_ref)
            .map(|r| r.name)
            .as_deref(),
        Some("sops-age")
    );
}
