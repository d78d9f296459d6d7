//! The kubeseal hybrid envelope, byte for byte:
//! `u16_be(len(rsa_ct)) || RSA-OAEP-SHA256(label)(session key) || AES-256-GCM(session key,
//! zero nonce)(plaintext) || tag`.
//!
//! A zero nonce is safe because every session key is fresh and used for exactly one value.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::rsa::OAEP_SHA256_MGF1SHA256;
use zeroize::{Zeroize, Zeroizing};

use super::keys::{PrivateKey, PublicKey};
use super::{OpenError, SealError};
use crate::secret::{SecretBytes, secret_bytes};

const SESSION_KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// Go passes an empty label as "no label"; OAEP hashes both the same way, and aws-lc-rs
/// prefers `None` for it.
fn label_arg(label: &[u8]) -> Option<&[u8]> {
    (!label.is_empty()).then_some(label)
}

fn aes_key(session: &[u8]) -> Result<LessSafeKey, aws_lc_rs::error::Unspecified> {
    Ok(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, session)?))
}

/// Seals `plaintext` to `key` under `label` (see [`super::Scope::label`]).
pub fn seal(key: &PublicKey, label: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut session = Zeroizing::new([0u8; SESSION_KEY_LEN]);
    aws_lc_rs::rand::fill(&mut session[..]).map_err(|_| SealError::Random)?;

    let rsa_len = key.ciphertext_len();
    let rsa_len16 = u16::try_from(rsa_len).map_err(|_| SealError::KeyTooLarge(key.bits()))?;
    let mut out = Vec::with_capacity(2 + rsa_len + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&rsa_len16.to_be_bytes());
    out.resize(2 + rsa_len, 0);
    key.oaep
        .encrypt(
            &OAEP_SHA256_MGF1SHA256,
            &session[..],
            &mut out[2..],
            label_arg(label),
        )
        .map_err(|_| SealError::Rsa)?;

    let body_start = out.len();
    out.extend_from_slice(plaintext);
    let sealed = aes_key(&session[..]).and_then(|k| {
        k.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key([0u8; 12]),
            Aad::empty(),
            &mut out[body_start..],
        )
    });
    match sealed {
        Ok(tag) => {
            out.extend_from_slice(tag.as_ref());
            Ok(out)
        }
        Err(_) => {
            // The buffer may still hold plaintext.
            out.zeroize();
            Err(SealError::Aead)
        }
    }
}

/// The two parts of an envelope, checked for length.
pub(crate) struct Envelope<'a> {
    pub rsa_ct: &'a [u8],
    pub body: &'a [u8],
}

impl<'a> Envelope<'a> {
    pub(crate) fn parse(blob: &'a [u8]) -> Result<Self, OpenError> {
        if blob.len() < 2 {
            return Err(OpenError::TooShort { len: blob.len() });
        }
        let rsa_len = u16::from_be_bytes([blob[0], blob[1]]) as usize;
        let rest = &blob[2..];
        if rest.len() < rsa_len + TAG_LEN {
            return Err(OpenError::Truncated {
                len: blob.len(),
                needed: 2 + rsa_len + TAG_LEN,
            });
        }
        let (rsa_ct, body) = rest.split_at(rsa_len);
        Ok(Envelope { rsa_ct, body })
    }
}

/// What went wrong opening an envelope with one key.
pub(crate) enum KeyAttempt {
    /// RSA did not decrypt: another key, or another label.
    RsaFailed,
    /// RSA decrypted but GCM authentication failed: the body was altered.
    BodyTampered,
}

/// Opens a parsed envelope with one key.
pub(crate) fn open_with(
    key: &PrivateKey,
    label: &[u8],
    env: &Envelope<'_>,
) -> Result<SecretBytes, KeyAttempt> {
    if env.rsa_ct.len() != key.public_key().ciphertext_len() {
        return Err(KeyAttempt::RsaFailed);
    }
    let mut buf = Zeroizing::new(vec![0u8; env.rsa_ct.len()]);
    let session_len = key
        .oaep
        .decrypt(
            &OAEP_SHA256_MGF1SHA256,
            env.rsa_ct,
            &mut buf[..],
            label_arg(label),
        )
        .map_err(|_| KeyAttempt::RsaFailed)?
        .len();
    if session_len != SESSION_KEY_LEN {
        return Err(KeyAttempt::BodyTampered);
    }
    let aead = aes_key(&buf[..SESSION_KEY_LEN]).map_err(|_| KeyAttempt::BodyTampered)?;
    let mut body = env.body.to_vec();
    match aead.open_in_place(
        Nonce::assume_unique_for_key([0u8; 12]),
        Aad::empty(),
        &mut body,
    ) {
        Ok(plain) => {
            let n = plain.len();
            body.truncate(n);
            Ok(secret_bytes(body))
        }
        Err(_) => {
            body.zeroize();
            Err(KeyAttempt::BodyTampered)
        }
    }
}

/// Opens `blob` with a single private key under `label`.
pub fn open(key: &PrivateKey, label: &[u8], blob: &[u8]) -> Result<SecretBytes, OpenError> {
    let env = Envelope::parse(blob)?;
    open_with(key, label, &env).map_err(|e| match e {
        KeyAttempt::RsaFailed => OpenError::NoKey,
        KeyAttempt::BodyTampered => OpenError::Tampered,
    })
}
