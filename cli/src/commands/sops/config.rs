//! `.sops.yaml`: found from the working directory up through its parents (at most 100
//! levels), or given by `--config` / `SOPS_CONFIG`. The first `creation_rules` entry whose
//! `path_regex` matches the file (path relative to the config file's directory) decides the
//! recipients and the encryption rule.

use std::path::{Path, PathBuf};

use regex::Regex;
use sealkit_keys::sops::{EncryptOptions, MetadataRule};
use serde::Deserialize;
use serde_json::Value;

use crate::error::CliError;

/// A list given either as a YAML list or as a comma-separated string.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum StringList {
    /// `age: a,b`
    Joined(String),
    /// `age: [a, b]`
    List(Vec<String>),
    /// Absent.
    #[default]
    None,
}

impl StringList {
    /// The items, trimmed, empty ones dropped.
    pub fn items(&self) -> Vec<String> {
        match self {
            StringList::Joined(s) => s
                .split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect(),
            StringList::List(v) => v
                .iter()
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect(),
            StringList::None => Vec::new(),
        }
    }
}

/// One key group of a rule.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuleGroup {
    /// age recipients.
    #[serde(default)]
    pub age: StringList,
    /// Other key types (named in "not supported" errors).
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

/// One `creation_rules` entry.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreationRule {
    /// Go RE2 regex over the file path.
    pub path_regex: Option<String>,
    /// age recipients.
    #[serde(default)]
    pub age: StringList,
    /// Key groups (Shamir).
    #[serde(default)]
    pub key_groups: Vec<RuleGroup>,
    /// Groups needed.
    pub shamir_threshold: Option<usize>,
    /// Rules.
    pub unencrypted_suffix: Option<String>,
    /// Rules.
    pub encrypted_suffix: Option<String>,
    /// Rules.
    pub unencrypted_regex: Option<String>,
    /// Rules.
    pub encrypted_regex: Option<String>,
    /// Rules by comment.
    pub unencrypted_comment_regex: Option<String>,
    /// Rules by comment.
    pub encrypted_comment_regex: Option<String>,
    /// MAC mode.
    #[serde(default)]
    pub mac_only_encrypted: bool,
    /// Everything else (pgp, kms, … : named in "not supported" errors).
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

/// A parsed `.sops.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Config {
    /// Rules in order.
    #[serde(default)]
    pub creation_rules: Vec<CreationRule>,
    /// Other top-level keys (stores, destination_rules) are accepted and ignored.
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

/// A config file and where it was found.
pub struct Found {
    /// The config.
    pub config: Config,
    /// Its path.
    pub path: PathBuf,
}

/// Finds and parses the config (explicit path, `SOPS_CONFIG`, or the nearest `.sops.yaml`).
pub fn find(explicit: Option<&Path>, start: &Path) -> Result<Option<Found>, CliError> {
    let path = match explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("SOPS_CONFIG").map(PathBuf::from))
    {
        Some(p) => Some(p),
        None => {
            let mut dir = std::fs::canonicalize(start).unwrap_or_else(|_| start.to_path_buf());
            let mut found = None;
            for _ in 0..100 {
                for name in [".sops.yaml", ".sops.yml"] {
                    if dir.join(name).is_file() {
                        found = Some(dir.join(name));
                        break;
                    }
                }
                if found.is_some() || !dir.pop() {
                    break;
                }
            }
            found
        }
    };
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| CliError::io_at(&format!("cannot read {}", path.display()), &e))?;
    let config: Config = serde_saphyr::from_str_with_options(
        &text,
        sealkit_keys::seal::manifest::yaml_read_options(),
    )
    .map_err(|e| {
        CliError::input(format!("{}: {e}", path.display()))
            .with_hint("see docs/sops.md for the .sops.yaml fields sealkit reads")
    })?;
    Ok(Some(Found { config, path }))
}

impl Found {
    /// Its path for messages: relative to the working directory when it is beneath it (the
    /// search upwards works on the canonical path, which is long and says no more).
    pub fn shown(&self) -> String {
        std::env::current_dir()
            .and_then(std::fs::canonicalize)
            .ok()
            .and_then(|cwd| self.path.strip_prefix(cwd).ok().map(Path::to_path_buf))
            .filter(|rel| !rel.as_os_str().is_empty())
            .unwrap_or_else(|| self.path.clone())
            .display()
            .to_string()
    }

    /// The first rule matching `file` (relative to the config's directory).
    pub fn rule_for(&self, file: &Path) -> Result<Option<&CreationRule>, CliError> {
        let abs = std::fs::canonicalize(file).unwrap_or_else(|_| {
            std::env::current_dir()
                .map(|d| d.join(file))
                .unwrap_or_else(|_| file.to_path_buf())
        });
        let dir = self
            .path
            .parent()
            .map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.to_path_buf()))
            .unwrap_or_default();
        let rel = abs.strip_prefix(&dir).map(Path::to_path_buf).unwrap_or(abs);
        let rel = rel.to_string_lossy().replace('\\', "/");
        for (i, rule) in self.config.creation_rules.iter().enumerate() {
            match &rule.path_regex {
                None => return Ok(Some(rule)),
                Some(re) => {
                    let re = Regex::new(re).map_err(|e| {
                        CliError::input(format!(
                            "{}: creation_rules[{i}].path_regex: {e}",
                            self.path.display()
                        ))
                    })?;
                    if re.is_match(&rel) {
                        return Ok(Some(rule));
                    }
                }
            }
        }
        Ok(None)
    }
}

impl CreationRule {
    /// Encryption options from this rule.
    pub fn options(&self, config_path: &Path) -> Result<EncryptOptions, CliError> {
        let unsupported: Vec<&String> = self
            .other
            .keys()
            .chain(self.key_groups.iter().flat_map(|g| g.other.keys()))
            .filter(|k| !matches!(k.as_str(), "aws_profile" | "merge"))
            .collect();
        let age_count = self.age.items().len()
            + self
                .key_groups
                .iter()
                .map(|g| g.age.items().len())
                .sum::<usize>();
        if !unsupported.is_empty() && age_count == 0 {
            return Err(CliError::input(format!(
                "{}: this rule uses key type(s) {} which sealkit does not support; only age is supported",
                config_path.display(),
                unsupported
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let rule = MetadataRule::from_fields([
            self.unencrypted_suffix.clone(),
            self.encrypted_suffix.clone(),
            self.unencrypted_regex.clone(),
            self.encrypted_regex.clone(),
            self.unencrypted_comment_regex.clone(),
            self.encrypted_comment_regex.clone(),
        ])
        .map_err(|e| CliError::input(format!("{}: {e}", config_path.display())))?;
        Ok(EncryptOptions {
            age: self.age.items(),
            key_groups: self
                .key_groups
                .iter()
                .map(|g| g.age.items())
                .filter(|g| !g.is_empty())
                .collect(),
            shamir_threshold: self.shamir_threshold,
            rule,
            mac_only_encrypted: self.mac_only_encrypted,
            indent: None,
        })
    }
}
