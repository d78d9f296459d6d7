//! The apply phase: staged server-side apply with drift detection.
//!
//! - Objects get the ownership labels `kustomize.toolkit.fluxcd.io/name` and `/namespace`.
//! - Stage 1: CustomResourceDefinitions, Namespaces and cluster-scoped RBAC; stage 2: the rest
//!   (so custom resources and namespaced objects find their definitions and namespaces).
//! - Each object is dry-run applied first; when the dry-run result equals the live object there
//!   is no write, so a no-op resync makes zero writes.
//! - Names and namespaces become URL path segments of API requests (the client does not
//!   escape them), so an object or inventory entry whose name could change the request (`/`,
//!   `%`, `?`, `..`, …) is refused.
//! - API error texts are passed through the render's [`Redactor`] before they become errors:
//!   the API server quotes invalid values, which may have come out of SOPS.

use std::collections::BTreeSet;
use std::future::Future;

use kube::ResourceExt;
use sealkit_api::{InventoryEntry, Kustomization};
use sealkit_render::comparable;
use sealkit_render::redact::Redactor;
use serde_json::Value;

use super::{Failure, failure};
use crate::runtime::metrics::{ActionLabels, Metrics};

/// Ownership label: the Kustomization's name.
pub const NAME_LABEL: &str = "kustomize.toolkit.fluxcd.io/name";

/// Ownership label: the Kustomization's namespace.
pub const NAMESPACE_LABEL: &str = "kustomize.toolkit.fluxcd.io/namespace";

/// sealkit: set on an object that existed before a Kustomization first applied it (it carried
/// no ownership labels, or another Kustomization's). Such an object is adopted, never owned:
/// prune and garbage collection leave it in place. Kept on every later apply.
pub const ADOPTED_ANNOTATION: &str = "sealkit.dev/adopted";

/// Whether `live` is labelled as `owner`'s (namespace, name).
pub(super) fn labelled(live: &Value, owner: &(String, String)) -> bool {
    let labels = &live["metadata"]["labels"];
    labels[NAME_LABEL] == owner.1.as_str() && labels[NAMESPACE_LABEL] == owner.0.as_str()
}

/// Whether `live` is (or is about to become) adopted by `owner` rather than created by it.
fn adopting(live: &Value, owner: &(String, String)) -> bool {
    live["metadata"]["annotations"][ADOPTED_ANNOTATION] == "true" || !labelled(live, owner)
}

/// `o` with the adoption annotation.
fn mark_adopted(o: &Value) -> Value {
    let mut o = o.clone();
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        let a = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(a) = a.as_object_mut() {
            a.insert(ADOPTED_ANNOTATION.into(), Value::String("true".into()));
        }
    }
    o
}

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
        let marked;
        let o = match &live {
            Some(l) if adopting(l, &opts.owner) => {
                marked = mark_adopted(o);
                &marked
            }
            _ => o,
        };
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

/// What the apply phase did: the objects as prepared (with ownership labels), the report
/// (created, configured, unchanged; prune adds to it), and the options used.
pub(super) struct Applied {
    pub(super) prepared: Vec<Value>,
    pub(super) report: Report,
    pub(super) opts: ApplyOptions,
}

impl Applied {
    /// Counts the objects by action into `sealkit_gitops_objects_total`.
    pub(super) fn count(&self, metrics: &Metrics) {
        let r = &self.report;
        for (action, n) in [
            ("created", r.created.len()),
            ("configured", r.configured.len()),
            ("unchanged", r.unchanged),
            ("pruned", r.pruned.len()),
        ] {
            metrics
                .gitops_objects
                .get_or_create(&ActionLabels {
                    action: action.into(),
                })
                .inc_by(n as u64);
        }
    }

    /// The Event text when something changed (`None`: nothing did).
    pub(super) fn summary(&self, revision: &str) -> Option<String> {
        let r = &self.report;
        if r.created.is_empty() && r.configured.is_empty() && r.pruned.is_empty() {
            return None;
        }
        let kept = if r.kept.is_empty() {
            String::new()
        } else {
            format!("; kept: {}", r.kept.join(", "))
        };
        Some(format!(
            "{revision}: {} created, {} configured, {} pruned, {} unchanged{kept}",
            r.created.len(),
            r.configured.len(),
            r.pruned.len(),
            r.unchanged,
        ))
    }
}

/// The apply phase: prepares (ownership labels, target namespace) and applies `values` as the
/// actor, stage by stage, writing only what drifted.
pub(super) async fn apply<A: ApplyApi>(
    ks: &Kustomization,
    actor: &A,
    values: Vec<Value>,
    redactor: &std::sync::Arc<Redactor>,
) -> Result<Applied, Failure> {
    let opts = ApplyOptions {
        owner: (ks.namespace().unwrap_or_default(), ks.name_any()),
        target_namespace: ks.spec.target_namespace.clone().filter(|t| !t.is_empty()),
        force: ks.spec.force == Some(true),
        redactor: redactor.clone(),
    };
    let prepared = prepare(actor, values, &opts)
        .await
        .map_err(|e| failure("ReconciliationFailed", e.0))?;
    let report = apply_all(actor, &prepared, &opts)
        .await
        .map_err(|e| failure("ReconciliationFailed", e.0))?;
    Ok(Applied {
        prepared,
        report,
        opts,
    })
}

#[cfg(test)]
mod tests;
