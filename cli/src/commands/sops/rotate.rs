//! `sealkit sops rotate`: a new data key and new IVs, optionally for other age recipients.

use std::path::PathBuf;

use clap::Args;
use sealkit_keys::sops::encrypt;

use super::{display_name, open_plain, sops_err, write_out};
use crate::args::{OutputFlags, SopsCommon};
use crate::error::CliError;

/// `sealkit sops rotate`.
#[derive(Debug, Clone, Args)]
pub struct RotateArgs {
    /// The encrypted file.
    pub file: PathBuf,
    /// age recipients to add (comma-separated).
    #[arg(long = "add-age", value_delimiter = ',', value_name = "RECIPIENT")]
    pub add_age: Vec<String>,
    /// age recipients to remove (comma-separated).
    #[arg(long = "rm-age", value_delimiter = ',', value_name = "RECIPIENT")]
    pub rm_age: Vec<String>,
    #[command(flatten)]
    pub out: OutputFlags,
    #[command(flatten)]
    pub common: SopsCommon,
}

/// Runs `sealkit sops rotate`.
pub fn run(a: &RotateArgs) -> Result<(), CliError> {
    let RotateArgs {
        file,
        add_age: add,
        rm_age: rm,
        out,
        common,
    } = a;
    let name = display_name(file, common);
    let (ef, format, _key, plain) = open_plain(file, common, &name, false)?;
    let mut opts = ef.options();
    if !add.is_empty() || !rm.is_empty() {
        if !opts.key_groups.is_empty() {
            return Err(CliError::usage(
                "--add-age/--rm-age work on files with one key group",
            ));
        }
        opts.age.retain(|r| !rm.contains(r));
        for a in add {
            if !opts.age.contains(a) {
                opts.age.push(a.clone());
            }
        }
    }
    let text = encrypt(&plain, format, &opts).map_err(|e| sops_err(&name, e))?;
    write_out(file, out, text.as_bytes(), false)
}
