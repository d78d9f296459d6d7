//! Interop with an implementation we did not write: values sealed by `sealkit seal` open with
//! the Python/OpenSSL peer, and values sealed by the peer open with `sealkit`, for every scope
//! and for text, binary, empty and 200 KiB values; single flipped bytes fail on both sides.
//! Keys and certificates come from the `openssl` CLI.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sealkit_keys::seal::{Keyring, Scope, manifest};
use sealkit_keys::secret::ExposeSecret;
use sealkit_tests::{ok, python_peer, sealkit, shared_key};
use serde_json::{Value, json};

fn values() -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    m.insert("text".into(), b"correct horse battery staple".to_vec());
    m.insert(
        "binary".into(),
        (0..=255u8).rev().cycle().take(1024).collect(),
    );
    m.insert("empty".into(), Vec::new());
    m.insert(
        "large".into(),
        (0..200 * 1024).map(|i| (i * 7 % 251) as u8).collect(),
    );
    m
}

fn secret_for(scope: Scope) -> Value {
    let data: serde_json::Map<String, Value> = values()
        .into_iter()
        .map(|(k, v)| (k, Value::String(B64.encode(v))))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": format!("interop-{scope}"), "namespace": "team-a"},
        "type": "Opaque",
        "data": data,
    })
}

#[test]
fn sealkit_sealed_values_open_in_python() {
    let k = shared_key();
    let cwd = k.dir.path();
    for scope in Scope::ALL {
        let input = serde_json::to_vec(&secret_for(scope)).expect("json");
        let cert = k.cert().display().to_string();
        let sealed = ok(&sealkit(
            cwd,
            &["seal", "--cert", &cert, "--scope", scope.as_str()],
            &input,
        ));
        let key = k.key().display().to_string();
        let opened = ok(&python_peer(&["open-doc", &key], &sealed));
        let opened: BTreeMap<String, String> = serde_json::from_slice(&opened).expect("peer json");
        for (name, want) in values() {
            let got = B64.decode(&opened[&name]).expect("b64");
            assert_eq!(got, want, "scope {scope}, value {name}");
        }
    }
}

#[test]
fn python_sealed_values_open_in_sealkit() {
    let k = shared_key();
    let cwd = k.dir.path();
    let items: serde_json::Map<String, Value> = values()
        .into_iter()
        .map(|(k, v)| (k, Value::String(B64.encode(v))))
        .collect();
    for scope in Scope::ALL {
        let req =
            json!({"name": "py", "namespace": "team-b", "scope": scope.as_str(), "items": items});
        let cert = k.cert().display().to_string();
        let sealed = ok(&python_peer(
            &["seal-doc", &cert],
            &serde_json::to_vec(&req).expect("json"),
        ));
        let key = k.key().display().to_string();
        let secret = ok(&sealkit(
            cwd,
            &["seal", "--recovery-unseal", "--recovery-private-key", &key],
            &sealed,
        ));
        let secret: Value = serde_json::from_slice(&secret).expect("secret json");
        for (name, want) in values() {
            let got = B64
                .decode(secret["data"][&name].as_str().expect("value"))
                .expect("b64");
            assert_eq!(got, want, "scope {scope}, value {name}");
        }
        assert_eq!(secret["metadata"]["namespace"], "team-b");
    }
}

#[test]
fn flipped_bytes_fail_on_both_sides() {
    let k = shared_key();
    let cwd = k.dir.path();
    // Ours, checked by the peer.
    let cert = k.cert().display().to_string();
    let raw = ok(&sealkit(
        cwd,
        &[
            "seal",
            "--cert",
            &cert,
            "--raw",
            "-n",
            "ns",
            "--name",
            "n",
            "--from-file",
            "/dev/stdin",
        ],
        b"flip me",
    ));
    let key = k.key().display().to_string();
    let out = ok(&python_peer(&["flip-check", &key, "ns/n"], &raw));
    assert!(String::from_utf8_lossy(&out).starts_with("ok:"));

    // The peer's, checked by us (library, to avoid a process per byte).
    let req = json!({"name": "n", "namespace": "ns", "items": {"v": B64.encode(b"flip me too")}});
    let sealed = ok(&python_peer(
        &["seal-doc", &cert],
        &serde_json::to_vec(&req).expect("json"),
    ));
    let doc: Value = serde_json::from_slice(&sealed).expect("json");
    let blob = B64
        .decode(doc["spec"]["encryptedData"]["v"].as_str().expect("v"))
        .expect("b64");
    let pem = std::fs::read(k.key()).expect("key");
    let mut ring = Keyring::new();
    for key in manifest::load_private_keys(&pem).expect("load") {
        ring.add(key);
    }
    let label = Scope::Strict.label("ns", "n");
    assert_eq!(
        ring.open(&label, &blob)
            .expect("original opens")
            .plaintext
            .expose_secret(),
        b"flip me too"
    );
    for i in 0..blob.len() {
        let mut t = blob.clone();
        t[i] ^= 0x01;
        assert!(
            ring.open(&label, &t).is_err(),
            "flipped byte {i} still opened"
        );
    }
}

#[test]
fn raw_mode_matches_document_mode_labels() {
    // --raw output for each scope opens in the peer under the label the peer derives.
    let k = shared_key();
    let cwd = k.dir.path();
    let cert = k.cert().display().to_string();
    let key = k.key().display().to_string();
    for (scope, label) in [
        (Scope::Strict, "ns/n"),
        (Scope::NamespaceWide, "ns"),
        (Scope::ClusterWide, ""),
    ] {
        let raw = ok(&sealkit(
            cwd,
            &[
                "seal",
                "--cert",
                &cert,
                "--raw",
                "--scope",
                scope.as_str(),
                "-n",
                "ns",
                "--name",
                "n",
            ],
            b"v",
        ));
        assert!(!raw.ends_with(b"\n"), "kubeseal --raw prints no newline");
        let out = ok(&python_peer(&["flip-check", &key, label], &raw));
        assert!(
            String::from_utf8_lossy(&out).starts_with("ok:"),
            "scope {scope}"
        );
    }
}

#[test]
fn fingerprint_matches_ssh_keygen() {
    let k = shared_key();
    let cert = std::fs::read(k.cert()).expect("cert");
    let pk = sealkit_keys::seal::PublicKey::from_certificate_pem(&cert).expect("cert");
    // openssl → PKCS#8 public key → ssh-keygen fingerprint.
    let pubkey = ok(&sealkit_tests::run(
        std::process::Command::new("openssl")
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(k.cert()),
        b"",
    ));
    let pub_path = k.dir.path().join("pub.pem");
    std::fs::write(&pub_path, pubkey).expect("write");
    let ssh = ok(&sealkit_tests::run(
        std::process::Command::new("ssh-keygen")
            .args(["-i", "-m", "PKCS8", "-f"])
            .arg(&pub_path),
        b"",
    ));
    let ssh_path = k.dir.path().join("key.pub");
    std::fs::write(&ssh_path, ssh).expect("write");
    let fp = ok(&sealkit_tests::run(
        std::process::Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&ssh_path),
        b"",
    ));
    let fp = String::from_utf8_lossy(&fp);
    assert!(
        fp.contains(pk.fingerprint().as_str()),
        "ssh-keygen says {fp}, we say {}",
        pk.fingerprint()
    );
}
