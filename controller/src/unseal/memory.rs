//! The in-memory cluster the unseal reconcile tests and benchmarks run against: Secrets,
//! SealedSecret statuses and Events, with failure injection. It behaves as the API server does
//! where the reconcile depends on it (server-side apply merges, `type` defaults to Opaque).

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use sealkit_api::{SealedSecret, SealedSecretStatus};

use super::reconcile::{ClusterApi, EventNote};

/// An in-memory cluster: Secrets, SealedSecret statuses and Events, with failure injection.
#[derive(Default)]
pub struct MemoryApi {
    /// Secrets by `namespace/name`.
    pub secrets: Mutex<BTreeMap<String, Secret>>,
    /// Last status written per SealedSecret `namespace/name`.
    pub statuses: Mutex<BTreeMap<String, SealedSecretStatus>>,
    /// Events in order.
    pub events: Mutex<Vec<(String, EventNote)>>,
    /// Number of Secret writes.
    pub writes: Mutex<u64>,
    /// When set, applies fail with this message.
    pub fail_applies: Mutex<Option<String>>,
    /// Number of Secret reads.
    pub gets: Mutex<u64>,
    /// SealedSecrets by `namespace/name`, as the API server has them (what a reconcile of a
    /// lean cached copy reads).
    pub sealed: Mutex<BTreeMap<String, SealedSecret>>,
    /// Number of SealedSecret reads.
    pub sealed_gets: Mutex<u64>,
    /// The last resourceVersion given out (every write takes the next, as on the API server).
    pub version: Mutex<u64>,
}

impl MemoryApi {
    /// Changes the Secret `key` (`namespace/name`) as a user would, with a new resourceVersion.
    pub fn edit_secret(&self, key: &str, edit: impl FnOnce(&mut Secret)) {
        let version = self.next_version();
        if let Some(s) = self.secrets.lock().expect("lock").get_mut(key) {
            edit(s);
            s.metadata.resource_version = Some(version);
        }
    }

    fn next_version(&self) -> String {
        let mut v = self.version.lock().expect("lock");
        *v += 1;
        v.to_string()
    }
}

fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

impl ClusterApi for MemoryApi {
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, String> {
        *self.gets.lock().map_err(|e| e.to_string())? += 1;
        Ok(self
            .secrets
            .lock()
            .map_err(|e| e.to_string())?
            .get(&key(namespace, name))
            .cloned())
    }

    async fn get_sealed(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<SealedSecret>, String> {
        *self.sealed_gets.lock().map_err(|e| e.to_string())? += 1;
        Ok(self
            .sealed
            .lock()
            .map_err(|e| e.to_string())?
            .get(&key(namespace, name))
            .cloned())
    }

    /// An up-to-date watch cache.
    fn cached_version(&self, namespace: &str, name: &str) -> Option<String> {
        self.secrets
            .lock()
            .ok()?
            .get(&key(namespace, name))?
            .metadata
            .resource_version
            .clone()
    }

    async fn apply_secret(&self, secret: &Secret) -> Result<(), String> {
        if let Some(e) = self.fail_applies.lock().map_err(|e| e.to_string())?.clone() {
            return Err(e);
        }
        let k = key(
            secret.metadata.namespace.as_deref().unwrap_or(""),
            secret.metadata.name.as_deref().unwrap_or(""),
        );
        let mut map = self.secrets.lock().map_err(|e| e.to_string())?;
        // Server-side apply merges: keys we do not send stay.
        let merged = match map.remove(&k) {
            Some(mut old) => {
                let mut data = old.data.take().unwrap_or_default();
                data.extend(secret.data.clone().unwrap_or_default());
                let mut ann = old.metadata.annotations.take().unwrap_or_default();
                ann.extend(secret.metadata.annotations.clone().unwrap_or_default());
                let mut out = secret.clone();
                out.data = Some(data);
                out.metadata.annotations = Some(ann);
                if out.metadata.owner_references.is_none() {
                    out.metadata.owner_references = old.metadata.owner_references;
                }
                // `type` is immutable: a field we do not send keeps its value.
                if out.type_.is_none() {
                    out.type_ = old.type_;
                }
                out
            }
            None => secret.clone(),
        };
        // The API server defaults `type` on create, so what is read back is never untyped.
        let mut merged = merged;
        merged.type_.get_or_insert_with(|| "Opaque".to_string());
        merged.metadata.resource_version = Some(self.next_version());
        map.insert(k, merged);
        *self.writes.lock().map_err(|e| e.to_string())? += 1;
        Ok(())
    }

    async fn set_status(
        &self,
        ss: &SealedSecret,
        status: &SealedSecretStatus,
    ) -> Result<(), String> {
        self.statuses.lock().map_err(|e| e.to_string())?.insert(
            key(&ss.namespace().unwrap_or_default(), &ss.name_any()),
            status.clone(),
        );
        Ok(())
    }

    async fn event(&self, ss: &SealedSecret, note: EventNote) {
        if let Ok(mut ev) = self.events.lock() {
            ev.push((
                key(&ss.namespace().unwrap_or_default(), &ss.name_any()),
                note,
            ));
        }
    }
}
