//! `sealkit seal` / `reseal` / `keygen` as a user drives them: output shape, flags, and bad
//! input (clear message naming file, document and field; non-zero exit; no file written or
//! changed).

use std::fs;
use std::path::Path;
use std::process::Output;

use sealkit_tests::{OpensslKey, ok, other_key, python_peer, run, sealkit, shared_key};
use serde_json::Value;

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fails(o: &Output, code: i32, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit code; stderr:\n{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
    assert!(o.stdout.is_empty(), "stdout not empty on error");
}

const GOOD: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: prod\nstringData:\n  password: hunter2\n";

fn with_file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    fs::write(&p, text).expect("write");
    s(&p)
}

#[test]
fn bad_secrets_name_file_document_and_field() {
    let k = shared_key();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let cert = s(&k.cert());
    let cases: &[(&str, &[&str])] = &[
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: y}\ndata: {a: b}\n",
            &["document 1", "ConfigMap 'x'", "kind: expected a Secret"],
        ),
        (
            "kind: Secret\nmetadata: {name: x, namespace: y}\ndata: {password: 'not base64!'}\n",
            &["data.password", "invalid base64"],
        ),
        (
            "kind: Secret\nmetadata: {namespace: y}\nstringData: {a: b}\n",
            &["metadata.name", "--name"],
        ),
        (
            "kind: Secret\nmetadata: {name: x}\nstringData: {a: b}\n",
            &["metadata.namespace", "kubeconfig"],
        ),
        (
            "kind: Secret\nmetadata: {name: x, namespace: y}\n",
            &["--allow-empty-data"],
        ),
        (
            &format!(
                "{GOOD}---\nkind: Secret\nmetadata: {{name: two, namespace: y}}\ndata: {{a: '%%%'}}\n"
            ),
            &["document 2 at line 9", "Secret 'two'", "data.a"],
        ),
        (
            "kind: Secret\nmetadata: [oops\n",
            &["line 1", "invalid YAML"],
        ),
    ];
    for (i, (text, needles)) in cases.iter().enumerate() {
        let input = with_file(d, &format!("in{i}.yaml"), text);
        let out_path = d.join(format!("out{i}.yaml"));
        let o = sealkit(
            d,
            &["seal", "--cert", &cert, "-f", &input, "-w", &s(&out_path)],
            b"",
        );
        let mut want: Vec<&str> = vec![&input];
        want.extend_from_slice(needles);
        fails(&o, 1, &want);
        assert!(
            !out_path.exists(),
            "case {i}: output written despite the error"
        );
    }
}

#[test]
fn existing_output_is_untouched_on_error() {
    let k = shared_key();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let out = with_file(d, "sealed.json", "previous content\n");
    let bad = with_file(
        d,
        "bad.yaml",
        "kind: Secret\nmetadata: {name: x, namespace: y}\ndata: {a: '!'}\n",
    );
    let o = sealkit(
        d,
        &["seal", "--cert", &s(&k.cert()), "-f", &bad, "-w", &out],
        b"",
    );
    fails(&o, 1, &["data.a"]);
    assert_eq!(
        fs::read_to_string(&out).expect("read"),
        "previous content\n"
    );
}

#[test]
fn output_equal_to_input_is_refused() {
    let k = shared_key();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let input = with_file(d, "s.yaml", GOOD);
    let o = sealkit(
        d,
        &[
            "seal",
            "--cert",
            &s(&k.cert()),
            "-f",
            &input,
            "-w",
            &format!("{}/./s.yaml", s(d)),
        ],
        b"",
    );
    fails(&o, 2, &["is the input file"]);
    assert_eq!(fs::read_to_string(&input).expect("read"), GOOD);
}

#[test]
fn bad_certificates() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let missing = s(&d.join("missing.pem"));
    fails(
        &sealkit(d, &["seal", "--cert", &missing], GOOD.as_bytes()),
        3,
        &["missing.pem"],
    );
    let garbage = with_file(d, "garbage.pem", "hello\n");
    fails(
        &sealkit(d, &["seal", "--cert", &garbage], GOOD.as_bytes()),
        1,
        &["garbage.pem", "no PEM certificate"],
    );

    // Expired (made by the Python peer, with OpenSSL's key).
    let k = other_key();
    let expired = s(&d.join("expired.pem"));
    ok(&python_peer(
        &["make-cert", &s(&k.key()), &expired, "--expired"],
        b"",
    ));
    fails(
        &sealkit(d, &["seal", "--cert", &expired], GOOD.as_bytes()),
        1,
        &["expired.pem", "expired on"],
    );

    // Not RSA (an EC certificate from openssl).
    let ec = d.join("ec.pem");
    ok(&run(
        std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                "/CN=ec",
                "-days",
                "1",
                "-keyout",
            ])
            .arg(d.join("ec.key"))
            .arg("-out")
            .arg(&ec),
        b"",
    ));
    fails(
        &sealkit(d, &["seal", "--cert", &s(&ec)], GOOD.as_bytes()),
        1,
        &["expected an RSA key"],
    );
    // No certificate at all.
    fails(
        &sealkit(d, &["seal"], GOOD.as_bytes()),
        2,
        &["no kubeconfig found", "--cert"],
    );
}

fn seal_good(d: &Path, k: &OpensslKey, extra: &[&str]) -> Vec<u8> {
    let cert = s(&k.cert());
    let mut args = vec!["seal", "--cert", cert.as_str()];
    args.extend_from_slice(extra);
    ok(&sealkit(d, &args, GOOD.as_bytes()))
}

#[test]
fn recovery_errors_explain_themselves() {
    let k = shared_key();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let sealed = seal_good(d, k, &[]);
    let right = s(&k.key());
    let wrong = s(&other_key().key());

    let o = sealkit(
        d,
        &[
            "seal",
            "--recovery-unseal",
            "--recovery-private-key",
            &wrong,
        ],
        &sealed,
    );
    fails(
        &o,
        1,
        &["encryptedData.password", "not among the 1 private key(s)"],
    );

    let mut doc: Value = serde_json::from_slice(&sealed).expect("json");
    doc["metadata"]["namespace"] = "staging".into();
    let o = sealkit(
        d,
        &[
            "seal",
            "--recovery-unseal",
            "--recovery-private-key",
            &right,
        ],
        &serde_json::to_vec(&doc).expect("json"),
    );
    fails(&o, 1, &["strict scope for 'prod/db'", "'staging/db'"]);

    let mut doc: Value = serde_json::from_slice(&sealed).expect("json");
    let v = doc["spec"]["encryptedData"]["password"]
        .as_str()
        .expect("v")
        .to_string();
    doc["spec"]["encryptedData"]["password"] = v[..400].to_string().into();
    let o = sealkit(
        d,
        &[
            "seal",
            "--recovery-unseal",
            "--recovery-private-key",
            &right,
        ],
        &serde_json::to_vec(&doc).expect("json"),
    );
    fails(&o, 1, &["truncated"]);

    let mut doc: Value = serde_json::from_slice(&sealed).expect("json");
    let mut chars: Vec<char> = v.chars().collect();
    let i = chars.len() - 10;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    doc["spec"]["encryptedData"]["password"] = chars.into_iter().collect::<String>().into();
    let o = sealkit(
        d,
        &[
            "seal",
            "--recovery-unseal",
            "--recovery-private-key",
            &right,
        ],
        &serde_json::to_vec(&doc).expect("json"),
    );
    fails(&o, 1, &["altered"]);

    let o = sealkit(
        d,
        &[
            "seal",
            "--recovery-unseal",
            "--recovery-private-key",
            &s(&k.cert()),
        ],
        &sealed,
    );
    fails(&o, 1, &["tls.crt", "no private key found"]);

    let o = sealkit(
        d,
        &[
            "seal",
            "--recovery-unseal",
            "--recovery-private-key",
            &right,
        ],
        &sealed,
    );
    let secret: Value = serde_json::from_slice(&ok(&o)).expect("json");
    assert_eq!(secret["data"]["password"], "aHVudGVyMg==");
}

#[test]
fn output_formats_and_kubeseal_layout() {
    let k = shared_key();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let json = String::from_utf8(seal_good(d, k, &[])).expect("utf8");
    assert!(json.starts_with("{\n  \"kind\": \"SealedSecret\",\n  \"apiVersion\": \"bitnami.com/v1alpha1\",\n  \"metadata\": {\n    \"name\": \"db\",\n    \"namespace\": \"prod\",\n    \"creationTimestamp\": null\n  },\n  \"spec\": {\n    \"template\": {"), "{json}");
    assert!(json.ends_with("}\n"));
    let v: Value = serde_json::from_str(&json).expect("json");
    assert!(
        v["spec"]["encryptedData"]["password"]
            .as_str()
            .expect("v")
            .starts_with("Ag"),
        "4096-bit prefix 0x0200"
    );

    let out = d.join("sealed.yaml");
    ok(&sealkit(
        d,
        &["seal", "--cert", &s(&k.cert()), "-w", &s(&out)],
        GOOD.as_bytes(),
    ));
    let yaml = fs::read_to_string(&out).expect("read");
    assert!(yaml.starts_with("---\napiVersion: bitnami.com/v1alpha1\nkind: SealedSecret\nmetadata:\n  creationTimestamp: null\n  name: db\n"), "{yaml}");

    // Multi-document JSON in, two documents out.
    let two = "{\"kind\":\"Secret\",\"metadata\":{\"name\":\"a\",\"namespace\":\"n\"},\"stringData\":{\"x\":\"1\"}}{\"kind\":\"Secret\",\"metadata\":{\"name\":\"b\",\"namespace\":\"n\"},\"stringData\":{\"x\":\"2\"}}";
    let out = String::from_utf8(ok(&sealkit(
        d,
        &["seal", "--cert", &s(&k.cert()), "-o", "yaml"],
        two.as_bytes(),
    )))
    .expect("utf8");
    assert_eq!(out.matches("---\n").count(), 2);
    assert!(out.contains("name: a") && out.contains("name: b"));
}

#[test]
fn namespace_comes_from_kubeconfig_and_env_vars_work() {
    let k = shared_key();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let kubeconfig = with_file(
        d,
        "kubeconfig",
        "current-context: c\ncontexts:\n- name: c\n  context: {cluster: x, namespace: from-ctx}\n",
    );
    let o = run(
        std::process::Command::new(sealkit_tests::sealkit_bin())
            .arg("seal")
            .env("KUBECONFIG", &kubeconfig)
            .env("SEALED_SECRETS_CERT", k.cert())
            .env("SEALED_SECRETS_FORMAT", "yaml"),
        b"kind: Secret\nmetadata: {name: x}\nstringData: {a: b}\n",
    );
    let out = String::from_utf8(ok(&o)).expect("utf8");
    assert!(out.contains("namespace: from-ctx"), "{out}");
}

#[test]
fn merge_into_updates_in_place() {
    let k = shared_key();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let target = d.join("sealed.yaml");
    ok(&sealkit(
        d,
        &[
            "seal",
            "--cert",
            &s(&k.cert()),
            "--scope",
            "namespace-wide",
            "-w",
            &s(&target),
        ],
        GOOD.as_bytes(),
    ));
    let before = fs::read_to_string(&target).expect("read");
    // A Secret with another name and no namespace: the target's identity and scope win.
    let update = "kind: Secret\nmetadata: {name: other}\nstringData: {api-key: k3y}\n";
    ok(&sealkit(
        d,
        &["seal", "--cert", &s(&k.cert()), "--merge-into", &s(&target)],
        update.as_bytes(),
    ));
    let after = fs::read_to_string(&target).expect("read");
    assert!(after.starts_with("---\n"), "kept YAML: {after}");
    let old_pw = before
        .lines()
        .find(|l| l.contains("password:"))
        .expect("pw line");
    assert!(after.contains(old_pw), "existing value kept");
    let secret = ok(&sealkit(
        d,
        &[
            "seal",
            "--recovery-unseal",
            "--recovery-private-key",
            &s(&k.key()),
            "-f",
            &s(&target),
        ],
        b"",
    ));
    let secret: Value = serde_json::from_slice(&secret).expect("json");
    assert_eq!(secret["data"]["api-key"], "azN5");
    assert_eq!(secret["data"]["password"], "aHVudGVyMg==");
    // A bad update leaves the file as it was.
    let o = sealkit(
        d,
        &["seal", "--cert", &s(&k.cert()), "--merge-into", &s(&target)],
        b"kind: Secret\ndata: {a: '!'}\n",
    );
    fails(&o, 1, &["data.a"]);
    assert_eq!(fs::read_to_string(&target).expect("read"), after);
}

#[test]
fn reseal_tree_in_place_all_or_nothing() {
    let old = shared_key();
    let new = other_key();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let apps = d.join("apps");
    fs::create_dir_all(apps.join("prod")).expect("mkdir");
    let sealed = String::from_utf8(seal_good(d, old, &["-o", "yaml"])).expect("utf8");
    let deployment =
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web   # keep this comment\n";
    let mixed = format!("# header comment\n{deployment}{sealed}");
    fs::write(apps.join("prod/mixed.yaml"), &mixed).expect("write");
    fs::write(apps.join("prod/plain.yaml"), deployment).expect("write");
    fs::write(apps.join("sealed.json"), seal_good(d, old, &[])).expect("write");

    let o = sealkit(
        d,
        &[
            "reseal",
            "--cert",
            &s(&new.cert()),
            "--recovery-private-key",
            &s(&old.key()),
            &s(&apps),
        ],
        b"",
    );
    ok(&o);
    assert!(
        stderr(&o).contains("resealed 2 SealedSecret(s) in 2 of 3 file(s)"),
        "{}",
        stderr(&o)
    );
    let mixed_after = fs::read_to_string(apps.join("prod/mixed.yaml")).expect("read");
    assert!(
        mixed_after.starts_with(&format!("# header comment\n{deployment}---\n")),
        "{mixed_after}"
    );
    assert_eq!(
        fs::read_to_string(apps.join("prod/plain.yaml")).expect("read"),
        deployment
    );
    for f in ["prod/mixed.yaml", "sealed.json"] {
        let p = s(&apps.join(f));
        ok(&sealkit(
            d,
            &[
                "seal",
                "--recovery-unseal",
                "--recovery-private-key",
                &s(&new.key()),
                "-f",
                &p,
            ],
            b"",
        ));
        let o = sealkit(
            d,
            &[
                "seal",
                "--recovery-unseal",
                "--recovery-private-key",
                &s(&old.key()),
                "-f",
                &p,
            ],
            b"",
        );
        fails(&o, 1, &["not among"]);
    }

    // A file the keys cannot open: nothing is written anywhere.
    let snapshot = fs::read_to_string(apps.join("sealed.json")).expect("read");
    let o = sealkit(
        d,
        &[
            "reseal",
            "--cert",
            &s(&old.cert()),
            "--recovery-private-key",
            &s(&old.key()),
            &s(&apps),
        ],
        b"",
    );
    fails(&o, 1, &["nothing was written"]);
    assert_eq!(
        fs::read_to_string(apps.join("sealed.json")).expect("read"),
        snapshot
    );
}

#[test]
fn keygen_writes_a_usable_pair_and_refuses_to_clobber() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let keys = d.join("keys");
    let secret = d.join("key-secret.yaml");
    ok(&sealkit(
        d,
        &[
            "keygen",
            "--bits",
            "2048",
            "--out-dir",
            &s(&keys),
            "--secret-out",
            &s(&secret),
        ],
        b"",
    ));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(keys.join("tls.key"))
                .expect("meta")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    // openssl reads our key and certificate.
    ok(&run(
        std::process::Command::new("openssl")
            .args(["rsa", "-check", "-noout", "-in"])
            .arg(keys.join("tls.key")),
        b"",
    ));
    let text = String::from_utf8(ok(&run(
        std::process::Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(keys.join("tls.crt")),
        b"",
    )))
    .expect("utf8");
    assert!(
        text.contains("CA:TRUE") && text.contains("Encipher Only"),
        "{text}"
    );
    let sealed = ok(&sealkit(
        d,
        &["seal", "--cert", &s(&keys.join("tls.crt"))],
        GOOD.as_bytes(),
    ));
    ok(&sealkit(
        d,
        &[
            "seal",
            "--recovery-unseal",
            "--recovery-private-key",
            &s(&secret),
        ],
        &sealed,
    ));
    let o = sealkit(
        d,
        &["keygen", "--bits", "2048", "--out-dir", &s(&keys)],
        b"",
    );
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn help_completions_and_kubeseal_alias() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let help = String::from_utf8(ok(&sealkit(d, &["seal", "--help"], b""))).expect("utf8");
    assert!(
        help.contains("Examples:") && help.contains("SEALED_SECRETS_"),
        "{help}"
    );
    let top = String::from_utf8(ok(&sealkit(d, &["--help"], b""))).expect("utf8");
    assert!(top.contains("Exit codes:"));
    let comp = ok(&sealkit(d, &["completions", "bash"], b""));
    assert!(String::from_utf8_lossy(&comp).contains("sealkit"));
    let link = d.join("kubeseal");
    std::os::unix::fs::symlink(sealkit_tests::sealkit_bin(), &link).expect("symlink");
    let o = run(
        std::process::Command::new(&link)
            .arg("--raw")
            .arg("--scope")
            .arg("cluster-wide")
            .arg("--cert")
            .arg(shared_key().cert()),
        b"x",
    );
    assert!(String::from_utf8(ok(&o)).expect("utf8").starts_with("Ag"));
    let o = sealkit(d, &["seal", "--scope", "global"], b"");
    assert_eq!(o.status.code(), Some(2));
}

/// Serves `body` to `requests` HTTP requests on 127.0.0.1, returning the URL.
fn serve_once(body: Vec<u8>, status: &'static str, requests: usize) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for _ in 0..requests {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/x-pem-file\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        }
    });
    format!("http://{addr}/v1/cert.pem")
}

#[test]
fn cert_from_http_and_file_urls() {
    let k = shared_key();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let pem = fs::read(k.cert()).expect("cert");
    let url = serve_once(pem.clone(), "200 OK", 2);
    let sealed = ok(&sealkit(d, &["seal", "--cert", &url], GOOD.as_bytes()));
    let secret = ok(&sealkit(
        d,
        &[
            "seal",
            "--recovery-unseal",
            "--recovery-private-key",
            &s(&k.key()),
        ],
        &sealed,
    ));
    assert!(String::from_utf8_lossy(&secret).contains("aHVudGVyMg=="));
    let fetched = ok(&sealkit(d, &["seal", "--fetch-cert", "--cert", &url], b""));
    assert_eq!(fetched, pem);
    let file_url = format!("file://{}", s(&k.cert()));
    ok(&sealkit(d, &["seal", "--cert", &file_url], GOOD.as_bytes()));
    let missing = serve_once(b"nope".to_vec(), "404 Not Found", 1);
    fails(
        &sealkit(d, &["seal", "--cert", &missing], GOOD.as_bytes()),
        3,
        &["cannot fetch certificate", "404"],
    );
}

#[test]
fn syntax_errors_do_not_quote_secret_values() {
    let k = shared_key();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    for (i, text) in [
        "kind: Secret\nmetadata: {name: x, namespace: y}\nstringData:\n  password: \"sup3r-s3cret\n",
        "kind: Secret\nmetadata: {name: x, namespace: y}\nstringData:\n  password: sup3r-s3cret: oops\n",
    ]
    .iter()
    .enumerate()
    {
        let input = with_file(d, &format!("bad{i}.yaml"), text);
        let o = sealkit(d, &["seal", "--cert", &s(&k.cert()), "-f", &input], b"");
        fails(&o, 1, &["invalid YAML", "line 4"]);
        assert!(!stderr(&o).contains("sup3r-s3cret"), "{}", stderr(&o));
        let o = run(std::process::Command::new(sealkit_tests::sealkit_bin()).args(["sops", "encrypt", "--age", "age1q7eeszlu8xrued28ej4mmxfkuhcr0uvjun9s80zf3xsj4mt9ae5saljywu", &input]), b"");
        assert_ne!(o.status.code(), Some(0));
        assert!(!stderr(&o).contains("sup3r-s3cret"), "{}", stderr(&o));
    }
}

/// Stderr must hold none of what the base64 crate's error text would echo about a value: the
/// marker in it, a byte ("Invalid symbol 126"), an offset or a length.
fn no_echo(o: &Output, what: &str) {
    let err = stderr(o);
    assert_ne!(o.status.code(), Some(0), "{what}: should fail:\n{err}");
    for leak in ["MARKER", "symbol", "offset", "Invalid", "length", "padding"] {
        assert!(
            !err.contains(leak),
            "{what}: stderr contains {leak:?}:\n{err}"
        );
    }
}

/// Values that are not base64 (Secret `data`, `encryptedData`, the legacy `spec.data`, a key
/// Secret's `tls.key`, the body of a PEM key or certificate) give an error naming the file,
/// document and field, and never a byte of the value, its length or an offset into it.
#[test]
fn base64_errors_never_echo_the_value() {
    let k = shared_key();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let cert = s(&k.cert());
    let bad = "aHVudGVy~MARKER~";

    let input = with_file(
        d,
        "secret.yaml",
        &format!("kind: Secret\nmetadata: {{name: x, namespace: y}}\ndata:\n  password: '{bad}'\n"),
    );
    let o = sealkit(d, &["seal", "--cert", &cert, "-f", &input], b"");
    no_echo(&o, "data");
    fails(
        &o,
        1,
        &["secret.yaml", "document 1", "data.password", "base64"],
    );

    let recover = |name: &str, doc: &str, key: &str| {
        let f = with_file(d, name, doc);
        sealkit(
            d,
            &[
                "seal",
                "--recovery-unseal",
                "--recovery-private-key",
                key,
                "-f",
                &f,
            ],
            b"",
        )
    };
    let right = s(&k.key());
    let sealed: Value = serde_json::from_slice(&seal_good(d, k, &[])).expect("json");
    let mut doc = sealed.clone();
    doc["spec"]["encryptedData"]["password"] = bad.into();
    let o = recover("enc.json", &doc.to_string(), &right);
    no_echo(&o, "encryptedData");
    fails(&o, 1, &["enc.json", "encryptedData.password", "base64"]);

    let mut doc = sealed.clone();
    doc["spec"]["encryptedData"] = serde_json::json!({});
    doc["spec"]["data"] = bad.into();
    let o = recover("legacy.json", &doc.to_string(), &right);
    no_echo(&o, "spec.data");
    fails(&o, 1, &["legacy.json", "spec.data", "base64"]);

    // A backup of the key Secrets whose tls.key is not base64, and a PEM key whose body is not.
    let backup = with_file(
        d,
        "backup.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: sealed-secrets-key}}\ndata:\n  tls.key: '{bad}'\n"
        ),
    );
    let o = recover("sealed.json", &sealed.to_string(), &backup);
    no_echo(&o, "tls.key");
    fails(&o, 1, &["backup.yaml", "tls.key", "base64"]);
    let pem = with_file(
        d,
        "broken.key",
        &format!(
            "-----BEGIN RSA PRIVATE KEY-----\nMIIJKAIBAAKCAgEA{bad}\n-----END RSA PRIVATE KEY-----\n"
        ),
    );
    let o = recover("sealed.json", &sealed.to_string(), &pem);
    no_echo(&o, "PEM key");
    fails(&o, 1, &["broken.key", "PEM"]);
    let pem = with_file(
        d,
        "broken.crt",
        &format!(
            "-----BEGIN CERTIFICATE-----\nMIIFazCCA1OgAwIBAgIU{bad}\n-----END CERTIFICATE-----\n"
        ),
    );
    let o = sealkit(d, &["seal", "--cert", &pem], GOOD.as_bytes());
    no_echo(&o, "PEM certificate");
    fails(&o, 1, &["broken.crt", "PEM"]);
}

/// Input nested 100,000 levels deep gets an error, not a stack overflow (which, through the
/// real binary, would show as a signal rather than an exit code).
#[test]
fn deeply_nested_input_is_refused() {
    let k = shared_key();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let cert = s(&k.cert());
    const N: usize = 100_000;
    for (name, text) in [
        (
            "flow.yaml",
            format!(
                "kind: Secret\nmetadata: {{name: x, namespace: y}}\nstringData: {{a: {}1{}}}\n",
                "[".repeat(N),
                "]".repeat(N)
            ),
        ),
        (
            "block.yaml",
            format!(
                "kind: Secret\nmetadata: {{name: x, namespace: y}}\nextra:\n{}x\n",
                "- ".repeat(N)
            ),
        ),
        (
            "deep.json",
            format!(
                "{{\"kind\": \"Secret\", \"extra\": {}1{}}}",
                "[".repeat(N),
                "]".repeat(N)
            ),
        ),
    ] {
        let input = with_file(d, name, &text);
        let o = sealkit(d, &["seal", "--cert", &cert, "-f", &input], b"");
        assert!(
            o.status.code().is_some(),
            "{name}: killed by a signal ({})",
            o.status
        );
        fails(&o, 1, &[name]);
    }
}

/// `--recovery-unseal -w` writes plaintext: mode 0600, also over an existing 0644 file.
#[test]
fn recovery_unseal_output_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let k = shared_key();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let sealed = with_file(
        d,
        "sealed.json",
        &String::from_utf8(seal_good(d, k, &[])).expect("utf8"),
    );
    let out = d.join("plain.yaml");
    fs::write(&out, "old\n").expect("write");
    fs::set_permissions(&out, fs::Permissions::from_mode(0o644)).expect("chmod");
    ok(&sealkit(
        d,
        &[
            "seal",
            "--recovery-unseal",
            "--recovery-private-key",
            &s(&k.key()),
            "-f",
            &sealed,
            "-w",
            &s(&out),
        ],
        b"",
    ));
    assert!(
        fs::read_to_string(&out)
            .expect("read")
            .contains("aHVudGVyMg==")
    );
    assert_eq!(
        fs::metadata(&out).expect("meta").permissions().mode() & 0o777,
        0o600
    );
}

/// A kubeconfig `*-data` field that is not base64 (for client-key-data, a private key): the
/// error names the field, never a byte of it or an offset.
#[test]
fn kubeconfig_base64_errors_never_echo_the_value() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let good = "aGVsbG8=";
    let bad = "aGVsbG8~MARKER~";
    for (field, ca, cert, key) in [
        ("certificate-authority-data", bad, good, good),
        ("client-certificate-data", good, bad, good),
        ("client-key-data", good, good, bad),
    ] {
        let kc = with_file(
            d,
            &format!("{field}.kubeconfig"),
            &format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: dev\ncontexts:\n- name: dev\n  context: {{cluster: c, user: u}}\nclusters:\n- name: c\n  cluster: {{server: 'https://127.0.0.1:1', certificate-authority-data: '{ca}'}}\nusers:\n- name: u\n  user: {{client-certificate-data: '{cert}', client-key-data: '{key}'}}\n"
            ),
        );
        let o = sealkit(d, &["seal", "--fetch-cert", "--kubeconfig", &kc], b"");
        no_echo(&o, field);
        assert!(stderr(&o).contains(field), "{field}:\n{}", stderr(&o));
    }
}
