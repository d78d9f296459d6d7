//! The stores behind one interface. A [`Store`] turns a file's text into a [`Loaded`] file (its
//! leaves in order and its `sops` metadata) and a loaded file back into text, with encrypted or
//! decrypted values; it also reads and edits plaintext files as values for `--extract`, `set` and
//! conversions. [`FileFormat::store`] is the one place a format is mapped to its store, so
//! adding a format means adding a store, not finding every `match`.

use serde_json::Value;

use super::edit::Step;
use super::walk::{Leaf, Plain};
use super::{FileFormat, SopsError, binary, dotenv, ini, json, yaml};

/// A file loaded by a [`Store`]: its leaves, its metadata, and what the store needs to write it
/// back with other values in the same places.
pub trait Loaded: Send + Sync {
    /// The leaves (values, and comments where the format has them), in file order.
    fn leaves(&self) -> &[Leaf];

    /// The `sops` metadata as JSON, if the file has any.
    fn metadata(&self) -> Option<&Value>;

    /// The plaintext file: each leaf with a value replaced by it, the metadata removed.
    /// `indent` is `--indent` (JSON output).
    fn emit_plain(
        &self,
        values: &[Option<Plain>],
        indent: Option<usize>,
    ) -> Result<String, SopsError>;

    /// The encrypted file: each leaf with a value replaced by it (an `ENC[…]` envelope), and
    /// `meta` as its `sops` metadata. `indent` is `--indent` (JSON output, the YAML `sops:` block).
    fn emit_encrypted(
        &self,
        values: &[Option<String>],
        meta: &Value,
        indent: Option<usize>,
    ) -> String;
}

/// One file format: bytes ⇄ leaves + metadata, and plaintext files as JSON values.
pub trait Store: Send + Sync {
    /// Refuses text nested deeper than [`super::MAX_DEPTH`] before anything recursive reads it.
    /// Flat formats have nothing to check.
    fn check_depth(&self, _text: &str) -> Result<(), SopsError> {
        Ok(())
    }

    /// Loads a file (encrypted or not) after [`Store::check_depth`].
    fn load(&self, text: &str) -> Result<Box<dyn Loaded>, SopsError>;

    /// Loads a plaintext file to encrypt it: text, depth checked, without `sops` metadata.
    fn load_plain(&self, bytes: &[u8]) -> Result<Box<dyn Loaded>, SopsError> {
        let text = plain_text(bytes)?;
        self.check_depth(text)?;
        refuse_metadata(self.load(text)?)
    }

    /// A plaintext file as a JSON value (`--extract`, `exec-env`, conversions), after
    /// [`Store::check_depth`].
    fn to_value(&self, text: &str) -> Result<Value, SopsError>;

    /// A JSON value as a plaintext file of this format (`--output-type`, `--extract` of a
    /// mapping or list).
    fn emit_value(&self, value: &Value) -> Result<String, SopsError>;

    /// Sets (`Some`) or removes (`None`) the value at `path` in a plaintext file, after
    /// [`Store::check_depth`], keeping the rest of the file where the format allows.
    fn set_in_text(
        &self,
        text: &str,
        path: &[Step],
        value: Option<Value>,
    ) -> Result<String, SopsError>;

    /// Whether files of this format are mappings and lists, as Kubernetes objects are (YAML,
    /// JSON); dotenv and INI are flat, binary files opaque.
    fn structured(&self) -> bool {
        false
    }
}

impl FileFormat {
    /// The store that reads and writes this format.
    pub fn store(self) -> &'static dyn Store {
        match self {
            FileFormat::Yaml => &yaml::YamlStore,
            FileFormat::Json => &json::JsonStore,
            FileFormat::Dotenv => &dotenv::DotenvStore,
            FileFormat::Ini => &ini::IniStore,
            FileFormat::Binary => &binary::BinaryStore,
        }
    }
}

/// A plaintext file's text: every format but binary is UTF-8 text.
pub(crate) fn plain_text(bytes: &[u8]) -> Result<&str, SopsError> {
    std::str::from_utf8(bytes).map_err(|_| {
        SopsError::Format("the file is not UTF-8 text (use --input-type binary)".into())
    })
}

/// A plaintext file must not already be encrypted.
pub(crate) fn refuse_metadata(loaded: Box<dyn Loaded>) -> Result<Box<dyn Loaded>, SopsError> {
    if loaded.metadata().is_some() {
        return Err(SopsError::AlreadyEncrypted);
    }
    Ok(loaded)
}
