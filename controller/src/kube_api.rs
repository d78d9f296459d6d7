//! The thin kube implementation of [`ClusterApi`](crate::unseal::reconcile::ClusterApi):
//! server-side apply with a named field manager for Secrets and SealedSecret status, and
//! events.k8s.io Events.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use sealkit_api::{SealedSecret, SealedSecretStatus};

use crate::unseal::reconcile::{ClusterApi, EventNote};

/// The cluster through the kube client.
pub struct KubeApi {
    client: Client,
    recorder: Recorder,
    manager: String,
}

impl KubeApi {
    /// A client-backed API writing as `manager`.
    pub fn new(client: Client, manager: &str) -> Self {
        let reporter = Reporter {
            controller: manager.to_string(),
            instance: std::env::var("POD_NAME").ok(),
        };
        KubeApi {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            manager: manager.to_string(),
        }
    }
}

impl ClusterApi for KubeApi {
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, String> {
        Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())
    }

    async fn apply_secret(&self, secret: &Secret) -> Result<(), String> {
        let ns = secret.metadata.namespace.clone().unwrap_or_default();
        let name = secret.name_any();
        let mut body = serde_json::to_value(secret).map_err(|e| e.to_string())?;
        body["apiVersion"] = "v1".into();
        body["kind"] = "Secret".into();
        Api::<Secret>::namespaced(self.client.clone(), &ns)
            .patch(
                &name,
                &PatchParams::apply(&self.manager).force(),
                &Patch::Apply(&body),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn set_status(
        &self,
        ss: &SealedSecret,
        status: &SealedSecretStatus,
    ) -> Result<(), String> {
        let body = serde_json::json!({
            "apiVersion": "bitnami.com/v1alpha1",
            "kind": "SealedSecret",
            "status": status,
        });
        Api::<SealedSecret>::namespaced(self.client.clone(), &ss.namespace().unwrap_or_default())
            .patch_status(
                &ss.name_any(),
                &PatchParams::apply(&self.manager).force(),
                &Patch::Apply(&body),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn event(&self, ss: &SealedSecret, note: EventNote) {
        let ev = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.to_string(),
            note: Some(note.message),
            action: "Unseal".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &ss.object_ref(&())).await {
            tracing::warn!(error = %e, "cannot record an Event");
        }
    }
}
