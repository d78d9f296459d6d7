//! Secret ⇄ SealedSecret documents, shaped exactly as kubeseal reads and writes them.
//!
//! Documents are handled as JSON values (with field order preserved) rather than typed
//! structs: input may carry fields we do not model, and output must follow the Go
//! serializer's field order (`kind, apiVersion, metadata, spec{template, encryptedData}`),
//! its `creationTimestamp: null`, and its HTML-safe string escaping, so that our output is
//! byte-for-byte what kubeseal prints for the same ciphertext.

use std::collections::BTreeMap;
use std::io;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::keyring::{Binding, Diagnosis, Keyring};
use super::keys::{Fingerprint, PrivateKey, PublicKey};
use super::{KeyError, OpenError, Scope, SealError, seal};
use crate::secret::{ExposeSecret, SecretBytes, secret_bytes};

/// API version of SealedSecrets.
pub const SEALED_SECRET_API_VERSION: &str = "bitnami.com/v1alpha1";
/// Kind of SealedSecrets.
pub const SEALED_SECRET_KIND: &str = "SealedSecret";

/// Annotations that hold a full copy of the applied object (and so the Secret in clear):
/// never copied into a template.
pub const LAST_APPLIED_ANNOTATIONS: [&str; 2] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "kubecfg.ksonnet.io/last-applied-configuration",
];

/// A problem with a document, naming the field at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The text is not YAML/JSON.
    #[error("line {line}: {reason}")]
    Syntax {
        /// 1-based line where the document starts or the error was found.
        line: usize,
        /// Parser message.
        reason: String,
    },
    /// A field is missing or has the wrong shape.
    #[error("{field}: {reason}")]
    Field {
        /// Dotted path of the field (`data.password`, `metadata.name`).
        field: String,
        /// What is wrong, with a hint where one helps.
        reason: String,
    },
    /// Values could not be opened.
    #[error("{}", .0.iter().map(|(k, r)| format!("encryptedData.{k}: {r}")).collect::<Vec<_>>().join("; "))]
    Unseal(Vec<(String, String)>),
    /// Sealing failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// A key could not be read.
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn field(field: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

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
                        ManifestError::Syntax {
                            line,
                            reason: format!("invalid YAML in the document starting here: {e}"),
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

// ---------------------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------------------
// Metadata helpers

fn obj<'a>(v: &'a Value, path: &str) -> Result<Option<&'a Map<String, Value>>, ManifestError> {
    match v {
        Value::Null => Ok(None),
        Value::Object(m) => Ok(Some(m)),
        _ => Err(field(path, "must be a mapping")),
    }
}

fn get_str<'a>(
    m: Option<&'a Map<String, Value>>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, ManifestError> {
    match m.and_then(|m| m.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(field(
            format!("{path}.{key}"),
            "must be a string (quote the value)",
        )),
    }
}

fn string_map(
    m: Option<&Map<String, Value>>,
    key: &str,
    path: &str,
) -> Result<BTreeMap<String, String>, ManifestError> {
    let mut out = BTreeMap::new();
    match m.and_then(|m| m.get(key)) {
        None | Some(Value::Null) => {}
        Some(Value::Object(entries)) => {
            for (k, v) in entries {
                match v {
                    Value::String(s) => {
                        out.insert(k.clone(), s.clone());
                    }
                    _ => {
                        return Err(field(
                            format!("{path}.{key}.{k}"),
                            "must be a string (quote it)",
                        ));
                    }
                }
            }
        }
        Some(_) => {
            return Err(field(
                format!("{path}.{key}"),
                "must be a mapping of strings",
            ));
        }
    }
    Ok(out)
}

fn scope_of(meta: Option<&Map<String, Value>>) -> Scope {
    let ann = meta
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object);
    Scope::from_annotations(|k| ann.and_then(|a| a.get(k)).and_then(Value::as_str))
}

fn sorted_string_map(m: &BTreeMap<String, String>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// ObjectMeta in Go field order, keeping what a template or an unsealed Secret should carry:
/// name, generateName, namespace, `creationTimestamp: null`, labels, annotations (without
/// last-applied copies), finalizers. Server-set fields and ownerReferences are dropped.
fn object_meta(
    source: Option<&Map<String, Value>>,
    path: &str,
    name: &str,
    namespace: &str,
) -> Result<Map<String, Value>, ManifestError> {
    let mut out = Map::new();
    if !name.is_empty() {
        out.insert("name".into(), name.into());
    }
    if let Some(g) = get_str(source, "generateName", path)? {
        out.insert("generateName".into(), g.into());
    }
    if !namespace.is_empty() {
        out.insert("namespace".into(), namespace.into());
    }
    out.insert("creationTimestamp".into(), Value::Null);
    let labels = string_map(source, "labels", path)?;
    if !labels.is_empty() {
        out.insert("labels".into(), sorted_string_map(&labels));
    }
    let mut annotations = string_map(source, "annotations", path)?;
    for a in LAST_APPLIED_ANNOTATIONS {
        annotations.remove(a);
    }
    if !annotations.is_empty() {
        out.insert("annotations".into(), sorted_string_map(&annotations));
    }
    if let Some(f) = source.and_then(|m| m.get("finalizers")) {
        match f {
            Value::Null => {}
            Value::Array(items) if items.iter().all(Value::is_string) => {
                if !items.is_empty() {
                    out.insert("finalizers".into(), f.clone());
                }
            }
            _ => {
                return Err(field(
                    format!("{path}.finalizers"),
                    "must be a list of strings",
                ));
            }
        }
    }
    Ok(out)
}

fn set_scope_annotations(meta: &mut Map<String, Value>, scope: Scope) {
    let ann = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if !ann.is_object() {
        *ann = Value::Object(Map::new());
    }
    if let Value::Object(a) = ann {
        a.remove(super::NAMESPACE_WIDE_ANNOTATION);
        a.remove(super::CLUSTER_WIDE_ANNOTATION);
        if let Some(k) = scope.annotation() {
            a.insert(k.into(), "true".into());
        }
        if a.is_empty() {
            meta.remove("annotations");
        }
    }
}

fn is_valid_data_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k != "."
        && k != ".."
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

// ---------------------------------------------------------------------------------------
// Seal

/// How to seal a Secret (the kubeseal flags that shape the result).
#[derive(Debug, Clone, Default)]
pub struct SealOptions {
    /// `--scope`: when set, rewrites the Secret's scope annotations.
    pub scope: Option<Scope>,
    /// `--name`: overrides `metadata.name`.
    pub name: Option<String>,
    /// `-n/--namespace` given explicitly: fills a missing namespace, and must match a present one.
    pub namespace: Option<String>,
    /// The kubeconfig namespace, used when the Secret has none and no `-n` was given.
    pub fallback_namespace: Option<String>,
    /// `--allow-empty-data`.
    pub allow_empty_data: bool,
}

/// The plaintext items of a Secret: `data` (base64-decoded) then `stringData`, which wins on a
/// clash as it does in the API server.
pub fn secret_items(secret: &Value) -> Result<BTreeMap<String, SecretBytes>, ManifestError> {
    let mut items = BTreeMap::new();
    if let Some(data) = obj(secret.get("data").unwrap_or(&Value::Null), "data")? {
        for (k, v) in data {
            let bytes = match v {
                Value::Null => Vec::new(),
                Value::String(s) => {
                    let compact: Zeroizing<String> =
                        Zeroizing::new(s.chars().filter(|c| !matches!(c, '\n' | '\r')).collect());
                    // The base64 crate's error names a byte of the value and its offset: a
                    // secret's, here. Never formatted; the field is named instead.
                    B64.decode(compact.as_bytes()).map_err(|_| {
                        field(
                            format!("data.{k}"),
                            "invalid base64; hint: put plain text under stringData instead",
                        )
                    })?
                }
                _ => return Err(field(format!("data.{k}"), "must be a base64 string")),
            };
            items.insert(k.clone(), secret_bytes(bytes));
        }
    }
    if let Some(data) = obj(
        secret.get("stringData").unwrap_or(&Value::Null),
        "stringData",
    )? {
        for (k, v) in data {
            let bytes = match v {
                Value::Null => Vec::new(),
                Value::String(s) => s.as_bytes().to_vec(),
                _ => {
                    return Err(field(
                        format!("stringData.{k}"),
                        "must be a string (quote the value)",
                    ));
                }
            };
            items.insert(k.clone(), secret_bytes(bytes));
        }
    }
    for k in items.keys() {
        if !is_valid_data_key(k) {
            return Err(field(
                format!("data.{k}"),
                "invalid key: keys may contain only letters, digits, '-', '_' and '.'",
            ));
        }
    }
    Ok(items)
}

/// The resolved identity of a Secret being sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Name of the Secret and SealedSecret.
    pub name: String,
    /// Namespace (empty only for cluster-wide without one).
    pub namespace: String,
    /// Scope.
    pub scope: Scope,
}

fn check_kind(doc: &Value, want: &str) -> Result<(), ManifestError> {
    match doc.get("kind").and_then(Value::as_str) {
        Some(k) if k == want => Ok(()),
        Some(k) => Err(field("kind", format!("expected a {want}, found '{k}'"))),
        None => Err(field("kind", format!("missing; expected a {want}"))),
    }
}

/// Seals a Secret document into a SealedSecret document, as `kubeseal` does.
pub fn seal_secret(
    secret: &Value,
    opts: &SealOptions,
    key: &PublicKey,
) -> Result<Value, ManifestError> {
    check_kind(secret, "Secret")?;
    if let Some(v) = secret
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|v| *v != "v1")
    {
        return Err(field(
            "apiVersion",
            format!("expected 'v1' for a Secret, found '{v}'"),
        ));
    }
    let meta_in = obj(secret.get("metadata").unwrap_or(&Value::Null), "metadata")?;
    let mut meta: Map<String, Value> = meta_in.cloned().unwrap_or_default();

    let items = secret_items(secret)?;
    if items.is_empty() && !opts.allow_empty_data {
        return Err(field(
            "data",
            "the Secret has no data or stringData; assuming this is a mistake. Hint: pass --allow-empty-data to seal it anyway",
        ));
    }

    let name = match &opts.name {
        Some(n) => n.clone(),
        None => get_str(meta_in, "name", "metadata")?
            .unwrap_or("")
            .to_string(),
    };
    if name.is_empty() {
        return Err(field(
            "metadata.name",
            "missing; hint: set metadata.name or pass --name",
        ));
    }
    if let Some(s) = opts.scope {
        set_scope_annotations(&mut meta, s);
    }
    let scope = scope_of(Some(&meta));
    let doc_ns = get_str(meta_in, "namespace", "metadata")?
        .unwrap_or("")
        .to_string();
    let namespace = match (&opts.namespace, doc_ns.is_empty()) {
        (Some(flag), false) if *flag != doc_ns => {
            return Err(field(
                "metadata.namespace",
                format!("is '{doc_ns}' but --namespace says '{flag}'; hint: remove one of them"),
            ));
        }
        (Some(flag), true) => flag.clone(),
        (_, false) => doc_ns,
        (None, true) if scope.needs_namespace() => opts.fallback_namespace.clone().ok_or_else(|| {
            field(
                "metadata.namespace",
                "missing, and no namespace is set in the kubeconfig context; hint: set metadata.namespace, pass -n, or use --scope cluster-wide",
            )
        })?,
        (None, true) => String::new(),
    };

    let label = scope.label(&namespace, &name);
    let mut encrypted = Map::new();
    for (k, v) in &items {
        let blob = seal(key, &label, v.expose_secret())?;
        encrypted.insert(k.clone(), B64.encode(blob).into());
    }

    let mut template = Map::new();
    template.insert(
        "metadata".into(),
        object_meta(Some(&meta), "metadata", &name, &namespace)?.into(),
    );
    if let Some(t) = get_str(secret.as_object(), "type", "")?.filter(|t| !t.is_empty()) {
        template.insert("type".into(), t.into());
    }
    match secret.get("immutable") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => {
            template.insert("immutable".into(), (*b).into());
        }
        Some(_) => return Err(field("immutable", "must be true or false")),
    }

    let mut ss_meta = Map::new();
    ss_meta.insert("name".into(), name.clone().into());
    if !namespace.is_empty() {
        ss_meta.insert("namespace".into(), namespace.clone().into());
    }
    ss_meta.insert("creationTimestamp".into(), Value::Null);
    if let Some(a) = scope.annotation() {
        let mut ann = Map::new();
        ann.insert(a.into(), "true".into());
        ss_meta.insert("annotations".into(), ann.into());
    }

    let mut spec = Map::new();
    spec.insert("template".into(), template.into());
    spec.insert("encryptedData".into(), encrypted.into());

    let mut out = Map::new();
    out.insert("kind".into(), SEALED_SECRET_KIND.into());
    out.insert("apiVersion".into(), SEALED_SECRET_API_VERSION.into());
    out.insert("metadata".into(), ss_meta.into());
    out.insert("spec".into(), spec.into());
    Ok(Value::Object(out))
}

/// Seals a single value (`kubeseal --raw`): the base64 text, no newline.
pub fn seal_raw(key: &PublicKey, target: &Target, value: &[u8]) -> Result<String, ManifestError> {
    let label = target.scope.label(&target.namespace, &target.name);
    Ok(B64.encode(seal(key, &label, value)?))
}

/// `--merge-into`: merges a freshly sealed document's items, template labels, annotations and
/// data into `orig`, keeping everything else of `orig`.
pub fn merge_into(orig: &mut Value, update: &Value) -> Result<(), ManifestError> {
    check_kind(orig, SEALED_SECRET_KIND)?;
    let spec = orig
        .as_object_mut()
        .and_then(|o| o.get_mut("spec"))
        .and_then(Value::as_object_mut)
        .ok_or_else(|| field("spec", "missing"))?;
    let merge = |dst: &mut Map<String, Value>, key: &str, src: Option<&Value>| {
        if let Some(Value::Object(src)) = src {
            let slot = dst.entry(key).or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(d) = slot {
                for (k, v) in src {
                    d.insert(k.clone(), v.clone());
                }
            }
        }
    };
    merge(spec, "encryptedData", update.pointer("/spec/encryptedData"));
    let template = spec
        .entry("template")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(t) = template {
        merge(t, "data", update.pointer("/spec/template/data"));
        let meta = t
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = meta {
            merge(
                m,
                "labels",
                update.pointer("/spec/template/metadata/labels"),
            );
            merge(
                m,
                "annotations",
                update.pointer("/spec/template/metadata/annotations"),
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Open (recovery unseal, reseal)

/// Name, namespace and scope of a SealedSecret document, as the controller reads them (from
/// its own metadata).
pub fn sealed_target(doc: &Value) -> Result<Target, ManifestError> {
    check_kind(doc, SEALED_SECRET_KIND)?;
    let meta = obj(doc.get("metadata").unwrap_or(&Value::Null), "metadata")?;
    let name = get_str(meta, "name", "metadata")?.unwrap_or("").to_string();
    let namespace = get_str(meta, "namespace", "metadata")?
        .unwrap_or("")
        .to_string();
    let scope = scope_of(meta);
    if name.is_empty() {
        return Err(field("metadata.name", "missing"));
    }
    Ok(Target {
        name,
        namespace,
        scope,
    })
}

fn encrypted_items(doc: &Value) -> Result<Vec<(String, &str)>, ManifestError> {
    let spec = obj(doc.get("spec").unwrap_or(&Value::Null), "spec")?
        .ok_or_else(|| field("spec", "missing"))?;
    let mut out = Vec::new();
    if let Some(enc) = obj(
        spec.get("encryptedData").unwrap_or(&Value::Null),
        "spec.encryptedData",
    )? {
        for (k, v) in enc {
            match v {
                Value::String(s) => out.push((k.clone(), s.as_str())),
                _ => {
                    return Err(field(
                        format!("spec.encryptedData.{k}"),
                        "must be a base64 string",
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// The bindings to try when a value does not open, for a good error message.
fn candidate_bindings(doc: &Value, target: &Target) -> Vec<Binding> {
    let mut pairs = vec![(target.namespace.clone(), target.name.clone())];
    let t_ns = doc
        .pointer("/spec/template/metadata/namespace")
        .and_then(Value::as_str);
    let t_name = doc
        .pointer("/spec/template/metadata/name")
        .and_then(Value::as_str);
    if t_ns.is_some() || t_name.is_some() {
        pairs.push((
            t_ns.unwrap_or(&target.namespace).to_string(),
            t_name.unwrap_or(&target.name).to_string(),
        ));
    }
    let mut out = Vec::new();
    for (namespace, name) in pairs {
        for scope in Scope::ALL {
            let b = Binding {
                scope,
                namespace: namespace.clone(),
                name: name.clone(),
            };
            if !(b.scope == target.scope
                && b.namespace == target.namespace
                && b.name == target.name)
            {
                out.push(b);
            }
        }
    }
    out
}

/// Explains an [`OpenError`] for a SealedSecret value in words a user can act on.
pub fn explain_open_failure(
    keyring: &Keyring,
    doc: &Value,
    target: &Target,
    blob: &[u8],
    err: &OpenError,
) -> String {
    let expected = Binding {
        scope: target.scope,
        namespace: target.namespace.clone(),
        name: target.name.clone(),
    };
    if *err != OpenError::NoKey {
        return err.to_string();
    }
    match keyring.diagnose(blob, &candidate_bindings(doc, target)) {
        Diagnosis::SealedFor(b, fp) => format!(
            "sealed with {} (key {}), but this SealedSecret asks for {}; hint: restore the original name/namespace/scope annotations, or re-seal",
            b.describe(),
            fp.short(),
            expected.describe()
        ),
        Diagnosis::Tampered => OpenError::Tampered.to_string(),
        Diagnosis::UnknownKey => format!(
            "sealed with a key that is not among the {} private key(s) given (or for a namespace/name we could not guess)",
            keyring.len()
        ),
    }
}

/// The result of opening every value of a SealedSecret.
pub struct OpenedItems {
    /// The document's target.
    pub target: Target,
    /// Plaintext per key.
    pub items: BTreeMap<String, SecretBytes>,
    /// Which key opened each item.
    pub opened_by: BTreeMap<String, Fingerprint>,
}

/// Opens the deprecated `spec.data` blob (the whole Secret sealed as one value), if the
/// document has one.
fn open_legacy<'k>(
    doc: &Value,
    keyring: &'k Keyring,
    target: &Target,
    label: &[u8],
) -> Result<Option<super::keyring::Opened<'k>>, ManifestError> {
    let Some(legacy) = doc.pointer("/spec/data").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let text = legacy
        .as_str()
        .ok_or_else(|| field("spec.data", "must be a base64 string"))?;
    let blob = B64
        .decode(text)
        .map_err(|_| field("spec.data", "invalid base64"))?;
    keyring.open(label, &blob).map(Some).map_err(|e| {
        field(
            "spec.data",
            explain_open_failure(keyring, doc, target, &blob, &e),
        )
    })
}

/// Opens every `encryptedData` item (or the deprecated `spec.data` blob). All failures are
/// collected and explained.
pub fn open_items(doc: &Value, keyring: &Keyring) -> Result<OpenedItems, ManifestError> {
    let target = sealed_target(doc)?;
    let label = target.scope.label(&target.namespace, &target.name);
    let enc = encrypted_items(doc)?;
    let mut items = BTreeMap::new();
    let mut opened_by = BTreeMap::new();
    let mut failures = Vec::new();
    if doc.pointer("/spec/data").is_some_and(|v| !v.is_null()) {
        if !enc.is_empty() {
            return Err(field(
                "spec.data",
                "cannot be used together with spec.encryptedData",
            ));
        }
        let Some(opened) = open_legacy(doc, keyring, &target, &label)? else {
            return Err(field("spec.data", "missing"));
        };
        let secret: Value =
            serde_json::from_slice(opened.plaintext.expose_secret()).map_err(|_| {
                field(
                    "spec.data",
                    "decrypted, but it does not hold a Secret in JSON",
                )
            })?;
        let fp = opened.key.fingerprint().clone();
        for (k, v) in secret_items(&secret)? {
            opened_by.insert(k.clone(), fp.clone());
            items.insert(k, v);
        }
        return Ok(OpenedItems {
            target,
            items,
            opened_by,
        });
    }
    for (k, text) in enc {
        let blob = match B64.decode(text) {
            Ok(b) => b,
            Err(_) => {
                failures.push((k, "invalid base64".to_string()));
                continue;
            }
        };
        match keyring.open(&label, &blob) {
            Ok(opened) => {
                opened_by.insert(k.clone(), opened.key.fingerprint().clone());
                items.insert(k, opened.plaintext);
            }
            Err(e) => failures.push((k, explain_open_failure(keyring, doc, &target, &blob, &e))),
        }
    }
    if !failures.is_empty() {
        return Err(ManifestError::Unseal(failures));
    }
    Ok(OpenedItems {
        target,
        items,
        opened_by,
    })
}

/// Unseals a SealedSecret into the Secret the controller would create (without the
/// ownerReference, which only makes sense in-cluster).
pub fn unseal(doc: &Value, keyring: &Keyring) -> Result<Value, ManifestError> {
    unseal_detailed(doc, keyring).map(|(v, _)| v)
}

/// [`unseal`], also returning the fingerprints of the keys that opened the values.
pub fn unseal_detailed(
    doc: &Value,
    keyring: &Keyring,
) -> Result<(Value, Vec<Fingerprint>), ManifestError> {
    let opened = open_items(doc, keyring)?;
    let mut used: Vec<Fingerprint> = opened.opened_by.values().cloned().collect();
    used.sort();
    used.dedup();
    let template = doc
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    let mut items = opened.items;
    // spec.template.data: each key rendered over the decrypted values; null removes the key.
    if let Some(tdata) = obj(
        template.get("data").unwrap_or(&Value::Null),
        "spec.template.data",
    )? {
        let mut rendered = Vec::new();
        for (k, v) in tdata {
            match v {
                Value::Null => rendered.push((k.clone(), None)),
                Value::String(t) => {
                    let out = super::template::render(t, &items)
                        .map_err(|e| field(format!("spec.template.data.{k}"), e.to_string()))?;
                    rendered.push((k.clone(), Some(secret_bytes(out.to_vec()))));
                }
                _ => return Err(field(format!("spec.template.data.{k}"), "must be a string")),
            }
        }
        for (k, v) in rendered {
            match v {
                Some(v) => {
                    items.insert(k, v);
                }
                None => {
                    items.remove(&k);
                }
            }
        }
    }
    let t_meta = obj(
        template.get("metadata").unwrap_or(&Value::Null),
        "spec.template.metadata",
    )?;
    let meta = object_meta(
        t_meta,
        "spec.template.metadata",
        &opened.target.name,
        &opened.target.namespace,
    )?;
    let mut out = Map::new();
    out.insert("kind".into(), "Secret".into());
    out.insert("apiVersion".into(), "v1".into());
    out.insert("metadata".into(), meta.into());
    if let Some(Value::Bool(b)) = template.get("immutable") {
        out.insert("immutable".into(), (*b).into());
    }
    let data: Map<String, Value> = items
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(B64.encode(v.expose_secret()))))
        .collect();
    out.insert("data".into(), data.into());
    if let Some(t) = template
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        out.insert("type".into(), t.into());
    }
    Ok((Value::Object(out), used))
}

/// Re-encrypts every value of a SealedSecret to `new_key`, keeping its scope, names and
/// everything else in the document.
pub fn reseal(doc: &Value, keyring: &Keyring, new_key: &PublicKey) -> Result<Value, ManifestError> {
    let target = sealed_target(doc)?;
    let label = target.scope.label(&target.namespace, &target.name);
    let mut out = doc.clone();
    if let Some(opened) = open_legacy(doc, keyring, &target, &label)? {
        let sealed = B64.encode(seal(new_key, &label, opened.plaintext.expose_secret())?);
        if let Some(slot) = out.pointer_mut("/spec/data") {
            *slot = sealed.into();
        }
        return Ok(out);
    }
    let opened = open_items(doc, keyring)?;
    if let Some(Value::Object(enc)) = out.pointer_mut("/spec/encryptedData") {
        for (k, v) in &opened.items {
            let blob = seal(new_key, &label, v.expose_secret())?;
            enc.insert(k.clone(), B64.encode(blob).into());
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Private keys from backups

/// Reads private keys from a file's bytes: PEM (`RSA PRIVATE KEY` / `PRIVATE KEY`), or a
/// Kubernetes Secret or List of Secrets (YAML or JSON) holding `tls.key`, as
/// `kubectl get secret -l sealedsecrets.bitnami.com/sealed-secrets-key -o yaml` writes them.
pub fn load_private_keys(bytes: &[u8]) -> Result<Vec<PrivateKey>, ManifestError> {
    if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return PrivateKey::from_pem_all(bytes).map_err(|e| quiet_pem(e).into());
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| field("", "neither PEM nor a YAML/JSON Secret (not UTF-8)"))?;
    let docs = parse_documents(text)?;
    if docs.is_empty() {
        return Err(KeyError::NoPrivateKey.into());
    }
    let mut keys = Vec::new();
    for doc in docs {
        let where_ = format!(
            "document {} (Secret '{}')",
            doc.index,
            doc.name().unwrap_or("?")
        );
        check_kind(&doc.value, "Secret").map_err(|e| field(where_.clone(), e.to_string()))?;
        let items = secret_items(&doc.value).map_err(|e| field(where_.clone(), e.to_string()))?;
        let key = items.get("tls.key").ok_or_else(|| {
            field(
                format!("{where_}: data.tls.key"),
                "missing; a sealing key Secret holds its key in tls.key",
            )
        })?;
        let parsed = PrivateKey::from_pem_all(key.expose_secret())
            .map_err(|e| field(format!("{where_}: data.tls.key"), quiet_pem(e).to_string()))?;
        keys.extend(parsed);
    }
    Ok(keys)
}

/// A PEM error without the pem crate's text, which for a bad body is the base64 crate's: a byte
/// of the (private) key and its offset.
fn quiet_pem(e: KeyError) -> KeyError {
    match e {
        KeyError::Pem(_) => KeyError::Pem("the base64 body does not decode".into()),
        other => other,
    }
}

/// A sealing key Secret in the upstream controller's layout (type `kubernetes.io/tls`, label
/// `sealedsecrets.bitnami.com/sealed-secrets-key: active`), for backups and imports.
pub fn key_secret(
    name: &str,
    namespace: &str,
    key: &PrivateKey,
    cert_pem: &str,
) -> Result<Zeroizing<String>, ManifestError> {
    let key_pem = key.to_pkcs1_pem()?;
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": { "sealedsecrets.bitnami.com/sealed-secrets-key": "active" },
        },
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": B64.encode(cert_pem.as_bytes()),
            "tls.key": B64.encode(key_pem.as_bytes()),
        },
    });
    let text = Zeroizing::new(to_yaml(&doc));
    // Wipe the base64 copy of the key held by the JSON value.
    let mut doc = doc;
    if let Some(Value::String(s)) = doc.pointer_mut("/data/tls.key") {
        zeroize::Zeroize::zeroize(s);
    }
    Ok(text)
}
