//! Secret ⇄ SealedSecret documents, shaped exactly as kubeseal reads and writes them.
//!
//! Documents are handled as JSON values (with field order preserved) rather than typed
//! structs: input may carry fields we do not model, and output must follow the Go
//! serializer's field order (`kind, apiVersion, metadata, spec{template, encryptedData}`),
//! its `creationTimestamp: null`, and its HTML-safe string escaping, so that our output is
//! byte-for-byte what kubeseal prints for the same ciphertext.
//!
//! `document` reads and writes document streams (YAML/JSON, Go-compatible output), `object`
//! reads the fields every transformation shares, `seal` turns Secrets into SealedSecrets, `open`
//! turns them back (recovery unseal, reseal, and the diagnosis of values that do not open), and
//! `backup` reads and writes the private keys of key Secrets.

mod backup;
mod document;
mod object;
mod open;
mod seal;

pub use backup::{key_secret, load_private_keys};
pub use document::{
    Document, Format, emit, parse_documents, split_yaml, to_json, to_yaml, yaml_body,
    yaml_read_options,
};
pub use object::{Target, secret_items};
pub use open::{
    OpenedItems, explain_open_failure, open_items, reseal, sealed_target, unseal, unseal_detailed,
};
pub use seal::{SealOptions, merge_into, seal_raw, seal_secret};

use super::{KeyError, SealError};

/// API version of SealedSecrets.
pub const SEALED_SECRET_API_VERSION: &str = "bitnami.com/v1alpha1";
/// Kind of SealedSecrets.
pub const SEALED_SECRET_KIND: &str = "SealedSecret";

/// Annotations that hold a full copy of the applied object (and so the Secret in clear):
/// never copied into a template.
pub const LAST_APPLIED_ANNOTATIONS: [&str; 2] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "kubecfg.ksonnet.io/last-applied-configuration",
];

/// A problem with a document, naming the field at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The text is not YAML/JSON.
    #[error("line {line}: {reason}")]
    Syntax {
        /// 1-based line where the document starts or the error was found.
        line: usize,
        /// Parser message.
        reason: String,
    },
    /// A field is missing or has the wrong shape.
    #[error("{field}: {reason}")]
    Field {
        /// Dotted path of the field (`data.password`, `metadata.name`).
        field: String,
        /// What is wrong.
        reason: String,
        /// What to do about it, where something helps (see [`ManifestError::hint`]).
        hint: Option<String>,
    },
    /// Values could not be opened: each key and why. Keys that failed for the same reason are
    /// named together, so the reason is said once.
    #[error("{}", unseal_message(.0))]
    Unseal(Vec<(String, String)>),
    /// Sealing failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// A key could not be read.
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl ManifestError {
    /// What the user can do about it, if there is something to say beyond the message (a CLI
    /// prints it as its hint line).
    pub fn hint(&self) -> Option<&str> {
        match self {
            ManifestError::Field { hint, .. } => hint.as_deref(),
            _ => None,
        }
    }
}

fn field(field: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Field {
        field: field.into(),
        reason: reason.into(),
        hint: None,
    }
}

fn field_with_hint(
    field: impl Into<String>,
    reason: impl Into<String>,
    hint: impl Into<String>,
) -> ManifestError {
    ManifestError::Field {
        field: field.into(),
        reason: reason.into(),
        hint: Some(hint.into()),
    }
}

/// `encryptedData.a, encryptedData.b: reason; encryptedData.c: other reason`, reasons in the
/// order they first appear.
fn unseal_message(failures: &[(String, String)]) -> String {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for (key, reason) in failures {
        match groups.iter_mut().find(|(r, _)| r == reason) {
            Some((_, keys)) => keys.push(key),
            None => groups.push((reason, vec![key])),
        }
    }
    groups
        .iter()
        .map(|(reason, keys)| {
            let keys: Vec<String> = keys.iter().map(|k| format!("encryptedData.{k}")).collect();
            format!("{}: {reason}", keys.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}
