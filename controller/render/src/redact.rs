//! Redacting decrypted values from text that quotes them: the API server echoes invalid
//! values in validation errors (`metadata.labels: Invalid value: "…"`), admission webhooks
//! and controllers may quote fields in messages. Before such text reaches a status, an Event,
//! a log line or the terminal, every value that came out of a SOPS decryption is replaced.
//!
//! Two rules keep the result independent of the values:
//! - the value quoted after the API server's `Invalid value:` / `Unsupported value:` /
//!   `Duplicate value:` is always replaced, whatever it is;
//! - any other occurrence of a decrypted value is replaced. Replacing a very short value
//!   (shorter than [`MIN_REPLACED`] bytes) would show where its letters occur, so when the
//!   render holds one, every text is withheld whole instead: whether a text is withheld then
//!   depends on the render, never on where or whether the value occurs.

use base64::Engine as _;
use sealkit_keys::secret::{ExposeSecret, SecretString};
use serde_json::Value;

/// What a redacted value becomes.
pub const REDACTED: &str = "<redacted>";

/// A render holding a decrypted value shorter than this has its texts withheld whole.
pub const MIN_REPLACED: usize = 4;

/// What a withheld text becomes.
pub const WITHHELD: &str = "<message withheld: it may quote a value decrypted from SOPS>";

/// The decrypted values of a render.
#[derive(Default)]
pub struct Redactor {
    values: Vec<SecretString>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} values)", self.values.len())
    }
}

fn leaf_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

impl Redactor {
    /// No values.
    pub fn new() -> Self {
        Redactor::default()
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn push(&mut self, s: String) {
        if !s.is_empty() && !self.values.iter().any(|v| v.expose_secret() == s) {
            self.values.push(SecretString::from(s));
        }
    }

    /// Adds the values at `pointers` (JSON pointers of decrypted leaves) of `obj`, in the
    /// forms an error may show them: as they are, JSON-escaped (the API server's messages),
    /// escaped again as a Rust `Debug` string (kube's errors print the API's `Status` with
    /// `{:?}`), and base64-encoded (a Secret's `stringData` is stored, and quoted, as `data`).
    pub fn add(&mut self, obj: &Value, pointers: &[String]) {
        fn inner(quoted: String) -> String {
            quoted[1..quoted.len() - 1].to_string()
        }
        for p in pointers {
            let Some(text) = obj.pointer(p).and_then(leaf_text) else {
                continue;
            };
            let json = inner(Value::String(text.clone()).to_string());
            self.push(inner(format!("{json:?}")));
            self.push(inner(format!("{text:?}")));
            self.push(json);
            self.push(base64::engine::general_purpose::STANDARD.encode(text.as_bytes()));
            self.push(text);
        }
        // Longest first, so that a value containing another is replaced whole.
        self.values
            .sort_by_key(|v| std::cmp::Reverse(v.expose_secret().len()));
    }

    /// `text` with every decrypted value replaced (or withheld, see the module docs).
    pub fn redact(&self, text: &str) -> String {
        if self.values.is_empty() {
            return text.to_string();
        }
        if self
            .values
            .iter()
            .any(|v| v.expose_secret().len() < MIN_REPLACED)
        {
            return WITHHELD.to_string();
        }
        let mut out = text.to_string();
        for v in &self.values {
            out = out.replace(v.expose_secret(), REDACTED);
        }
        // Whatever the API server quotes as the invalid value (also inside kube's `{:?}` of
        // the Status, where the quotes are escaped) goes, decrypted or not: it may be a
        // decrypted value transformed beyond recognition.
        static QUOTED: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
            regex::Regex::new(
                r#"((?:Invalid|Unsupported|Duplicate) value: )(?:\\"[^\n]*?\\"|"(?:[^"\\]|\\.)*"|[^\s:,]+)"#,
            )
            .expect("static regex")
        });
        QUOTED
            .replace_all(&out, format!("${{1}}{REDACTED}").as_str())
            .into_owned()
    }
}
