//! Reading the fields of Kubernetes objects with errors that name the field at fault, and the
//! pieces of metadata that sealing and opening share (ObjectMeta of templates, scope
//! annotations, a Secret's items).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::{LAST_APPLIED_ANNOTATIONS, ManifestError, field, field_with_hint};
use crate::seal::Scope;
use crate::secret::{SecretBytes, secret_bytes};

pub(super) fn obj<'a>(
    v: &'a Value,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, ManifestError> {
    match v {
        Value::Null => Ok(None),
        Value::Object(m) => Ok(Some(m)),
        _ => Err(field(path, "must be a mapping")),
    }
}

pub(super) fn get_str<'a>(
    m: Option<&'a Map<String, Value>>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, ManifestError> {
    match m.and_then(|m| m.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(field(
            format!("{path}.{key}"),
            "must be a string (quote the value)",
        )),
    }
}

pub(super) fn string_map(
    m: Option<&Map<String, Value>>,
    key: &str,
    path: &str,
) -> Result<BTreeMap<String, String>, ManifestError> {
    let mut out = BTreeMap::new();
    match m.and_then(|m| m.get(key)) {
        None | Some(Value::Null) => {}
        Some(Value::Object(entries)) => {
            for (k, v) in entries {
                match v {
                    Value::String(s) => {
                        out.insert(k.clone(), s.clone());
                    }
                    _ => {
                        return Err(field(
                            format!("{path}.{key}.{k}"),
                            "must be a string (quote it)",
                        ));
                    }
                }
            }
        }
        Some(_) => {
            return Err(field(
                format!("{path}.{key}"),
                "must be a mapping of strings",
            ));
        }
    }
    Ok(out)
}

pub(super) fn scope_of(meta: Option<&Map<String, Value>>) -> Scope {
    let ann = meta
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object);
    Scope::from_annotations(|k| ann.and_then(|a| a.get(k)).and_then(Value::as_str))
}

fn sorted_string_map(m: &BTreeMap<String, String>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// ObjectMeta in Go field order, keeping what a template or an unsealed Secret should carry:
/// name, generateName, namespace, `creationTimestamp: null`, labels, annotations (without
/// last-applied copies), finalizers. Server-set fields and ownerReferences are dropped.
pub(super) fn object_meta(
    source: Option<&Map<String, Value>>,
    path: &str,
    name: &str,
    namespace: &str,
) -> Result<Map<String, Value>, ManifestError> {
    let mut out = Map::new();
    if !name.is_empty() {
        out.insert("name".into(), name.into());
    }
    if let Some(g) = get_str(source, "generateName", path)? {
        out.insert("generateName".into(), g.into());
    }
    if !namespace.is_empty() {
        out.insert("namespace".into(), namespace.into());
    }
    out.insert("creationTimestamp".into(), Value::Null);
    let labels = string_map(source, "labels", path)?;
    if !labels.is_empty() {
        out.insert("labels".into(), sorted_string_map(&labels));
    }
    let mut annotations = string_map(source, "annotations", path)?;
    for a in LAST_APPLIED_ANNOTATIONS {
        annotations.remove(a);
    }
    if !annotations.is_empty() {
        out.insert("annotations".into(), sorted_string_map(&annotations));
    }
    if let Some(f) = source.and_then(|m| m.get("finalizers")) {
        match f {
            Value::Null => {}
            Value::Array(items) if items.iter().all(Value::is_string) => {
                if !items.is_empty() {
                    out.insert("finalizers".into(), f.clone());
                }
            }
            _ => {
                return Err(field(
                    format!("{path}.finalizers"),
                    "must be a list of strings",
                ));
            }
        }
    }
    Ok(out)
}

pub(super) fn set_scope_annotations(meta: &mut Map<String, Value>, scope: Scope) {
    let ann = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if !ann.is_object() {
        *ann = Value::Object(Map::new());
    }
    if let Value::Object(a) = ann {
        a.remove(crate::seal::NAMESPACE_WIDE_ANNOTATION);
        a.remove(crate::seal::CLUSTER_WIDE_ANNOTATION);
        if let Some(k) = scope.annotation() {
            a.insert(k.into(), "true".into());
        }
        if a.is_empty() {
            meta.remove("annotations");
        }
    }
}

fn is_valid_data_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k != "."
        && k != ".."
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The plaintext items of a Secret: `data` (base64-decoded) then `stringData`, which wins on a
/// clash as it does in the API server.
pub fn secret_items(secret: &Value) -> Result<BTreeMap<String, SecretBytes>, ManifestError> {
    let mut items = BTreeMap::new();
    if let Some(data) = obj(secret.get("data").unwrap_or(&Value::Null), "data")? {
        for (k, v) in data {
            let bytes = match v {
                Value::Null => Vec::new(),
                Value::String(s) => {
                    let compact: Zeroizing<String> =
                        Zeroizing::new(s.chars().filter(|c| !matches!(c, '\n' | '\r')).collect());
                    // The base64 crate's error names a byte of the value and its offset: a
                    // secret's, here. Never formatted; the field is named instead.
                    B64.decode(compact.as_bytes()).map_err(|_| {
                        field_with_hint(
                            format!("data.{k}"),
                            "invalid base64",
                            "values under data are base64-encoded; put plain text under stringData instead",
                        )
                    })?
                }
                _ => return Err(field(format!("data.{k}"), "must be a base64 string")),
            };
            items.insert(k.clone(), secret_bytes(bytes));
        }
    }
    if let Some(data) = obj(
        secret.get("stringData").unwrap_or(&Value::Null),
        "stringData",
    )? {
        for (k, v) in data {
            let bytes = match v {
                Value::Null => Vec::new(),
                Value::String(s) => s.as_bytes().to_vec(),
                _ => {
                    return Err(field(
                        format!("stringData.{k}"),
                        "must be a string (quote the value)",
                    ));
                }
            };
            items.insert(k.clone(), secret_bytes(bytes));
        }
    }
    for k in items.keys() {
        if !is_valid_data_key(k) {
            return Err(field(
                format!("data.{k}"),
                "invalid key: keys may contain only letters, digits, '-', '_' and '.'",
            ));
        }
    }
    Ok(items)
}

/// The resolved identity of a Secret being sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Name of the Secret and SealedSecret.
    pub name: String,
    /// Namespace (empty only for cluster-wide without one).
    pub namespace: String,
    /// Scope.
    pub scope: Scope,
}

pub(super) fn check_kind(doc: &Value, want: &str) -> Result<(), ManifestError> {
    match doc.get("kind").and_then(Value::as_str) {
        Some(k) if k == want => Ok(()),
        Some(k) => Err(field("kind", format!("expected a {want}, found '{k}'"))),
        None => Err(field("kind", format!("missing; expected a {want}"))),
    }
}
