//! Writing what the loops report: status (server-side apply of the `status` subresource with
//! the controller's field manager) and Events (events.k8s.io). Reads of single objects go
//! through here too, so every loop reads and writes the same way.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};

/// The longest Event note we send (the API server refuses more than 1 KiB).
const MAX_NOTE: usize = 1024;

/// Status and Events, as one field manager.
pub struct Writer {
    client: Client,
    recorder: Recorder,
    manager: String,
}

impl Writer {
    /// Writes as `manager` through `client`.
    pub fn new(client: Client, manager: &str) -> Self {
        let reporter = Reporter {
            controller: manager.to_string(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Writer {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            manager: manager.to_string(),
        }
    }

    /// The client (under the shared budget).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The server-side-apply field manager.
    pub fn manager(&self) -> &str {
        &self.manager
    }

    /// Records an Event about `obj` (the note is cut at 1 KiB; it never holds a value).
    pub async fn event(
        &self,
        obj: ObjectReference,
        warning: bool,
        reason: &str,
        note: &str,
        action: &str,
    ) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note.chars().take(MAX_NOTE).collect()),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj).await {
            tracing::warn!(error = %e, "cannot record an Event");
        }
    }

    /// Server-side apply of `status` to a namespaced object.
    pub async fn status<K>(&self, obj: &K, status: &impl serde::Serialize) -> Result<(), String>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api = Api::<K>::namespaced(self.client.clone(), &obj.namespace().unwrap_or_default());
        self.apply_status(api, &obj.name_any(), status).await
    }

    /// Server-side apply of `status` to a cluster-scoped object.
    pub async fn cluster_status<K>(
        &self,
        obj: &K,
        status: &impl serde::Serialize,
    ) -> Result<(), String>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        self.apply_status(Api::<K>::all(self.client.clone()), &obj.name_any(), status)
            .await
    }

    async fn apply_status<K>(
        &self,
        api: Api<K>,
        name: &str,
        status: &impl serde::Serialize,
    ) -> Result<(), String>
    where
        K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let body = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        api.patch_status(
            name,
            &PatchParams::apply(&self.manager).force(),
            &Patch::Apply(&body),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    /// Server-side apply of a namespaced object with our field manager (forced: the fields we
    /// send are ours).
    pub async fn apply<K>(&self, obj: &K) -> Result<(), String>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let mut body = serde_json::to_value(obj).map_err(|e| e.to_string())?;
        body["apiVersion"] = K::api_version(&()).into();
        body["kind"] = K::kind(&()).into();
        Api::<K>::namespaced(self.client.clone(), &obj.namespace().unwrap_or_default())
            .patch(
                &obj.name_any(),
                &PatchParams::apply(&self.manager).force(),
                &Patch::Apply(&body),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// One object, or `None` when it does not exist.
    pub async fn get<K>(&self, api: Api<K>, name: &str) -> Result<Option<K>, String>
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        api.get_opt(name).await.map_err(|e| e.to_string())
    }
}
