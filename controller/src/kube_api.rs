//! The thin kube implementation of [`ClusterApi`](crate::unseal::reconcile::ClusterApi) and
//! [`SyncApi`]: server-side apply with a named field manager for Secrets and status, reads of
//! stores, ConfigMaps and namespaces, and events.k8s.io Events.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use sealkit_api::{
    ClusterSecretStore, ExternalSecret, ExternalSecretStatus, SealedSecret, SealedSecretStatus,
    SecretStore,
};

use crate::external::reconcile::SyncApi;
use crate::unseal::reconcile::{ClusterApi, EventNote};

/// A token bucket that makes callers wait: the client-side QPS/burst limit on the requests the
/// reconciler makes (watches are long-lived streams and are not counted).
pub struct Throttle {
    rate: f64,
    burst: f64,
    state: tokio::sync::Mutex<(f64, Instant)>,
}

impl Throttle {
    /// `qps` requests per second on average, `burst` at once.
    pub fn new(qps: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Throttle {
            rate: qps.max(0.001),
            burst,
            state: tokio::sync::Mutex::new((burst, Instant::now())),
        }
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut s = self.state.lock().await;
                let now = Instant::now();
                s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.burst);
                s.1 = now;
                if s.0 >= 1.0 {
                    s.0 -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - s.0) / self.rate)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// The cluster through the kube client.
pub struct KubeApi {
    client: Client,
    recorder: Recorder,
    manager: String,
    throttle: Throttle,
}

impl KubeApi {
    /// A client-backed API writing as `manager`, at most `qps` requests per second (`burst` at once).
    pub fn new(client: Client, manager: &str, qps: f64, burst: u32) -> Self {
        let reporter = Reporter {
            controller: manager.to_string(),
            instance: std::env::var("POD_NAME").ok(),
        };
        KubeApi {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            manager: manager.to_string(),
            throttle: Throttle::new(qps, burst),
        }
    }
}

impl ClusterApi for KubeApi {
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, String> {
        self.get_opt(Api::namespaced(self.client.clone(), namespace), name)
            .await
    }

    async fn apply_secret(&self, secret: &Secret) -> Result<(), String> {
        self.throttle.acquire().await;
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
        self.patch_status(ss, status).await
    }

    async fn event(&self, ss: &SealedSecret, note: EventNote) {
        self.publish(
            ss.object_ref(&()),
            note.warning,
            note.reason,
            note.message,
            "Unseal",
        )
        .await;
    }
}

impl KubeApi {
    pub(crate) async fn publish(
        &self,
        obj: k8s_openapi::api::core::v1::ObjectReference,
        warning: bool,
        reason: &str,
        message: String,
        action: &str,
    ) {
        self.throttle.acquire().await;
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(message),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj).await {
            tracing::warn!(error = %e, "cannot record an Event");
        }
    }

    /// Server-side apply of `status` to a namespaced custom resource.
    pub(crate) async fn patch_status<K>(
        &self,
        obj: &K,
        status: &impl serde::Serialize,
    ) -> Result<(), String>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api = Api::<K>::namespaced(self.client.clone(), &obj.namespace().unwrap_or_default());
        self.apply_status(api, &obj.name_any(), status).await
    }

    /// Server-side apply of `status` to a cluster-scoped custom resource.
    pub(crate) async fn patch_cluster_status<K>(
        &self,
        obj: &K,
        status: &impl serde::Serialize,
    ) -> Result<(), String>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
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
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        self.throttle.acquire().await;
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

    /// The client.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The field manager.
    pub(crate) fn manager(&self) -> &str {
        &self.manager
    }

    /// Waits for a request token.
    pub(crate) async fn acquire(&self) {
        self.throttle.acquire().await;
    }

    pub(crate) async fn get_opt<K>(&self, api: Api<K>, name: &str) -> Result<Option<K>, String>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        self.throttle.acquire().await;
        api.get_opt(name).await.map_err(|e| e.to_string())
    }
}

impl SyncApi for KubeApi {
    async fn get_secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, String> {
        ClusterApi::get_secret(self, ns, name).await
    }

    async fn apply_secret(&self, secret: &Secret) -> Result<(), String> {
        ClusterApi::apply_secret(self, secret).await
    }

    async fn delete_secret(&self, ns: &str, name: &str, uid: &str) -> Result<(), String> {
        self.throttle.acquire().await;
        let params = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match Api::<Secret>::namespaced(self.client.clone(), ns)
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
            .get_opt(Api::<ConfigMap>::namespaced(self.client.clone(), ns), name)
            .await?;
        Ok(cm.map(|c| c.data.unwrap_or_default()))
    }

    async fn get_store(&self, ns: &str, name: &str) -> Result<Option<SecretStore>, String> {
        self.get_opt(Api::namespaced(self.client.clone(), ns), name)
            .await
    }

    async fn get_cluster_store(&self, name: &str) -> Result<Option<ClusterSecretStore>, String> {
        self.get_opt(Api::all(self.client.clone()), name).await
    }

    async fn namespace_labels(&self, ns: &str) -> Result<BTreeMap<String, String>, String> {
        let n = self
            .get_opt(Api::<Namespace>::all(self.client.clone()), ns)
            .await?;
        Ok(n.and_then(|n| n.metadata.labels).unwrap_or_default())
    }

    async fn set_status(
        &self,
        es: &ExternalSecret,
        status: &ExternalSecretStatus,
    ) -> Result<(), String> {
        self.patch_status(es, status).await
    }

    async fn event(&self, es: &ExternalSecret, warning: bool, reason: &str, message: &str) {
        self.publish(
            es.object_ref(&()),
            warning,
            reason,
            message.to_string(),
            "Sync",
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn throttle_allows_the_burst_then_paces() {
        let t = Throttle::new(100.0, 2);
        let start = Instant::now();
        for _ in 0..12 {
            t.acquire().await;
        }
        // 2 at once, then 10 more at 100/s: at least ~100 ms (a lower bound only).
        assert!(
            start.elapsed() >= Duration::from_millis(90),
            "{:?}",
            start.elapsed()
        );
    }
}
