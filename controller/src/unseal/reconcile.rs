//! The unseal reconciler: one SealedSecret at a time, `plan` decides, the API applies.
//!
//! The cluster is reached through [`ClusterApi`], a small seam with two implementations: the
//! kube client (`super::kube`, thin), and an in-memory API (`super::memory`) that the reconcile
//! tests run against. It reads top to bottom: read the Secret, plan (the RSA work, on the
//! blocking pool), write the Secret when the plan says so, then the status and the Event.
//! Status is written only when it changes, and a Secret the watch cache shows at a version
//! already found up to date is not read again ([`super::verified`]), so a resync of an
//! up-to-date object costs no request.

use std::future::Future;
use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use sealkit_api::{SealedSecret, SealedSecretCondition, SealedSecretStatus};

use super::http::AppState;
use super::plan::{Expected, verify};
use super::{Plan, plan};
use crate::runtime::conditions::{now, status_word, transition};
use crate::runtime::metrics::{ConditionLabels, ErrorLabels};

/// An Event to record on a SealedSecret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventNote {
    /// `Normal` or `Warning`.
    pub warning: bool,
    /// `Unsealed`, `ErrUnsealFailed`, `ErrUpdateFailed`.
    pub reason: &'static str,
    /// Human text (never a secret value).
    pub message: String,
}

/// What the reconciler needs from the cluster.
pub trait ClusterApi: Send + Sync {
    /// The Secret `namespace/name`, if it exists.
    fn get_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Secret>, String>> + Send;
    /// The SealedSecret `namespace/name` as the API server has it, if it exists (read when
    /// the cached copy is lean: [`super::lean`]).
    fn get_sealed(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<SealedSecret>, String>> + Send;
    /// The resourceVersion of the Secret `namespace/name` in the watch cache, when the cache
    /// has it (`None`: unknown, so the reconcile reads the Secret).
    fn cached_version(&self, namespace: &str, name: &str) -> Option<String>;
    /// Server-side apply of a Secret with our field manager.
    fn apply_secret(&self, secret: &Secret) -> impl Future<Output = Result<(), String>> + Send;
    /// Writes the status of a SealedSecret.
    fn set_status(
        &self,
        ss: &SealedSecret,
        status: &SealedSecretStatus,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Records an Event on a SealedSecret.
    fn event(&self, ss: &SealedSecret, note: EventNote) -> impl Future<Output = ()> + Send;
}

/// The outcome of one reconcile, for the controller loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do until the next change or resync.
    Done,
    /// Unsealing failed for a reason a retry will not fix soon (wrong key, bad data).
    Failed,
}

fn condition(
    ok: bool,
    reason: &str,
    message: &str,
    previous: Option<&SealedSecretCondition>,
) -> SealedSecretCondition {
    let status = status_word(ok);
    SealedSecretCondition {
        type_: "Synced".into(),
        status: status.into(),
        last_update_time: Some(now()),
        last_transition_time: Some(transition(
            previous.map(|p| (p.status.as_str(), p.last_transition_time.as_ref())),
            status,
        )),
        reason: Some(reason.into()),
        message: Some(message.into()),
    }
}

async fn write_status<C: ClusterApi>(
    api: &C,
    ss: &SealedSecret,
    ok: bool,
    reason: &str,
    message: &str,
) -> Result<(), String> {
    let previous = ss
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Synced"));
    let generation = ss.metadata.generation;
    let unchanged = previous.is_some_and(|p| {
        p.status == (if ok { "True" } else { "False" })
            && p.reason.as_deref() == Some(reason)
            && p.message.as_deref().unwrap_or("") == message
    }) && ss.status.as_ref().and_then(|s| s.observed_generation) == generation;
    if unchanged {
        return Ok(());
    }
    let status = SealedSecretStatus {
        observed_generation: generation,
        conditions: Some(vec![condition(ok, reason, message, previous)]),
    };
    api.set_status(ss, &status).await
}

/// Reconciles one SealedSecret (`cached` may be a lean copy: [`super::lean`]).
pub async fn reconcile<C: ClusterApi>(
    cached: &SealedSecret,
    api: &C,
    state: &AppState,
) -> Result<Outcome, String> {
    let started = Instant::now();
    let name = cached.name_any();
    let namespace = cached.namespace().unwrap_or_default();
    let keys = state.keys();
    let hash = super::lean::spec_hash_of(cached);
    // The watch cache shows the Secret at a version already found up to date with this spec:
    // nothing to read, nothing to do.
    let verified = api.cached_version(&namespace, &name).is_some_and(|v| {
        state
            .verified
            .holds(&namespace, &name, &v, &hash, &keys.keyring)
    });
    // A lean copy has no ciphertext: planning needs the object as the API server has it.
    let full;
    let ss = if verified || !super::lean::is_lean(cached) {
        cached
    } else {
        match api.get_sealed(&namespace, &name).await? {
            Some(read) => {
                full = read;
                &full
            }
            // Deleted since: nothing to do (its Secret goes with it, by owner reference).
            None => return Ok(Outcome::Done),
        }
    };
    let decided = if verified {
        Plan::UpToDate
    } else {
        let expected = Expected::of(ss);
        let existing = api.get_secret(&namespace, &name).await?;
        // RSA work runs on the blocking pool, at most one per core at a time (shared with the
        // HTTP endpoints): it never stalls the async workers that keep watches and other loops
        // going.
        let _slot = state
            .rsa_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let (owned_ss, owned_keys) = (ss.clone(), keys.clone());
        let (decided, existing) = tokio::task::spawn_blocking(move || {
            let p = plan(&owned_ss, existing.as_ref(), &owned_keys.keyring);
            (p, existing)
        })
        .await
        .map_err(|e| format!("the unseal task failed: {e}"))?;
        // Remember the version found up to date; anything else is read again next time.
        let found = existing.as_ref().and_then(|s| {
            let key = verify(&expected, s, &keys.keyring)?;
            Some((s.metadata.resource_version.clone()?, key))
        });
        match (&decided, found) {
            (Plan::UpToDate, Some((version, key))) => {
                state
                    .verified
                    .record(&namespace, &name, &version, expected.hash(), key);
            }
            _ => state.verified.forget(&namespace, &name),
        }
        decided
    };
    keys.report_ops(&state.metrics.rsa_private_ops);
    tracing::debug!(%namespace, %name, verified, plan = ?decided, "planned");
    let labels = ConditionLabels {
        name: name.clone(),
        namespace: namespace.clone(),
        condition: "Synced".into(),
    };
    // A failure: counted by reason, told as an Event and in the status.
    let fail = async |metric: &str, reason: &'static str, msg: &str| -> Result<(), String> {
        state
            .metrics
            .unseal_errors
            .get_or_create(&ErrorLabels {
                reason: metric.into(),
                namespace: namespace.clone(),
            })
            .inc();
        state.metrics.condition_info.get_or_create(&labels).set(0);
        api.event(
            ss,
            EventNote {
                warning: true,
                reason,
                message: msg.to_string(),
            },
        )
        .await;
        write_status(api, ss, false, reason, msg).await
    };
    let outcome = match decided {
        Plan::UpToDate => {
            write_status(api, ss, true, "Unsealed", "").await?;
            state.metrics.condition_info.get_or_create(&labels).set(1);
            Outcome::Done
        }
        Plan::Apply(secret) => {
            state.metrics.unseal_requests.inc();
            if let Err(e) = api.apply_secret(&secret).await {
                let msg = format!("cannot write the Secret: {e}");
                fail("update", "ErrUpdateFailed", &msg).await?;
                return Err(msg);
            }
            let note = EventNote {
                warning: false,
                reason: "Unsealed",
                message: "SealedSecret unsealed successfully".into(),
            };
            api.event(ss, note).await;
            write_status(api, ss, true, "Unsealed", "").await?;
            state.metrics.condition_info.get_or_create(&labels).set(1);
            Outcome::Done
        }
        Plan::Collision(msg) => {
            fail("collision", "ErrUpdateFailed", &msg).await?;
            Outcome::Failed
        }
        Plan::Failed(msg) => {
            state.metrics.unseal_requests.inc();
            fail("unseal", "ErrUnsealFailed", &msg).await?;
            Outcome::Failed
        }
    };
    state
        .metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    Ok(outcome)
}

#[cfg(test)]
mod tests;
