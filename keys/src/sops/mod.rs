//! SOPS-compatible file encryption with age.
//!
//! `cipher` is the value envelope, `walk` the one walk that encrypts/decrypts leaves and
//! computes the MAC, `metadata` the `sops` block, `keysource` age wrapping, `shamir` key
//! groups; the stores (`yaml`, `json`, `dotenv`, `ini`, binary) only load leaves and emit text.
//! Formats follow sops 3.x exactly (see `docs/formats.md`).

pub mod cipher;
mod dotenv;
mod ini;
mod json;
pub mod keysource;
pub mod metadata;
mod shamir;
pub mod walk;
mod yaml;

use serde_json::Value;
use zeroize::Zeroizing;

pub use cipher::DataKey;
pub use keysource::AgeIdentities;
pub use metadata::Metadata;
use walk::{Leaf, Plain, decrypt_leaves, encrypt_leaves};

/// The sops format version we write (the layout we follow).
pub const WRITE_VERSION: &str = "3.13.2";

/// What went wrong with a SOPS file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SopsError {
    /// The file does not parse in its format.
    #[error("{0}")]
    Format(String),
    /// The `sops` block is missing or malformed.
    #[error("sops metadata: {0}")]
    Metadata(String),
    /// The file has no `sops` block.
    #[error("the file is not encrypted with sops (no 'sops' metadata found)")]
    NotSopsFile,
    /// The file already has a `sops` block.
    #[error("the file is already encrypted (it has 'sops' metadata)")]
    AlreadyEncrypted,
    /// An `ENC[…]` value is malformed.
    #[error("malformed encrypted value: {0}")]
    MalformedValue(String),
    /// AES-GCM authentication failed.
    #[error(
        "authentication failed: the value was altered, moved to another key, or the data key is wrong"
    )]
    Authentication,
    /// A value the rules say is encrypted is clear.
    #[error("value at {path} should be encrypted but is in clear text")]
    NotEncrypted {
        /// Dotted path.
        path: String,
    },
    /// A problem at a specific path.
    #[error("{path}: {source}")]
    At {
        /// Dotted path of the leaf.
        path: String,
        /// What went wrong.
        source: Box<SopsError>,
    },
    /// The MAC does not match.
    #[error(
        "MAC mismatch: the file was changed outside sops (values were edited, added, removed or reordered), or it is corrupted"
    )]
    MacMismatch,
    /// No MAC and no `--ignore-mac`.
    #[error("the file has no MAC; pass --ignore-mac to decrypt it anyway")]
    NoMac,
    /// None of the identities opens the data key.
    #[error("no identity could decrypt the data key")]
    NoIdentity,
    /// An identity or recipient could not be used.
    #[error("{0}")]
    Identity(String),
    /// A feature or key type we do not support.
    #[error("{0} not supported")]
    Unsupported(String),
    /// A data key of the wrong length.
    #[error("the data key must be 32 bytes, found {0}")]
    DataKeyLength(usize),
    /// The RNG failed.
    #[error("the random number generator failed")]
    Random,
}

impl SopsError {
    pub(crate) fn at(leaf: &Leaf, e: SopsError) -> SopsError {
        SopsError::At {
            path: leaf.dotted(),
            source: Box::new(e),
        }
    }
}

/// File formats sops knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// YAML (`.yaml`, `.yml`).
    Yaml,
    /// JSON (`.json`).
    Json,
    /// dotenv (`.env`).
    Dotenv,
    /// INI (`.ini`).
    Ini,
    /// Anything else: the whole file as one value.
    Binary,
}

impl FileFormat {
    /// The format sops infers from a file name.
    pub fn from_path(path: &str) -> FileFormat {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            FileFormat::Yaml
        } else if lower.ends_with(".json") {
            FileFormat::Json
        } else if lower.ends_with(".env") {
            FileFormat::Dotenv
        } else if lower.ends_with(".ini") {
            FileFormat::Ini
        } else {
            FileFormat::Binary
        }
    }

    /// Parses `--input-type` / `--output-type` names.
    pub fn from_name(name: &str) -> Option<FileFormat> {
        Some(match name {
            "yaml" => FileFormat::Yaml,
            "json" => FileFormat::Json,
            "dotenv" => FileFormat::Dotenv,
            "ini" => FileFormat::Ini,
            "binary" => FileFormat::Binary,
            _ => return None,
        })
    }
}

enum Store {
    Yaml(yaml::YamlDoc),
    Json(json::JsonDoc),
    Binary(json::JsonDoc),
    Dotenv(dotenv::DotenvDoc),
    Ini(ini::IniDoc),
}

/// A SOPS file loaded for decryption.
pub struct EncryptedFile {
    store: Store,
    /// Its metadata.
    pub metadata: Metadata,
}

impl EncryptedFile {
    /// Loads an encrypted file.
    pub fn load(text: &str, format: FileFormat) -> Result<Self, SopsError> {
        let (store, raw) = match format {
            FileFormat::Yaml => {
                let d = yaml::YamlDoc::load(text)?;
                let m = d.metadata.clone();
                (Store::Yaml(d), m)
            }
            FileFormat::Json | FileFormat::Binary => {
                let d = json::JsonDoc::load(text)?;
                let m = d.metadata.clone();
                if format == FileFormat::Binary {
                    (Store::Binary(d), m)
                } else {
                    (Store::Json(d), m)
                }
            }
            FileFormat::Dotenv => {
                let d = dotenv::DotenvDoc::load(text)?;
                let m = d.metadata.clone();
                (Store::Dotenv(d), m)
            }
            FileFormat::Ini => {
                let d = ini::IniDoc::load(text)?;
                let m = d.metadata.clone();
                (Store::Ini(d), m)
            }
        };
        let raw = raw.ok_or(SopsError::NotSopsFile)?;
        let metadata = Metadata::from_value(&raw)?;
        Ok(EncryptedFile { store, metadata })
    }

    fn leaves(&self) -> &[Leaf] {
        match &self.store {
            Store::Yaml(d) => &d.leaves,
            Store::Json(d) | Store::Binary(d) => &d.leaves,
            Store::Dotenv(d) => &d.leaves,
            Store::Ini(d) => &d.leaves,
        }
    }

    /// Recovers the data key with age identities.
    pub fn data_key(&self, ids: &AgeIdentities) -> Result<DataKey, SopsError> {
        keysource::unwrap_data_key(&self.metadata, ids)
    }

    /// Decrypts with a known data key, verifying the MAC unless `ignore_mac`. Returns the
    /// plaintext file in the same format.
    pub fn decrypt_with_key(
        &self,
        key: &DataKey,
        ignore_mac: bool,
    ) -> Result<Zeroizing<Vec<u8>>, SopsError> {
        let rule = self.metadata.rule()?;
        let mac_only = self.metadata.mac_only_encrypted.unwrap_or(false);
        let dec = decrypt_leaves(self.leaves(), key, &rule, mac_only)?;
        if !ignore_mac {
            let stored = self.metadata.mac.as_deref().ok_or(SopsError::NoMac)?;
            let env = cipher::Envelope::parse(stored).map_err(|e| SopsError::At {
                path: "sops.mac".into(),
                source: Box::new(e),
            })?;
            let mac = env
                .open(key, &self.metadata.lastmodified)
                .map_err(|_| SopsError::At {
                    path: "sops.mac".into(),
                    source: Box::new(SopsError::Authentication),
                })?;
            use crate::secret::ExposeSecret;
            if !mac.expose_secret().eq_ignore_ascii_case(dec.mac.as_bytes()) {
                return Err(SopsError::MacMismatch);
            }
        }
        Ok(Zeroizing::new(match &self.store {
            Store::Yaml(d) => d.emit_plain(&dec.values).into_bytes(),
            Store::Json(d) => {
                let reps: Vec<Option<Value>> = dec
                    .values
                    .iter()
                    .map(|v| v.as_ref().map(json::plain_json))
                    .collect();
                json::to_string(&d.replaced(&reps, None), "\t").into_bytes()
            }
            Store::Binary(d) => match dec.values.first() {
                Some(Some(Plain::Str(s, _)))
                    if d.leaves.len() == 1 && d.leaves[0].path == ["data"] =>
                {
                    s.as_bytes().to_vec()
                }
                _ => {
                    return Err(SopsError::Format(
                        "a binary SOPS file holds exactly one 'data' value".into(),
                    ));
                }
            },
            Store::Dotenv(d) => d.emit(&dec.values, None).into_bytes(),
            Store::Ini(d) => d.emit(&dec.values, None).into_bytes(),
        }))
    }

    /// Decrypts with age identities.
    pub fn decrypt(
        &self,
        ids: &AgeIdentities,
        ignore_mac: bool,
    ) -> Result<Zeroizing<Vec<u8>>, SopsError> {
        let key = self.data_key(ids)?;
        self.decrypt_with_key(&key, ignore_mac)
    }
}

/// How to encrypt a new file.
#[derive(Debug, Clone, Default)]
pub struct EncryptOptions {
    /// age recipients (`age1…`).
    pub age: Vec<String>,
    /// The encryption rule (default `unencrypted_suffix: _unencrypted`).
    pub rule: Option<MetadataRule>,
    /// Hash only encrypted values into the MAC.
    pub mac_only_encrypted: bool,
}

/// A rule as written in metadata.
#[derive(Debug, Clone)]
pub enum MetadataRule {
    /// `unencrypted_suffix`.
    UnencryptedSuffix(String),
    /// `encrypted_suffix`.
    EncryptedSuffix(String),
    /// `unencrypted_regex`.
    UnencryptedRegex(String),
    /// `encrypted_regex`.
    EncryptedRegex(String),
}

impl MetadataRule {
    fn field(&self) -> (&'static str, &str) {
        match self {
            MetadataRule::UnencryptedSuffix(s) => ("unencrypted_suffix", s),
            MetadataRule::EncryptedSuffix(s) => ("encrypted_suffix", s),
            MetadataRule::UnencryptedRegex(s) => ("unencrypted_regex", s),
            MetadataRule::EncryptedRegex(s) => ("encrypted_regex", s),
        }
    }
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// Encrypts a plaintext file for age recipients, as `sops encrypt` does.
pub fn encrypt(
    text: &[u8],
    format: FileFormat,
    opts: &EncryptOptions,
) -> Result<String, SopsError> {
    if opts.age.is_empty() {
        return Err(SopsError::Identity(
            "no recipients: give at least one age recipient".into(),
        ));
    }
    let rule_meta = opts
        .rule
        .clone()
        .unwrap_or(MetadataRule::UnencryptedSuffix("_unencrypted".into()));
    let (name, val) = rule_meta.field();
    let mut meta_json = serde_json::json!({ name: val });
    let rule = Metadata::from_value(&meta_json)?.rule()?;
    let key = DataKey::generate()?;

    let as_text = || {
        std::str::from_utf8(text).map_err(|_| {
            SopsError::Format("the file is not UTF-8 text (use --input-type binary)".into())
        })
    };
    let leaves_and_store: (Vec<Leaf>, Store) = match format {
        FileFormat::Yaml => {
            let d = yaml::YamlDoc::load(as_text()?)?;
            if d.metadata.is_some() {
                return Err(SopsError::AlreadyEncrypted);
            }
            (d.leaves.clone(), Store::Yaml(d))
        }
        FileFormat::Json => {
            let d = json::JsonDoc::load(as_text()?)?;
            if d.metadata.is_some() {
                return Err(SopsError::AlreadyEncrypted);
            }
            (d.leaves.clone(), Store::Json(d))
        }
        FileFormat::Binary => {
            let data = String::from_utf8_lossy(text).into_owned();
            let d = json::JsonDoc::load(&serde_json::json!({ "data": data }).to_string())?;
            (d.leaves.clone(), Store::Binary(d))
        }
        FileFormat::Dotenv => {
            let d = dotenv::DotenvDoc::load(as_text()?)?;
            if d.metadata.is_some() {
                return Err(SopsError::AlreadyEncrypted);
            }
            (d.leaves.clone(), Store::Dotenv(d))
        }
        FileFormat::Ini => {
            let d = ini::IniDoc::load(as_text()?)?;
            if d.metadata.is_some() {
                return Err(SopsError::AlreadyEncrypted);
            }
            (d.leaves.clone(), Store::Ini(d))
        }
    };
    let (leaves, store) = leaves_and_store;
    let enc = encrypt_leaves(&leaves, &key, &rule, opts.mac_only_encrypted)?;

    let lastmodified = now_rfc3339();
    let mac =
        cipher::Envelope::seal(&key, &lastmodified, enc.mac.as_bytes(), "str", None)?.format();
    let mut age = Vec::new();
    for r in &opts.age {
        age.push(serde_json::json!({ "enc": keysource::wrap_for(r, key.expose())?, "recipient": r.trim() }));
    }
    if let Value::Object(m) = &mut meta_json {
        m.insert("age".into(), Value::Array(age));
        m.insert("lastmodified".into(), lastmodified.into());
        m.insert("mac".into(), mac.into());
        if opts.mac_only_encrypted {
            m.insert("mac_only_encrypted".into(), true.into());
        }
        m.insert("version".into(), WRITE_VERSION.into());
        m.sort_keys();
    }
    Ok(match store {
        Store::Yaml(d) => {
            let opts = serde_saphyr::ser_options! { indent_step: d.indent };
            let block = serde_saphyr::to_string_with_options(
                &serde_json::json!({ "sops": meta_json }),
                opts,
            )
            .map_err(|e| SopsError::Format(e.to_string()))?;
            d.emit(&enc.values, Some(&block))
        }
        Store::Json(d) | Store::Binary(d) => {
            let reps: Vec<Option<Value>> = enc
                .values
                .iter()
                .map(|v| v.clone().map(Value::String))
                .collect();
            json::to_string(&d.replaced(&reps, Some(meta_json)), "\t")
        }
        Store::Dotenv(d) => d.emit_encrypted(&enc.values, &meta_json),
        Store::Ini(d) => d.emit_encrypted(&enc.values, &meta_json),
    })
}

#[cfg(test)]
mod tests;
