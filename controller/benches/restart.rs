//! The restart path: N SealedSecrets whose Secrets are already in sync are planned again, as
//! after a controller restart. Reports time per object and RSA private-key operations, beside
//! the full unseal of the same objects measured in the same run.
//!
//! Run: `cargo bench -p sealkit-controller --bench restart` (SEALKIT_BENCH_OBJECTS, default 1000).

use std::hint::black_box;
use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use sealkit_api::SealedSecret;
use sealkit_controller::unseal::{Plan, plan};
use sealkit_keys::seal::manifest::{SealOptions, seal_secret};
use sealkit_keys::seal::{Keyring, PrivateKey};

fn main() {
    let n: usize = std::env::var("SEALKIT_BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let key = PrivateKey::generate(4096).expect("keygen");
    let pem = key.to_pkcs1_pem().expect("pem");
    let mut keyring = Keyring::new();
    keyring.add(
        PrivateKey::from_pem_all(pem.as_bytes())
            .expect("pem")
            .remove(0),
    );

    let objects: Vec<SealedSecret> = (0..n)
        .map(|i| {
            let secret = serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": format!("app-{i}"), "namespace": "bench"},
                "stringData": {"password": format!("pw-{i}-correct-horse")}
            });
            let mut ss: SealedSecret = serde_json::from_value(
                seal_secret(&secret, &SealOptions::default(), key.public_key()).expect("seal"),
            )
            .expect("typed");
            ss.metadata.uid = Some(format!("uid-{i}"));
            ss
        })
        .collect();

    let started = Instant::now();
    let ops_before = keyring.private_key_operations();
    let secrets: Vec<Secret> = objects
        .iter()
        .map(|ss| match plan(ss, None, &keyring) {
            Plan::Apply(s) => *s,
            other => panic!("{other:?}"),
        })
        .collect();
    let full = started.elapsed();
    let full_ops = keyring.private_key_operations() - ops_before;

    let ops_before = keyring.private_key_operations();
    let started = Instant::now();
    for (ss, s) in objects.iter().zip(&secrets) {
        assert!(matches!(
            black_box(plan(ss, Some(s), &keyring)),
            Plan::UpToDate
        ));
    }
    let restart = started.elapsed();
    let restart_ops = keyring.private_key_operations() - ops_before;

    println!("objects: {n} (RSA-4096, one value each)");
    println!(
        "full unseal:  {full:>10.2?} total, {:>8.1} us/object, {full_ops} RSA private-key operations",
        full.as_secs_f64() * 1e6 / n as f64
    );
    println!(
        "restart path: {restart:>10.2?} total, {:>8.1} us/object, {restart_ops} RSA private-key operations  ({:.0}x faster)",
        restart.as_secs_f64() * 1e6 / n as f64,
        full.as_secs_f64() / restart.as_secs_f64()
    );
}
