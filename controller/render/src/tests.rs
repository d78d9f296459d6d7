//! Rendering with the real `kubectl kustomize` and SOPS files made for the example age key.

use std::path::PathBuf;

use super::*;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/gitops")
}

fn example_key() -> AgeIdentities {
    let text = std::fs::read_to_string(example().join("keys/example.agekey")).expect("key");
    AgeIdentities::parse(&text).expect("identity")
}

fn with_key() -> Options {
    Options {
        identities: Some(example_key()),
        ..Default::default()
    }
}

fn find<'a>(objs: &'a [Object], kind: &str) -> &'a Value {
    &objs
        .iter()
        .find(|o| o.value["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
        .value
}

#[test]
fn overlays_render_with_kustomize_and_decrypt_after_the_build() {
    let root = example();
    for (env, replicas) in [("staging", 1), ("production", 3)] {
        let objs = render(
            &root,
            &root.join(format!("apps/overlays/{env}")),
            &with_key(),
        )
        .expect("render");
        let kinds: Vec<&str> = objs
            .iter()
            .filter_map(|o| o.value["kind"].as_str())
            .collect();
        for k in [
            "Namespace",
            "Secret",
            "Service",
            "Deployment",
            "SealedSecret",
        ] {
            assert!(kinds.contains(&k), "{env}: {kinds:?}");
        }
        assert_eq!(find(&objs, "Deployment")["spec"]["replicas"], replicas);
        let secret = find(&objs, "Secret");
        // kustomize set the namespace (not covered by the file's MAC check, which ran on the file).
        assert_eq!(secret["metadata"]["namespace"], format!("podinfo-{env}"));
        assert_eq!(
            secret["stringData"]["DB_PASSWORD"],
            format!("example-{env}-password-change-me")
        );
        assert!(secret.get("sops").is_none());
        assert!(!contains_enc(secret));
        // The SealedSecret is passed through for the unseal controller.
        assert!(find(&objs, "SealedSecret")["spec"]["encryptedData"]["token"].is_string());
    }
}

#[test]
fn encrypted_without_keys_or_tampered_is_refused() {
    let root = example();
    let err = render(
        &root,
        &root.join("apps/overlays/staging"),
        &Options::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("Secret podinfo-staging/db-credentials") && msg.contains("no age keys"),
        "{msg}"
    );

    // A copy of the repository with one ciphertext altered: the MAC check refuses it.
    let dir = tempfile::tempdir().expect("tmp");
    copy_dir(&root, dir.path());
    let f = dir
        .path()
        .join("apps/overlays/staging/db-credentials.sops.yaml");
    let text = std::fs::read_to_string(&f).expect("read");
    let line = text
        .lines()
        .find(|l| l.contains("DB_USER: ENC["))
        .expect("line")
        .to_string();
    let tampered = line.replacen("data:", "data:AA", 1);
    std::fs::write(&f, text.replace(&line, &tampered)).expect("write");
    let err = render(
        dir.path(),
        &dir.path().join("apps/overlays/staging"),
        &with_key(),
    )
    .unwrap_err();
    assert!(matches!(err, RenderError::Decrypt { .. }), "{err}");
    assert!(!err.to_string().contains("password-change-me"));
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).expect("dir").flatten() {
        let p = e.path();
        let t = to.join(e.file_name());
        if p.is_dir() {
            std::fs::create_dir_all(&t).expect("mkdir");
            copy_dir(&p, &t);
        } else {
            std::fs::copy(&p, &t).expect("copy");
        }
    }
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: NAME\ndata:\n  k: v\n";

#[test]
fn plain_directories_walk_in_order_and_honour_sourceignore() {
    let dir = tempfile::tempdir().expect("tmp");
    let r = dir.path();
    write(
        r,
        "b.yaml",
        &format!(
            "{}---\n{}",
            CM.replace("NAME", "b1"),
            CM.replace("NAME", "b2")
        ),
    );
    write(r, "a/a.yml", &CM.replace("NAME", "a"));
    write(r, "a/notes.txt", "not a manifest");
    write(
        r,
        "c.json",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}"#,
    );
    write(r, "ignored/x.yaml", &CM.replace("NAME", "ignored"));
    write(r, "scratch.tmp.yaml", &CM.replace("NAME", "tmp"));
    write(
        r,
        "k/kustomization.yaml",
        "resources: [cm.yaml]\nnamePrefix: kz-\n",
    );
    write(r, "k/cm.yaml", &CM.replace("NAME", "k"));
    write(r, ".sourceignore", "# comment\nignored/\n*.tmp.yaml\n");
    let names = |objs: Vec<Object>| -> Vec<String> {
        objs.iter()
            .map(|o| {
                o.value["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    let objs = render(r, r, &Options::default()).expect("render");
    assert_eq!(names(objs), ["a", "b1", "b2", "c", "kz-k"]);
    let origin = render(r, r, &Options::default()).expect("render")[2]
        .origin
        .clone();
    assert_eq!(origin, "b.yaml document 2");
}

#[test]
fn bad_input_names_the_file_document_and_field() {
    let dir = tempfile::tempdir().expect("tmp");
    let r = dir.path();
    write(r, "ok.yaml", &CM.replace("NAME", "ok"));
    write(
        r,
        "broken.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n",
    );
    let err = render(r, r, &Options::default()).unwrap_err().to_string();
    assert!(
        err.starts_with("broken.yaml:") && err.contains("line"),
        "{err}"
    );

    std::fs::remove_file(r.join("broken.yaml")).expect("rm");
    write(
        r,
        "nokind.yaml",
        &format!(
            "{}---\napiVersion: v1\nmetadata:\n  name: x\n",
            CM.replace("NAME", "first")
        ),
    );
    let err = render(r, r, &Options::default()).unwrap_err().to_string();
    assert_eq!(
        err,
        "nokind.yaml document 2: kind is missing or not a string"
    );

    std::fs::remove_file(r.join("nokind.yaml")).expect("rm");
    write(
        r,
        "enc.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  k: ENC[AES256_GCM,data:abc,iv:x,tag:y,type:str]\n",
    );
    let err = render(r, r, &Options::default()).unwrap_err().to_string();
    assert!(err.contains("never applied"), "{err}");

    std::fs::remove_file(r.join("enc.yaml")).expect("rm");
    write(r, "k/kustomization.yaml", "resources: [missing.yaml]\n");
    let err = render(r, r, &Options::default()).unwrap_err().to_string();
    assert!(
        err.starts_with("kustomize k:") && err.contains("missing.yaml"),
        "{err}"
    );
    assert!(
        render(r, &r.join("nope"), &Options::default())
            .unwrap_err()
            .to_string()
            .contains("nope")
    );
}

#[test]
fn masking_hides_values_and_keyed_hashes_change_with_them() {
    let mut s = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
        "data": {"a": "aHVudGVyMg=="}, "stringData": {"b": "hunter2"}});
    let mut t = s.clone();
    t["stringData"]["b"] = "hunter3".into();
    mask::mask_secret(&mut s, Some(b"key"));
    mask::mask_secret(&mut t, Some(b"key"));
    let text = s.to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("aHVudGVyMg=="),
        "{text}"
    );
    assert_eq!(
        s["data"]["a"], s["stringData"]["b"],
        "same bytes, same label"
    );
    assert_ne!(s["stringData"]["b"], t["stringData"]["b"]);
    let mut plain =
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "data": {"a": "aHVudGVyMg=="}});
    mask::mask_secret(&mut plain, None);
    assert_eq!(plain["data"]["a"], "<masked: 7 bytes>");
}
