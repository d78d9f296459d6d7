//! Encrypt and decrypt a 10,000-leaf YAML file, beside a plain parse + emit of the same
//! plaintext with serde-saphyr (no crypto) measured in the same run.
//!
//! Run: `cargo bench -p sealkit-keys --bench sops`.

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use sealkit_keys::sops::{AgeIdentities, EncryptOptions, EncryptedFile, FileFormat, encrypt};

fn plaintext(leaves: usize) -> String {
    let mut s = String::from("# generated for the benchmark\n");
    for app in 0..leaves / 10 {
        s.push_str(&format!("app{app}:\n"));
        for k in 0..10 {
            s.push_str(&format!(
                "    key{k}: value-{app}-{k}-correct-horse-battery\n"
            ));
        }
    }
    s
}

fn main() {
    let text = plaintext(10_000);
    let id = age::x25519::Identity::generate();
    let ids = {
        use age::secrecy::ExposeSecret;
        AgeIdentities::parse(id.to_string().expose_secret()).expect("ids")
    };
    let opts = EncryptOptions {
        age: vec![id.to_public().to_string()],
        ..Default::default()
    };
    let encrypted = encrypt(text.as_bytes(), FileFormat::Yaml, &opts).expect("encrypt");
    let key = EncryptedFile::load(&encrypted, FileFormat::Yaml)
        .expect("load")
        .data_key(&ids)
        .expect("key");

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    c.bench_function("baseline: serde-saphyr parse + emit (10k leaves)", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_saphyr::from_str(black_box(&text)).expect("parse");
            serde_saphyr::to_string(&v).expect("emit")
        })
    });
    c.bench_function(
        "baseline: serde-saphyr parse + emit of the encrypted file",
        |b| {
            b.iter(|| {
                let v: serde_json::Value =
                    serde_saphyr::from_str(black_box(&encrypted)).expect("parse");
                serde_saphyr::to_string(&v).expect("emit")
            })
        },
    );
    c.bench_function(
        "baseline: yaml-edit (lossless) parse + emit of the encrypted file",
        |b| {
            b.iter(|| {
                use std::str::FromStr;
                yaml_edit::YamlFile::from_str(black_box(&encrypted))
                    .expect("parse")
                    .to_string()
            })
        },
    );
    c.bench_function("sops decrypt (10k leaves)", |b| {
        b.iter(|| {
            let f = EncryptedFile::load(black_box(&encrypted), FileFormat::Yaml).expect("load");
            f.decrypt_with_key(&key, false).expect("decrypt")
        })
    });
    c.bench_function("sops encrypt (10k leaves)", |b| {
        b.iter(|| encrypt(black_box(text.as_bytes()), FileFormat::Yaml, &opts).expect("encrypt"))
    });
    c.final_summary();
}
