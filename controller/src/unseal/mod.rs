//! Unsealing SealedSecrets into Secrets, as a drop-in for Bitnami's sealed-secrets-controller.
//!
//! - `plan`: the pure core: given a SealedSecret, the Secret that exists today (if any) and the
//!   keyring, decide — nothing (the Secret already holds this spec's values: no RSA work), apply a
//!   Secret, refuse a name collision, or say why unsealing failed;
//! - `reconcile`: one SealedSecret against the [`reconcile::ClusterApi`] seam;
//! - `kube`: the seam over the cluster; `memory`: the in-memory fake;
//! - `keys`: sealing keys in labelled Secrets, renewal; `http`: the endpoints kubeseal uses;
//! - `verified`: Secrets found up to date, by resourceVersion (a resync reads nothing);
//!   `lean`: what the watch caches keep (no ciphertext of a spec already unsealed);
//!   `prefill`: fills it after a restart from one paginated LIST;
//! - [`run`]: the controller (SealedSecrets, and their Secrets watched as metadata only).

pub mod http;
pub mod keys;
pub mod kube;
pub mod lean;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
mod plan;
mod prefill;
pub mod reconcile;
pub mod verified;

use std::sync::Arc;
use std::time::Duration;

use ::kube::api::{Api, PartialObjectMeta};
use ::kube::runtime::controller::{self, Action, Controller};
use ::kube::runtime::reflector::{self, Store, reflector};
use ::kube::runtime::{WatchStreamExt, watcher};
use k8s_openapi::api::core::v1::Secret;
use sealkit_api::SealedSecret;

pub use plan::{
    DATA_MAC_ANNOTATION, Expected, MANAGED_ANNOTATION, PATCH_ANNOTATION, Plan,
    SKIP_OWNER_REFERENCES_ANNOTATION, SPEC_HASH_ANNOTATION, managed_keys, plan, spec_hash, verify,
};

use crate::runtime::status::Writer;
use crate::runtime::{Glue, LoopError, requeue};

/// What the unseal loop is told.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Sealing keys.
    pub keys: keys::KeySettings,
    /// Only this namespace (default: all).
    pub namespace: Option<String>,
    /// Only SealedSecrets (and Secrets) matching this label selector.
    pub selector: Option<String>,
    /// How often in-sync objects are checked again (jittered).
    pub resync: Duration,
    /// Reconciles run at once.
    pub concurrency: u16,
}

/// Why a SealedSecret reconcile failed (retried with backoff; a SealedSecret that cannot be
/// unsealed is not an error: its status says why and it waits for a change).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnsealError {
    /// The API server refused or failed a read or a write.
    #[error("{0}")]
    Api(String),
    /// The reconcile panicked (a bug; contained).
    #[error("{0}")]
    Panicked(String),
}

impl LoopError for UnsealError {
    fn metric_label(&self) -> &'static str {
        match self {
            UnsealError::Api(_) => "api",
            UnsealError::Panicked(_) => "panic",
        }
    }
    fn panicked(message: String) -> Self {
        UnsealError::Panicked(message)
    }
}

struct Ctx {
    api: kube::KubeUnseal,
    state: Arc<http::AppState>,
    glue: Glue,
    resync: Duration,
    /// The owned-Secret watch cache (a reconcile waits for its first listing).
    cache: Store<PartialObjectMeta<Secret>>,
}

async fn reconcile_one(ss: Arc<SealedSecret>, ctx: Arc<Ctx>) -> Result<Action, UnsealError> {
    // Until the owned-Secret cache has listed once, every reconcile would read its Secret; the
    // first listing takes one or a few requests. (A cache that never fills only costs reads.)
    let _ = tokio::time::timeout(Duration::from_secs(30), ctx.cache.wait_until_ready()).await;
    let work = async {
        reconcile::reconcile(&ss, &ctx.api, &ctx.state)
            .await
            .map_err(UnsealError::Api)?;
        // Done or failed for a reason a retry will not fix soon: back at the resync.
        Ok(Action::requeue(requeue::jitter_around(ctx.resync, 0.1)))
    };
    let r = ctx.glue.reconcile(&*ss, work).await;
    if let Err(UnsealError::Panicked(msg)) = &r {
        use reconcile::{ClusterApi, EventNote};
        let note = EventNote {
            warning: true,
            reason: "ErrUnsealFailed",
            message: msg.clone(),
        };
        ctx.api.event(&ss, note).await;
    }
    r
}

fn error_policy(ss: Arc<SealedSecret>, err: &UnsealError, ctx: Arc<Ctx>) -> Action {
    ctx.glue.backoff(&*ss, err)
}

/// Runs the unseal controller until its stream ends. A new leader first makes sure a sealing
/// key exists.
pub async fn run(
    client: ::kube::Client,
    writer: Writer,
    state: Arc<http::AppState>,
    settings: Settings,
) {
    if let Err(e) = keys::refresh(&client, &settings.keys, &state.keys, true).await {
        tracing::warn!(error = %e, "cannot refresh sealing keys");
    }
    let (sealed, secrets, secrets_meta) = match &settings.namespace {
        Some(ns) => (
            Api::<SealedSecret>::namespaced(client.clone(), ns),
            Api::<Secret>::namespaced(client.clone(), ns),
            Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::<SealedSecret>::all(client.clone()),
            Api::<Secret>::all(client.clone()),
            Api::<PartialObjectMeta<Secret>>::all(client.clone()),
        ),
    };
    let watch = match &settings.selector {
        Some(sel) => watcher::Config::default().labels(sel),
        None => watcher::Config::default(),
    };
    // After a restart, one paginated LIST finds the Secrets that are already up to date, so
    // the first reconcile of each object reads nothing.
    let filled = prefill::run(&sealed, &secrets, &settings.selector, &state).await;
    tracing::info!(
        up_to_date = filled,
        "unseal: Secrets found up to date at start"
    );
    // Owned Secrets are watched as metadata only: the watch cache never holds a value (a
    // reconcile reads its one Secret when the cache does not show a verified version).
    let (cache, cache_writer) = reflector::store();
    let owned = reflector(
        cache_writer,
        watcher(secrets_meta, watch.clone())
            .default_backoff()
            .modify(lean::owned),
    )
    .touched_objects();
    let ctx = Arc::new(Ctx {
        api: kube::KubeUnseal {
            writer,
            secrets: cache.clone(),
        },
        glue: Glue::new("unseal", state.metrics.clone()),
        state,
        resync: settings.resync,
        cache,
    });
    // The SealedSecret cache, lean: without the ciphertext of specs already unsealed.
    let (sealed_cache, sealed_writer) = reflector::store();
    let verified = ctx.state.clone();
    let sealed_stream = reflector(
        sealed_writer,
        // Pages of 200: a page is decoded whole (ciphertext, managedFields) before it is made
        // lean, and that peak is what the process keeps as RSS.
        watcher(sealed, watch.page_size(200))
            .default_backoff()
            .modify(move |ss| lean::sealed(ss, &verified.verified)),
    )
    .applied_objects();
    // Entries of deleted SealedSecrets are dropped now and then, for as long as the loop runs.
    let (pruned, cache_of_sealed) = (ctx.state.clone(), sealed_cache.clone());
    let prune = async move {
        loop {
            // Not at once: the cache is still empty while the entries of a restart are new.
            tokio::time::sleep(Duration::from_secs(600)).await;
            pruned.verified.retain(|ns, name| {
                cache_of_sealed
                    .get(&reflector::ObjectRef::new(name).within(ns))
                    .is_some()
            });
        }
    };
    let stream = Controller::for_stream(sealed_stream, sealed_cache)
        .with_config(controller::Config::default().concurrency(settings.concurrency))
        .owns_stream(owned)
        .run(reconcile_one, error_policy, ctx);
    futures::future::select(
        Box::pin(crate::runtime::drain("unseal", stream)),
        Box::pin(prune),
    )
    .await;
}
