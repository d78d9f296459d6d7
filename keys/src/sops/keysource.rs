//! Key sources that wrap and unwrap a file's data key. age is the one we support: X25519
//! recipients (`age1…`), with identities given as text (`AGE-SECRET-KEY-1…` lines, as in
//! `keys.txt`). Where identities come from (env vars, files, commands) is the CLI's business.

use std::io::{Read, Write};
use std::str::FromStr;

use zeroize::Zeroizing;

use super::SopsError;
use super::cipher::DataKey;

/// A set of age identities: X25519 keys and ssh-ed25519 keys.
pub struct AgeIdentities {
    ids: Vec<Box<dyn age::Identity + Send + Sync>>,
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
                let kind = if line.starts_with("AGE-PLUGIN-") {
                    "age plugin identities"
                } else {
                    "post-quantum age identities"
                };
                return Err(SopsError::UnsupportedKey(format!(
                    "{kind} (line {})",
                    n + 1
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
        let ids = ids
            .into_iter()
            .map(|i| Box::new(i) as Box<dyn age::Identity + Send + Sync>)
            .collect();
        Ok(AgeIdentities { ids, recipients })
    }

    /// An OpenSSH ed25519 private key (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    pub fn parse_ssh(text: &str) -> Result<Self, SopsError> {
        let id = super::ssh::SshEd25519Identity::parse(text)?;
        let recipients = vec![id.recipient()];
        Ok(AgeIdentities {
            ids: vec![Box::new(id)],
            recipients,
        })
    }

    /// A passphrase-protected identity file (an age file encrypted with scrypt, armored or
    /// binary) holding identity lines.
    pub fn parse_encrypted(data: &[u8], passphrase: &str) -> Result<Self, SopsError> {
        let mut scrypt =
            age::scrypt::Identity::new(age::secrecy::SecretString::from(passphrase.to_string()));
        // The Go CLI writes work factor 18 and accepts up to 22; do the same rather than
        // second-guess from a timing estimate.
        scrypt.set_max_work_factor(22);
        // age's armor errors carry the base64 crate's text (a byte of the file and its offset):
        // never formatted.
        let decryptor = age::Decryptor::new_buffered(age::armor::ArmoredReader::new(data))
            .map_err(|_| {
                SopsError::Identity(
                    "not an encrypted identity file (bad age header or armor)".into(),
                )
            })?;
        let mut reader = decryptor
            .decrypt(std::iter::once(&scrypt as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::ExcessiveWork { .. } => {
                    SopsError::Identity(format!("identity file: {e}"))
                }
                _ => SopsError::Identity("wrong passphrase for the identity file".into()),
            })?;
        let mut text = Zeroizing::new(String::new());
        reader
            .read_to_string(&mut text)
            .map_err(|_| SopsError::Identity("the identity file does not hold text".into()))?;
        Self::parse(&text)
    }

    /// Whether `data` looks like a passphrase-protected identity file.
    pub fn is_encrypted_file(data: &[u8]) -> bool {
        data.starts_with(b"age-encryption.org/v1")
            || data
                .windows(34)
                .any(|w| w == b"-----BEGIN AGE ENCRYPTED FILE-----")
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
            age::Decryptor::new_buffered(age::armor::ArmoredReader::new(enc.as_bytes())).map_err(
                |_| SopsError::Identity("invalid age envelope (bad age header or armor)".into()),
            )?;
        let mut reader = decryptor
            .decrypt(self.ids.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(|_| SopsError::NoIdentity)?;
        let mut out = Zeroizing::new(Vec::new());
        reader
            .read_to_end(&mut out)
            .map_err(|_| SopsError::Identity("the age payload does not decrypt".into()))?;
        Ok(out)
    }
}

/// Wraps `key` for an age recipient (`age1…` or `ssh-ed25519 …`) as an armored age file, as
/// sops writes `enc`.
pub fn wrap_for(recipient: &str, key: &[u8]) -> Result<String, SopsError> {
    let recipient = recipient.trim();
    // The key type is the first word, whatever whitespace follows it (as the parsers read it).
    let kind = recipient.split_whitespace().next().unwrap_or_default();
    let boxed: Box<dyn age::Recipient> = if kind == "ssh-ed25519" {
        Box::new(super::ssh::SshEd25519Recipient::parse(recipient)?)
    } else if kind == "ssh-rsa" {
        return Err(SopsError::UnsupportedKey(
            "ssh-rsa recipients (use an ssh-ed25519 or age1… recipient)".into(),
        ));
    } else if recipient.starts_with("age1pq1") {
        return Err(SopsError::UnsupportedKey(
            "post-quantum age1pq recipients".into(),
        ));
    } else if recipient.starts_with("AGE-SECRET-KEY-") {
        // A private key pasted where a public one belongs: never repeated in an error.
        return Err(SopsError::Identity(
            "an age identity (AGE-SECRET-KEY-1…, a private key) was given as a recipient; give its public key (age1…, `age-keygen -y` prints it)".into(),
        ));
    } else {
        Box::new(age::x25519::Recipient::from_str(recipient).map_err(|e| {
            // A malformed public key is shown so the user can find it; anything else is not
            // (it may be a secret pasted into the wrong place).
            if recipient.starts_with("age1") {
                SopsError::Identity(format!("invalid age recipient '{recipient}': {e}"))
            } else {
                SopsError::Identity(format!("invalid age recipient (expected age1…): {e}"))
            }
        })?)
    };
    let encryptor = age::Encryptor::with_recipients(std::iter::once(boxed.as_ref()))
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
                    Err(SopsError::UnsupportedKey(format!(
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
