//! `sealkit sops`: sops' subcommands over `sealkit_keys::sops`. This module resolves files,
//! formats, identities and `.sops.yaml` rules, and writes results atomically; all crypto and
//! format work is in the library.

pub mod config;
pub mod identities;
mod plaintext;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sealkit_keys::sops::edit::{extract, parse_path, set_in_text, to_value};
use sealkit_keys::sops::walk::IvStash;
use sealkit_keys::sops::{
    DataKey, EncryptOptions, EncryptedFile, FileFormat, MetadataRule, SopsError, encrypt,
    encrypt_with_key,
};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::args::{OutputFlags, RuleFlags, SopsCommand, SopsCommon};
use crate::error::CliError;
use crate::io::{read_bytes, read_limited, write_atomic};
use plaintext::PlainFile;

/// The largest file `sealkit sops` reads: SOPS files are configuration, not bulk data, and
/// everything is held in memory (twice) while it is processed.
const MAX_FILE: u64 = 128 << 20;

/// Runs a sops subcommand.
pub fn run(cmd: SopsCommand) -> Result<(), CliError> {
    match cmd {
        SopsCommand::Encrypt {
            file,
            age,
            shamir_threshold,
            rules,
            out,
            common,
        } => encrypt_cmd(&file, age, shamir_threshold, &rules, &out, &common),
        SopsCommand::Decrypt {
            file,
            extract,
            ignore_mac,
            out,
            common,
        } => decrypt_cmd(&file, extract.as_deref(), ignore_mac, &out, &common),
        SopsCommand::Edit {
            file,
            ignore_mac,
            common,
        } => edit_cmd(&file, ignore_mac, &common),
        SopsCommand::Rotate {
            file,
            add_age,
            rm_age,
            out,
            common,
        } => rotate_cmd(&file, &add_age, &rm_age, &out, &common),
        SopsCommand::Updatekeys {
            files,
            yes,
            check,
            common,
        } => updatekeys_cmd(&files, yes, check, &common),
        SopsCommand::Set {
            file,
            index,
            value,
            common,
        } => {
            let v: Value = serde_json::from_str(&value).map_err(|e| {
                CliError::usage(format!("the value must be JSON ({e})"))
                    .with_hint("quote strings twice: '\"text\"'")
            })?;
            set_cmd(&file, &index, Some(v), &common)
        }
        SopsCommand::Unset {
            file,
            index,
            common,
        } => set_cmd(&file, &index, None, &common),
        SopsCommand::ExecEnv {
            file,
            command,
            common,
        } => exec_env(&file, &command, &common),
        SopsCommand::ExecFile {
            file,
            command,
            common,
        } => exec_file(&file, &command, &common),
        SopsCommand::Filestatus { file, common } => filestatus(&file, &common),
        SopsCommand::Check { paths, common } => check_cmd(&paths, &common),
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
        SopsError::Unsupported(_) => Some("sealkit supports age keys only"),
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
    let mut ef = EncryptedFile::load(&text, format).map_err(|e| sops_err(&name, e))?;
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

fn rule_from_flags(r: &RuleFlags) -> Result<Option<MetadataRule>, CliError> {
    MetadataRule::from_fields([
        r.unencrypted_suffix.clone(),
        r.encrypted_suffix.clone(),
        r.unencrypted_regex.clone(),
        r.encrypted_regex.clone(),
        r.unencrypted_comment_regex.clone(),
        r.encrypted_comment_regex.clone(),
    ])
    .map_err(|_| {
        CliError::usage(
            "give at most one of --unencrypted-suffix, --encrypted-suffix, --unencrypted-regex, --encrypted-regex, --unencrypted-comment-regex, --encrypted-comment-regex",
        )
    })
}

/// Encryption options for a new file: flags first, then the matching `.sops.yaml` rule.
fn options_for(
    file: &Path,
    common: &SopsCommon,
    age: Vec<String>,
    rules: Option<&RuleFlags>,
) -> Result<EncryptOptions, CliError> {
    let name = PathBuf::from(display_name(file, common));
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let mut opts = match config::find(common.config.as_deref(), &cwd)? {
        Some(found) => match found.rule_for(&name)? {
            Some(rule) => rule.options(&found.path)?,
            None => EncryptOptions::default(),
        },
        None => EncryptOptions::default(),
    };
    if !age.is_empty() {
        opts.age = age;
        opts.key_groups.clear();
    }
    if let Some(r) = rules {
        if let Some(rule) = rule_from_flags(r)? {
            opts.rule = Some(rule);
        }
        opts.mac_only_encrypted |= r.mac_only_encrypted;
    }
    if opts.age.is_empty() && opts.key_groups.is_empty() {
        return Err(
            CliError::usage(format!("{}: no age recipients", name.display())).with_hint(
                "pass --age age1..., set SOPS_AGE_RECIPIENTS, or add a creation rule to .sops.yaml",
            ),
        );
    }
    Ok(opts)
}

fn encrypt_cmd(
    file: &Path,
    age: Vec<String>,
    shamir: Option<usize>,
    rules: &RuleFlags,
    out: &OutputFlags,
    common: &SopsCommon,
) -> Result<(), CliError> {
    let name = display_name(file, common);
    let mut opts = options_for(file, common, age, Some(rules))?;
    opts.indent = common.indent.map(usize::from);
    if shamir.is_some() {
        opts.shamir_threshold = shamir;
    }
    let plain = Zeroizing::new(read_limited(file, MAX_FILE)?);
    let text =
        encrypt(&plain, input_format(file, common), &opts).map_err(|e| sops_err(&name, e))?;
    write_out(file, out, text.as_bytes(), false)
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

fn decrypt_cmd(
    file: &Path,
    extract_path: Option<&str>,
    ignore_mac: bool,
    out: &OutputFlags,
    common: &SopsCommon,
) -> Result<(), CliError> {
    let name = display_name(file, common);
    let (_ef, format, _key, plain) = open_plain(file, common, &name, ignore_mac)?;
    let to = output_format(format, common);
    let bytes = match extract_path {
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

fn editor() -> String {
    std::env::var("SOPS_EDITOR")
        .or_else(|_| std::env::var("EDITOR"))
        .ok()
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".to_string())
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

fn edit_cmd(file: &Path, ignore_mac: bool, common: &SopsCommon) -> Result<(), CliError> {
    let name = display_name(file, common);
    let (ef, format, key, plain) = open_plain(file, common, &name, ignore_mac)?;
    let stash = ef.iv_stash(&key);
    let tmp = PlainFile::new(file, &plain)?;
    loop {
        let status = tmp.run(Command::new("sh").arg("-c").arg(format!(
            "{} {}",
            editor(),
            shell_quote(&tmp.path)
        )))?;
        if !status.success() {
            return Err(CliError::input(format!(
                "the editor exited with {status}; {name} was not changed"
            )));
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

fn rotate_cmd(
    file: &Path,
    add: &[String],
    rm: &[String],
    out: &OutputFlags,
    common: &SopsCommon,
) -> Result<(), CliError> {
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

fn exec_env(file: &Path, command: &str, common: &SopsCommon) -> Result<(), CliError> {
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

fn exec_file(file: &Path, command: &str, common: &SopsCommon) -> Result<(), CliError> {
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

fn filestatus(file: &Path, common: &SopsCommon) -> Result<(), CliError> {
    let name = display_name(file, common);
    let bytes = read_bytes(file)?;
    let text = String::from_utf8_lossy(&bytes);
    let encrypted = match EncryptedFile::load(&text, input_format(file, common)) {
        Ok(_) => true,
        Err(SopsError::NotSopsFile) => false,
        Err(SopsError::Format(_) | SopsError::TooDeep { .. })
            if input_format(file, common) == FileFormat::Binary =>
        {
            false
        }
        Err(e) => return Err(sops_err(&name, e)),
    };
    println!("{}", serde_json::json!({ "encrypted": encrypted }));
    Ok(())
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

fn updatekeys_cmd(
    files: &[PathBuf],
    yes: bool,
    check: bool,
    common: &SopsCommon,
) -> Result<(), CliError> {
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
        for s in &stale {
            println!("{s}: recipients differ from {}", found.path.display());
        }
        return Err(CliError::silent(1));
    }
    if stale.is_empty() {
        eprintln!("all files match {}", found.path.display());
    }
    Ok(())
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

fn check_cmd(paths: &[PathBuf], common: &SopsCommon) -> Result<(), CliError> {
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
            // of an unknown type is tried as a binary SOPS file, i.e. JSON; deep JSON in one of
            // those is simply not a SOPS file.)
            Err(e @ SopsError::TooDeep { .. }) if format != FileFormat::Binary => {
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
                f.path.display()
            ));
            continue;
        }
        let docs = match format {
            FileFormat::Yaml | FileFormat::Json if text.contains("Secret") => {
                sealkit_keys::seal::manifest::parse_documents(&text).unwrap_or_default()
            }
            _ => Vec::new(),
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
    for p in &problems {
        println!("{p}");
    }
    Err(CliError::silent(1))
}
