//! Document streams: YAML (`---`-separated) or JSON (concatenated objects) in, and out exactly
//! as kubeseal prints them (Go's JSON pretty printer, YAML with sorted keys).

use std::collections::BTreeMap;
use std::io;

use serde_json::Value;

use super::ManifestError;

/// One document of a multi-document input.
#[derive(Clone)]
pub struct Document {
    /// 1-based position in the input.
    pub index: usize,
    /// 1-based line where it starts.
    pub line: usize,
    /// Its content.
    pub value: Value,
}

// A document may be a Secret: Debug names it, never its content.
impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Document")
            .field("index", &self.index)
            .field("line", &self.line)
            .field("kind", &self.kind())
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

impl Document {
    /// `kind` of the document, if any.
    pub fn kind(&self) -> Option<&str> {
        self.value.get("kind").and_then(Value::as_str)
    }

    /// `metadata.name`, if any.
    pub fn name(&self) -> Option<&str> {
        self.value.pointer("/metadata/name").and_then(Value::as_str)
    }
}

/// Input format of a document stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Pretty JSON as the Go serializer writes it.
    Json,
    /// YAML, each document starting with `---`.
    Yaml,
}

impl Format {
    /// Guesses the format of an input: JSON if it starts with `{` or `[`.
    pub fn sniff(input: &str) -> Format {
        match input.trim_start().as_bytes().first() {
            Some(b'{') | Some(b'[') => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// Splits YAML text at `---` lines: (1-based start line, text) per document.
pub fn split_yaml(input: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1usize;
    let mut offset = 0usize;
    for (i, line) in input.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_sep = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        let is_end = bare == "...";
        if is_sep || is_end {
            docs.push((start_line, &input[start..offset]));
            // `--- value` keeps its content on the separator line.
            start = if is_sep && bare.len() > 3 {
                offset + 4
            } else {
                offset + line.len()
            };
            start_line = if is_sep && bare.len() > 3 {
                i + 1
            } else {
                i + 2
            };
        }
        offset += line.len();
    }
    docs.push((start_line, &input[start..]));
    docs.retain(|(_, text)| !is_blank_yaml(text));
    docs
}

fn is_blank_yaml(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#')
    })
}

/// How every YAML input is read: YAML 1.1 octals as kubectl reads them, and errors without
/// source snippets, which would quote the offending line (and so possibly a secret value).
pub fn yaml_read_options() -> serde_saphyr::Options {
    serde_saphyr::options! { legacy_octal_numbers: true, with_snippet: false }
}

/// Parses a YAML (`---`-separated) or JSON (concatenated objects) stream. `kind: List`
/// documents are flattened into their items. Empty documents are skipped.
pub fn parse_documents(input: &str) -> Result<Vec<Document>, ManifestError> {
    let mut values: Vec<(usize, Value)> = Vec::new();
    match Format::sniff(input) {
        Format::Json => {
            let mut stream = serde_json::Deserializer::from_str(input).into_iter::<Value>();
            loop {
                let line = 1 + input[..stream.byte_offset()].matches('\n').count();
                match stream.next() {
                    None => break,
                    Some(Ok(v)) => values.push((line, v)),
                    Some(Err(e)) => {
                        return Err(ManifestError::Syntax {
                            line: e.line(),
                            reason: format!("invalid JSON: {e}"),
                        });
                    }
                }
            }
        }
        Format::Yaml => {
            let options = yaml_read_options();
            for (line, text) in split_yaml(input) {
                let v: Value =
                    serde_saphyr::from_str_with_options(text, options.clone()).map_err(|e| {
                        // The parser counts lines from the document's start; the message
                        // counts them in the input, as the `line` it is reported at.
                        let offset = u64::try_from(line.saturating_sub(1)).unwrap_or(0);
                        let e = e.render_with_options(serde_saphyr::render_options! {
                            line_offset: offset,
                            snippets: serde_saphyr::SnippetMode::Off,
                        });
                        ManifestError::Syntax {
                            line,
                            reason: format!("invalid YAML in the document that starts here: {e}"),
                        }
                    })?;
                if !v.is_null() {
                    values.push((line, v));
                }
            }
        }
    }
    let mut docs = Vec::new();
    for (line, value) in values {
        // `kind: List` (and typed lists such as SecretList, as `kubectl get -o yaml` prints).
        let is_list = value
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k.ends_with("List"));
        if let (true, Some(Value::Array(items))) = (is_list, value.get("items")) {
            for item in items {
                docs.push(Document {
                    index: docs.len() + 1,
                    line,
                    value: item.clone(),
                });
            }
            continue;
        }
        if !value.is_object() {
            return Err(ManifestError::Syntax {
                line,
                reason: "expected a Kubernetes object (a mapping with apiVersion and kind)".into(),
            });
        }
        docs.push(Document {
            index: docs.len() + 1,
            line,
            value,
        });
    }
    Ok(docs)
}

// Output

/// Serialises like Go's `encoding/json` pretty printer: two-space indent, and `<`, `>`, `&`,
/// U+2028, U+2029 escaped as `\u003c`… so the bytes match kubeseal's.
struct GoFormatter<'a>(serde_json::ser::PrettyFormatter<'a>);

impl serde_json::ser::Formatter for GoFormatter<'_> {
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut rest = fragment;
        while let Some(pos) = rest.find(['<', '>', '&', '\u{2028}', '\u{2029}']) {
            w.write_all(&rest.as_bytes()[..pos])?;
            let c = rest[pos..].chars().next().unwrap_or('&');
            write!(w, "\\u{:04x}", c as u32)?;
            rest = &rest[pos + c.len_utf8()..];
        }
        w.write_all(rest.as_bytes())
    }
}

/// One document as kubeseal prints JSON: Go-style pretty JSON and a newline.
pub fn to_json(value: &Value) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut out,
        GoFormatter(serde_json::ser::PrettyFormatter::with_indent(b"  ")),
    );
    // Serialising a Value into a Vec cannot fail.
    let _ = serde::Serialize::serialize(value, &mut ser);
    let mut s = String::from_utf8(out).unwrap_or_default();
    s.push('\n');
    s
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(m) => {
            let ordered: BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(ordered.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// A YAML document body in the style Kubernetes tools write: two-space indent, sequences
/// flush with their key, long strings (base64 ciphertext) on one line rather than folded.
/// Keys keep the value's order.
pub fn yaml_body(value: &Value) -> String {
    let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
    // Serialising a JSON value cannot fail.
    serde_saphyr::to_string_with_options(value, options).unwrap_or_default()
}

/// One document as kubeseal prints YAML: `---`, then keys sorted as sigs.k8s.io/yaml does.
pub fn to_yaml(value: &Value) -> String {
    let body = yaml_body(&sorted(value));
    let mut s = String::with_capacity(body.len() + 5);
    s.push_str("---\n");
    s.push_str(&body);
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// Serialises a document in `format`.
pub fn emit(value: &Value, format: Format) -> String {
    match format {
        Format::Json => to_json(value),
        Format::Yaml => to_yaml(value),
    }
}
