//! `sealkit reseal`: offline re-encryption of SealedSecrets to a new certificate.
//!
//! kubeseal can only re-encrypt through a live controller (`--re-encrypt`). With backed-up
//! private keys this does it offline, for one stream or a whole tree in place. It is
//! all-or-nothing: every file is processed in memory first, and nothing is written unless
//! every SealedSecret opened; other documents in a YAML file are kept byte for byte.

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use sealkit_keys::seal::manifest::{self, Format, emit, parse_documents, split_yaml, to_json};
use sealkit_keys::seal::{Keyring, PublicKey};
use serde_json::Value;

use super::{doc_error, load_keyring, parse_error, seal::format_or};
use crate::args::ResealArgs;
use crate::cert;
use crate::error::CliError;
use crate::io::{read_input, write_atomic, write_output};

/// Runs `sealkit reseal`.
pub fn run(a: &ResealArgs) -> Result<(), CliError> {
    let key = cert::load(Some(&a.cert), None)?;
    let ring = load_keyring(&a.recovery_private_key)?;
    if a.paths.is_empty() {
        let input = read_input(None)?;
        let format = format_or(a.format, Format::sniff(&input.text));
        let (out, n) = reseal_text(&input.name, &input.text, &ring, &key, Some(format))?;
        if n == 0 {
            return Err(CliError::input("<stdin>: no SealedSecret found"));
        }
        return write_output(None, out.as_bytes());
    }
    let files = collect_files(&a.paths)?;
    let started = Instant::now();
    let bar = if a.quiet || files.len() < 2 {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(files.len() as u64);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} resealing [{bar:30}] {pos}/{len} files {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b
    };
    let mut changes: Vec<(PathBuf, String, usize)> = Vec::new();
    let mut errors: Vec<CliError> = Vec::new();
    for f in &files {
        bar.set_message(f.display().to_string());
        match reseal_file(f, &ring, &key) {
            Ok(Some((text, n))) => changes.push((f.clone(), text, n)),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if !errors.is_empty() {
        let n = errors.len();
        let mut msg: Vec<String> = errors.iter().map(|e| e.message().to_string()).collect();
        msg.push(format!("{n} file(s) failed; nothing was written"));
        return Err(CliError::input(msg.join("\n  ")));
    }
    let values: usize = changes.iter().map(|c| c.2).sum();
    if !a.dry_run {
        for (path, text, _) in &changes {
            write_atomic(path, text.as_bytes(), None)?;
        }
    }
    if !a.quiet {
        let verb = if a.dry_run {
            "would reseal"
        } else {
            "resealed"
        };
        eprintln!(
            "{verb} {values} SealedSecret(s) in {} of {} file(s) to key {} in {:.2?}",
            changes.len(),
            files.len(),
            key.fingerprint().short(),
            started.elapsed()
        );
        if a.dry_run {
            for (p, _, n) in &changes {
                eprintln!("  {} ({n})", p.display());
            }
        }
    }
    Ok(())
}

fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CliError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p)
            .map_err(|e| CliError::io_at(&format!("cannot read {}", p.display()), &e))?;
        if meta.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CliError> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| CliError::io_at(&format!("cannot list {}", dir.display()), &e))?;
    for entry in rd {
        let entry =
            entry.map_err(|e| CliError::io_at(&format!("cannot list {}", dir.display()), &e))?;
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue; // .git and friends
        }
        let ft = entry
            .file_type()
            .map_err(|e| CliError::io_at(&path.display().to_string(), &e))?;
        if ft.is_dir() {
            walk(&path, out)?;
        } else if ft.is_file()
            && matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        {
            out.push(path);
        }
    }
    Ok(())
}

/// The new text of a file, or `None` when it holds no SealedSecret.
fn reseal_file(
    path: &Path,
    ring: &Keyring,
    key: &PublicKey,
) -> Result<Option<(String, usize)>, CliError> {
    let name = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| CliError::io_at(&format!("cannot read {name}"), &e))?;
    let Ok(text) = String::from_utf8(bytes) else {
        return Ok(None);
    };
    if !text.contains("SealedSecret") {
        return Ok(None);
    }
    let (out, n) = reseal_text(&name, &text, ring, key, None)?;
    Ok((n > 0).then_some((out, n)))
}

fn is_sealed(v: &Value) -> bool {
    v.get("kind").and_then(Value::as_str) == Some(manifest::SEALED_SECRET_KIND)
}

/// Reseals every SealedSecret of `text`. With `format: None` the input's own format is kept,
/// and in YAML only the SealedSecret documents are rewritten.
pub fn reseal_text(
    name: &str,
    text: &str,
    ring: &Keyring,
    key: &PublicKey,
    format: Option<Format>,
) -> Result<(String, usize), CliError> {
    let input_format = Format::sniff(text);
    if input_format == Format::Json || format.is_some_and(|f| f != input_format) {
        let docs = parse_documents(text).map_err(|e| parse_error(name, &e))?;
        let mut out = String::new();
        let mut n = 0;
        for doc in &docs {
            let value = if is_sealed(&doc.value) {
                n += 1;
                manifest::reseal(&doc.value, ring, key).map_err(|e| doc_error(name, doc, &e))?
            } else {
                doc.value.clone()
            };
            out.push_str(&match format.unwrap_or(input_format) {
                Format::Json => to_json(&value),
                Format::Yaml => emit(&value, Format::Yaml),
            });
        }
        return Ok((out, n));
    }
    // YAML: splice the rewritten documents into the original text.
    let mut out = String::with_capacity(text.len());
    let mut cursor = 0usize;
    let mut n = 0;
    let base = text.as_ptr() as usize;
    for (index, (line, chunk)) in split_yaml(text).into_iter().enumerate() {
        let start = chunk.as_ptr() as usize - base;
        let docs = parse_documents(chunk).map_err(|e| parse_error(name, &e))?;
        let [doc] = docs.as_slice() else { continue };
        if !is_sealed(&doc.value) {
            continue;
        }
        let doc = manifest::Document {
            index: index + 1,
            line,
            value: doc.value.clone(),
        };
        let new = manifest::reseal(&doc.value, ring, key).map_err(|e| doc_error(name, &doc, &e))?;
        let body = manifest::yaml_body(&new);
        out.push_str(&text[cursor..start]);
        out.push_str(&body);
        if !body.ends_with('\n') {
            out.push('\n');
        }
        cursor = start + chunk.len();
        n += 1;
    }
    out.push_str(&text[cursor..]);
    Ok((out, n))
}
