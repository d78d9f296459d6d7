//! SOPS interop with peers we did not write: Debian's `age` CLI opens the data-key envelopes
//! sealkit writes and writes envelopes sealkit opens; an independent Python implementation of
//! the value layer and MAC (`tests/peers/sops_peer.py`) decrypts and verifies what sealkit
//! encrypts, in every store, and encrypts files sealkit decrypts.

use std::path::Path;
use std::process::Command;

use sealkit_keys::sops::{AgeIdentities, EncryptedFile, FileFormat};
use sealkit_tests::{ok, run, sealkit_bin};
use serde_json::Value;

fn age_keygen(dir: &Path) -> (String, String) {
    let key = dir.join("key.txt");
    ok(&run(Command::new("age-keygen").arg("-o").arg(&key), b""));
    let recipient = String::from_utf8(ok(&run(
        Command::new("age-keygen").arg("-y").arg(&key),
        b"",
    )))
    .expect("utf8");
    (key.display().to_string(), recipient.trim().to_string())
}

fn sops_peer(args: &[&str], stdin: &[u8]) -> std::process::Output {
    let script = sealkit_tests::workspace().join("tests/peers/sops_peer.py");
    let python = std::env::var("SEALKIT_PYTHON").unwrap_or_else(|_| "python3".into());
    run(Command::new(python).arg(script).args(args), stdin)
}

fn sealkit_env(dir: &Path, args: &[&str], key_file: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(sealkit_bin());
    cmd.args(args)
        .current_dir(dir)
        .env_remove("SOPS_AGE_KEY")
        .env_remove("SOPS_AGE_RECIPIENTS")
        .env("XDG_CONFIG_HOME", dir.join("no-config"));
    match key_file {
        Some(k) => cmd.env("SOPS_AGE_KEY_FILE", k),
        None => cmd.env_remove("SOPS_AGE_KEY_FILE"),
    };
    run(&mut cmd, b"")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The `enc` envelopes of an encrypted file, as the stores write them.
fn envelopes(text: &str, format: FileFormat) -> Vec<String> {
    let ef = EncryptedFile::load(text, format).expect("load");
    let groups = ef.metadata.groups();
    groups
        .iter()
        .flat_map(|g| g.age.iter().map(|a| a.enc.clone()))
        .collect()
}

const PLAIN: [(&str, &str, &str); 5] = [
    (
        "app.yaml",
        "yaml",
        "# top\ndb:\n    user: admin\n    password: hunter2\n    port: 5432\n    ratio: 0.25\n    enabled: true\nlist:\n    - a\n    - b\nclear_unencrypted: visible\n",
    ),
    (
        "app.json",
        "json",
        "{\"db\": {\"user\": \"admin\", \"password\": \"hunter2\", \"port\": 5432, \"ok\": false}, \"list\": [\"a\", 1.5]}",
    ),
    (
        "app.env",
        "dotenv",
        "USER=admin\nPASSWORD=hunter2\nMULTI=a\\nb\n",
    ),
    ("app.ini", "ini", "[db]\nuser = admin\npassword = hunter2\n"),
    ("app.bin", "binary", "any text\nwith lines\n"),
];

#[test]
fn sealkit_files_open_with_age_cli_and_verify_in_python() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let (key, recipient) = age_keygen(d);
    for (name, format_name, plain) in PLAIN {
        let path = d.join(name);
        std::fs::write(&path, plain).expect("write");
        let out = sealkit_env(d, &["sops", "encrypt", "--age", &recipient, name], None);
        let enc = String::from_utf8(ok(&out)).expect("utf8");
        assert!(!enc.contains("hunter2"), "{name}: plaintext leaked");
        let format = if format_name == "binary" {
            FileFormat::Binary
        } else {
            FileFormat::from_name(format_name).expect("format")
        };
        let envs = envelopes(&enc, format);
        assert_eq!(envs.len(), 1);
        // The age CLI opens our envelope: that is the data key.
        let data_key = ok(&run(
            Command::new("age").args(["-d", "-i", &key]),
            envs[0].as_bytes(),
        ));
        assert_eq!(data_key.len(), 32, "{name}: data key length");
        // The independent implementation decrypts every value and verifies the MAC with it.
        let enc_path = d.join(format!("enc-{name}"));
        std::fs::write(&enc_path, &enc).expect("write");
        let peer = sops_peer(
            &[
                "decrypt",
                format_name,
                &hex(&data_key),
                &enc_path.display().to_string(),
            ],
            b"",
        );
        let peer_out: Value = serde_json::from_slice(&ok(&peer)).expect("peer json");
        let ours = String::from_utf8(ok(&sealkit_env(
            d,
            &[
                "sops",
                "decrypt",
                &enc_path.display().to_string(),
                "--input-type",
                format_name,
            ],
            Some(&key),
        )))
        .expect("utf8");
        if format_name == "json" {
            let a: Value = serde_json::from_str(&ours).expect("json");
            let b: Value = serde_json::from_str(plain).expect("json");
            assert_eq!(a, b, "{name}: our decryption");
        } else {
            assert_eq!(
                ours, plain,
                "{name}: our decryption must give back the file byte for byte"
            );
        }
        match format_name {
            "yaml" => {
                assert_eq!(peer_out["db"]["password"], "hunter2");
                assert_eq!(peer_out["db"]["port"], 5432);
                assert_eq!(peer_out["db"]["enabled"], true);
            }
            "json" => assert_eq!(peer_out["db"]["password"], "hunter2"),
            "dotenv" => assert_eq!(peer_out["MULTI"], "a\nb"),
            "ini" => assert_eq!(peer_out["db"]["password"], "hunter2"),
            _ => assert_eq!(peer_out["data"], plain),
        }
    }
}

#[test]
fn every_single_byte_change_is_detected() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let (key, recipient) = age_keygen(d);
    std::fs::write(d.join("s.json"), PLAIN[1].2).expect("write");
    let enc = String::from_utf8(ok(&sealkit_env(
        d,
        &["sops", "encrypt", "--age", &recipient, "s.json"],
        None,
    )))
    .expect("utf8");
    let ids = AgeIdentities::parse(&std::fs::read_to_string(&key).expect("key")).expect("ids");
    let doc: Value = serde_json::from_str(&enc).expect("json");
    // Every ENC[…] string (values and the MAC): flip each byte of its data, iv and tag.
    let mut targets = Vec::new();
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s.starts_with("ENC[") => out.push(s.clone()),
            Value::Object(m) => m.values().for_each(|v| collect(v, out)),
            Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&doc, &mut targets);
    assert!(targets.len() >= 6, "values and MAC found");
    let mut flips = 0;
    for t in &targets {
        let env = sealkit_keys::sops::cipher::Envelope::parse(t).expect("parse");
        for field in 0..3 {
            let bytes = match field {
                0 => &env.data,
                1 => &env.iv,
                _ => &env.tag,
            };
            for i in 0..bytes.len() {
                let mut e = env.clone();
                let b = match field {
                    0 => &mut e.data,
                    1 => &mut e.iv,
                    _ => &mut e.tag,
                };
                b[i] ^= 0x01;
                let tampered = enc.replace(t.as_str(), &e.format());
                let file = EncryptedFile::load(&tampered, FileFormat::Json).expect("load");
                assert!(
                    file.decrypt(&ids, false).is_err(),
                    "flip {i} of field {field} in {t} went unnoticed"
                );
                flips += 1;
            }
        }
    }
    assert!(flips > 400, "{flips} flips checked");
}

#[test]
fn files_from_the_python_peer_and_age_cli_decrypt_in_sealkit() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let (key, recipient) = age_keygen(d);
    let data_key: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    // age CLI wraps the data key, armored, as sops stores it.
    let enc = String::from_utf8(ok(&run(
        Command::new("age").args(["-r", &recipient, "-a"]),
        &data_key,
    )))
    .expect("armor");
    let age_json = serde_json::json!([{ "recipient": recipient, "enc": enc }]).to_string();
    let plain = r#"{"db": {"password": "from python", "port": 6543, "tls": true, "ratio": 0.5}, "list": ["x", "y"], "note_unencrypted": "clear"}"#;
    let file = ok(&sops_peer(
        &["encrypt", &hex(&data_key), &age_json],
        plain.as_bytes(),
    ));
    std::fs::write(d.join("peer.json"), &file).expect("write");
    let out = ok(&sealkit_env(
        d,
        &["sops", "decrypt", "peer.json"],
        Some(&key),
    ));
    let got: Value = serde_json::from_slice(&out).expect("json");
    let want: Value = serde_json::from_str(plain).expect("json");
    assert_eq!(got, want);
}

#[test]
fn wrong_identity_lists_recipients_and_identities() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let (_, recipient) = age_keygen(d);
    std::fs::write(d.join("s.yaml"), "a: b\n").expect("write");
    let enc = ok(&sealkit_env(
        d,
        &["sops", "encrypt", "--age", &recipient, "s.yaml"],
        None,
    ));
    std::fs::write(d.join("s.enc.yaml"), &enc).expect("write");
    let other = tempfile::tempdir().expect("tmp");
    let (other_key, other_recipient) = age_keygen(other.path());
    let out = sealkit_env(d, &["sops", "decrypt", "s.enc.yaml"], Some(&other_key));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&recipient)
            && err.contains(&other_recipient)
            && err.contains("SOPS_AGE_KEY_FILE"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn ssh_ed25519_recipients_interoperate_with_the_age_cli() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let id = d.join("id");
    ok(&run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
            .arg(&id),
        b"",
    ));
    let pubkey = std::fs::read_to_string(d.join("id.pub")).expect("pub");
    let pubkey = pubkey.trim();
    let id_path = id.display().to_string();

    // sealkit wraps for the SSH key; the age CLI unwraps with the private key.
    std::fs::write(d.join("s.yaml"), "password: hunter2\n").expect("write");
    let enc = String::from_utf8(ok(&sealkit_env(
        d,
        &["sops", "encrypt", "--age", pubkey, "s.yaml"],
        None,
    )))
    .expect("utf8");
    let envs = envelopes(&enc, FileFormat::Yaml);
    let data_key = ok(&run(
        Command::new("age").args(["-d", "-i", &id_path]),
        envs[0].as_bytes(),
    ));
    assert_eq!(data_key.len(), 32);
    std::fs::write(d.join("s.enc.yaml"), &enc).expect("write");
    let mut cmd = Command::new(sealkit_bin());
    cmd.args(["sops", "decrypt", "s.enc.yaml"])
        .current_dir(d)
        .env("SOPS_AGE_SSH_PRIVATE_KEY_FILE", &id_path)
        .env_remove("SOPS_AGE_KEY_FILE")
        .env("XDG_CONFIG_HOME", d.join("none"));
    assert_eq!(ok(&run(&mut cmd, b"")), b"password: hunter2\n");

    // The age CLI wraps for the SSH key; sealkit unwraps.
    let key: Vec<u8> = (0..32u8).collect();
    let armored = String::from_utf8(ok(&run(
        Command::new("age").args(["-a", "-R"]).arg(d.join("id.pub")),
        &key,
    )))
    .expect("armor");
    let age_json = serde_json::json!([{ "recipient": pubkey, "enc": armored }]).to_string();
    let file = ok(&sops_peer(
        &["encrypt", &hex(&key), &age_json],
        br#"{"token": "via ssh"}"#,
    ));
    std::fs::write(d.join("peer.json"), &file).expect("write");
    let mut cmd = Command::new(sealkit_bin());
    cmd.args(["sops", "decrypt", "peer.json"])
        .current_dir(d)
        .env("SOPS_AGE_SSH_PRIVATE_KEY_FILE", &id_path)
        .env_remove("SOPS_AGE_KEY_FILE")
        .env("XDG_CONFIG_HOME", d.join("none"));
    let v: Value = serde_json::from_slice(&ok(&run(&mut cmd, b""))).expect("json");
    assert_eq!(v["token"], "via ssh");
}
