//! `sealkit sops exec-env` / `exec-file`: a command run with the plaintext as environment
//! variables or as a private temporary file; its exit code is passed on.

use std::path::PathBuf;
use std::process::Command;

use clap::Args;
use sealkit_keys::sops::edit::to_value;
use serde_json::Value;

use super::plaintext::PlainFile;
use super::{display_name, open_plain, shell_quote, sops_err};
use crate::args::SopsCommon;
use crate::error::CliError;

/// `sealkit sops exec-env` and `sealkit sops exec-file`.
#[derive(Debug, Clone, Args)]
pub struct ExecArgs {
    /// The encrypted file.
    pub file: PathBuf,
    /// The command (run by sh -c).
    pub command: String,
    #[command(flatten)]
    pub common: SopsCommon,
}

fn run_shell(command: &str, envs: Vec<(String, String)>) -> Result<(), CliError> {
    let status = Command::new("sh")
        .arg("-c")
        .arg(command)
        .envs(envs)
        .status()
        .map_err(|e| CliError::io_at("cannot run the command", &e))?;
    exit_like(status)
}

/// Passes a command's exit code on.
fn exit_like(status: std::process::ExitStatus) -> Result<(), CliError> {
    match status.code() {
        Some(0) => Ok(()),
        Some(c) => Err(CliError::silent(u8::try_from(c).unwrap_or(1))),
        None => Err(CliError::input(format!(
            "the command was killed ({status})"
        ))),
    }
}

/// Runs `sealkit sops exec-env`.
pub fn run_env(a: &ExecArgs) -> Result<(), CliError> {
    let ExecArgs {
        file,
        command,
        common,
    } = a;
    let name = display_name(file, common);
    let (_ef, format, _key, plain) = open_plain(file, common, &name, false)?;
    let text = std::str::from_utf8(&plain)
        .map_err(|_| CliError::input(format!("{name}: plaintext is not UTF-8")))?;
    let v = to_value(text, format).map_err(|e| sops_err(&name, e))?;
    let obj = v.as_object().ok_or_else(|| {
        CliError::input(format!("{name}: exec-env needs a mapping at the top level"))
    })?;
    let envs = obj
        .iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k.clone(), s.clone())),
            Value::Number(_) | Value::Bool(_) => Some((k.clone(), v.to_string())),
            _ => None,
        })
        .collect();
    run_shell(command, envs)
}

/// Runs `sealkit sops exec-file`.
pub fn run_file(a: &ExecArgs) -> Result<(), CliError> {
    let ExecArgs {
        file,
        command,
        common,
    } = a;
    let name = display_name(file, common);
    let (_ef, _, _key, plain) = open_plain(file, common, &name, false)?;
    let tmp = PlainFile::new(file, &plain)?;
    let cmd = if command.contains("{}") {
        command.replace("{}", &shell_quote(&tmp.path))
    } else {
        format!("{command} {}", shell_quote(&tmp.path))
    };
    exit_like(tmp.run(Command::new("sh").arg("-c").arg(cmd))?)
}
