//! Where age identities come from, as sops reads them — all sources together, not first match:
//! `SOPS_AGE_KEY` (the keys themselves), `SOPS_AGE_KEY_FILE` (a path), `SOPS_AGE_KEY_CMD` (a
//! command printing keys), the default `keys.txt` under the user config directory
//! (`$XDG_CONFIG_HOME/sops/age/keys.txt`, else `~/.config/sops/age/keys.txt`), and an SSH
//! ed25519 key (`SOPS_AGE_SSH_PRIVATE_KEY_FILE`, else `~/.ssh/id_ed25519`). A passphrase-protected
//! key file is opened with a passphrase read from the terminal.

use std::path::PathBuf;
use std::process::Command;

use std::io::IsTerminal;

use sealkit_keys::sops::AgeIdentities;
use zeroize::Zeroizing;

use crate::error::CliError;

/// Identities and a description of where each batch came from (for error messages).
pub struct Loaded {
    /// All identities found.
    pub ids: AgeIdentities,
    /// "SOPS_AGE_KEY_FILE=/path (2 keys)" per source tried.
    pub sources: Vec<String>,
}

fn default_keys_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("sops").join("age").join("keys.txt"))
}

fn parse(text: &str, source: &str) -> Result<AgeIdentities, CliError> {
    if AgeIdentities::is_encrypted_file(text.as_bytes()) {
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty");
        if tty.is_err() || !std::io::stderr().is_terminal() {
            return Err(CliError::input(format!("{source}: the identity file is passphrase-protected and there is no terminal to ask for the passphrase"))
                .with_hint("run it from a terminal, or decrypt the key file once with `age -d -o keys.txt FILE`"));
        }
        let pass = Zeroizing::new(
            rpassword::prompt_password(format!("Passphrase for {source}: "))
                .map_err(|e| CliError::io_at("cannot read the passphrase", &e))?,
        );
        return AgeIdentities::parse_encrypted(text.as_bytes(), &pass)
            .map_err(|e| CliError::input(format!("{source}: {e}")));
    }
    if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
        return AgeIdentities::parse_ssh(text)
            .map_err(|e| CliError::input(format!("{source}: {e}")));
    }
    AgeIdentities::parse(text).map_err(|e| CliError::input(format!("{source}: {e}")))
}

/// Loads every identity the environment provides.
pub fn load() -> Result<Loaded, CliError> {
    let mut ids = AgeIdentities::parse("").map_err(|e| CliError::input(e.to_string()))?;
    let mut sources = Vec::new();
    let mut add = |batch: AgeIdentities, what: String, ids: &mut AgeIdentities| {
        sources.push(format!(
            "{what} ({} key{})",
            batch.len(),
            if batch.len() == 1 { "" } else { "s" }
        ));
        ids.extend(batch);
    };
    if let Ok(text) = std::env::var("SOPS_AGE_KEY") {
        let batch = parse(&text, "SOPS_AGE_KEY")?;
        add(batch, "SOPS_AGE_KEY".into(), &mut ids);
    }
    if let Some(path) = std::env::var_os("SOPS_AGE_KEY_FILE").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(path);
        let text = std::fs::read_to_string(&p).map_err(|e| {
            CliError::io_at(
                &format!("cannot read SOPS_AGE_KEY_FILE={}", p.display()),
                &e,
            )
        })?;
        let batch = parse(&text, &format!("SOPS_AGE_KEY_FILE={}", p.display()))?;
        add(
            batch,
            format!("SOPS_AGE_KEY_FILE={}", p.display()),
            &mut ids,
        );
    }
    if let Ok(cmd) = std::env::var("SOPS_AGE_KEY_CMD") {
        let out = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .output()
            .map_err(|e| CliError::io_at("cannot run SOPS_AGE_KEY_CMD", &e))?;
        if !out.status.success() {
            return Err(CliError::input(format!(
                "SOPS_AGE_KEY_CMD exited with {}",
                out.status
            )));
        }
        let text = String::from_utf8(out.stdout)
            .map_err(|_| CliError::input("SOPS_AGE_KEY_CMD printed non-UTF-8 output"))?;
        let batch = parse(&text, "SOPS_AGE_KEY_CMD")?;
        add(batch, "SOPS_AGE_KEY_CMD".into(), &mut ids);
    }
    if let Some(p) = default_keys_file().filter(|p| p.exists()) {
        let text = std::fs::read_to_string(&p)
            .map_err(|e| CliError::io_at(&format!("cannot read {}", p.display()), &e))?;
        let batch = parse(&text, &p.display().to_string())?;
        add(batch, p.display().to_string(), &mut ids);
    }
    let ssh = std::env::var_os("SOPS_AGE_SSH_PRIVATE_KEY_FILE")
        .filter(|p| !p.is_empty())
        .map(|p| (PathBuf::from(p), true))
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| (PathBuf::from(h).join(".ssh").join("id_ed25519"), false))
        });
    if let Some((p, explicit)) = ssh {
        match std::fs::read_to_string(&p) {
            Ok(text) => match parse(&text, &p.display().to_string()) {
                Ok(batch) => add(batch, p.display().to_string(), &mut ids),
                // The implicit ~/.ssh key is a fallback: an unusable one is skipped, not fatal.
                Err(e) if !explicit => {
                    sources.push(format!("{} (skipped: {})", p.display(), e.message()))
                }
                Err(e) => return Err(e),
            },
            Err(e) if explicit => {
                return Err(CliError::io_at(
                    &format!("cannot read SOPS_AGE_SSH_PRIVATE_KEY_FILE={}", p.display()),
                    &e,
                ));
            }
            Err(_) => {}
        }
    }
    Ok(Loaded { ids, sources })
}
