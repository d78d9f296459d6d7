//! `sealkit demo`: the quickstart's main job with no cluster. It generates a key pair, seals
//! the example Secrets that ship with sealkit, recovers them with the private key, and shows
//! that a strict SealedSecret refuses to open under another namespace. Every step goes
//! through the same library code as `keygen`, `seal` and `seal --recovery-unseal`.

use std::path::PathBuf;
use std::time::Instant;

use base64::Engine as _;
use sealkit_keys::seal::manifest::{
    self, Format, SealOptions, emit, parse_documents, seal_secret, unseal,
};
use sealkit_keys::seal::{Keyring, PublicKey};
use sealkit_keys::secret::ExposeSecret;
use serde_json::Value;

use super::keygen::generate_into;
use crate::args::DemoArgs;
use crate::error::CliError;
use crate::io::write_atomic;

/// The example Secrets, embedded so the demo runs from any directory.
const EXAMPLES: [(&str, &str); 3] = [
    (
        "examples/secrets/db-credentials.yaml",
        include_str!("../../../examples/secrets/db-credentials.yaml"),
    ),
    (
        "examples/secrets/api-token.yaml",
        include_str!("../../../examples/secrets/api-token.yaml"),
    ),
    (
        "examples/secrets/registry.yaml",
        include_str!("../../../examples/secrets/registry.yaml"),
    ),
];

fn err(e: impl std::fmt::Display) -> CliError {
    CliError::input(e.to_string())
}

/// Runs the demo.
pub fn run(a: &DemoArgs) -> Result<(), CliError> {
    let tmp;
    let (dir, kept): (PathBuf, bool) = match &a.dir {
        Some(d) => (d.clone(), true),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("sealkit-demo-")
                .tempdir()
                .map_err(|e| CliError::io_at("cannot create a temporary directory", &e))?;
            (tmp.path().to_path_buf(), false)
        }
    };
    println!("sealkit demo: seal the example Secrets offline, then get them back\n");

    let g = generate_into(&dir.join("keys"), a.bits, "sealkit-demo", 30, true)?;
    let public = PublicKey::from_certificate_pem(g.cert_pem.as_bytes()).map_err(err)?;
    println!(
        "1. Generated a {}-bit sealing key pair in {:.2?}",
        a.bits, g.elapsed
    );
    println!(
        "     certificate   {}/keys/tls.crt  ({})",
        dir.display(),
        public.fingerprint()
    );
    println!(
        "     private key   {}/keys/tls.key  (mode 0600; in a cluster it never leaves the controller)",
        dir.display()
    );

    let started = Instant::now();
    let mut sealed_docs: Vec<(String, Value, Value)> = Vec::new();
    let mut rows = Vec::new();
    std::fs::create_dir_all(dir.join("sealed"))
        .map_err(|e| CliError::io_at("cannot create the output directory", &e))?;
    for (path, text) in EXAMPLES {
        let docs = parse_documents(text).map_err(|e| err(format!("{path}: {e}")))?;
        for doc in docs {
            let sealed = seal_secret(&doc.value, &SealOptions::default(), &public)
                .map_err(|e| err(format!("{path}: {e}")))?;
            let target = manifest::sealed_target(&sealed).map_err(err)?;
            let file = PathBuf::from(path)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let out = dir.join("sealed").join(&file);
            write_atomic(&out, emit(&sealed, Format::Yaml).as_bytes(), None)?;
            let count = sealed
                .pointer("/spec/encryptedData")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len());
            let place = match target.scope {
                sealkit_keys::seal::Scope::Strict => {
                    format!("{}/{}", target.namespace, target.name)
                }
                sealkit_keys::seal::Scope::NamespaceWide => format!("{}/*", target.namespace),
                sealkit_keys::seal::Scope::ClusterWide => "*/*".to_string(),
            };
            rows.push(format!(
                "     {path:<40} -> sealed/{file:<20} {:<15} {place:<24} {count} values",
                target.scope.as_str()
            ));
            sealed_docs.push((path.to_string(), doc.value, sealed));
        }
    }
    let values: usize = sealed_docs
        .iter()
        .map(|(_, _, s)| {
            s.pointer("/spec/encryptedData")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len())
        })
        .sum();
    println!(
        "\n2. Sealed {} Secrets ({values} values) in {:.2?}; the files are safe to commit:",
        sealed_docs.len(),
        started.elapsed()
    );
    for r in rows {
        println!("{r}");
    }

    let mut ring = Keyring::new();
    ring.add(
        manifest::load_private_keys(g.key.to_pkcs1_pem().map_err(err)?.as_bytes())
            .map_err(err)?
            .remove(0),
    );
    let started = Instant::now();
    let mut matched = 0usize;
    let mut mismatched = Vec::new();
    for (path, original, sealed) in &sealed_docs {
        let secret = unseal(sealed, &ring).map_err(|e| err(format!("{path}: {e}")))?;
        let want = manifest::secret_items(original).map_err(err)?;
        for (k, v) in &want {
            let got = secret
                .pointer(&format!(
                    "/data/{}",
                    k.replace('~', "~0").replace('/', "~1")
                ))
                .and_then(Value::as_str)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
            if got.as_deref() == Some(v.expose_secret()) {
                matched += 1;
            } else {
                mismatched.push(format!("{path}: {k}"));
            }
        }
    }
    println!(
        "\n3. Recovered the Secrets with the private key (as `sealkit seal --recovery-unseal` does) in {:.2?}: {matched}/{values} values match the originals",
        started.elapsed()
    );

    if let Some((_, _, strict)) = sealed_docs.first() {
        let mut moved = strict.clone();
        moved["metadata"]["namespace"] = Value::from("staging");
        match unseal(&moved, &ring) {
            Ok(_) => mismatched.push("a strict SealedSecret opened in another namespace".into()),
            Err(e) => {
                let msg = e.to_string();
                let first = msg.split("; ").next().unwrap_or(&msg);
                println!(
                    "\n4. Scope protection: the same SealedSecret copied to namespace 'staging' does not open:"
                );
                println!("     {first}");
            }
        }
    }

    sops_step(&dir, &mut mismatched)?;

    if kept {
        println!(
            "\nEverything is in {}. Try: sealkit seal --cert {}/keys/tls.crt -f examples/secrets/db-credentials.yaml -o yaml",
            dir.display(),
            dir.display()
        );
    } else {
        println!(
            "\n(The key pair and sealed files were in a temporary directory, now removed; pass --dir DIR to keep them.)"
        );
    }
    if !mismatched.is_empty() {
        return Err(CliError::input(format!(
            "demo failed: {}",
            mismatched.join(", ")
        )));
    }
    println!("Done: every value round-tripped, and the scope check held.");
    Ok(())
}

/// Step 5: the same Secret as a SOPS file for an age identity (only the values encrypted, as
/// a `.sops.yaml` rule `encrypted_regex: ^(data|stringData)$` does), then decrypted back.
fn sops_step(dir: &std::path::Path, mismatched: &mut Vec<String>) -> Result<(), CliError> {
    use sealkit_keys::sops::{
        AgeIdentities, EncryptOptions, EncryptedFile, FileFormat, MetadataRule, encrypt,
    };
    let (path, plain) = EXAMPLES[0];
    let identity = age::x25519::Identity::generate();
    let ids = {
        use age::secrecy::ExposeSecret;
        let text = identity.to_string();
        let key_file = dir.join("keys").join("age.txt");
        write_atomic(
            &key_file,
            format!("{}\n", text.expose_secret()).as_bytes(),
            Some(0o600),
        )?;
        AgeIdentities::parse(text.expose_secret()).map_err(err)?
    };
    let opts = EncryptOptions {
        age: vec![identity.to_public().to_string()],
        rule: Some(MetadataRule::EncryptedRegex("^(data|stringData)$".into())),
        ..Default::default()
    };
    let started = Instant::now();
    let enc = encrypt(plain.as_bytes(), FileFormat::Yaml, &opts).map_err(err)?;
    let out = dir.join("sops").join("db-credentials.enc.yaml");
    std::fs::create_dir_all(dir.join("sops"))
        .map_err(|e| CliError::io_at("cannot create the output directory", &e))?;
    write_atomic(&out, enc.as_bytes(), None)?;
    let back = EncryptedFile::load(&enc, FileFormat::Yaml)
        .map_err(err)?
        .decrypt(&ids, false)
        .map_err(err)?;
    let same = back[..] == *plain.as_bytes();
    if !same {
        mismatched.push(format!("{path}: SOPS round trip differs"));
    }
    println!(
        "\n5. The same Secret as a SOPS file for an age recipient ({:.2?}), values encrypted, the rest readable:",
        started.elapsed()
    );
    for line in enc
        .lines()
        .take_while(|l| !l.starts_with("sops:"))
        .skip_while(|l| l.starts_with('#'))
    {
        let shown: String = line.chars().take(72).collect();
        println!("     {shown}{}", if line.len() > 72 { "…" } else { "" });
    }
    println!(
        "   decrypted with the age identity: {} (comments, order and quoting kept byte for byte)",
        if same {
            "identical to the original"
        } else {
            "DIFFERENT"
        }
    );
    Ok(())
}
