//! Where age identities come from, as sops reads them — all sources together, not first match:
//! `SOPS_AGE_KEY` (the keys themselves), `SOPS_AGE_KEY_FILE` (a path), `SOPS_AGE_KEY_CMD` (a
//! command printing keys), and the default `keys.txt` under the user config directory
//! (`$XDG_CONFIG_HOME/sops/age/keys.txt`, else `~/.config/sops/age/keys.txt`).

use std::path::PathBuf;
use std::process::Command;

use sealkit_keys::sops::AgeIdentities;

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
    if text.contains("-----BEGIN AGE ENCRYPTED FILE-----")
        || text.starts_with("age-encryption.org/")
    {
        return Err(CliError::input(format!(
            "{source}: passphrase-protected identity files are not supported yet"
        ))
        .with_hint("decrypt it once with `age -d -o keys.txt FILE` and point SOPS_AGE_KEY_FILE at the result"));
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
    Ok(Loaded { ids, sources })
}
