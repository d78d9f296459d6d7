//! sealkit-render: turn a path of a GitOps source into Kubernetes objects, as Flux's
//! kustomize-controller does, without touching a cluster.
//!
//! - A directory with a `kustomization.yaml` is built with kustomize (`kubectl kustomize` by
//!   default, as Argo CD shells out to it; the image ships kubectl).
//! - Any other directory is walked recursively in sorted order: every `.yaml`, `.yml` and
//!   `.json` file, every document; a subdirectory with its own `kustomization.yaml` is built
//!   with kustomize instead of being walked. `.sourceignore` (gitignore syntax) at the source
//!   root is honoured.
//! - SOPS documents are decrypted **after** the build, in memory: every SOPS file under the
//!   source root is indexed by its MAC; an object that still carries a `sops` block is matched
//!   to its file, that file is decrypted (MAC verified) with the given age identities, and the
//!   `ENC[…]` values of the object are replaced by the decrypted values at the same paths. So
//!   kustomize transformations of metadata (namespace, labels, name prefixes) do not break the
//!   MAC, and plaintext never touches the disk.
//! - An object that is still encrypted afterwards is an error: nothing encrypted is ever
//!   applied.
//!
//! Errors name the file (or kustomize directory), the document and the field. Values never
//! appear in errors or in `Debug` output.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use sealkit_keys::seal::manifest::parse_documents;
use sealkit_keys::sops::keysource::AgeIdentities;
use sealkit_keys::sops::{EncryptedFile, FileFormat};
use serde_json::Value;

mod ignore;
pub mod mask;

pub use ignore::SourceIgnore;

/// How to render.
pub struct Options {
    /// age identities for SOPS documents (none: an encrypted document is an error).
    pub identities: Option<AgeIdentities>,
    /// The kustomize command (default `kubectl kustomize`); the directory is appended.
    pub kustomize: Vec<String>,
    /// Extra `.sourceignore` patterns (a GitRepository's `spec.ignore`).
    pub extra_ignore: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            identities: None,
            kustomize: std::env::var("SEALKIT_KUSTOMIZE")
                .ok()
                .map(|s| s.split_whitespace().map(str::to_string).collect())
                .filter(|v: &Vec<String>| !v.is_empty())
                .unwrap_or_else(|| vec!["kubectl".into(), "kustomize".into()]),
            extra_ignore: None,
        }
    }
}

/// One rendered object.
pub struct Object {
    /// Where it came from: `apps/base/deploy.yaml document 2` or `kustomize apps/overlays/prod`.
    pub origin: String,
    /// The object (Secrets hold plaintext once decrypted).
    pub value: Value,
    /// Whether it was decrypted from SOPS.
    pub decrypted: bool,
}

impl Object {
    /// `Kind namespace/name` (or `Kind name`).
    pub fn id(&self) -> String {
        object_id(&self.value)
    }
}

/// `Kind namespace/name` of an object.
pub fn object_id(v: &Value) -> String {
    let kind = v["kind"].as_str().unwrap_or("?");
    let name = v["metadata"]["name"].as_str().unwrap_or("?");
    match v["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Object({} from {})", self.id(), self.origin)
    }
}

/// Why a render failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// A file or directory cannot be read.
    #[error("{path}: {message}")]
    Io {
        /// The path.
        path: String,
        /// What happened.
        message: String,
    },
    /// A file does not parse.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// What is wrong (with its line).
        message: String,
    },
    /// A document is not a Kubernetes object.
    #[error("{origin}: {message}")]
    Invalid {
        /// File and document.
        origin: String,
        /// What is wrong, naming the field.
        message: String,
    },
    /// kustomize failed.
    #[error("kustomize {dir}: {message}")]
    Kustomize {
        /// The directory.
        dir: String,
        /// kustomize's error.
        message: String,
    },
    /// A SOPS document cannot be decrypted.
    #[error("{origin} ({id}): {message}")]
    Decrypt {
        /// Where the object came from.
        origin: String,
        /// The object.
        id: String,
        /// Why.
        message: String,
    },
}

/// Whether `dir` is a kustomization root.
pub fn is_kustomization(dir: &Path) -> bool {
    ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .any(|f| dir.join(f).is_file())
}

fn rel(root: &Path, p: &Path) -> String {
    let r = p.strip_prefix(root).unwrap_or(p);
    let s = r.display().to_string();
    if s.is_empty() { ".".into() } else { s }
}

fn io(path: &Path, e: impl std::fmt::Display) -> RenderError {
    RenderError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn is_manifest(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Runs kustomize on `dir`.
fn kustomize(root: &Path, dir: &Path, opts: &Options) -> Result<Vec<Object>, RenderError> {
    let shown = rel(root, dir);
    let Some((program, args)) = opts.kustomize.split_first() else {
        return Err(RenderError::Kustomize {
            dir: shown,
            message: "no kustomize command configured".into(),
        });
    };
    let out = Command::new(program)
        .args(args)
        .arg(dir)
        .output()
        .map_err(|e| RenderError::Kustomize {
            dir: shown.clone(),
            message: format!(
                "cannot run {program}: {e} (hint: install kubectl, or set SEALKIT_KUSTOMIZE)"
            ),
        })?;
    if !out.status.success() {
        return Err(RenderError::Kustomize {
            dir: shown,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let text = String::from_utf8(out.stdout).map_err(|_| RenderError::Kustomize {
        dir: shown.clone(),
        message: "output is not UTF-8".into(),
    })?;
    let docs = parse_documents(&text).map_err(|e| RenderError::Syntax {
        path: format!("kustomize {shown}"),
        message: e.to_string(),
    })?;
    Ok(docs
        .into_iter()
        .map(|d| Object {
            origin: format!("kustomize {shown} (document {})", d.index),
            value: d.value,
            decrypted: false,
        })
        .collect())
}

fn read_text(path: &Path) -> Result<String, RenderError> {
    let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
    String::from_utf8(bytes).map_err(|_| RenderError::Syntax {
        path: path.display().to_string(),
        message: "not UTF-8 text".into(),
    })
}

fn file_objects(root: &Path, path: &Path) -> Result<Vec<Object>, RenderError> {
    let shown = rel(root, path);
    let text = read_text(path)?;
    let docs = parse_documents(&text).map_err(|e| RenderError::Syntax {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    Ok(docs
        .into_iter()
        .map(|d| Object {
            origin: format!("{shown} document {}", d.index),
            value: d.value,
            decrypted: false,
        })
        .collect())
}

fn walk(
    root: &Path,
    dir: &Path,
    ignore: &SourceIgnore,
    opts: &Options,
    out: &mut Vec<Object>,
) -> Result<(), RenderError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        let r = rel(root, &p);
        let is_dir = p.is_dir();
        if ignore.is_ignored(&r, is_dir) {
            continue;
        }
        if is_dir {
            if is_kustomization(&p) {
                out.extend(kustomize(root, &p, opts)?);
            } else {
                walk(root, &p, ignore, opts, out)?;
            }
        } else if is_manifest(&p) {
            out.extend(file_objects(root, &p)?);
        }
    }
    Ok(())
}

/// Every SOPS document under the root, by MAC: (file, document index, documents in the file).
struct SopsIndex {
    by_mac: HashMap<String, (PathBuf, usize, usize)>,
}

fn index_sops(root: &Path, ignore: &SourceIgnore) -> Result<SopsIndex, RenderError> {
    let mut by_mac = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let r = rel(root, &p);
            let is_dir = p.is_dir();
            if ignore.is_ignored(&r, is_dir) {
                continue;
            }
            if is_dir {
                stack.push(p);
                continue;
            }
            if !is_manifest(&p) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            if !text.contains("sops") || !text.contains("ENC[") {
                continue;
            }
            let Ok(docs) = parse_documents(&text) else {
                continue;
            };
            let n = docs.len();
            for d in docs {
                if let Some(mac) = d.value["sops"]["mac"].as_str() {
                    by_mac.insert(mac.to_string(), (p.clone(), d.index, n));
                }
            }
        }
    }
    Ok(SopsIndex { by_mac })
}

/// The text of document `index` (1-based) of a `---`-separated YAML stream.
fn nth_document(text: &str, index: usize) -> Option<String> {
    let mut docs: Vec<String> = vec![String::new()];
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            docs.push(String::new());
            continue;
        }
        if let Some(last) = docs.last_mut() {
            last.push_str(line);
        }
    }
    docs.into_iter()
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .nth(index - 1)
}

/// Decrypts SOPS document `index` of `path`, returning the plaintext object.
fn decrypt_document(
    path: &Path,
    index: usize,
    count: usize,
    ids: &AgeIdentities,
) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let format = if path.extension().and_then(|e| e.to_str()) == Some("json") {
        FileFormat::Json
    } else {
        FileFormat::Yaml
    };
    let doc_text = if count == 1 {
        text
    } else {
        nth_document(&text, index).ok_or("document not found")?
    };
    let file = EncryptedFile::load(&doc_text, format).map_err(|e| e.to_string())?;
    let plain = file.decrypt(ids, false).map_err(|e| e.to_string())?;
    let plain = std::str::from_utf8(&plain).map_err(|_| "plaintext is not UTF-8".to_string())?;
    let mut docs = parse_documents(plain).map_err(|e| e.to_string())?;
    if docs.len() != 1 {
        return Err("decrypted to more than one document".into());
    }
    Ok(docs.remove(0).value)
}

/// Replaces every `ENC[…]` string of `built` by the value at the same path of `plain`.
fn substitute(built: &mut Value, plain: &Value, path: &str) -> Result<(), String> {
    match built {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if let Some(pv) = plain.get(k) {
                    substitute(v, pv, &p)?;
                } else if contains_enc(v) {
                    return Err(format!(
                        "{p} is encrypted but not in the decrypted file (was it renamed by kustomize?)"
                    ));
                }
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter_mut().enumerate() {
                let p = format!("{path}[{i}]");
                match plain.get(i) {
                    Some(pv) => substitute(v, pv, &p)?,
                    None if contains_enc(v) => {
                        return Err(format!("{p} is encrypted but not in the decrypted file"));
                    }
                    None => {}
                }
            }
        }
        Value::String(s) if s.starts_with("ENC[") => *built = plain.clone(),
        _ => {}
    }
    Ok(())
}

/// An object without the fields the API server owns (`status`, `metadata.managedFields`,
/// `resourceVersion`, `generation`, `uid`, `creationTimestamp`), for comparing desired with live.
pub fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "managedFields",
            "resourceVersion",
            "generation",
            "uid",
            "creationTimestamp",
        ] {
            m.remove(k);
        }
    }
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
    }
    v
}

/// Whether a value still holds SOPS ciphertext.
pub fn contains_enc(v: &Value) -> bool {
    match v {
        Value::String(s) => s.starts_with("ENC[AES256_GCM,"),
        Value::Array(a) => a.iter().any(contains_enc),
        Value::Object(m) => m.values().any(contains_enc),
        _ => false,
    }
}

fn validate(o: &Object) -> Result<(), RenderError> {
    let invalid = |message: String| RenderError::Invalid {
        origin: o.origin.clone(),
        message,
    };
    if !o.value.is_object() {
        return Err(invalid(
            "a document must be a mapping (a Kubernetes object)".into(),
        ));
    }
    for (field, v) in [
        ("apiVersion", &o.value["apiVersion"]),
        ("kind", &o.value["kind"]),
        ("metadata.name", &o.value["metadata"]["name"]),
    ] {
        if v.as_str().is_none_or(str::is_empty) {
            return Err(invalid(format!("{field} is missing or not a string")));
        }
    }
    Ok(())
}

/// Renders `path` (a directory or a file under `root`).
pub fn render(root: &Path, path: &Path, opts: &Options) -> Result<Vec<Object>, RenderError> {
    let ignore = SourceIgnore::load(root, opts.extra_ignore.as_deref())?;
    if !path.exists() {
        return Err(io(path, "no such file or directory"));
    }
    let mut objects = Vec::new();
    if path.is_dir() {
        if is_kustomization(path) {
            objects = kustomize(root, path, opts)?;
        } else {
            walk(root, path, &ignore, opts, &mut objects)?;
        }
    } else {
        objects = file_objects(root, path)?;
    }
    let mut index = None;
    for o in &mut objects {
        validate(o)?;
        let Some(mac) = o
            .value
            .get("sops")
            .map(|s| s["mac"].as_str().map(str::to_string))
        else {
            if contains_enc(&o.value) {
                return Err(RenderError::Decrypt {
                    origin: o.origin.clone(),
                    id: o.id(),
                    message: "holds ENC[…] values but no sops metadata; it is never applied".into(),
                });
            }
            continue;
        };
        let (origin, id) = (o.origin.clone(), o.id());
        let fail = |message: String| RenderError::Decrypt {
            origin: origin.clone(),
            id: id.clone(),
            message,
        };
        let Some(ids) = &opts.identities else {
            return Err(fail(
                "encrypted with SOPS but no age keys were given (spec.decryption.secretRef, or --age-key-file / SOPS_AGE_KEY_FILE)".into(),
            ));
        };
        let mac = mac.ok_or_else(|| fail("sops.mac is missing".into()))?;
        if index.is_none() {
            index = Some(index_sops(root, &ignore)?);
        }
        let Some((file, doc, count)) = index.as_ref().and_then(|i| i.by_mac.get(&mac)).cloned()
        else {
            return Err(fail(
                "no SOPS file under the source root carries this document's MAC".into(),
            ));
        };
        let plain = decrypt_document(&file, doc, count, ids)
            .map_err(|e| fail(format!("{} document {doc}: {e}", rel(root, &file))))?;
        if let Some(m) = o.value.as_object_mut() {
            m.remove("sops");
        }
        substitute(&mut o.value, &plain, "").map_err(fail)?;
        o.decrypted = true;
    }
    Ok(objects)
}

#[cfg(test)]
mod tests;
