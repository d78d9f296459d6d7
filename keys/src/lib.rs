//! sealkit-keys: the pure half of sealkit.
//!
//! Bytes in, bytes out: kubeseal-compatible sealing (`seal`) and the secret-holding types
//! (`secret`). No async runtime, no Kubernetes client, no network: everything here can be
//! tested with fixed inputs and checked against independent implementations.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod gotemplate;
pub mod seal;
pub mod secret;
pub mod sops;
