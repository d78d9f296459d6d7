//! Key sources that wrap and unwrap a file's data key. age is the one we support: X25519
//! recipients (`age1…`), with identities given as text (`AGE-SECRET-KEY-1…` lines, as in
//! `keys.txt`). Where identities come from (env vars, files, commands) is the CLI's business.

use std::io::{Read, Write};
use std::str::FromStr;

use zeroize::Zeroizing;

use super::SopsError;
use super::cipher::DataKey;

/// A set of age identities.
pub struct AgeIdentities {
    ids: Vec<age::x25519::Identity>,
    /// Their recipients, for messages.
    pub recipients: Vec<String>,
}

impl AgeIdentities {
    /// Parses identity text: one `AGE-SECRET-KEY-1…` per line; blank and `#` lines skipped.
    pub fn parse(text: &str) -> Result<Self, SopsError> {
        let mut ids = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with("AGE-PLUGIN-") || line.starts_with("AGE-SECRET-KEY-PQ-1") {
                return Err(SopsError::Unsupported(format!(
                    "age identity type on line {} ({}…)",
                    n + 1,
                    &line[..line.len().min(16)]
                )));
            }
            let id = age::x25519::Identity::from_str(line).map_err(|_| {
                SopsError::Identity(format!(
                    "line {} is not an age identity (AGE-SECRET-KEY-1…)",
                    n + 1
                ))
            })?;
            ids.push(id);
        }
        let recipients = ids.iter().map(|i| i.to_public().to_string()).collect();
        Ok(AgeIdentities { ids, recipients })
    }

    /// Adds the identities of another set.
    pub fn extend(&mut self, other: AgeIdentities) {
        self.ids.extend(other.ids);
        self.recipients.extend(other.recipients);
    }

    /// Number of identities.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Opens an armored age file (`enc`) with any identity.
    pub fn unwrap(&self, enc: &str) -> Result<Zeroizing<Vec<u8>>, SopsError> {
        let decryptor =
            age::Decryptor::new_buffered(age::armor::ArmoredReader::new(enc.as_bytes()))
                .map_err(|e| SopsError::Identity(format!("invalid age envelope: {e}")))?;
        let mut reader = decryptor
            .decrypt(self.ids.iter().map(|i| i as &dyn age::Identity))
            .map_err(|_| SopsError::NoIdentity)?;
        let mut out = Zeroizing::new(Vec::new());
        reader
            .read_to_end(&mut out)
            .map_err(|e| SopsError::Identity(format!("age payload: {e}")))?;
        Ok(out)
    }
}

/// Wraps `key` for an age recipient as an armored age file, as sops writes `enc`.
pub fn wrap_for(recipient: &str, key: &[u8]) -> Result<String, SopsError> {
    let r = age::x25519::Recipient::from_str(recipient.trim()).map_err(|e| {
        if recipient.starts_with("ssh-") {
            SopsError::Unsupported(format!(
                "SSH recipients ({})",
                recipient.split_whitespace().next().unwrap_or("ssh")
            ))
        } else {
            SopsError::Identity(format!("invalid age recipient '{recipient}': {e}"))
        }
    })?;
    let encryptor = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
        .map_err(|e| SopsError::Identity(format!("age: {e}")))?;
    let mut out = Vec::new();
    let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
        .map_err(|e| SopsError::Identity(format!("age: {e}")))?;
    let mut w = encryptor
        .wrap_output(armor)
        .map_err(|e| SopsError::Identity(format!("age: {e}")))?;
    w.write_all(key)
        .map_err(|e| SopsError::Identity(format!("age: {e}")))?;
    w.finish()
        .and_then(|a| a.finish())
        .map_err(|e| SopsError::Identity(format!("age: {e}")))?;
    String::from_utf8(out).map_err(|_| SopsError::Identity("age armor is not UTF-8".into()))
}

/// Unwraps the data key of a key group list (one group, or Shamir groups) with age identities.
pub fn unwrap_data_key(
    meta: &super::metadata::Metadata,
    ids: &AgeIdentities,
) -> Result<DataKey, SopsError> {
    let groups = meta.groups();
    let mut parts = Vec::new();
    for g in &groups {
        let share = g.age.iter().find_map(|a| ids.unwrap(&a.enc).ok());
        if let Some(s) = share {
            parts.push(s);
        }
    }
    if groups.len() <= 1 {
        return match parts.pop() {
            Some(k) => DataKey::from_bytes(&k),
            None => {
                let other = meta.other_key_types();
                if meta.age_recipients().is_empty() && !other.is_empty() {
                    Err(SopsError::Unsupported(format!(
                        "key type(s) {}",
                        other.join(", ")
                    )))
                } else {
                    Err(SopsError::NoIdentity)
                }
            }
        };
    }
    let threshold = meta.shamir_threshold.unwrap_or(groups.len());
    if parts.len() < threshold {
        return Err(SopsError::NoIdentity);
    }
    let key = super::shamir::combine(&parts[..threshold])?;
    DataKey::from_bytes(&key)
}
