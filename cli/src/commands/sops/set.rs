//! `sealkit sops set` / `unset`: one value changed in the plaintext (YAML through the lossless
//! tree) and re-encrypted with the same data key.

use std::path::{Path, PathBuf};

use clap::Args;
use sealkit_keys::sops::edit::{parse_path, set_in_text};
use sealkit_keys::sops::encrypt_with_key;
use sealkit_keys::sops::walk::IvStash;
use serde_json::Value;
use zeroize::Zeroizing;

use super::{display_name, open_plain, sops_err};
use crate::args::SopsCommon;
use crate::error::CliError;
use crate::io::write_atomic;

/// `sealkit sops set`.
#[derive(Debug, Clone, Args)]
pub struct SetArgs {
    /// The encrypted file.
    pub file: PathBuf,
    /// Where, e.g. '["stringData"]["password"]'.
    pub index: String,
    /// The value as JSON: '"text"', 5, true.
    pub value: String,
    #[command(flatten)]
    pub common: SopsCommon,
}

/// `sealkit sops unset`.
#[derive(Debug, Clone, Args)]
pub struct UnsetArgs {
    /// The encrypted file.
    pub file: PathBuf,
    /// Where, e.g. '["stringData"]["password"]'.
    pub index: String,
    #[command(flatten)]
    pub common: SopsCommon,
}

/// Runs `sealkit sops set`.
pub fn run_set(a: &SetArgs) -> Result<(), CliError> {
    let v: Value = serde_json::from_str(&a.value).map_err(|e| {
        CliError::usage(format!("the value must be JSON ({e})"))
            .with_hint("quote strings twice: '\"text\"'")
    })?;
    set_cmd(&a.file, &a.index, Some(v), &a.common)
}

/// Runs `sealkit sops unset`.
pub fn run_unset(a: &UnsetArgs) -> Result<(), CliError> {
    set_cmd(&a.file, &a.index, None, &a.common)
}

fn set_cmd(
    file: &Path,
    index: &str,
    value: Option<Value>,
    common: &SopsCommon,
) -> Result<(), CliError> {
    let name = display_name(file, common);
    let path = parse_path(index).map_err(|e| CliError::usage(e.to_string()))?;
    let (ef, format, key, plain) = open_plain(file, common, &name, false)?;
    let text = std::str::from_utf8(&plain)
        .map_err(|_| CliError::input(format!("{name}: plaintext is not UTF-8")))?;
    let changed =
        Zeroizing::new(set_in_text(text, format, &path, value).map_err(|e| sops_err(&name, e))?);
    let stash: IvStash = ef.iv_stash(&key);
    let out = encrypt_with_key(
        changed.as_bytes(),
        format,
        &ef.options(),
        &key,
        Some(&stash),
    )
    .map_err(|e| sops_err(&name, e))?;
    write_atomic(file, out.as_bytes(), None)
}
