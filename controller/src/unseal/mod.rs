//! Unsealing SealedSecrets into Secrets. `plan` is the pure core of the reconciler: given a
//! SealedSecret, the Secret that exists today (if any) and the keyring, it decides what to do —
//! nothing (the Secret already holds this spec's values: no RSA work at all), apply a Secret,
//! refuse a name collision, or report why unsealing failed. The kube glue that watches, applies
//! and writes status lives beside it and stays thin.

pub mod keys;
mod plan;
pub mod reconcile;

pub use plan::{
    DATA_MAC_ANNOTATION, MANAGED_ANNOTATION, PATCH_ANNOTATION, Plan,
    SKIP_OWNER_REFERENCES_ANNOTATION, SPEC_HASH_ANNOTATION, managed_keys, plan, spec_hash,
};
