//! Seal and unseal of one value with a 4096-bit key (criterion), followed by a same-run
//! comparison with `openssl speed rsa4096`: our unseal rate against OpenSSL's private-key
//! (sign) rate and our seal rate against its public-key (verify) rate.
//!
//! Run: `cargo bench -p sealkit-keys --bench seal`.

use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::Criterion;
use sealkit_keys::seal::{PrivateKey, open, seal};

fn rate(mut f: impl FnMut(), secs: f64) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// (sign/s, verify/s) from `openssl speed -seconds N rsa4096`.
fn openssl_rsa4096(seconds: u32) -> Option<(f64, f64)> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", &seconds.to_string(), "rsa4096"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("rsa 4096 bits"))?;
    let nums: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    // "rsa 4096 bits 0.005935s 0.000090s 168.5 11100.0" -> the last two are the rates.
    match nums.as_slice() {
        [.., sign, verify] => Some((*sign, *verify)),
        _ => None,
    }
}

fn main() {
    let key = PrivateKey::generate(4096).expect("keygen");
    let label = b"prod/db-credentials";
    let value = b"correct-horse-battery-staple";
    let blob = seal(key.public_key(), label, value).expect("seal");

    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(5));
    c.bench_function("seal 1 value (RSA-4096)", |b| {
        b.iter(|| seal(key.public_key(), black_box(label), black_box(value)).expect("seal"))
    });
    c.bench_function("unseal 1 value (RSA-4096)", |b| {
        b.iter(|| open(&key, black_box(label), black_box(&blob)).expect("open"))
    });
    c.final_summary();

    // Same-run baseline.
    let unseal_rate = rate(|| drop(black_box(open(&key, label, &blob))), 3.0);
    let seal_rate = rate(
        || drop(black_box(seal(key.public_key(), label, value))),
        3.0,
    );
    println!("\n== same-run comparison with `openssl speed -seconds 3 rsa4096` ==");
    match openssl_rsa4096(3) {
        Some((sign, verify)) => {
            println!("openssl private-key ops (sign/s)      {sign:>10.1}");
            println!(
                "sealkit unseal (OAEP+GCM) per second  {unseal_rate:>10.1}   ratio {:.2}x",
                unseal_rate / sign
            );
            println!("openssl public-key ops (verify/s)     {verify:>10.1}");
            println!(
                "sealkit seal (OAEP+GCM) per second    {seal_rate:>10.1}   ratio {:.2}x",
                seal_rate / verify
            );
        }
        None => println!(
            "openssl speed not available; sealkit unseal {unseal_rate:.1}/s, seal {seal_rate:.1}/s"
        ),
    }
}
