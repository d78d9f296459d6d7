//! The cluster flags (`--fetch-cert`, sealing without `--cert`, `--validate`, `--re-encrypt`)
//! against a stand-in API server on 127.0.0.1 that answers the Service GET and the service-proxy
//! paths kubeseal uses. It checks the exact paths, so the same commands reach upstream's
//! controller through a real API server.

use std::sync::{Arc, Mutex};

use sealkit_tests::{ok, run, sealkit_bin, serve_http, shared_key};

struct FakeApi {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

fn fake_api(cert: String) -> FakeApi {
    let (url, seen) = serve_http(move |_method, path, body| {
        let svc = "/api/v1/namespaces/kube-system/services/sealed-secrets-controller";
        let proxy =
            "/api/v1/namespaces/kube-system/services/http:sealed-secrets-controller:http/proxy";
        if path == svc {
            (
                "200 OK",
                "application/json",
                r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"sealed-secrets-controller","namespace":"kube-system"},"spec":{"ports":[{"name":"http","port":8080}]}}"#.to_string(),
            )
        } else if path == format!("{proxy}/v1/cert.pem") {
            ("200 OK", "application/x-pem-file", cert.clone())
        } else if path == format!("{proxy}/v1/verify") {
            if String::from_utf8_lossy(body).contains("\"good\"") {
                ("200 OK", "text/plain", String::new())
            } else {
                (
                    "409 Conflict",
                    "text/plain",
                    "no key could decrypt secret (password)".to_string(),
                )
            }
        } else if path == format!("{proxy}/v1/rotate") {
            let mut v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            v["metadata"]["resourceVersion"] = "42".into();
            v["spec"]["encryptedData"]["password"] = "AgRotated==".into();
            ("200 OK", "application/json", v.to_string())
        } else {
            ("404 Not Found", "text/plain", "not found".to_string())
        }
    });
    FakeApi { url, seen }
}

fn kubeconfig(dir: &std::path::Path, url: &str) -> String {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster: {{server: \"{url}\"}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: u, namespace: team-a}}\nusers:\n- name: u\n  user: {{token: test-token}}\n"
        ),
    )
    .expect("write");
    path.display().to_string()
}

fn cmd(kc: &str, args: &[&str], stdin: &[u8]) -> std::process::Output {
    run(
        std::process::Command::new(sealkit_bin())
            .args(args)
            .env("KUBECONFIG", kc),
        stdin,
    )
}

#[test]
fn cluster_flags_use_the_service_proxy() {
    let k = shared_key();
    let cert = std::fs::read_to_string(k.cert()).expect("cert");
    let api = fake_api(cert.clone());
    let dir = tempfile::tempdir().expect("tmp");
    let kc = kubeconfig(dir.path(), &api.url);

    let fetched = ok(&cmd(&kc, &["seal", "--fetch-cert"], b""));
    assert_eq!(String::from_utf8_lossy(&fetched), cert);
    let seen = api.seen.lock().expect("lock").clone();
    assert!(
        seen.contains(
            &"GET /api/v1/namespaces/kube-system/services/sealed-secrets-controller".to_string()
        ),
        "{seen:?}"
    );
    assert!(seen.contains(&"GET /api/v1/namespaces/kube-system/services/http:sealed-secrets-controller:http/proxy/v1/cert.pem".to_string()), "{seen:?}");

    // Sealing without --cert uses the cluster's certificate, and the context's namespace.
    let sealed = ok(&cmd(
        &kc,
        &["seal", "-o", "yaml"],
        b"kind: Secret\nmetadata: {name: db}\nstringData: {password: hunter2}\n",
    ));
    let text = String::from_utf8_lossy(&sealed).into_owned();
    assert!(text.contains("namespace: team-a"), "{text}");
    let secret = ok(&run(
        std::process::Command::new(sealkit_bin())
            .args(["seal", "--recovery-unseal", "--recovery-private-key"])
            .arg(k.key()),
        &sealed,
    ));
    assert!(String::from_utf8_lossy(&secret).contains("aHVudGVyMg=="));

    // --validate: 200 passes, 409 is exit 1 with the controller's reason.
    ok(&cmd(
        &kc,
        &["seal", "--validate"],
        br#"{"kind":"SealedSecret","metadata":{"name":"good"}}"#,
    ));
    let o = cmd(
        &kc,
        &["seal", "--validate"],
        br#"{"kind":"SealedSecret","metadata":{"name":"bad"}}"#,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("unable to decrypt sealed secret: no key could decrypt")
    );

    // --re-encrypt in place with only -f, keeping the file's YAML format.
    let f = dir.path().join("sealed.yaml");
    std::fs::write(&f, &sealed).expect("write");
    ok(&cmd(
        &kc,
        &["seal", "--re-encrypt", "-f", &f.display().to_string()],
        b"",
    ));
    let rotated = std::fs::read_to_string(&f).expect("read");
    assert!(
        rotated.starts_with("---\n")
            && rotated.contains("AgRotated==")
            && !rotated.contains("resourceVersion"),
        "{rotated}"
    );
}
