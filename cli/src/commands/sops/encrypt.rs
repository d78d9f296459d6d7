//! `sealkit sops encrypt`: a plaintext file's values encrypted for age recipients from the
//! flags or the matching `.sops.yaml` rule.

use std::path::{Path, PathBuf};

use clap::Args;

use sealkit_keys::sops::{EncryptOptions, MetadataRule, encrypt};
use zeroize::Zeroizing;

use super::{MAX_FILE, config, display_name, input_format, sops_err, write_out};
use crate::args::{OutputFlags, RuleFlags, SopsCommon};
use crate::error::CliError;
use crate::io::read_limited;

/// `sealkit sops encrypt`.
#[derive(Debug, Clone, Args)]
pub struct EncryptArgs {
    /// The plaintext file.
    pub file: PathBuf,
    /// age recipients (comma-separated; overrides .sops.yaml).
    #[arg(
        short = 'a',
        long = "age",
        env = "SOPS_AGE_RECIPIENTS",
        value_delimiter = ','
    )]
    pub age: Vec<String>,
    /// Key groups needed to decrypt when .sops.yaml gives several.
    #[arg(long = "shamir-secret-sharing-threshold", value_name = "N")]
    pub shamir_threshold: Option<usize>,
    #[command(flatten)]
    pub rules: RuleFlags,
    #[command(flatten)]
    pub out: OutputFlags,
    #[command(flatten)]
    pub common: SopsCommon,
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
pub(super) fn options_for(
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

/// Runs `sealkit sops encrypt`.
pub fn run(a: &EncryptArgs) -> Result<(), CliError> {
    let EncryptArgs {
        file,
        age,
        shamir_threshold: shamir,
        rules,
        out,
        common,
    } = a;
    let name = display_name(file, common);
    let mut opts = options_for(file, common, age.clone(), Some(rules))?;
    opts.indent = common.indent.map(usize::from);
    if shamir.is_some() {
        opts.shamir_threshold = *shamir;
    }
    let plain = Zeroizing::new(read_limited(file, MAX_FILE)?);
    let text =
        encrypt(&plain, input_format(file, common), &opts).map_err(|e| sops_err(&name, e))?;
    write_out(file, out, text.as_bytes(), false)
}
