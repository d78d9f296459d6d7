//! The unseal seam over the cluster: the Secret read and server-side applied with our field
//! manager, status and Events through the shared writer (and so the shared request budget).

use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::Api;
use sealkit_api::{SealedSecret, SealedSecretStatus};

use super::reconcile::{ClusterApi, EventNote};
use crate::runtime::status::Writer;

/// The cluster through the kube client.
pub struct KubeUnseal {
    /// Status, Events, reads.
    pub writer: Writer,
}

impl ClusterApi for KubeUnseal {
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, String> {
        let api = Api::namespaced(self.writer.client().clone(), namespace);
        self.writer.get(api, name).await
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
