//! age's `ssh-ed25519` recipient type, on aws-lc-rs (X25519, HKDF-SHA-256,
//! ChaCha20-Poly1305) and curve25519-dalek (the Ed25519 → X25519 point map). The age crate's own
//! ssh support pulls the `rsa` crate (RUSTSEC-2023-0071), so it stays off.
//!
//! Wrap: `tweak = HKDF(salt = ssh key blob, info = label, ikm = "")`, an ephemeral X25519 share
//! `E`, `shared = X25519(tweak, X25519(e, pk))`, `key = HKDF(salt = E || pk, info = label,
//! ikm = shared)`, body = ChaCha20-Poly1305(key, zero nonce, file key); stanza
//! `ssh-ed25519 <tag> <E>` with `tag = b64(SHA-256(blob)[..4])`.

use std::collections::HashSet;

use age::{DecryptError, EncryptError, Identity, Recipient};
use age_core::format::{FileKey, Stanza};
use age_core::secrecy::ExposeSecret;
use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::{agreement, digest, hkdf};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use zeroize::Zeroizing;

use super::SopsError;

const LABEL: &[u8] = b"age-encryption.org/v1/ssh-ed25519";
const TAG: &str = "ssh-ed25519";

fn read_string<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    if buf.len() < 4 {
        return None;
    }
    let n = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let rest = &buf[4..];
    if rest.len() < n {
        return None;
    }
    let (s, r) = rest.split_at(n);
    *buf = r;
    Some(s)
}

fn hkdf32(salt: &[u8], ikm: &[u8]) -> Result<Zeroizing<[u8; 32]>, SopsError> {
    let mut out = Zeroizing::new([0u8; 32]);
    hkdf::Salt::new(hkdf::HKDF_SHA256, salt)
        .extract(ikm)
        .expand(&[LABEL], hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(&mut out[..]))
        .map_err(|_| SopsError::Identity("HKDF failed".into()))?;
    Ok(out)
}

fn x25519(scalar: &[u8], point: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
    let sk = agreement::PrivateKey::from_private_key(&agreement::X25519, scalar).ok()?;
    let mut out = Zeroizing::new([0u8; 32]);
    agreement::agree(
        &sk,
        agreement::UnparsedPublicKey::new(&agreement::X25519, point),
        (),
        |k| {
            out.copy_from_slice(k);
            Ok(())
        },
    )
    .ok()?;
    // An all-zero shared secret means a low-order point: refuse, as age does.
    (out.iter().any(|&b| b != 0)).then_some(out)
}

fn tag_of(blob: &[u8]) -> String {
    let d = digest::digest(&digest::SHA256, blob);
    STANDARD_NO_PAD.encode(&d.as_ref()[..4])
}

fn montgomery(ed_pk: &[u8; 32]) -> Option<[u8; 32]> {
    let point = curve25519_dalek::edwards::CompressedEdwardsY(*ed_pk).decompress()?;
    // A small-order point is no one's public key: every X25519 agreement with it is all
    // zeros, which the wrap refuses. Refused here, where the key is read.
    if point.is_small_order() {
        return None;
    }
    Some(point.to_montgomery().to_bytes())
}

fn aead(key: &[u8; 32]) -> Result<LessSafeKey, SopsError> {
    Ok(LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, key)
            .map_err(|_| SopsError::Identity("bad key".into()))?,
    ))
}

/// An `ssh-ed25519 AAAA… comment` public key used as an age recipient.
pub struct SshEd25519Recipient {
    blob: Vec<u8>,
    pk: [u8; 32],
}

impl SshEd25519Recipient {
    /// Parses an OpenSSH public key line. The error does not quote the key data: what is there
    /// may not be a public key at all.
    pub fn parse(line: &str) -> Result<Self, SopsError> {
        let bad = || {
            SopsError::Identity(
                "invalid ssh-ed25519 recipient: the key data is not the base64 of an ed25519 public key"
                    .into(),
            )
        };
        let mut parts = line.split_whitespace();
        if parts.next() != Some(TAG) {
            return Err(bad());
        }
        let blob = STANDARD
            .decode(parts.next().ok_or_else(bad)?)
            .map_err(|_| bad())?;
        let mut rest = blob.as_slice();
        if read_string(&mut rest) != Some(TAG.as_bytes()) {
            return Err(bad());
        }
        let ed: [u8; 32] = read_string(&mut rest)
            .and_then(|k| k.try_into().ok())
            .ok_or_else(bad)?;
        let pk = montgomery(&ed).ok_or_else(bad)?;
        Ok(SshEd25519Recipient { blob, pk })
    }
}

impl Recipient for SshEd25519Recipient {
    fn wrap_file_key(
        &self,
        file_key: &FileKey,
    ) -> Result<(Vec<Stanza>, HashSet<String>), EncryptError> {
        let failed = || EncryptError::Io(std::io::Error::other("ssh-ed25519 wrap failed"));
        let tweak = hkdf32(&self.blob, &[]).map_err(|_| failed())?;
        let esk = agreement::PrivateKey::generate(&agreement::X25519).map_err(|_| failed())?;
        let epk = esk.compute_public_key().map_err(|_| failed())?;
        let mut shared = Zeroizing::new([0u8; 32]);
        agreement::agree(
            &esk,
            agreement::UnparsedPublicKey::new(&agreement::X25519, &self.pk),
            (),
            |k| {
                shared.copy_from_slice(k);
                Ok(())
            },
        )
        .map_err(|_| failed())?;
        let tweaked = x25519(&tweak[..], &shared[..]).ok_or_else(failed)?;
        let mut salt = [0u8; 64];
        salt[..32].copy_from_slice(epk.as_ref());
        salt[32..].copy_from_slice(&self.pk);
        let key = hkdf32(&salt, &tweaked[..]).map_err(|_| failed())?;
        let mut body = file_key.expose_secret().to_vec();
        aead(&key)
            .map_err(|_| failed())?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::empty(),
                &mut body,
            )
            .map_err(|_| failed())?;
        let stanza = Stanza {
            tag: TAG.into(),
            args: vec![tag_of(&self.blob), STANDARD_NO_PAD.encode(epk.as_ref())],
            body,
        };
        Ok((vec![stanza], HashSet::new()))
    }
}

/// An unencrypted OpenSSH ed25519 private key (`-----BEGIN OPENSSH PRIVATE KEY-----`).
pub struct SshEd25519Identity {
    blob: Vec<u8>,
    pk: [u8; 32],
    sk: Zeroizing<[u8; 32]>,
}

impl SshEd25519Identity {
    /// Parses an OpenSSH private key file. Encrypted keys and other key types are refused
    /// with a clear error.
    pub fn parse(pem_text: &str) -> Result<Self, SopsError> {
        let bad = |why: &str| SopsError::Identity(format!("SSH private key: {why}"));
        let block = pem::parse(pem_text).map_err(|_| bad("not a PEM OpenSSH key"))?;
        if block.tag() != "OPENSSH PRIVATE KEY" {
            return Err(bad("expected an OPENSSH PRIVATE KEY block"));
        }
        let data = Zeroizing::new(block.into_contents());
        let mut r = data
            .strip_prefix(b"openssh-key-v1\0".as_slice())
            .ok_or_else(|| bad("missing openssh-key-v1 magic"))?;
        let cipher = read_string(&mut r).ok_or_else(|| bad("truncated"))?;
        if cipher != b"none" {
            return Err(SopsError::UnsupportedKey(
                "passphrase-protected SSH private keys".into(),
            ));
        }
        let _kdf = read_string(&mut r).ok_or_else(|| bad("truncated"))?;
        let _kdf_opts = read_string(&mut r).ok_or_else(|| bad("truncated"))?;
        if r.len() < 4 || r[..4] != [0, 0, 0, 1] {
            return Err(bad("expected exactly one key"));
        }
        r = &r[4..];
        let blob = read_string(&mut r)
            .ok_or_else(|| bad("truncated"))?
            .to_vec();
        let mut private = read_string(&mut r).ok_or_else(|| bad("truncated"))?;
        // The two check integers match when a key decrypted correctly; compared like any
        // other integrity check, in constant time.
        if private.len() < 8
            || aws_lc_rs::constant_time::verify_slices_are_equal(&private[..4], &private[4..8])
                .is_err()
        {
            return Err(bad("corrupt private section"));
        }
        private = &private[8..];
        let kind = read_string(&mut private).ok_or_else(|| bad("truncated"))?;
        if kind != TAG.as_bytes() {
            return Err(SopsError::UnsupportedKey(format!(
                "SSH key type {} (only ssh-ed25519)",
                String::from_utf8_lossy(kind)
            )));
        }
        let ed_pk: [u8; 32] = read_string(&mut private)
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| bad("bad public key"))?;
        let secret = read_string(&mut private)
            .filter(|s| s.len() == 64)
            .ok_or_else(|| bad("bad private key"))?;
        let h = digest::digest(&digest::SHA512, &secret[..32]);
        let mut sk = Zeroizing::new([0u8; 32]);
        sk.copy_from_slice(&h.as_ref()[..32]);
        // The public key in the clear header names the key (the recipient line, the stanza
        // tag) and the private section's is the one used: they must be the same key, and the
        // secret seed must be its private half, or the identity would answer for a recipient
        // it cannot open (or name a recipient whose files it cannot read).
        let mut expected = Vec::with_capacity(51);
        for part in [TAG.as_bytes(), &ed_pk[..]] {
            expected.extend_from_slice(&(part.len() as u32).to_be_bytes());
            expected.extend_from_slice(part);
        }
        if blob != expected {
            return Err(bad("the public key does not match the private section"));
        }
        aws_lc_rs::signature::Ed25519KeyPair::from_seed_and_public_key(&secret[..32], &ed_pk)
            .map_err(|_| bad("the private key does not match its public key"))?;
        let pk = montgomery(&ed_pk).ok_or_else(|| bad("bad public key"))?;
        Ok(SshEd25519Identity { blob, pk, sk })
    }

    /// The matching recipient line (`ssh-ed25519 AAAA…`).
    pub fn recipient(&self) -> String {
        format!("{TAG} {}", STANDARD.encode(&self.blob))
    }
}

impl Identity for SshEd25519Identity {
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<FileKey, DecryptError>> {
        if stanza.tag != TAG || stanza.args.first() != Some(&tag_of(&self.blob)) {
            return None;
        }
        let failed = || Some(Err(DecryptError::DecryptionFailed));
        let Some(epk) = stanza
            .args
            .get(1)
            .and_then(|e| STANDARD_NO_PAD.decode(e).ok())
            .filter(|e| e.len() == 32)
        else {
            return failed();
        };
        let Some(shared) = x25519(&self.sk[..], &epk) else {
            return failed();
        };
        let Ok(tweak) = hkdf32(&self.blob, &[]) else {
            return failed();
        };
        let Some(tweaked) = x25519(&tweak[..], &shared[..]) else {
            return failed();
        };
        let mut salt = [0u8; 64];
        salt[..32].copy_from_slice(&epk);
        salt[32..].copy_from_slice(&self.pk);
        let Ok(key) = hkdf32(&salt, &tweaked[..]) else {
            return failed();
        };
        let Ok(cipher) = aead(&key) else {
            return failed();
        };
        let mut body = Zeroizing::new(stanza.body.clone());
        let Ok(plain) = cipher.open_in_place(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::empty(),
            &mut body,
        ) else {
            return failed();
        };
        let Ok(arr) = <[u8; 16]>::try_from(&plain[..]) else {
            return failed();
        };
        Some(Ok(FileKey::new(Box::new(arr))))
    }
}
