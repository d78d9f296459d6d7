//! A set of private keys that opens values sealed to any of them.
//!
//! Sealed values carry no key id, so opening tries every key (as upstream does) and reports
//! which one worked. When none does, [`Keyring::diagnose`] tries the labels of the other
//! scopes and names so that the error can say *why*, not just "no key could decrypt".

use super::envelope::{Envelope, KeyAttempt, open_with};
use super::keys::{Fingerprint, PrivateKey};
use super::{OpenError, Scope};
use crate::secret::SecretBytes;

/// Private keys, newest last. Duplicates (same fingerprint) are kept once.
#[derive(Debug, Default)]
pub struct Keyring {
    keys: Vec<PrivateKey>,
    /// RSA private-key operations performed so far (a metric, and how tests prove a path
    /// did no RSA work).
    private_ops: std::sync::atomic::AtomicU64,
}

/// A value opened by a keyring, and the key that opened it.
#[derive(Debug)]
pub struct Opened<'a> {
    /// The plaintext.
    pub plaintext: SecretBytes,
    /// The key that opened it.
    pub key: &'a PrivateKey,
}

/// One way a value could have been sealed: a scope with the namespace and name it binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The scope.
    pub scope: Scope,
    /// The namespace (ignored for cluster-wide).
    pub namespace: String,
    /// The name (only used by strict).
    pub name: String,
}

impl Binding {
    /// The OAEP label of this binding.
    pub fn label(&self) -> Vec<u8> {
        self.scope.label(&self.namespace, &self.name)
    }

    /// A human description: "strict scope for 'ns/name'".
    pub fn describe(&self) -> String {
        match self.scope {
            Scope::Strict => format!("strict scope for '{}/{}'", self.namespace, self.name),
            Scope::NamespaceWide => {
                format!("namespace-wide scope for namespace '{}'", self.namespace)
            }
            Scope::ClusterWide => "cluster-wide scope".to_string(),
        }
    }
}

/// What [`Keyring::diagnose`] found out about a value that would not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diagnosis {
    /// The value opens under another binding, with this key.
    SealedFor(Binding, Fingerprint),
    /// No key opens it under any candidate binding.
    UnknownKey,
    /// A key opened the session key but the body failed authentication.
    Tampered,
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key unless a key with the same fingerprint is already present. Returns whether
    /// it was added.
    pub fn add(&mut self, key: PrivateKey) -> bool {
        if self
            .keys
            .iter()
            .any(|k| k.fingerprint() == key.fingerprint())
        {
            return false;
        }
        self.keys.push(key);
        true
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys, in insertion order.
    pub fn keys(&self) -> impl Iterator<Item = &PrivateKey> {
        self.keys.iter()
    }

    /// How many RSA private-key operations this keyring has performed.
    pub fn private_key_operations(&self) -> u64 {
        self.private_ops.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_op(&self) {
        self.private_ops
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Opens `blob` under `label` with whichever key can, newest first.
    pub fn open(&self, label: &[u8], blob: &[u8]) -> Result<Opened<'_>, OpenError> {
        let env = Envelope::parse(blob)?;
        let mut tampered = false;
        for key in self.keys.iter().rev() {
            self.count_op();
            match open_with(key, label, &env) {
                Ok(plaintext) => return Ok(Opened { plaintext, key }),
                Err(KeyAttempt::BodyTampered) => tampered = true,
                Err(KeyAttempt::RsaFailed) => {}
            }
        }
        if self.keys.is_empty() {
            return Err(OpenError::EmptyKeyring);
        }
        Err(if tampered {
            OpenError::Tampered
        } else {
            OpenError::NoKey
        })
    }

    /// Tries `candidates` (other scopes, other names) to explain why a value does not open.
    /// Costs one RSA operation per key and candidate: call it only after a failure.
    pub fn diagnose(&self, blob: &[u8], candidates: &[Binding]) -> Diagnosis {
        let Ok(env) = Envelope::parse(blob) else {
            return Diagnosis::Tampered;
        };
        let mut seen: Vec<Vec<u8>> = Vec::new();
        for cand in candidates {
            let label = cand.label();
            if seen.contains(&label) {
                continue;
            }
            for key in self.keys.iter().rev() {
                self.count_op();
                match open_with(key, &label, &env) {
                    Ok(_) => return Diagnosis::SealedFor(cand.clone(), key.fingerprint().clone()),
                    Err(KeyAttempt::BodyTampered) => return Diagnosis::Tampered,
                    Err(KeyAttempt::RsaFailed) => {}
                }
            }
            seen.push(label);
        }
        Diagnosis::UnknownKey
    }
}
