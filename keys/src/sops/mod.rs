//! SOPS-compatible file encryption with age.
//!
//! `cipher` is the value envelope, `walk` the one walk that encrypts/decrypts leaves and
//! computes the MAC, `metadata` the `sops` block, `keysource` age wrapping, `shamir` key
//! groups; the stores (`yaml`, `json`, `dotenv`, `ini`, `binary`) only load leaves and emit
//! text, behind the one interface in `store`.
//! `depth` bounds how deeply a file may nest before anything recurses over it.
//! Formats follow sops 3.x exactly (see `docs/formats.md`).

mod binary;
pub mod cipher;
mod depth;
mod dotenv;
pub mod edit;
mod ini;
mod json;
pub mod keysource;
pub mod metadata;
mod shamir;
pub mod ssh;
pub mod store;
pub mod walk;
mod yaml;

use serde_json::Value;
use zeroize::Zeroizing;

pub use cipher::DataKey;
pub use depth::MAX_DEPTH;
pub use keysource::AgeIdentities;
pub use metadata::Metadata;
pub use store::{Loaded, Store};
use walk::{Leaf, decrypt_leaves, encrypt_leaves};

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
    /// A feature or operation we do not support.
    #[error("{0} not supported")]
    Unsupported(String),
    /// A key, recipient or identity type we do not support (sealkit uses age X25519 and
    /// ssh-ed25519 keys).
    #[error("{0} not supported")]
    UnsupportedKey(String),
    /// A data key of the wrong length.
    #[error("the data key must be 32 bytes, found {0}")]
    DataKeyLength(usize),
    /// The RNG failed.
    #[error("the random number generator failed")]
    Random,
    /// The document nests mappings and lists deeper than sealkit reads ([`MAX_DEPTH`]).
    #[error("the document is nested deeper than {limit} levels (the most sealkit reads)")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
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
    /// The format sops infers from a file name: by its extension, else binary.
    pub fn from_path(path: &str) -> FileFormat {
        Self::from_extension(path).unwrap_or(FileFormat::Binary)
    }

    /// The format a file name's extension names (`.yaml`, `.yml`, `.json`, `.env`, `.ini`), if
    /// it names one.
    pub fn from_extension(path: &str) -> Option<FileFormat> {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            Some(FileFormat::Yaml)
        } else if lower.ends_with(".json") {
            Some(FileFormat::Json)
        } else if lower.ends_with(".env") {
            Some(FileFormat::Dotenv)
        } else if lower.ends_with(".ini") {
            Some(FileFormat::Ini)
        } else {
            None
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

/// A SOPS file loaded for decryption.
pub struct EncryptedFile {
    doc: Box<dyn Loaded>,
    /// Its metadata.
    pub metadata: Metadata,
    raw_metadata: Value,
    /// Output indentation for JSON (default: a tab, as sops).
    pub indent: Option<usize>,
}

impl EncryptedFile {
    /// Loads an encrypted file.
    pub fn load(text: &str, format: FileFormat) -> Result<Self, SopsError> {
        let store = format.store();
        store.check_depth(text)?;
        let doc = store.load(text)?;
        let raw = doc.metadata().cloned().ok_or(SopsError::NotSopsFile)?;
        let metadata = Metadata::from_value(&raw)?;
        Ok(EncryptedFile {
            doc,
            metadata,
            raw_metadata: raw,
            indent: None,
        })
    }

    fn leaves(&self) -> &[Leaf] {
        self.doc.leaves()
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
            if !walk::mac_matches(mac.expose_secret(), &dec.mac) {
                return Err(SopsError::MacMismatch);
            }
        }
        Ok(Zeroizing::new(
            self.doc.emit_plain(&dec.values, self.indent)?.into_bytes(),
        ))
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

/// How to encrypt a file: recipients, rule, MAC mode.
#[derive(Debug, Clone, Default)]
pub struct EncryptOptions {
    /// age recipients (`age1…`) of one key group.
    pub age: Vec<String>,
    /// Several key groups (each a list of age recipients); the data key is split with Shamir.
    pub key_groups: Vec<Vec<String>>,
    /// Groups needed to decrypt (default: all).
    pub shamir_threshold: Option<usize>,
    /// The encryption rule (default `unencrypted_suffix: _unencrypted`).
    pub rule: Option<MetadataRule>,
    /// Hash only encrypted values into the MAC.
    pub mac_only_encrypted: bool,
    /// Output indentation (`--indent`): JSON spaces instead of a tab, and the YAML `sops:`
    /// block's step (YAML values keep the file's own layout).
    pub indent: Option<usize>,
}

/// A rule as written in metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataRule {
    /// `unencrypted_suffix`.
    UnencryptedSuffix(String),
    /// `encrypted_suffix`.
    EncryptedSuffix(String),
    /// `unencrypted_regex`.
    UnencryptedRegex(String),
    /// `encrypted_regex`.
    EncryptedRegex(String),
    /// `unencrypted_comment_regex`.
    UnencryptedCommentRegex(String),
    /// `encrypted_comment_regex`.
    EncryptedCommentRegex(String),
}

impl MetadataRule {
    fn field(&self) -> (&'static str, &str) {
        match self {
            MetadataRule::UnencryptedSuffix(s) => ("unencrypted_suffix", s),
            MetadataRule::EncryptedSuffix(s) => ("encrypted_suffix", s),
            MetadataRule::UnencryptedRegex(s) => ("unencrypted_regex", s),
            MetadataRule::EncryptedRegex(s) => ("encrypted_regex", s),
            MetadataRule::UnencryptedCommentRegex(s) => ("unencrypted_comment_regex", s),
            MetadataRule::EncryptedCommentRegex(s) => ("encrypted_comment_regex", s),
        }
    }

    /// The one rule set among the six rule fields, in metadata order (`unencrypted_suffix`,
    /// `encrypted_suffix`, `unencrypted_regex`, `encrypted_regex`, `unencrypted_comment_regex`,
    /// `encrypted_comment_regex`); more than one is an error, as in sops.
    pub fn from_fields(fields: [Option<String>; 6]) -> Result<Option<MetadataRule>, SopsError> {
        let makers: [fn(String) -> MetadataRule; 6] = [
            MetadataRule::UnencryptedSuffix,
            MetadataRule::EncryptedSuffix,
            MetadataRule::UnencryptedRegex,
            MetadataRule::EncryptedRegex,
            MetadataRule::UnencryptedCommentRegex,
            MetadataRule::EncryptedCommentRegex,
        ];
        let mut rules = fields
            .into_iter()
            .zip(makers)
            .filter_map(|(f, make)| f.map(make));
        let first = rules.next();
        if rules.next().is_some() {
            return Err(SopsError::Metadata(
                "only one of unencrypted_suffix, encrypted_suffix, unencrypted_regex, encrypted_regex, unencrypted_comment_regex, encrypted_comment_regex may be set".into(),
            ));
        }
        Ok(first)
    }

    /// The rule a file's metadata declares (the first, if a malformed file has several).
    pub fn of(meta: &Metadata) -> Option<MetadataRule> {
        [
            meta.unencrypted_suffix
                .clone()
                .map(MetadataRule::UnencryptedSuffix),
            meta.encrypted_suffix
                .clone()
                .map(MetadataRule::EncryptedSuffix),
            meta.unencrypted_regex
                .clone()
                .map(MetadataRule::UnencryptedRegex),
            meta.encrypted_regex
                .clone()
                .map(MetadataRule::EncryptedRegex),
            meta.unencrypted_comment_regex
                .clone()
                .map(MetadataRule::UnencryptedCommentRegex),
            meta.encrypted_comment_regex
                .clone()
                .map(MetadataRule::EncryptedCommentRegex),
        ]
        .into_iter()
        .flatten()
        .next()
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

impl EncryptOptions {
    fn groups(&self) -> Vec<Vec<String>> {
        if self.key_groups.is_empty() {
            vec![self.age.clone()]
        } else {
            self.key_groups.clone()
        }
    }

    /// The key fields of the metadata (`age`, or `key_groups` + `shamir_threshold`) with the
    /// data key (or its Shamir shares) wrapped for every recipient.
    pub fn key_metadata(&self, key: &DataKey) -> Result<serde_json::Map<String, Value>, SopsError> {
        let groups = self.groups();
        if groups.iter().all(|g| g.is_empty()) {
            return Err(SopsError::Identity(
                "no recipients: give at least one age recipient (--age, SOPS_AGE_RECIPIENTS or .sops.yaml)".into(),
            ));
        }
        let wrap_all = |recipients: &[String], secret: &[u8]| -> Result<Vec<Value>, SopsError> {
            recipients
                .iter()
                .map(|r| Ok(serde_json::json!({ "enc": keysource::wrap_for(r, secret)?, "recipient": r.trim() })))
                .collect()
        };
        let mut m = serde_json::Map::new();
        if groups.len() == 1 {
            m.insert(
                "age".into(),
                Value::Array(wrap_all(&groups[0], key.expose())?),
            );
        } else {
            let threshold = self.shamir_threshold.unwrap_or(groups.len());
            let shares = shamir::split(key.expose(), groups.len(), threshold)?;
            let mut out = Vec::new();
            for (g, share) in groups.iter().zip(&shares) {
                out.push(serde_json::json!({ "age": wrap_all(g, share)? }));
            }
            m.insert("key_groups".into(), Value::Array(out));
            m.insert("shamir_threshold".into(), Value::from(threshold));
        }
        Ok(m)
    }
}

/// Encrypts a plaintext file for age recipients with a new data key, as `sops encrypt` does.
pub fn encrypt(
    text: &[u8],
    format: FileFormat,
    opts: &EncryptOptions,
) -> Result<String, SopsError> {
    encrypt_with_key(text, format, opts, &DataKey::generate()?, None)
}

/// Encrypts with a given data key; with a `stash`, unchanged values keep their ciphertext.
pub fn encrypt_with_key(
    text: &[u8],
    format: FileFormat,
    opts: &EncryptOptions,
    key: &DataKey,
    stash: Option<&walk::IvStash>,
) -> Result<String, SopsError> {
    let meta = opts.key_metadata(key)?;
    encrypt_with_key_metadata(text, format, opts, key, stash, meta)
}

/// [`encrypt_with_key`] with the key fields of the metadata already made by
/// [`EncryptOptions::key_metadata`] for this `key`. Wrapping the data key is the costly step
/// (an X25519 operation per recipient), so the fuzz targets (`keys/fuzz`) make it once and
/// encrypt many files with it. Not an API.
#[doc(hidden)]
pub fn encrypt_with_key_metadata(
    text: &[u8],
    format: FileFormat,
    opts: &EncryptOptions,
    key: &DataKey,
    stash: Option<&walk::IvStash>,
    mut meta: serde_json::Map<String, Value>,
) -> Result<String, SopsError> {
    let rule_meta = opts
        .rule
        .clone()
        .unwrap_or(MetadataRule::UnencryptedSuffix("_unencrypted".into()));
    let (name, val) = rule_meta.field();
    meta.insert(name.into(), val.into());
    let rule = Metadata::from_value(&serde_json::json!({ name: val }))?.rule()?;
    let doc = format.store().load_plain(text)?;
    let enc = encrypt_leaves(doc.leaves(), key, &rule, opts.mac_only_encrypted, stash)?;
    let lastmodified = now_rfc3339();
    let mac = cipher::Envelope::seal(key, &lastmodified, enc.mac.as_bytes(), "str", None)?.format();
    meta.insert("lastmodified".into(), lastmodified.into());
    meta.insert("mac".into(), mac.into());
    if opts.mac_only_encrypted {
        meta.insert("mac_only_encrypted".into(), true.into());
    }
    meta.insert("version".into(), WRITE_VERSION.into());
    meta.sort_keys();
    Ok(doc.emit_encrypted(&enc.values, &Value::Object(meta), opts.indent))
}

impl EncryptedFile {
    /// The options this file was encrypted with (recipients, groups, rule, MAC mode).
    pub fn options(&self) -> EncryptOptions {
        let groups: Vec<Vec<String>> = self
            .metadata
            .groups()
            .iter()
            .map(|g| g.age.iter().map(|a| a.recipient.clone()).collect())
            .collect();
        let (age, key_groups) = if groups.len() == 1 {
            (groups[0].clone(), Vec::new())
        } else {
            (Vec::new(), groups)
        };
        EncryptOptions {
            age,
            key_groups,
            shamir_threshold: self.metadata.shamir_threshold,
            rule: MetadataRule::of(&self.metadata),
            mac_only_encrypted: self.metadata.mac_only_encrypted.unwrap_or(false),
            indent: self.indent,
        }
    }

    /// IVs of the current values, for re-encrypting an edited plaintext with the same key.
    pub fn iv_stash(&self, key: &DataKey) -> walk::IvStash {
        walk::IvStash::from_leaves(self.leaves(), key)
    }

    /// The same file with its data key wrapped for other recipients (`updatekeys`): values,
    /// MAC and `lastmodified` are unchanged.
    pub fn with_recipients(
        &self,
        opts: &EncryptOptions,
        key: &DataKey,
    ) -> Result<String, SopsError> {
        let mut meta = self.raw_metadata.as_object().cloned().unwrap_or_default();
        for k in ["age", "key_groups", "shamir_threshold"] {
            meta.remove(k);
        }
        meta.extend(opts.key_metadata(key)?);
        meta.sort_keys();
        let none = vec![None; self.leaves().len()];
        Ok(self
            .doc
            .emit_encrypted(&none, &Value::Object(meta), opts.indent.or(self.indent)))
    }
}

#[cfg(test)]
mod tests;
