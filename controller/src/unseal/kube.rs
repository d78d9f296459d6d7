//! The unseal seam over the cluster: the Secret read and server-side applied with our field
//! manager, status and Events through the shared writer (and so the shared request budget);
//! Secret versions from the owned-Secret watch cache.

use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};
use sealkit_api::{SealedSecret, SealedSecretStatus};

use super::reconcile::{ClusterApi, EventNote};
use crate::runtime::status::Writer;

/// The cluster through the kube client.
pub struct KubeUnseal {
    /// Status, Events, reads.
    pub writer: Writer,
    /// The owned-Secret watch cache (metadata only: never a value).
    pub secrets: Store<PartialObjectMeta<Secret>>,
}

impl ClusterApi for KubeUnseal {
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, String> {
        let api = Api::namespaced(self.writer.client().clone(), namespace);
        self.writer.get(api, name).await
    }

    async fn get_sealed(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<SealedSecret>, String> {
        let api = Api::namespaced(self.writer.client().clone(), namespace);
        self.writer.get(api, name).await
    }

    fn cached_version(&self, namespace: &str, name: &str) -> Option<String> {
        let key = ObjectRef::new(name).within(namespace);
        self.secrets.get(&key)?.metadata.resource_version.clone()
    }

    async fn apply_secret(&self, secret: &Secret) -> Result<(), String> {
        self.writer.apply(secret).await
    }

    async fn set_status(
        &self,
        ss: &SealedSecret,
        status: &SealedSecretStatus,
    ) -> Result<(), String> {
        self.writer.status(ss, status).await
    }

    async fn event(&self, ss: &SealedSecret, note: EventNote) {
        self.writer
            .event(
                ss.object_ref(&()),
                note.warning,
                note.reason,
                &note.message,
                "Unseal",
            )
            .await;
    }
}
