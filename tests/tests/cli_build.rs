//! `sealkit build` on the example GitOps repository and on bad input, through the binary.

use std::process::Command;

use sealkit_tests::{ok, run, sealkit_bin, workspace};

fn build(args: &[&str], key: bool) -> std::process::Output {
    let mut cmd = Command::new(sealkit_bin());
    cmd.arg("build").args(args).current_dir(workspace());
    // Only the identities this test gives.
    for v in [
        "SOPS_AGE_KEY",
        "SOPS_AGE_KEY_FILE",
        "SOPS_AGE_KEY_CMD",
        "SOPS_AGE_SSH_PRIVATE_KEY_FILE",
    ] {
        cmd.env_remove(v);
    }
    cmd.env("HOME", workspace().join("target/no-home"))
        .env("XDG_CONFIG_HOME", workspace().join("target/no-home"));
    if key {
        cmd.env(
            "SOPS_AGE_KEY_FILE",
            workspace().join("examples/gitops/keys/example.agekey"),
        );
    }
    run(&mut cmd, b"")
}

#[test]
fn example_overlay_renders_with_masked_secrets() {
    let out = ok(&build(&["examples/gitops/apps/overlays/production"], true));
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("kind: Deployment") && text.contains("replicas: 3"),
        "{text}"
    );
    assert!(
        text.contains("DB_PASSWORD: \"<masked: 37 bytes>\""),
        "{text}"
    );
    assert!(
        !text.contains("example-production-password"),
        "values are masked"
    );
    assert!(text.contains("kind: SealedSecret"));
    assert!(!text.contains("ENC["), "nothing encrypted is left");

    let shown = ok(&build(
        &[
            "--show-secrets",
            "-o",
            "json",
            "examples/gitops/apps/overlays/production",
        ],
        true,
    ));
    let list: serde_json::Value = serde_json::from_slice(&shown).expect("json");
    let secret = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|o| o["kind"] == "Secret")
        .expect("secret");
    assert_eq!(
        secret["stringData"]["DB_PASSWORD"],
        "example-production-password-change-me"
    );
    assert_eq!(secret["metadata"]["namespace"], "podinfo-production");
}

#[test]
fn missing_keys_bad_paths_and_bad_files_fail_clearly() {
    let out = build(&["examples/gitops/apps/overlays/staging"], false);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("db-credentials") && err.contains("SOPS_AGE_KEY_FILE"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "no partial output");

    let out = build(&["examples/gitops/does-not-exist"], true);
    assert_eq!(out.status.code(), Some(3));

    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("good.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
    )
    .expect("w");
    std::fs::write(
        dir.path().join("zz.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [\n",
    )
    .expect("w");
    let out = build(&[dir.path().to_str().expect("utf8")], false);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("zz.yaml") && err.contains("line"), "{err}");
    assert!(out.stdout.is_empty());
}

/// Encrypts `file` (in `dir`) for the example key, the leaves whose keys match `regex`.
fn sops_encrypt(dir: &std::path::Path, file: &str, regex: &str) {
    let key = workspace().join("examples/gitops/keys/example.agekey");
    let recipient = std::fs::read_to_string(&key)
        .expect("key")
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_string))
        .expect("recipient");
    let out = run(
        Command::new(sealkit_bin())
            .args([
                "sops",
                "encrypt",
                "--age",
                &recipient,
                "--encrypted-regex",
                regex,
                "-i",
                file,
            ])
            .current_dir(dir),
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Not only v1 Secret data: every value that came out of a SOPS decryption is masked (a
/// ConfigMap, a custom resource, a label), and shown with --show-secrets.
#[test]
fn every_value_sops_decrypted_is_masked() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    std::fs::write(
        d.join("cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  labels:\n    tier: label-secret-value\ndata:\n  token: cm-secret-value-1\n  port: \"8080\"\n",
    )
    .expect("w");
    sops_encrypt(d, "cm.yaml", "^(token|tier)$");
    std::fs::write(
        d.join("db.yaml"),
        "apiVersion: example.com/v1\nkind: Database\nmetadata:\n  name: db\nspec:\n  size: 3\n  password: cr-secret-value-2\n  pin: 4242\n",
    )
    .expect("w");
    sops_encrypt(d, "db.yaml", "^(password|pin)$");
    let path = d.to_str().expect("utf8");
    let out = ok(&build(&[path], true));
    let text = String::from_utf8_lossy(&out);
    for secret in [
        "cm-secret-value-1",
        "cr-secret-value-2",
        "label-secret-value",
        "4242",
    ] {
        assert!(!text.contains(secret), "{secret} shown: {text}");
    }
    assert!(text.contains("token: \"<masked: 17 bytes>\""), "{text}");
    assert!(text.contains("password: \"<masked: 17 bytes>\""), "{text}");
    assert!(
        text.contains("port: \"8080\"") && text.contains("size: 3"),
        "values that were not encrypted are shown: {text}"
    );
    let shown = ok(&build(&["--show-secrets", path], true));
    let shown = String::from_utf8_lossy(&shown);
    for secret in [
        "cm-secret-value-1",
        "cr-secret-value-2",
        "label-secret-value",
        "4242",
    ] {
        assert!(shown.contains(secret), "{secret}: {shown}");
    }
}
