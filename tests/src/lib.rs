//! Shared fixtures for sealkit's cross-crate tests: the `sealkit` binary, keys and
//! certificates made by OpenSSL (not by us), and the independent Python peer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Path of the `sealkit` binary of this build, building it if needed.
pub fn sealkit_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("SEALKIT_BIN") {
            return PathBuf::from(p);
        }
        // target/<profile>/deps/<test> -> target/<profile>/sealkit
        let exe = std::env::current_exe().expect("current exe");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_path_buf();
        let bin = dir.join("sealkit");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "sealkit-cli", "--bin", "sealkit"])
            .current_dir(workspace())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building sealkit failed");
        assert!(
            bin.exists(),
            "sealkit binary not found at {}",
            bin.display()
        );
        bin
    })
    .clone()
}

/// Runs `sealkit` with `args` and `stdin`, in `cwd`, with a clean environment for the
/// variables it reads.
pub fn sealkit(cwd: &Path, args: &[&str], stdin: &[u8]) -> Output {
    run(
        Command::new(sealkit_bin())
            .args(args)
            .current_dir(cwd)
            .env("KUBECONFIG", cwd.join("no-kubeconfig")),
        stdin,
    )
}

/// Runs a command with `stdin`, collecting output.
pub fn run(cmd: &mut Command, stdin: &[u8]) -> Output {
    for (k, _) in std::env::vars() {
        if k.starts_with("SEALED_SECRETS_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    {
        use std::io::Write;
        let mut input = child.stdin.take().expect("stdin");
        // A command may exit without reading its input; that is fine.
        let _ = input.write_all(stdin);
    }
    child.wait_with_output().expect("wait")
}

/// Asserts success and returns stdout.
pub fn ok(out: &Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "command failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.clone()
}

/// A 4096-bit RSA key (PKCS#1 PEM, as the controller stores it) and a self-signed
/// certificate, both made by the `openssl` CLI.
pub struct OpensslKey {
    /// Directory holding the files.
    pub dir: tempfile::TempDir,
}

impl OpensslKey {
    /// Generates a key pair with openssl.
    pub fn generate(bits: u32) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let out = run(
            Command::new("openssl")
                .args(["genrsa", "-traditional", "-out"])
                .arg(d.join("tls.key"))
                .arg(bits.to_string()),
            b"",
        );
        ok(&out);
        let out = run(
            Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-new",
                    "-subj",
                    "/CN=sealed-secret",
                    "-days",
                    "2",
                    "-key",
                ])
                .arg(d.join("tls.key"))
                .arg("-out")
                .arg(d.join("tls.crt")),
            b"",
        );
        ok(&out);
        OpensslKey { dir }
    }

    /// The private key file.
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }

    /// The certificate file.
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }
}

/// A shared 4096-bit OpenSSL key for a test binary.
pub fn shared_key() -> &'static OpensslKey {
    static K: OnceLock<OpensslKey> = OnceLock::new();
    K.get_or_init(|| OpensslKey::generate(4096))
}

/// A second, unrelated key.
pub fn other_key() -> &'static OpensslKey {
    static K: OnceLock<OpensslKey> = OnceLock::new();
    K.get_or_init(|| OpensslKey::generate(2048))
}

/// Runs the independent Python implementation (`tests/peers/kubeseal_peer.py`).
pub fn python_peer(args: &[&str], stdin: &[u8]) -> Output {
    let script = workspace().join("tests/peers/kubeseal_peer.py");
    let python = std::env::var("SEALKIT_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = run(Command::new(&python).arg(&script).args(args), stdin);
    if String::from_utf8_lossy(&out.stderr).contains("No module named 'cryptography'") {
        panic!(
            "the Python peer needs the `cryptography` package: run scripts/test.sh (it installs it) or `pip install cryptography`"
        );
    }
    out
}
