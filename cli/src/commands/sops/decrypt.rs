//! `sealkit sops decrypt`: the plaintext, whole or one part (`--extract`), in the file's format
//! or converted to another (`--output-type`).

use std::path::PathBuf;

use clap::Args;

use sealkit_keys::sops::edit::{extract, from_value, parse_path, to_value};
use sealkit_keys::sops::{FileFormat, SopsError};
use serde_json::Value;
use zeroize::Zeroizing;

use super::{display_name, open_plain, output_format, sops_err, write_out};
use crate::args::{OutputFlags, SopsCommon};
use crate::error::CliError;

/// `sealkit sops decrypt`.
#[derive(Debug, Clone, Args)]
pub struct DecryptArgs {
    /// The encrypted file.
    pub file: PathBuf,
    /// Print only this part, e.g. '["data"]["password"]'.
    #[arg(long, value_name = "PATH")]
    pub extract: Option<String>,
    /// Decrypt even when the MAC does not verify (or is missing).
    #[arg(long)]
    pub ignore_mac: bool,
    #[command(flatten)]
    pub out: OutputFlags,
    #[command(flatten)]
    pub common: SopsCommon,
}

fn convert(
    plain: &[u8],
    from: FileFormat,
    to: FileFormat,
    name: &str,
) -> Result<Zeroizing<Vec<u8>>, CliError> {
    if from == to {
        return Ok(Zeroizing::new(plain.to_vec()));
    }
    let text = std::str::from_utf8(plain)
        .map_err(|_| CliError::input(format!("{name}: plaintext is not UTF-8")))?;
    let v = to_value(text, from).map_err(|e| sops_err(name, e))?;
    Ok(Zeroizing::new(render(&v, to, name)?.into_bytes()))
}

fn render(v: &Value, to: FileFormat, name: &str) -> Result<String, CliError> {
    from_value(v, to).map_err(|e| match e {
        // A conversion the format cannot take is a usage error, not a bad file.
        SopsError::Unsupported(what) => CliError::usage(format!("{what} is not supported")),
        e => sops_err(name, e),
    })
}

/// Runs `sealkit sops decrypt`.
pub fn run(a: &DecryptArgs) -> Result<(), CliError> {
    let DecryptArgs {
        file,
        extract: extract_path,
        ignore_mac,
        out,
        common,
    } = a;
    let name = display_name(file, common);
    let (_ef, format, _key, plain) = open_plain(file, common, &name, *ignore_mac)?;
    let to = output_format(format, common);
    let bytes = match extract_path.as_deref() {
        Some(p) => {
            let path = parse_path(p).map_err(|e| CliError::usage(e.to_string()))?;
            let text = std::str::from_utf8(&plain)
                .map_err(|_| CliError::input(format!("{name}: plaintext is not UTF-8")))?;
            let v = to_value(text, format).map_err(|e| sops_err(&name, e))?;
            let part = extract(&v, &path).map_err(|e| sops_err(&name, e))?;
            Zeroizing::new(match part {
                Value::String(s) => s.clone().into_bytes(),
                Value::Object(_) | Value::Array(_) => render(part, to, &name)?.into_bytes(),
                other => other.to_string().into_bytes(),
            })
        }
        None => convert(&plain, format, to, &name)?,
    };
    write_out(file, out, &bytes, true)
}
