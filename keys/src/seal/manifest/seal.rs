//! Seal: a Secret document into a SealedSecret document (and `--raw`, `--merge-into`), as
//! `kubeseal` does.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};

use super::object::{
    Target, check_kind, get_str, obj, object_meta, scope_of, secret_items, set_scope_annotations,
};
use super::{ManifestError, SEALED_SECRET_API_VERSION, SEALED_SECRET_KIND, field, field_with_hint};
use crate::seal::{PublicKey, Scope, seal};
use crate::secret::ExposeSecret;

/// How to seal a Secret (the kubeseal flags that shape the result).
#[derive(Debug, Clone, Default)]
pub struct SealOptions {
    /// `--scope`: when set, rewrites the Secret's scope annotations.
    pub scope: Option<Scope>,
    /// `--name`: overrides `metadata.name`.
    pub name: Option<String>,
    /// `-n/--namespace` given explicitly: fills a missing namespace, and must match a present one.
    pub namespace: Option<String>,
    /// The kubeconfig namespace, used when the Secret has none and no `-n` was given.
    pub fallback_namespace: Option<String>,
    /// `--allow-empty-data`.
    pub allow_empty_data: bool,
}

/// Seals a Secret document into a SealedSecret document, as `kubeseal` does.
pub fn seal_secret(
    secret: &Value,
    opts: &SealOptions,
    key: &PublicKey,
) -> Result<Value, ManifestError> {
    check_kind(secret, "Secret")?;
    if let Some(v) = secret
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|v| *v != "v1")
    {
        return Err(field(
            "apiVersion",
            format!("expected 'v1' for a Secret, found '{v}'"),
        ));
    }
    let meta_in = obj(secret.get("metadata").unwrap_or(&Value::Null), "metadata")?;
    let mut meta: Map<String, Value> = meta_in.cloned().unwrap_or_default();

    let items = secret_items(secret)?;
    if items.is_empty() && !opts.allow_empty_data {
        return Err(field(
            "data",
            "the Secret has no data or stringData; assuming this is a mistake. Hint: pass --allow-empty-data to seal it anyway",
        ));
    }

    let name = match &opts.name {
        Some(n) => n.clone(),
        None => get_str(meta_in, "name", "metadata")?
            .unwrap_or("")
            .to_string(),
    };
    if name.is_empty() {
        return Err(field_with_hint(
            "metadata.name",
            "missing",
            "set metadata.name or pass --name",
        ));
    }
    if let Some(s) = opts.scope {
        set_scope_annotations(&mut meta, s);
    }
    let scope = scope_of(Some(&meta));
    let doc_ns = get_str(meta_in, "namespace", "metadata")?
        .unwrap_or("")
        .to_string();
    let namespace = match (&opts.namespace, doc_ns.is_empty()) {
        (Some(flag), false) if *flag != doc_ns => {
            return Err(field_with_hint(
                "metadata.namespace",
                format!("is '{doc_ns}' but --namespace says '{flag}'"),
                "remove one of them",
            ));
        }
        (Some(flag), true) => flag.clone(),
        (_, false) => doc_ns,
        (None, true) if scope.needs_namespace() => {
            opts.fallback_namespace.clone().ok_or_else(|| {
                // The kubeconfig's context gives "default" when it names no namespace, so there
                // is no fallback only when there is no kubeconfig at all.
                field_with_hint(
                    "metadata.namespace",
                    "missing, and there is no kubeconfig to take a default namespace from",
                    "set metadata.namespace, pass -n, or use --scope cluster-wide",
                )
            })?
        }
        (None, true) => String::new(),
    };

    let label = scope.label(&namespace, &name);
    let mut encrypted = Map::new();
    for (k, v) in &items {
        let blob = seal(key, &label, v.expose_secret())?;
        encrypted.insert(k.clone(), B64.encode(blob).into());
    }

    let mut template = Map::new();
    template.insert(
        "metadata".into(),
        object_meta(Some(&meta), "metadata", &name, &namespace)?.into(),
    );
    if let Some(t) = get_str(secret.as_object(), "type", "")?.filter(|t| !t.is_empty()) {
        template.insert("type".into(), t.into());
    }
    match secret.get("immutable") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => {
            template.insert("immutable".into(), (*b).into());
        }
        Some(_) => return Err(field("immutable", "must be true or false")),
    }

    let mut ss_meta = Map::new();
    ss_meta.insert("name".into(), name.clone().into());
    if !namespace.is_empty() {
        ss_meta.insert("namespace".into(), namespace.clone().into());
    }
    ss_meta.insert("creationTimestamp".into(), Value::Null);
    if let Some(a) = scope.annotation() {
        let mut ann = Map::new();
        ann.insert(a.into(), "true".into());
        ss_meta.insert("annotations".into(), ann.into());
    }

    let mut spec = Map::new();
    spec.insert("template".into(), template.into());
    spec.insert("encryptedData".into(), encrypted.into());

    let mut out = Map::new();
    out.insert("kind".into(), SEALED_SECRET_KIND.into());
    out.insert("apiVersion".into(), SEALED_SECRET_API_VERSION.into());
    out.insert("metadata".into(), ss_meta.into());
    out.insert("spec".into(), spec.into());
    Ok(Value::Object(out))
}

/// Seals a single value (`kubeseal --raw`): the base64 text, no newline.
pub fn seal_raw(key: &PublicKey, target: &Target, value: &[u8]) -> Result<String, ManifestError> {
    let label = target.scope.label(&target.namespace, &target.name);
    Ok(B64.encode(seal(key, &label, value)?))
}

/// `--merge-into`: merges a freshly sealed document's items, template labels, annotations and
/// data into `orig`, keeping everything else of `orig`.
pub fn merge_into(orig: &mut Value, update: &Value) -> Result<(), ManifestError> {
    check_kind(orig, SEALED_SECRET_KIND)?;
    let spec = orig
        .as_object_mut()
        .and_then(|o| o.get_mut("spec"))
        .and_then(Value::as_object_mut)
        .ok_or_else(|| field("spec", "missing"))?;
    let merge = |dst: &mut Map<String, Value>, key: &str, src: Option<&Value>| {
        if let Some(Value::Object(src)) = src {
            let slot = dst.entry(key).or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(d) = slot {
                for (k, v) in src {
                    d.insert(k.clone(), v.clone());
                }
            }
        }
    };
    merge(spec, "encryptedData", update.pointer("/spec/encryptedData"));
    let template = spec
        .entry("template")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(t) = template {
        merge(t, "data", update.pointer("/spec/template/data"));
        let meta = t
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = meta {
            merge(
                m,
                "labels",
                update.pointer("/spec/template/metadata/labels"),
            );
            merge(
                m,
                "annotations",
                update.pointer("/spec/template/metadata/annotations"),
            );
        }
    }
    Ok(())
}
