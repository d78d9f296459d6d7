//! The GitOps sync loop (Flux's `GitRepository` + `Kustomization`): fetch a source, render a
//! path, decrypt SOPS documents, server-side apply in stages, prune safely.
//!
//! - `reconcile`: the Kustomization reconcile phase by phase, and the GitRepository's, against
//!   the [`reconcile::FluxApi`] seam;
//! - `source`: git (the CLI, sandboxed); `webhook`: the push receiver;
//! - `kube`: the seam over the cluster; `memory`: the in-memory fake;
//! - [`run`]: the two controllers and their watches (a new revision wakes the Kustomizations
//!   that follow it; a dependency turning Ready wakes its dependents).

pub mod kube;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
pub mod reconcile;
pub mod source;
#[cfg(test)]
mod testutil;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use ::kube::ResourceExt;
use ::kube::api::Api;
use ::kube::runtime::controller::{self, Action, Controller};
use ::kube::runtime::reflector::ObjectRef;
use ::kube::runtime::watcher;
use sealkit_api::{GitRepository, Kustomization};

pub use reconcile::{GitopsSettings, Next};

use crate::runtime::client::Kube;
use crate::runtime::guard::duration_or;
use crate::runtime::status::Writer;
use crate::runtime::{Glue, LoopError};

/// What the GitOps loop is told.
#[derive(Clone)]
pub struct Settings {
    /// Only this namespace (default: all).
    pub namespace: Option<String>,
    /// Only GitRepositories and Kustomizations matching this label selector.
    pub selector: Option<String>,
    /// Reconciles each of the two loops runs at once.
    pub concurrency: u16,
    /// What every reconcile needs.
    pub reconcile: GitopsSettings,
}

/// Why a Kustomization or GitRepository reconcile failed (retried after `retryInterval` or the
/// interval; the status already says which phase and why).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitopsError {
    /// A Kustomization phase failed.
    #[error("{0}")]
    Reconcile(String),
    /// A GitRepository fetch failed.
    #[error("{0}")]
    Fetch(String),
    /// The reconcile panicked (a bug; contained).
    #[error("{0}")]
    Panicked(String),
}

impl LoopError for GitopsError {
    fn metric_label(&self) -> &'static str {
        match self {
            GitopsError::Reconcile(_) => "reconcile",
            GitopsError::Fetch(_) => "fetch",
            GitopsError::Panicked(_) => "panic",
        }
    }
    fn panicked(message: String) -> Self {
        GitopsError::Panicked(message)
    }
}

struct Ctx {
    api: kube::KubeFlux,
    settings: GitopsSettings,
    kustomizations: Glue,
    repositories: Glue,
}

fn action(next: Next) -> Action {
    match next {
        Next::After(d) => Action::requeue(d),
        Next::Wait => Action::await_change(),
    }
}

async fn reconcile_ks(ks: Arc<Kustomization>, ctx: Arc<Ctx>) -> Result<Action, GitopsError> {
    let work = async {
        reconcile::reconcile(&ks, &ctx.api, &ctx.settings)
            .await
            .map(action)
            .map_err(GitopsError::Reconcile)
    };
    ctx.kustomizations.reconcile(&*ks, work).await
}

/// A duration field, or `default` when it is bad (the reconcile reports a bad one).
fn interval(field: &str, s: &str, default: Duration) -> Duration {
    duration_or(field, Some(s), default).unwrap_or(default)
}

fn ks_error(ks: Arc<Kustomization>, err: &GitopsError, ctx: Arc<Ctx>) -> Action {
    let every = interval("spec.interval", &ks.spec.interval, Duration::from_secs(600));
    let retry = ks
        .spec
        .retry_interval
        .as_deref()
        .map_or(every, |r| interval("spec.retryInterval", r, every));
    ctx.kustomizations.retry(&*ks, err, retry)
}

async fn reconcile_repo(repo: Arc<GitRepository>, ctx: Arc<Ctx>) -> Result<Action, GitopsError> {
    let work = async {
        reconcile::source::reconcile_repository(&repo, &ctx.api, &ctx.settings)
            .await
            .map(action)
            .map_err(GitopsError::Fetch)
    };
    ctx.repositories.reconcile(&*repo, work).await
}

fn repo_error(repo: Arc<GitRepository>, err: &GitopsError, ctx: Arc<Ctx>) -> Action {
    let every = interval(
        "spec.interval",
        &repo.spec.interval,
        Duration::from_secs(60),
    );
    ctx.repositories.retry(&*repo, err, every)
}

/// Runs the GitRepository and Kustomization controllers until their streams end, when `enabled`
/// and the Kustomization CRD is served; otherwise waits for ever. `--watch-namespace` limits
/// both kinds to one namespace; `--selector` filters them by label (so a sealkit controller can
/// run beside Flux on objects of its own).
pub async fn run(kube: Arc<Kube>, writer: Writer, enabled: bool, settings: Settings) {
    let client = kube.client();
    let ns = settings.namespace.as_deref();
    if !enabled || !crate::runtime::served::<Kustomization>(&client, ns, "the GitOps loop").await {
        return std::future::pending().await;
    }
    let cache = &settings.reconcile.cache_dir;
    if let Err(e) = std::fs::create_dir_all(cache) {
        tracing::error!(dir = %cache.display(), error = %e, "cannot create the GitOps cache directory: the GitOps loop is off");
        return std::future::pending().await;
    }
    tracing::info!("starting the GitOps sync loop");
    let metrics = settings.reconcile.metrics.clone();
    let ctx = Arc::new(Ctx {
        api: kube::KubeFlux::new(kube.clone(), writer),
        settings: settings.reconcile.clone(),
        kustomizations: Glue::new("kustomization", metrics.clone()),
        repositories: Glue::new("gitrepository", metrics),
    });
    let (kss, repos) = match ns {
        Some(ns) => (
            Api::<Kustomization>::namespaced(client.clone(), ns),
            Api::<GitRepository>::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let watch = match &settings.selector {
        Some(sel) => watcher::Config::default().labels(sel),
        None => watcher::Config::default(),
    };
    let bounded = || controller::Config::default().concurrency(settings.concurrency);
    let controller = Controller::new(kss.clone(), watch.clone()).with_config(bounded());
    let store = controller.store();
    let store2 = store.clone();
    let ks_loop = controller
        // A new revision of a source wakes the Kustomizations that follow it.
        .watches(
            repos.clone(),
            watcher::Config::default(),
            move |repo: GitRepository| {
                let (ns, name) = (repo.namespace().unwrap_or_default(), repo.name_any());
                store
                    .state()
                    .into_iter()
                    .filter(|k| {
                        k.spec.source_ref.kind == "GitRepository"
                            && k.spec.source_ref.name == name
                            && k.spec
                                .source_ref
                                .namespace
                                .clone()
                                .unwrap_or_else(|| k.namespace().unwrap_or_default())
                                == ns
                    })
                    .map(|k| ObjectRef::from_obj(&*k))
                    .collect::<Vec<_>>()
            },
        )
        // A dependency turning Ready wakes its dependents (no polling).
        .watches(
            kss,
            watcher::Config::default(),
            move |dep: Kustomization| {
                let (ns, name) = (dep.namespace().unwrap_or_default(), dep.name_any());
                store2
                    .state()
                    .into_iter()
                    .filter(|k| {
                        k.spec.depends_on.iter().flatten().any(|d| {
                            d.name == name
                                && d.namespace
                                    .clone()
                                    .unwrap_or_else(|| k.namespace().unwrap_or_default())
                                    == ns
                        })
                    })
                    .map(|k| ObjectRef::from_obj(&*k))
                    .collect::<Vec<_>>()
            },
        )
        .run(reconcile_ks, ks_error, ctx.clone());
    let repo_loop =
        Controller::new(repos, watch)
            .with_config(bounded())
            .run(reconcile_repo, repo_error, ctx);
    futures::future::join(
        crate::runtime::drain("kustomization", ks_loop),
        crate::runtime::drain("gitrepository", repo_loop),
    )
    .await;
}
