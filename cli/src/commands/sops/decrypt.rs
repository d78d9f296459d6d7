//! `sealkit sops decrypt`: the plaintext, whole or one part (`--extract`), in the file's format
//! or converted to another (`--output-type`).

use std::path::PathBuf;

use clap::Args;

use sealkit_keys::sops::FileFormat;
use sealkit_keys::sops::edit::{extract, parse_path, to_value};
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
    Ok(match to {
        FileFormat::Json => {
            let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
            s.push('\n');
            s
        }
        FileFormat::Yaml => sealkit_keys::seal::manifest::yaml_body(v),
        FileFormat::Dotenv => {
            let obj = v.as_object().ok_or_else(|| {
                CliError::input(format!("{name}: only a mapping converts to dotenv"))
            })?;
            let mut s = String::new();
            for (k, v) in obj {
                let text = match v {
                    Value::String(t) => t.clone(),
                    Value::Object(_) | Value::Array(_) => {
                        return Err(CliError::input(format!(
                            "{name}: '{k}' is nested; dotenv holds only flat values"
                        )));
                    }
                    other => other.to_string(),
                };
                s.push_str(&format!("{k}={}\n", text.replace('\n', "\\n")));
            }
            s
        }
        FileFormat::Binary => match v.get("data").and_then(Value::as_str) {
            Some(d) => d.to_string(),
            None => {
                return Err(CliError::input(format!(
                    "{name}: binary output needs a top-level 'data' string"
                )));
            }
        },
        FileFormat::Ini => return Err(CliError::usage("conversion to INI is not supported")),
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
