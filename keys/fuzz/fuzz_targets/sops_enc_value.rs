//! SOPS value envelopes: parsing and decrypting `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`.
//!
//! Input: `aad\0value`. Every `@` in the value is replaced by the marker first, so the fuzzer
//! plants it anywhere in a value (inside base64, in the type, in the brackets).
//!
//! Invariants: no panic; a parse error never quotes the value (no marker in it); a value that
//! parses is recognised by `is_encrypted`, has a 32-byte IV and a 16-byte tag, and formats back
//! to text that parses to the same envelope; decrypt(encrypt(x)) == x under the same key and
//! AAD, and not under another AAD; sealing with a given IV is deterministic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealkit_keys::secret::ExposeSecret;
use sealkit_keys::sops::cipher::{Envelope, is_encrypted};
use sealkit_keys::sops::{DataKey, SopsError};
use sealkit_keys_fuzz::{MARKER, split_nul};

fuzz_target!(|data: &[u8]| {
    let parts = split_nul(data, 2);
    let Ok(aad) = std::str::from_utf8(parts[0]) else {
        return;
    };
    let Ok(value) = std::str::from_utf8(parts[1]) else {
        return;
    };
    let value = value.replace('@', MARKER);
    // A fixed data key: values of the corpus were sealed with it (see docs/fuzzing.md).
    let key = DataKey::from_bytes(&[0x5a; 32]).expect("32 bytes");

    match Envelope::parse(&value) {
        Ok(env) => {
            assert!(is_encrypted(&value));
            assert_eq!((env.iv.len(), env.tag.len()), (32, 16));
            let text = env.format();
            let again = Envelope::parse(&text).expect("a formatted envelope parses");
            assert_eq!(again, env);
            match env.open(&key, aad) {
                Ok(plain) => {
                    // It authenticated: sealing it again with its own IV gives the same bytes.
                    let resealed =
                        Envelope::seal(&key, aad, plain.expose_secret(), &env.kind, Some(&env.iv))
                            .expect("seal");
                    assert_eq!(resealed, env);
                }
                Err(e) => {
                    assert!(matches!(e, SopsError::Authentication));
                    assert!(!e.to_string().contains(MARKER));
                }
            }
        }
        Err(e) => {
            assert!(matches!(e, SopsError::MalformedValue(_)));
            assert!(
                !e.to_string().contains(MARKER),
                "a parse error quotes the value"
            );
        }
    }

    // decrypt(encrypt(x)) == x: the value's bytes as a plaintext, under this AAD only.
    let iv = [0x11u8; 32];
    let sealed = Envelope::seal(&key, aad, value.as_bytes(), "str", Some(&iv)).expect("seal");
    let text = sealed.format();
    assert!(is_encrypted(&text));
    let parsed = Envelope::parse(&text).expect("our own output parses");
    let plain = parsed.open(&key, aad).expect("our own output decrypts");
    assert_eq!(plain.expose_secret(), value.as_bytes());
    let other_aad = format!("{aad}:");
    assert!(
        parsed.open(&key, &other_aad).is_err(),
        "the AAD binds the value"
    );
    let twice = Envelope::seal(&key, aad, value.as_bytes(), "str", Some(&iv)).expect("seal");
    assert_eq!(twice, sealed);
});
