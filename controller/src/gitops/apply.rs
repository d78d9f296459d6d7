//! Staged server-side apply with drift detection, and pruning that refuses to do harm.
//!
//! - Objects get the ownership labels `kustomize.toolkit.fluxcd.io/name` and `/namespace`.
//! - Stage 1: CustomResourceDefinitions, Namespaces and cluster-scoped RBAC; stage 2: the rest
//!   (so custom resources and namespaced objects find their definitions and namespaces).
//! - Each object is dry-run applied first; when the dry-run result equals the live object there
//!   is no write, so a no-op resync makes zero writes.
//! - Prune only after every apply succeeded, never when the render is empty or would delete
//!   more than a threshold of the inventory (default 50 %), only objects that are both in the
//!   inventory and labelled as this Kustomization's, and never one annotated
//!   `kustomize.toolkit.fluxcd.io/prune: disabled`.
//! - Names and namespaces become URL path segments of API requests (the client does not
//!   escape them), so an object or inventory entry whose name could change the request (`/`,
//!   `%`, `?`, `..`, …) is refused.
//! - API error texts are passed through the render's [`Redactor`] before they become errors:
//!   the API server quotes invalid values, which may have come out of SOPS.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Mutex;

use sealkit_api::InventoryEntry;
use sealkit_render::redact::Redactor;
use serde_json::Value;

/// Ownership label: the Kustomization's name.
pub const NAME_LABEL: &str = "kustomize.toolkit.fluxcd.io/name";
/// Ownership label: the Kustomization's namespace.
pub const NAMESPACE_LABEL: &str = "kustomize.toolkit.fluxcd.io/namespace";
/// `disabled` keeps an object from being pruned.
pub const PRUNE_ANNOTATION: &str = "kustomize.toolkit.fluxcd.io/prune";
/// sealkit: percentage of the inventory a single prune may delete (default 50; 100 allows all).
pub const PRUNE_THRESHOLD_ANNOTATION: &str = "sealkit.io/prune-threshold-percent";
/// sealkit: `true` lets an empty render prune everything.
pub const ALLOW_EMPTY_ANNOTATION: &str = "sealkit.io/allow-empty-prune";

/// An object's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjRef {
    /// API group (`""` for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Namespace (None: cluster-scoped).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl ObjRef {
    /// From an object.
    pub fn of(v: &Value) -> ObjRef {
        let api = v["apiVersion"].as_str().unwrap_or("");
        let (group, version) = match api.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api.to_string()),
        };
        ObjRef {
            group,
            version,
            kind: v["kind"].as_str().unwrap_or("").to_string(),
            namespace: v["metadata"]["namespace"].as_str().map(str::to_string),
            name: v["metadata"]["name"].as_str().unwrap_or("").to_string(),
        }
    }

    /// `apiVersion`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Flux's inventory entry.
    pub fn entry(&self) -> InventoryEntry {
        InventoryEntry {
            id: format!(
                "{}_{}_{}_{}",
                self.namespace.as_deref().unwrap_or(""),
                self.name,
                self.group,
                self.kind
            ),
            v: self.version.clone(),
        }
    }

    /// Whether `name` can be an object's name in an API path: not empty, `.` or `..`, and
    /// without `/`, `%`, `?`, `#`, whitespace or control characters.
    pub fn valid_name(name: &str) -> bool {
        !name.is_empty()
            && name != "."
            && name != ".."
            && name.len() <= 253
            && !name
                .chars()
                .any(|c| matches!(c, '/' | '%' | '?' | '#') || c.is_whitespace() || c.is_control())
    }

    /// Whether the name and namespace can go into an API path (see [`ObjRef::valid_name`];
    /// a namespace is a lowercase RFC 1123 label).
    pub fn check(&self) -> Result<(), String> {
        if !ObjRef::valid_name(&self.name) {
            return Err(format!(
                "{} {:?}: metadata.name is not a valid object name",
                self.kind,
                self.name.chars().take(80).collect::<String>()
            ));
        }
        if let Some(ns) = &self.namespace {
            let label = ns.len() <= 63
                && !ns.is_empty()
                && ns
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !ns.starts_with('-')
                && !ns.ends_with('-');
            if !label {
                return Err(format!(
                    "{} {}: metadata.namespace {:?} is not a valid namespace name",
                    self.kind,
                    self.name,
                    ns.chars().take(80).collect::<String>()
                ));
            }
        }
        Ok(())
    }

    /// Back from an inventory entry.
    pub fn from_entry(e: &InventoryEntry) -> Option<ObjRef> {
        let mut parts = e.id.splitn(4, '_');
        let ns = parts.next()?;
        let name = parts.next()?;
        let group = parts.next()?;
        let kind = parts.next()?;
        Some(ObjRef {
            group: group.into(),
            version: e.v.clone(),
            kind: kind.into(),
            namespace: (!ns.is_empty()).then(|| ns.to_string()),
            name: name.into(),
        })
    }
}

impl std::fmt::Display for ObjRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// What the apply step needs from the cluster.
pub trait ApplyApi: Send + Sync {
    /// Whether a kind is namespaced (`None`: the API server does not know it).
    fn namespaced(
        &self,
        api_version: &str,
        kind: &str,
    ) -> impl Future<Output = Result<Option<bool>, String>> + Send;
    /// The live object.
    fn get(&self, r: &ObjRef) -> impl Future<Output = Result<Option<Value>, String>> + Send;
    /// Server-side apply; `dry_run` returns the result without persisting it.
    fn apply(
        &self,
        obj: &Value,
        dry_run: bool,
        force: bool,
    ) -> impl Future<Output = Result<Value, String>> + Send;
    /// Deletes an object.
    fn delete(&self, r: &ObjRef) -> impl Future<Output = Result<(), String>> + Send;
}

/// The result of one apply.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    /// Created.
    pub created: Vec<String>,
    /// Changed (drift corrected or new spec).
    pub configured: Vec<String>,
    /// Already as wanted (no write).
    pub unchanged: usize,
    /// Deleted by prune.
    pub pruned: Vec<String>,
    /// Left alone by prune, with why.
    pub kept: Vec<String>,
    /// The new inventory.
    pub inventory: Vec<InventoryEntry>,
}

/// Why an apply or prune stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ApplyError(pub String);

fn stage(v: &Value) -> u8 {
    match (
        v["apiVersion"].as_str().unwrap_or(""),
        v["kind"].as_str().unwrap_or(""),
    ) {
        (_, "CustomResourceDefinition") | ("v1", "Namespace") => 0,
        (a, "ClusterRole" | "ClusterRoleBinding")
            if a.starts_with("rbac.authorization.k8s.io/") =>
        {
            0
        }
        _ => 1,
    }
}

use sealkit_render::comparable;

/// Options of one apply.
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// The Kustomization `(namespace, name)`: ownership labels.
    pub owner: (String, String),
    /// `spec.targetNamespace`.
    pub target_namespace: Option<String>,
    /// `spec.force`.
    pub force: bool,
    /// The render's decrypted values, redacted from API errors.
    pub redactor: std::sync::Arc<Redactor>,
}

/// Sets ownership labels and the target namespace; drops cluster-scoped namespaces.
pub async fn prepare<A: ApplyApi>(
    api: &A,
    objects: Vec<Value>,
    opts: &ApplyOptions,
) -> Result<Vec<Value>, ApplyError> {
    let mut out = Vec::with_capacity(objects.len());
    let mut new_crds: BTreeSet<(String, String)> = BTreeSet::new();
    for o in &objects {
        if o["kind"] == "CustomResourceDefinition" {
            let group = o["spec"]["group"].as_str().unwrap_or("").to_string();
            let kind = o["spec"]["names"]["kind"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let scope = o["spec"]["scope"]
                .as_str()
                .unwrap_or("Namespaced")
                .to_string();
            new_crds.insert((format!("{group}/{kind}"), scope));
        }
    }
    for mut o in objects {
        let r = ObjRef::of(&o);
        let namespaced = match api
            .namespaced(&r.api_version(), &r.kind)
            .await
            .map_err(|e| ApplyError(format!("{r}: {e}")))?
        {
            Some(n) => n,
            None => match new_crds
                .iter()
                .find(|(k, _)| *k == format!("{}/{}", r.group, r.kind))
            {
                Some((_, scope)) => scope == "Namespaced",
                None => {
                    return Err(ApplyError(format!(
                        "{r}: the API server does not serve {} {} (is its CRD installed?)",
                        r.api_version(),
                        r.kind
                    )));
                }
            },
        };
        let meta = o
            .as_object_mut()
            .and_then(|m| {
                m.entry("metadata")
                    .or_insert_with(|| Value::Object(Default::default()))
                    .as_object_mut()
            })
            .ok_or_else(|| ApplyError(format!("{r}: metadata is not a mapping")))?;
        if namespaced {
            if let Some(t) = &opts.target_namespace {
                meta.insert("namespace".into(), Value::String(t.clone()));
            } else if !meta.contains_key("namespace") {
                meta.insert("namespace".into(), Value::String(opts.owner.0.clone()));
            }
        } else {
            meta.remove("namespace");
        }
        let labels = meta
            .entry("labels")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(l) = labels.as_object_mut() {
            l.insert(NAME_LABEL.into(), Value::String(opts.owner.1.clone()));
            l.insert(NAMESPACE_LABEL.into(), Value::String(opts.owner.0.clone()));
        }
        out.push(o);
    }
    for o in &out {
        ObjRef::of(o).check().map_err(ApplyError)?;
    }
    // Stable: stage first, then the render's order.
    out.sort_by_key(stage);
    let mut seen = BTreeSet::new();
    for o in &out {
        if !seen.insert(ObjRef::of(o)) {
            return Err(ApplyError(format!(
                "{} appears twice in the render",
                ObjRef::of(o)
            )));
        }
    }
    Ok(out)
}

/// Applies prepared objects: dry-run, compare, write only what differs.
pub async fn apply_all<A: ApplyApi>(
    api: &A,
    objects: &[Value],
    opts: &ApplyOptions,
) -> Result<Report, ApplyError> {
    let mut report = Report::default();
    let redact = |e: String| opts.redactor.redact(&e);
    for o in objects {
        let r = ObjRef::of(o);
        let live = api
            .get(&r)
            .await
            .map_err(|e| ApplyError(format!("{r}: {}", redact(e))))?;
        let dry = api
            .apply(o, true, opts.force)
            .await
            .map_err(|e| ApplyError(format!("{r}: dry-run apply failed: {}", redact(e))))?;
        match live {
            Some(l) if comparable(&l) == comparable(&dry) => report.unchanged += 1,
            live => {
                api.apply(o, false, opts.force)
                    .await
                    .map_err(|e| ApplyError(format!("{r}: apply failed: {}", redact(e))))?;
                if live.is_some() {
                    report.configured.push(r.to_string());
                } else {
                    report.created.push(r.to_string());
                }
            }
        }
        report.inventory.push(r.entry());
    }
    report.inventory.sort();
    Ok(report)
}

/// Prune policy from the Kustomization's annotations.
#[derive(Debug, Clone)]
pub struct PrunePolicy {
    /// Percentage of the old inventory one prune may delete.
    pub threshold_percent: u32,
    /// An empty render may prune everything.
    pub allow_empty: bool,
}

impl PrunePolicy {
    /// From annotations (defaults: 50 %, empty refused).
    pub fn from_annotations(a: Option<&BTreeMap<String, String>>) -> PrunePolicy {
        PrunePolicy {
            threshold_percent: a
                .and_then(|a| a.get(PRUNE_THRESHOLD_ANNOTATION))
                .and_then(|v| v.parse().ok())
                .unwrap_or(50)
                .min(100),
            allow_empty: a
                .and_then(|a| a.get(ALLOW_EMPTY_ANNOTATION))
                .is_some_and(|v| v == "true"),
        }
    }
}

/// Deletes what left the render, within the policy.
pub async fn prune<A: ApplyApi>(
    api: &A,
    old: &[InventoryEntry],
    report: &mut Report,
    owner: &(String, String),
    policy: &PrunePolicy,
) -> Result<(), ApplyError> {
    let new: BTreeSet<&str> = report.inventory.iter().map(|e| e.id.as_str()).collect();
    let candidates: Vec<&InventoryEntry> = old
        .iter()
        .filter(|e| !new.contains(e.id.as_str()))
        .collect();
    if candidates.is_empty() {
        return Ok(());
    }
    if report.inventory.is_empty() && !policy.allow_empty {
        return Err(ApplyError(format!(
            "refusing to prune: the render is empty and would delete all {} objects (annotate the Kustomization {ALLOW_EMPTY_ANNOTATION}=true if this is intended)",
            old.len()
        )));
    }
    let limit = old.len() * policy.threshold_percent as usize / 100;
    if !report.inventory.is_empty()
        && candidates.len() > limit.max(1)
        && policy.threshold_percent < 100
    {
        return Err(ApplyError(format!(
            "refusing to prune {} of {} objects (more than {}%; annotate the Kustomization {PRUNE_THRESHOLD_ANNOTATION}=100 if this is intended)",
            candidates.len(),
            old.len(),
            policy.threshold_percent
        )));
    }
    for e in candidates {
        let Some(r) = ObjRef::from_entry(e) else {
            continue;
        };
        // The inventory is in the status, which is not ours alone to write.
        if r.check().is_err() {
            report
                .kept
                .push(format!("{r} (not a valid object reference)"));
            continue;
        }
        let live = api
            .get(&r)
            .await
            .map_err(|err| ApplyError(format!("{r}: {err}")))?;
        let Some(live) = live else { continue };
        let labels = &live["metadata"]["labels"];
        let ours =
            labels[NAME_LABEL] == owner.1.as_str() && labels[NAMESPACE_LABEL] == owner.0.as_str();
        if !ours {
            report
                .kept
                .push(format!("{r} (not labelled as this Kustomization's)"));
            continue;
        }
        if live["metadata"]["annotations"][PRUNE_ANNOTATION] == "disabled" {
            report
                .kept
                .push(format!("{r} ({PRUNE_ANNOTATION}: disabled)"));
            continue;
        }
        api.delete(&r)
            .await
            .map_err(|err| ApplyError(format!("{r}: delete failed: {err}")))?;
        report.pruned.push(r.to_string());
    }
    Ok(())
}

/// Health of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Ready.
    Healthy,
    /// Not yet.
    Progressing(String),
    /// Will not become ready by waiting.
    Failed(String),
}

/// Health of Deployments, StatefulSets, DaemonSets, Jobs and objects with a Ready condition;
/// anything else is healthy once it exists.
pub fn health(v: &Value) -> Health {
    let st = &v["status"];
    let generation = v["metadata"]["generation"].as_i64().unwrap_or(0);
    let observed = st["observedGeneration"].as_i64().unwrap_or(-1);
    let n = |f: &str| st[f].as_i64().unwrap_or(0);
    let want = v["spec"]["replicas"].as_i64().unwrap_or(1);
    match v["kind"].as_str().unwrap_or("") {
        "Deployment" | "StatefulSet" if observed < generation => {
            Health::Progressing("the controller has not observed the latest spec".into())
        }
        "Deployment" => {
            if n("updatedReplicas") >= want && n("availableReplicas") >= want {
                Health::Healthy
            } else {
                Health::Progressing(format!(
                    "{}/{want} replicas available",
                    n("availableReplicas")
                ))
            }
        }
        "StatefulSet" => {
            if n("readyReplicas") >= want && n("updatedReplicas") >= want {
                Health::Healthy
            } else {
                Health::Progressing(format!("{}/{want} replicas ready", n("readyReplicas")))
            }
        }
        "DaemonSet" => {
            let desired = n("desiredNumberScheduled");
            if observed >= generation
                && n("numberReady") >= desired
                && n("updatedNumberScheduled") >= desired
            {
                Health::Healthy
            } else {
                Health::Progressing(format!("{}/{desired} pods ready", n("numberReady")))
            }
        }
        "Job" => {
            let conds = st["conditions"].as_array().cloned().unwrap_or_default();
            if conds
                .iter()
                .any(|c| c["type"] == "Complete" && c["status"] == "True")
            {
                Health::Healthy
            } else if let Some(c) = conds
                .iter()
                .find(|c| c["type"] == "Failed" && c["status"] == "True")
            {
                Health::Failed(
                    c["message"]
                        .as_str()
                        .unwrap_or("the Job failed")
                        .to_string(),
                )
            } else {
                Health::Progressing("the Job has not completed".into())
            }
        }
        _ => match st["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        {
            Some(c) if c["status"] == "True" => Health::Healthy,
            Some(c) => {
                Health::Progressing(c["message"].as_str().unwrap_or("not Ready").to_string())
            }
            None => Health::Healthy,
        },
    }
}

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

#[cfg(test)]
mod tests;
