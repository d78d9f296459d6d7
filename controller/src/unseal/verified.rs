//! Secrets known to hold their SealedSecret's values, by resourceVersion.
//!
//! Every write to a Secret changes its resourceVersion. So once a reconcile has read a Secret
//! and found it up to date ([`super::plan::verify`]), a later reconcile whose Secret the watch
//! cache shows at that same version, for the same spec and with the MAC key still in the
//! keyring, knows the answer without reading the Secret again: a resync of an up-to-date object
//! costs no request at all. After a restart, the map is filled from one paginated LIST of the
//! Secrets ([`Verified::fill`]) instead of one GET per object.
//!
//! Only versions are kept, never a value.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use sealkit_keys::seal::Keyring;

use super::plan::{Expected, verify};

struct Entry {
    version: String,
    hash: String,
    key: String,
}

/// `namespace/name` → the Secret's verified resourceVersion, spec hash and MAC key.
#[derive(Default)]
pub struct Verified {
    map: Mutex<HashMap<(String, String), Entry>>,
}

impl Verified {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that the Secret `namespace/name` at `version` holds what the spec with `hash`
    /// unseals to, with a MAC made by the key with fingerprint `key`.
    pub fn record(&self, namespace: &str, name: &str, version: &str, hash: &str, key: String) {
        self.lock().insert(
            (namespace.to_string(), name.to_string()),
            Entry {
                version: version.to_string(),
                hash: hash.to_string(),
                key,
            },
        );
    }

    /// Whether the Secret at `version` was verified for the spec with `hash`, and its MAC key
    /// is still in `keyring`.
    pub fn holds(
        &self,
        namespace: &str,
        name: &str,
        version: &str,
        hash: &str,
        keyring: &Keyring,
    ) -> bool {
        self.lock()
            .get(&(namespace.to_string(), name.to_string()))
            .is_some_and(|e| {
                e.version == version
                    && e.hash == hash
                    && keyring.keys().any(|k| k.fingerprint().as_str() == e.key)
            })
    }

    /// Forgets `namespace/name` (it was written, or is not up to date).
    pub fn forget(&self, namespace: &str, name: &str) {
        self.lock()
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// Whether the Secret `namespace/name` was found up to date with the spec of `hash` (at
    /// some version: whether that version is still the current one is [`Verified::holds`]).
    pub fn knows(&self, namespace: &str, name: &str, hash: &str) -> bool {
        self.lock()
            .get(&(namespace.to_string(), name.to_string()))
            .is_some_and(|e| e.hash == hash)
    }

    /// Forgets every entry whose SealedSecret `exists` no longer says is there (a deleted
    /// SealedSecret is never reconciled again, so its entry would stay forever).
    pub fn retain(&self, exists: impl Fn(&str, &str) -> bool) {
        self.lock().retain(|(ns, name), _| exists(ns, name));
    }

    /// How many Secrets are known.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records every Secret of `secrets` (one page of a LIST) that is up to date with its
    /// SealedSecret in `expected` (by `namespace/name`); returns how many were.
    pub fn fill(
        &self,
        expected: &HashMap<(String, String), Expected>,
        secrets: impl IntoIterator<Item = Secret>,
        keyring: &Keyring,
    ) -> usize {
        let mut n = 0;
        for s in secrets {
            let id = (s.namespace().unwrap_or_default(), s.name_any());
            let (Some(e), Some(version)) = (expected.get(&id), s.resource_version()) else {
                continue;
            };
            if let Some(key) = verify(e, &s, keyring) {
                self.record(&id.0, &id.1, &version, e.hash(), key);
                n += 1;
            }
        }
        n
    }
}
