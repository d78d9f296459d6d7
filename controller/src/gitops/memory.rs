//! The in-memory cluster the GitOps tests and benchmarks run against: applied objects with
//! server-side apply and dry-run semantics ([`MemoryCluster`]), plus sources, Kustomizations,
//! Secrets, statuses, Events and finalizers ([`MemoryFlux`]), and identities that may only touch
//! what they were granted ([`MemoryActor`], for impersonation).

use std::collections::BTreeMap;
use std::sync::Mutex;

use kube::ResourceExt;
use sealkit_api::{GitRepository, GitRepositoryStatus, Kustomization, KustomizationStatus};
use serde_json::Value;

use super::reconcile::FluxApi;
use super::reconcile::apply::{ApplyApi, ObjRef};

/// An in-memory API server for apply tests: objects by [`ObjRef`] (without version), a fixed
/// set of namespaced kinds, server-side apply as "replace the fields we own", write counting.
#[derive(Default)]
pub struct MemoryCluster {
    /// Live objects.
    pub objects: Mutex<BTreeMap<ObjKey, Value>>,
    /// Writes (applies and deletes; dry-runs excluded).
    pub writes: Mutex<u64>,
    /// Kinds the "API server" knows: kind -> namespaced.
    pub kinds: Mutex<BTreeMap<String, bool>>,
    /// When set, applies of this kind fail.
    pub fail_kind: Mutex<Option<String>>,
    /// When set, applies of this kind fail with a message that quotes the object's values, as
    /// the API server quotes invalid values in validation errors.
    pub fail_echo: Mutex<Option<String>>,
}

/// (group, kind, namespace, name): an object regardless of version.
pub type ObjKey = (String, String, Option<String>, String);

fn key(r: &ObjRef) -> ObjKey {
    (
        r.group.clone(),
        r.kind.clone(),
        r.namespace.clone(),
        r.name.clone(),
    )
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryCluster {
    /// A cluster that knows the built-in kinds tests use.
    pub fn new() -> Self {
        let c = MemoryCluster::default();
        let mut k = locked(&c.kinds);
        for (kind, ns) in [
            ("Namespace", false),
            ("ConfigMap", true),
            ("Secret", true),
            ("Service", true),
            ("Deployment", true),
            ("CustomResourceDefinition", false),
            ("ClusterRole", false),
            ("SealedSecret", true),
        ] {
            k.insert(kind.to_string(), ns);
        }
        drop(k);
        c
    }

    /// Number of writes so far.
    pub fn writes(&self) -> u64 {
        *locked(&self.writes)
    }

    /// The live object `kind ns/name`.
    pub fn live(&self, kind: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        locked(&self.objects)
            .iter()
            .find(|((_, k, n, nm), _)| k == kind && n.as_deref() == ns && nm == name)
            .map(|(_, v)| v.clone())
    }
}

impl ApplyApi for MemoryCluster {
    async fn namespaced(&self, _api: &str, kind: &str) -> Result<Option<bool>, String> {
        Ok(locked(&self.kinds).get(kind).copied())
    }
    async fn get(&self, r: &ObjRef) -> Result<Option<Value>, String> {
        Ok(locked(&self.objects).get(&key(r)).cloned())
    }
    async fn apply(&self, obj: &Value, dry_run: bool, _force: bool) -> Result<Value, String> {
        let r = ObjRef::of(obj);
        if locked(&self.fail_kind).as_deref() == Some(r.kind.as_str()) {
            return Err("admission webhook denied the request".into());
        }
        if locked(&self.fail_echo).as_deref() == Some(r.kind.as_str()) {
            return Err(format!(
                "{} {:?} is invalid: Invalid value: {}",
                r.kind, r.name, obj
            ));
        }
        let mut result = obj.clone();
        if let Some(live) = locked(&self.objects).get(&key(&r)) {
            // Server-owned fields survive an apply.
            for f in ["uid", "creationTimestamp"] {
                if let Some(v) = live["metadata"].get(f) {
                    result["metadata"][f] = v.clone();
                }
            }
            if let Some(s) = live.get("status") {
                result["status"] = s.clone();
            }
        } else {
            result["metadata"]["uid"] = Value::String(format!("uid-{}", r.name));
        }
        if r.kind == "CustomResourceDefinition" && !dry_run {
            let kind = obj["spec"]["names"]["kind"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let ns = obj["spec"]["scope"] == "Namespaced";
            locked(&self.kinds).insert(kind, ns);
        }
        if !dry_run {
            locked(&self.objects).insert(key(&r), result.clone());
            *locked(&self.writes) += 1;
        }
        Ok(result)
    }
    async fn delete(&self, r: &ObjRef) -> Result<(), String> {
        locked(&self.objects).remove(&key(r));
        *locked(&self.writes) += 1;
        Ok(())
    }
}

/// An in-memory cluster for the sync loop: [`MemoryCluster`](MemoryCluster) plus
/// sources, Kustomizations, Secrets, statuses and Events.
#[derive(Default)]
pub struct MemoryFlux {
    /// Applied objects.
    pub cluster: MemoryCluster,
    /// GitRepositories by `ns/name`.
    pub repos: std::sync::Mutex<BTreeMap<String, GitRepository>>,
    /// Kustomizations by `ns/name`.
    pub kss: std::sync::Mutex<BTreeMap<String, Kustomization>>,
    /// Secret data by `ns/name`.
    pub secrets: std::sync::Mutex<BTreeMap<String, BTreeMap<String, Vec<u8>>>>,
    /// Statuses by Kustomization name.
    pub statuses: std::sync::Mutex<BTreeMap<String, KustomizationStatus>>,
    /// Events as `reason: message`.
    pub events: std::sync::Mutex<Vec<String>>,
    /// Finalizers by Kustomization name.
    pub finalizers: std::sync::Mutex<BTreeMap<String, Vec<String>>>,
    /// GitRepository statuses by `ns/name`.
    pub repo_statuses: std::sync::Mutex<BTreeMap<String, GitRepositoryStatus>>,
    /// What impersonated identities may touch: `system:serviceaccount:<ns>:<name>` →
    /// `(kind, namespace)` pairs. An identity not listed may touch nothing.
    pub grants: std::sync::Mutex<BTreeMap<String, Vec<(String, String)>>>,
    /// Who wrote what: `(identity, "apply|delete Kind ns/name")`; the controller's own identity
    /// is `controller`.
    pub writers: std::sync::Mutex<Vec<(String, String)>>,
}

fn lk<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// [`MemoryFlux`] as one identity: the controller (`None`, may do anything) or an
/// impersonated ServiceAccount, which may only touch what [`MemoryFlux::grants`] lists and is
/// refused otherwise with the API server's "forbidden".
pub struct MemoryActor<'a> {
    flux: &'a MemoryFlux,
    identity: Option<String>,
}

impl MemoryActor<'_> {
    fn allowed(&self, verb: &str, r: &ObjRef) -> Result<(), String> {
        let Some(who) = &self.identity else {
            return Ok(());
        };
        let ns = r.namespace.clone().unwrap_or_default();
        let ok = lk(&self.flux.grants)
            .get(who)
            .is_some_and(|g| g.iter().any(|(k, n)| *k == r.kind && *n == ns));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{}s {:?} is forbidden: User {who:?} cannot {verb} resource {:?} in API group {:?} in the namespace {ns:?}",
                r.kind.to_lowercase(),
                r.name,
                format!("{}s", r.kind.to_lowercase()),
                r.group
            ))
        }
    }

    fn who(&self) -> String {
        self.identity.clone().unwrap_or_else(|| "controller".into())
    }
}

impl ApplyApi for MemoryActor<'_> {
    async fn namespaced(&self, a: &str, k: &str) -> Result<Option<bool>, String> {
        self.flux.cluster.namespaced(a, k).await
    }
    async fn get(&self, r: &ObjRef) -> Result<Option<Value>, String> {
        self.allowed("get", r)?;
        self.flux.cluster.get(r).await
    }
    async fn apply(&self, o: &Value, dry: bool, force: bool) -> Result<Value, String> {
        self.allowed("patch", &ObjRef::of(o))?;
        let out = self.flux.cluster.apply(o, dry, force).await?;
        if !dry {
            lk(&self.flux.writers).push((self.who(), format!("apply {}", ObjRef::of(o))));
        }
        Ok(out)
    }
    async fn delete(&self, r: &ObjRef) -> Result<(), String> {
        self.allowed("delete", r)?;
        self.flux.cluster.delete(r).await?;
        lk(&self.flux.writers).push((self.who(), format!("delete {r}")));
        Ok(())
    }
}

impl FluxApi for MemoryFlux {
    type Actor<'a> = MemoryActor<'a>;
    async fn actor<'a>(
        &'a self,
        account: Option<(&'a str, &'a str)>,
    ) -> Result<MemoryActor<'a>, String> {
        Ok(MemoryActor {
            flux: self,
            identity: account.map(|(ns, n)| format!("system:serviceaccount:{ns}:{n}")),
        })
    }
    async fn git_repository(&self, ns: &str, name: &str) -> Result<Option<GitRepository>, String> {
        Ok(lk(&self.repos).get(&format!("{ns}/{name}")).cloned())
    }
    async fn kustomization(&self, ns: &str, name: &str) -> Result<Option<Kustomization>, String> {
        Ok(lk(&self.kss).get(&format!("{ns}/{name}")).cloned())
    }
    async fn secret_data(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        Ok(lk(&self.secrets).get(&format!("{ns}/{name}")).cloned())
    }
    async fn config_map_data(
        &self,
        _: &str,
        _: &str,
    ) -> Result<Option<BTreeMap<String, String>>, String> {
        Ok(None)
    }
    async fn set_status(&self, ks: &Kustomization, st: &KustomizationStatus) -> Result<(), String> {
        lk(&self.statuses).insert(ks.name_any(), st.clone());
        Ok(())
    }
    async fn set_repo_status(
        &self,
        repo: &GitRepository,
        st: &GitRepositoryStatus,
    ) -> Result<(), String> {
        let key = format!(
            "{}/{}",
            repo.namespace().unwrap_or_default(),
            repo.name_any()
        );
        lk(&self.repo_statuses).insert(key, st.clone());
        Ok(())
    }
    async fn event(&self, _: &Kustomization, _: bool, reason: &str, message: &str) {
        lk(&self.events).push(format!("{reason}: {message}"));
    }
    async fn set_finalizers(&self, ks: &Kustomization, f: Vec<String>) -> Result<(), String> {
        lk(&self.finalizers).insert(ks.name_any(), f);
        Ok(())
    }
}
