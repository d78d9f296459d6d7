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
    listings: Mutex<u32>,
}

impl HookApi for Memory {
    async fn receivers(&self) -> Result<Vec<Receiver>, String> {
        *self.listings.lock().expect("lock") += 1;
        Ok(vec![Receiver {
            namespace: "flux-system".into(),
            name: "repo".into(),
            token: b"s3cret-token".to_vec(),
        }])
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

/// The path is Flux Receiver's: `/hook/` + sha256(token + name + namespace), checked against
/// the openssl CLI.
#[test]
fn hook_paths_are_fluxs_digest() {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-r"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"s3cret-tokenrepoflux-system")
        .expect("write");
    let out = child.wait_with_output().expect("openssl");
    let hex = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("hex")
        .to_string();
    assert_eq!(
        hook_path(b"s3cret-token", "repo", "flux-system"),
        format!("/hook/{hex}")
    );
}

#[tokio::test]
async fn signed_pushes_trigger_and_everything_else_is_refused() {
    let hooks = Hooks::new(Memory::default());
    let path = hook_path(b"s3cret-token", "repo", "flux-system");
    let digest = &path["/hook/".len()..];
    let body = br#"{"ref":"refs/heads/main","after":"abc"}"#;
    let sig = openssl_hmac("s3cret-token", body);
    let github = headers(&[
        ("x-hub-signature-256", format!("sha256={sig}")),
        ("x-github-event", "push".into()),
    ]);
    assert_eq!(
        hooks.handle(digest, &github, body).await,
        StatusCode::ACCEPTED
    );
    let generic = headers(&[("x-signature", format!("sha256={sig}"))]);
    assert_eq!(
        hooks.handle(digest, &generic, body).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(hooks.api.requested.lock().expect("lock").len(), 2);
    assert_eq!(
        hooks.api.requested.lock().expect("lock")[0],
        "flux-system/repo"
    );

    let ping = headers(&[
        ("x-hub-signature-256", format!("sha256={sig}")),
        ("x-github-event", "ping".into()),
    ]);
    assert_eq!(hooks.handle(digest, &ping, body).await, StatusCode::OK);
    // Everything that is not a valid signature on a known digest gets the same answer: a wrong
    // key, a tampered body, no signature, an unknown digest.
    let wrong = headers(&[(
        "x-hub-signature-256",
        format!("sha256={}", openssl_hmac("other", body)),
    )]);
    let tampered = b"{\"ref\":\"refs/heads/evil\",\"after\":\"abc\"}";
    let unknown = hook_path(b"s3cret-token", "other", "flux-system");
    for (d, h, b) in [
        (digest, &wrong, &body[..]),
        (digest, &github, &tampered[..]),
        (digest, &HeaderMap::new(), &body[..]),
        (&unknown["/hook/".len()..], &github, &body[..]),
    ] {
        assert_eq!(hooks.handle(d, h, b).await, StatusCode::NOT_FOUND);
    }
    assert_eq!(
        hooks.api.requested.lock().expect("lock").len(),
        2,
        "no trigger without a valid signature"
    );
}

/// Random digests cannot make the receiver list repositories (and read their token Secrets) on
/// every request: the index is rebuilt at most every few seconds.
#[tokio::test]
async fn unknown_digests_do_not_rebuild_the_index_each_time() {
    let hooks = Hooks::new(Memory::default());
    for i in 0..50 {
        assert_eq!(
            hooks
                .handle(&format!("{i:064x}"), &HeaderMap::new(), b"")
                .await,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(*hooks.api.listings.lock().expect("lock"), 1);
}
