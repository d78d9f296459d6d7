//! Apply, drift and prune against the in-memory cluster.

use std::collections::BTreeMap;

use super::*;
use crate::gitops::memory::MemoryCluster;
use crate::gitops::reconcile::health::{Health, health};
use crate::gitops::reconcile::prune::{
    ALLOW_EMPTY_ANNOTATION, PRUNE_ANNOTATION, PRUNE_THRESHOLD_ANNOTATION, PrunePolicy, prune,
};

fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn cm(name: &str, v: &str) -> Value {
    serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": v}})
}

fn opts() -> ApplyOptions {
    ApplyOptions {
        owner: ("flux-system".into(), "apps".into()),
        target_namespace: Some("app".into()),
        force: false,
        ..Default::default()
    }
}

async fn run(
    c: &MemoryCluster,
    objs: Vec<Value>,
    old: &[InventoryEntry],
    policy: &PrunePolicy,
) -> Result<Report, ApplyError> {
    let prepared = prepare(c, objs, &opts()).await?;
    let mut report = apply_all(c, &prepared, &opts()).await?;
    prune(c, old, &mut report, &opts().owner, policy).await?;
    Ok(report)
}

fn default_policy() -> PrunePolicy {
    PrunePolicy::from_annotations(None)
}

#[tokio::test]
async fn apply_is_staged_idempotent_and_corrects_drift() {
    let c = MemoryCluster::new();
    let crd = serde_json::json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced", "names": {"kind": "Widget", "plural": "widgets"}}});
    let widget = serde_json::json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}});
    let ns =
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "app"}});
    let objs = vec![widget, cm("a", "1"), crd, ns];
    let r = run(&c, objs.clone(), &[], &default_policy())
        .await
        .expect("apply");
    assert_eq!(r.created.len(), 4);
    assert_eq!(
        r.created[0], "CustomResourceDefinition widgets.example.com",
        "CRDs and namespaces first"
    );
    let live = c.live("ConfigMap", Some("app"), "a").expect("cm");
    assert_eq!(live["metadata"]["labels"][NAME_LABEL], "apps");
    assert!(
        c.live("Namespace", None, "app").expect("ns")["metadata"]
            .get("namespace")
            .is_none()
    );

    // A no-op resync: zero writes.
    let writes = c.writes();
    let r2 = run(&c, objs.clone(), &r.inventory, &default_policy())
        .await
        .expect("resync");
    assert_eq!((r2.unchanged, c.writes()), (4, writes));

    // Drift: someone edits the live object; the next resync puts it back.
    locked(&c.objects).values_mut().for_each(|v| {
        if v["kind"] == "ConfigMap" {
            v["data"]["k"] = "edited".into();
        }
    });
    let r3 = run(&c, objs, &r.inventory, &default_policy())
        .await
        .expect("drift");
    assert_eq!(r3.configured, ["ConfigMap app/a"]);
    assert_eq!(
        c.live("ConfigMap", Some("app"), "a").expect("cm")["data"]["k"],
        "1"
    );

    let unknown = serde_json::json!({"apiVersion": "nope.io/v1", "kind": "Gadget", "metadata": {"name": "g"}});
    let err = run(&c, vec![unknown], &[], &default_policy())
        .await
        .unwrap_err();
    assert!(err.0.contains("does not serve nope.io/v1 Gadget"), "{err}");
}

#[tokio::test]
async fn prune_is_safe() {
    let c = MemoryCluster::new();
    let all: Vec<Value> = (0..4).map(|i| cm(&format!("c{i}"), "v")).collect();
    let r = run(&c, all.clone(), &[], &default_policy())
        .await
        .expect("apply");
    assert_eq!(r.inventory.len(), 4);

    // One file deleted in Git: pruned.
    let r2 = run(&c, all[..3].to_vec(), &r.inventory, &default_policy())
        .await
        .expect("prune one");
    assert_eq!(r2.pruned, ["ConfigMap app/c3"]);
    assert!(c.live("ConfigMap", Some("app"), "c3").is_none());

    // An empty render never prunes (unless allowed).
    let err = run(&c, vec![], &r2.inventory, &default_policy())
        .await
        .unwrap_err();
    assert!(err.0.contains("render is empty"), "{err}");
    assert_eq!(locked(&c.objects).len(), 3);

    // Two of three at once is more than 50 %.
    let err = run(&c, all[..1].to_vec(), &r2.inventory, &default_policy())
        .await
        .unwrap_err();
    assert!(err.0.contains("refusing to prune 2 of 3"), "{err}");
    assert_eq!(locked(&c.objects).len(), 3);

    // Not ours, or prune disabled: kept.
    locked(&c.objects).values_mut().for_each(|v| {
        if v["metadata"]["name"] == "c1" {
            v["metadata"]["labels"][NAME_LABEL] = "someone-else".into();
        }
        if v["metadata"]["name"] == "c2" {
            v["metadata"]["annotations"] = serde_json::json!({PRUNE_ANNOTATION: "disabled"});
        }
    });
    let allow = PrunePolicy {
        threshold_percent: 100,
        allow_empty: false,
    };
    let r3 = run(&c, all[..1].to_vec(), &r2.inventory, &allow)
        .await
        .expect("prune with opt-in");
    assert!(r3.pruned.is_empty());
    assert_eq!(r3.kept.len(), 2, "{:?}", r3.kept);
    assert_eq!(locked(&c.objects).len(), 3);

    // A failed apply stops before pruning: the caller never reaches prune.
    *locked(&c.fail_kind) = Some("ConfigMap".into());
    let prepared = prepare(&c, vec![cm("c0", "changed")], &opts())
        .await
        .expect("prepare");
    assert!(apply_all(&c, &prepared, &opts()).await.is_err());
    let policy = PrunePolicy::from_annotations(Some(&BTreeMap::from([
        (PRUNE_THRESHOLD_ANNOTATION.to_string(), "100".to_string()),
        (ALLOW_EMPTY_ANNOTATION.to_string(), "true".to_string()),
    ])));
    assert_eq!((policy.threshold_percent, policy.allow_empty), (100, true));
}

#[test]
fn inventory_ids_round_trip_and_health() {
    let r = ObjRef::of(
        &serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "app"}}),
    );
    let e = r.entry();
    assert_eq!(
        (e.id.as_str(), e.v.as_str()),
        ("app_web_apps_Deployment", "v1")
    );
    assert_eq!(ObjRef::from_entry(&e), Some(r));
    let dep = |avail: i64, observed: i64| {
        serde_json::json!({"kind": "Deployment", "metadata": {"generation": 2},
        "spec": {"replicas": 2}, "status": {"observedGeneration": observed, "updatedReplicas": 2, "availableReplicas": avail}})
    };
    assert_eq!(health(&dep(2, 2)), Health::Healthy);
    assert!(matches!(health(&dep(1, 2)), Health::Progressing(m) if m.contains("1/2")));
    assert!(matches!(health(&dep(2, 1)), Health::Progressing(_)));
    let job = serde_json::json!({"kind": "Job", "status": {"conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]}});
    assert_eq!(health(&job), Health::Failed("BackoffLimitExceeded".into()));
    let cr = serde_json::json!({"kind": "Widget", "status": {"conditions": [{"type": "Ready", "status": "False", "message": "waiting"}]}});
    assert_eq!(health(&cr), Health::Progressing("waiting".into()));
    assert_eq!(
        health(&serde_json::json!({"kind": "ConfigMap"})),
        Health::Healthy
    );
}

/// Names and namespaces become URL path segments of API requests, unescaped: one that could
/// change the request is refused (from a render) or kept out of a prune (from an inventory).
#[tokio::test]
async fn names_that_would_change_an_api_path_are_refused() {
    let c = MemoryCluster::new();
    for (name, ns) in [
        ("../../secrets/x", None),
        ("x?dryRun=All", None),
        ("a%2Fb", None),
        ("..", None),
        ("ok", Some("kube-system/secrets")),
    ] {
        let mut o = cm(name, "v");
        if let Some(ns) = ns {
            o["metadata"]["namespace"] = ns.into();
        }
        let mut opts = opts();
        opts.target_namespace = None;
        let err = prepare(&c, vec![o], &opts).await.unwrap_err();
        assert!(err.0.contains("not a valid"), "{name}: {err}");
    }
    // A crafted inventory entry is not deleted.
    let evil = InventoryEntry {
        id: "app_..%2F..%2Fx__ConfigMap".into(),
        v: "v1".into(),
    };
    let ok = ObjRef::of(&cm("kept", "v")).entry();
    let mut report = Report {
        inventory: vec![ok.clone()],
        ..Default::default()
    };
    prune(
        &c,
        &[ok, evil],
        &mut report,
        &opts().owner,
        &PrunePolicy::from_annotations(None),
    )
    .await
    .expect("prune");
    assert!(report.pruned.is_empty());
    assert!(
        report.kept.iter().any(|k| k.contains("not a valid")),
        "{:?}",
        report.kept
    );
    assert_eq!(c.writes(), 0);
}

#[tokio::test]
async fn adopted_objects_are_never_pruned() {
    let c = MemoryCluster::new();
    // A ConfigMap someone created by hand before the Kustomization rendered it.
    let mut by_hand = cm("existing", "old");
    by_hand["metadata"]["namespace"] = "app".into();
    c.apply(&by_hand, false, false)
        .await
        .expect("create by hand");

    let r = run(
        &c,
        vec![cm("existing", "new"), cm("created", "v")],
        &[],
        &default_policy(),
    )
    .await
    .expect("apply");
    assert_eq!(r.created, ["ConfigMap app/created"]);
    assert_eq!(r.configured, ["ConfigMap app/existing"]);
    let live = c.live("ConfigMap", Some("app"), "existing").expect("cm");
    assert_eq!(live["metadata"]["annotations"][ADOPTED_ANNOTATION], "true");
    assert_eq!(
        live["data"]["k"], "new",
        "adopted objects are still applied"
    );
    let created = c.live("ConfigMap", Some("app"), "created").expect("cm");
    assert!(created["metadata"]["annotations"][ADOPTED_ANNOTATION].is_null());

    // The mark survives later applies (the annotation is re-applied, not dropped)...
    let writes = c.writes();
    let r2 = run(
        &c,
        vec![cm("existing", "new"), cm("created", "v")],
        &r.inventory,
        &default_policy(),
    )
    .await
    .expect("resync");
    assert_eq!((r2.unchanged, c.writes()), (2, writes));

    // ...and when both leave the render, only the object the Kustomization created goes.
    let everything = PrunePolicy {
        threshold_percent: 100,
        allow_empty: true,
    };
    let r3 = run(&c, vec![], &r2.inventory, &everything)
        .await
        .expect("prune");
    assert_eq!(r3.pruned, ["ConfigMap app/created"]);
    assert_eq!(r3.kept.len(), 1, "{:?}", r3.kept);
    assert!(r3.kept[0].contains("adopted"), "{:?}", r3.kept);
    assert!(c.live("ConfigMap", Some("app"), "existing").is_some());
}

#[test]
fn legacy_prune_annotations_still_read() {
    let p = PrunePolicy::from_annotations(Some(&BTreeMap::from([
        (
            "sealkit.io/prune-threshold-percent".to_string(),
            "80".to_string(),
        ),
        (
            "sealkit.io/allow-empty-prune".to_string(),
            "true".to_string(),
        ),
    ])));
    assert_eq!((p.threshold_percent, p.allow_empty), (80, true));
    let p = PrunePolicy::from_annotations(Some(&BTreeMap::from([
        (PRUNE_THRESHOLD_ANNOTATION.to_string(), "70".to_string()),
        (
            "sealkit.io/prune-threshold-percent".to_string(),
            "80".to_string(),
        ),
    ])));
    assert_eq!(p.threshold_percent, 70, "the sealkit.dev name wins");
}
