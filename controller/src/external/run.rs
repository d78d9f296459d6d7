//! The ExternalSecret controller loop (kube-runtime glue; the logic is in `reconcile`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use sealkit_api::{ClusterSecretStore, ExternalSecret, SecretStore};

use super::reconcile::{AwsFactory, Next, SyncContext, reconcile, store_status};
use crate::kube_api::KubeApi;
use crate::unseal::reconcile::Failures;

/// Settings of the loop.
pub struct Settings {
    /// Only this namespace (default: all).
    pub namespace: Option<String>,
    /// Label selector on ExternalSecrets.
    pub selector: Option<String>,
}

struct Ctx {
    api: KubeApi,
    sync: SyncContext<AwsFactory>,
    failures: Failures,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failed(String);

async fn reconcile_one(es: Arc<ExternalSecret>, ctx: Arc<Ctx>) -> Result<Action, Failed> {
    let next = match crate::guard::contained(reconcile(&es, &ctx.api, &ctx.sync)).await {
        Ok(r) => r.map_err(Failed)?,
        // One object's bug never stops the others: told on the object, retried with backoff.
        Err(msg) => {
            use super::reconcile::SyncApi;
            ctx.api.event(&es, true, "UpdateFailed", &msg).await;
            return Err(Failed(msg));
        }
    };
    ctx.failures.succeeded(&es.uid().unwrap_or_default());
    Ok(match next {
        Next::After(d) => Action::requeue(d),
        Next::Wait => Action::await_change(),
    })
}

fn error_policy(es: Arc<ExternalSecret>, err: &Failed, ctx: Arc<Ctx>) -> Action {
    let wait = ctx.failures.failed(&es.uid().unwrap_or_default());
    tracing::warn!(name = %es.name_any(), namespace = ?es.namespace(), error = %err, retry_in = ?wait, "ExternalSecret sync failed");
    Action::requeue(wait)
}

async fn reconcile_store(store: Arc<SecretStore>, ctx: Arc<Ctx>) -> Result<Action, Failed> {
    let ns = store.namespace().unwrap_or_default();
    let id = format!("SecretStore {ns}/{}", store.name_any());
    let status = crate::guard::contained(store_status(
        &ctx.api,
        &store.spec.provider,
        id,
        super::reconcile::CredentialScope::Namespaced(&ns),
        store.status.as_ref(),
    ))
    .await
    .map_err(Failed)?;
    if store.status.as_ref() != Some(&status) {
        ctx.api
            .patch_status(&*store, &status)
            .await
            .map_err(Failed)?;
    }
    Ok(Action::requeue(STORE_REQUEUE))
}

async fn reconcile_cluster_store(
    store: Arc<ClusterSecretStore>,
    ctx: Arc<Ctx>,
) -> Result<Action, Failed> {
    let id = format!("ClusterSecretStore {}", store.name_any());
    let status = crate::guard::contained(store_status(
        &ctx.api,
        &store.spec.provider,
        id,
        super::reconcile::CredentialScope::ClusterOnly,
        store.status.as_ref(),
    ))
    .await
    .map_err(Failed)?;
    if store.status.as_ref() != Some(&status) {
        ctx.api
            .patch_cluster_status(&*store, &status)
            .await
            .map_err(Failed)?;
    }
    Ok(Action::requeue(STORE_REQUEUE))
}

/// Stores are checked again this often (ESO's `--store-requeue-interval`).
const STORE_REQUEUE: Duration = Duration::from_secs(300);

fn store_error<K>(_: Arc<K>, err: &Failed, _: Arc<Ctx>) -> Action {
    tracing::warn!(error = %err, "cannot write a store's status");
    Action::requeue(Duration::from_secs(60))
}

/// Runs the ExternalSecret controller until the stream ends.
pub async fn run(client: Client, api: KubeApi, sync: SyncContext<AwsFactory>, settings: Settings) {
    let (es_api, secrets) = match &settings.namespace {
        Some(ns) => (
            Api::<ExternalSecret>::namespaced(client.clone(), ns),
            Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::<PartialObjectMeta<Secret>>::all(client.clone()),
        ),
    };
    let watch = match &settings.selector {
        Some(sel) => watcher::Config::default().labels(sel),
        None => watcher::Config::default(),
    };
    // Owned Secrets are watched by their managed label only (hand edits and deletions heal).
    let owned =
        watcher::Config::default().labels(&format!("{}=true", super::reconcile::MANAGED_LABEL));
    let ctx = Arc::new(Ctx {
        api,
        sync,
        failures: Failures::default(),
    });
    let sweeper = {
        let ctx = ctx.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                ctx.sync.fetcher.sweep();
            }
        }
    };
    // Metadata only (PartialObjectMeta): the watch cache never holds a value.
    let controller = Controller::new(es_api, watch.clone())
        .owns(secrets, owned)
        .run(reconcile_one, error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "ExternalSecret controller event");
            }
        });
    let stores = match &settings.namespace {
        Some(ns) => Api::<SecretStore>::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let store_loop = Controller::new(stores, watch.clone())
        .run(reconcile_store, store_error, ctx.clone())
        .for_each(|_| async {});
    // ClusterSecretStores are cluster-wide: only a controller that watches every namespace
    // reports on them.
    let cluster_store_loop = async {
        if settings.namespace.is_none() {
            Controller::new(
                Api::<ClusterSecretStore>::all(client.clone()),
                watch.clone(),
            )
            .run(reconcile_cluster_store, store_error, ctx.clone())
            .for_each(|_| async {})
            .await;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        () = controller => {},
        () = sweeper => {},
        () = store_loop => {},
        () = cluster_store_loop => {},
    }
}
