//! The health phase: whether applied objects are ready (Deployments, StatefulSets, DaemonSets,
//! Jobs, and anything with a `Ready` condition), for `wait` and `healthChecks`.

use kube::ResourceExt;
use sealkit_api::Kustomization;
use sealkit_render::redact::Redactor;
use serde_json::Value;

use super::apply::{ApplyApi, ObjRef};
use super::{Failure, failure};

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

/// The health phase: `healthChecks`, and with `wait` every applied object. `Ok(Some(msg))`
/// while something is not ready yet. Messages come from the objects' status, which may quote
/// their (decrypted) spec: they pass the redactor.
pub(super) async fn check<A: ApplyApi>(
    ks: &Kustomization,
    actor: &A,
    prepared: &[Value],
    redactor: &Redactor,
) -> Result<Option<String>, Failure> {
    let ns = ks.namespace().unwrap_or_default();
    let mut checks: Vec<ObjRef> = ks
        .spec
        .health_checks
        .iter()
        .flatten()
        .map(|h| {
            let api_version = h.api_version.clone().unwrap_or_else(|| "v1".into());
            ObjRef::of(&serde_json::json!({"apiVersion": api_version, "kind": h.kind,
                "metadata": {"name": h.name, "namespace": h.namespace.clone().unwrap_or_else(|| ns.clone())}}))
        })
        .collect();
    if ks.spec.wait == Some(true) {
        checks.extend(prepared.iter().map(ObjRef::of));
    }
    for r in checks {
        let live = actor
            .get(&r)
            .await
            .map_err(|e| failure("HealthCheckFailed", format!("{r}: {}", redactor.redact(&e))))?;
        match live.as_ref().map(health) {
            None => return Ok(Some(format!("{r} does not exist yet"))),
            Some(Health::Healthy) => {}
            Some(Health::Progressing(m)) => {
                return Ok(Some(format!("{r}: {}", redactor.redact(&m))));
            }
            Some(Health::Failed(m)) => {
                return Err(failure(
                    "HealthCheckFailed",
                    format!("{r}: {}", redactor.redact(&m)),
                ));
            }
        }
    }
    Ok(None)
}
