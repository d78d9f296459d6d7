//! The ExternalSecret syncer: ESO's `external-secrets.io/v1` manifests, AWS Secrets Manager and
//! Parameter Store, with one shared, batching fetch cache.
//!
//! - `reconcile`: one ExternalSecret against the [`reconcile::SyncApi`] seam;
//! - `policy`: whether a refresh is due; `store`: store resolution, credentials, identity;
//! - `cache`: the cross-ExternalSecret fetch cache that merges requests into batch calls;
//! - `sync`: pure data building (property, decoding, extract, find, rewrite, templates);
//! - `provider`: the provider seam, AWS (`provider::aws`) and memory;
//! - `kube`: the seam over the cluster; `memory`: the in-memory fake;
//! - [`run`]: the controllers (ExternalSecrets with their Secrets as metadata, and the stores'
//!   status).

pub mod cache;
pub mod kube;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
pub mod policy;
pub mod provider;
pub mod reconcile;
pub mod store;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use ::kube::api::{Api, PartialObjectMeta};
use ::kube::runtime::controller::{Action, Controller};
use ::kube::runtime::watcher;
use ::kube::{Client, ResourceExt};
use k8s_openapi::api::core::v1::Secret;
use sealkit_api::{ClusterSecretStore, ExternalSecret, SecretStore};

use crate::runtime::metrics::Metrics;
use crate::runtime::status::Writer;
use crate::runtime::{Glue, LoopError};
use cache::Fetcher;
use policy::Next;
use reconcile::SyncContext;
use store::{AwsFactory, CredentialScope, store_status};

/// What the ExternalSecret loop is told.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Only this namespace (default: all).
    pub namespace: Option<String>,
    /// Label selector on ExternalSecrets and stores.
    pub selector: Option<String>,
    /// How long a fetched value may be shared at most (`--provider-cache-ttl`).
    pub provider_cache_ttl: Duration,
    /// AWS request budgets.
    pub limits: provider::aws::AwsLimits,
}

/// Why an ExternalSecret or store reconcile failed (retried with backoff; the status already
/// says why, and the last good Secret stays).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExternalError {
    /// The sync failed (store, provider, template, write): the status names the step.
    #[error("{0}")]
    Sync(String),
    /// A store's status could not be written.
    #[error("{0}")]
    Status(String),
    /// The reconcile panicked (a bug; contained).
    #[error("{0}")]
    Panicked(String),
}

impl LoopError for ExternalError {
    fn metric_label(&self) -> &'static str {
        match self {
            ExternalError::Sync(_) => "sync",
            ExternalError::Status(_) => "status",
            ExternalError::Panicked(_) => "panic",
        }
    }
    fn panicked(message: String) -> Self {
        ExternalError::Panicked(message)
    }
}

struct Ctx {
    api: kube::KubeSync,
    sync: SyncContext<AwsFactory>,
    glue: Glue,
    stores: Glue,
}

async fn reconcile_one(es: Arc<ExternalSecret>, ctx: Arc<Ctx>) -> Result<Action, ExternalError> {
    let work = async {
        let next = reconcile::reconcile(&es, &ctx.api, &ctx.sync)
            .await
            .map_err(ExternalError::Sync)?;
        Ok(match next {
            Next::After(d) => Action::requeue(d),
            Next::Wait => Action::await_change(),
        })
    };
    let r = ctx.glue.reconcile(&*es, work).await;
    if let Err(ExternalError::Panicked(msg)) = &r {
        use reconcile::SyncApi;
        ctx.api.event(&es, true, "UpdateFailed", msg).await;
    }
    r
}

fn error_policy(es: Arc<ExternalSecret>, err: &ExternalError, ctx: Arc<Ctx>) -> Action {
    ctx.glue.backoff(&*es, err)
}

/// Stores are checked again this often (ESO's `--store-requeue-interval`).
const STORE_REQUEUE: Duration = Duration::from_secs(300);

/// Validates a store's provider and writes its status when it changed (`write`: namespaced or
/// cluster-scoped status write).
async fn refresh_store<W, F>(
    ctx: &Ctx,
    provider: &sealkit_api::StoreProvider,
    id: String,
    scope: CredentialScope<'_>,
    current: Option<&sealkit_api::SecretStoreStatus>,
    write: W,
) -> Result<Action, ExternalError>
where
    W: FnOnce(sealkit_api::SecretStoreStatus) -> F,
    F: std::future::Future<Output = Result<(), String>>,
{
    let status = store_status(&ctx.api, provider, id, scope, current).await;
    if current != Some(&status) {
        write(status).await.map_err(ExternalError::Status)?;
    }
    Ok(Action::requeue(STORE_REQUEUE))
}

async fn reconcile_store(store: Arc<SecretStore>, ctx: Arc<Ctx>) -> Result<Action, ExternalError> {
    let ns = store.namespace().unwrap_or_default();
    let id = format!("SecretStore {ns}/{}", store.name_any());
    let work = refresh_store(
        &ctx,
        &store.spec.provider,
        id,
        CredentialScope::Namespaced(&ns),
        store.status.as_ref(),
        |s| {
            let (ctx, store) = (&ctx, &store);
            async move { ctx.api.writer.status(&**store, &s).await }
        },
    );
    ctx.stores.reconcile(&*store, work).await
}

async fn reconcile_cluster_store(
    store: Arc<ClusterSecretStore>,
    ctx: Arc<Ctx>,
) -> Result<Action, ExternalError> {
    let id = format!("ClusterSecretStore {}", store.name_any());
    let work = refresh_store(
        &ctx,
        &store.spec.provider,
        id,
        CredentialScope::ClusterOnly,
        store.status.as_ref(),
        |s| {
            let (ctx, store) = (&ctx, &store);
            async move { ctx.api.writer.cluster_status(&**store, &s).await }
        },
    );
    ctx.stores.reconcile(&*store, work).await
}

fn store_error<K: ::kube::Resource>(store: Arc<K>, err: &ExternalError, ctx: Arc<Ctx>) -> Action {
    ctx.stores.retry(&*store, err, Duration::from_secs(60))
}

/// Runs the ExternalSecret and store controllers until their streams end, when `enabled` and
/// the ExternalSecret CRD is served; otherwise waits for ever.
pub async fn run(
    client: Client,
    writer: Writer,
    metrics: Arc<Metrics>,
    enabled: bool,
    settings: Settings,
) {
    let served = crate::runtime::served::<ExternalSecret>(
        &client,
        settings.namespace.as_deref(),
        "the syncer",
    );
    if !enabled || !served.await {
        return std::future::pending().await;
    }
    tracing::info!("starting the ExternalSecret syncer");
    let sync = SyncContext::new(
        AwsFactory::new(settings.limits.clone(), metrics.clone()),
        Fetcher::new(settings.provider_cache_ttl, Duration::from_millis(20)),
        metrics.clone(),
    );
    let (es_api, secrets, stores) = match &settings.namespace {
        Some(ns) => (
            Api::<ExternalSecret>::namespaced(client.clone(), ns),
            Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), ns),
            Api::<SecretStore>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::<PartialObjectMeta<Secret>>::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    let watch = match &settings.selector {
        Some(sel) => watcher::Config::default().labels(sel),
        None => watcher::Config::default(),
    };
    // Owned Secrets are watched by their managed label, as metadata only (hand edits and
    // deletions heal; the watch cache never holds a value).
    let owned = watcher::Config::default().labels(&format!("{}=true", reconcile::MANAGED_LABEL));
    let ctx = Arc::new(Ctx {
        api: kube::KubeSync { writer },
        sync,
        glue: Glue::new("externalsecret", metrics.clone()),
        stores: Glue::new("secretstore", metrics),
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
    let controller = crate::runtime::drain(
        "externalsecret",
        Controller::new(es_api, watch.clone())
            .owns(secrets, owned)
            .run(reconcile_one, error_policy, ctx.clone()),
    );
    let store_loop = crate::runtime::drain(
        "secretstore",
        Controller::new(stores, watch.clone()).run(reconcile_store, store_error, ctx.clone()),
    );
    // ClusterSecretStores are cluster-wide: only a controller that watches every namespace
    // reports on them.
    let cluster_store_loop = async {
        if settings.namespace.is_none() {
            let api = Api::<ClusterSecretStore>::all(client.clone());
            crate::runtime::drain(
                "clustersecretstore",
                Controller::new(api, watch.clone()).run(
                    reconcile_cluster_store,
                    store_error,
                    ctx.clone(),
                ),
            )
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
