//! The YAML store, on a lossless syntax tree (yaml-edit). Loading yields the leaves in file
//! order with the byte span of each; emitting splices new text into those spans, so comments,
//! key order, quoting, indentation, block scalars and the leading `---` of everything we do not
//! change stay byte for byte (sops #384, #864, #635).
//!
//! `tree` walks the syntax tree into leaves (and reads the `sops:` block); `render` writes
//! decrypted scalars and the `sops:` block as YAML text; `set` edits one value in place.

mod render;
mod set;
mod tree;

use std::ops::Range;
use std::str::FromStr;

use rowan::ast::AstNode;
use serde_json::Value;
use yaml_edit::{SyntaxKind, YamlFile};

use super::SopsError;
use super::edit::Step;
use super::store::{Loaded, Store, plain_text, refuse_metadata};
use super::walk::{Leaf, Plain};
use render::{block_scalar, render_plain, sops_block};
use tree::{Walker, content, range, to_json};

/// The YAML store.
pub struct YamlStore;

impl Store for YamlStore {
    fn check_depth(&self, text: &str) -> Result<(), SopsError> {
        super::depth::check_yaml(text)
    }

    fn load(&self, text: &str) -> Result<Box<dyn Loaded>, SopsError> {
        Ok(Box::new(YamlDoc::load(text)?))
    }

    fn load_plain(&self, bytes: &[u8]) -> Result<Box<dyn Loaded>, SopsError> {
        let text = plain_text(bytes)?;
        self.check_depth(text)?;
        // The lossless parser forgives some invalid YAML; sops would not, so check first.
        for doc in serde_saphyr::from_multiple_with_options::<serde::de::IgnoredAny>(
            text,
            serde_saphyr::options! { with_snippet: false },
        )
        .map_err(|e| SopsError::Format(format!("invalid YAML: {e}")))?
        {
            let _ = doc;
        }
        let doc = YamlDoc::load(text)?;
        // The `sops:` block goes at the end of each document: with none, the output would be
        // the input without metadata, which nothing can decrypt. sops refuses it too.
        if doc.documents() == 0 {
            return Err(SopsError::Format(
                "the file holds no YAML document (it is empty or only comments); sops needs at least one".into(),
            ));
        }
        refuse_metadata(Box::new(doc))
    }

    fn to_value(&self, text: &str) -> Result<Value, SopsError> {
        serde_saphyr::from_str_with_options(text, serde_saphyr::options! { with_snippet: false })
            .map_err(|e| SopsError::Format(format!("invalid YAML: {e}")))
    }

    // Block style with long strings on one line, as `sealkit seal` writes YAML.
    fn emit_value(&self, value: &Value) -> Result<String, SopsError> {
        Ok(crate::seal::manifest::yaml_body(value))
    }

    fn set_in_text(
        &self,
        text: &str,
        path: &[Step],
        value: Option<Value>,
    ) -> Result<String, SopsError> {
        set::set_in_text(text, path, value)
    }

    fn structured(&self) -> bool {
        true
    }
}

/// A loaded YAML file.
pub struct YamlDoc {
    text: String,
    /// The data leaves, in file order.
    pub leaves: Vec<Leaf>,
    spans: Vec<Span>,
    /// Per document: the span of its `sops:` entry (with its line break), if any.
    sops_spans: Vec<Range<usize>>,
    /// Per document: where a new `sops:` block goes (end of the document).
    doc_ends: Vec<usize>,
    /// The `sops:` block of the first document, as JSON.
    pub metadata: Option<Value>,
    /// Indentation step used by the file (for the block we write).
    pub indent: usize,
}

#[derive(Clone)]
struct Span {
    range: Range<usize>,
    flow: bool,
}

fn detect_indent(text: &str) -> usize {
    text.lines()
        .map(|l| l.len() - l.trim_start_matches(' ').len())
        .find(|&n| n > 0 && n <= 9)
        .unwrap_or(4)
}

impl YamlDoc {
    /// Parses a YAML file (one or many documents).
    pub fn load(text: &str) -> Result<Self, SopsError> {
        let file = YamlFile::from_str(text)
            .map_err(|e| SopsError::Format(format!("invalid YAML: {e}")))?;
        let mut doc = YamlDoc {
            text: text.to_string(),
            leaves: Vec::new(),
            spans: Vec::new(),
            sops_spans: Vec::new(),
            doc_ends: Vec::new(),
            metadata: None,
            indent: detect_indent(text),
        };
        for d in file.documents() {
            let dn = d.syntax().clone();
            let mut path = Vec::new();
            let first_leaf = doc.leaves.len();
            let mut w = Walker {
                leaves: &mut doc.leaves,
                spans: &mut doc.spans,
                entries: Vec::new(),
                comments: Vec::new(),
                owner: 0,
                owners: Vec::new(),
                first_leaf,
                sops_entries: Vec::new(),
            };
            // Every standalone comment of the document, wherever the parser attached it.
            for t in dn.descendants_with_tokens() {
                if let rowan::NodeOrToken::Token(t) = t
                    && t.kind() == SyntaxKind::COMMENT
                {
                    w.comments.push(t);
                }
            }
            for c in dn.children_with_tokens() {
                match c {
                    rowan::NodeOrToken::Node(n) if n.kind() == SyntaxKind::MAPPING => {
                        w.node(&n, 0, &mut path)?;
                    }
                    // Anything else would be skipped by the walk, so its values would stay in
                    // clear text beside a `sops:` block: a tagged mapping (`--- !!map`), an
                    // alias, a list, a scalar, or what the lossless parser could not read.
                    rowan::NodeOrToken::Node(n) => {
                        return Err(SopsError::Format(
                            if n.kind() == SyntaxKind::TAGGED_NODE {
                                "a SOPS YAML document must be a mapping at the top level, without a tag"
                            } else {
                                "a SOPS YAML document must be a mapping at the top level"
                            }
                            .into(),
                        ));
                    }
                    rowan::NodeOrToken::Token(_) => {}
                }
            }
            for e in std::mem::take(&mut w.sops_entries) {
                if doc.metadata.is_none() {
                    let v = e
                        .children()
                        .find(|c| c.kind() == SyntaxKind::VALUE)
                        .and_then(|v| content(&v));
                    doc.metadata = v.map(|v| to_json(&v, 1)).transpose()?;
                }
                doc.sops_spans.push(range(&e));
            }
            // Comments inside the sops block are not data.
            let sops_ranges = doc.sops_spans.clone();
            w.comments.retain(|t| {
                !sops_ranges
                    .iter()
                    .any(|r| r.contains(&usize::from(t.text_range().start())))
            });
            w.place_comments(text);
            doc.doc_ends.push(usize::from(dn.text_range().end()));
        }
        Ok(doc)
    }

    /// How many documents the file holds (an empty or comment-only file holds none).
    pub fn documents(&self) -> usize {
        self.doc_ends.len()
    }

    /// The text with `replacements` (per leaf) spliced in and the `sops:` blocks removed;
    /// with `metadata`, a new `sops:` block is appended to every document.
    pub fn emit(&self, replacements: &[Option<String>], metadata: Option<&str>) -> String {
        let mut edits: Vec<(Range<usize>, String)> = Vec::new();
        for ((span, leaf), rep) in self.spans.iter().zip(&self.leaves).zip(replacements) {
            if let Some(r) = rep {
                let text = if span.flow
                    && !leaf.comment
                    && !r.starts_with('"')
                    && r.contains([',', '[', ']', '{', '}'])
                {
                    serde_json::to_string(r).unwrap_or_default()
                } else {
                    r.clone()
                };
                let mut range = span.range.clone();
                if !leaf.comment && text.starts_with('|') {
                    // A block scalar runs to the end of its last line: spaces after the value
                    // on that line would become part of it.
                    let rest = &self.text[range.end..];
                    range.end += rest.len() - rest.trim_start_matches([' ', '\t']).len();
                }
                edits.push((range, text));
            }
        }
        for s in &self.sops_spans {
            let mut end = s.end;
            if self.text[end..].starts_with('\n') {
                end += 1;
            }
            edits.push((s.start..end, String::new()));
        }
        if let Some(block) = metadata {
            for &e in &self.doc_ends {
                // What the block follows is the text kept: not a `sops:` block removed from the
                // end of the document (without a final newline, it would add an empty line).
                let kept = self
                    .sops_spans
                    .iter()
                    .find(|s| s.start < e && s.end <= e && self.text[s.end..e].trim().is_empty())
                    .map_or(e, |s| s.start);
                let prefix = if kept > 0 && !self.text[..kept].ends_with('\n') {
                    "\n"
                } else {
                    ""
                };
                edits.push((e..e, format!("{prefix}{block}")));
            }
        }
        edits.sort_by_key(|(r, _)| (r.start, r.end));
        let mut out = String::with_capacity(self.text.len());
        let mut cursor = 0;
        for (r, t) in edits {
            if r.start < cursor {
                continue;
            }
            out.push_str(&self.text[cursor..r.start]);
            out.push_str(&t);
            cursor = r.end;
        }
        out.push_str(&self.text[cursor..]);
        out
    }
}

impl Loaded for YamlDoc {
    fn leaves(&self) -> &[Leaf] {
        &self.leaves
    }

    fn metadata(&self) -> Option<&Value> {
        self.metadata.as_ref()
    }

    /// The decrypted text: each encrypted leaf replaced by its plaintext, rendered so it reads
    /// back as the same type; multi-line strings outside flow collections become `|` blocks.
    fn emit_plain(
        &self,
        values: &[Option<Plain>],
        _indent: Option<usize>,
    ) -> Result<String, SopsError> {
        let reps: Vec<Option<String>> = values
            .iter()
            .zip(&self.spans)
            .map(|(v, span)| {
                // A block scalar runs to the end of its last line: with something after the
                // value on its line (a comment), that would become part of the value.
                let rest = &self.text[span.range.end..];
                let alone = rest[..rest.find('\n').unwrap_or(rest.len())]
                    .trim()
                    .is_empty();
                v.as_ref().map(|p| match p {
                    Plain::Str(s, _) if !span.flow && alone && s.contains('\n') => {
                        let line_start = self.text[..span.range.start]
                            .rfind('\n')
                            .map_or(0, |i| i + 1);
                        let line = &self.text[line_start..span.range.start];
                        let column = line.len() - line.trim_start_matches(' ').len();
                        // A sequence item's dash counts as indentation for its content.
                        let column = if line.trim_start().starts_with("- ") {
                            column + 2
                        } else {
                            column
                        };
                        block_scalar(s, column + self.indent).unwrap_or_else(|| render_plain(p))
                    }
                    _ => render_plain(p),
                })
            })
            .collect();
        Ok(self.emit(&reps, None))
    }

    /// The encrypted text: `--indent`, else the file's own step, for the `sops:` block.
    fn emit_encrypted(
        &self,
        values: &[Option<String>],
        meta: &Value,
        indent: Option<usize>,
    ) -> String {
        let step = indent.unwrap_or(self.indent).clamp(1, 64);
        self.emit(values, Some(&sops_block(meta, step)))
    }
}
