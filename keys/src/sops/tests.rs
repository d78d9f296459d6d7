//! The upstream SOPS vectors (`shared/vectors/sops/`, real sops output with their keys): every
//! file decrypts, its MAC verifies, and the plaintext equals `EXPECTED.json`. Plus round trips
//! through our own encryption for each store.

// `expect_err` would print the decrypted plaintext on failure; `.err().expect()` does not.
#![allow(clippy::err_expect)]

use std::path::PathBuf;

use serde_json::Value;

use super::*;

fn vectors() -> Option<PathBuf> {
    let dir = sealkit_skip::shared_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
        .map(|s| s.join("vectors/sops"));
    match dir {
        Some(dir) if dir.exists() => Some(dir),
        other => {
            sealkit_skip::missing(
                "upstream SOPS vectors",
                format!(
                    "not found at {} (set SEALKIT_SHARED to the shared/ directory)",
                    other.map_or_else(|| "../shared".into(), |d| d.display().to_string())
                ),
            );
            None
        }
    }
}

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex in a vector: {e}"))
}

/// Reads our plaintext output back into JSON for comparison (the same reader `--extract`
/// uses).
fn as_json(format: &str, text: &str) -> Value {
    let f = FileFormat::from_name(format).unwrap_or(FileFormat::Binary);
    edit::to_value(text, f).unwrap_or_else(|e| panic!("decrypted {format} does not parse: {e}"))
}

fn format_of(name: &str, declared: &str) -> FileFormat {
    if name.ends_with(".txt") {
        FileFormat::Binary
    } else {
        FileFormat::from_name(declared).unwrap_or(FileFormat::from_path(name))
    }
}

#[test]
fn upstream_vectors_decrypt_and_verify() {
    let Some(dir) = vectors() else { return };
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("EXPECTED.json")).expect("read"))
            .expect("json");
    let age_keys = std::fs::read_to_string(dir.join("age-examples-pr1031/keys.txt")).expect("keys");
    let ids = AgeIdentities::parse(&age_keys).expect("identities");
    let mut checked = 0;
    for (name, want) in expected.as_object().expect("object") {
        if name.starts_with('_') {
            continue;
        }
        let text = std::fs::read_to_string(dir.join(name)).expect("vector");
        let declared = want["format"].as_str().expect("format");
        let format = format_of(name, declared);
        let file =
            EncryptedFile::load(&text, format).unwrap_or_else(|e| panic!("{name}: load: {e}"));
        let key = if name.starts_with("age-") {
            file.data_key(&ids)
                .unwrap_or_else(|e| panic!("{name}: age: {e}"))
        } else {
            DataKey::from_bytes(&hex(want["data_key_hex"].as_str().expect("hex"))).expect("key")
        };
        assert_eq!(
            hex(want["data_key_hex"].as_str().expect("hex")),
            key.expose().to_vec(),
            "{name}: data key"
        );
        if want["mac_verified"].is_null() {
            assert!(
                matches!(file.decrypt_with_key(&key, false), Err(SopsError::NoMac)),
                "{name}: no MAC must be refused"
            );
            file.decrypt_with_key(&key, true)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            checked += 1;
            continue;
        }
        let out = file
            .decrypt_with_key(&key, false)
            .unwrap_or_else(|e| panic!("{name}: decrypt: {e}"));
        let out = String::from_utf8(out.to_vec()).expect("utf8");
        let got = if format == FileFormat::Binary {
            serde_json::json!({ "data": out })
        } else {
            as_json(declared, &out)
        };
        assert_eq!(got, want["plaintext"], "{name}: plaintext\n{out}");
        assert!(
            !["sops:", "sops_", "[sops]", "\"sops\""]
                .iter()
                .any(|m| out.contains(m)),
            "{name}: metadata left in the output:\n{out}"
        );
        checked += 1;
    }
    assert_eq!(checked, 12, "every vector was checked");

    // Decrypted comments come out in clear.
    for (name, groups) in expected["_comments"].as_object().expect("comments") {
        let text = std::fs::read_to_string(dir.join(name)).expect("vector");
        let file = EncryptedFile::load(&text, FileFormat::Yaml).expect("load");
        let key = match file.data_key(&ids) {
            Ok(k) => k,
            Err(_) => {
                DataKey::from_bytes(&hex(expected[name]["data_key_hex"].as_str().expect("hex")))
                    .expect("key")
            }
        };
        let out = String::from_utf8(
            file.decrypt_with_key(&key, false)
                .expect("decrypt")
                .to_vec(),
        )
        .expect("utf8");
        for texts in groups
            .as_object()
            .expect("groups")
            .values()
            .filter_map(Value::as_array)
        {
            for t in texts {
                let line = format!("#{}", t.as_str().expect("str"));
                assert!(
                    out.contains(&line),
                    "{name}: comment {line:?} missing:\n{out}"
                );
            }
        }
    }
}

#[test]
fn tampering_with_any_vector_value_is_detected() {
    let Some(dir) = vectors() else { return };
    let text =
        std::fs::read_to_string(dir.join("age-examples-pr1031/example.yaml")).expect("vector");
    let ids = AgeIdentities::parse(
        &std::fs::read_to_string(dir.join("age-examples-pr1031/keys.txt")).expect("keys"),
    )
    .expect("ids");
    // Swap two encrypted values between keys: the AAD catches it.
    let lines: Vec<&str> = text.lines().collect();
    let u = lines
        .iter()
        .position(|l| l.trim_start().starts_with("user: ENC["))
        .expect("user");
    let p = lines
        .iter()
        .position(|l| l.trim_start().starts_with("password: ENC["))
        .expect("password");
    let value = |i: usize| {
        lines[i]
            .split_once(": ")
            .map(|x| x.1)
            .unwrap_or_default()
            .to_string()
    };
    let mut swapped: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    swapped[u] = format!("        user: {}", value(p));
    swapped[p] = format!("        password: {}", value(u));
    let swapped = swapped.join("\n") + "\n";
    let file = EncryptedFile::load(&swapped, FileFormat::Yaml).expect("load");
    let err = file
        .decrypt(&ids, false)
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains("app2.db.user"), "{err}");
    // Change a clear value: the MAC catches it.
    let edited = text.replace("remain in clear text", "remain in clear text!");
    let file = EncryptedFile::load(&edited, FileFormat::Yaml).expect("load");
    assert!(matches!(
        file.decrypt(&ids, false),
        Err(SopsError::MacMismatch)
    ));
    assert!(
        file.decrypt(&ids, true).is_ok(),
        "--ignore-mac still decrypts"
    );
    // Wrong identity.
    let other = AgeIdentities::parse(
        &age::x25519::Identity::generate()
            .to_string()
            .expose_secret_str(),
    )
    .expect("ids");
    assert!(matches!(
        EncryptedFile::load(&text, FileFormat::Yaml)
            .expect("load")
            .decrypt(&other, false),
        Err(SopsError::NoIdentity)
    ));
}

trait ExposeStr {
    fn expose_secret_str(&self) -> String;
}

impl ExposeStr for age::secrecy::SecretString {
    fn expose_secret_str(&self) -> String {
        use age::secrecy::ExposeSecret;
        self.expose_secret().to_string()
    }
}

fn identity() -> (AgeIdentities, String) {
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    (
        AgeIdentities::parse(&id.to_string().expose_secret_str()).expect("ids"),
        recipient,
    )
}

#[test]
fn round_trip_every_store() {
    let (ids, recipient) = identity();
    let opts = EncryptOptions {
        age: vec![recipient],
        ..Default::default()
    };
    let cases: [(FileFormat, &str); 5] = [
        (
            FileFormat::Yaml,
            "---\n# leading comment\napp:\n  password: hunter2 # trailing stays\n  port: 5432\n  ratio: 0.5\n  on: true\n  list: [a, \"b, c\", 3]\n  block: |\n    line1\n    line2\n  keep_unencrypted: visible\nempty:\n",
        ),
        (
            FileFormat::Json,
            "{\"a\": {\"b\": \"secret\", \"n\": 12, \"f\": 1.5, \"t\": false, \"l\": [\"x\", 2]}, \"nothing\": null}",
        ),
        (
            FileFormat::Dotenv,
            "# comment\nDB_PASSWORD=hunter2\nMULTI=one\\ntwo\nEMPTY=\n",
        ),
        (
            FileFormat::Ini,
            "; comment\n[db]\npassword = hunter2\nuser = admin\n",
        ),
        (
            FileFormat::Binary,
            "raw \u{0} bytes? no: text with\nnewlines\n",
        ),
    ];
    for (format, plain) in cases {
        let enc =
            encrypt(plain.as_bytes(), format, &opts).unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert!(
            !enc.contains("hunter2") && !enc.contains("secret\""),
            "{format:?} leaked:\n{enc}"
        );
        let file = EncryptedFile::load(&enc, format)
            .unwrap_or_else(|e| panic!("{format:?}: load: {e}\n{enc}"));
        let out = file
            .decrypt(&ids, false)
            .unwrap_or_else(|e| panic!("{format:?}: decrypt: {e}\n{enc}"));
        let out = String::from_utf8(out.to_vec()).expect("utf8");
        match format {
            FileFormat::Yaml => {
                assert_eq!(out, plain, "YAML must round-trip byte for byte:\n{enc}");
            }
            FileFormat::Json => {
                let a: Value = serde_json::from_str(&out).expect("json");
                let b: Value = serde_json::from_str(plain).expect("json");
                assert_eq!(a, b);
            }
            _ => assert_eq!(out, plain, "{format:?}:\n{enc}"),
        }
    }
}

#[test]
fn unsupported_key_types_are_named() {
    let Some(dir) = vectors() else { return };
    let text =
        std::fs::read_to_string(dir.join("pgp-functional-tests/format.enc.yaml")).expect("vector");
    let (ids, _) = identity();
    let err = EncryptedFile::load(&text, FileFormat::Yaml)
        .expect("load")
        .decrypt(&ids, false)
        .err()
        .expect("fails");
    assert!(
        err.to_string().contains("pgp") && err.to_string().contains("not supported"),
        "{err}"
    );
}

#[test]
fn malformed_values_and_metadata() {
    assert!(matches!(
        EncryptedFile::load("a: 1\n", FileFormat::Yaml),
        Err(SopsError::NotSopsFile)
    ));
    let bad = "a: ENC[AES256_GCM,data:zz,iv:,tag:,type:str]\nsops:\n  mac: x\n  lastmodified: now\n  age: []\n";
    let f = EncryptedFile::load(bad, FileFormat::Yaml).expect("load");
    let key = DataKey::generate().expect("key");
    let err = f
        .decrypt_with_key(&key, true)
        .err()
        .expect("fails")
        .to_string();
    assert!(err.starts_with("a: malformed encrypted value"), "{err}");
    let unknown = "a: b\nsops:\n  surprise: 1\n";
    assert!(matches!(
        EncryptedFile::load(unknown, FileFormat::Yaml),
        Err(SopsError::Metadata(_))
    ));
}

#[test]
fn unchanged_values_keep_their_ciphertext_on_re_encryption() {
    let (ids, recipient) = identity();
    let opts = EncryptOptions {
        age: vec![recipient],
        ..Default::default()
    };
    let plain = "a: one\nb: two\nc: three\n";
    let enc = encrypt(plain.as_bytes(), FileFormat::Yaml, &opts).expect("enc");
    let file = EncryptedFile::load(&enc, FileFormat::Yaml).expect("load");
    let key = file.data_key(&ids).expect("key");
    let stash = file.iv_stash(&key);
    let edited = "a: one\nb: TWO\nc: three\n";
    let again = encrypt_with_key(
        edited.as_bytes(),
        FileFormat::Yaml,
        &file.options(),
        &key,
        Some(&stash),
    )
    .expect("enc");
    let line = |t: &str, k: &str| t.lines().find(|l| l.starts_with(k)).map(str::to_string);
    assert_eq!(
        line(&enc, "a:"),
        line(&again, "a:"),
        "unchanged value keeps its ciphertext"
    );
    assert_eq!(line(&enc, "c:"), line(&again, "c:"));
    assert_ne!(line(&enc, "b:"), line(&again, "b:"));
    let out = EncryptedFile::load(&again, FileFormat::Yaml)
        .expect("load")
        .decrypt(&ids, false)
        .expect("dec");
    assert_eq!(&out[..], edited.as_bytes());
}

// Found by the `sops_dotenv` and `sops_ini` fuzz targets: a key repeated with the same value
// (or a comment repeated in one place) shares one stash entry, so re-encrypting gave every copy
// the IV of the last one: the others lost their ciphertext, and two values of the file were
// sealed with one IV. Each copy keeps its own IV now.
#[test]
fn repeated_values_keep_their_own_ciphertext_on_re_encryption() {
    let (ids, recipient) = identity();
    let opts = EncryptOptions {
        age: vec![recipient],
        ..Default::default()
    };
    for (format, plain) in [
        (FileFormat::Dotenv, "\n=W\n=W\nA=x\nA=x\nA=x\n#c\n#c\n"),
        (FileFormat::Ini, ";;\n\n;;\n[s]\nk = v\n[s]\nk = v\n"),
    ] {
        let enc = encrypt(plain.as_bytes(), format, &opts).expect("enc");
        let values = |t: &str| {
            t.lines()
                .filter(|l| l.contains("ENC[") && !l.contains("mac"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let first = values(&enc);
        let mut ivs: Vec<&str> = first
            .iter()
            .map(|l| l.split(",iv:").nth(1).expect("an iv"))
            .collect();
        ivs.sort();
        ivs.dedup();
        assert_eq!(
            ivs.len(),
            first.len(),
            "{format:?}: one IV per value:\n{enc}"
        );
        let file = EncryptedFile::load(&enc, format).expect("load");
        let key = file.data_key(&ids).expect("key");
        let stash = file.iv_stash(&key);
        let again = encrypt_with_key(
            plain.as_bytes(),
            format,
            &file.options(),
            &key,
            Some(&stash),
        )
        .expect("enc");
        assert_eq!(
            first,
            values(&again),
            "{format:?}: every value keeps its ciphertext"
        );
    }
}

#[test]
fn updatekeys_rewraps_without_touching_values() {
    let (ids_a, a) = identity();
    let (ids_b, b) = identity();
    let enc = encrypt(
        b"x: secret\n",
        FileFormat::Yaml,
        &EncryptOptions {
            age: vec![a],
            ..Default::default()
        },
    )
    .expect("enc");
    let file = EncryptedFile::load(&enc, FileFormat::Yaml).expect("load");
    let key = file.data_key(&ids_a).expect("key");
    let mut opts = file.options();
    opts.age = vec![b];
    let updated = file.with_recipients(&opts, &key).expect("update");
    assert_eq!(
        enc.lines().next(),
        updated.lines().next(),
        "values unchanged"
    );
    let f2 = EncryptedFile::load(&updated, FileFormat::Yaml).expect("load");
    assert_eq!(f2.metadata.mac, file.metadata.mac);
    assert!(f2.decrypt(&ids_b, false).is_ok());
    assert!(matches!(
        f2.decrypt(&ids_a, false),
        Err(SopsError::NoIdentity)
    ));
}

#[test]
fn shamir_key_groups_need_the_threshold() {
    let (ids_a, a) = identity();
    let (ids_b, b) = identity();
    let (_, c) = identity();
    let opts = EncryptOptions {
        key_groups: vec![vec![a], vec![b], vec![c]],
        shamir_threshold: Some(2),
        ..Default::default()
    };
    let enc = encrypt(b"{\"k\": \"v\"}", FileFormat::Json, &opts).expect("enc");
    assert!(enc.contains("key_groups") && enc.contains("shamir_threshold"));
    let file = EncryptedFile::load(&enc, FileFormat::Json).expect("load");
    let mut both = AgeIdentities::parse("").expect("empty");
    both.extend(ids_a);
    assert!(
        matches!(file.decrypt(&both, false), Err(SopsError::NoIdentity)),
        "one share is not enough"
    );
    both.extend(ids_b);
    assert!(file.decrypt(&both, false).is_ok());
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn ids() -> &'static (AgeIdentities, String) {
        static IDS: std::sync::OnceLock<(AgeIdentities, String)> = std::sync::OnceLock::new();
        IDS.get_or_init(identity)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Any string value, however it has to be written, decrypts to a YAML file that reads
        /// back as the same string.
        #[test]
        fn yaml_strings_survive(value in "[ -~\\n\\t\u{e9}\u{4e2d}]{0,40}") {
            let (ids, recipient) = ids();
            let plain = format!("top:\n  k: {}\n  list:\n    - {}\n", serde_json::to_string(&value).unwrap_or_default(), serde_json::to_string(&value).unwrap_or_default());
            let opts = EncryptOptions { age: vec![recipient.clone()], ..Default::default() };
            let enc = encrypt(plain.as_bytes(), FileFormat::Yaml, &opts).expect("encrypt");
            let out = EncryptedFile::load(&enc, FileFormat::Yaml).expect("load").decrypt(ids, false).expect("decrypt");
            let text = String::from_utf8(out.to_vec()).expect("utf8");
            let v: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            prop_assert_eq!(&v["top"]["k"], &Value::String(value.clone()), "{}", text);
            prop_assert_eq!(&v["top"]["list"][0], &Value::String(value.clone()), "{}", text);
        }
    }
}

fn keysource_vector(name: &str) -> Option<Vec<u8>> {
    vectors().map(|d| std::fs::read(d.join("age-keysource-test").join(name)).expect("vector"))
}

fn open_age_file(ids: &AgeIdentities, data: &[u8]) -> Vec<u8> {
    // The same path the data-key unwrap takes (armored or binary age file).
    let text = String::from_utf8(data.to_vec()).expect("armored");
    ids.unwrap(&text).expect("opens").to_vec()
}

#[test]
fn upstream_age_keysource_vectors() {
    let Some(mut plain) = keysource_vector("plaintext.txt") else {
        return;
    };
    // plaintext.txt ends with a newline the encrypted payload does not have.
    if plain.last() == Some(&b'\n') {
        plain.pop();
    }
    let x = AgeIdentities::parse(
        &String::from_utf8(keysource_vector("x25519_identity.txt").expect("v")).expect("utf8"),
    )
    .expect("x25519");
    assert_eq!(
        open_age_file(&x, &keysource_vector("x25519_data.age").expect("v")),
        plain
    );
    let ssh = AgeIdentities::parse_ssh(
        &String::from_utf8(keysource_vector("ssh_ed25519_identity").expect("v")).expect("utf8"),
    )
    .expect("ssh");
    assert_eq!(
        open_age_file(&ssh, &keysource_vector("ssh_ed25519_data.age").expect("v")),
        plain
    );
    let recipient =
        String::from_utf8(keysource_vector("ssh_ed25519_recipient.pub").expect("v")).expect("utf8");
    assert!(
        recipient.starts_with(&ssh.recipients[0]),
        "derived recipient matches the .pub file"
    );
    let enc = keysource_vector("scrypt_encrypted_identity.age").expect("v");
    assert!(AgeIdentities::is_encrypted_file(&enc));
    assert!(AgeIdentities::parse_encrypted(&enc, "wrong").is_err());
    let inner = AgeIdentities::parse_encrypted(&enc, "passphrase").expect("passphrase opens it");
    assert_eq!(inner.len(), 1);
    // Our ssh-ed25519 wrap opens with the vector's identity.
    let wrapped =
        keysource::wrap_for(recipient.trim(), b"0123456789abcdef0123456789abcdef").expect("wrap");
    assert_eq!(
        &ssh.unwrap(&wrapped).expect("unwrap")[..],
        b"0123456789abcdef0123456789abcdef"
    );
}

#[test]
fn comment_regex_rules_follow_the_comment_stack() {
    let (ids, recipient) = identity();
    let plain = "# sops:enc\npassword: secret\nuser: admin\nnested:\n    # sops:enc\n    # why\n    key: v\n    other: w\n";
    let opts = EncryptOptions {
        age: vec![recipient.clone()],
        rule: Some(MetadataRule::EncryptedCommentRegex("sops:enc".into())),
        ..Default::default()
    };
    let enc = encrypt(plain.as_bytes(), FileFormat::Yaml, &opts).expect("enc");
    let line = |k: &str| {
        enc.lines()
            .find(|l| l.trim_start().starts_with(k))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("password:").contains("ENC["), "{enc}");
    assert_eq!(
        line("user:"),
        "user: admin",
        "the marker covers only the next value"
    );
    assert!(line("key:").contains("ENC["), "{enc}");
    assert_eq!(line("other:").trim(), "other: w");
    assert!(enc.contains("# sops:enc"), "the marker stays readable");
    assert!(
        !enc.contains("# why"),
        "a comment after the marker is encrypted too:\n{enc}"
    );
    assert!(enc.contains("encrypted_comment_regex: sops:enc"));
    let out = EncryptedFile::load(&enc, FileFormat::Yaml)
        .expect("load")
        .decrypt(&ids, false)
        .expect("dec");
    assert_eq!(&out[..], plain.as_bytes());

    let plain = "# sops:noenc\npublic: x\nsecret: hidden\n";
    let opts = EncryptOptions {
        age: vec![recipient],
        rule: Some(MetadataRule::UnencryptedCommentRegex("sops:noenc".into())),
        ..Default::default()
    };
    let enc = encrypt(plain.as_bytes(), FileFormat::Yaml, &opts).expect("enc");
    assert!(
        enc.contains("public: x") && !enc.contains("hidden") && enc.contains("# sops:noenc"),
        "{enc}"
    );
    let out = EncryptedFile::load(&enc, FileFormat::Yaml)
        .expect("load")
        .decrypt(&ids, false)
        .expect("dec");
    assert_eq!(&out[..], plain.as_bytes());
}

// Found by the `sops_yaml` fuzz target: a top-level mapping with a tag (`--- !!map`, or a flow
// mapping `!!map {…}`) was skipped by the encryption walk, so its values were written in clear
// text next to a `sops:` block. It is refused now, with an error naming the tag and no value.
#[test]
fn a_tagged_top_level_mapping_is_refused() {
    let (_, recipient) = identity();
    let opts = EncryptOptions {
        age: vec![recipient],
        ..Default::default()
    };
    for plain in [
        "--- !!map\npassword: hunter2\n",
        "!!map {password: hunter2}\n",
        "a: 1\n--- !!map\npassword: hunter2\n",
    ] {
        let err = encrypt(plain.as_bytes(), FileFormat::Yaml, &opts)
            .err()
            .unwrap_or_else(|| panic!("{plain:?} was encrypted"));
        let msg = err.to_string();
        assert!(matches!(err, SopsError::Format(_)), "{plain:?}: {msg}");
        assert!(
            msg.contains("mapping at the top level, without a tag"),
            "{plain:?}: {msg}"
        );
        assert!(!msg.contains("hunter2"), "{plain:?}: {msg}");
    }
    // Untagged top-level mappings, block or flow, and a `%YAML` directive still encrypt.
    for plain in [
        "password: hunter2\n",
        "--- {password: hunter2}\n",
        "%YAML 1.2\n---\npassword: hunter2\n",
    ] {
        let enc = encrypt(plain.as_bytes(), FileFormat::Yaml, &opts)
            .unwrap_or_else(|e| panic!("{plain:?}: {e}"));
        assert!(!enc.contains("hunter2"), "{plain:?} leaked:\n{enc}");
    }
}

// Found by the `sops_yaml` fuzz target: an empty (or comment-only) YAML file was "encrypted"
// to a file without a `sops:` block, which nothing can decrypt. It is refused now.
#[test]
fn an_empty_yaml_file_is_refused() {
    let (_, recipient) = identity();
    let opts = EncryptOptions {
        age: vec![recipient],
        ..Default::default()
    };
    for plain in ["", "\n", "# only a comment\n"] {
        let err = encrypt(plain.as_bytes(), FileFormat::Yaml, &opts)
            .err()
            .unwrap_or_else(|| panic!("{plain:?} was encrypted"));
        assert!(
            matches!(&err, SopsError::Format(m) if m.contains("no YAML document")),
            "{plain:?}: {err}"
        );
    }
}

// Found by the `sops_yaml` fuzz target: `: ! k :` (an entry with an empty implicit key) is not
// YAML, but two of our readers accepted it, differently; the "encrypted" file written from it
// did not read back as a SOPS file. It is refused now, as sops refuses it; `? ` keys still work.
#[test]
fn a_mapping_entry_without_a_key_is_refused() {
    let (ids, recipient) = identity();
    let opts = EncryptOptions {
        age: vec![recipient],
        ..Default::default()
    };
    for plain in [": ! :", ": x\n", "a: b\n: ! hunter2 :\n", "a:\n  : x\n"] {
        let err = encrypt(plain.as_bytes(), FileFormat::Yaml, &opts)
            .err()
            .unwrap_or_else(|| panic!("{plain:?} was encrypted"));
        assert!(
            matches!(&err, SopsError::Format(m) if m.contains("no key")),
            "{plain:?}: {err}"
        );
        assert!(!err.to_string().contains("hunter2"));
    }
    let plain = "?\n: hunter2\n";
    let enc = encrypt(plain.as_bytes(), FileFormat::Yaml, &opts).expect("an explicit empty key");
    assert!(!enc.contains("hunter2"), "{enc}");
    let out = EncryptedFile::load(&enc, FileFormat::Yaml)
        .expect("load")
        .decrypt(&ids, false)
        .expect("dec");
    assert_eq!(&out[..], plain.as_bytes());
}

// Found by the `sops_yaml` fuzz target: `updatekeys` on a file whose `sops:` block ends without
// a final newline wrote an empty line before the new block, which then decrypted as part of
// the plaintext. The new block follows the kept text as it is.
#[test]
fn updatekeys_keeps_the_plaintext_of_a_file_without_a_final_newline() {
    let (ids_a, a) = identity();
    let (ids_b, b) = identity();
    let plain = "x: secret\ny: other\n";
    let enc = encrypt(
        plain.as_bytes(),
        FileFormat::Yaml,
        &EncryptOptions {
            age: vec![a],
            ..Default::default()
        },
    )
    .expect("enc");
    let trimmed = enc.trim_end_matches('\n');
    let file = EncryptedFile::load(trimmed, FileFormat::Yaml).expect("load");
    let key = file.data_key(&ids_a).expect("key");
    let before = file.decrypt_with_key(&key, false).expect("dec");
    let mut opts = file.options();
    opts.age = vec![b];
    let updated = file.with_recipients(&opts, &key).expect("update");
    let after = EncryptedFile::load(&updated, FileFormat::Yaml)
        .expect("load")
        .decrypt(&ids_b, false)
        .expect("dec");
    assert_eq!(&after[..], &before[..], "{updated}");
    assert_eq!(&after[..], plain.as_bytes());
}

// Found by the `openssh_key` fuzz target: the recipient line (and stanza tag) of an OpenSSH
// private key came from the file's clear public-key header, never checked against the private
// section, so an identity could name a recipient it cannot open. Both halves must be one key.
#[test]
fn an_ssh_key_whose_halves_disagree_is_refused() {
    use base64::Engine as _;
    // A throwaway test key (ssh-keygen -t ed25519), made for this test.
    const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACAWGLRYL7erRCgO6Si8V9PT+hXGYAI4+bPf9ChQOMs9zAAAAKB5nd6teZ3e
rQAAAAtzc2gtZWQyNTUxOQAAACAWGLRYL7erRCgO6Si8V9PT+hXGYAI4+bPf9ChQOMs9zA
AAAEB9Zmyj1+CQWjh6sg1tgp3GVqCNy6aCzbCYcBIOM5oFYBYYtFgvt6tEKA7pKLxX09P6
FcZgAjj5s9/0KFA4yz3MAAAAGmMtU0VBTEtJVC1GVVpaLU1BUktFUi03YzFlAQID
-----END OPENSSH PRIVATE KEY-----
";
    let ids = AgeIdentities::parse_ssh(KEY).expect("the key parses");
    let wrapped = keysource::wrap_for(&ids.recipients[0], &[7u8; 32]).expect("wrap");
    assert_eq!(&ids.unwrap(&wrapped).expect("unwrap")[..], &[7u8; 32]);

    let b64 = base64::engine::general_purpose::STANDARD;
    let body: String = KEY.lines().filter(|l| !l.starts_with("-----")).collect();
    let data = b64.decode(body).expect("base64");
    let pem = |d: &[u8]| {
        format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
            b64.encode(d)
        )
    };
    // The header's public key (bytes 62..94) and key type (47..58), the private section's
    // public key (125..157), the seed (161..193).
    assert_eq!(data[62..94], data[125..157]);
    for (at, what) in [(62, "public key"), (50, "public key"), (161, "private key")] {
        let mut bad = data.clone();
        bad[at] ^= 1;
        let err = AgeIdentities::parse_ssh(&pem(&bad))
            .err()
            .unwrap_or_else(|| panic!("byte {at} changed, still accepted"));
        assert!(err.to_string().contains(what), "byte {at}: {err}");
    }
}

// Found by the `sops_ini` fuzz target: `[==` (a line starting with `[` but no section header)
// was read as the entry `[` = `=`, written back as `[ = ENC[…]`, which reads as a section: the
// value was lost and the MAC failed. It is refused, as an unclosed section header.
#[test]
fn an_unclosed_ini_section_header_is_refused() {
    let (_, recipient) = identity();
    let opts = EncryptOptions {
        age: vec![recipient],
        ..Default::default()
    };
    for plain in ["[&]\n[==", "[s]\n[k = hunter2\n", "[s]\n [x=y]z\n"] {
        let err = encrypt(plain.as_bytes(), FileFormat::Ini, &opts)
            .err()
            .unwrap_or_else(|| panic!("{plain:?} was encrypted"));
        assert!(
            matches!(&err, SopsError::Format(m) if m.contains("unclosed [section]")),
            "{plain:?}: {err}"
        );
        assert!(!err.to_string().contains("hunter2"));
    }
}

// Found by the `sops_ini` fuzz target: an entry with an empty key name (`= x`) and a key
// repeated in one section were encrypted entry by entry, while sops refuses the first
// ("empty key name") and keeps only the last of the second: sops failed our file's MAC check.
// Both are refused, naming the line and never the value.
#[test]
fn ini_empty_and_repeated_keys_are_refused() {
    let (_, recipient) = identity();
    let opts = EncryptOptions {
        age: vec![recipient],
        ..Default::default()
    };
    for (plain, what) in [
        ("[s]\n= hunter2\n", "line 2: empty key name"),
        (
            "[_unencrypted]\n=\"\"\"\n[]\n\"\"\"\n=hunter2",
            "line 2: empty key name",
        ),
        (
            "[s]\na = 1\na = hunter2\n",
            "line 3: key 'a' appears twice in [s]",
        ),
    ] {
        let err = encrypt(plain.as_bytes(), FileFormat::Ini, &opts)
            .err()
            .unwrap_or_else(|| panic!("{plain:?} was encrypted"));
        assert!(err.to_string().contains(what), "{plain:?}: {err}");
        assert!(!err.to_string().contains("hunter2"));
    }
    // The same key in two sections, or in a section that appears twice, is two entries, as in
    // sops.
    for plain in [
        "[s]\na = 1\n[t]\na = 2\n",
        "[s]\na = 1\n[t]\nb = 2\n[s]\na = 3\n",
    ] {
        encrypt(plain.as_bytes(), FileFormat::Ini, &opts)
            .unwrap_or_else(|e| panic!("{plain:?}: {e}"));
    }
}

// Found by the `sops_ini` fuzz target: the INI file as a tree (for `decrypt --extract`,
// `--output-type` and `exec-env`) was read line by line, so the lines of a `"""` block were
// taken for sections and entries of their own. It is read as the loader reads it now.
#[test]
fn an_ini_block_value_is_one_value_in_the_tree() {
    let plain = "[_unencrypted]\ne=\"\"\"\n[]\nk=v\n\"\"\"\n[s]\na = 1\n";
    let v = edit::to_value(plain, FileFormat::Ini).expect("tree");
    assert_eq!(
        v,
        serde_json::json!({"_unencrypted": {"e": "\n[]\nk=v\n"}, "s": {"a": "1"}})
    );
}

// Found by the `sops_ini` fuzz target: a value the rule leaves clear (`…_unencrypted`) that
// looks like an encrypted value was decrypted anyway, so a file we wrote from such a plaintext
// failed to decrypt. As in sops, what the rule leaves clear is data, whatever it looks like.
#[test]
fn a_clear_value_that_looks_encrypted_stays_as_written() {
    let (ids, recipient) = identity();
    let opts = EncryptOptions {
        age: vec![recipient],
        ..Default::default()
    };
    let env = "ENC[AES256_GCM,data:QQ==,iv:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=,tag:MDEyMzQ1Njc4OWFiY2RlZg==,type:str]";
    for (format, plain) in [
        (
            FileFormat::Yaml,
            format!("a_unencrypted: {env}\nb: hunter2\n"),
        ),
        (
            FileFormat::Ini,
            format!("[s]\na_unencrypted = {env}\nb = hunter2\n"),
        ),
        (
            FileFormat::Dotenv,
            format!("a_unencrypted={env}\nb=hunter2\n"),
        ),
    ] {
        let enc = encrypt(plain.as_bytes(), format, &opts).expect("enc");
        assert!(enc.contains(env) && !enc.contains("hunter2"), "{enc}");
        let out = EncryptedFile::load(&enc, format)
            .expect("load")
            .decrypt(&ids, false)
            .unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!(String::from_utf8_lossy(&out), plain, "{format:?}");
    }
}

// Found by the `openssh_key` fuzz target: `ssh-ed25519<TAB>AAAA…` parsed as an ssh-ed25519
// recipient, but `wrap_for` only took `ssh-ed25519 ` (a space) as one and read the line as an
// age1… recipient. The key type is the first word, whatever whitespace follows.
#[test]
fn an_ssh_recipient_is_recognised_whatever_whitespace_follows_its_type() {
    let ids = AgeIdentities::parse_ssh(
        "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACAWGLRYL7erRCgO6Si8V9PT+hXGYAI4+bPf9ChQOMs9zAAAAKB5nd6teZ3e
rQAAAAtzc2gtZWQyNTUxOQAAACAWGLRYL7erRCgO6Si8V9PT+hXGYAI4+bPf9ChQOMs9zA
AAAEB9Zmyj1+CQWjh6sg1tgp3GVqCNy6aCzbCYcBIOM5oFYBYYtFgvt6tEKA7pKLxX09P6
FcZgAjj5s9/0KFA4yz3MAAAAGmMtU0VBTEtJVC1GVVpaLU1BUktFUi03YzFlAQID
-----END OPENSSH PRIVATE KEY-----
",
    )
    .expect("the test key");
    let key = "AAAAC3NzaC1lZDI1NTE5AAAAIBYYtFgvt6tEKA7pKLxX09P6FcZgAjj5s9/0KFA4yz3M";
    for sep in [" ", "\t", "\u{c}\u{c}", "  "] {
        let line = format!("ssh-ed25519{sep}{key} comment");
        ssh::SshEd25519Recipient::parse(&line).expect("parses");
        let wrapped =
            keysource::wrap_for(&line, &[9u8; 32]).unwrap_or_else(|e| panic!("{sep:?}: {e}"));
        assert_eq!(&ids.unwrap(&wrapped).expect("unwrap")[..], &[9u8; 32]);
    }
    assert!(matches!(
        keysource::wrap_for("ssh-rsa\tAAAAB3NzaC1yc2E", &[9u8; 32]),
        Err(SopsError::UnsupportedKey(_))
    ));
}

// Found by the `openssh_key` fuzz target: an ssh-ed25519 public key that is a small-order point
// (all zeros, say) parsed as a recipient, and then every wrap for it failed. It is refused
// when the line is read.
#[test]
fn a_small_order_ssh_ed25519_key_is_refused() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    // The identity (y = 1) and the all-zero encoding (a point of order 4).
    let mut one = [0u8; 32];
    one[0] = 1;
    for point in [[0u8; 32], one] {
        let mut blob = Vec::new();
        for part in [&b"ssh-ed25519"[..], &point[..]] {
            blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
            blob.extend_from_slice(part);
        }
        let line = format!("ssh-ed25519 {}", b64.encode(&blob));
        assert!(ssh::SshEd25519Recipient::parse(&line).is_err(), "{line}");
        assert!(keysource::wrap_for(&line, &[9u8; 32]).is_err());
    }
}
// Found by the `sops_dotenv` fuzz target: a dotenv value ending in `\r` (here one the rule keeps
// clear) lost a `\r` each time the file was written and read, so a file we had just encrypted
// failed its MAC. Lines end at `\n` only, as sops splits them.
#[test]
fn a_dotenv_value_ending_in_a_carriage_return_round_trips() {
    let (ids, recipient) = identity();
    let opts = EncryptOptions {
        age: vec![recipient],
        ..Default::default()
    };
    for plain in [
        "A_unencrypted=x\r\r\nB=y\r\n",
        "A=x\r\r\nB_unencrypted=y\r\n",
        "A=x\r",
        "\r\nA=x\n",
    ] {
        let enc = encrypt(plain.as_bytes(), FileFormat::Dotenv, &opts).expect("enc");
        let out = EncryptedFile::load(&enc, FileFormat::Dotenv)
            .expect("load")
            .decrypt(&ids, false)
            .unwrap_or_else(|e| panic!("{plain:?}: {e}"));
        let want = if plain.ends_with('\n') {
            plain.to_string()
        } else {
            format!("{plain}\n")
        };
        assert_eq!(String::from_utf8_lossy(&out), want, "{plain:?}");
    }
}

// Found by the `sops_ini` fuzz target: a comment inside the `[sops]` section was kept as a
// value; the section is not written back where it was, so the comment moved under the previous
// section, with another path, and no longer decrypted (it came back as ciphertext). Comments
// in `[sops]` are metadata layout, dropped like its blank lines.
#[test]
fn a_comment_in_the_ini_sops_section_is_not_data() {
    let (ids, recipient) = identity();
    let opts = EncryptOptions {
        age: vec![recipient],
        ..Default::default()
    };
    let enc = encrypt(b"[db]\nuser = admin\n", FileFormat::Ini, &opts).expect("enc");
    let commented = enc.replace("[sops]\n", "[sops]\n; a note\n");
    assert_ne!(commented, enc);
    let file = EncryptedFile::load(&commented, FileFormat::Ini).expect("load");
    let out = file.decrypt(&ids, false).expect("dec");
    assert_eq!(String::from_utf8_lossy(&out), "[db]\nuser = admin\n");
}

// Found by the `sops_yaml` fuzz target: a multi-line string with a comment after it on its line
// decrypted as a `|` block, and the comment, still after the value, became its last line's
// text: the decrypted value gained the comment. Such a value is written quoted.
#[test]
fn a_multi_line_value_followed_by_a_comment_keeps_its_text() {
    let (ids, recipient) = identity();
    let opts = EncryptOptions {
        age: vec![recipient],
        ..Default::default()
    };
    for plain in [
        "f: \"l1\\nl2\" # note\n",
        "a:\n  b: \"x\\ny\\n\"   #c\n  d: 1\n",
    ] {
        let enc = encrypt(plain.as_bytes(), FileFormat::Yaml, &opts).expect("enc");
        let out = EncryptedFile::load(&enc, FileFormat::Yaml)
            .expect("load")
            .decrypt(&ids, false)
            .expect("dec");
        let out = String::from_utf8(out.to_vec()).expect("utf8");
        assert_eq!(
            edit::to_value(&out, FileFormat::Yaml).expect("reads"),
            edit::to_value(plain, FileFormat::Yaml).expect("reads"),
            "{plain:?} -> {out:?}"
        );
        assert!(out.contains('#'), "the comment stays: {out:?}");
    }
}

// Found by the `sops_json` fuzz target: JSON numbers were parsed with serde_json's fast float
// parser, which can be one unit in the last place off; a float written out and read back
// (`1.4809418094148093e+47`) came back as another number, so a decrypted file encrypted again
// changed a value. serde_json's `float_roundtrip` parses them exactly.
#[test]
fn json_floats_read_back_exactly() {
    let (ids, recipient) = identity();
    let opts = EncryptOptions {
        age: vec![recipient],
        ..Default::default()
    };
    for n in [
        "148094180941480946506509465064809465065094650650",
        "1.4809418094148093e+47",
        "0.1",
        "2.2250738585072014e-308",
        "1.7976931348623157e308",
    ] {
        let plain = format!("{{\"a\": {n}}}");
        let want: f64 = n.parse().expect("f64");
        let mut text = plain.clone();
        for round in 0..3 {
            let enc = encrypt(text.as_bytes(), FileFormat::Json, &opts).expect("enc");
            let out = EncryptedFile::load(&enc, FileFormat::Json)
                .expect("load")
                .decrypt(&ids, false)
                .expect("dec");
            text = String::from_utf8(out.to_vec()).expect("utf8");
            let v: Value = serde_json::from_str(&text).expect("json");
            assert_eq!(v["a"].as_f64(), Some(want), "{n}, round {round}: {text}");
        }
    }
}

// Found by the `sops_ini` fuzz target: a `"""` value is written back on one line, its line
// breaks as `\n`, and must read back as itself. It did not when it started with `"""` (read as
// another block: the file we wrote did not load), or with a space (`k = """ """`: trimmed to an
// empty value when read again), or held a `\n` of its own (read as a line break). Such values
// are refused.
#[test]
fn an_ini_block_value_that_cannot_be_written_on_one_line_is_refused() {
    let (_, recipient) = identity();
    let opts = EncryptOptions {
        age: vec![recipient],
        ..Default::default()
    };
    for plain in [
        "[s_unencrypted]\nk = \"\"\"\"\"\"x\ny\"\"\"\n",
        "[s]\nk = \"\"\"\"\"\"x\"\"\"\n",
        "[d]\nk=\"\"\" \"\"\"",
        "[s]\nk = \"\"\"x \"\"\"\n",
        "[s]\nk = \"\"\"a\\nb\"\"\"\n",
    ] {
        let err = encrypt(plain.as_bytes(), FileFormat::Ini, &opts)
            .err()
            .unwrap_or_else(|| panic!("{plain:?} was encrypted"));
        assert!(
            matches!(&err, SopsError::Format(m) if m.contains("cannot be written back on one line")),
            "{plain:?}: {err}"
        );
    }
    // An ordinary block still reads.
    let enc = encrypt(b"[s]\nk = \"\"\"a\nb\"\"\"\n", FileFormat::Ini, &opts).expect("enc");
    assert!(EncryptedFile::load(&enc, FileFormat::Ini).is_ok());
}

// Found by the `sops_yaml` fuzz target: a multi-line plain value followed by a space on its
// last line (`p: 4\n\n  _ `) decrypted to a `|-` block that took the space in, so the value
// gained a character. The block now replaces the spaces after the value too.
#[test]
fn a_value_decrypted_to_a_block_scalar_does_not_take_in_trailing_spaces() {
    let (ids, recipient) = identity();
    let opts = EncryptOptions {
        age: vec![recipient],
        ..Default::default()
    };
    let plain = "p: 4\n\n  _ \nq: x\n";
    let want = edit::to_value(plain, FileFormat::Yaml).expect("plain reads");
    assert_eq!(want["p"], "4\n_");
    let enc = encrypt(plain.as_bytes(), FileFormat::Yaml, &opts).expect("enc");
    let dec = EncryptedFile::load(&enc, FileFormat::Yaml)
        .expect("load")
        .decrypt(&ids, false)
        .expect("dec");
    let text = std::str::from_utf8(&dec).expect("utf-8");
    assert_eq!(text, "p: |-\n  4\n  _\nq: x\n");
    assert_eq!(edit::to_value(text, FileFormat::Yaml).expect("reads"), want);
}
