//! Types that hold secret material: plaintext values and private keys.
//!
//! They wipe their memory on drop (`zeroize`) and never print their contents: `Debug` is
//! redacted and there is no `Display` or `Serialize`. Call `expose_secret()` only at the
//! point where the bytes are actually used.

pub use secrecy::{ExposeSecret, SecretBox, SecretSlice, SecretString};
pub use zeroize::Zeroizing;

/// Secret bytes (a decrypted value, a data key). Wiped on drop, redacted in `Debug`.
pub type SecretBytes = SecretSlice<u8>;

/// Wraps owned bytes as [`SecretBytes`] without copying them.
pub fn secret_bytes(v: Vec<u8>) -> SecretBytes {
    SecretBytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = secret_bytes(b"hunter2".to_vec());
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("104"), "{shown}"); // no byte values either
        assert_eq!(s.expose_secret(), b"hunter2");
    }
}
