//! Walking the lossless syntax tree: scalars resolved as YAML 1.2's core schema (as go-yaml v3,
//! and so sops, reads them), the `sops:` block as JSON, and the data leaves in file order with
//! their spans and comment stacks.

use std::ops::Range;

use rowan::ast::AstNode;
use serde_json::Value;
use yaml_edit::{Lang, SyntaxKind};

use super::Span;
use crate::sops::SopsError;
use crate::sops::walk::{Leaf, Scalar};

type Node = rowan::SyntaxNode<Lang>;

pub(super) fn range(n: &Node) -> Range<usize> {
    let r = n.text_range();
    usize::from(r.start())..usize::from(r.end())
}

fn is_layout(k: SyntaxKind) -> bool {
    matches!(
        k,
        SyntaxKind::NEWLINE | SyntaxKind::INDENT | SyntaxKind::WHITESPACE
    )
}

/// The span of a scalar without trailing line breaks (block scalars own them).
fn scalar_span(n: &Node) -> Range<usize> {
    let mut end = usize::from(n.text_range().start());
    for t in n.children_with_tokens() {
        if !is_layout(t.kind()) && t.kind() != SyntaxKind::COMMENT {
            end = usize::from(t.text_range().end());
        }
    }
    usize::from(n.text_range().start())..end
}

fn in_flow(n: &Node) -> bool {
    // A flow collection's node starts with its bracket; checking only the first token keeps
    // this O(depth) instead of scanning every sibling of every ancestor.
    n.ancestors().any(|a| {
        matches!(a.kind(), SyntaxKind::MAPPING | SyntaxKind::SEQUENCE)
            && a.first_token().is_some_and(|t| {
                matches!(t.kind(), SyntaxKind::LEFT_BRACE | SyntaxKind::LEFT_BRACKET)
            })
    })
}

/// YAML 1.2 core-schema resolution of a plain scalar (what go-yaml v3, and so sops, does).
pub(super) fn resolve_plain(t: &str) -> Scalar {
    match t {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" => return Scalar::Bool(true),
        "false" | "False" | "FALSE" => return Scalar::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Scalar::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        _ => {}
    }
    let b = t.as_bytes();
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    let unsigned = b
        .strip_prefix(b"-")
        .or_else(|| b.strip_prefix(b"+"))
        .unwrap_or(b);
    if digits(unsigned) {
        if let Ok(i) = t.parse::<i64>() {
            return Scalar::Int(i);
        }
        return t
            .parse::<f64>()
            .map_or_else(|_| Scalar::Str(t.to_string()), Scalar::Float);
    }
    if let Some(h) = t
        .strip_prefix("0x")
        .filter(|h| !h.is_empty() && h.bytes().all(|c| c.is_ascii_hexdigit()))
    {
        return i64::from_str_radix(h, 16).map_or_else(|_| Scalar::Str(t.to_string()), Scalar::Int);
    }
    if let Some(o) = t
        .strip_prefix("0o")
        .filter(|o| !o.is_empty() && o.bytes().all(|c| (b'0'..=b'7').contains(&c)))
    {
        return i64::from_str_radix(o, 8).map_or_else(|_| Scalar::Str(t.to_string()), Scalar::Int);
    }
    // [-+]? ( \.[0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
    let (mantissa, exponent) = match unsigned.iter().position(|&c| c == b'e' || c == b'E') {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let mantissa_ok = match mantissa.iter().position(|&c| c == b'.') {
        Some(0) => digits(&mantissa[1..]),
        Some(i) => digits(&mantissa[..i]) && mantissa[i + 1..].iter().all(u8::is_ascii_digit),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        digits(
            e.strip_prefix(b"-")
                .or_else(|| e.strip_prefix(b"+"))
                .unwrap_or(e),
        )
    });
    if mantissa_ok
        && exponent_ok
        && (mantissa.contains(&b'.') || exponent.is_some())
        && let Ok(f) = t.parse::<f64>()
    {
        return Scalar::Float(f);
    }
    Scalar::Str(t.to_string())
}

fn scalar_value(n: &Node) -> Result<Scalar, SopsError> {
    let raw = n.text().to_string();
    // Fast path for the bulk of an encrypted file, and for simple one-line plain scalars.
    if !raw.contains(['\n', '"', '\'', '#']) && !raw.starts_with(['|', '>', '!', '&', '*']) {
        return Ok(resolve_plain(raw.trim()));
    }
    let s = yaml_edit::Scalar::cast(n.clone())
        .ok_or_else(|| SopsError::Format("unexpected YAML node".into()))?;
    if s.is_quoted() || s.is_block() {
        return Ok(Scalar::Str(s.as_string()));
    }
    Ok(match resolve_plain(s.as_string().trim()) {
        Scalar::Str(_) => Scalar::Str(s.as_string()),
        other => other,
    })
}

fn key_text(entry: &Node) -> Result<String, SopsError> {
    let key = entry
        .children()
        .find(|c| c.kind() == SyntaxKind::KEY)
        .ok_or_else(|| SopsError::Format("mapping entry without a key".into()))?;
    // `: value` (an empty key without `?`): not YAML, and sops (libyaml) refuses it. The
    // lossless parser reads `: ! k :` as a mapping the other readers do not see, so what we
    // wrote from it did not read back as a SOPS file.
    if key.text_range().is_empty()
        && !entry
            .children_with_tokens()
            .any(|t| t.kind() == SyntaxKind::QUESTION)
    {
        return Err(SopsError::Format(
            "a mapping entry has no key (`: value`); write `? ` before an empty key".into(),
        ));
    }
    let scalar = key
        .descendants()
        .find(|c| c.kind() == SyntaxKind::SCALAR)
        .ok_or_else(|| SopsError::Format("complex mapping keys are not supported".into()))?;
    match scalar_value(&scalar)? {
        Scalar::Str(s) => Ok(s),
        Scalar::Int(i) => Ok(i.to_string()),
        Scalar::Float(f) => Ok(crate::sops::walk::format_float(f)),
        Scalar::Bool(b) => Ok(b.to_string()),
        Scalar::Null => Ok(String::new()),
    }
}

/// The content node of a VALUE / SEQUENCE_ENTRY / DOCUMENT.
pub(super) fn content(n: &Node) -> Option<Node> {
    n.children().find(|c| {
        matches!(
            c.kind(),
            SyntaxKind::SCALAR
                | SyntaxKind::MAPPING
                | SyntaxKind::SEQUENCE
                | SyntaxKind::TAGGED_NODE
                | SyntaxKind::ALIAS
        )
    })
}

/// Recursive, so bounded: `depth` counts the collections around `n`.
pub(super) fn to_json(n: &Node, depth: usize) -> Result<Value, SopsError> {
    if matches!(n.kind(), SyntaxKind::MAPPING | SyntaxKind::SEQUENCE)
        && depth >= crate::sops::MAX_DEPTH
    {
        return Err(crate::sops::depth::too_deep());
    }
    Ok(match n.kind() {
        SyntaxKind::MAPPING => {
            let mut m = serde_json::Map::new();
            for e in n
                .children()
                .filter(|c| c.kind() == SyntaxKind::MAPPING_ENTRY)
            {
                let k = key_text(&e)?;
                let v = e
                    .children()
                    .find(|c| c.kind() == SyntaxKind::VALUE)
                    .and_then(|v| content(&v))
                    .map(|c| to_json(&c, depth + 1))
                    .transpose()?
                    .unwrap_or(Value::Null);
                m.insert(k, v);
            }
            Value::Object(m)
        }
        SyntaxKind::SEQUENCE => Value::Array(
            n.children()
                .filter(|c| c.kind() == SyntaxKind::SEQUENCE_ENTRY)
                .filter_map(|e| content(&e))
                .map(|c| to_json(&c, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        SyntaxKind::SCALAR => match scalar_value(n)? {
            Scalar::Str(s) => Value::String(s),
            Scalar::Int(i) => Value::from(i),
            Scalar::Float(f) => Value::from(f),
            Scalar::Bool(b) => Value::Bool(b),
            Scalar::Null => Value::Null,
        },
        SyntaxKind::TAGGED_NODE => content(n)
            .map(|c| to_json(&c, depth))
            .transpose()?
            .unwrap_or(Value::Null),
        _ => {
            return Err(SopsError::Format(
                "YAML aliases are not supported in SOPS files".into(),
            ));
        }
    })
}

pub(super) struct Walker<'a> {
    pub(super) leaves: &'a mut Vec<Leaf>,
    pub(super) spans: &'a mut Vec<Span>,
    /// Mapping entries and sequence items: (offset, column, path of the enclosing collection).
    pub(super) entries: Vec<(usize, usize, Vec<String>)>,
    /// Standalone comment tokens, placed once every entry is known.
    pub(super) comments: Vec<rowan::SyntaxToken<Lang>>,
    /// The innermost entry being walked (its offset), and per leaf pushed by this walker the
    /// entry that owns it: the comment stacks are computed per entry.
    pub(super) owner: usize,
    pub(super) owners: Vec<usize>,
    pub(super) first_leaf: usize,
    /// Top-level `sops` entries: metadata, not data.
    pub(super) sops_entries: Vec<Node>,
}

fn column(text: &str, offset: usize) -> usize {
    offset - text[..offset].rfind('\n').map_or(0, |i| i + 1)
}

impl Walker<'_> {
    fn entry(&mut self, n: &Node, path: &[String]) {
        // Where the entry's own text starts: a parser may attach preceding comments and
        // indentation to the entry node.
        let start = n
            .descendants_with_tokens()
            .filter_map(|t| t.into_token())
            .find(|t| !is_layout(t.kind()) && t.kind() != SyntaxKind::COMMENT)
            .map_or_else(
                || usize::from(n.text_range().start()),
                |t| usize::from(t.text_range().start()),
            );
        self.entries.push((start, usize::MAX, path.to_vec()));
        self.owner = start;
    }

    fn push_value(&mut self, leaf: Leaf, span: Span) {
        self.leaves.push(leaf);
        self.spans.push(span);
        self.owners.push(self.owner);
    }

    /// sops' comment stack for every leaf: walking entries and comments in file order, each
    /// nesting level (judged by column) holds the comments since its previous entry; a value
    /// sees every level's comments at the moment its entry starts.
    fn stack_comments(&mut self, text: &str, comment_offsets: &[(usize, usize)]) {
        // (offset, column, Some(leaf index) for a comment)
        let mut items: Vec<(usize, usize, Option<usize>)> =
            self.entries.iter().map(|e| (e.0, e.1, None)).collect();
        for &(offset, leaf) in comment_offsets {
            items.push((offset, column(text, offset), Some(leaf)));
        }
        items.sort_by_key(|i| i.0);

        struct Level {
            col: usize,
            pending: Vec<String>,
            consumed: bool,
        }
        let mut levels: Vec<Level> = Vec::new();
        let mut at_entry: std::collections::HashMap<usize, Vec<String>> =
            std::collections::HashMap::new();
        for (offset, col, comment) in items {
            while levels.last().is_some_and(|l| l.col > col) {
                levels.pop();
            }
            if levels.last().map(|l| l.col) != Some(col) {
                levels.push(Level {
                    col,
                    pending: Vec::new(),
                    consumed: false,
                });
            }
            if let Some(l) = levels.last_mut() {
                if l.consumed {
                    l.pending.clear();
                    l.consumed = false;
                }
                match comment {
                    Some(i) => {
                        if let Scalar::Str(t) = &self.leaves[i].value {
                            l.pending.push(t.clone());
                        }
                    }
                    None => l.consumed = true,
                }
            }
            let stack: Vec<String> = levels
                .iter()
                .flat_map(|l| l.pending.iter().cloned())
                .collect();
            match comment {
                Some(i) => self.leaves[i].comments = stack,
                None => {
                    at_entry.insert(offset, stack);
                }
            }
        }

        for (i, owner) in self.owners.iter().enumerate() {
            let leaf = &mut self.leaves[self.first_leaf + i];
            if let (false, Some(stack)) = (leaf.comment, at_entry.get(owner)) {
                leaf.comments = stack.clone();
            }
        }
    }

    /// Gives each standalone comment the path of the collection it sits in, judged by
    /// indentation as a reader would: the entries at the comment's column that follow it
    /// (a head comment), else those that precede it (a foot comment). sops binds a comment to
    /// that collection's path.
    pub(super) fn place_comments(&mut self, text: &str) {
        for e in &mut self.entries {
            e.1 = column(text, e.0);
        }
        let mut comment_offsets = Vec::new();
        for t in std::mem::take(&mut self.comments) {
            let start = usize::from(t.text_range().start());
            let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
            if !text[line_start..start].trim().is_empty() {
                continue; // a trailing comment after a value: left as it is
            }
            let col = start - line_start;
            let after = self
                .entries
                .iter()
                .filter(|e| e.0 > start)
                .take_while(|e| e.1 >= col)
                .find(|e| e.1 == col);
            let before = self
                .entries
                .iter()
                .rev()
                .filter(|e| e.0 < start)
                .take_while(|e| e.1 >= col)
                .find(|e| e.1 == col);
            let path = after.or(before).map(|e| e.2.clone()).unwrap_or_default();
            let body = t.text()[1..].to_string();
            comment_offsets.push((start, self.leaves.len()));
            self.push_value(
                Leaf {
                    path,
                    value: Scalar::Str(body),
                    comment: true,
                    comments: Vec::new(),
                },
                Span {
                    range: start + 1..usize::from(t.text_range().end()),
                    flow: false,
                },
            );
        }
        self.stack_comments(text, &comment_offsets);
    }

    /// Recursive, so bounded: `depth` counts the collections around `n`.
    pub(super) fn node(
        &mut self,
        n: &Node,
        depth: usize,
        path: &mut Vec<String>,
    ) -> Result<(), SopsError> {
        match n.kind() {
            SyntaxKind::MAPPING | SyntaxKind::SEQUENCE if depth >= crate::sops::MAX_DEPTH => {
                Err(crate::sops::depth::too_deep())
            }
            SyntaxKind::MAPPING | SyntaxKind::SEQUENCE => {
                for c in n.children_with_tokens() {
                    match c {
                        rowan::NodeOrToken::Node(e) if e.kind() == SyntaxKind::MAPPING_ENTRY => {
                            self.entry(&e, path);
                            let key = key_text(&e)?;
                            if path.is_empty() && key == "sops" {
                                self.sops_entries.push(e);
                                continue;
                            }
                            path.push(key);
                            let value = e.children().find(|c| c.kind() == SyntaxKind::VALUE);
                            if let Some(c) = value.as_ref().and_then(content) {
                                self.node(&c, depth + 1, path)?;
                            } else {
                                self.push_value(
                                    Leaf {
                                        path: path.clone(),
                                        value: Scalar::Null,
                                        comment: false,
                                        comments: Vec::new(),
                                    },
                                    Span {
                                        range: 0..0,
                                        flow: false,
                                    },
                                );
                            }
                            path.pop();
                        }
                        rowan::NodeOrToken::Node(e) if e.kind() == SyntaxKind::SEQUENCE_ENTRY => {
                            self.entry(&e, path);
                            if let Some(c) = content(&e) {
                                self.node(&c, depth + 1, path)?;
                            }
                        }
                        _ => {}
                    }
                }
                Ok(())
            }
            SyntaxKind::SCALAR => {
                let leaf = Leaf {
                    path: path.clone(),
                    value: scalar_value(n)?,
                    comment: false,
                    comments: Vec::new(),
                };
                self.push_value(
                    leaf,
                    Span {
                        range: scalar_span(n),
                        flow: in_flow(n),
                    },
                );
                Ok(())
            }
            SyntaxKind::TAGGED_NODE => match content(n) {
                Some(c) => self.node(&c, depth, path),
                None => Ok(()),
            },
            _ => Err(SopsError::Format(format!(
                "YAML aliases are not supported in SOPS files (at {})",
                if path.is_empty() {
                    "the top level".to_string()
                } else {
                    path.join(".")
                }
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_schema_resolution() {
        assert_eq!(resolve_plain("5432"), Scalar::Int(5432));
        assert_eq!(resolve_plain("-7"), Scalar::Int(-7));
        assert_eq!(resolve_plain("0x1F"), Scalar::Int(31));
        assert_eq!(resolve_plain("0o17"), Scalar::Int(15));
        assert_eq!(resolve_plain("0.5"), Scalar::Float(0.5));
        assert_eq!(resolve_plain("1e3"), Scalar::Float(1000.0));
        assert_eq!(resolve_plain(".5"), Scalar::Float(0.5));
        assert_eq!(resolve_plain("True"), Scalar::Bool(true));
        assert_eq!(resolve_plain("~"), Scalar::Null);
        // YAML 1.1 words are strings in 1.2 (as in go-yaml v3 and sops).
        assert_eq!(resolve_plain("yes"), Scalar::Str("yes".into()));
        assert_eq!(resolve_plain("on"), Scalar::Str("on".into()));
        assert_eq!(resolve_plain("1.2.3"), Scalar::Str("1.2.3".into()));
        assert_eq!(resolve_plain("12abc"), Scalar::Str("12abc".into()));
        assert_eq!(resolve_plain("0755"), Scalar::Int(755));
    }
}
