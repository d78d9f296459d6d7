//! The dotenv store: `KEY=VALUE` lines split at the first `=` (no quote handling, as sops),
//! `#` comment lines, a literal `\n` standing for a newline; metadata as `sops_…` lines.

use serde_json::Value;

use super::SopsError;
use super::metadata::{flatten, unflatten};
use super::walk::{Leaf, Plain, Scalar, leaf_text, plain_texts};

enum Line {
    Entry { key: String },
    Comment,
    Other(String),
}

/// A loaded dotenv file.
pub struct DotenvDoc {
    lines: Vec<Line>,
    /// Leaves: entries and comments, in order.
    pub leaves: Vec<Leaf>,
    /// The `sops_*` metadata, if any.
    pub metadata: Option<Value>,
}

impl DotenvDoc {
    /// Parses dotenv text.
    pub fn load(text: &str) -> Result<Self, SopsError> {
        let mut lines = Vec::new();
        let mut leaves = Vec::new();
        let mut meta = Vec::new();
        // Comments since the previous entry (sops' comment stack has one level here).
        let mut pending: Vec<String> = Vec::new();
        // Lines end at `\n` only, as sops splits them: a `\r` before it belongs to the line.
        // (Read with `lines()`, a value ending in `\r` lost one on every write and read, and the
        // MAC of a file we wrote failed.)
        let body = text.strip_suffix('\n').unwrap_or(text);
        let raw_lines = (!text.is_empty()).then(|| body.split('\n'));
        for (n, raw) in raw_lines.into_iter().flatten().enumerate() {
            if raw.trim().is_empty() {
                lines.push(Line::Other(raw.to_string()));
            } else if let Some(c) = raw.strip_prefix('#') {
                lines.push(Line::Comment);
                pending.push(c.to_string());
                leaves.push(Leaf {
                    path: vec![],
                    value: Scalar::Str(c.to_string()),
                    comment: true,
                    comments: pending.clone(),
                });
            } else if let Some((k, v)) = raw.split_once('=') {
                if let Some(mk) = k.strip_prefix("sops_") {
                    meta.push((mk.to_string(), v.to_string()));
                    continue;
                }
                lines.push(Line::Entry { key: k.to_string() });
                leaves.push(Leaf {
                    path: vec![k.to_string()],
                    value: Scalar::Str(v.replace("\\n", "\n")),
                    comment: false,
                    comments: std::mem::take(&mut pending),
                });
            } else {
                return Err(SopsError::Format(format!(
                    "line {}: expected KEY=VALUE",
                    n + 1
                )));
            }
        }
        let metadata = if meta.is_empty() {
            None
        } else {
            Some(unflatten(&meta)?)
        };
        Ok(DotenvDoc {
            lines,
            leaves,
            metadata,
        })
    }

    fn render(&self, values: &[Option<String>], meta: Option<&Value>) -> String {
        let mut out = String::new();
        let mut leaf = 0;
        for line in &self.lines {
            match line {
                Line::Other(s) => out.push_str(s),
                Line::Comment => {
                    let text = leaf_text(&self.leaves, values, leaf);
                    out.push('#');
                    out.push_str(&text);
                    leaf += 1;
                }
                Line::Entry { key } => {
                    let text = leaf_text(&self.leaves, values, leaf);
                    out.push_str(key);
                    out.push('=');
                    out.push_str(&text.replace('\n', "\\n"));
                    leaf += 1;
                }
            }
            out.push('\n');
        }
        if let Some(m) = meta {
            for (k, v) in flatten(m) {
                out.push_str(&format!("sops_{k}={v}\n"));
            }
        }
        out
    }

    /// The decrypted text.
    pub fn emit(&self, values: &[Option<Plain>], meta: Option<&Value>) -> String {
        let v = plain_texts(values);
        self.render(&v, meta)
    }

    /// The encrypted text with metadata.
    pub fn emit_encrypted(&self, values: &[Option<String>], meta: &Value) -> String {
        self.render(values, Some(meta))
    }
}
