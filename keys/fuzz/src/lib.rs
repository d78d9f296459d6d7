//! What the sealkit-keys fuzz targets share: the fixed keys they open and decrypt with (built
//! once per process), the marker planted in secret values, and how an input is cut into parts.
//!
//! The keys are test keys committed for fuzzing only (`fixtures/`, and the example age key of
//! `examples/gitops`): fixed so that the committed corpus, sealed and encrypted to them, keeps
//! reaching the code behind a successful decryption from one run to the next.

use std::sync::OnceLock;

use sealkit_keys::seal::{Keyring, PrivateKey};
use sealkit_keys::sops::AgeIdentities;

/// Planted in the secret values of the seeds (sealed plaintexts, SOPS plaintexts, template
/// data, provider values): no error message may ever contain it.
pub const MARKER: &str = "SEALKIT-FUZZ-MARKER-7c1e";

/// The fixed 2048-bit sealing key (PKCS#1 PEM; a test key, never used for anything else).
pub const SEAL_KEY_PEM: &str = include_str!("../fixtures/seal-2048.pem");

/// The example age identity of `examples/gitops` (its public key is in `.sops.yaml` there).
pub const AGE_IDENTITY: &str = include_str!("../../../examples/gitops/keys/example.agekey");

/// The keyring holding [`SEAL_KEY_PEM`], parsed once (parsing an RSA key costs milliseconds).
pub fn keyring() -> &'static Keyring {
    static RING: OnceLock<Keyring> = OnceLock::new();
    RING.get_or_init(|| {
        let mut ring = Keyring::new();
        for key in PrivateKey::from_pem_all(SEAL_KEY_PEM.as_bytes()).expect("fixture key") {
            ring.add(key);
        }
        assert_eq!(ring.len(), 1, "the fixture holds one key");
        ring
    })
}

/// The fixed sealing key itself.
pub fn seal_key() -> &'static PrivateKey {
    keyring().keys().next().expect("one key")
}

/// The example age identity, parsed once.
pub fn age_identities() -> &'static AgeIdentities {
    static IDS: OnceLock<AgeIdentities> = OnceLock::new();
    IDS.get_or_init(|| AgeIdentities::parse(AGE_IDENTITY).expect("example age key"))
}

/// The example age identity's recipient (`age1…`).
pub fn age_recipient() -> &'static str {
    &age_identities().recipients[0]
}

/// Cuts `data` at its first `n - 1` NUL bytes into exactly `n` parts (missing ones empty).
/// NUL never occurs in the text formats, so a seed is `part\0part\0rest`.
pub fn split_nul(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts: Vec<&[u8]> = data.splitn(n, |&b| b == 0).collect();
    parts.resize(n, &[]);
    parts
}

/// Panics (a finding) when `message` contains [`MARKER`] but `input` (what the caller wrote,
/// which an error may quote) does not: then the marker came from a secret value.
pub fn assert_no_marker(message: &str, input: &[u8], context: &str) {
    let in_input = input.windows(MARKER.len()).any(|w| w == MARKER.as_bytes());
    assert!(
        in_input || !message.contains(MARKER),
        "{context}: an error message carries a secret value"
    );
}

/// One SOPS store (`sops_yaml`, `sops_json`, `sops_dotenv`, `sops_ini`): load `data` as an
/// encrypted file and decrypt it with the example identity, or, when it is not one, encrypt it
/// as a plaintext file and decrypt that.
///
/// Invariants: no panic; no error carries a decrypted value (the marker of the corpus's
/// encrypted values); a file that decrypts with its MAC checked decrypts the same without the
/// check; re-encrypting a decrypted file with its own data key gives a file that decrypts to
/// the same plaintext; a file re-wrapped for another recipient list (`updatekeys`) keeps its
/// data key and values. For plaintext: our own encryption leaves no value the rule encrypts in
/// clear text, always loads and decrypts with its MAC checked; decrypting and re-encrypting it
/// (with its IVs, as `sops edit` does) gives every value the same ciphertext, so each value
/// kept its path, type and bytes; and a second round gives the same plaintext.
///
/// Wrapping and unwrapping a data key with age costs X25519 operations, which cost more than
/// everything else an input does (more so with coverage instrumentation), so they are made once
/// per data key and per wrapped key, and remembered; `updatekeys`, which must wrap anew, runs
/// for one input in sixteen ([`roll`]). The second rounds (re-encrypting a decrypted file, and
/// the plaintext's decrypt-and-encrypt-again) run for one input in four ([`full`]): every
/// input is parsed, encrypted or decrypted, and checked for clear values, but the whole chain
/// would make the slow stores (YAML) too slow to fuzz for long.
pub fn store_target(data: &[u8], format: sealkit_keys::sops::FileFormat) {
    use sealkit_keys::sops::EncryptedFile;

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The plaintext reader of `set`/`--extract` takes the same text.
    if let Err(e) = sealkit_keys::sops::edit::to_value(text, format) {
        assert_no_marker(&e.to_string(), data, "edit::to_value");
    }
    match EncryptedFile::load(text, format) {
        Ok(file) => encrypted(data, &file, format),
        Err(e) => {
            assert_no_marker(&e.to_string(), data, "load");
            plaintext(text, format, full(data));
        }
    }
}

/// A hash of the whole input (FNV-1a), to pick the inputs that get a target's costly checks.
/// Deterministic, so a finding reproduces; and not inherited: any mutation of an input that got
/// them rolls again, so the fuzzer cannot settle on the slow path (as it would with a flag byte
/// or the length, which most mutations keep).
pub fn roll(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Whether this input also gets the costly second rounds (one input in four, by [`roll`]).
pub fn full(data: &[u8]) -> bool {
    roll(data) % 4 == 0
}

fn opts_for(rule: Option<sealkit_keys::sops::MetadataRule>) -> sealkit_keys::sops::EncryptOptions {
    sealkit_keys::sops::EncryptOptions {
        age: vec![age_recipient().to_string()],
        rule,
        ..Default::default()
    }
}

/// The key fields of the metadata (the data key wrapped for our recipient), made once per
/// data key. The first time, it is checked to unwrap to the same key.
fn key_metadata(key: &sealkit_keys::sops::DataKey) -> serde_json::Map<String, serde_json::Value> {
    use std::collections::HashMap;
    use std::sync::Mutex;

    static CACHE: Mutex<Option<HashMap<[u8; 32], serde_json::Map<String, serde_json::Value>>>> =
        Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(m) = cache.get(key.expose()) {
        return m.clone();
    }
    let m = opts_for(None)
        .key_metadata(key)
        .expect("wrap for our recipient");
    let enc = m["age"][0]["enc"].as_str().expect("an age entry");
    let back = age_identities()
        .unwrap(enc)
        .expect("our identity opens its own wrap");
    assert!(back[..] == key.expose()[..], "unwrap(wrap(k)) == k");
    if cache.len() >= 256 {
        cache.clear();
    }
    cache.insert(*key.expose(), m.clone());
    m
}

/// The file's data key for our identity, with each wrapped key tried once per process (one
/// X25519 operation each); Shamir key groups go through the library's own path every time.
fn data_key(file: &sealkit_keys::sops::EncryptedFile) -> Option<sealkit_keys::sops::DataKey> {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use sealkit_keys::sops::DataKey;

    static CACHE: Mutex<Option<HashMap<String, Option<[u8; 32]>>>> = Mutex::new(None);
    let groups = file.metadata.groups();
    if groups.len() != 1 {
        return match file.data_key(age_identities()) {
            Ok(k) => Some(k),
            Err(e) => {
                let _ = e.to_string();
                None
            }
        };
    }
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    for entry in &groups[0].age {
        let key = match cache.get(&entry.enc) {
            Some(k) => *k,
            None => {
                let k = age_identities()
                    .unwrap(&entry.enc)
                    .ok()
                    .and_then(|k| <[u8; 32]>::try_from(&k[..]).ok());
                if cache.len() >= 4096 {
                    cache.clear();
                }
                cache.insert(entry.enc.clone(), k);
                k
            }
        };
        if let Some(k) = key {
            return Some(DataKey::from_bytes(&k).expect("32 bytes"));
        }
    }
    None
}

fn encrypted(
    data: &[u8],
    file: &sealkit_keys::sops::EncryptedFile,
    format: sealkit_keys::sops::FileFormat,
) {
    use sealkit_keys::sops::{DataKey, EncryptedFile, MetadataRule, encrypt_with_key_metadata};

    let _ = file.options();
    let Some(key) = data_key(file) else {
        // Not for our identity: the walk still runs (and fails authentication) with a key of
        // our own.
        let key = DataKey::from_bytes(&[0x5a; 32]).expect("32 bytes");
        if let Err(e) = file.decrypt_with_key(&key, true) {
            assert_no_marker(&e.to_string(), data, "decrypt_with_key");
        }
        return;
    };
    let checked = file.decrypt_with_key(&key, false);
    let unchecked = file.decrypt_with_key(&key, true);
    for r in [&checked, &unchecked] {
        if let Err(e) = r {
            assert_no_marker(&e.to_string(), data, "decrypt");
        }
    }
    if let (Ok(a), Ok(b)) = (&checked, &unchecked) {
        assert!(
            a[..] == b[..],
            "the MAC check changes nothing but the verdict"
        );
    }
    assert!(
        checked.is_err() || unchecked.is_ok(),
        "a file that verifies must decrypt without the check"
    );
    let Ok(plain) = unchecked else {
        return;
    };
    let opts = opts_for(MetadataRule::of(&file.metadata));

    // updatekeys: the same data key, for our recipient; values untouched. It wraps the key
    // anew (costly): one input in sixteen.
    if roll(data) % 16 == 0 {
        match file.with_recipients(&opts, &key) {
            Ok(updated) => {
                let f2 = EncryptedFile::load(&updated, format).expect("an updated file loads");
                let k2 = f2.data_key(age_identities()).expect("it is wrapped for us");
                assert!(k2.expose() == key.expose(), "updatekeys keeps the data key");
                let p2 = f2
                    .decrypt_with_key(&k2, true)
                    .expect("it decrypts as before");
                // The values, byte for byte; the sops block is appended on a line of its own,
                // so a file without a final newline gains one.
                let newline_added = p2.len() == plain.len() + 1
                    && p2.ends_with(b"\n")
                    && p2[..plain.len()] == plain[..];
                assert!(
                    p2[..] == plain[..] || newline_added,
                    "updatekeys keeps the values"
                );
            }
            Err(e) => assert_no_marker(&e.to_string(), data, "with_recipients"),
        }
    }

    if !full(data) {
        return;
    }
    // Re-encrypt the plaintext with the file's own key and IVs (as `sops edit` does).
    let stash = file.iv_stash(&key);
    match encrypt_with_key_metadata(
        &plain,
        format,
        &opts,
        &key,
        Some(&stash),
        key_metadata(&key),
    ) {
        Ok(again) => {
            let f3 = EncryptedFile::load(&again, format).expect("our own output loads");
            let p3 = f3
                .decrypt_with_key(&key, false)
                .expect("our own output decrypts with its MAC");
            // Byte for byte for a file whose MAC verifies. One that decrypts only without the
            // check may hold values in clear where the rule encrypts them, or strings that look
            // encrypted but are not `ENC[AES256_GCM,…]` values (say `ENC[x]`): decrypting
            // passes those through as written, while a value we decrypted is written in the
            // store's own form (quoted, on one line); then the values must be the same.
            if checked.is_err() || lookalike(data) {
                let a = sealkit_keys::sops::edit::to_value(
                    std::str::from_utf8(&plain).expect("UTF-8"),
                    format,
                );
                let b = sealkit_keys::sops::edit::to_value(
                    std::str::from_utf8(&p3).expect("UTF-8"),
                    format,
                );
                if let (Ok(a), Ok(b)) = (a, b) {
                    assert_eq!(
                        a, b,
                        "decrypt(encrypt(decrypt(f))) == decrypt(f), as values"
                    );
                }
            } else {
                assert!(
                    p3[..] == plain[..],
                    "decrypt(encrypt(decrypt(f))) == decrypt(f)"
                );
            }
        }
        Err(e) => assert_no_marker(&e.to_string(), data, "re-encrypt"),
    }
}

fn plaintext(text: &str, format: sealkit_keys::sops::FileFormat, full: bool) {
    use sealkit_keys::sops::{DataKey, EncryptedFile, FileFormat, encrypt_with_key_metadata};

    // `@` plants the marker, so the fuzzer can put it into values with one byte.
    let text = text.replace('@', MARKER);
    let key = DataKey::from_bytes(&[0x5a; 32]).expect("32 bytes");
    let opts = opts_for(None);
    let encrypt = |t: &str, stash| {
        encrypt_with_key_metadata(t.as_bytes(), format, &opts, &key, stash, key_metadata(&key))
    };
    let enc = match encrypt(&text, None) {
        Ok(enc) => enc,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    if let Ok(v) = sealkit_keys::sops::edit::to_value(&text, format) {
        assert_no_clear_values(&v, &enc, format);
    }
    let file = EncryptedFile::load(&enc, format).expect("our own output loads");
    let plain = file
        .decrypt_with_key(&key, false)
        .expect("our own output decrypts with its MAC");
    let plain = std::str::from_utf8(&plain).expect("UTF-8 in, UTF-8 out");
    // dotenv and INI files are read line by line, and a line break is `\n` or `\r\n`: a lone
    // `\r` before the final line break the store writes reads differently. Not a text format
    // people write; only checked to decrypt.
    if !full || matches!(format, FileFormat::Dotenv | FileFormat::Ini) && text.contains('\r') {
        return;
    }
    // Every value comes back with its path, type and bytes: re-encrypted with the first
    // round's IVs (as `sops edit` does), each value has the same ciphertext. The layout may
    // differ where the store normalises it (a final newline, blank lines, quoting), as sops's.
    let stash = file.iv_stash(&key);
    let enc2 = encrypt(plain, Some(&stash)).expect("a decrypted file encrypts again");
    let file2 = EncryptedFile::load(&enc2, format).expect("our own output loads");
    if values(&enc, file.metadata.mac.as_deref()) != values(&enc2, file2.metadata.mac.as_deref()) {
        // JSON: an integral float (`1.0`, `0e-44`) decrypts as `1`, as sops (Go) writes it,
        // and is an int from then on: the same number with another type tag.
        let same_numbers = format == FileFormat::Json
            && match (
                sealkit_keys::sops::edit::to_value(&text, format),
                sealkit_keys::sops::edit::to_value(plain, format),
            ) {
                (Ok(a), Ok(b)) => same_numbers(&a, &b),
                _ => false,
            };
        assert!(
            same_numbers,
            "decrypt(encrypt(x)) keeps every value, its type and its path"
        );
    }
    let plain2 = file2
        .decrypt_with_key(&key, false)
        .expect("our own output decrypts with its MAC");
    assert!(
        plain2[..] == *plain.as_bytes(),
        "decrypt(encrypt(.)) is idempotent"
    );
}
/// Whether two JSON values are equal, numbers compared as numbers (`1.0` == `1`).
fn same_numbers(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_numbers(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && same_numbers(vx, vy))
        }
        _ => a == b,
    }
}

/// Whether `data` holds `ENC[` that does not start a well-formed encrypted value.
fn lookalike(data: &[u8]) -> bool {
    use sealkit_keys::sops::cipher::Envelope;
    let text = String::from_utf8_lossy(data);
    let mut rest = &text[..];
    while let Some(i) = rest.find("ENC[") {
        let tail = &rest[i..];
        let ok = tail
            .find(']')
            .is_some_and(|end| Envelope::parse(&tail[..=end]).is_ok());
        if !ok {
            return true;
        }
        rest = &tail[4..];
    }
    false
}

/// The `ENC[…]` values of an encrypted text, in order, without its MAC. A value is on one
/// line: text that starts like one but does not end on its line (in a comment, say) is not
/// one, and reading on would take in the metadata, which changes from one round to the next.
fn values<'a>(enc: &'a str, mac: Option<&str>) -> Vec<&'a str> {
    let mut out = Vec::new();
    for line in enc.lines() {
        let mut rest = line;
        while let Some(i) = rest.find("ENC[AES256_GCM,") {
            let Some(len) = rest[i..].find(']') else {
                break;
            };
            let v = &rest[i..=i + len];
            if Some(v) != mac {
                out.push(v);
            }
            rest = &rest[i + len + 1..];
        }
    }
    out
}

/// Panics when a string value that holds the marker, and that the default rule encrypts (no
/// key on its path ends in `_unencrypted`), is not an `ENC[…]` value at the same path of the
/// encrypted file. When the encrypted text does not read back as a tree, the value may at least
/// not occur in it verbatim (unless it also occurs in a key or an unencrypted value).
fn assert_no_clear_values(
    plain: &serde_json::Value,
    enc: &str,
    format: sealkit_keys::sops::FileFormat,
) {
    use serde_json::Value;

    fn walk(
        v: &Value,
        e: Option<&Value>,
        clear: bool,
        secret: &mut Vec<String>,
        public: &mut Vec<String>,
    ) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    public.push(k.clone());
                    let ek = e.and_then(|e| e.get(k));
                    walk(v, ek, clear || k.ends_with("_unencrypted"), secret, public);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, e.and_then(|e| e.get(i)), clear, secret, public);
                }
            }
            Value::String(s) if clear => public.push(s.clone()),
            Value::String(s) if s.contains(MARKER) => match e {
                Some(Value::String(c)) => {
                    assert!(
                        c.starts_with("ENC[AES256_GCM,"),
                        "a value was left in clear text"
                    );
                }
                _ => secret.push(s.clone()),
            },
            _ => {}
        }
    }
    let tree = sealkit_keys::sops::edit::to_value(enc, format).ok();
    let (mut secret, mut public) = (Vec::new(), Vec::new());
    walk(plain, tree.as_ref(), false, &mut secret, &mut public);
    for s in &secret {
        if public.iter().any(|p| p.contains(s.as_str())) {
            continue;
        }
        assert!(!enc.contains(s.as_str()), "a value was left in clear text");
    }
}
