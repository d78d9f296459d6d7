//! `sealkit sops check`: files a `.sops.yaml` rule says must be encrypted but are not, and
//! Kubernetes Secrets committed in clear (a pre-commit hook).

use std::path::PathBuf;

use clap::Args;
use sealkit_keys::sops::{EncryptedFile, FileFormat, SopsError};
use serde_json::Value;

use super::{config, walk_files};
use crate::args::SopsCommon;
use crate::error::CliError;

/// `sealkit sops check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Files or directories.
    #[arg(default_value = ".")]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub common: SopsCommon,
}

/// Whether a YAML/JSON document is a Kubernetes Secret holding clear values.
fn clear_secret(doc: &Value) -> bool {
    if doc.get("kind").and_then(Value::as_str) != Some("Secret") {
        return false;
    }
    ["data", "stringData"].iter().any(|f| {
        doc.get(*f).and_then(Value::as_object).is_some_and(|m| {
            m.values().any(|v| {
                v.as_str()
                    .is_some_and(|s| !s.is_empty() && !s.starts_with("ENC[AES256_GCM,"))
            })
        })
    })
}

/// Runs `sealkit sops check`.
pub fn run(a: &CheckArgs) -> Result<(), CliError> {
    let CheckArgs { paths, common } = a;
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let found = config::find(
        common.config.as_deref(),
        paths.first().map(PathBuf::as_path).unwrap_or(&cwd),
    )?;
    let files = walk_files(paths)?;
    let mut problems = Vec::new();
    for file in &files {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        let format = FileFormat::from_path(&file.display().to_string());
        match EncryptedFile::load(&text, format) {
            Ok(_) => continue,
            // A file too deep to read cannot be checked: say so rather than pass it. (Any file
            // of an unknown type is tried as a binary SOPS file, i.e. JSON; the binary store
            // calls deep JSON in one of those simply not a SOPS file.)
            Err(e @ SopsError::TooDeep { .. }) => {
                problems.push(format!("{}: {e}; it cannot be checked", file.display()));
                continue;
            }
            Err(_) => {}
        }
        let rule_hit = match &found {
            Some(f) => f
                .rule_for(file)?
                .is_some_and(|r| r.path_regex.is_some())
                .then_some(f),
            None => None,
        };
        if let Some(f) = rule_hit {
            problems.push(format!(
                "{}: must be encrypted (it matches a creation rule in {})",
                file.display(),
                f.shown()
            ));
            continue;
        }
        let docs = if format.store().structured() && text.contains("Secret") {
            sealkit_keys::seal::manifest::parse_documents(&text).unwrap_or_default()
        } else {
            Vec::new()
        };
        for d in docs.iter().filter(|d| clear_secret(&d.value)) {
            problems.push(format!(
                "{}: document {} is a Kubernetes Secret '{}' in clear text; seal it (sealkit seal) or encrypt it (sealkit sops encrypt)",
                file.display(),
                d.index,
                d.name().unwrap_or("?")
            ));
        }
    }
    if problems.is_empty() {
        eprintln!("ok: {} file(s) checked, nothing in clear", files.len());
        return Ok(());
    }
    // The list on stdout (one problem a line, for scripts and hooks); the summary on stderr.
    for p in &problems {
        println!("{p}");
    }
    Err(CliError::input(format!(
        "{} problem(s) in {} file(s) checked",
        problems.len(),
        files.len()
    )))
}
