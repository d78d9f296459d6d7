//! The kubeseal envelope: parsing and opening a sealed blob with the fixed 2048-bit keyring,
//! and the scope diagnosis that explains a value which does not open.
//!
//! Input: `mode` byte, then `namespace\0name\0blob`. The low two bits of `mode` pick the scope
//! (strict, namespace-wide, cluster-wide). An RSA private-key operation costs about a
//! millisecond, against microseconds for everything else, so one input in 32 (by a hash of the
//! whole input, [`roll`], which every mutation rolls again) does RSA work: opening with the
//! fixed keyring, the diagnosis, and sealing and opening afresh. The others check the
//! envelope's length rules (through a keyring whose key cannot match, or an empty one), and
//! one in four of them sealing, which takes only the public key. A value that opens must have
//! its RSA block sealed to the fixed key, so the corpus keeps such values (sealed with
//! `fixtures/seal-2048.crt`), and mutations of their AES-GCM part reach the code behind the
//! RSA step.
//!
//! Invariants: no panic; the length errors are exactly the envelope's rules; a sealed value is
//! `2 + 256 + len + 16` bytes and opens to its plaintext under its label; a value the keyring
//! opens opens the same with the single-key API; when the diagnosis names another binding, the
//! value opens under that binding with the key it names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealkit_keys::seal::manifest::{Target, explain_open_failure};
use sealkit_keys::seal::{Binding, Diagnosis, Keyring, OpenError, Scope, open, seal};
use sealkit_keys::secret::ExposeSecret;
use sealkit_keys_fuzz::{MARKER, keyring, roll, seal_key, split_nul};

/// The RSA ciphertext length of the fixed 2048-bit key.
const RSA_LEN: usize = 256;
const TAG_LEN: usize = 16;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let parts = split_nul(rest, 3);
    let namespace = String::from_utf8_lossy(parts[0]).into_owned();
    let name = String::from_utf8_lossy(parts[1]).into_owned();
    let blob = parts[2];
    let scope = Scope::ALL[usize::from(mode & 3) % 3];
    let label = scope.label(&namespace, &name);
    let ring = keyring();
    let key = seal_key();

    // The length rules, decided before any key is tried.
    let prefix = (blob.len() >= 2).then(|| usize::from(u16::from_be_bytes([blob[0], blob[1]])));
    let expected_len_error = match prefix {
        None => Some(OpenError::TooShort { len: blob.len() }),
        Some(p) if blob.len() < 2 + p + TAG_LEN => Some(OpenError::Truncated {
            len: blob.len(),
            needed: 2 + p + TAG_LEN,
        }),
        Some(_) => None,
    };

    let dice = roll(data);
    let rsa = dice % 32 == 0;
    if !rsa {
        // No private-key work: an empty keyring still parses, and the fixed key is only tried
        // (and skipped without RSA) when the ciphertext cannot be its length.
        let empty = Keyring::new();
        match (empty.open(&label, blob), &expected_len_error) {
            (Err(e), Some(want)) => assert_eq!(&e, want),
            (Err(e), None) => assert_eq!(e, OpenError::EmptyKeyring),
            (Ok(_), _) => panic!("an empty keyring opened a value"),
        }
        if prefix.is_some_and(|p| p != RSA_LEN) {
            let before = ring.private_key_operations();
            let r = ring.open(&label, blob);
            assert!(ring.private_key_operations() >= before);
            match (r, &expected_len_error) {
                (Err(e), Some(want)) => assert_eq!(&e, want),
                (Err(e), None) => assert_eq!(e, OpenError::NoKey),
                (Ok(_), _) => panic!("a ciphertext of the wrong length opened"),
            }
        }
        if (dice >> 5) % 4 != 0 {
            return;
        }
        // Sealing needs only the public key (cheaper); the layout is fixed by the key size.
        let sealed = seal(key.public_key(), &label, blob).expect("seal");
        assert_eq!(sealed.len(), 2 + RSA_LEN + blob.len() + TAG_LEN);
        assert_eq!(&sealed[..2], &(RSA_LEN as u16).to_be_bytes());
        return;
    }

    let opened = ring.open(&label, blob);
    if let Some(want) = &expected_len_error {
        assert_eq!(opened.as_ref().err(), Some(want));
    }
    match &opened {
        Ok(o) => {
            assert_eq!(o.key.fingerprint(), key.fingerprint());
            let single = open(key, &label, blob).expect("the single-key API opens it too");
            assert_eq!(single.expose_secret(), o.plaintext.expose_secret());
        }
        Err(OpenError::NoKey) => {
            // Explain it: every other scope, for this name and for the swapped pair.
            let mut candidates = Vec::new();
            for (ns, n) in [(&namespace, &name), (&name, &namespace)] {
                for s in Scope::ALL {
                    if (s, ns, n) != (scope, &namespace, &name) {
                        candidates.push(Binding {
                            scope: s,
                            namespace: ns.clone(),
                            name: n.clone(),
                        });
                    }
                }
            }
            match ring.diagnose(blob, &candidates) {
                Diagnosis::SealedFor(b, fp) => {
                    assert!(candidates.contains(&b));
                    assert_eq!(&fp, key.fingerprint());
                    let o = ring
                        .open(&b.label(), blob)
                        .expect("the diagnosed binding opens the value");
                    assert_eq!(o.key.fingerprint(), &fp);
                }
                Diagnosis::Tampered | Diagnosis::UnknownKey => {}
            }
        }
        Err(e) => {
            // The message the controller shows for it names no value.
            let doc = serde_json::json!({
                "kind": "SealedSecret",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"encryptedData": {}},
            });
            let target = Target {
                name: name.clone(),
                namespace: namespace.clone(),
                scope,
            };
            let msg = explain_open_failure(ring, &doc, &target, blob, e);
            assert!(!msg.contains(MARKER));
        }
    }

    // decrypt(encrypt(x)) == x, under this label only.
    let sealed = seal(key.public_key(), &label, blob).expect("seal");
    let back = ring.open(&label, &sealed).expect("a fresh value opens");
    assert_eq!(back.plaintext.expose_secret(), blob);
});
