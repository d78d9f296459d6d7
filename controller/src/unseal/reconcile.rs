//! The unseal reconciler: one SealedSecret at a time, `plan` decides, the API applies.
//!
//! The cluster is reached through [`ClusterApi`], a small seam with two implementations: the
//! kube client (`KubeApi`, thin), and an in-memory API (`MemoryApi`) that the reconcile tests
//! run against. Status is written only when it changes, so a resync of an up-to-date object
//! costs one GET of its Secret and nothing else.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use sealkit_api::{SealedSecret, SealedSecretCondition, SealedSecretStatus};

use super::{Plan, plan};
use crate::http::AppState;
use crate::metrics::{ConditionLabels, ErrorLabels};

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
    status: bool,
    reason: &str,
    message: &str,
    previous: Option<&SealedSecretCondition>,
) -> SealedSecretCondition {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = if status { "True" } else { "False" }.to_string();
    let transition = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(now.clone()),
    };
    SealedSecretCondition {
        type_: "Synced".into(),
        status,
        last_update_time: Some(now),
        last_transition_time: transition,
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

/// Reconciles one SealedSecret.
pub async fn reconcile<C: ClusterApi>(
    ss: &SealedSecret,
    api: &C,
    state: &AppState,
) -> Result<Outcome, String> {
    let started = Instant::now();
    let name = ss.name_any();
    let namespace = ss.namespace().unwrap_or_default();
    let keys = state.keys();
    let existing = api.get_secret(&namespace, &name).await?;
    let secret_found = existing.is_some();
    // RSA work runs on the blocking pool, at most one per core at a time (shared with the HTTP
    // endpoints): it never stalls the async workers that keep watches and other loops going.
    let decided = {
        let _slot = state
            .rsa_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let (ss, keys) = (ss.clone(), keys.clone());
        tokio::task::spawn_blocking(move || plan(&ss, existing.as_ref(), &keys.keyring))
            .await
            .map_err(|e| format!("the unseal task failed: {e}"))?
    };
    keys.report_ops(&state.metrics.rsa_private_ops);
    tracing::debug!(%namespace, %name, secret_found, plan = ?decided, "planned");
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

/// Capped, jittered exponential backoff that never gives up (upstream #1599): 2^n seconds from
/// 1 s, capped at `cap`, ±20 %.
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    let base = Duration::from_secs(1u64 << failures.min(16)).min(cap);
    let mut r = [0u8; 2];
    let _ = aws_lc_rs::rand::fill(&mut r);
    let jitter = (u16::from_le_bytes(r) as f64 / u16::MAX as f64) * 0.4 + 0.8;
    base.mul_f64(jitter)
}

/// Consecutive failures per object (by uid), for [`backoff`].
#[derive(Default)]
pub struct Failures(Mutex<std::collections::HashMap<String, u32>>);

impl Failures {
    /// Records a failure of `uid`; returns how long to wait before the next attempt (capped at
    /// 5 minutes, jittered).
    pub fn failed(&self, uid: &str) -> Duration {
        let n = self
            .0
            .lock()
            .map(|mut f| {
                let c = f.entry(uid.to_string()).or_insert(0);
                *c += 1;
                *c
            })
            .unwrap_or(1);
        backoff(n, Duration::from_secs(300))
    }

    /// Forgets the failures of `uid` after a success.
    pub fn succeeded(&self, uid: &str) {
        if let Ok(mut f) = self.0.lock() {
            f.remove(uid);
        }
    }
}

/// An in-memory cluster: Secrets, SealedSecret statuses and Events, with failure injection.
#[derive(Default)]
pub struct MemoryApi {
    /// Secrets by `namespace/name`.
    pub secrets: Mutex<BTreeMap<String, Secret>>,
    /// Last status written per SealedSecret `namespace/name`.
    pub statuses: Mutex<BTreeMap<String, SealedSecretStatus>>,
    /// Events in order.
    pub events: Mutex<Vec<(String, EventNote)>>,
    /// Number of Secret writes.
    pub writes: Mutex<u64>,
    /// When set, applies fail with this message.
    pub fail_applies: Mutex<Option<String>>,
}

fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

impl ClusterApi for MemoryApi {
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, String> {
        Ok(self
            .secrets
            .lock()
            .map_err(|e| e.to_string())?
            .get(&key(namespace, name))
            .cloned())
    }

    async fn apply_secret(&self, secret: &Secret) -> Result<(), String> {
        if let Some(e) = self.fail_applies.lock().map_err(|e| e.to_string())?.clone() {
            return Err(e);
        }
        let k = key(
            secret.metadata.namespace.as_deref().unwrap_or(""),
            secret.metadata.name.as_deref().unwrap_or(""),
        );
        let mut map = self.secrets.lock().map_err(|e| e.to_string())?;
        // Server-side apply merges: keys we do not send stay.
        let merged = match map.remove(&k) {
            Some(mut old) => {
                let mut data = old.data.take().unwrap_or_default();
                data.extend(secret.data.clone().unwrap_or_default());
                let mut ann = old.metadata.annotations.take().unwrap_or_default();
                ann.extend(secret.metadata.annotations.clone().unwrap_or_default());
                let mut out = secret.clone();
                out.data = Some(data);
                out.metadata.annotations = Some(ann);
                if out.metadata.owner_references.is_none() {
                    out.metadata.owner_references = old.metadata.owner_references;
                }
                // `type` is immutable: a field we do not send keeps its value.
                if out.type_.is_none() {
                    out.type_ = old.type_;
                }
                out
            }
            None => secret.clone(),
        };
        // The API server defaults `type` on create, so what is read back is never untyped.
        let mut merged = merged;
        merged.type_.get_or_insert_with(|| "Opaque".to_string());
        map.insert(k, merged);
        *self.writes.lock().map_err(|e| e.to_string())? += 1;
        Ok(())
    }

    async fn set_status(
        &self,
        ss: &SealedSecret,
        status: &SealedSecretStatus,
    ) -> Result<(), String> {
        self.statuses.lock().map_err(|e| e.to_string())?.insert(
            key(&ss.namespace().unwrap_or_default(), &ss.name_any()),
            status.clone(),
        );
        Ok(())
    }

    async fn event(&self, ss: &SealedSecret, note: EventNote) {
        if let Ok(mut ev) = self.events.lock() {
            ev.push((
                key(&ss.namespace().unwrap_or_default(), &ss.name_any()),
                note,
            ));
        }
    }
}

#[cfg(test)]
mod tests;
