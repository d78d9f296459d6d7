//! `sealkit sops filestatus`: whether a file is encrypted with sops.

use std::path::PathBuf;

use clap::Args;
use sealkit_keys::sops::{EncryptedFile, SopsError};

use super::{display_name, input_format, sops_err};
use crate::args::SopsCommon;
use crate::error::CliError;
use crate::io::read_bytes;

/// `sealkit sops filestatus`.
#[derive(Debug, Clone, Args)]
pub struct FilestatusArgs {
    /// The file.
    pub file: PathBuf,
    #[command(flatten)]
    pub common: SopsCommon,
}

/// Runs `sealkit sops filestatus`.
pub fn run(a: &FilestatusArgs) -> Result<(), CliError> {
    let FilestatusArgs { file, common } = a;
    let name = display_name(file, common);
    let bytes = read_bytes(file)?;
    let text = String::from_utf8_lossy(&bytes);
    let encrypted = match EncryptedFile::load(&text, input_format(file, common)) {
        Ok(_) => true,
        Err(SopsError::NotSopsFile) => false,
        Err(e) => return Err(sops_err(&name, e)),
    };
    println!("{}", serde_json::json!({ "encrypted": encrypted }));
    Ok(())
}
