//! `sealkit sops updatekeys`: the data key re-wrapped for the recipients `.sops.yaml` now
//! lists; values and MAC untouched.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;
use sealkit_keys::sops::{EncryptOptions, EncryptedFile};

use super::{config, data_key, load, sops_err, walk_files};
use crate::args::SopsCommon;
use crate::error::CliError;
use crate::io::write_atomic;

/// `sealkit sops updatekeys`.
#[derive(Debug, Clone, Args)]
pub struct UpdatekeysArgs {
    /// Encrypted files or directories.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Only list files whose recipients differ from .sops.yaml (exit 1 if any).
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub common: SopsCommon,
}

fn recipients_differ(ef: &EncryptedFile, want: &EncryptOptions) -> bool {
    let have = ef.options();
    let norm = |o: &EncryptOptions| -> Vec<Vec<String>> {
        let groups = if o.key_groups.is_empty() {
            vec![o.age.clone()]
        } else {
            o.key_groups.clone()
        };
        groups
            .into_iter()
            .map(|mut g| {
                g.sort();
                g
            })
            .collect()
    };
    norm(&have) != norm(want)
        || have.shamir_threshold != want.shamir_threshold && !want.key_groups.is_empty()
}

/// Runs `sealkit sops updatekeys`.
pub fn run(a: &UpdatekeysArgs) -> Result<(), CliError> {
    let UpdatekeysArgs {
        files,
        yes,
        check,
        common,
    } = a;
    let (yes, check) = (*yes, *check);
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let found = config::find(common.config.as_deref(), &cwd)?.ok_or_else(|| {
        CliError::usage("no .sops.yaml found")
            .with_hint("updatekeys syncs files with the recipients .sops.yaml lists")
    })?;
    let mut stale = Vec::new();
    for file in walk_files(files)? {
        let Ok((ef, format)) = load(&file, common) else {
            continue;
        };
        let Some(rule) = found.rule_for(&file)? else {
            continue;
        };
        let mut want = rule.options(&found.path)?;
        // updatekeys changes recipients only; the file keeps its rule and MAC mode.
        let have = ef.options();
        want.rule = have.rule.clone();
        want.mac_only_encrypted = have.mac_only_encrypted;
        if !recipients_differ(&ef, &want) {
            continue;
        }
        stale.push(file.display().to_string());
        if check {
            continue;
        }
        if !yes {
            if !std::io::stdin().is_terminal() {
                return Err(CliError::usage(format!(
                    "{}: recipients differ from .sops.yaml; pass -y to update without asking",
                    file.display()
                )));
            }
            eprint!(
                "{}: re-wrap the data key for {} ? (y/N) ",
                file.display(),
                want.age.join(", ")
            );
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            if !line.trim().eq_ignore_ascii_case("y") {
                continue;
            }
        }
        let name = file.display().to_string();
        let key = data_key(&name, &ef)?;
        let text = ef
            .with_recipients(&want, &key)
            .map_err(|e| sops_err(&name, e))?;
        let _ = format;
        write_atomic(&file, text.as_bytes(), None)?;
        eprintln!("{name}: updated");
    }
    if check && !stale.is_empty() {
        // The list on stdout (one file a line, for scripts); the summary and what to do on stderr.
        for s in &stale {
            println!("{s}: recipients differ from {}", found.shown());
        }
        return Err(CliError::input(format!(
            "{} file(s) not encrypted for the recipients {} lists",
            stale.len(),
            found.shown()
        ))
        .with_hint(
            "`sealkit sops updatekeys -y FILE...` re-wraps their data keys (values untouched)",
        ));
    }
    if stale.is_empty() {
        eprintln!("all files match {}", found.shown());
    }
    Ok(())
}
