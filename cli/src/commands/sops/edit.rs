//! `sealkit sops edit`: the plaintext in a private temporary file, `$SOPS_EDITOR`/`$EDITOR` on
//! it, then re-encrypted with the same data key (unchanged values keep their ciphertext).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::Command;

use clap::Args;
use sealkit_keys::sops::encrypt_with_key;
use zeroize::Zeroizing;

use super::plaintext::PlainFile;
use super::{display_name, open_plain, shell_quote};
use crate::args::SopsCommon;
use crate::error::CliError;
use crate::io::{read_bytes, write_atomic};

/// `sealkit sops edit`.
#[derive(Debug, Clone, Args)]
pub struct EditArgs {
    /// The encrypted file.
    pub file: PathBuf,
    /// Open even when the MAC does not verify.
    #[arg(long)]
    pub ignore_mac: bool,
    #[command(flatten)]
    pub common: SopsCommon,
}

fn editor() -> String {
    std::env::var("SOPS_EDITOR")
        .or_else(|_| std::env::var("EDITOR"))
        .ok()
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".to_string())
}

/// Runs `sealkit sops edit`.
pub fn run(a: &EditArgs) -> Result<(), CliError> {
    let EditArgs {
        file,
        ignore_mac,
        common,
    } = a;
    let name = display_name(file, common);
    let (ef, format, key, plain) = open_plain(file, common, &name, *ignore_mac)?;
    let stash = ef.iv_stash(&key);
    let tmp = PlainFile::new(file, &plain)?;
    let editor = editor();
    loop {
        let status = tmp.run(Command::new("sh").arg("-c").arg(format!(
            "{} {}",
            editor,
            shell_quote(&tmp.path)
        )))?;
        if !status.success() {
            let how = match status.code() {
                Some(c) => format!("exited with status {c}"),
                None => "was killed by a signal".to_string(),
            };
            return Err(CliError::input(format!(
                "the editor ({editor}) {how}; {name} was not changed"
            ))
            .with_hint("the editor is $SOPS_EDITOR, else $EDITOR, else vi"));
        }
        let edited = Zeroizing::new(read_bytes(&tmp.path)?);
        if edited[..] == plain[..] {
            eprintln!("{name}: no changes; the file was not rewritten");
            return Ok(());
        }
        match encrypt_with_key(&edited, format, &ef.options(), &key, Some(&stash)) {
            // A signal arriving now waits for the write: the file is either untouched or
            // completely rewritten.
            Ok(text) => return tmp.guarded(|| write_atomic(file, text.as_bytes(), None)),
            Err(e) => {
                eprintln!("error: {name}: the edited file cannot be encrypted: {e}");
                if !std::io::stdin().is_terminal() {
                    return Err(CliError::input(format!(
                        "{name} was not changed (no terminal to re-edit from)"
                    )));
                }
                eprint!(
                    "Press Enter to return to the editor, or Ctrl+C to give up ({name} is unchanged) "
                );
                let mut line = String::new();
                if std::io::stdin()
                    .read_line(&mut line)
                    .map(|n| n == 0)
                    .unwrap_or(true)
                {
                    return Err(CliError::input(format!("{name} was not changed")));
                }
            }
        }
    }
}
