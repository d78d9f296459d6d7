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
