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

/// A source root inside `base/x/y`, so that `../../..` from `app/` leaves it, with
/// `base/outside/` beside it holding a manifest, a SOPS file and a kustomization.
struct Escape {
    base: tempfile::TempDir,
}

impl Escape {
    fn new() -> Escape {
        let base = tempfile::tempdir().expect("tmp");
        let b = base.path();
        write(b, "outside/cm.yaml", &CM.replace("NAME", "outside"));
        write(b, "outside/kustomization.yaml", "resources: [cm.yaml]\n");
        std::fs::copy(
            example().join("apps/overlays/staging/db-credentials.sops.yaml"),
            b.join("outside/secret.yaml"),
        )
        .expect("copy");
        write(b, "x/y/app/ok.yaml", &CM.replace("NAME", "ok"));
        Escape { base }
    }
    fn root(&self) -> PathBuf {
        self.base.path().join("x/y")
    }
    fn outside(&self, rel: &str) -> PathBuf {
        self.base.path().join("outside").join(rel)
    }
}

fn link(target: impl AsRef<Path>, at: &Path) {
    std::os::unix::fs::symlink(target, at).expect("symlink");
}

/// A symlink in the checkout never makes us read outside it: not for a plain-directory walk,
/// not for `.sourceignore`, not for a SOPS file, not for `spec.path` itself.
#[test]
fn symlinks_never_leave_the_source() {
    // (link name, its target: a file of `outside/`, or the path as given)
    let cases = [
        ("leak.yaml", "cm.yaml"),
        ("passwd.yaml", "/etc/passwd"),
        ("up", "../../.."),
        ("secret.yaml", "secret.yaml"),
    ];
    for (name, target) in cases {
        let e = Escape::new();
        let root = e.root();
        let target = match target {
            "cm.yaml" | "secret.yaml" => e.outside(target),
            other => PathBuf::from(other),
        };
        link(target, &root.join("app").join(name));
        let err = render(&root, &root.join("app"), &with_key())
            .expect_err(name)
            .to_string();
        assert!(
            err.contains(&format!("app/{name}")) && err.contains("leads outside the source"),
            "{name}: {err}"
        );
        assert!(
            !err.contains("root:"),
            "nothing of /etc/passwd is quoted: {err}"
        );
    }

    // .sourceignore read through a link out of the source.
    let e = Escape::new();
    let root = e.root();
    std::fs::write(e.outside("ignore"), "ok.yaml\n").expect("w");
    link(e.outside("ignore"), &root.join(".sourceignore"));
    let err = render(&root, &root.join("app"), &Options::default())
        .expect_err(".sourceignore")
        .to_string();
    assert!(
        err.contains(".sourceignore") && err.contains("leads outside the source"),
        "{err}"
    );

    // The path to render is itself a link out.
    let e = Escape::new();
    let root = e.root();
    link(e.outside(""), &root.join("elsewhere"));
    let err = render(&root, &root.join("elsewhere"), &Options::default())
        .expect_err("spec.path")
        .to_string();
    assert!(err.contains("leads outside the source"), "{err}");

    // A link that stays inside is followed.
    let e = Escape::new();
    let root = e.root();
    write(&root, "shared/cm.yaml", &CM.replace("NAME", "shared"));
    link("../shared/cm.yaml", &root.join("app/shared.yaml"));
    let objs = render(&root, &root.join("app"), &Options::default()).expect("inside");
    assert_eq!(objs.len(), 2);
}

#[test]
fn symlink_loops_are_refused() {
    let e = Escape::new();
    let root = e.root();
    link("b.yaml", &root.join("app/a.yaml"));
    link("a.yaml", &root.join("app/b.yaml"));
    let err = render(&root, &root.join("app"), &Options::default())
        .expect_err("file loop")
        .to_string();
    assert!(err.contains("app/a.yaml") && err.contains("loop"), "{err}");

    let e = Escape::new();
    let root = e.root();
    link(".", &root.join("app/self"));
    let err = render(&root, &root.join("app"), &Options::default())
        .expect_err("directory cycle")
        .to_string();
    assert!(err.contains("app/self") && err.contains("loop"), "{err}");
}

/// kustomize follows symlinks and `../` itself, so the tree is checked before it runs.
#[test]
fn kustomize_never_reaches_outside_the_source() {
    let e = Escape::new();
    let root = e.root();
    write(&root, "k/kustomization.yaml", "resources: [base]\n");
    link(e.outside(""), &root.join("k/base"));
    let err = render(&root, &root.join("k"), &Options::default())
        .expect_err("linked base")
        .to_string();
    assert!(
        err.contains("k/base") && err.contains("leads outside the source"),
        "{err}"
    );
    // A link anywhere in the checkout counts: kustomize may reach it through `../`.
    let e = Escape::new();
    let root = e.root();
    write(
        &root,
        "k/kustomization.yaml",
        "resources: [../app/ok.yaml]\n",
    );
    link("/etc", &root.join("app/etc"));
    let err = render(&root, &root.join("k"), &Options::default())
        .expect_err("a link elsewhere")
        .to_string();
    assert!(err.contains("app/etc"), "{err}");

    for entry in ["../../../outside", "/etc"] {
        let e = Escape::new();
        let root = e.root();
        write(
            &root,
            "k/kustomization.yaml",
            &format!("resources: [\"{entry}\"]\n"),
        );
        let err = render(&root, &root.join("k"), &Options::default())
            .expect_err(entry)
            .to_string();
        assert!(
            err.contains("k/kustomization.yaml")
                && err.contains("resources")
                && err.contains("leaves the source"),
            "{entry}: {err}"
        );
    }
}

/// A remote base (or a patch by URL) makes kustomize reach out; refused unless allowed, and
/// refused before anything connects.
#[test]
fn remote_bases_are_refused_before_kustomize_runs() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    for (field, kz) in [
        (
            "resources",
            format!("resources:\n  - https://127.0.0.1:{port}/org/repo//app?ref=main\n"),
        ),
        (
            "patches",
            format!(
                "resources: [cm.yaml]\npatches:\n  - path: https://127.0.0.1:{port}/patch.yaml\n"
            ),
        ),
        (
            "resources",
            "resources:\n  - github.com/org/repo/app\n".to_string(),
        ),
    ] {
        let dir = tempfile::tempdir().expect("tmp");
        let r = dir.path();
        write(r, "k/kustomization.yaml", &kz);
        write(r, "k/cm.yaml", &CM.replace("NAME", "k"));
        let err = render(r, &r.join("k"), &Options::default())
            .expect_err(field)
            .to_string();
        assert!(
            err.contains("k/kustomization.yaml")
                && err.contains(field)
                && err.contains("remote")
                && err.contains("--allow-remote-bases"),
            "{field}: {err}"
        );
        assert!(
            listener.accept().is_err(),
            "{field}: nothing connected to the remote"
        );
    }
}

/// A kustomize that hangs is stopped at the timeout, with everything it started.
#[test]
fn a_slow_kustomize_is_killed_with_its_process_group() {
    let dir = tempfile::tempdir().expect("tmp");
    let r = dir.path();
    write(r, "k/kustomization.yaml", "resources: []\n");
    let pid_file = r.join("child.pid");
    let script = r.join("slow-kustomize");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nsleep 30 &\necho $! > '{}'\nsleep 30\n",
            pid_file.display()
        ),
    )
    .expect("script");
    let mut perms = std::fs::metadata(&script).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).expect("chmod");
    let opts = Options {
        kustomize: vec![script.display().to_string()],
        kustomize_timeout: std::time::Duration::from_secs(1),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let err = render(r, &r.join("k"), &opts)
        .expect_err("timed out")
        .to_string();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.contains("kustomize k") && err.contains("timed out after 1s"),
        "{err}"
    );
    let pid = std::fs::read_to_string(&pid_file).expect("pid");
    let proc = PathBuf::from(format!("/proc/{}", pid.trim()));
    // Killed with the group (a zombie until reaped by init counts as gone: state Z).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        // Gone from /proc (reaped) or a zombie: dead. Only a readable, non-zombie state is alive.
        let alive = std::fs::read_to_string(proc.join("stat")).is_ok_and(|state| {
            state
                .rsplit(')')
                .next()
                .is_some_and(|s| !s.trim_start().starts_with('Z'))
        });
        if !alive {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the kustomize's child survived the timeout"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Every decrypted leaf is recorded by its JSON pointer, whatever the kind, and masking covers
/// them (and v1 Secret data as before), the same pointers masking a live object.
#[test]
fn decrypted_leaves_are_recorded_and_masked_wherever_they_are() {
    let root = example();
    let objs = render(&root, &root.join("apps/overlays/staging"), &with_key()).expect("render");
    let secret = objs
        .iter()
        .find(|o| o.value["kind"] == "Secret")
        .expect("secret");
    let mut paths = secret.decrypted_paths.clone();
    paths.sort();
    assert_eq!(paths, ["/stringData/DB_PASSWORD", "/stringData/DB_USER"]);
    assert!(
        objs.iter()
            .filter(|o| o.value["kind"] != "Secret")
            .all(|o| o.decrypted_paths.is_empty())
    );

    let mut cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "labels": {"a/b": "label-value"}},
        "data": {"token": "cm-value", "plain": "shown"}, "spec": {"pin": 4242}});
    let paths = [
        "/data/token".to_string(),
        "/metadata/labels/a~1b".to_string(),
        "/spec/pin".to_string(),
        "/data/absent".to_string(),
    ];
    let mut live = cm.clone();
    live["data"]["token"] = "old-value".into();
    mask::mask_object(&mut cm, &paths, Some(b"key"));
    mask::mask_object(&mut live, &paths, Some(b"key"));
    let text = cm.to_string();
    for v in ["cm-value", "label-value", "4242"] {
        assert!(!text.contains(v), "{text}");
    }
    assert_eq!(cm["data"]["plain"], "shown");
    assert!(
        cm["spec"]["pin"]
            .as_str()
            .is_some_and(|s| s.starts_with("<masked: 4 bytes"))
    );
    assert_ne!(
        cm["data"]["token"], live["data"]["token"],
        "a change still shows"
    );
    assert_eq!(cm["metadata"]["labels"], live["metadata"]["labels"]);
    assert!(cm["data"].get("absent").is_none());
}

/// The API server quotes invalid values; kube prints its Status with `{:?}` (quotes escaped).
/// Every form is redacted, and whatever follows "Invalid value:" too.
#[test]
fn redaction_covers_every_form_an_api_error_quotes() {
    let obj = serde_json::json!({"metadata": {"labels": {"tier": "not a valid label: hush-value"}},
        "stringData": {"password": "pa\"ss\nword-1"}, "data": {"n": 12345}});
    let mut r = redact::Redactor::new();
    r.add(
        &obj,
        &[
            "/metadata/labels/tier".into(),
            "/stringData/password".into(),
            "/data/n".into(),
        ],
    );
    let api = "ConfigMap \"x\" is invalid: metadata.labels: Invalid value: \"not a valid label: hush-value\": a valid label must be...";
    let kube = format!(
        "ApiError: {api}: Invalid (Status {{ message: {api:?}, causes: [StatusCause {{ message: \"Invalid value: \\\"not a valid label: hush-value\\\": a valid label\" }}] }})"
    );
    let webhook =
        "denied: password \"pa\\\"ss\\nword-1\" (base64 cGEic3MKd29yZC0x) is weak; pin 12345";
    for text in [api.to_string(), kube, webhook.to_string()] {
        let out = r.redact(&text);
        for v in [
            "hush-value",
            "pa\\\"ss",
            "word-1",
            "cGEic3MKd29yZC0x",
            "12345",
        ] {
            assert!(!out.contains(v), "{v}: {out}");
        }
        assert!(out.contains(redact::REDACTED), "{out}");
    }
    assert!(
        r.redact(api)
            .contains("metadata.labels: Invalid value: <redacted>: a valid label")
    );
    // No decrypted value: nothing to redact, the text stays as it is.
    assert_eq!(redact::Redactor::new().redact(api), api);
    // A very short value would show where its letters are if replaced: texts are withheld.
    let mut short = redact::Redactor::new();
    short.add(&serde_json::json!({"k": "ab"}), &["/k".into()]);
    assert_eq!(short.redact("no value here"), redact::WITHHELD);
    assert!(
        format!("{r:?}").starts_with("Redactor("),
        "no values in Debug"
    );
    assert!(!format!("{r:?}").contains("hush"));
}

/// Flux's default exclusions: a plain directory holding `.sops.yaml` (not a manifest) and CI
/// files renders, as it does in Flux.
#[test]
fn plain_directories_skip_flux_default_exclusions() {
    let dir = tempfile::tempdir().expect("tmp");
    let r = dir.path();
    write(r, "cm.yaml", &CM.replace("NAME", "only"));
    write(r, ".sops.yaml", "creation_rules:\n  - age: age1xyz\n");
    write(r, "prod/.sops.yaml", "creation_rules: []\n");
    write(r, ".github/workflows/ci.yaml", "on: push\njobs: {}\n");
    let objs = render(r, r, &Options::default()).expect("render");
    assert_eq!(objs.len(), 1);
    assert_eq!(objs[0].value["metadata"]["name"], "only");
}
