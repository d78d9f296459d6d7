//! The INI store: `[section]` headers, `key = value` lines (path `section:key`), `;`/`#`
//! comment lines; metadata in a `[sops]` section, flattened, with `\n` escapes or `"""` blocks.

use serde_json::Value;

use super::SopsError;
use super::edit::Step;
use super::metadata::{flatten, unflatten};
use super::store::{Loaded, Store};
use super::walk::{Leaf, Plain, Scalar, leaf_text, plain_texts};

/// The INI store.
pub struct IniStore;

impl Store for IniStore {
    fn load(&self, text: &str) -> Result<Box<dyn Loaded>, SopsError> {
        Ok(Box::new(IniDoc::load(text)?))
    }

    fn to_value(&self, text: &str) -> Result<Value, SopsError> {
        // Read as the loader reads it (`"""` blocks included), or a block's lines would be
        // taken for sections and entries of their own.
        let doc = IniDoc::load(text)?;
        let mut root = serde_json::Map::new();
        for line in &doc.lines {
            if let Line::Section(section) = line {
                root.entry(section.clone())
                    .or_insert_with(|| Value::Object(Default::default()));
            }
        }
        for leaf in doc.leaves.iter().filter(|l| !l.comment) {
            if let ([section, key], Scalar::Str(value)) = (&leaf.path[..], &leaf.value)
                && let Some(Value::Object(m)) = root.get_mut(section)
            {
                m.insert(key.clone(), Value::String(value.clone()));
            }
        }
        Ok(Value::Object(root))
    }

    fn emit_value(&self, _value: &Value) -> Result<String, SopsError> {
        Err(SopsError::Unsupported("conversion to INI".into()))
    }

    fn set_in_text(
        &self,
        _text: &str,
        _path: &[Step],
        _value: Option<Value>,
    ) -> Result<String, SopsError> {
        Err(SopsError::Unsupported("set/unset on INI files".into()))
    }
}

enum Line {
    Section(String),
    Entry { key: String },
    Comment(char),
    Other(String),
}

/// A loaded INI file.
pub struct IniDoc {
    lines: Vec<Line>,
    /// Leaves in order.
    pub leaves: Vec<Leaf>,
    /// The `[sops]` section, if any.
    pub metadata: Option<Value>,
}

impl IniDoc {
    /// Parses INI text.
    pub fn load(text: &str) -> Result<Self, SopsError> {
        let mut lines = Vec::new();
        let mut leaves = Vec::new();
        let mut meta = Vec::new();
        let mut section = String::new();
        let mut in_sops = false;
        // sops' comment stack: comments before the current section, and since the last key.
        let mut top_pending: Vec<String> = Vec::new();
        let mut section_comments: Vec<String> = Vec::new();
        let mut key_pending: Vec<String> = Vec::new();
        // Keys of the current section: sops keeps only the last of a repeated key, so its MAC
        // and ours would disagree.
        let mut seen = std::collections::HashSet::new();
        let mut iter = text.lines().enumerate();
        while let Some((n, raw)) = iter.next() {
            let t = raw.trim();
            if t.is_empty() {
                if !in_sops {
                    lines.push(Line::Other(raw.to_string()));
                }
            } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                section = name.trim().to_string();
                in_sops = section == "sops";
                section_comments = std::mem::take(&mut top_pending);
                key_pending.clear();
                seen.clear();
                if !in_sops {
                    lines.push(Line::Section(section.clone()));
                }
            } else if t.starts_with(';') || t.starts_with('#') {
                if in_sops {
                    // The `[sops]` section is metadata, rewritten on every write; a comment in
                    // it is not data. (Kept as a leaf, it was written under the previous
                    // section, with another path, and never decrypted again.)
                    continue;
                }
                let c = t.chars().next().unwrap_or(';');
                let body = t[1..].trim_start().to_string();
                let path = if section.is_empty() {
                    vec![]
                } else {
                    vec![section.clone()]
                };
                lines.push(Line::Comment(c));
                let stack = if section.is_empty() {
                    top_pending.push(body.clone());
                    top_pending.clone()
                } else {
                    key_pending.push(body.clone());
                    section_comments
                        .iter()
                        .chain(&key_pending)
                        .cloned()
                        .collect()
                };
                leaves.push(Leaf {
                    path,
                    value: Scalar::Str(body),
                    comment: true,
                    comments: stack,
                });
            } else if t.starts_with('[') {
                // Not a section (no closing `]`), and not an entry either: written back as
                // `[k = ENC[…]]` it would read as a section, and the value would be lost.
                return Err(SopsError::Format(format!(
                    "line {}: unclosed [section] header",
                    n + 1
                )));
            } else if let Some((k, v)) = raw.split_once('=') {
                let key = k.trim().to_string();
                if key.is_empty() {
                    return Err(SopsError::Format(format!(
                        "line {}: empty key name (sops refuses it too)",
                        n + 1
                    )));
                }
                if !in_sops && !seen.insert(key.clone()) {
                    return Err(SopsError::Format(format!(
                        "line {}: key '{key}' appears twice in [{section}] (sops would keep only \
                         the last one, and the two tools would disagree on the file); remove one",
                        n + 1
                    )));
                }
                let mut value = v.trim().to_string();
                if let Some(first) = value.strip_prefix("\"\"\"") {
                    // A multi-line value: up to the closing """.
                    let mut buf = first.to_string();
                    let mut closed = buf.ends_with("\"\"\"") && buf.len() >= 3;
                    while !closed {
                        let Some((_, next)) = iter.next() else {
                            return Err(SopsError::Format(format!(
                                "line {}: unterminated \"\"\" value",
                                n + 1
                            )));
                        };
                        buf.push('\n');
                        buf.push_str(next);
                        closed = next.trim_end().ends_with("\"\"\"");
                    }
                    value = buf.trim_end().trim_end_matches("\"\"\"").to_string();
                    // Written back, a value is one line, its line breaks as `\n`: it must
                    // read back as itself. It would not if it started with """ (a block
                    // again), started or ended with spaces (trimmed) or held a `\n` of its own
                    // (read as a line break).
                    let line = value.replace('\n', "\\n");
                    if line.starts_with("\"\"\"")
                        || line.trim() != line
                        || line.replace("\\n", "\n") != value
                    {
                        return Err(SopsError::Format(format!(
                            "line {}: this \"\"\" value cannot be written back on one line \
                             (it starts with \"\"\", starts or ends with spaces, or holds a \\n)",
                            n + 1
                        )));
                    }
                } else {
                    value = value.replace("\\n", "\n");
                }
                if in_sops {
                    meta.push((key, value.replace('\n', "\\n")));
                    continue;
                }
                if section.is_empty() {
                    return Err(SopsError::Format(format!(
                        "line {}: key '{key}' is outside any [section]",
                        n + 1
                    )));
                }
                lines.push(Line::Entry { key: key.clone() });
                leaves.push(Leaf {
                    path: vec![section.clone(), key],
                    value: Scalar::Str(value),
                    comment: false,
                    comments: section_comments
                        .iter()
                        .cloned()
                        .chain(std::mem::take(&mut key_pending))
                        .collect(),
                });
            } else {
                return Err(SopsError::Format(format!(
                    "line {}: expected [section], key = value or a comment",
                    n + 1
                )));
            }
        }
        let metadata = if meta.is_empty() {
            None
        } else {
            Some(unflatten(&meta)?)
        };
        Ok(IniDoc {
            lines,
            leaves,
            metadata,
        })
    }

    fn render(&self, values: &[Option<String>], meta: Option<&Value>) -> String {
        let mut out = String::new();
        let mut leaf = 0;
        let text_of = |i: usize| leaf_text(&self.leaves, values, i);
        for line in &self.lines {
            match line {
                Line::Other(s) => out.push_str(s),
                Line::Section(s) => out.push_str(&format!("[{s}]")),
                Line::Comment(c) => {
                    out.push_str(&format!("{c} {}", text_of(leaf)));
                    leaf += 1;
                }
                Line::Entry { key } => {
                    out.push_str(&format!("{key} = {}", text_of(leaf).replace('\n', "\\n")));
                    leaf += 1;
                }
            }
            out.push('\n');
        }
        if let Some(m) = meta {
            if !out.ends_with("\n\n") && !out.is_empty() {
                out.push('\n');
            }
            out.push_str("[sops]\n");
            for (k, v) in flatten(m) {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        out
    }
}

impl Loaded for IniDoc {
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
        let mut s = self.render(&plain_texts(values), None);
        // The [sops] section was preceded by a blank line that belonged to it.
        while s.ends_with("\n\n") {
            s.pop();
        }
        Ok(s)
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
