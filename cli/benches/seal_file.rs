//! `sealkit seal` of a 1000-Secret multi-document file with 3 values each: the library path
//! the binary takes (parse, seal, emit) under criterion, then the release binary end to end.
//!
//! Run: `cargo bench -p sealkit-cli --bench seal_file`.

use std::hint::black_box;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::Criterion;
use sealkit_cli::commands::seal::seal_text;
use sealkit_keys::seal::manifest::{Format, SealOptions};
use sealkit_keys::seal::{PrivateKey, PublicKey};

fn input(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: app-{i}\n  namespace: team-{}\ntype: Opaque\nstringData:\n  username: user-{i}\n  password: pw-{i}-correct-horse-battery\n  url: postgres://user-{i}@db:5432/app\n",
            i % 7
        ));
    }
    s
}

fn main() {
    let key = PrivateKey::generate(4096).expect("keygen");
    let cert = key
        .self_signed_certificate("bench", Duration::from_secs(3600))
        .expect("cert");
    let public = PublicKey::from_certificate_pem(cert.as_bytes()).expect("cert");
    let text = input(1000);
    let opts = SealOptions::default();

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    c.bench_function("seal 1000 Secrets x 3 values (library)", |b| {
        b.iter(|| seal_text("bench", black_box(&text), &opts, &public, Format::Yaml).expect("seal"))
    });
    c.final_summary();

    // End to end through the binary (built by cargo for this bench).
    let dir = tempfile::tempdir().expect("tmp");
    let cert_path = dir.path().join("cert.pem");
    std::fs::write(&cert_path, &cert).expect("write");
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sealkit"))
            .args(["seal", "-o", "yaml", "--cert"])
            .arg(&cert_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
        assert!(child.wait().expect("wait").success());
        best = best.min(started.elapsed());
    }
    println!(
        "\nsealkit seal (binary) of 1000 Secrets x 3 values: best of 5 = {best:.2?} ({} bytes in)",
        text.len()
    );
}
