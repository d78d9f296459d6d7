//! Masking values for display (`sealkit build`, `sealkit diff`): every value of a v1 Secret's
//! `data` and `stringData`, and every value that came out of a SOPS decryption wherever it is
//! (a ConfigMap, a custom resource, a label), becomes `<masked: N bytes>`, or with a key
//! `<masked: N bytes, hmac:…>`, a keyed hash that shows a changed value as changed without
//! revealing it (and without enabling a dictionary attack by anyone who lacks the key).

use base64::Engine as _;
use serde_json::Value;

fn label(bytes: &[u8], key: Option<&aws_lc_rs::hmac::Key>) -> Value {
    Value::String(match key {
        None => format!("<masked: {} bytes>", bytes.len()),
        Some(k) => {
            let tag = aws_lc_rs::hmac::sign(k, bytes);
            let hex: String = tag.as_ref()[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("<masked: {} bytes, hmac:{hex}>", bytes.len())
        }
    })
}

fn is_v1_secret(obj: &Value) -> bool {
    obj["kind"] == "Secret" && obj["apiVersion"] == "v1"
}

/// Replaces the values of a v1 Secret's `data` and `stringData` in place. Other kinds are left
/// alone (a SealedSecret only holds ciphertext).
pub fn mask_secret(obj: &mut Value, hmac_key: Option<&[u8]>) {
    if !is_v1_secret(obj) {
        return;
    }
    let key = hmac_key.map(|k| aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, k));
    if let Some(data) = obj.get_mut("data").and_then(Value::as_object_mut) {
        for v in data.values_mut() {
            let raw = v
                .as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .unwrap_or_default();
            *v = label(&raw, key.as_ref());
        }
    }
    if let Some(data) = obj.get_mut("stringData").and_then(Value::as_object_mut) {
        for v in data.values_mut() {
            let raw = v.as_str().unwrap_or_default().as_bytes().to_vec();
            *v = label(&raw, key.as_ref());
        }
    }
}

/// [`mask_secret`], and every value at `decrypted` (JSON pointers of the leaves a SOPS
/// decryption produced, [`Object::decrypted_paths`](crate::Object::decrypted_paths)); a
/// pointer the object does not have is skipped, so the same pointers mask a live object.
pub fn mask_object(obj: &mut Value, decrypted: &[String], hmac_key: Option<&[u8]>) {
    let secret = is_v1_secret(obj);
    mask_secret(obj, hmac_key);
    let key = hmac_key.map(|k| aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, k));
    for p in decrypted {
        // Already masked (by decoded length) above.
        if secret && (p.starts_with("/data/") || p.starts_with("/stringData/")) {
            continue;
        }
        if let Some(v) = obj.pointer_mut(p) {
            let raw = match &*v {
                Value::String(s) => s.as_bytes().to_vec(),
                other => other.to_string().into_bytes(),
            };
            *v = label(&raw, key.as_ref());
        }
    }
}
