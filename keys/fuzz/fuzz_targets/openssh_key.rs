//! The OpenSSH key parsers of the age `ssh-ed25519` key source: private key files
//! (`-----BEGIN OPENSSH PRIVATE KEY-----`) and public key lines (`ssh-ed25519 AAAA… comment`),
//! and age identity text (`AGE-SECRET-KEY-1…` lines) beside them.
//!
//! Input: the text, tried as all three.
//!
//! Invariants: no panic; a private key that parses yields a recipient line that parses as a
//! public key, and a data key wrapped for that recipient unwraps with the key to the same bytes
//! (for age identities likewise); errors never quote key material: the marker shows up in an
//! error only when the text holds it in clear (not, say, inside the base64 of a key), except
//! in the "unsupported key type" error, which names the type the file declares.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealkit_keys::sops::keysource::wrap_for;
use sealkit_keys::sops::ssh::SshEd25519Recipient;
use sealkit_keys::sops::{AgeIdentities, SopsError};
use sealkit_keys_fuzz::assert_no_marker;

const DATA_KEY: [u8; 32] = *b"0123456789abcdef0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match AgeIdentities::parse_ssh(text) {
        Ok(ids) => round_trip(&ids),
        Err(SopsError::Unsupported(_)) => {}
        Err(e) => assert_no_marker(&e.to_string(), data, "ssh private key"),
    }
    for line in text.lines().take(4) {
        match SshEd25519Recipient::parse(line) {
            Ok(_) => {
                // A valid recipient can be wrapped for (no identity to open it here).
                let armored = wrap_for(line, &DATA_KEY).expect("wrap for a parsed recipient");
                assert!(armored.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
            }
            Err(e) => assert_no_marker(&e.to_string(), data, "ssh public key"),
        }
    }
    match AgeIdentities::parse(text) {
        Ok(ids) if !ids.is_empty() && ids.len() <= 4 => round_trip(&ids),
        Ok(_) => {}
        Err(e) => assert_no_marker(&e.to_string(), data, "age identity"),
    }
});

fn round_trip(ids: &AgeIdentities) {
    assert_eq!(ids.recipients.len(), ids.len());
    for r in &ids.recipients {
        if r.starts_with("ssh-ed25519 ") {
            SshEd25519Recipient::parse(r).expect("our own recipient line parses");
        }
        let armored = wrap_for(r, &DATA_KEY).expect("wrap for our own recipient");
        let back = ids
            .unwrap(&armored)
            .expect("the identity opens what was wrapped for it");
        assert!(back[..] == DATA_KEY[..], "unwrap(wrap(k)) == k");
    }
}
