//! Shared fixtures for sealkit's cross-crate tests: the `sealkit` binary, keys and
//! certificates made by OpenSSL (not by us), and the independent Python peer.

pub mod cluster;

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

/// `shared/` beside the repository (upstream vectors and CRDs, the control-plane tool), if found.
pub fn shared() -> Option<PathBuf> {
    sealkit_skip::shared_dir(&workspace())
}

/// A `moto_server` (AWS Secrets Manager + SSM emulator) on a free 127.0.0.1 port, stopped on
/// drop. `None` when moto is not installed (a counted skip, or a failure under
/// `SEALKIT_REQUIRE_PEERS`; `scripts/test.sh` installs it).
pub struct Moto {
    child: std::process::Child,
    bin: String,
    port: u16,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl Moto {
    /// Starts moto and waits until it answers.
    pub fn start() -> Option<Moto> {
        let bin = std::env::var("SEALKIT_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let child = match Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                sealkit_skip::missing(
                    "moto_server",
                    format!("{bin}: {e}; scripts/test.sh installs it"),
                );
                return None;
            }
        };
        let moto = Moto {
            child,
            bin,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        moto.wait_ready();
        Some(moto)
    }

    fn wait_ready(&self) {
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("moto_server did not start on port {}", self.port);
    }

    /// Starts the server again on the same port (empty, like a fresh moto).
    pub fn restart(&mut self) {
        self.stop();
        self.child = Command::new(&self.bin)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto restarts");
        self.wait_ready();
    }

    /// Runs a Python snippet with `sm` (Secrets Manager) and `ssm` boto3 clients bound to this
    /// moto; panics with its stderr when it fails.
    pub fn py(&self, code: &str) -> String {
        let python = std::env::var("SEALKIT_MOTO_PYTHON").unwrap_or_else(|_| "python3".into());
        let prelude = format!(
            "import boto3, json\nkw = dict(endpoint_url='{}', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\nsm = boto3.client('secretsmanager', **kw)\nssm = boto3.client('ssm', **kw)\n",
            self.endpoint
        );
        let out = run(
            Command::new(python)
                .arg("-c")
                .arg(format!("{prelude}{code}")),
            b"",
        );
        assert!(
            out.status.success(),
            "boto3 snippet failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stops the server (its data is lost, as with a real outage plus a fresh start).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One HTTP response of a [`serve_http`] handler: status line (`"200 OK"`), content type, body.
pub type Reply = (&'static str, &'static str, String);

/// A stand-in HTTP/1.1 server on 127.0.0.1 (one request per connection) for tests that need an
/// API server's answers; `handler(method, target, body)` answers each request. Every request
/// line is logged in the returned list. Returns the base URL.
pub fn serve_http(
    handler: impl Fn(&str, &str, &[u8]) -> Reply + Send + 'static,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().expect("clone"));
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            let mut parts = request_line.split_whitespace();
            let method = parts.next().unwrap_or("").to_string();
            let target = parts.next().unwrap_or("").to_string();
            log.lock().expect("lock").push(format!("{method} {target}"));
            let (status, ctype, text) = handler(&method, &target, &body);
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (url, seen)
}
