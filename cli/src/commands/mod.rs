//! One module per subcommand, plus the helpers they share.

pub mod build;
pub mod demo;
pub mod diff;
pub mod keygen;
pub mod reseal;
pub mod seal;
pub mod sops;

use std::path::Path;

use sealkit_keys::seal::Keyring;
use sealkit_keys::seal::manifest::{Document, Format, ManifestError, load_private_keys};

use crate::args::OutputFormat;
use crate::error::CliError;
use crate::io::read_bytes;

/// Loads every private key of every file into one keyring.
pub fn load_keyring(paths: &[impl AsRef<Path>]) -> Result<Keyring, CliError> {
    if paths.is_empty() {
        return Err(CliError::usage("no private keys given")
            .with_hint("pass --recovery-private-key FILE[,FILE...] (PEM keys or a Secret/List backup of the key Secrets)"));
    }
    let mut ring = Keyring::new();
    for p in paths {
        let p = p.as_ref();
        let bytes = read_bytes(p)?;
        let keys = load_private_keys(&bytes)
            .map_err(|e| CliError::input(format!("{}: {e}", p.display())))?;
        for k in keys {
            ring.add(k);
        }
    }
    Ok(ring)
}

/// An error about one document of an input, naming file, document and object.
pub fn doc_error(input: &str, doc: &Document, e: &ManifestError) -> CliError {
    let what = match (doc.kind(), doc.name()) {
        (Some(k), Some(n)) => format!(" ({k} '{n}')"),
        (Some(k), None) => format!(" ({k})"),
        _ => String::new(),
    };
    let err = CliError::input(format!(
        "{input}: document {} at line {}{what}: {e}",
        doc.index, doc.line
    ));
    match e.hint() {
        Some(h) => err.with_hint(h),
        None => err,
    }
}

/// An error parsing an input.
pub fn parse_error(input: &str, e: &ManifestError) -> CliError {
    let err = CliError::input(format!("{input}: {e}"));
    match e.hint() {
        Some(h) => err.with_hint(h),
        None => err,
    }
}

/// Converts the CLI's format enum.
pub fn to_format(f: OutputFormat) -> Format {
    match f {
        OutputFormat::Json => Format::Json,
        OutputFormat::Yaml => Format::Yaml,
    }
}
