//! The ExternalSecret seam over the cluster: Secrets (read, server-side applied with our field
//! manager, deleted with a uid precondition), stores, ConfigMaps, namespace labels, status and
//! Events, all through the shared writer and request budget.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::Resource;
use kube::api::{Api, DeleteParams, Preconditions};
use sealkit_api::{ClusterSecretStore, ExternalSecret, ExternalSecretStatus, SecretStore};

use super::reconcile::SyncApi;
use crate::runtime::status::Writer;

/// The cluster through the kube client.
pub struct KubeSync {
    /// Status, Events, reads and applies.
    pub writer: Writer,
}

impl KubeSync {
    fn client(&self) -> kube::Client {
        self.writer.client().clone()
    }
}

impl SyncApi for KubeSync {
    async fn get_secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, String> {
        self.writer
            .get(Api::namespaced(self.client(), ns), name)
            .await
    }

    async fn apply_secret(&self, secret: &Secret) -> Result<(), String> {
        self.writer.apply(secret).await
    }

    async fn delete_secret(&self, ns: &str, name: &str, uid: &str) -> Result<(), String> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match Api::<Secret>::namespaced(self.client(), ns)
            .delete(name, &params)
            .await
        {
            Ok(_) => Ok(()),
            // Gone already, or replaced by another Secret of that name (uid precondition).
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn get_config_map(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, String> {
        let cm = self
            .writer
            .get(Api::<ConfigMap>::namespaced(self.client(), ns), name)
            .await?;
        Ok(cm.map(|c| c.data.unwrap_or_default()))
    }

    async fn get_store(&self, ns: &str, name: &str) -> Result<Option<SecretStore>, String> {
        self.writer
            .get(Api::namespaced(self.client(), ns), name)
            .await
    }

    async fn get_cluster_store(&self, name: &str) -> Result<Option<ClusterSecretStore>, String> {
        self.writer.get(Api::all(self.client()), name).await
    }

    async fn namespace_labels(&self, ns: &str) -> Result<BTreeMap<String, String>, String> {
        let n = self
            .writer
            .get(Api::<Namespace>::all(self.client()), ns)
            .await?;
        Ok(n.and_then(|n| n.metadata.labels).unwrap_or_default())
    }

    async fn set_status(
        &self,
        es: &ExternalSecret,
        status: &ExternalSecretStatus,
    ) -> Result<(), String> {
        self.writer.status(es, status).await
    }

    async fn event(&self, es: &ExternalSecret, warning: bool, reason: &str, message: &str) {
        self.writer
            .event(es.object_ref(&()), warning, reason, message, "Sync")
            .await;
    }
}
