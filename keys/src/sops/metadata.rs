//! The `sops` metadata block. Read from every historic layout (≤3.9 struct order with empty
//! lists, 3.10–3.12, ≥3.13 sorted keys) — all of which are the same fields in another order —
//! and written in the ≥3.13 layout (sorted keys, empty lists omitted).

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::SopsError;
use super::walk::Rule;

/// An age recipient entry: the recipient and the armored age file wrapping the data key.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct AgeEntry {
    /// `age1…` or an SSH public key.
    pub recipient: String,
    /// Armored age file holding the 32-byte data key (or a Shamir share).
    pub enc: String,
}

/// A key group: the master keys that each wrap the same share.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeyGroup {
    /// age entries.
    #[serde(default)]
    pub age: Vec<AgeEntry>,
    /// Key types we cannot use, kept to name them in errors.
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

/// On-disk metadata, as stored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// age recipients (one key group).
    #[serde(default)]
    pub age: Vec<AgeEntry>,
    /// Several key groups (Shamir).
    #[serde(default)]
    pub key_groups: Vec<KeyGroup>,
    /// Shares needed to recover the data key.
    #[serde(default)]
    pub shamir_threshold: Option<usize>,
    /// When the file was last written (the MAC's AAD).
    #[serde(default)]
    pub lastmodified: String,
    /// The encrypted MAC (absent in very old files).
    #[serde(default)]
    pub mac: Option<String>,
    /// The sops version that wrote the file.
    #[serde(default)]
    pub version: Option<String>,
    /// Rule: leave keys with this suffix clear.
    #[serde(default)]
    pub unencrypted_suffix: Option<String>,
    /// Rule: encrypt only keys with this suffix.
    #[serde(default)]
    pub encrypted_suffix: Option<String>,
    /// Rule: leave keys matching this regex clear.
    #[serde(default)]
    pub unencrypted_regex: Option<String>,
    /// Rule: encrypt only keys matching this regex.
    #[serde(default)]
    pub encrypted_regex: Option<String>,
    /// Rule by comment (not supported yet).
    #[serde(default)]
    pub unencrypted_comment_regex: Option<String>,
    /// Rule by comment (not supported yet).
    #[serde(default)]
    pub encrypted_comment_regex: Option<String>,
    /// The MAC covers only encrypted values.
    #[serde(default)]
    pub mac_only_encrypted: Option<bool>,
    /// PGP keys (not supported).
    #[serde(default)]
    pub pgp: Option<Value>,
    /// AWS KMS keys (not supported).
    #[serde(default)]
    pub kms: Option<Value>,
    /// GCP KMS keys (not supported).
    #[serde(default)]
    pub gcp_kms: Option<Value>,
    /// Azure Key Vault keys (not supported).
    #[serde(default)]
    pub azure_kv: Option<Value>,
    /// HashiCorp Vault keys (not supported).
    #[serde(default)]
    pub hc_vault: Option<Value>,
    /// Huawei Cloud KMS keys (not supported).
    #[serde(default)]
    pub hckms: Option<Value>,
}

fn non_empty(v: &Option<Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    }
}

impl Metadata {
    /// Reads the metadata value of a file.
    pub fn from_value(v: &Value) -> Result<Metadata, SopsError> {
        serde_json::from_value(v.clone()).map_err(|e| SopsError::Metadata(e.to_string()))
    }

    /// The encryption rule the file declares.
    pub fn rule(&self) -> Result<Rule, SopsError> {
        let re = |s: &str| {
            Regex::new(s).map_err(|e| SopsError::Metadata(format!("invalid regex '{s}': {e}")))
        };
        let rules: Vec<Rule> = [
            self.unencrypted_suffix
                .as_deref()
                .map(|s| Ok(Rule::UnencryptedSuffix(s.into()))),
            self.encrypted_suffix
                .as_deref()
                .map(|s| Ok(Rule::EncryptedSuffix(s.into()))),
            self.unencrypted_regex
                .as_deref()
                .map(|s| re(s).map(Rule::UnencryptedRegex)),
            self.encrypted_regex
                .as_deref()
                .map(|s| re(s).map(Rule::EncryptedRegex)),
            self.unencrypted_comment_regex
                .as_deref()
                .map(|s| re(s).map(Rule::UnencryptedCommentRegex)),
            self.encrypted_comment_regex
                .as_deref()
                .map(|s| re(s).map(Rule::EncryptedCommentRegex)),
        ]
        .into_iter()
        .flatten()
        .collect::<Result<_, _>>()?;
        match rules.len() {
            0 => Ok(Rule::default()),
            1 => Ok(rules.into_iter().next().unwrap_or_default()),
            _ => Err(SopsError::Metadata(
                "more than one encryption rule (suffix, regex or comment regex) is set".into(),
            )),
        }
    }

    /// Key groups: `key_groups` if present, else one group of the top-level keys.
    pub fn groups(&self) -> Vec<KeyGroup> {
        if !self.key_groups.is_empty() {
            return self.key_groups.clone();
        }
        let mut other = serde_json::Map::new();
        for (name, v) in [
            ("pgp", &self.pgp),
            ("kms", &self.kms),
            ("gcp_kms", &self.gcp_kms),
            ("azure_kv", &self.azure_kv),
            ("hc_vault", &self.hc_vault),
            ("hckms", &self.hckms),
        ] {
            if non_empty(v) {
                other.insert(name.into(), v.clone().unwrap_or(Value::Null));
            }
        }
        vec![KeyGroup {
            age: self.age.clone(),
            other,
        }]
    }

    /// Every age recipient of the file.
    pub fn age_recipients(&self) -> Vec<String> {
        self.groups()
            .iter()
            .flat_map(|g| g.age.iter().map(|a| a.recipient.clone()))
            .collect()
    }

    /// Key types other than age that the file uses.
    pub fn other_key_types(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .groups()
            .iter()
            .flat_map(|g| {
                g.other
                    .iter()
                    .filter(|(_, v)| {
                        !matches!(v, Value::Null) && v.as_array().is_none_or(|a| !a.is_empty())
                    })
                    .map(|(k, _)| k.clone())
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Rebuilds metadata from the flat `key__list_0__map_field` pairs dotenv and INI files use.
/// Values are strings with `\n` escapes; `mac_only_encrypted` and `shamir_threshold` are typed.
pub fn unflatten(pairs: &[(String, String)]) -> Result<Value, SopsError> {
    enum Seg {
        Key(String),
        Index(usize),
    }
    fn insert(slot: &mut Value, segs: &[Seg], leaf: Value) -> Result<(), SopsError> {
        let Some((first, rest)) = segs.split_first() else {
            *slot = leaf;
            return Ok(());
        };
        match first {
            Seg::Key(k) => {
                if !slot.is_object() {
                    *slot = Value::Object(serde_json::Map::new());
                }
                let child = slot
                    .as_object_mut()
                    .map(|m| m.entry(k.clone()).or_insert(Value::Null))
                    .ok_or_else(|| SopsError::Metadata("bad flattened key".into()))?;
                insert(child, rest, leaf)
            }
            Seg::Index(i) => {
                if !slot.is_array() {
                    *slot = Value::Array(Vec::new());
                }
                let arr = slot
                    .as_array_mut()
                    .ok_or_else(|| SopsError::Metadata("bad flattened key".into()))?;
                while arr.len() <= *i {
                    arr.push(Value::Null);
                }
                insert(&mut arr[*i], rest, leaf)
            }
        }
    }
    let mut root = Value::Object(serde_json::Map::new());
    for (key, value) in pairs {
        let mut parts = key.split("__");
        let top = parts.next().unwrap_or_default();
        let mut segs = vec![Seg::Key(top.to_string())];
        for p in parts {
            // Each segment is a level of nesting, built (and later dropped and read) by
            // recursion: bounded like any other document.
            if segs.len() >= super::MAX_DEPTH {
                return Err(super::depth::too_deep());
            }
            if let Some(n) = p.strip_prefix("list_") {
                // sops numbers list items from 0 without gaps, so an index is below the number
                // of keys; a larger one would only allocate a list of nulls.
                let i: usize = n.parse().ok().filter(|&i| i < pairs.len()).ok_or_else(|| {
                    SopsError::Metadata("a flattened key has a bad list index".into())
                })?;
                segs.push(Seg::Index(i));
            } else if let Some(k) = p.strip_prefix("map_") {
                segs.push(Seg::Key(k.to_string()));
            } else {
                return Err(SopsError::Metadata(format!(
                    "cannot read flattened metadata key '{key}'"
                )));
            }
        }
        let text = value.replace("\\n", "\n");
        let leaf = match top {
            "mac_only_encrypted" => Value::Bool(text == "true"),
            "shamir_threshold" => Value::from(
                text.parse::<u64>()
                    .map_err(|_| SopsError::Metadata("shamir_threshold is not a number".into()))?,
            ),
            _ => Value::String(text),
        };
        insert(&mut root, &segs, leaf)?;
    }
    Ok(root)
}

/// Flattens metadata into `key__list_0__map_field` pairs (newlines escaped as `\n`).
pub fn flatten(v: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}__map_{k}")
                    };
                    walk(v, &p, out);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, &format!("{prefix}__list_{i}"), out);
                }
            }
            Value::String(s) => out.push((prefix.to_string(), s.replace('\n', "\\n"))),
            Value::Null => {}
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    walk(v, "", &mut out);
    out
}
