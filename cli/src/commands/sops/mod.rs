//! `sealkit sops`: sops' subcommands over `sealkit_keys::sops`, one module per subcommand.
//! This module holds what they share: resolving files, formats and identities, loading and
//! decrypting, and writing results atomically; all crypto and format work is in the library.

mod check;
pub mod config;
mod decrypt;
mod edit;
mod encrypt;
mod exec;
mod filestatus;
pub mod identities;
mod plaintext;
mod rotate;
mod set;
mod updatekeys;

use std::io::Write;
use std::path::{Path, PathBuf};

use sealkit_keys::sops::{DataKey, EncryptedFile, FileFormat, SopsError};
use zeroize::Zeroizing;

use crate::args::{OutputFlags, SopsCommand, SopsCommon};
use crate::error::CliError;
use crate::io::{read_limited, write_atomic};

pub use check::CheckArgs;
pub use decrypt::DecryptArgs;
pub use edit::EditArgs;
pub use encrypt::EncryptArgs;
pub use exec::ExecArgs;
pub use filestatus::FilestatusArgs;
pub use rotate::RotateArgs;
pub use set::{SetArgs, UnsetArgs};
pub use updatekeys::UpdatekeysArgs;

/// The largest file `sealkit sops` reads: SOPS files are configuration, not bulk data, and
/// everything is held in memory (twice) while it is processed.
const MAX_FILE: u64 = 128 << 20;

/// Runs a sops subcommand.
pub fn run(cmd: &SopsCommand) -> Result<(), CliError> {
    match cmd {
        SopsCommand::Encrypt(a) => encrypt::run(a),
        SopsCommand::Decrypt(a) => decrypt::run(a),
        SopsCommand::Edit(a) => edit::run(a),
        SopsCommand::Rotate(a) => rotate::run(a),
        SopsCommand::Updatekeys(a) => updatekeys::run(a),
        SopsCommand::Set(a) => set::run_set(a),
        SopsCommand::Unset(a) => set::run_unset(a),
        SopsCommand::ExecEnv(a) => exec::run_env(a),
        SopsCommand::ExecFile(a) => exec::run_file(a),
        SopsCommand::Filestatus(a) => filestatus::run(a),
        SopsCommand::Check(a) => check::run(a),
    }
}

fn display_name(file: &Path, common: &SopsCommon) -> String {
    common
        .filename_override
        .clone()
        .unwrap_or_else(|| file.display().to_string())
}

fn input_format(file: &Path, common: &SopsCommon) -> FileFormat {
    common
        .input_type
        .as_deref()
        .and_then(FileFormat::from_name)
        .unwrap_or_else(|| FileFormat::from_path(&display_name(file, common)))
}

fn output_format(input: FileFormat, common: &SopsCommon) -> FileFormat {
    common
        .output_type
        .as_deref()
        .and_then(FileFormat::from_name)
        .unwrap_or(input)
}

fn sops_err(file: &str, e: SopsError) -> CliError {
    let hint = match &e {
        SopsError::MacMismatch => Some(
            "if the change was intended, re-encrypt the plaintext; to read it anyway pass --ignore-mac",
        ),
        SopsError::NoMac => Some("files from very old sops versions have no MAC"),
        SopsError::NotSopsFile => Some("encrypt it first with `sealkit sops encrypt`"),
        SopsError::AlreadyEncrypted => {
            Some("use `sealkit sops edit`, `set` or `rotate` on encrypted files")
        }
        SopsError::UnsupportedKey(_) => {
            Some("sealkit works with age (X25519) and ssh-ed25519 keys and recipients")
        }
        _ => None,
    };
    let err = CliError::input(format!("{file}: {e}"));
    match hint {
        Some(h) => err.with_hint(h),
        None => err,
    }
}

fn load(file: &Path, common: &SopsCommon) -> Result<(EncryptedFile, FileFormat), CliError> {
    let name = display_name(file, common);
    let bytes = read_limited(file, MAX_FILE)?;
    let text =
        String::from_utf8(bytes).map_err(|_| CliError::input(format!("{name}: not UTF-8 text")))?;
    let format = input_format(file, common);
    let mut ef = EncryptedFile::load(&text, format).map_err(|e| match e {
        // A name with no known extension was read as binary: perhaps it is not, and says so.
        SopsError::NotSopsFile
            if common.input_type.is_none() && FileFormat::from_extension(&name).is_none() =>
        {
            CliError::input(format!("{name}: {e}")).with_hint(
                "its name has none of the extensions .yaml .yml .json .env .ini, so it was read \
                 as a binary SOPS file (JSON); pass --input-type if it is YAML, JSON, dotenv or INI",
            )
        }
        e => sops_err(&name, e),
    })?;
    ef.indent = common.indent.map(usize::from);
    Ok((ef, format))
}

/// A loaded file, its format, its data key and its plaintext.
type Opened = (EncryptedFile, FileFormat, DataKey, Zeroizing<Vec<u8>>);

/// Loads, unlocks and decrypts a file: the steps every reading command starts with.
fn open_plain(
    file: &Path,
    common: &SopsCommon,
    name: &str,
    ignore_mac: bool,
) -> Result<Opened, CliError> {
    let (ef, format) = load(file, common)?;
    let key = data_key(name, &ef)?;
    let plain = ef
        .decrypt_with_key(&key, ignore_mac)
        .map_err(|e| sops_err(name, e))?;
    Ok((ef, format, key, plain))
}

/// The data key, with an error that lists the file's recipients and the identities tried.
fn data_key(name: &str, ef: &EncryptedFile) -> Result<DataKey, CliError> {
    let loaded = identities::load()?;
    ef.data_key(&loaded.ids).map_err(|e| match e {
        SopsError::NoIdentity => {
            let recipients = ef.metadata.age_recipients();
            let tried = if loaded.sources.is_empty() {
                "no age identities were found".to_string()
            } else {
                format!(
                    "tried {} identit{} ({}) with recipients {}",
                    loaded.ids.len(),
                    if loaded.ids.len() == 1 { "y" } else { "ies" },
                    loaded.sources.join(", "),
                    loaded.ids.recipients.join(", ")
                )
            };
            CliError::input(format!(
                "{name}: no identity can decrypt the data key; the file is encrypted for {}; {tried}",
                if recipients.is_empty() { "no age recipients".to_string() } else { recipients.join(", ") }
            ))
            .with_hint("set SOPS_AGE_KEY_FILE to the matching key file, or put it at ~/.config/sops/age/keys.txt")
        }
        other => sops_err(name, other),
    })
}

fn write_out(
    file: &Path,
    out: &OutputFlags,
    bytes: &[u8],
    plaintext: bool,
) -> Result<(), CliError> {
    // Plaintext is written 0600 whatever was there: the mode of the encrypted file it replaces
    // (`-i`) or of an old output file is often 0644 and must not carry over. write_atomic
    // creates the temporary file 0600 and renames it into place, so no other mode is ever seen.
    let mode = plaintext.then_some(0o600);
    if out.in_place {
        return write_atomic(file, bytes, mode);
    }
    match &out.output {
        Some(p) => write_atomic(p, bytes, mode),
        None => {
            let mut o = std::io::stdout().lock();
            o.write_all(bytes)
                .and_then(|_| o.flush())
                .map_err(|e| CliError::io_at("cannot write to stdout", &e))
        }
    }
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

fn walk_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CliError> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CliError> {
        let rd = std::fs::read_dir(dir)
            .map_err(|e| CliError::io_at(&format!("cannot list {}", dir.display()), &e))?;
        for entry in rd.flatten() {
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            match entry.file_type() {
                Ok(t) if t.is_dir() && !hidden => walk(&path, out)?,
                Ok(t)
                    if t.is_file()
                        && entry.file_name() != ".sops.yaml"
                        && entry.file_name() != ".sops.yml" =>
                {
                    out.push(path)
                }
                _ => {}
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    out.sort();
    Ok(out)
}
