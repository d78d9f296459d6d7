//! The binary store: any other file, kept whole as one string under `data` in a JSON document
//! (as sops stores it), so it loads and emits encrypted files through the JSON document.

use serde_json::Value;

use super::SopsError;
use super::edit::Step;
use super::json::{JsonDoc, JsonStore};
use super::store::{Loaded, Store};
use super::walk::{Leaf, Plain};

/// The binary store.
pub struct BinaryStore;

/// A binary file: the JSON document holding its `data`.
struct BinaryDoc(JsonDoc);

impl Store for BinaryStore {
    // Every file whose name has no known extension is read with this store, so text that is
    // not a JSON document (or one nested too deeply to be one sops wrote) is simply not a SOPS
    // file, rather than a malformed one.
    fn load(&self, text: &str) -> Result<Box<dyn Loaded>, SopsError> {
        match JsonDoc::load(text) {
            Ok(d) => Ok(Box::new(BinaryDoc(d))),
            Err(SopsError::Format(_) | SopsError::TooDeep { .. }) => Err(SopsError::NotSopsFile),
            Err(e) => Err(e),
        }
    }

    // The file is one string, not a document: there is no `sops` metadata to refuse.
    fn load_plain(&self, bytes: &[u8]) -> Result<Box<dyn Loaded>, SopsError> {
        let data = std::str::from_utf8(bytes).map_err(|_| {
            SopsError::Format(
                "binary files must be UTF-8 text, as sops stores them in a JSON string".into(),
            )
        })?;
        let d = JsonDoc::load(&serde_json::json!({ "data": data }).to_string())?;
        Ok(Box::new(BinaryDoc(d)))
    }

    fn to_value(&self, text: &str) -> Result<Value, SopsError> {
        Ok(serde_json::json!({ "data": text }))
    }

    fn emit_value(&self, value: &Value) -> Result<String, SopsError> {
        match value.get("data").and_then(Value::as_str) {
            Some(d) => Ok(d.to_string()),
            None => Err(SopsError::Format(
                "binary output needs a top-level 'data' string".into(),
            )),
        }
    }

    // `set` edits the JSON document a binary file is stored in.
    fn set_in_text(
        &self,
        text: &str,
        path: &[Step],
        value: Option<Value>,
    ) -> Result<String, SopsError> {
        JsonStore.check_depth(text)?;
        JsonStore.set_in_text(text, path, value)
    }
}

impl Loaded for BinaryDoc {
    fn leaves(&self) -> &[Leaf] {
        &self.0.leaves
    }

    fn metadata(&self) -> Option<&Value> {
        self.0.metadata.as_ref()
    }

    fn emit_plain(
        &self,
        values: &[Option<Plain>],
        _indent: Option<usize>,
    ) -> Result<String, SopsError> {
        match values.first() {
            Some(Some(Plain::Str(s, _)))
                if self.0.leaves.len() == 1 && self.0.leaves[0].path == ["data"] =>
            {
                Ok(s.to_string())
            }
            _ => Err(SopsError::Format(
                "a binary SOPS file holds exactly one 'data' value".into(),
            )),
        }
    }

    fn emit_encrypted(
        &self,
        values: &[Option<String>],
        meta: &Value,
        indent: Option<usize>,
    ) -> String {
        self.0.emit_encrypted(values, meta, indent)
    }
}

#[cfg(test)]
mod tests {
    use crate::sops::{EncryptedFile, FileFormat, SopsError};

    // Any file of an unknown type is read as a binary SOPS file: one that is not a JSON
    // document, or is too deep to be one, is not a SOPS file rather than a malformed one.
    #[test]
    fn text_that_is_not_a_json_document_is_not_a_sops_file() {
        let deep = format!("{{\"a\": {}1{}}}", "[".repeat(1000), "]".repeat(1000));
        for text in ["hello\n", "[1, 2]", "{\"data\": \"x\"}", deep.as_str()] {
            assert!(
                matches!(
                    EncryptedFile::load(text, FileFormat::Binary),
                    Err(SopsError::NotSopsFile)
                ),
                "{text:.20}"
            );
        }
        // A JSON document with a broken `sops` block is still an error of its own.
        assert!(matches!(
            EncryptedFile::load("{\"data\": \"x\", \"sops\": 1}", FileFormat::Binary),
            Err(e) if !matches!(e, SopsError::NotSopsFile)
        ));
    }
}
