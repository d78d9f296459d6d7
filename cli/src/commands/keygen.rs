//! `sealkit keygen`: an offline sealing key pair in the upstream controller's formats
//! (PKCS#1 `tls.key`, self-signed `tls.crt`), optionally as an importable key Secret.

use std::path::Path;
use std::time::{Duration, Instant};

use sealkit_keys::seal::PrivateKey;
use sealkit_keys::seal::manifest::key_secret;

use crate::args::KeygenArgs;
use crate::error::CliError;
use crate::io::write_atomic;

/// Paths and facts of a generated key pair.
pub struct Generated {
    /// The key.
    pub key: PrivateKey,
    /// Its certificate (PEM).
    pub cert_pem: String,
    /// How long generation took.
    pub elapsed: Duration,
}

/// Generates a key and certificate and writes `tls.key` (0600) and `tls.crt` into `dir`.
pub fn generate_into(
    dir: &Path,
    bits: usize,
    cn: &str,
    days: u64,
    force: bool,
) -> Result<Generated, CliError> {
    let key_path = dir.join("tls.key");
    let cert_path = dir.join("tls.crt");
    if !force && (key_path.exists() || cert_path.exists()) {
        return Err(
            CliError::usage(format!("{} already holds a key pair", dir.display()))
                .with_hint("pass --force to replace it, or choose another --out-dir"),
        );
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::io_at(&format!("cannot create {}", dir.display()), &e))?;
    let started = Instant::now();
    let key = PrivateKey::generate(bits).map_err(|e| CliError::usage(e.to_string()))?;
    let cert_pem = key
        .self_signed_certificate(cn, Duration::from_secs(days.saturating_mul(86_400)))
        .map_err(|e| CliError::input(e.to_string()))?;
    let elapsed = started.elapsed();
    let key_pem = key
        .to_pkcs1_pem()
        .map_err(|e| CliError::input(e.to_string()))?;
    write_atomic(&key_path, key_pem.as_bytes(), Some(0o600))?;
    write_atomic(&cert_path, cert_pem.as_bytes(), Some(0o644))?;
    Ok(Generated {
        key,
        cert_pem,
        elapsed,
    })
}

/// Runs `sealkit keygen`.
pub fn run(a: &KeygenArgs) -> Result<(), CliError> {
    let g = generate_into(&a.out_dir, a.bits, &a.cn, a.days, a.force)?;
    if let Some(out) = &a.secret_out {
        let text = key_secret(&a.secret_name, &a.namespace, &g.key, &g.cert_pem)
            .map_err(|e| CliError::input(e.to_string()))?;
        write_atomic(out, text.as_bytes(), Some(0o600))?;
    }
    let dir = a.out_dir.display();
    println!(
        "generated a {}-bit sealing key in {:.1?}",
        a.bits, g.elapsed
    );
    println!("  fingerprint  {}", g.key.fingerprint());
    println!(
        "  certificate  {dir}/tls.crt   (public: seal with `sealkit seal --cert {dir}/tls.crt`)"
    );
    println!("  private key  {dir}/tls.key   (mode 0600: keep it offline, it opens every value)");
    if let Some(out) = &a.secret_out {
        println!(
            "  key Secret   {}   (kubectl apply it into the controller namespace to import the key)",
            out.display()
        );
    }
    Ok(())
}
