//! The pure half of an ExternalSecret sync: a document → ExternalSecret → the refresh decision,
//! the keys to fetch and the find queries, then `build` and `render` over a fixed provider
//! value map (and fixed ConfigMap/Secret template sources), then the data hash.
//!
//! Input: YAML or JSON; a second document, when present, gives the store prefix as its
//! `prefix` field.
//!
//! Invariants: no panic; no error carries a provider value (they all hold the marker); the
//! needed keys are sorted, unique and under the store prefix; find queries point at `dataFrom`
//! entries that have `find`; a key in `data[]` that builds is in the built data.
#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use k8s_openapi::ByteString;
use libfuzzer_sys::fuzz_target;
use sealkit_api::ExternalSecret;
use sealkit_controller::external::policy::due;
use sealkit_controller::external::provider::{FetchError, RemoteKey, SecretValue};
use sealkit_controller::external::sync::{
    TemplateSource, build, data_hash, find_queries, needed_keys, render,
};
use sealkit_controller_fuzz::{MARKER, assert_no_marker, documents};

/// What the fixed provider holds for a key (without the store prefix).
fn provider_value(key: &str) -> Result<SecretValue, FetchError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let text = match key {
        "missing" | "gone" => return Err(FetchError::NotFound(key.to_string())),
        "denied" => return Err(FetchError::AccessDenied(key.to_string())),
        "throttled" => return Err(FetchError::Throttled(key.to_string())),
        "db/creds" => format!(
            r#"{{"user":"admin","password":"pw-{MARKER}","port":5432,"nested":{{"k":"v-{MARKER}","a.b":"dot-{MARKER}"}},"list":["x-{MARKER}",2]}}"#
        ),
        "api/token" => format!("tok-{MARKER}"),
        "b64" => b64.encode(format!("b64-{MARKER}")),
        "b64url" => url.encode(format!("url-{MARKER}?>")),
        "b64json" => b64.encode(format!(r#"{{"k":"{MARKER}"}}"#)),
        "binary" => return Ok(SecretValue::new(vec![0xff, 0xfe, 0x00, b'M'])),
        // Anything else: a JSON object (so `extract` and `property` have something to read).
        other => format!(r#"{{"key":{other:?},"value":"v-{MARKER}","n":1}}"#),
    };
    Ok(SecretValue::new(text.into_bytes()))
}

/// What the fixed ConfigMaps and Secrets hold for `templateFrom` items.
fn template_item(key: &str) -> Option<String> {
    Some(
        match key {
            "tpl" => "{{ .password }}",
            "kv" => "user: {{ .user }}\npassword: '{{ .password }}'\n",
            "json" => "{{ .json | toJson }}",
            "bad" => "{{ .user | nosuchfunction }}",
            _ => return None,
        }
        .to_string(),
    )
}

fuzz_target!(|data: &[u8]| {
    let docs = documents(data, 2);
    let Some(first) = docs.first() else {
        return;
    };
    let Ok(es) = serde_json::from_value::<ExternalSecret>(first.clone()) else {
        return;
    };
    let prefix = docs
        .get(1)
        .and_then(|d| d.get("prefix"))
        .and_then(|p| p.as_str())
        .unwrap_or("")
        .to_string();

    // The refresh decision (durations, policies), at a fixed "now".
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    if let Err(e) = due(&es, None, now) {
        assert_no_marker(&e.message, data, "due");
    }

    let keys = needed_keys(&es.spec, &prefix);
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
    assert!(keys.iter().all(|k| k.key.starts_with(&prefix)));
    let queries = find_queries(&es.spec, &prefix);
    let data_from = es.spec.data_from.as_deref().unwrap_or_default();
    for (i, q) in &queries {
        assert!(data_from[*i].find.is_some());
        if let Some(p) = &q.path {
            assert!(p.starts_with(&prefix));
        }
    }

    let values: HashMap<RemoteKey, Result<SecretValue, FetchError>> = keys
        .iter()
        .map(|k| {
            let bare = k.key.strip_prefix(&prefix).unwrap_or(&k.key);
            (k.clone(), provider_value(bare))
        })
        .collect();
    let found: HashMap<usize, Vec<(String, SecretValue)>> = queries
        .iter()
        .map(|(i, _)| {
            let hits = ["db/creds", "api/token", "b64", "weird name!"]
                .iter()
                .filter_map(|n| Some((n.to_string(), provider_value(n).ok()?)))
                .collect();
            (*i, hits)
        })
        .collect();
    let merge = es
        .spec
        .target
        .as_ref()
        .and_then(|t| t.deletion_policy.as_deref())
        == Some("Merge");
    let built = match build(&es.spec, &prefix, &values, &found, merge) {
        Ok(d) => d,
        Err(e) => {
            assert_no_marker(&e.message, data, "build");
            return;
        }
    };
    for d in es.spec.data.iter().flatten() {
        let bare = d.remote_ref.key.as_str();
        if provider_value(bare).is_ok() {
            assert!(
                built.contains_key(&d.secret_key),
                "a fetched data[] key is built"
            );
        }
    }

    let sources = template_sources(&es);
    match render(&es.spec, built, &sources) {
        Ok(rendered) => {
            let bytes: BTreeMap<String, ByteString> = rendered
                .data
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.to_vec())))
                .collect();
            let _ = data_hash(&bytes);
        }
        Err(e) => assert_no_marker(&e.message, data, "render"),
    }
});

/// `templateFrom` as the reconciler resolves it, over the fixed ConfigMaps and Secrets (an
/// item they do not hold is left out here; the reconciler reports it before rendering).
fn template_sources(es: &ExternalSecret) -> Vec<TemplateSource> {
    let mut out = Vec::new();
    let Some(t) = es.spec.target.as_ref().and_then(|t| t.template.as_ref()) else {
        return out;
    };
    for (i, tf) in t.template_from.iter().flatten().enumerate() {
        let target = tf.target.clone().unwrap_or_else(|| "Data".into());
        if let Some(lit) = &tf.literal {
            out.push(TemplateSource {
                target: target.clone(),
                origin: format!("templateFrom[{i}].literal"),
                key: None,
                text: lit.clone(),
            });
        }
        for r in [&tf.config_map, &tf.secret].into_iter().flatten() {
            for item in &r.items {
                let Some(text) = template_item(&item.key) else {
                    continue;
                };
                let kv = match item.template_as.as_deref().unwrap_or("Values") {
                    "Values" => false,
                    "KeysAndValues" => true,
                    _ => continue,
                };
                out.push(TemplateSource {
                    target: target.clone(),
                    origin: format!("templateFrom[{i}] {}/{}", r.name, item.key),
                    key: (!kv).then(|| item.key.clone()),
                    text,
                });
            }
        }
    }
    out
}
