//! RSA sealing keys: public keys from certificates, private keys from PEM or key-Secret
//! backups, generation of new 4096-bit keys and their self-signed certificates.
//!
//! All RSA work goes through aws-lc-rs (constant-time private operations, OAEP with a label).
//! Private key bytes only ever live in zeroizing buffers.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{
    self, KeySize, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
    PublicEncryptingKey,
};
use base64::Engine as _;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey as ParsedPublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;
use zeroize::Zeroizing;

use super::KeyError;

/// The SSH-style SHA-256 fingerprint of an RSA public key (`SHA256:…`), as upstream keys its
/// private-key map. Public information: safe to log.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The fingerprint text, `SHA256:` followed by unpadded base64.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short form for messages: the first 12 characters of the hash.
    pub fn short(&self) -> &str {
        let start = "SHA256:".len();
        &self.0[start..(start + 12).min(self.0.len())]
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.0)
    }
}

/// An RSA public key that values are sealed to.
pub struct PublicKey {
    pub(crate) oaep: OaepPublicEncryptingKey,
    spki_der: Vec<u8>,
    fingerprint: Fingerprint,
    bits: usize,
    not_after: Option<SystemTime>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("bits", &self.bits)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl PublicKey {
    /// Reads the first certificate of a PEM bundle, as kubeseal does: it must hold an RSA key
    /// and must not have expired.
    pub fn from_certificate_pem(pem_bytes: &[u8]) -> Result<Self, KeyError> {
        Self::from_certificate_pem_at(pem_bytes, SystemTime::now())
    }

    /// [`PublicKey::from_certificate_pem`] with an explicit "now" (for tests and drills).
    pub fn from_certificate_pem_at(pem_bytes: &[u8], now: SystemTime) -> Result<Self, KeyError> {
        let blocks = pem::parse_many(pem_bytes).map_err(|e| KeyError::Pem(e.to_string()))?;
        let cert = blocks
            .into_iter()
            .find(|b| b.tag() == "CERTIFICATE")
            .ok_or(KeyError::NoCertificate)?;
        Self::from_certificate_der_at(cert.contents(), now)
    }

    /// Reads a DER certificate; see [`PublicKey::from_certificate_pem`].
    pub fn from_certificate_der_at(der: &[u8], now: SystemTime) -> Result<Self, KeyError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| KeyError::Certificate(format!("not a valid X.509 certificate: {e}")))?;
        let not_after_unix = cert.validity().not_after.timestamp();
        let not_after = unix_to_system_time(not_after_unix);
        if now > not_after {
            return Err(KeyError::Expired {
                not_after: format_date(not_after_unix),
            });
        }
        let mut key = Self::from_spki_der(cert.public_key().raw)?;
        key.not_after = Some(not_after);
        Ok(key)
    }

    /// Reads an X.509 SubjectPublicKeyInfo (DER) holding an RSA key.
    pub fn from_spki_der(spki_der: &[u8]) -> Result<Self, KeyError> {
        let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der)
            .map_err(|e| KeyError::Certificate(format!("invalid public key info: {e}")))?;
        let (modulus, exponent) = match spki.parsed() {
            Ok(ParsedPublicKey::RSA(rsa)) => (rsa.modulus, rsa.exponent),
            Ok(_) => {
                return Err(KeyError::NotRsa(
                    spki.algorithm.algorithm.to_id_string().to_string(),
                ));
            }
            Err(e) => {
                return Err(KeyError::Certificate(format!(
                    "invalid RSA public key: {e}"
                )));
            }
        };
        let fingerprint = ssh_fingerprint(exponent, modulus);
        let encrypting = PublicEncryptingKey::from_der(spki_der).map_err(|_| {
            KeyError::Certificate("RSA public key rejected by the crypto library".into())
        })?;
        let bits = encrypting.key_size_bits();
        let oaep = OaepPublicEncryptingKey::new(encrypting)
            .map_err(|_| KeyError::Certificate("RSA public key unusable for OAEP".into()))?;
        Ok(PublicKey {
            oaep,
            spki_der: spki_der.to_vec(),
            fingerprint,
            bits,
            not_after: None,
        })
    }

    /// The key's fingerprint.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// Size in bytes of the RSA ciphertext this key produces.
    pub fn ciphertext_len(&self) -> usize {
        self.oaep.ciphertext_size()
    }

    /// When the certificate it came from expires (None for a bare key).
    pub fn not_after(&self) -> Option<SystemTime> {
        self.not_after
    }

    /// The SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }
}

/// An RSA private key that opens sealed values. Its bytes are zeroized on drop and it never
/// prints them.
pub struct PrivateKey {
    pub(crate) oaep: OaepPrivateDecryptingKey,
    pkcs8: Zeroizing<Vec<u8>>,
    public: PublicKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("bits", &self.public.bits)
            .field("fingerprint", &self.public.fingerprint)
            .finish_non_exhaustive()
    }
}

/// The validity window of the first certificate in a PEM text (not checked against "now": a
/// controller still decrypts with keys whose certificates expired).
pub fn certificate_validity(pem_bytes: &[u8]) -> Result<(SystemTime, SystemTime), KeyError> {
    let blocks = pem::parse_many(pem_bytes).map_err(|e| KeyError::Pem(e.to_string()))?;
    let cert = blocks
        .into_iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .ok_or(KeyError::NoCertificate)?;
    let (_, parsed) = X509Certificate::from_der(cert.contents())
        .map_err(|e| KeyError::Certificate(format!("not a valid X.509 certificate: {e}")))?;
    let v = parsed.validity();
    Ok((
        unix_to_system_time(v.not_before.timestamp()),
        unix_to_system_time(v.not_after.timestamp()),
    ))
}

/// Default key size, as the upstream controller's `--key-size`.
pub const DEFAULT_KEY_BITS: usize = 4096;

impl PrivateKey {
    /// Generates a new RSA key (2048, 3072, 4096 or 8192 bits).
    pub fn generate(bits: usize) -> Result<Self, KeyError> {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            8192 => KeySize::Rsa8192,
            other => return Err(KeyError::UnsupportedKeySize(other)),
        };
        let key = PrivateDecryptingKey::generate(size).map_err(|_| KeyError::Generate)?;
        let der = key.as_der().map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8_der(der.as_ref())
    }

    /// Reads a PKCS#8 DER private key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let key = PrivateDecryptingKey::from_pkcs8(der).map_err(|_| KeyError::NotRsaPrivateKey)?;
        let spki = key
            .public_key()
            .as_der()
            .map_err(|_| KeyError::PrivateKey("cannot derive the public key".into()))?;
        let public = PublicKey::from_spki_der(spki.as_ref())?;
        let oaep = OaepPrivateDecryptingKey::new(key)
            .map_err(|_| KeyError::PrivateKey("RSA key unusable for OAEP".into()))?;
        Ok(PrivateKey {
            oaep,
            pkcs8: Zeroizing::new(der.to_vec()),
            public,
        })
    }

    /// Reads a PKCS#1 (`RSA PRIVATE KEY`) DER private key.
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, KeyError> {
        let pair = rsa::KeyPair::from_der(der)
            .map_err(|_| KeyError::PrivateKey("not a valid PKCS#1 RSA private key".into()))?;
        let pkcs8: Pkcs8V1Der = pair
            .as_der()
            .map_err(|_| KeyError::PrivateKey("cannot re-encode the RSA key".into()))?;
        Self::from_pkcs8_der(pkcs8.as_ref())
    }

    /// Reads every private key in a PEM text (`RSA PRIVATE KEY` or `PRIVATE KEY` blocks).
    pub fn from_pem_all(pem_bytes: &[u8]) -> Result<Vec<Self>, KeyError> {
        let blocks = pem::parse_many(pem_bytes).map_err(|e| KeyError::Pem(e.to_string()))?;
        let mut keys = Vec::new();
        for block in blocks {
            let tag = block.tag().to_string();
            let der = Zeroizing::new(block.into_contents());
            match tag.as_str() {
                "RSA PRIVATE KEY" => keys.push(Self::from_pkcs1_der(&der)?),
                "PRIVATE KEY" => keys.push(Self::from_pkcs8_der(&der)?),
                "ENCRYPTED PRIVATE KEY" => return Err(KeyError::EncryptedPrivateKey),
                t if t.ends_with("PRIVATE KEY") => {
                    return Err(KeyError::NotRsa(
                        t.trim_end_matches(" PRIVATE KEY").to_string(),
                    ));
                }
                _ => {}
            }
        }
        if keys.is_empty() {
            return Err(KeyError::NoPrivateKey);
        }
        Ok(keys)
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The key's fingerprint.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.public.fingerprint
    }

    /// A 32-byte MAC key derived from this private key for `purpose` (HKDF-SHA-256 over the
    /// PKCS#8 bytes). It lets the controller tag what it wrote (e.g. a keyed hash of a Secret's
    /// data) so that the tag reveals nothing about the data and cannot be forged without the key.
    pub fn derive_mac_key(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        use aws_lc_rs::hkdf;
        let mut out = Zeroizing::new([0u8; 32]);
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"sealkit derived key").extract(&self.pkcs8);
        let info = [purpose.as_bytes()];
        // Expanding 32 bytes with SHA-256 cannot fail.
        if let Ok(okm) = prk.expand(&info, hkdf::HKDF_SHA256) {
            let _ = okm.fill(&mut out[..]);
        }
        out
    }

    /// The key as PKCS#1 PEM (`RSA PRIVATE KEY`), the form upstream stores in `tls.key`.
    pub fn to_pkcs1_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        let info = pkcs8::PrivateKeyInfo::try_from(self.pkcs8.as_slice())
            .map_err(|e| KeyError::PrivateKey(format!("cannot read PKCS#8: {e}")))?;
        let block = pem::Pem::new("RSA PRIVATE KEY", info.private_key.to_vec());
        let text = Zeroizing::new(pem::encode_config(
            &block,
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        ));
        // `block` holds a copy of the key bytes: wipe it before it is dropped.
        let mut contents = block.into_contents();
        zeroize::Zeroize::zeroize(&mut contents);
        Ok(text)
    }

    /// A self-signed certificate for this key, shaped like the upstream controller's:
    /// issuer = subject = `CN=<common_name>` (no CN when empty), random 128-bit serial,
    /// CA, key usage "encipher only", valid from now for `ttl`, signed SHA256-RSA.
    pub fn self_signed_certificate(
        &self,
        common_name: &str,
        ttl: Duration,
    ) -> Result<String, KeyError> {
        use rcgen::{
            BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyUsagePurpose,
        };
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(self.pkcs8.as_slice());
        let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256)
            .map_err(|e| KeyError::Certificate(format!("cannot sign: {e}")))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if !common_name.is_empty() {
            dn.push(DnType::CommonName, common_name);
        }
        params.distinguished_name = dn;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now;
        params.not_after = now + ttl;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::EncipherOnly];
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial).map_err(|_| KeyError::Generate)?;
        serial[0] &= 0x7f; // positive INTEGER
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = params
            .self_signed(&pair)
            .map_err(|e| KeyError::Certificate(format!("cannot sign: {e}")))?;
        Ok(cert.pem())
    }
}

/// `SHA256:` + unpadded base64 of SHA-256 over the SSH wire form of an RSA key
/// (`string "ssh-rsa"`, `mpint e`, `mpint n`), the same text `ssh-keygen -l` prints.
fn ssh_fingerprint(exponent: &[u8], modulus: &[u8]) -> Fingerprint {
    fn put_string(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
    }
    fn put_mpint(out: &mut Vec<u8>, b: &[u8]) {
        let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
        let b = &b[first..];
        if b.first().is_some_and(|&x| x & 0x80 != 0) {
            out.extend_from_slice(&((b.len() + 1) as u32).to_be_bytes());
            out.push(0);
            out.extend_from_slice(b);
        } else {
            put_string(out, b);
        }
    }
    let mut wire = Vec::with_capacity(modulus.len() + 32);
    put_string(&mut wire, b"ssh-rsa");
    put_mpint(&mut wire, exponent);
    put_mpint(&mut wire, modulus);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &wire);
    Fingerprint(format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest.as_ref())
    ))
}

fn unix_to_system_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

fn format_date(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!("{}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()),
        Err(_) => unix.to_string(),
    }
}
