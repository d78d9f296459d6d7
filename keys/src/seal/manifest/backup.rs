//! Private keys from backups (PEM, or key Secrets as `kubectl get secret -o yaml` writes
//! them), and key Secrets in the upstream controller's layout.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;
use zeroize::Zeroizing;

use super::document::{parse_documents, to_yaml};
use super::object::{check_kind, secret_items};
use super::{ManifestError, field};
use crate::seal::KeyError;
use crate::seal::keys::PrivateKey;
use crate::secret::ExposeSecret;

/// Reads private keys from a file's bytes: PEM (`RSA PRIVATE KEY` / `PRIVATE KEY`), or a
/// Kubernetes Secret or List of Secrets (YAML or JSON) holding `tls.key`, as
/// `kubectl get secret -l sealedsecrets.bitnami.com/sealed-secrets-key -o yaml` writes them.
pub fn load_private_keys(bytes: &[u8]) -> Result<Vec<PrivateKey>, ManifestError> {
    if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return PrivateKey::from_pem_all(bytes).map_err(|e| quiet_pem(e).into());
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| field("", "neither PEM nor a YAML/JSON Secret (not UTF-8)"))?;
    let docs = parse_documents(text)?;
    if docs.is_empty() {
        return Err(KeyError::NoPrivateKey.into());
    }
    let mut keys = Vec::new();
    for doc in docs {
        let where_ = format!(
            "document {} (Secret '{}')",
            doc.index,
            doc.name().unwrap_or("?")
        );
        check_kind(&doc.value, "Secret").map_err(|e| field(where_.clone(), e.to_string()))?;
        let items = secret_items(&doc.value).map_err(|e| field(where_.clone(), e.to_string()))?;
        let key = items.get("tls.key").ok_or_else(|| {
            field(
                format!("{where_}: data.tls.key"),
                "missing; a sealing key Secret holds its key in tls.key",
            )
        })?;
        let parsed = PrivateKey::from_pem_all(key.expose_secret())
            .map_err(|e| field(format!("{where_}: data.tls.key"), quiet_pem(e).to_string()))?;
        keys.extend(parsed);
    }
    Ok(keys)
}

/// A PEM error without the pem crate's text, which for a bad body is the base64 crate's: a byte
/// of the (private) key and its offset.
fn quiet_pem(e: KeyError) -> KeyError {
    match e {
        KeyError::Pem(_) => KeyError::Pem("the base64 body does not decode".into()),
        other => other,
    }
}

/// A sealing key Secret in the upstream controller's layout (type `kubernetes.io/tls`, label
/// `sealedsecrets.bitnami.com/sealed-secrets-key: active`), for backups and imports.
pub fn key_secret(
    name: &str,
    namespace: &str,
    key: &PrivateKey,
    cert_pem: &str,
) -> Result<Zeroizing<String>, ManifestError> {
    let key_pem = key.to_pkcs1_pem()?;
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": { "sealedsecrets.bitnami.com/sealed-secrets-key": "active" },
        },
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": B64.encode(cert_pem.as_bytes()),
            "tls.key": B64.encode(key_pem.as_bytes()),
        },
    });
    let text = Zeroizing::new(to_yaml(&doc));
    // Wipe the base64 copy of the key held by the JSON value.
    let mut doc = doc;
    if let Some(Value::String(s)) = doc.pointer_mut("/data/tls.key") {
        zeroize::Zeroize::zeroize(s);
    }
    Ok(text)
}
