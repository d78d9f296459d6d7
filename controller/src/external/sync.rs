//! The pure part of an ExternalSecret sync: which keys to fetch, and how fetched values become
//! the target Secret's data (`property`, `decodingStrategy`, `extract`, `find`, `rewrite`,
//! `template`, `templateFrom`). No I/O; errors name the entry and key, never a value.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use sealkit_api::{ExternalSecretSpec, RemoteRef, Rewrite};
use sealkit_keys::gotemplate;
use sealkit_keys::secret::Zeroizing;

use super::provider::{FetchError, FindQuery, RemoteKey, SecretValue};

/// Secret data under construction.
pub type Data = BTreeMap<String, Zeroizing<Vec<u8>>>;

type Pairs = Vec<(String, Zeroizing<Vec<u8>>)>;

/// Why a sync cannot produce data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncError {
    /// Message naming the entry and key.
    pub message: String,
    /// Some remote key does not exist (the `deletionPolicy` applies).
    pub not_found: bool,
}

impl SyncError {
    fn new(message: impl Into<String>) -> Self {
        SyncError {
            message: message.into(),
            not_found: false,
        }
    }
}

/// A [`SyncError`] that is not a missing key.
pub fn err(message: impl Into<String>) -> SyncError {
    SyncError::new(message)
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn remote_key(r: &RemoteRef, prefix: &str) -> RemoteKey {
    RemoteKey {
        key: format!("{prefix}{}", r.key),
        version: r.version.clone().filter(|v| !v.is_empty()),
    }
}

/// The explicit keys an ExternalSecret needs (`data[]` and `dataFrom[].extract`).
pub fn needed_keys(spec: &ExternalSecretSpec, prefix: &str) -> Vec<RemoteKey> {
    let mut keys: Vec<RemoteKey> = spec
        .data
        .iter()
        .flatten()
        .map(|d| remote_key(&d.remote_ref, prefix))
        .chain(
            spec.data_from
                .iter()
                .flatten()
                .filter_map(|f| f.extract.as_ref())
                .map(|r| remote_key(r, prefix)),
        )
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The `find` queries, by `dataFrom` index.
pub fn find_queries(spec: &ExternalSecretSpec, prefix: &str) -> Vec<(usize, FindQuery)> {
    spec.data_from
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, f)| {
            let find = f.find.as_ref()?;
            Some((
                i,
                FindQuery {
                    path: find.path.as_ref().map(|p| format!("{prefix}{p}")),
                    name_regexp: find.name.as_ref().map(|n| n.regexp.clone()),
                    tags: find.tags.clone().unwrap_or_default(),
                },
            ))
        })
        .collect()
}

/// A gjson-style dotted path into a JSON value (`a.b.c`; `\.` escapes a dot).
fn property_of(raw: &[u8], property: &str, what: &str) -> Result<Zeroizing<Vec<u8>>, SyncError> {
    let value: serde_json::Value = serde_json::from_slice(raw).map_err(|e| {
        SyncError::new(format!(
            "{what}: property {property:?} was requested but the value is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = property.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            '.' => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    let mut v = &value;
    for p in &parts {
        v = match v {
            serde_json::Value::Object(m) => m.get(p),
            serde_json::Value::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        }
        .ok_or_else(|| SyncError::new(format!("{what}: property {property:?} does not exist")))?;
    }
    Ok(json_bytes(v))
}

fn json_bytes(v: &serde_json::Value) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(match v {
        serde_json::Value::String(s) => s.as_bytes().to_vec(),
        other => other.to_string().into_bytes(),
    })
}

fn decode(
    v: Zeroizing<Vec<u8>>,
    strategy: Option<&str>,
    what: &str,
) -> Result<Zeroizing<Vec<u8>>, SyncError> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
    let bad = |kind: &str| {
        SyncError::new(format!(
            "{what}: decodingStrategy {kind}: the value is not valid {kind}"
        ))
    };
    match strategy.unwrap_or("None") {
        "None" | "" => Ok(v),
        "Base64" => STANDARD
            .decode(v.trim_ascii())
            .map(Zeroizing::new)
            .map_err(|_| bad("Base64")),
        "Base64URL" => URL_SAFE
            .decode(v.trim_ascii())
            .or_else(|_| URL_SAFE_NO_PAD.decode(v.trim_ascii()))
            .map(Zeroizing::new)
            .map_err(|_| bad("Base64URL")),
        "Auto" => Ok(STANDARD
            .decode(v.trim_ascii())
            .or_else(|_| URL_SAFE.decode(v.trim_ascii()))
            .map(Zeroizing::new)
            .unwrap_or(v)),
        other => Err(SyncError::new(format!(
            "{what}: decodingStrategy {other:?} is not one of None, Base64, Base64URL, Auto"
        ))),
    }
}

/// Replaces characters a Secret key may not contain by `_` (ESO's `Default` conversion).
pub fn safe_key(k: &str) -> String {
    k.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn rewrite(key: &str, rules: &[Rewrite], what: &str) -> Result<String, SyncError> {
    let mut k = key.to_string();
    for (i, r) in rules.iter().enumerate() {
        if let Some(re) = &r.regexp {
            let rx = regex::Regex::new(&re.source).map_err(|e| {
                SyncError::new(format!(
                    "{what}.rewrite[{i}].regexp.source is not valid: {e}"
                ))
            })?;
            k = rx.replace_all(&k, re.target.as_str()).into_owned();
        }
        if let Some(t) = &r.transform {
            let mut data = Data::new();
            data.insert("value".into(), Zeroizing::new(k.as_bytes().to_vec()));
            let out = gotemplate::render(&t.template, &data).map_err(|e| {
                SyncError::new(format!("{what}.rewrite[{i}].transform.template: {e}"))
            })?;
            k = String::from_utf8_lossy(&out).into_owned();
        }
    }
    Ok(k)
}

fn explode(raw: &[u8], what: &str) -> Result<Pairs, SyncError> {
    let v: serde_json::Value = serde_json::from_slice(raw).map_err(|e| {
        SyncError::new(format!(
            "{what}: extract needs a JSON object, the value is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    match v {
        serde_json::Value::Object(m) => {
            Ok(m.iter().map(|(k, v)| (k.clone(), json_bytes(v))).collect())
        }
        _ => Err(SyncError::new(format!(
            "{what}: extract needs a JSON object"
        ))),
    }
}

fn lookup<'a>(
    values: &'a HashMap<RemoteKey, Result<SecretValue, FetchError>>,
    k: &RemoteKey,
    what: &str,
) -> Result<&'a SecretValue, SyncError> {
    match values.get(k) {
        Some(Ok(v)) => Ok(v),
        Some(Err(FetchError::NotFound(_))) => Err(SyncError {
            message: format!("{what}: remote key {k} was not found"),
            not_found: true,
        }),
        Some(Err(e)) => Err(SyncError::new(format!("{what}: {e}"))),
        None => Err(SyncError::new(format!(
            "{what}: remote key {k} was not fetched"
        ))),
    }
}

/// Builds the fetched data (before templating). With `drop_missing` (deletionPolicy `Merge`),
/// entries whose remote key is gone are left out instead of failing.
pub fn build(
    spec: &ExternalSecretSpec,
    prefix: &str,
    values: &HashMap<RemoteKey, Result<SecretValue, FetchError>>,
    found: &HashMap<usize, Vec<(String, SecretValue)>>,
    drop_missing: bool,
) -> Result<Data, SyncError> {
    let mut data = Data::new();
    for (i, d) in spec.data.iter().flatten().enumerate() {
        let what = format!("data[{i}] (secretKey {:?})", d.secret_key);
        if d.secret_key.is_empty() {
            return Err(SyncError::new(format!("data[{i}].secretKey is empty")));
        }
        let k = remote_key(&d.remote_ref, prefix);
        let v = match lookup(values, &k, &what) {
            Err(e) if e.not_found && drop_missing => continue,
            other => other?,
        };
        let mut bytes = Zeroizing::new(v.bytes().to_vec());
        if let Some(p) = d.remote_ref.property.as_deref().filter(|p| !p.is_empty()) {
            bytes = property_of(&bytes, p, &what)?;
        }
        let bytes = decode(bytes, d.remote_ref.decoding_strategy.as_deref(), &what)?;
        data.insert(d.secret_key.clone(), bytes);
    }
    for (i, f) in spec.data_from.iter().flatten().enumerate() {
        let what = format!("dataFrom[{i}]");
        if f.source_ref.is_some() {
            return Err(SyncError::new(format!(
                "{what}.sourceRef (generators, per-entry stores) is not supported"
            )));
        }
        let rules = f.rewrite.as_deref().unwrap_or_default();
        let mut pairs: Pairs = Vec::new();
        if let Some(r) = &f.extract {
            let k = remote_key(r, prefix);
            let v = match lookup(values, &k, &what) {
                Err(e) if e.not_found && drop_missing => continue,
                other => other?,
            };
            let mut raw = Zeroizing::new(v.bytes().to_vec());
            if let Some(p) = r.property.as_deref().filter(|p| !p.is_empty()) {
                raw = property_of(&raw, p, &what)?;
            }
            for (k, v) in explode(&raw, &what)? {
                pairs.push((k, decode(v, r.decoding_strategy.as_deref(), &what)?));
            }
        } else if let Some(find) = &f.find {
            for (name, v) in found.get(&i).into_iter().flatten() {
                let v = decode(
                    Zeroizing::new(v.bytes().to_vec()),
                    find.decoding_strategy.as_deref(),
                    &what,
                )?;
                pairs.push((safe_key(name), v));
            }
        } else {
            return Err(SyncError::new(format!("{what}: needs extract or find")));
        }
        for (k, v) in pairs {
            let k = rewrite(&k, rules, &what)?;
            if k.is_empty() {
                return Err(SyncError::new(format!(
                    "{what}: a rewrite produced an empty key"
                )));
            }
            data.insert(k, v);
        }
    }
    Ok(data)
}

/// What a template produces: data, and the Secret's labels and annotations
/// (`template.metadata`, then `templateFrom` entries targeting them).
#[derive(Debug, Default)]
pub struct Rendered {
    /// Secret data.
    pub data: Data,
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
    /// Extra annotations.
    pub annotations: BTreeMap<String, String>,
}

/// A template source: `(target, key or None for a literal, text, keys-and-values)`.
pub struct TemplateSource {
    /// `Data`, `Labels` or `Annotations`.
    pub target: String,
    /// Where it came from (for messages), e.g. `templateFrom[0].configMap tpl/key`.
    pub origin: String,
    /// The Secret key for `Values` templates.
    pub key: Option<String>,
    /// The template text.
    pub text: String,
}

/// Applies `target.template` (+ resolved `templateFrom` sources) to the fetched data.
pub fn render(
    spec: &ExternalSecretSpec,
    fetched: Data,
    sources: &[TemplateSource],
) -> Result<Rendered, SyncError> {
    let Some(t) = spec.target.as_ref().and_then(|t| t.template.as_ref()) else {
        return Ok(Rendered {
            data: fetched,
            ..Default::default()
        });
    };
    if let Some(v) = t.engine_version.as_deref()
        && v != "v2"
    {
        return Err(SyncError::new(format!(
            "target.template.engineVersion {v:?} is not supported (only v2)"
        )));
    }
    let templated = t.data.as_ref().is_some_and(|d| !d.is_empty()) || !sources.is_empty();
    let meta = t.metadata.clone().unwrap_or_default();
    let mut out = Rendered {
        labels: meta.labels.unwrap_or_default(),
        annotations: meta.annotations.unwrap_or_default(),
        ..Default::default()
    };
    match t.merge_policy.as_deref().unwrap_or("Replace") {
        "Replace" if templated => {}
        "Replace" | "Merge" => out.data = fetched.clone(),
        other => {
            return Err(SyncError::new(format!(
                "target.template.mergePolicy {other:?} is not Replace or Merge"
            )));
        }
    }
    for (k, text) in t.data.iter().flatten() {
        let v = gotemplate::render(text, &fetched)
            .map_err(|e| SyncError::new(format!("target.template.data.{k}: {e}")))?;
        out.data.insert(k.clone(), v);
    }
    for s in sources {
        let rendered = gotemplate::render(&s.text, &fetched)
            .map_err(|e| SyncError::new(format!("{}: {e}", s.origin)))?;
        let pairs: Pairs = match &s.key {
            Some(k) => vec![(k.clone(), rendered)],
            None => {
                let text = std::str::from_utf8(&rendered).map_err(|_| {
                    SyncError::new(format!("{}: the rendered text is not UTF-8", s.origin))
                })?;
                let map: BTreeMap<String, serde_json::Value> = serde_saphyr::from_str(text)
                    .map_err(|_| {
                        SyncError::new(format!(
                            "{}: KeysAndValues must render a YAML map of keys to values",
                            s.origin
                        ))
                    })?;
                map.into_iter().map(|(k, v)| (k, json_bytes(&v))).collect()
            }
        };
        for (k, v) in pairs {
            match s.target.as_str() {
                "Data" | "" => {
                    out.data.insert(k, v);
                }
                "Labels" | "Annotations" => {
                    let text = String::from_utf8(v.to_vec()).map_err(|_| {
                        SyncError::new(format!("{}: {k} is not UTF-8 text", s.origin))
                    })?;
                    if s.target == "Labels" {
                        out.labels.insert(k, text);
                    } else {
                        out.annotations.insert(k, text);
                    }
                }
                other => {
                    return Err(SyncError::new(format!(
                        "{}: target {other:?} is not Data, Labels or Annotations",
                        s.origin
                    )));
                }
            }
        }
    }
    Ok(out)
}

/// A stable hash of Secret data for the data-hash annotation. It sits on the Secret itself, so
/// it tells a reader nothing the Secret's data does not.
pub fn data_hash(data: &BTreeMap<String, k8s_openapi::ByteString>) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for (k, v) in data {
        ctx.update(&(k.len() as u64).to_le_bytes());
        ctx.update(k.as_bytes());
        ctx.update(&(v.0.len() as u64).to_le_bytes());
        ctx.update(&v.0);
    }
    ctx.finish()
        .as_ref()
        .iter()
        .take(28)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests;
