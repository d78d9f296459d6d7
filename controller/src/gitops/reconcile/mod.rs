//! The Kustomization reconciler, phase by phase, against the [`FluxApi`] seam:
//!
//! 1. deletion (`prune::finalize`), suspension, the finalizer, durations (`spec`);
//! 2. `spec`: unsupported fields, names and references, the lockdown rules;
//! 3. dependencies (`dependsOn` Ready);
//! 4. `source`: the GitRepository's artifact (the source loop's, or a fetch);
//! 5. `build`: render, decrypt, substitute;
//! 6. `apply`: staged server-side apply with drift detection;
//! 7. `prune`: what left the render, within the safety guards;
//! 8. `health`: `wait` and `healthChecks`;
//!
//! then the status (`Ready`, `Healthy`, `Reconciling`, `Stalled`) and an Event. A phase that
//! fails stops the reconcile before anything is pruned; status and Events say which phase and
//! why, never a value. The GitRepository's own reconcile (fetch, artifact, status) is
//! `source::reconcile_repository`, against the same seam.

pub mod apply;
pub mod build;
pub mod health;
pub mod prune;
pub mod source;
pub mod spec;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use kube::ResourceExt;
use sealkit_api::{GitRepository, GitRepositoryStatus, Kustomization, KustomizationStatus};

use crate::runtime::conditions::condition;
use crate::runtime::guard::duration_or;
use crate::runtime::requeue::jitter_up;
use apply::ApplyApi;

pub use prune::FINALIZER;

/// What the reconciler needs from the cluster besides applying.
pub trait FluxApi: Send + Sync {
    /// The cluster as one identity, for apply, prune and health reads.
    type Actor<'a>: ApplyApi
    where
        Self: 'a;
    /// The cluster as the controller itself (`None`) or as the ServiceAccount `(namespace,
    /// name)`, impersonated (`system:serviceaccount:<namespace>:<name>`).
    fn actor<'a>(
        &'a self,
        account: Option<(&'a str, &'a str)>,
    ) -> impl Future<Output = Result<Self::Actor<'a>, String>> + Send + 'a;
    /// A GitRepository.
    fn git_repository(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<GitRepository>, String>> + Send;
    /// A Kustomization (for `dependsOn`).
    fn kustomization(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Kustomization>, String>> + Send;
    /// A Secret's data.
    fn secret_data(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<BTreeMap<String, Vec<u8>>>, String>> + Send;
    /// A ConfigMap's data.
    fn config_map_data(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<BTreeMap<String, String>>, String>> + Send;
    /// Writes a Kustomization's status.
    fn set_status(
        &self,
        ks: &Kustomization,
        status: &KustomizationStatus,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Writes a GitRepository's status.
    fn set_repo_status(
        &self,
        repo: &GitRepository,
        status: &GitRepositoryStatus,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Records an Event on a Kustomization.
    fn event(
        &self,
        ks: &Kustomization,
        warning: bool,
        reason: &str,
        message: &str,
    ) -> impl Future<Output = ()> + Send;
    /// Replaces the Kustomization's finalizers (optimistic: fails if it changed since `ks` was
    /// read).
    fn set_finalizers(
        &self,
        ks: &Kustomization,
        finalizers: Vec<String>,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// Shared settings.
#[derive(Clone)]
pub struct GitopsSettings {
    /// Where fetched revisions are kept.
    pub cache_dir: PathBuf,
    /// Metrics.
    pub metrics: std::sync::Arc<crate::runtime::metrics::Metrics>,
    /// `--default-service-account`: Kustomizations without `spec.serviceAccountName` apply as
    /// this ServiceAccount of their namespace (impersonated).
    pub default_service_account: Option<String>,
    /// `--no-cross-namespace-refs`: sources and dependencies only in the Kustomization's
    /// namespace.
    pub no_cross_namespace_refs: bool,
    /// `--allow-remote-bases`: kustomize may fetch remote bases and files.
    pub allow_remote_bases: bool,
}

impl GitopsSettings {
    /// Settings with fresh metrics.
    pub fn new(cache_dir: PathBuf) -> Self {
        GitopsSettings {
            cache_dir,
            metrics: Default::default(),
            default_service_account: None,
            no_cross_namespace_refs: false,
            allow_remote_bases: false,
        }
    }
}

/// When to come back.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// After this long.
    After(Duration),
    /// Only when something changes.
    Wait,
}

/// Why a phase stopped the reconcile: the condition reason, a message naming the phase and the
/// object or field, and whether retrying can help (`stalled`: only a change of the object can).
pub(crate) struct Failure {
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    pub(crate) stalled: bool,
}

/// A failure a retry may fix.
pub(crate) fn failure(reason: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        reason,
        message: message.into(),
        stalled: false,
    }
}

/// `interval`, `retryInterval` and `timeout`, checked before any arithmetic.
fn durations(ks: &Kustomization) -> Result<(Duration, Duration, Duration), String> {
    let interval = duration_or(
        "spec.interval",
        Some(&ks.spec.interval),
        Duration::from_secs(600),
    )?;
    let retry = duration_or(
        "spec.retryInterval",
        ks.spec.retry_interval.as_deref(),
        interval,
    )?;
    let timeout = duration_or("spec.timeout", ks.spec.timeout.as_deref(), interval)?;
    Ok((interval, retry, timeout))
}

/// Reconciles one Kustomization.
pub async fn reconcile<A: FluxApi>(
    ks: &Kustomization,
    api: &A,
    settings: &GitopsSettings,
) -> Result<Next, String> {
    if ks.metadata.deletion_timestamp.is_some() {
        return prune::finalize(ks, api, settings).await;
    }
    if ks.spec.suspend == Some(true) {
        return Ok(Next::Wait);
    }
    // The finalizer goes on before anything is applied, so nothing applied can be orphaned by
    // a deletion.
    if !ks.finalizers().iter().any(|f| f == FINALIZER) {
        let mut f = ks.finalizers().to_vec();
        f.push(FINALIZER.to_string());
        api.set_finalizers(ks, f).await?;
    }
    let checked = durations(ks);
    let fallback = Duration::from_secs(600);
    let (interval, retry, timeout) = checked.clone().unwrap_or((fallback, fallback, fallback));
    let mut status = ks.status.clone().unwrap_or_default();
    status.observed_generation = Some(ks.metadata.generation.unwrap_or(0));
    let started = std::time::Instant::now();
    let result = match checked {
        Ok(_) => phases(ks, api, settings, &mut status, timeout).await,
        // A bad duration stalls this object, with why.
        Err(message) => Err(Failure {
            reason: "InvalidDuration",
            message,
            stalled: true,
        }),
    };
    settings
        .metrics
        .gitops_reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(unhealthy) => {
            let timed_out = report_success(ks, &mut status, unhealthy.as_deref(), timeout);
            api.set_status(ks, &status).await?;
            Ok(Next::After(if timed_out {
                retry
            } else if unhealthy.is_some() {
                Duration::from_secs(10).min(interval)
            } else {
                // Up to +5 %, so Kustomizations with the same interval do not apply in lockstep.
                jitter_up(interval, 0.05, Duration::from_secs(300))
            }))
        }
        Err(f) => {
            report_failure(ks, &mut status, &f);
            api.event(ks, true, f.reason, &f.message).await;
            api.set_status(ks, &status).await?;
            if f.stalled {
                Ok(Next::Wait)
            } else if f.reason == "DependencyNotReady" {
                Ok(Next::After(Duration::from_secs(30).min(retry)))
            } else {
                Err(f.message)
            }
        }
    }
}

/// The phases; `Ok(Some(msg))` when applied but not yet healthy.
async fn phases<A: FluxApi>(
    ks: &Kustomization,
    api: &A,
    settings: &GitopsSettings,
    status: &mut KustomizationStatus,
    timeout: Duration,
) -> Result<Option<String>, Failure> {
    spec::unsupported(ks)?;
    let account = spec::check(ks, settings)?;
    dependencies(ks, api).await?;
    let (repo, fetched) = source::artifact(ks, api, settings).await?;
    status.last_attempted_revision = Some(fetched.revision.clone());
    let built = build::build(ks, api, settings, &repo, &fetched, timeout).await?;
    // Apply, prune and health reads as the Kustomization's ServiceAccount when it has one.
    let ns = ks.namespace().unwrap_or_default();
    let actor = api
        .actor(account.as_deref().map(|a| (ns.as_str(), a)))
        .await
        .map_err(|e| failure("ReconciliationFailed", e))?;
    let mut applied = apply::apply(ks, &actor, built.values, &built.redactor).await?;
    prune::phase(ks, &actor, status, &mut applied).await?;
    applied.count(&settings.metrics);
    status.inventory = Some(sealkit_api::Inventory {
        entries: applied.report.inventory.clone(),
    });
    status.last_applied_revision = Some(fetched.revision.clone());
    if let Some(msg) = applied.summary(&fetched.revision) {
        api.event(ks, false, "ReconciliationSucceeded", &msg).await;
    }
    health::check(ks, &actor, &applied.prepared, &built.redactor).await
}

/// Every `dependsOn` Kustomization must be Ready at its current generation.
async fn dependencies<A: FluxApi>(ks: &Kustomization, api: &A) -> Result<(), Failure> {
    let ns = ks.namespace().unwrap_or_default();
    for d in ks.spec.depends_on.iter().flatten() {
        let dns = d.namespace.clone().unwrap_or_else(|| ns.clone());
        let dep = api
            .kustomization(&dns, &d.name)
            .await
            .map_err(|e| failure("DependencyNotReady", e))?;
        let ready = dep.as_ref().is_some_and(|k| {
            k.status.as_ref().is_some_and(|s| {
                s.observed_generation == k.metadata.generation
                    && s.conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        });
        if !ready {
            return Err(failure(
                "DependencyNotReady",
                format!("dependency '{dns}/{}' is not ready", d.name),
            ));
        }
    }
    Ok(())
}

/// The conditions of an applied reconcile; whether the health check has now timed out.
fn report_success(
    ks: &Kustomization,
    status: &mut KustomizationStatus,
    unhealthy: Option<&str>,
    timeout: Duration,
) -> bool {
    let generation = ks.metadata.generation;
    let prev = status.conditions.clone().unwrap_or_default();
    let rev = status.last_applied_revision.clone().unwrap_or_default();
    // How long the objects have been unhealthy (since Healthy turned False).
    let unhealthy_for = prev
        .iter()
        .find(|c| c.type_ == "Healthy" && c.status == "False")
        .and_then(|c| {
            let since = c.last_transition_time.0.as_second();
            u64::try_from(k8s_openapi::jiff::Timestamp::now().as_second() - since).ok()
        })
        .map(Duration::from_secs);
    let timed_out = unhealthy.is_some() && unhealthy_for.is_some_and(|d| d >= timeout);
    let (ready, reason, msg) = match unhealthy {
        None => (
            true,
            "ReconciliationSucceeded",
            format!("Applied revision: {rev}"),
        ),
        Some(h) if timed_out => (
            false,
            "HealthCheckFailed",
            format!(
                "health check timed out after {}: {h}",
                humantime::format_duration(timeout)
            ),
        ),
        Some(h) => (false, "HealthCheckFailed", h.to_string()),
    };
    let healthy_reason = if unhealthy.is_none() {
        "Succeeded"
    } else {
        "Progressing"
    };
    status.conditions = Some(vec![
        condition("Ready", ready, reason, &msg, generation, &prev),
        condition(
            "Healthy",
            unhealthy.is_none(),
            healthy_reason,
            &msg,
            generation,
            &prev,
        ),
        condition("Reconciling", false, "Succeeded", "", generation, &prev),
        condition("Stalled", false, "Succeeded", "", generation, &prev),
    ]);
    timed_out
}

/// The conditions of a reconcile a phase stopped.
fn report_failure(ks: &Kustomization, status: &mut KustomizationStatus, f: &Failure) {
    let generation = ks.metadata.generation;
    let prev = status.conditions.clone().unwrap_or_default();
    let stalled_message = if f.stalled { f.message.as_str() } else { "" };
    status.conditions = Some(vec![
        condition("Ready", false, f.reason, &f.message, generation, &prev),
        condition(
            "Reconciling",
            false,
            f.reason,
            &f.message,
            generation,
            &prev,
        ),
        condition(
            "Stalled",
            f.stalled,
            f.reason,
            stalled_message,
            generation,
            &prev,
        ),
    ]);
}

#[cfg(test)]
mod tests;
