//! The one walk over a file's leaves: decides which leaves are encrypted, encrypts or decrypts
//! them with their key path as AAD, and computes the MAC exactly as sops does.
//!
//! Stores hand the walk a flat list of leaves in file order (map keys only in each path, as
//! sops builds its AAD; list indices never appear). The walk never sees file syntax.

use aws_lc_rs::digest;
use regex::Regex;
use zeroize::Zeroizing;

use super::SopsError;
use super::cipher::{DataKey, Envelope, is_encrypted};
use crate::secret::ExposeSecret;

/// A scalar as a store read it.
#[derive(Clone, PartialEq)]
pub enum Scalar {
    /// A string (quoted, or plain and not another type).
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// Null / empty.
    Null,
}

/// One leaf of a document: a scalar or a comment, with its key path.
#[derive(Clone)]
pub struct Leaf {
    /// Map keys from the root to this value (for a comment: to its enclosing mapping).
    pub path: Vec<String>,
    /// The value as stored in the file.
    pub value: Scalar,
    /// Whether this leaf is a comment.
    pub comment: bool,
    /// The comments in effect here, as sops' comment stack holds them: at each nesting level,
    /// the comments since the previous value at that level (for a comment leaf, ending with
    /// itself). Used by the comment-regex rules.
    pub comments: Vec<String>,
}

impl Leaf {
    /// The AAD sops binds this leaf to: path components joined by `:`, plus a final `:`.
    pub fn aad(&self) -> String {
        let mut s = self.path.join(":");
        s.push(':');
        s
    }

    /// The path for messages: `a.b.c`.
    pub fn dotted(&self) -> String {
        if self.path.is_empty() {
            "(top level)".into()
        } else {
            self.path.join(".")
        }
    }
}

/// A typed plaintext value after decryption. Text is zeroized on drop.
#[derive(Clone)]
pub enum Plain {
    /// `type:str`, `type:time`, `type:bytes`.
    Str(Zeroizing<String>, &'static str),
    /// `type:int`.
    Int(i64),
    /// `type:float`.
    Float(f64),
    /// `type:bool`.
    Bool(bool),
    /// `type:comment`.
    Comment(Zeroizing<String>),
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: shortest round-trip digits, never an exponent.
pub fn format_float(f: f64) -> String {
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f.is_nan() {
        return "NaN".into();
    }
    format!("{f}")
}

fn bool_text(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

impl Plain {
    /// The bytes sops encrypts for this value (and hashes into the MAC).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(match self {
            Plain::Str(s, _) | Plain::Comment(s) => s.as_bytes().to_vec(),
            Plain::Int(i) => i.to_string().into_bytes(),
            Plain::Float(f) => format_float(*f).into_bytes(),
            Plain::Bool(b) => bool_text(*b).as_bytes().to_vec(),
        })
    }

    /// The `type:` of the envelope.
    pub fn kind(&self) -> &'static str {
        match self {
            Plain::Str(_, k) => k,
            Plain::Int(_) => "int",
            Plain::Float(_) => "float",
            Plain::Bool(_) => "bool",
            Plain::Comment(_) => "comment",
        }
    }

    fn from_decrypted(kind: &str, bytes: &[u8]) -> Result<Plain, String> {
        let text =
            || std::str::from_utf8(bytes).map_err(|_| "decrypted value is not UTF-8".to_string());
        Ok(match kind {
            "str" => Plain::Str(Zeroizing::new(text()?.to_string()), "str"),
            "time" => Plain::Str(Zeroizing::new(text()?.to_string()), "time"),
            "bytes" => Plain::Str(
                Zeroizing::new(String::from_utf8_lossy(bytes).into_owned()),
                "bytes",
            ),
            "comment" => Plain::Comment(Zeroizing::new(text()?.to_string())),
            "int" => Plain::Int(
                text()?
                    .parse()
                    .map_err(|_| "type:int value is not an integer".to_string())?,
            ),
            "float" => Plain::Float(
                text()?
                    .parse()
                    .map_err(|_| "type:float value is not a number".to_string())?,
            ),
            "bool" => Plain::Bool(match text()? {
                "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
                "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
                _ => return Err("type:bool value is not a boolean".into()),
            }),
            // Not quoted back: it is part of the encrypted value's text.
            _ => {
                return Err(
                    "unknown value type (expected str, int, float, bool, bytes, time or comment)"
                        .into(),
                );
            }
        })
    }

    /// A plaintext value for a clear scalar (to encrypt it).
    pub fn from_scalar(s: &Scalar) -> Option<Plain> {
        Some(match s {
            Scalar::Str(v) => Plain::Str(Zeroizing::new(v.clone()), "str"),
            Scalar::Int(i) => Plain::Int(*i),
            Scalar::Float(f) => Plain::Float(*f),
            Scalar::Bool(b) => Plain::Bool(*b),
            Scalar::Null => return None,
        })
    }
}

/// Which leaves a file encrypts (at most one rule; default: `unencrypted_suffix: _unencrypted`).
#[derive(Debug, Clone)]
pub enum Rule {
    /// Leave clear when any key on the path ends with this suffix.
    UnencryptedSuffix(String),
    /// Encrypt only when some key on the path ends with this suffix.
    EncryptedSuffix(String),
    /// Leave clear when any key on the path matches.
    UnencryptedRegex(Regex),
    /// Encrypt only when some key on the path matches.
    EncryptedRegex(Regex),
    /// Leave clear when a comment in effect matches.
    UnencryptedCommentRegex(Regex),
    /// Encrypt only when a comment in effect matches (the matching comment itself stays clear).
    EncryptedCommentRegex(Regex),
}

impl Default for Rule {
    fn default() -> Self {
        Rule::UnencryptedSuffix("_unencrypted".into())
    }
}

impl Rule {
    /// Whether a leaf at `path` is to be encrypted (path rules only).
    pub fn encrypts(&self, path: &[String]) -> bool {
        match self {
            Rule::UnencryptedSuffix(s) => !path.iter().any(|k| k.ends_with(s.as_str())),
            Rule::EncryptedSuffix(s) => path.iter().any(|k| k.ends_with(s.as_str())),
            Rule::UnencryptedRegex(r) => !path.iter().any(|k| r.is_match(k)),
            Rule::EncryptedRegex(r) => path.iter().any(|k| r.is_match(k)),
            Rule::UnencryptedCommentRegex(_) | Rule::EncryptedCommentRegex(_) => true,
        }
    }

    /// Whether `leaf` is to be encrypted, comment rules included.
    pub fn encrypts_leaf(&self, leaf: &Leaf) -> bool {
        match self {
            Rule::UnencryptedCommentRegex(r) => !leaf.comments.iter().any(|c| r.is_match(c)),
            Rule::EncryptedCommentRegex(r) => {
                // A comment does not switch on its own encryption: skip it (the last entry).
                let upto = if leaf.comment {
                    leaf.comments.len().saturating_sub(1)
                } else {
                    leaf.comments.len()
                };
                leaf.comments[..upto].iter().any(|c| r.is_match(c))
            }
            other => other.encrypts(&leaf.path),
        }
    }
}

/// The MAC accumulator: SHA-512 over the plaintext bytes of every hashed leaf.
pub struct Mac {
    ctx: digest::Context,
}

const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

impl Mac {
    /// A new accumulator; `mac_only_encrypted` files start from a fixed prefix.
    pub fn new(mac_only_encrypted: bool) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA512);
        if mac_only_encrypted {
            ctx.update(&MAC_ONLY_ENCRYPTED_INIT);
        }
        Mac { ctx }
    }

    /// Adds a value.
    pub fn update(&mut self, bytes: &[u8]) {
        self.ctx.update(bytes);
    }

    /// Uppercase hex of the digest.
    pub fn finish(self) -> String {
        hex::encode_upper(self.ctx.finish())
    }
}

/// Whether the MAC stored in a file (hex, in either case; sops writes upper case) is the one
/// computed over its values. The comparison takes the same time wherever the two differ
/// (aws-lc's `CRYPTO_memcmp`): a timing difference must not tell anyone how much of a forged
/// MAC is right. Only a difference in length (not secret: a SHA-512 is 128 hex digits) returns
/// early.
pub fn mac_matches(stored: &[u8], computed: &str) -> bool {
    // The MAC is a hash of every plaintext (the reason sops stores it encrypted): its copies
    // are wiped too. `to_ascii_uppercase` is arithmetic, not a branch, per byte.
    let stored: Zeroizing<Vec<u8>> =
        Zeroizing::new(stored.iter().map(u8::to_ascii_uppercase).collect());
    let computed: Zeroizing<Vec<u8>> =
        Zeroizing::new(computed.bytes().map(|b| b.to_ascii_uppercase()).collect());
    aws_lc_rs::constant_time::verify_slices_are_equal(&stored, &computed).is_ok()
}

/// The outcome of decrypting a file's leaves.
pub struct Decrypted {
    /// Per leaf: its plaintext if it was encrypted, `None` if it was clear.
    pub values: Vec<Option<Plain>>,
    /// The MAC computed over the plaintexts.
    pub mac: String,
}

/// Decrypts every encrypted leaf and computes the MAC. A comment that does not decrypt is kept
/// as it is (old sops wrote comments in clear). Errors name the leaf's path.
pub fn decrypt_leaves(
    leaves: &[Leaf],
    key: &DataKey,
    rule: &Rule,
    mac_only_encrypted: bool,
) -> Result<Decrypted, SopsError> {
    let mut mac = Mac::new(mac_only_encrypted);
    let mut values = Vec::with_capacity(leaves.len());
    for leaf in leaves {
        // A value the rule leaves clear is data, whatever it looks like (as in sops): a
        // `secret_unencrypted: ENC[…]` written by the user stays as written.
        let enc_text = match &leaf.value {
            Scalar::Str(s) if is_encrypted(s) && rule.encrypts(&leaf.path) => Some(s.as_str()),
            _ => None,
        };
        let Some(text) = enc_text else {
            if leaf.comment {
                values.push(None);
                continue;
            }
            if !mac_only_encrypted {
                if let Some(p) = Plain::from_scalar(&leaf.value) {
                    mac.update(&p.to_bytes());
                }
            } else if rule.encrypts_leaf(leaf) && leaf.value != Scalar::Null {
                return Err(SopsError::NotEncrypted {
                    path: leaf.dotted(),
                });
            }
            values.push(None);
            continue;
        };
        let env = Envelope::parse(text).map_err(|e| SopsError::at(leaf, e))?;
        let plaintext = match env.open(key, &leaf.aad()) {
            Ok(p) => p,
            Err(e) if leaf.comment => {
                let _ = e;
                values.push(None);
                continue;
            }
            Err(e) => return Err(SopsError::at(leaf, e)),
        };
        let plain = Plain::from_decrypted(&env.kind, plaintext.expose_secret())
            .map_err(|why| SopsError::at(leaf, SopsError::MalformedValue(why)))?;
        if !matches!(plain, Plain::Comment(_)) {
            mac.update(&plain.to_bytes());
        }
        values.push(Some(plain));
    }
    Ok(Decrypted {
        values,
        mac: mac.finish(),
    })
}

/// IVs of a file's current values, keyed by (AAD, type, SHA-256 of the plaintext): when a value
/// is re-encrypted unchanged under the same data key, reusing its IV reproduces its exact
/// ciphertext, so an edit changes only the lines that changed (as sops does).
///
/// Values with the same key (a dotenv or INI key repeated with the same value, a comment
/// repeated at one place) each keep their own IV, matched in file order: one IV is never used
/// for two values of a file, and each keeps its exact ciphertext.
#[derive(Default)]
pub struct IvStash(std::collections::HashMap<(String, [u8; 32]), Vec<Vec<u8>>>);

impl IvStash {
    fn digest(kind: &str, plaintext: &[u8]) -> [u8; 32] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(kind.as_bytes());
        ctx.update(&[0]);
        ctx.update(plaintext);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    /// Records the IV of every encrypted leaf (decrypting each with `key`).
    pub fn from_leaves(leaves: &[Leaf], key: &DataKey) -> Self {
        let mut map = std::collections::HashMap::new();
        for leaf in leaves {
            let Scalar::Str(text) = &leaf.value else {
                continue;
            };
            let Ok(env) = Envelope::parse(text) else {
                continue;
            };
            if let Ok(plain) = env.open(key, &leaf.aad()) {
                map.entry((leaf.aad(), Self::digest(&env.kind, plain.expose_secret())))
                    .or_insert_with(Vec::new)
                    .push(env.iv.clone());
            }
        }
        IvStash(map)
    }

    /// The IV of the next value with this AAD, type and plaintext; `used` counts those already
    /// taken (per key) in this encryption. `None` (a fresh IV) once they are all taken.
    fn take(
        &self,
        aad: &str,
        kind: &str,
        plaintext: &[u8],
        used: &mut std::collections::HashMap<(String, [u8; 32]), usize>,
    ) -> Option<&[u8]> {
        let key = (aad.to_string(), Self::digest(kind, plaintext));
        let ivs = self.0.get(&key)?;
        let n = used.entry(key).or_insert(0);
        let iv = ivs.get(*n)?;
        *n += 1;
        Some(iv)
    }
}

/// Per-leaf replacement text for encryption: `Some(ENC[…])` for leaves to encrypt.
pub struct Encrypted {
    /// Per leaf.
    pub values: Vec<Option<String>>,
    /// The MAC of the plaintexts.
    pub mac: String,
}

/// Encrypts every leaf the rule selects, computing the MAC. With a `stash`, a value whose
/// plaintext and path are unchanged keeps its previous IV (and so its exact ciphertext).
pub fn encrypt_leaves(
    leaves: &[Leaf],
    key: &DataKey,
    rule: &Rule,
    mac_only_encrypted: bool,
    stash: Option<&IvStash>,
) -> Result<Encrypted, SopsError> {
    let mut mac = Mac::new(mac_only_encrypted);
    let mut values = Vec::with_capacity(leaves.len());
    let mut used = std::collections::HashMap::new();
    for leaf in leaves {
        let plain = if leaf.comment {
            match &leaf.value {
                Scalar::Str(s) if !s.is_empty() => Some(Plain::Comment(Zeroizing::new(s.clone()))),
                _ => None,
            }
        } else {
            Plain::from_scalar(&leaf.value)
        };
        let Some(plain) = plain else {
            values.push(None);
            continue;
        };
        let encrypt = rule.encrypts_leaf(leaf);
        if !leaf.comment && (encrypt || !mac_only_encrypted) {
            mac.update(&plain.to_bytes());
        }
        let empty = matches!(&plain, Plain::Str(s, _) | Plain::Comment(s) if s.is_empty());
        if !encrypt || empty {
            values.push(None);
            continue;
        }
        let aad = leaf.aad();
        let bytes = plain.to_bytes();
        let iv = stash.and_then(|s| s.take(&aad, plain.kind(), &bytes, &mut used));
        let env = Envelope::seal(key, &aad, &bytes, plain.kind(), iv)?;
        values.push(Some(env.format()));
    }
    Ok(Encrypted {
        values,
        mac: mac.finish(),
    })
}

/// Decrypted values as text (for the line-based stores).
pub(crate) fn plain_texts(values: &[Option<Plain>]) -> Vec<Option<String>> {
    values
        .iter()
        .map(|p| {
            p.as_ref()
                .map(|p| String::from_utf8_lossy(&p.to_bytes()).into_owned())
        })
        .collect()
}

/// The text a line-based store writes for leaf `i`: its replacement if it has one, else its
/// own string.
pub(crate) fn leaf_text(leaves: &[Leaf], values: &[Option<String>], i: usize) -> String {
    match (&values[i], &leaves[i].value) {
        (Some(v), _) => v.clone(),
        (None, Scalar::Str(s)) => s.clone(),
        _ => String::new(),
    }
}

// Values are plaintext during encryption and after decryption: Debug shows their shape only.
impl std::fmt::Debug for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Str(s) => write!(f, "Str(<{} bytes>)", s.len()),
            Scalar::Int(_) => f.write_str("Int(<redacted>)"),
            Scalar::Float(_) => f.write_str("Float(<redacted>)"),
            Scalar::Bool(_) => f.write_str("Bool(<redacted>)"),
            Scalar::Null => f.write_str("Null"),
        }
    }
}

impl std::fmt::Debug for Plain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Plain({}, <redacted>)", self.kind())
    }
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf")
            .field("path", &self.path)
            .field("value", &self.value)
            .field("comment", &self.comment)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
