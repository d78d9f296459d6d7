//! Signatures made by the `openssl` CLI (an HMAC we did not write), the opt-in, and the trigger.

use std::process::{Command, Stdio};
use std::sync::Mutex;

use super::*;

fn openssl_hmac(token: &str, body: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", token, "-r"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body)
        .expect("write");
    let out = child.wait_with_output().expect("openssl");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("hex")
        .to_string()
}

#[derive(Default)]
struct Memory {
    requested: Mutex<Vec<String>>,
}

impl HookApi for Memory {
    async fn token(&self, ns: &str, name: &str) -> Option<Vec<u8>> {
        (ns == "flux-system" && name == "repo").then(|| b"s3cret-token".to_vec())
    }
    async fn request(&self, ns: &str, name: &str) -> Result<(), String> {
        self.requested
            .lock()
            .expect("lock")
            .push(format!("{ns}/{name}"));
        Ok(())
    }
}

fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, v.parse().expect("header"));
    }
    h
}

#[tokio::test]
async fn signed_pushes_trigger_and_everything_else_is_refused() {
    let api = Memory::default();
    let body = br#"{"ref":"refs/heads/main","after":"abc"}"#;
    let sig = openssl_hmac("s3cret-token", body);
    let github = headers(&[
        ("x-hub-signature-256", format!("sha256={sig}")),
        ("x-github-event", "push".into()),
    ]);
    assert_eq!(
        handle(&api, "flux-system", "repo", &github, body).await,
        StatusCode::ACCEPTED
    );
    let generic = headers(&[("x-signature", format!("sha256={sig}"))]);
    assert_eq!(
        handle(&api, "flux-system", "repo", &generic, body).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(api.requested.lock().expect("lock").len(), 2);

    let ping = headers(&[
        ("x-hub-signature-256", format!("sha256={sig}")),
        ("x-github-event", "ping".into()),
    ]);
    assert_eq!(
        handle(&api, "flux-system", "repo", &ping, body).await,
        StatusCode::OK
    );
    let wrong = headers(&[(
        "x-hub-signature-256",
        format!("sha256={}", openssl_hmac("other", body)),
    )]);
    assert_eq!(
        handle(&api, "flux-system", "repo", &wrong, body).await,
        StatusCode::UNAUTHORIZED
    );
    let tampered = b"{\"ref\":\"refs/heads/evil\",\"after\":\"abc\"}";
    assert_eq!(
        handle(&api, "flux-system", "repo", &github, tampered).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        handle(&api, "flux-system", "repo", &HeaderMap::new(), body).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        handle(&api, "flux-system", "other", &github, body).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.requested.lock().expect("lock").len(),
        2,
        "no trigger without a valid signature"
    );
}
