//! The dotenv store: `KEY=VALUE` lines split at the first `=` (no quote handling, as sops),
//! `#` comment lines, a literal `\n` standing for a newline; metadata as `sops_…` lines.

use serde_json::Value;

use super::SopsError;
use super::edit::{Step, describe, yaml_scalar};
use super::metadata::{flatten, unflatten};
use super::store::{Loaded, Store};
use super::walk::{Leaf, Plain, Scalar, leaf_text, plain_texts};

/// The dotenv store.
pub struct DotenvStore;

impl Store for DotenvStore {
    fn load(&self, text: &str) -> Result<Box<dyn Loaded>, SopsError> {
        Ok(Box::new(DotenvDoc::load(text)?))
    }

    fn to_value(&self, text: &str) -> Result<Value, SopsError> {
        Ok(Value::Object(
            text.lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), Value::String(v.replace("\\n", "\n"))))
                .collect(),
        ))
    }

    fn emit_value(&self, value: &Value) -> Result<String, SopsError> {
        let obj = value
            .as_object()
            .ok_or_else(|| SopsError::Format("only a mapping converts to dotenv".into()))?;
        let mut s = String::new();
        for (k, v) in obj {
            let text = match v {
                Value::String(t) => t.clone(),
                Value::Object(_) | Value::Array(_) => {
                    return Err(SopsError::Format(format!(
                        "'{k}' is nested; dotenv holds only flat values"
                    )));
                }
                other => other.to_string(),
            };
            s.push_str(&format!("{k}={}\n", text.replace('\n', "\\n")));
        }
        Ok(s)
    }

    fn set_in_text(
        &self,
        text: &str,
        path: &[Step],
        value: Option<Value>,
    ) -> Result<String, SopsError> {
        let [Step::Key(k)] = path else {
            return Err(SopsError::Format(
                "dotenv files only have top-level keys".into(),
            ));
        };
        let mut out = String::new();
        let mut found = false;
        for line in text.lines() {
            if line.split_once('=').is_some_and(|(lk, _)| lk == k) {
                found = true;
                if let Some(v) = &value {
                    out.push_str(&format!(
                        "{k}={}\n",
                        yaml_scalar(v).unwrap_or_default().replace('\n', "\\n")
                    ));
                }
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        match (&value, found) {
            (Some(v), false) => out.push_str(&format!(
                "{k}={}\n",
                yaml_scalar(v).unwrap_or_default().replace('\n', "\\n")
            )),
            (None, false) => {
                return Err(SopsError::Format(format!("{} not found", describe(path))));
            }
            _ => {}
        }
        Ok(out)
    }
}

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
}

impl Loaded for DotenvDoc {
    fn leaves(&self) -> &[Leaf] {
        &self.leaves
    }

    fn metadata(&self) -> Option<&Value> {
        self.metadata.as_ref()
    }

    fn emit_plain(
        &self,
        values: &[Option<Plain>],
        _indent: Option<usize>,
    ) -> Result<String, SopsError> {
        Ok(self.render(&plain_texts(values), None))
    }

    fn emit_encrypted(
        &self,
        values: &[Option<String>],
        meta: &Value,
        _indent: Option<usize>,
    ) -> String {
        self.render(values, Some(meta))
    }
}
