//! kubeseal-compatible sealing: the hybrid envelope, scopes, keys, keyrings, and the
//! Secret ⇄ SealedSecret document transformations.
//!
//! Formats follow upstream sealed-secrets exactly (see `docs/formats.md`): values sealed here
//! open in the upstream controller, and values sealed by `kubeseal` open here.

mod envelope;
mod keyring;
mod keys;
pub mod manifest;
mod scope;
pub mod template;

pub use envelope::{open, seal};
pub use keyring::{Binding, Diagnosis, Keyring, Opened};
pub use keys::{DEFAULT_KEY_BITS, Fingerprint, PrivateKey, PublicKey, certificate_validity};
pub use scope::{CLUSTER_WIDE_ANNOTATION, NAMESPACE_WIDE_ANNOTATION, ParseScopeError, Scope};

/// Loading, parsing or generating keys and certificates failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not valid PEM.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// No `CERTIFICATE` block was found.
    #[error("no PEM certificate found (expected a '-----BEGIN CERTIFICATE-----' block)")]
    NoCertificate,
    /// The certificate or public key could not be read.
    #[error("{0}")]
    Certificate(String),
    /// The certificate has expired.
    #[error("the certificate expired on {not_after}; refusing to seal with it")]
    Expired {
        /// Expiry date (YYYY-MM-DD, UTC).
        not_after: String,
    },
    /// The key is not RSA.
    #[error("expected an RSA key, found {0}")]
    NotRsa(String),
    /// The private key is not an RSA key aws-lc-rs accepts.
    #[error("not an RSA private key (or an unsupported key size)")]
    NotRsaPrivateKey,
    /// The private key could not be read.
    #[error("{0}")]
    PrivateKey(String),
    /// A passphrase-protected PKCS#8 key.
    #[error(
        "the private key is encrypted (ENCRYPTED PRIVATE KEY); decrypt it first, e.g. with 'openssl pkey'"
    )]
    EncryptedPrivateKey,
    /// No private key block was found.
    #[error(
        "no private key found (expected 'RSA PRIVATE KEY' or 'PRIVATE KEY' PEM, or a Secret holding tls.key)"
    )]
    NoPrivateKey,
    /// Unsupported RSA key size for generation.
    #[error("unsupported RSA key size {0} (use 2048, 3072, 4096 or 8192)")]
    UnsupportedKeySize(usize),
    /// The RNG or key generation failed.
    #[error("key generation failed")]
    Generate,
}

/// Sealing a value failed (these indicate a broken key or RNG, not bad user input).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The system RNG failed.
    #[error("the random number generator failed")]
    Random,
    /// RSA-OAEP encryption failed.
    #[error("RSA-OAEP encryption failed")]
    Rsa,
    /// AES-GCM sealing failed.
    #[error("AES-256-GCM encryption failed")]
    Aead,
    /// The key's ciphertext does not fit the 16-bit length prefix.
    #[error("a {0}-bit key is too large for the sealed-secrets format")]
    KeyTooLarge(usize),
}

/// Opening a sealed value failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Shorter than the 2-byte length prefix.
    #[error("sealed value is too short ({len} bytes)")]
    TooShort {
        /// Length of the blob.
        len: usize,
    },
    /// Shorter than its own length prefix says.
    #[error("sealed value is truncated ({len} bytes, at least {needed} expected)")]
    Truncated {
        /// Length of the blob.
        len: usize,
        /// Minimum length implied by the prefix.
        needed: usize,
    },
    /// No key opened it under this label.
    #[error("no key could decrypt the value")]
    NoKey,
    /// The session key opened but the body failed authentication.
    #[error("the sealed value was altered (AES-GCM authentication failed)")]
    Tampered,
    /// There are no keys to try.
    #[error("no private keys were given")]
    EmptyKeyring,
}
#[cfg(test)]
mod tests;
