//! The GitOps seam over the cluster: server-side apply of any kind through discovery and
//! `DynamicObject`, reads of sources, Kustomizations, Secrets and ConfigMaps, status, Events and
//! finalizers — all through the shared connection and its one request budget.
//!
//! Apply, prune and health reads go through a [`KubeActor`]: the controller's own client, or
//! one that impersonates a Kustomization's ServiceAccount (`Impersonate-User:
//! system:serviceaccount:<ns>:<name>`; the API server adds the ServiceAccount's groups), built
//! once per identity by [`Kube::impersonating`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Scope};
use kube::{Client, Resource, ResourceExt};
use sealkit_api::{GitRepository, GitRepositoryStatus, Kustomization, KustomizationStatus};
use serde_json::Value;

use super::reconcile::FluxApi;
use super::reconcile::apply::{ApplyApi, ObjRef};
use crate::runtime::client::Kube;
use crate::runtime::status::Writer;

/// The cluster, for the sync loop.
pub struct KubeFlux {
    /// The shared connection (impersonating clients come from it, under the same budget).
    kube: Arc<Kube>,
    /// Status, Events, reads.
    pub writer: Writer,
    kinds: Mutex<HashMap<(String, String), (ApiResource, bool)>>,
}

impl KubeFlux {
    /// The cluster through `kube`, writing with `writer`.
    pub fn new(kube: Arc<Kube>, writer: Writer) -> Self {
        KubeFlux {
            kube,
            writer,
            kinds: Mutex::default(),
        }
    }

    fn client(&self) -> Client {
        self.writer.client().clone()
    }

    async fn resource(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<(ApiResource, bool)>, String> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(hit) = self.kinds.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(Some(hit));
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let found = match kube::discovery::pinned_kind(
            &self.client(),
            &GroupVersionKind::gvk(group, version, kind),
        )
        .await
        {
            Ok((ar, caps)) => Some((ar, caps.scope == Scope::Namespaced)),
            Err(kube::Error::Api(e)) if e.code == 404 => None,
            Err(e) => return Err(e.to_string()),
        };
        // Misses are not cached: a CRD applied in stage 1 is served moments later.
        if let Some(f) = &found
            && let Ok(mut m) = self.kinds.lock()
        {
            m.insert(key, f.clone());
        }
        Ok(found)
    }

    async fn dynamic(&self, client: &Client, r: &ObjRef) -> Result<Api<DynamicObject>, String> {
        let (ar, namespaced) =
            self.resource(&r.api_version(), &r.kind)
                .await?
                .ok_or_else(|| {
                    format!(
                        "the API server does not serve {} {}",
                        r.api_version(),
                        r.kind
                    )
                })?;
        Ok(match (&r.namespace, namespaced) {
            (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &ar),
            _ => Api::all_with(client.clone(), &ar),
        })
    }
}

/// The cluster as one identity: the controller's client or an impersonating one. Discovery
/// (which kinds exist, and their scope) is the controller's, shared.
pub struct KubeActor<'a> {
    flux: &'a KubeFlux,
    client: Client,
}

impl ApplyApi for KubeActor<'_> {
    async fn namespaced(&self, api_version: &str, kind: &str) -> Result<Option<bool>, String> {
        Ok(self.flux.resource(api_version, kind).await?.map(|(_, n)| n))
    }

    async fn get(&self, r: &ObjRef) -> Result<Option<Value>, String> {
        let api = match self.flux.dynamic(&self.client, r).await {
            Ok(a) => a,
            // A kind that is gone (CRD deleted) has no live objects.
            Err(_) => return Ok(None),
        };
        let obj = api.get_opt(&r.name).await.map_err(|e| e.to_string())?;
        obj.map(|o| serde_json::to_value(o).map_err(|e| e.to_string()))
            .transpose()
    }

    async fn apply(&self, obj: &Value, dry_run: bool, force: bool) -> Result<Value, String> {
        let r = ObjRef::of(obj);
        let api = self.flux.dynamic(&self.client, &r).await?;
        let mut params = PatchParams::apply(self.flux.writer.manager()).force();
        if dry_run {
            params = params.dry_run();
        }
        let res = api.patch(&r.name, &params, &Patch::Apply(obj)).await;
        let res = match res {
            Err(kube::Error::Api(e)) if force && !dry_run && e.message.contains("immutable") => {
                // spec.force: recreate an object whose immutable fields changed.
                api.delete(&r.name, &DeleteParams::foreground())
                    .await
                    .map_err(|e| e.to_string())?;
                api.patch(&r.name, &params, &Patch::Apply(obj)).await
            }
            other => other,
        };
        let out = res.map_err(|e| e.to_string())?;
        serde_json::to_value(out).map_err(|e| e.to_string())
    }

    async fn delete(&self, r: &ObjRef) -> Result<(), String> {
        let api = self.flux.dynamic(&self.client, r).await?;
        match api.delete(&r.name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl FluxApi for KubeFlux {
    type Actor<'a> = KubeActor<'a>;

    async fn actor<'a>(
        &'a self,
        account: Option<(&'a str, &'a str)>,
    ) -> Result<KubeActor<'a>, String> {
        let client = match account {
            None => self.client(),
            Some((ns, name)) => self
                .kube
                .impersonating(&format!("system:serviceaccount:{ns}:{name}"))?,
        };
        Ok(KubeActor { flux: self, client })
    }

    async fn git_repository(&self, ns: &str, name: &str) -> Result<Option<GitRepository>, String> {
        self.writer
            .get(Api::namespaced(self.client(), ns), name)
            .await
    }

    async fn kustomization(&self, ns: &str, name: &str) -> Result<Option<Kustomization>, String> {
        self.writer
            .get(Api::namespaced(self.client(), ns), name)
            .await
    }

    async fn secret_data(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        let s = Api::<Secret>::namespaced(self.client(), ns)
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?;
        Ok(s.map(|s| {
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect()
        }))
    }

    async fn config_map_data(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, String> {
        let c = Api::<ConfigMap>::namespaced(self.client(), ns)
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?;
        Ok(c.map(|c| c.data.unwrap_or_default()))
    }

    async fn set_status(
        &self,
        ks: &Kustomization,
        status: &KustomizationStatus,
    ) -> Result<(), String> {
        self.writer.status(ks, status).await
    }

    async fn set_repo_status(
        &self,
        repo: &GitRepository,
        status: &GitRepositoryStatus,
    ) -> Result<(), String> {
        self.writer.status(repo, status).await
    }

    async fn event(&self, ks: &Kustomization, warning: bool, reason: &str, message: &str) {
        self.writer
            .event(ks.object_ref(&()), warning, reason, message, "Reconcile")
            .await;
    }

    async fn set_finalizers(
        &self,
        ks: &Kustomization,
        finalizers: Vec<String>,
    ) -> Result<(), String> {
        // A merge patch with the resourceVersion we read: a concurrent change is a conflict
        // (retried), never a lost finalizer of someone else's.
        let body = serde_json::json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": ks.resource_version(),
        }});
        match Api::<Kustomization>::namespaced(self.client(), &ks.namespace().unwrap_or_default())
            .patch(
                &ks.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&body),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Already gone: nothing left to finalize.
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}
