//! Where the sealing certificate comes from: a file, a `file://` URL, or an http(s) URL
//! (fetched with rustls on the aws-lc-rs provider; `SSL_CERT_FILE` adds a private CA).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sealkit_keys::seal::{KeyError, PublicKey};

use crate::error::CliError;
use crate::io::read_bytes;

/// Reads the certificate bytes named by `--cert`.
pub fn fetch(source: &str) -> Result<Vec<u8>, CliError> {
    if let Some(path) = source.strip_prefix("file://") {
        return read_bytes(Path::new(path));
    }
    if source.starts_with("http://") || source.starts_with("https://") {
        return fetch_url(source);
    }
    read_bytes(Path::new(source))
}

fn fetch_url(url: &str) -> Result<Vec<u8>, CliError> {
    use ureq::tls::{RootCerts, TlsConfig, TlsProvider};
    let mut tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        );
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        let pem = read_bytes(Path::new(&file))?;
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        tls = tls.root_certs(RootCerts::new_with_certs(&certs));
    }
    let agent = ureq::Agent::config_builder()
        .tls_config(tls.build())
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent();
    let mut resp = agent
        .get(url)
        .header("Accept", "application/x-pem-file, */*")
        .call()
        .map_err(|e| CliError::io(format!("cannot fetch certificate from {url}: {e}")))?;
    resp.body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_vec()
        .map_err(|e| CliError::io(format!("cannot fetch certificate from {url}: {e}")))
}

/// Loads and checks the public key of `--cert`, or, without one, the controller's certificate
/// fetched through the API server (as kubeseal does).
pub fn load(
    source: Option<&str>,
    cluster: Option<&crate::cluster::Target<'_>>,
) -> Result<PublicKey, CliError> {
    let (pem, name) = match (source, cluster) {
        (Some(s), _) => (fetch(s)?, s.to_string()),
        (None, Some(t)) => (
            crate::cluster::fetch_cert(t).map_err(|e| {
                e.with_context("without --cert, the certificate is fetched from the controller")
            })?,
            format!("the certificate of {}/{}", t.namespace, t.name),
        ),
        (None, None) => {
            return Err(CliError::usage("no certificate given")
                .with_hint("pass --cert FILE|URL (or set SEALED_SECRETS_CERT)"));
        }
    };
    PublicKey::from_certificate_pem(&pem).map_err(|e| {
        // The pem crate's error for a bad body is the base64 crate's (a byte and its offset):
        // not repeated.
        let e = match e {
            KeyError::Pem(_) => "invalid PEM: the base64 body does not decode".to_string(),
            other => other.to_string(),
        };
        CliError::input(format!("{name}: {e}")).with_hint(
            "--cert must be the controller's certificate (`sealkit seal --fetch-cert` prints it)",
        )
    })
}
