//! `sealkit diff` against a stand-in API server on 127.0.0.1 that serves discovery, GETs of live
//! objects and server-side-apply dry-runs (echoing the applied object, as an API server does
//! for fields it has no defaults for). The e2e suite runs the same command against a real one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use sealkit_tests::{run, sealkit_bin, serve_http};

type Live = Arc<Mutex<BTreeMap<String, String>>>;

fn fake_api(live: Live) -> (String, Arc<Mutex<Vec<String>>>) {
    serve_http(move |method, target, body| {
        let path = target.split('?').next().unwrap_or("");
        if path == "/api/v1" {
            ("200 OK", "application/json", r#"{"kind":"APIResourceList","groupVersion":"v1","resources":[
                {"name":"configmaps","singularName":"configmap","namespaced":true,"kind":"ConfigMap","verbs":["get","patch"]},
                {"name":"secrets","singularName":"secret","namespaced":true,"kind":"Secret","verbs":["get","patch"]},
                {"name":"namespaces","singularName":"namespace","namespaced":false,"kind":"Namespace","verbs":["get","patch"]}]}"#.to_string())
        } else if method == "GET" {
            match live.lock().expect("lock").get(path) {
                Some(obj) => ("200 OK", "application/json", obj.clone()),
                None => ("404 Not Found", "application/json", r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"not found"}"#.to_string()),
            }
        } else if method == "PATCH" && target.contains("dryRun=All") {
            (
                "200 OK",
                "application/json",
                String::from_utf8_lossy(body).into_owned(),
            )
        } else {
            (
                "400 Bad Request",
                "application/json",
                r#"{"kind":"Status","code":400,"message":"unexpected"}"#.to_string(),
            )
        }
    })
}

fn setup(dir: &std::path::Path, url: &str) -> String {
    let kc = dir.join("kubeconfig");
    std::fs::write(&kc, format!("apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster: {{server: \"{url}\"}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: u, namespace: app}}\nusers:\n- name: u\n  user: {{token: t}}\n")).expect("kc");
    let m = dir.join("manifests");
    std::fs::create_dir_all(&m).expect("mkdir");
    std::fs::write(m.join("a.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: same\ndata:\n  k: v\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: drifted\ndata:\n  k: wanted\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  password: new-password-value\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: brand-new\ndata:\n  k: v\n").expect("m");
    kc.display().to_string()
}

fn diff(kc: &str, path: &std::path::Path) -> std::process::Output {
    run(
        std::process::Command::new(sealkit_bin())
            .args(["diff", &path.display().to_string()])
            .env("KUBECONFIG", kc)
            .env("HOME", path),
        b"",
    )
}

#[test]
fn differences_are_shown_masked_and_set_the_exit_code() {
    let live: Live = Arc::default();
    let (url, seen) = fake_api(live.clone());
    let dir = tempfile::tempdir().expect("tmp");
    let kc = setup(dir.path(), &url);
    {
        let mut l = live.lock().expect("lock");
        l.insert("/api/v1/namespaces/app/configmaps/same".into(), r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"same","namespace":"app","uid":"1","resourceVersion":"9"},"data":{"k":"v"}}"#.into());
        l.insert("/api/v1/namespaces/app/configmaps/drifted".into(), r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"drifted","namespace":"app"},"data":{"k":"edited"}}"#.into());
        l.insert("/api/v1/namespaces/app/secrets/creds".into(), r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"creds","namespace":"app"},"stringData":{"password":"old-password-value"}}"#.into());
    }
    let out = diff(&kc, &dir.path().join("manifests"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("ConfigMap app/drifted drifted")
            && text.contains("-  k: edited")
            && text.contains("+  k: wanted"),
        "{text}"
    );
    assert!(text.contains("ConfigMap app/brand-new created"), "{text}");
    assert!(!text.contains("app/same"), "{text}");
    assert!(
        text.contains("Secret app/creds drifted") && text.contains("hmac:"),
        "{text}"
    );
    assert!(
        !text.contains("password-value"),
        "values never printed: {text}"
    );
    assert!(
        seen.lock()
            .expect("lock")
            .iter()
            .any(|r| r.starts_with("PATCH") && r.contains("fieldManager=sealkit"))
    );

    // Everything in sync: exit 0, nothing printed.
    {
        let mut l = live.lock().expect("lock");
        l.insert("/api/v1/namespaces/app/configmaps/drifted".into(), r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"drifted","namespace":"app"},"data":{"k":"wanted"}}"#.into());
        l.insert("/api/v1/namespaces/app/secrets/creds".into(), r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"creds","namespace":"app"},"stringData":{"password":"new-password-value"}}"#.into());
        l.insert("/api/v1/namespaces/app/configmaps/brand-new".into(), r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"brand-new","namespace":"app"},"data":{"k":"v"}}"#.into());
    }
    let out = diff(&kc, &dir.path().join("manifests"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.stdout.is_empty());

    // Errors: a render failure is 2, an unreachable cluster 3.
    std::fs::write(dir.path().join("manifests/bad.yaml"), "kind: [\n").expect("bad");
    assert_eq!(
        diff(&kc, &dir.path().join("manifests")).status.code(),
        Some(2)
    );
    std::fs::remove_file(dir.path().join("manifests/bad.yaml")).expect("rm");
    let dead = setup(dir.path(), "http://127.0.0.1:1");
    assert_eq!(
        diff(&dead, &dir.path().join("manifests")).status.code(),
        Some(3)
    );
}

/// Encrypts `file` (in `dir`) for the example key, the leaves whose keys match `regex`.
fn sops_encrypt(dir: &std::path::Path, file: &str, regex: &str) {
    let key = sealkit_tests::workspace().join("examples/gitops/keys/example.agekey");
    let recipient = std::fs::read_to_string(&key)
        .expect("key")
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_string))
        .expect("recipient");
    let out = run(
        std::process::Command::new(sealkit_bin())
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

/// A ConfigMap whose value was SOPS-encrypted is masked in the diff like a Secret (a change
/// still shows, by keyed hash), and an API error that quotes a decrypted value (as the API
/// server does for invalid values) is redacted before it is printed.
#[test]
fn decrypted_values_are_masked_and_never_quoted_from_errors() {
    let live: Live = Arc::default();
    let (url, _) = serve_http({
        let live = live.clone();
        move |method, target, body| {
            let path = target.split('?').next().unwrap_or("");
            if path == "/api/v1" {
                ("200 OK", "application/json", r#"{"kind":"APIResourceList","groupVersion":"v1","resources":[
                    {"name":"configmaps","singularName":"configmap","namespaced":true,"kind":"ConfigMap","verbs":["get","patch"]}]}"#.to_string())
            } else if method == "GET" {
                match live.lock().expect("lock").get(path) {
                    Some(obj) => ("200 OK", "application/json", obj.clone()),
                    None => ("404 Not Found", "application/json", r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"not found"}"#.to_string()),
                }
            } else if method == "PATCH" && path.ends_with("/rejected") {
                let obj: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
                let quoted = obj["data"]["token"].as_str().unwrap_or("").to_string();
                let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "Invalid", "code": 422,
                    "message": format!("ConfigMap \"rejected\" is invalid: data.token: Invalid value: \"{quoted}\": not allowed")});
                (
                    "422 Unprocessable Entity",
                    "application/json",
                    status.to_string(),
                )
            } else if method == "PATCH" && target.contains("dryRun=All") {
                (
                    "200 OK",
                    "application/json",
                    String::from_utf8_lossy(body).into_owned(),
                )
            } else {
                (
                    "400 Bad Request",
                    "application/json",
                    r#"{"kind":"Status","code":400,"message":"unexpected"}"#.to_string(),
                )
            }
        }
    });
    let dir = tempfile::tempdir().expect("tmp");
    let kc = setup(dir.path(), &url);
    let m = dir.path().join("sops");
    std::fs::create_dir_all(&m).expect("mkdir");
    std::fs::write(
        m.join("cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  token: new-cm-secret-value\n  plain: shown\n",
    )
    .expect("w");
    sops_encrypt(&m, "cm.yaml", "^token$");
    live.lock().expect("lock").insert(
        "/api/v1/namespaces/app/configmaps/app".into(),
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"app","namespace":"app"},"data":{"token":"old-cm-secret-value","plain":"old"}}"#.into(),
    );
    let key = sealkit_tests::workspace().join("examples/gitops/keys/example.agekey");
    let run_diff = |path: &std::path::Path| {
        run(
            std::process::Command::new(sealkit_bin())
                .args(["diff", &path.display().to_string()])
                .env("KUBECONFIG", &kc)
                .env("HOME", path)
                .env("SOPS_AGE_KEY_FILE", &key),
            b"",
        )
    };
    let out = run_diff(&m);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("ConfigMap app/app drifted") && text.contains("hmac:"),
        "{text}"
    );
    assert!(text.contains("+  plain: shown"), "{text}");
    assert!(
        !text.contains("cm-secret-value"),
        "decrypted values never printed, nor the live ones at those fields: {text}"
    );

    std::fs::write(
        m.join("cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: rejected\ndata:\n  token: quoted-secret-value\n",
    )
    .expect("w");
    sops_encrypt(&m, "cm.yaml", "^token$");
    let out = run_diff(&m);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("ConfigMap app/rejected") && err.contains("is invalid"),
        "{err}"
    );
    assert!(!err.contains("quoted-secret-value"), "{err}");
}
