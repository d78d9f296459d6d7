//! What the controller fuzz targets share: the fixed sealing keyring (the key of
//! `keys/fuzz/fixtures`, built once per process), the marker planted in secret values, and
//! reading a document the way the controller's inputs arrive (YAML or JSON).

use std::sync::OnceLock;

use sealkit_keys::seal::{Keyring, PrivateKey};
use serde_json::Value;

/// Planted in the secret values of the seeds (sealed plaintexts, provider values): no error
/// or status message may ever contain it. The same text as the keys fuzz crate's.
pub const MARKER: &str = "SEALKIT-FUZZ-MARKER-7c1e";

/// The fixed 2048-bit sealing key (a test key, never used for anything else).
const SEAL_KEY_PEM: &str = include_str!("../../../keys/fuzz/fixtures/seal-2048.pem");

/// The keyring holding the fixed key, parsed once (parsing an RSA key costs milliseconds).
pub fn keyring() -> &'static Keyring {
    static RING: OnceLock<Keyring> = OnceLock::new();
    RING.get_or_init(|| {
        let mut ring = Keyring::new();
        for key in PrivateKey::from_pem_all(SEAL_KEY_PEM.as_bytes()).expect("fixture key") {
            ring.add(key);
        }
        ring
    })
}

/// A hash of the whole input (FNV-1a), to pick the inputs that get a target's costly checks.
/// Deterministic, so a finding reproduces; and not inherited: any mutation of an input that got
/// them rolls again, so the fuzzer cannot settle on the slow path (as it would with a flag byte,
/// which most mutations keep).
pub fn roll(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The first `max` documents of a YAML or JSON text, as JSON values (the controller receives
/// JSON from the API server; YAML is how the corpus and users write them).
pub fn documents(data: &[u8], max: usize) -> Vec<Value> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Vec::new();
    };
    match sealkit_keys::seal::manifest::parse_documents(text) {
        Ok(docs) => docs.into_iter().take(max).map(|d| d.value).collect(),
        Err(e) => {
            let _ = e.to_string();
            Vec::new()
        }
    }
}

/// Panics (a finding) when `message` contains [`MARKER`] but `input` does not: then the
/// marker came from a secret value, not from what the caller wrote.
pub fn assert_no_marker(message: &str, input: &[u8], context: &str) {
    let in_input = input.windows(MARKER.len()).any(|w| w == MARKER.as_bytes());
    assert!(
        in_input || !message.contains(MARKER),
        "{context}: a message carries a secret value"
    );
}
