//! Open: every value of a SealedSecret with a keyring (recovery unseal, reseal), and, when a
//! value does not open, the diagnosis of why in words a user can act on.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};

use super::object::{Target, check_kind, get_str, obj, object_meta, scope_of, secret_items};
use super::{ManifestError, SEALED_SECRET_KIND, field};
use crate::seal::keyring::{Binding, Diagnosis, Keyring};
use crate::seal::keys::{Fingerprint, PublicKey};
use crate::seal::{OpenError, Scope, seal};
use crate::secret::{ExposeSecret, SecretBytes, secret_bytes};

/// Name, namespace and scope of a SealedSecret document, as the controller reads them (from
/// its own metadata).
pub fn sealed_target(doc: &Value) -> Result<Target, ManifestError> {
    check_kind(doc, SEALED_SECRET_KIND)?;
    let meta = obj(doc.get("metadata").unwrap_or(&Value::Null), "metadata")?;
    let name = get_str(meta, "name", "metadata")?.unwrap_or("").to_string();
    let namespace = get_str(meta, "namespace", "metadata")?
        .unwrap_or("")
        .to_string();
    let scope = scope_of(meta);
    if name.is_empty() {
        return Err(field("metadata.name", "missing"));
    }
    Ok(Target {
        name,
        namespace,
        scope,
    })
}

fn encrypted_items(doc: &Value) -> Result<Vec<(String, &str)>, ManifestError> {
    let spec = obj(doc.get("spec").unwrap_or(&Value::Null), "spec")?
        .ok_or_else(|| field("spec", "missing"))?;
    let mut out = Vec::new();
    if let Some(enc) = obj(
        spec.get("encryptedData").unwrap_or(&Value::Null),
        "spec.encryptedData",
    )? {
        for (k, v) in enc {
            match v {
                Value::String(s) => out.push((k.clone(), s.as_str())),
                _ => {
                    return Err(field(
                        format!("spec.encryptedData.{k}"),
                        "must be a base64 string",
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// The bindings to try when a value does not open, for a good error message.
fn candidate_bindings(doc: &Value, target: &Target) -> Vec<Binding> {
    let mut pairs = vec![(target.namespace.clone(), target.name.clone())];
    let t_ns = doc
        .pointer("/spec/template/metadata/namespace")
        .and_then(Value::as_str);
    let t_name = doc
        .pointer("/spec/template/metadata/name")
        .and_then(Value::as_str);
    if t_ns.is_some() || t_name.is_some() {
        pairs.push((
            t_ns.unwrap_or(&target.namespace).to_string(),
            t_name.unwrap_or(&target.name).to_string(),
        ));
    }
    let mut out = Vec::new();
    for (namespace, name) in pairs {
        for scope in Scope::ALL {
            let b = Binding {
                scope,
                namespace: namespace.clone(),
                name: name.clone(),
            };
            if !(b.scope == target.scope
                && b.namespace == target.namespace
                && b.name == target.name)
            {
                out.push(b);
            }
        }
    }
    out
}

/// Explains an [`OpenError`] for a SealedSecret value in words a user can act on.
pub fn explain_open_failure(
    keyring: &Keyring,
    doc: &Value,
    target: &Target,
    blob: &[u8],
    err: &OpenError,
) -> String {
    let expected = Binding {
        scope: target.scope,
        namespace: target.namespace.clone(),
        name: target.name.clone(),
    };
    if *err != OpenError::NoKey {
        return err.to_string();
    }
    match keyring.diagnose(blob, &candidate_bindings(doc, target)) {
        Diagnosis::SealedFor(b, fp) => format!(
            "sealed with {} (key {}), but this SealedSecret asks for {} (restore its original name, namespace and scope annotations, or re-seal it)",
            b.describe(),
            fp.short(),
            expected.describe()
        ),
        Diagnosis::Tampered => OpenError::Tampered.to_string(),
        Diagnosis::UnknownKey => format!(
            "sealed with a key that is not among the {} private key(s) given (or for a namespace/name we could not guess)",
            keyring.len()
        ),
    }
}

/// The result of opening every value of a SealedSecret.
pub struct OpenedItems {
    /// The document's target.
    pub target: Target,
    /// Plaintext per key.
    pub items: BTreeMap<String, SecretBytes>,
    /// Which key opened each item.
    pub opened_by: BTreeMap<String, Fingerprint>,
}

/// Opens the deprecated `spec.data` blob (the whole Secret sealed as one value), if the
/// document has one.
fn open_legacy<'k>(
    doc: &Value,
    keyring: &'k Keyring,
    target: &Target,
    label: &[u8],
) -> Result<Option<crate::seal::keyring::Opened<'k>>, ManifestError> {
    let Some(legacy) = doc.pointer("/spec/data").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let text = legacy
        .as_str()
        .ok_or_else(|| field("spec.data", "must be a base64 string"))?;
    let blob = B64
        .decode(text)
        .map_err(|_| field("spec.data", "invalid base64"))?;
    keyring.open(label, &blob).map(Some).map_err(|e| {
        field(
            "spec.data",
            explain_open_failure(keyring, doc, target, &blob, &e),
        )
    })
}

/// Opens every `encryptedData` item (or the deprecated `spec.data` blob). All failures are
/// collected and explained.
pub fn open_items(doc: &Value, keyring: &Keyring) -> Result<OpenedItems, ManifestError> {
    let target = sealed_target(doc)?;
    let label = target.scope.label(&target.namespace, &target.name);
    let enc = encrypted_items(doc)?;
    let mut items = BTreeMap::new();
    let mut opened_by = BTreeMap::new();
    let mut failures = Vec::new();
    if doc.pointer("/spec/data").is_some_and(|v| !v.is_null()) {
        if !enc.is_empty() {
            return Err(field(
                "spec.data",
                "cannot be used together with spec.encryptedData",
            ));
        }
        let Some(opened) = open_legacy(doc, keyring, &target, &label)? else {
            return Err(field("spec.data", "missing"));
        };
        let secret: Value =
            serde_json::from_slice(opened.plaintext.expose_secret()).map_err(|_| {
                field(
                    "spec.data",
                    "decrypted, but it does not hold a Secret in JSON",
                )
            })?;
        let fp = opened.key.fingerprint().clone();
        for (k, v) in secret_items(&secret)? {
            opened_by.insert(k.clone(), fp.clone());
            items.insert(k, v);
        }
        return Ok(OpenedItems {
            target,
            items,
            opened_by,
        });
    }
    for (k, text) in enc {
        let blob = match B64.decode(text) {
            Ok(b) => b,
            Err(_) => {
                failures.push((k, "invalid base64".to_string()));
                continue;
            }
        };
        match keyring.open(&label, &blob) {
            Ok(opened) => {
                opened_by.insert(k.clone(), opened.key.fingerprint().clone());
                items.insert(k, opened.plaintext);
            }
            Err(e) => failures.push((k, explain_open_failure(keyring, doc, &target, &blob, &e))),
        }
    }
    if !failures.is_empty() {
        return Err(ManifestError::Unseal(failures));
    }
    Ok(OpenedItems {
        target,
        items,
        opened_by,
    })
}

/// Unseals a SealedSecret into the Secret the controller would create (without the
/// ownerReference, which only makes sense in-cluster).
pub fn unseal(doc: &Value, keyring: &Keyring) -> Result<Value, ManifestError> {
    unseal_detailed(doc, keyring).map(|(v, _)| v)
}

/// [`unseal`], also returning the fingerprints of the keys that opened the values.
pub fn unseal_detailed(
    doc: &Value,
    keyring: &Keyring,
) -> Result<(Value, Vec<Fingerprint>), ManifestError> {
    let opened = open_items(doc, keyring)?;
    let mut used: Vec<Fingerprint> = opened.opened_by.values().cloned().collect();
    used.sort();
    used.dedup();
    let template = doc
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    let mut items = opened.items;
    // spec.template.data: each key rendered over the decrypted values; null removes the key.
    if let Some(tdata) = obj(
        template.get("data").unwrap_or(&Value::Null),
        "spec.template.data",
    )? {
        let mut rendered = Vec::new();
        for (k, v) in tdata {
            match v {
                Value::Null => rendered.push((k.clone(), None)),
                Value::String(t) => {
                    let out = crate::seal::template::render(t, &items)
                        .map_err(|e| field(format!("spec.template.data.{k}"), e.to_string()))?;
                    rendered.push((k.clone(), Some(secret_bytes(out.to_vec()))));
                }
                _ => return Err(field(format!("spec.template.data.{k}"), "must be a string")),
            }
        }
        for (k, v) in rendered {
            match v {
                Some(v) => {
                    items.insert(k, v);
                }
                None => {
                    items.remove(&k);
                }
            }
        }
    }
    let t_meta = obj(
        template.get("metadata").unwrap_or(&Value::Null),
        "spec.template.metadata",
    )?;
    let meta = object_meta(
        t_meta,
        "spec.template.metadata",
        &opened.target.name,
        &opened.target.namespace,
    )?;
    let mut out = Map::new();
    out.insert("kind".into(), "Secret".into());
    out.insert("apiVersion".into(), "v1".into());
    out.insert("metadata".into(), meta.into());
    if let Some(Value::Bool(b)) = template.get("immutable") {
        out.insert("immutable".into(), (*b).into());
    }
    let data: Map<String, Value> = items
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(B64.encode(v.expose_secret()))))
        .collect();
    out.insert("data".into(), data.into());
    if let Some(t) = template
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        out.insert("type".into(), t.into());
    }
    Ok((Value::Object(out), used))
}

/// Re-encrypts every value of a SealedSecret to `new_key`, keeping its scope, names and
/// everything else in the document.
pub fn reseal(doc: &Value, keyring: &Keyring, new_key: &PublicKey) -> Result<Value, ManifestError> {
    let target = sealed_target(doc)?;
    let label = target.scope.label(&target.namespace, &target.name);
    let mut out = doc.clone();
    if let Some(opened) = open_legacy(doc, keyring, &target, &label)? {
        let sealed = B64.encode(seal(new_key, &label, opened.plaintext.expose_secret())?);
        if let Some(slot) = out.pointer_mut("/spec/data") {
            *slot = sealed.into();
        }
        return Ok(out);
    }
    let opened = open_items(doc, keyring)?;
    if let Some(Value::Object(enc)) = out.pointer_mut("/spec/encryptedData") {
        for (k, v) in &opened.items {
            let blob = seal(new_key, &label, v.expose_secret())?;
            enc.insert(k.clone(), B64.encode(blob).into());
        }
    }
    Ok(out)
}
