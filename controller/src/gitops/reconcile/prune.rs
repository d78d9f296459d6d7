//! The prune phase, and garbage collection when a Kustomization is deleted. Pruning refuses to
//! do harm: never after a failed step, never when the render is empty or would delete more
//! than a threshold of the inventory (default 50 %), only objects that are both in the
//! inventory and labelled as this Kustomization's, and never one annotated
//! `kustomize.toolkit.fluxcd.io/prune: disabled`.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;
use sealkit_api::{InventoryEntry, Kustomization};

use super::apply::{ADOPTED_ANNOTATION, Applied, ApplyApi, ApplyError, ObjRef, Report, labelled};
use super::{Failure, FluxApi, GitopsSettings, Next, failure};

/// `disabled` keeps an object from being pruned.
pub const PRUNE_ANNOTATION: &str = "kustomize.toolkit.fluxcd.io/prune";

/// sealkit: percentage of the inventory a single prune may delete (default 50; 100 allows all).
pub const PRUNE_THRESHOLD_ANNOTATION: &str = "sealkit.dev/prune-threshold-percent";

/// sealkit: `true` lets an empty render prune everything.
pub const ALLOW_EMPTY_ANNOTATION: &str = "sealkit.dev/allow-empty-prune";

/// The names the two annotations above had before sealkit settled on one domain; still read.
const LEGACY: [(&str, &str); 2] = [
    (
        PRUNE_THRESHOLD_ANNOTATION,
        "sealkit.io/prune-threshold-percent",
    ),
    (ALLOW_EMPTY_ANNOTATION, "sealkit.io/allow-empty-prune"),
];

/// An annotation by its name, or by its legacy `sealkit.io/` name.
fn annotation<'a>(a: Option<&'a BTreeMap<String, String>>, name: &str) -> Option<&'a String> {
    let a = a?;
    a.get(name).or_else(|| {
        let (_, old) = LEGACY.iter().find(|(new, _)| *new == name)?;
        a.get(*old)
    })
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
            threshold_percent: annotation(a, PRUNE_THRESHOLD_ANNOTATION)
                .and_then(|v| v.parse().ok())
                .unwrap_or(50)
                .min(100),
            allow_empty: annotation(a, ALLOW_EMPTY_ANNOTATION).is_some_and(|v| v == "true"),
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
        if !labelled(&live, owner) {
            report
                .kept
                .push(format!("{r} (not labelled as this Kustomization's)"));
            continue;
        }
        if live["metadata"]["annotations"][ADOPTED_ANNOTATION] == "true" {
            report.kept.push(format!(
                "{r} (adopted: it existed before this Kustomization applied it)"
            ));
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

/// The finalizer that lets a deleted Kustomization with `prune: true` delete what it applied
/// (Flux's name, so objects Flux finalized are cleaned up by us after a migration, and back).
pub const FINALIZER: &str = "finalizers.fluxcd.io";

/// Deletion of a Kustomization: with `prune: true` (and not suspended), everything in its
/// inventory that still carries its labels is deleted (objects annotated
/// `kustomize.toolkit.fluxcd.io/prune: disabled` are kept), then the finalizer is removed;
/// otherwise the objects stay and only the finalizer goes. A failed delete keeps the
/// finalizer, so the next attempt finishes the job.
pub(super) async fn finalize<A: FluxApi>(
    ks: &Kustomization,
    api: &A,
    settings: &GitopsSettings,
) -> Result<Next, String> {
    let finalizers = ks.finalizers().to_vec();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Next::Wait);
    }
    if ks.spec.prune && ks.spec.suspend != Some(true) {
        // Deleted as the identity that applied them: the tenant's RBAC bounds the prune too.
        let account = match super::spec::service_account(ks, settings) {
            Ok(a) => a,
            Err(f) => {
                api.event(ks, true, "PruneFailed", &f.message).await;
                return Err(f.message);
            }
        };
        let ns = ks.namespace().unwrap_or_default();
        let actor = api
            .actor(account.as_deref().map(|a| (ns.as_str(), a)))
            .await?;
        let old = ks
            .status
            .as_ref()
            .and_then(|s| s.inventory.as_ref())
            .map(|i| i.entries.clone())
            .unwrap_or_default();
        let owner = (ks.namespace().unwrap_or_default(), ks.name_any());
        let mut report = Report::default();
        let everything = PrunePolicy {
            threshold_percent: 100,
            allow_empty: true,
        };
        if let Err(e) = prune(&actor, &old, &mut report, &owner, &everything).await {
            let msg = format!("garbage collection on deletion failed: {e}");
            api.event(ks, true, "PruneFailed", &msg).await;
            return Err(msg);
        }
        if !report.pruned.is_empty() {
            api.event(
                ks,
                false,
                "GarbageCollected",
                &format!(
                    "deleted {} object(s) of the deleted Kustomization",
                    report.pruned.len()
                ),
            )
            .await;
        }
    }
    let rest = finalizers.into_iter().filter(|f| f != FINALIZER).collect();
    api.set_finalizers(ks, rest).await?;
    Ok(Next::Wait)
}

/// The prune phase (with `spec.prune`): deletes what left the render. When it is refused or
/// fails, the old entries still in the cluster stay in the inventory, so a later prune can
/// still find them.
pub(super) async fn phase<A: ApplyApi>(
    ks: &Kustomization,
    actor: &A,
    status: &mut sealkit_api::KustomizationStatus,
    applied: &mut Applied,
) -> Result<(), Failure> {
    if !ks.spec.prune {
        return Ok(());
    }
    let old = status
        .inventory
        .clone()
        .map(|i| i.entries)
        .unwrap_or_default();
    let policy = PrunePolicy::from_annotations(ks.metadata.annotations.as_ref());
    let report = &mut applied.report;
    if let Err(e) = prune(actor, &old, report, &applied.opts.owner, &policy).await {
        let mut inv = report.inventory.clone();
        inv.extend(
            old.iter()
                .filter(|e| !report.inventory.contains(e))
                .cloned(),
        );
        inv.sort();
        status.inventory = Some(sealkit_api::Inventory { entries: inv });
        return Err(failure("PruneFailed", e.0));
    }
    Ok(())
}
