//! The SOPS value envelope: `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`.
//!
//! AES-256-GCM with a 32-byte IV (non-standard length; GHASH derives the counter block), the
//! key path as AAD, a 16-byte tag kept apart from the ciphertext. aws-lc-rs only does 12-byte
//! nonces, so this is RustCrypto's `AesGcm<Aes256, U32>`.

use aes_gcm::AesGcm;
use aes_gcm::aead::consts::U32;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::Aes256;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use super::SopsError;
use crate::secret::{SecretBytes, secret_bytes};

type SopsGcm = AesGcm<Aes256, U32>;

/// The 32-byte data key of a SOPS file.
pub struct DataKey(pub(crate) Zeroizing<[u8; 32]>);

impl DataKey {
    /// Wraps 32 key bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SopsError> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| SopsError::DataKeyLength(bytes.len()))?;
        Ok(DataKey(Zeroizing::new(arr)))
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, SopsError> {
        let mut k = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(&mut k[..]).map_err(|_| SopsError::Random)?;
        Ok(DataKey(k))
    }

    /// The key bytes (for wrapping by a key source).
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}

/// A parsed `ENC[…]` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Ciphertext without the tag.
    pub data: Vec<u8>,
    /// IV (32 bytes when written by sops).
    pub iv: Vec<u8>,
    /// GCM tag.
    pub tag: Vec<u8>,
    /// Value type: str, int, float, bool, time, bytes, comment.
    pub kind: String,
}

/// Whether a string looks like an encrypted value.
pub fn is_encrypted(s: &str) -> bool {
    s.starts_with("ENC[AES256_GCM,")
}

impl Envelope {
    /// Parses `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`. Errors name the field at fault and
    /// never quote the value: not a byte of it, its length or an offset into it (the base64
    /// crate's own error text has all three, so it is never formatted).
    pub fn parse(s: &str) -> Result<Self, SopsError> {
        let bad = |why: &str| SopsError::MalformedValue(why.to_string());
        let inner = s
            .strip_prefix("ENC[AES256_GCM,")
            .and_then(|r| r.strip_suffix(']'))
            .ok_or_else(|| bad("expected ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]"))?;
        let mut data = None;
        let mut iv = None;
        let mut tag = None;
        let mut kind = None;
        for part in inner.split(',') {
            let (k, v) = part
                .split_once(':')
                .ok_or_else(|| bad("a field has no ':'"))?;
            let decode = |v: &str, what: &str| {
                B64.decode(v)
                    .map_err(|_| bad(&format!("{what} is not base64")))
            };
            match k {
                "data" => data = Some(decode(v, "data")?),
                "iv" => iv = Some(decode(v, "iv")?),
                "tag" => tag = Some(decode(v, "tag")?),
                "type" => kind = Some(v.to_string()),
                _ => return Err(bad("unknown field (expected data, iv, tag and type)")),
            }
        }
        let env = Envelope {
            data: data.ok_or_else(|| bad("missing data"))?,
            iv: iv.ok_or_else(|| bad("missing iv"))?,
            tag: tag.ok_or_else(|| bad("missing tag"))?,
            kind: kind.ok_or_else(|| bad("missing type"))?,
        };
        if env.iv.len() != 32 {
            return Err(bad("iv must be 32 bytes"));
        }
        if env.tag.len() != 16 {
            return Err(bad("tag must be 16 bytes"));
        }
        Ok(env)
    }

    /// The `ENC[…]` text.
    pub fn format(&self) -> String {
        format!(
            "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{}]",
            B64.encode(&self.data),
            B64.encode(&self.iv),
            B64.encode(&self.tag),
            self.kind
        )
    }

    /// Decrypts with `key` under `aad`.
    pub fn open(&self, key: &DataKey, aad: &str) -> Result<SecretBytes, SopsError> {
        let cipher = SopsGcm::new(GenericArray::from_slice(&key.0[..]));
        let mut buf = self.data.clone();
        cipher
            .decrypt_in_place_detached(
                GenericArray::from_slice(&self.iv),
                aad.as_bytes(),
                &mut buf,
                GenericArray::from_slice(&self.tag),
            )
            .map_err(|_| SopsError::Authentication)?;
        Ok(secret_bytes(buf))
    }

    /// Encrypts `plaintext` with `key` under `aad`; `iv` reuses a previous IV (so an unchanged
    /// value keeps its exact ciphertext), else a fresh random one is drawn.
    pub fn seal(
        key: &DataKey,
        aad: &str,
        plaintext: &[u8],
        kind: &str,
        iv: Option<&[u8]>,
    ) -> Result<Self, SopsError> {
        let iv = match iv {
            Some(iv) if iv.len() == 32 => iv.to_vec(),
            _ => {
                let mut iv = vec![0u8; 32];
                aws_lc_rs::rand::fill(&mut iv).map_err(|_| SopsError::Random)?;
                iv
            }
        };
        let cipher = SopsGcm::new(GenericArray::from_slice(&key.0[..]));
        let mut buf = plaintext.to_vec();
        let tag = cipher
            .encrypt_in_place_detached(GenericArray::from_slice(&iv), aad.as_bytes(), &mut buf)
            .map_err(|_| SopsError::Random)?;
        Ok(Envelope {
            data: buf,
            iv,
            tag: tag.to_vec(),
            kind: kind.to_string(),
        })
    }
}
