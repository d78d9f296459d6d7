//! The in-memory cluster the ExternalSecret reconcile tests and benchmarks run against, and a
//! provider factory that hands out one (in-memory or real) provider for every store.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use sealkit_api::{ClusterSecretStore, ExternalSecret, ExternalSecretStatus, SecretStore};

use super::provider::{BoxFut, FetchError, Provider};
use super::reconcile::SyncApi;
use super::store::{ProviderFactory, ResolvedStore};

/// An in-memory cluster for reconcile tests.
#[derive(Default)]
pub struct MemorySyncApi {
    /// Secrets by `ns/name`.
    pub secrets: Mutex<BTreeMap<String, Secret>>,
    /// ConfigMaps by `ns/name`.
    pub config_maps: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    /// SecretStores by `ns/name`.
    pub stores: Mutex<BTreeMap<String, SecretStore>>,
    /// ClusterSecretStores by name.
    pub cluster_stores: Mutex<BTreeMap<String, ClusterSecretStore>>,
    /// Namespace labels.
    pub namespaces: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    /// Statuses by `ns/name`.
    pub statuses: Mutex<BTreeMap<String, ExternalSecretStatus>>,
    /// Events: (`ns/name`, reason, message).
    pub events: Mutex<Vec<(String, String, String)>>,
    /// Secret writes.
    pub writes: Mutex<u64>,
    /// SecretStore and ClusterSecretStore reads.
    pub store_reads: Mutex<u64>,
}

fn k(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SyncApi for MemorySyncApi {
    async fn get_secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, String> {
        Ok(locked(&self.secrets).get(&k(ns, name)).cloned())
    }
    async fn apply_secret(&self, secret: &Secret) -> Result<(), String> {
        let key = k(
            secret.metadata.namespace.as_deref().unwrap_or(""),
            secret.metadata.name.as_deref().unwrap_or(""),
        );
        let mut map = locked(&self.secrets);
        // Server-side apply: our fields replace what we sent before; other owners' keys stay
        // (keys only we wrote are dropped when we stop sending them).
        let mut out = secret.clone();
        if let Some(old) = map.get(&key) {
            let ours_before: Vec<String> = old
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("test/managed-keys"))
                .map(|s| s.split(',').map(str::to_string).collect())
                .unwrap_or_default();
            let mut data = old.data.clone().unwrap_or_default();
            data.retain(|k, _| !ours_before.contains(k));
            data.extend(secret.data.clone().unwrap_or_default());
            out.data = Some(data);
            if out.type_.is_none() {
                out.type_ = old.type_.clone();
            }
            out.metadata.uid = old.metadata.uid.clone();
        }
        // The API server gives every new object a uid.
        out.metadata
            .uid
            .get_or_insert_with(|| format!("uid-secret-{key}"));
        let ours: Vec<String> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .collect();
        out.metadata
            .annotations
            .get_or_insert_default()
            .insert("test/managed-keys".into(), ours.join(","));
        map.insert(key, out);
        *locked(&self.writes) += 1;
        Ok(())
    }
    async fn delete_secret(&self, ns: &str, name: &str, uid: &str) -> Result<(), String> {
        let mut secrets = locked(&self.secrets);
        if secrets
            .get(&k(ns, name))
            .is_some_and(|s| s.metadata.uid.as_deref().unwrap_or("") == uid)
        {
            secrets.remove(&k(ns, name));
        }
        Ok(())
    }
    async fn get_config_map(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, String> {
        Ok(locked(&self.config_maps).get(&k(ns, name)).cloned())
    }
    async fn get_store(&self, ns: &str, name: &str) -> Result<Option<SecretStore>, String> {
        *locked(&self.store_reads) += 1;
        Ok(locked(&self.stores).get(&k(ns, name)).cloned())
    }
    async fn get_cluster_store(&self, name: &str) -> Result<Option<ClusterSecretStore>, String> {
        *locked(&self.store_reads) += 1;
        Ok(locked(&self.cluster_stores).get(name).cloned())
    }
    async fn namespace_labels(&self, ns: &str) -> Result<BTreeMap<String, String>, String> {
        Ok(locked(&self.namespaces)
            .get(ns)
            .cloned()
            .unwrap_or_default())
    }
    async fn set_status(
        &self,
        es: &ExternalSecret,
        status: &ExternalSecretStatus,
    ) -> Result<(), String> {
        locked(&self.statuses).insert(
            k(&es.namespace().unwrap_or_default(), &es.name_any()),
            status.clone(),
        );
        Ok(())
    }
    async fn event(&self, es: &ExternalSecret, _warning: bool, reason: &str, message: &str) {
        locked(&self.events).push((
            k(&es.namespace().unwrap_or_default(), &es.name_any()),
            reason.to_string(),
            message.to_string(),
        ));
    }
}

/// A factory that hands out one in-memory (or any) provider for every store.
pub struct FixedFactory(pub Arc<dyn Provider>);

impl ProviderFactory for FixedFactory {
    fn provider<'a>(
        &'a self,
        _: &'a ResolvedStore,
    ) -> BoxFut<'a, Result<Arc<dyn Provider>, FetchError>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}
