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
//! - The source is a sandbox ([`sandbox`]): every path is resolved inside the source root, a
//!   symlink that leads outside it or loops is refused (naming it), and kustomize only runs on
//!   a tree without such links, whose kustomizations name no remote base or file
//!   ([`kustomization`]; unless [`Options::allow_remote_bases`]), under a timeout that kills
//!   its whole process group ([`process`]).
//! - Every decrypted leaf is recorded ([`Object::decrypted_paths`]), so display can mask it
//!   ([`mask`]) and error texts that quote it can be redacted ([`redact`]).
//!
//! Errors name the file (or kustomize directory), the document and the field. Values never
//! appear in errors or in `Debug` output.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sealkit_keys::seal::manifest::parse_documents;
use sealkit_keys::sops::keysource::AgeIdentities;
use sealkit_keys::sops::{EncryptedFile, FileFormat};
use serde_json::Value;

mod ignore;
mod kustomization;
pub mod mask;
pub mod process;
pub mod redact;
mod sandbox;

pub use ignore::SourceIgnore;
pub use sandbox::copy_source;
use sandbox::{Sandbox, shown};

/// How long a kustomize build may take unless [`Options::kustomize_timeout`] says otherwise.
pub const DEFAULT_KUSTOMIZE_TIMEOUT: Duration = Duration::from_secs(120);

/// How to render.
pub struct Options {
    /// age identities for SOPS documents (none: an encrypted document is an error).
    pub identities: Option<AgeIdentities>,
    /// The kustomize command (default `kubectl kustomize`); the directory is appended.
    pub kustomize: Vec<String>,
    /// Extra `.sourceignore` patterns (a GitRepository's `spec.ignore`).
    pub extra_ignore: Option<String>,
    /// How long one kustomize build may take (its process group is killed then).
    pub kustomize_timeout: Duration,
    /// Let kustomize fetch remote bases and files (URLs, remote Git refs); refused otherwise.
    pub allow_remote_bases: bool,
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
            kustomize_timeout: DEFAULT_KUSTOMIZE_TIMEOUT,
            allow_remote_bases: false,
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
    /// JSON pointers (RFC 6901) of the leaves that came out of the decryption: what display
    /// masks and error texts never show.
    pub decrypted_paths: Vec<String>,
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
    /// A path leads outside the source, or is a symlink loop.
    #[error("{path}: {message}")]
    Sandbox {
        /// The path, relative to the source root.
        path: String,
        /// Why it is refused.
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
    kustomization::FILE_NAMES
        .iter()
        .any(|f| dir.join(f).is_file())
}

fn is_manifest(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Runs kustomize on `dir` (relative to the root), once the tree and the kustomizations it
/// reaches are known to stay inside the source.
fn kustomize(
    sb: &Sandbox,
    root: &Path,
    dir: &Path,
    opts: &Options,
) -> Result<Vec<Object>, RenderError> {
    let shown = shown(dir);
    sb.check_links()?;
    kustomization::check(sb, dir, opts.allow_remote_bases)?;
    let Some((program, args)) = opts.kustomize.split_first() else {
        return Err(RenderError::Kustomize {
            dir: shown,
            message: "no kustomize command configured".into(),
        });
    };
    let out = process::run(
        Command::new(program).args(args).arg(root.join(dir)),
        opts.kustomize_timeout,
    )
    .map_err(|e| RenderError::Kustomize {
        dir: shown.clone(),
        message: match e {
            process::RunError::Spawn(e) => format!(
                "cannot run {program}: {e} (hint: install kubectl, or set SEALKIT_KUSTOMIZE)"
            ),
            process::RunError::TimedOut => {
                format!("timed out after {}", humanize(opts.kustomize_timeout))
            }
            process::RunError::Wait(e) => e.to_string(),
        },
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
            decrypted_paths: Vec::new(),
        })
        .collect())
}

/// `1s`, `2m`, `1m30s`.
fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 60, s % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

fn read_text(sb: &Sandbox, rel: &Path) -> Result<String, RenderError> {
    let bytes = sb.read(rel)?;
    String::from_utf8(bytes).map_err(|_| RenderError::Syntax {
        path: shown(rel),
        message: "not UTF-8 text".into(),
    })
}

fn file_objects(sb: &Sandbox, rel: &Path) -> Result<Vec<Object>, RenderError> {
    let shown = shown(rel);
    let text = read_text(sb, rel)?;
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
            decrypted_paths: Vec::new(),
        })
        .collect())
}

/// Walks the directory `dir` (relative to the root; `canonical` is where it really is, for
/// cycle detection).
fn walk(
    sb: &Sandbox,
    root: &Path,
    dir: &Path,
    canonical: &Path,
    ignore: &SourceIgnore,
    opts: &Options,
    out: &mut Vec<Object>,
) -> Result<(), RenderError> {
    for rel in sb.entries(dir)? {
        let r = shown(&rel);
        // Ignored either way: nothing about it is read.
        if ignore.is_ignored(&r, false) && ignore.is_ignored(&r, true) {
            continue;
        }
        let meta = sb.symlink_metadata(&rel)?;
        let (is_dir, real) = if meta.is_symlink() {
            let real = sb.resolve(&rel)?;
            (sb.metadata(&real)?.is_dir(), real)
        } else {
            (
                meta.is_dir(),
                canonical.join(rel.file_name().unwrap_or_default()),
            )
        };
        if ignore.is_ignored(&r, is_dir) {
            continue;
        }
        if is_dir {
            // A link to this directory or one above it would be walked forever.
            if canonical.starts_with(&real) {
                return Err(RenderError::Sandbox {
                    path: r,
                    message: "is a symlink loop (it points to a directory that contains it)".into(),
                });
            }
            if kustomization::file_of(sb, &rel)?.is_some() {
                out.extend(kustomize(sb, root, &rel, opts)?);
            } else {
                walk(sb, root, &rel, &real, ignore, opts, out)?;
            }
        } else if is_manifest(&rel) {
            out.extend(file_objects(sb, &rel)?);
        }
    }
    Ok(())
}

/// Every SOPS document under the root, by MAC: (file, document index, documents in the file).
struct SopsIndex {
    by_mac: HashMap<String, (PathBuf, usize, usize)>,
}

/// Indexes the regular files under the root (symlinks are not followed: a SOPS file a link
/// points to inside the source is indexed where it is).
fn index_sops(sb: &Sandbox, ignore: &SourceIgnore) -> Result<SopsIndex, RenderError> {
    let mut by_mac = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = sb.entries(&dir) else {
            continue;
        };
        for p in entries {
            let Ok(meta) = sb.symlink_metadata(&p) else {
                continue;
            };
            let r = shown(&p);
            if ignore.is_ignored(&r, meta.is_dir()) {
                continue;
            }
            if meta.is_dir() {
                stack.push(p);
                continue;
            }
            if !meta.is_file() || !is_manifest(&p) {
                continue;
            }
            let Ok(text) = read_text(sb, &p) else {
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

/// Decrypts SOPS document `index` of `path` (relative to the root), returning the plaintext
/// object.
fn decrypt_document(
    sb: &Sandbox,
    path: &Path,
    index: usize,
    count: usize,
    ids: &AgeIdentities,
) -> Result<Value, String> {
    let text = read_text(sb, path).map_err(|e| e.to_string())?;
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

/// RFC 6901 escaping of one reference token.
fn pointer_token(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

/// Replaces every `ENC[…]` string of `built` by the value at the same path of `plain`, and
/// records the JSON pointer of each replaced leaf in `decrypted` (`pointer` is where `built`
/// is; `path` the same for messages).
fn substitute(
    built: &mut Value,
    plain: &Value,
    path: &str,
    pointer: &str,
    decrypted: &mut Vec<String>,
) -> Result<(), String> {
    match built {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let ptr = format!("{pointer}/{}", pointer_token(k));
                if let Some(pv) = plain.get(k) {
                    substitute(v, pv, &p, &ptr, decrypted)?;
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
                let ptr = format!("{pointer}/{i}");
                match plain.get(i) {
                    Some(pv) => substitute(v, pv, &p, &ptr, decrypted)?,
                    None if contains_enc(v) => {
                        return Err(format!("{p} is encrypted but not in the decrypted file"));
                    }
                    None => {}
                }
            }
        }
        Value::String(s) if s.starts_with("ENC[") => {
            *built = plain.clone();
            decrypted.push(pointer.to_string());
        }
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

/// Renders `path` (a directory or a file under `root`). Nothing outside `root` is read, and
/// kustomize is not run on a tree that could lead it outside (see the crate docs).
pub fn render(root: &Path, path: &Path, opts: &Options) -> Result<Vec<Object>, RenderError> {
    let sb = Sandbox::open(root)?;
    let rel = path.strip_prefix(root).map_err(|_| RenderError::Io {
        path: path.display().to_string(),
        message: format!("is not inside the source root {}", root.display()),
    })?;
    let ignore = SourceIgnore::from_sandbox(&sb, opts.extra_ignore.as_deref())?;
    let real = sb.resolve(rel)?;
    let mut objects = Vec::new();
    if sb.metadata(&real)?.is_dir() {
        if kustomization::file_of(&sb, &real)?.is_some() {
            objects = kustomize(&sb, root, &real, opts)?;
        } else {
            walk(&sb, root, &real, &real, &ignore, opts, &mut objects)?;
        }
    } else {
        objects = file_objects(&sb, &real)?;
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
            index = Some(index_sops(&sb, &ignore)?);
        }
        let Some((file, doc, count)) = index.as_ref().and_then(|i| i.by_mac.get(&mac)).cloned()
        else {
            return Err(fail(
                "no SOPS file under the source root carries this document's MAC".into(),
            ));
        };
        let plain = decrypt_document(&sb, &file, doc, count, ids)
            .map_err(|e| fail(format!("{} document {doc}: {e}", shown(&file))))?;
        if let Some(m) = o.value.as_object_mut() {
            m.remove("sops");
        }
        let mut decrypted = Vec::new();
        substitute(&mut o.value, &plain, "", "", &mut decrypted).map_err(fail)?;
        o.decrypted = true;
        o.decrypted_paths = decrypted;
    }
    Ok(objects)
}

#[cfg(test)]
mod tests;
