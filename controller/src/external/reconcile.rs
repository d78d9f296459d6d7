//! The ExternalSecret reconciler: decide whether a refresh is due, resolve the store, fetch
//! through the shared cache, build the Secret, write it, report status.
//!
//! It reads top to bottom: is a refresh due (`policy`), resolve the store (`store`), fetch through
//! the shared cache and build (`cache`, `sync`), write the Secret, write the status. The cluster
//! is reached through [`SyncApi`] (the cluster in `kube`, an in-memory fake in `memory`) and
//! providers through [`ProviderFactory`] (the AWS SDK, or memory).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::{Resource, ResourceExt};
use sealkit_api::{
    ClusterSecretStore, ExternalSecret, ExternalSecretStatus, SecretStore, StatusCondition,
};

use super::cache::Fetcher;
use super::policy::{Next, due, max_value_age, ready, synced_resource_version, target_name};
use super::store::{ProviderFactory, ResolvedStore, resolve_store};
use super::sync::{self, SyncError, TemplateSource, err};
use crate::runtime::conditions::{status_word, transition};
use crate::runtime::metrics::{Metrics, SyncLabels};

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Label on every Secret the syncer manages (ESO's).
pub const MANAGED_LABEL: &str = "reconcile.external-secrets.io/managed";
/// Annotation with the hash of the data we wrote (ESO's name; our hash).
pub const DATA_HASH_ANNOTATION: &str = "reconcile.external-secrets.io/data-hash";

/// What the reconciler needs from the cluster.
pub trait SyncApi: Send + Sync {
    /// A Secret.
    fn get_secret(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Secret>, String>> + Send;
    /// Server-side apply of a Secret (our field manager owns exactly the fields we send).
    fn apply_secret(&self, secret: &Secret) -> impl Future<Output = Result<(), String>> + Send;
    /// Deletes a Secret, only if its uid is still `uid` (a Secret recreated in between, by
    /// anyone, is left alone).
    fn delete_secret(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// A ConfigMap's data.
    fn get_config_map(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<BTreeMap<String, String>>, String>> + Send;
    /// A SecretStore.
    fn get_store(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<SecretStore>, String>> + Send;
    /// A ClusterSecretStore.
    fn get_cluster_store(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<ClusterSecretStore>, String>> + Send;
    /// A namespace's labels (for ClusterSecretStore conditions).
    fn namespace_labels(
        &self,
        ns: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, String>, String>> + Send;
    /// Writes an ExternalSecret's status.
    fn set_status(
        &self,
        es: &ExternalSecret,
        status: &ExternalSecretStatus,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Records an Event on an ExternalSecret.
    fn event(
        &self,
        es: &ExternalSecret,
        warning: bool,
        reason: &str,
        message: &str,
    ) -> impl Future<Output = ()> + Send;
}

/// Shared reconciler state.
pub struct SyncContext<F> {
    /// Provider factory.
    pub factory: F,
    /// The shared fetch cache.
    pub fetcher: Fetcher,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Resolved stores (store, credentials) shared for a few seconds, so a refresh wave of many
    /// ExternalSecrets reads each store and credentials Secret once, not once per object.
    /// Concurrent reconciles of one store wait for the first resolution and are all woken by it.
    stores: Mutex<HashMap<String, StoreSlot>>,
    store_ttl: Duration,
    /// The status of each successful sync we wrote (by uid), for a few minutes: the watch that
    /// hands us an ExternalSecret can lag behind our own status write (the Secret's watch event
    /// often arrives first), and a reconcile that saw the old status would sync again at once,
    /// costing provider calls and resetting the age of the shared cached values.
    written: Mutex<HashMap<String, (std::time::Instant, ExternalSecretStatus)>>,
}

/// How long our own status writes are remembered (far longer than any watch lag).
const WRITTEN_TTL: Duration = Duration::from_secs(300);

type StoreSlot = (
    std::time::Instant,
    Arc<tokio::sync::OnceCell<Arc<ResolvedStore>>>,
);

/// How long a resolved store (and its credentials) is reused.
const STORE_TTL: Duration = Duration::from_secs(10);

impl<F> SyncContext<F> {
    /// A context with an empty store cache.
    pub fn new(factory: F, fetcher: Fetcher, metrics: Arc<Metrics>) -> Self {
        SyncContext {
            factory,
            fetcher,
            metrics,
            stores: Mutex::default(),
            store_ttl: STORE_TTL,
            written: Mutex::default(),
        }
    }

    /// `es` as it is after our last write: with the status of our last successful sync when
    /// the watch has not shown it yet (a status without a newer `refreshTime`).
    fn with_own_writes<'a>(&self, es: &'a ExternalSecret) -> std::borrow::Cow<'a, ExternalSecret> {
        let uid = es.metadata.uid.clone().unwrap_or_default();
        let mut written = locked(&self.written);
        written.retain(|_, (at, _)| at.elapsed() < WRITTEN_TTL);
        let Some((_, ours)) = written.get(&uid) else {
            return std::borrow::Cow::Borrowed(es);
        };
        let seen = es.status.as_ref().and_then(|s| s.refresh_time.as_ref());
        if seen.is_some_and(|t| Some(t) >= ours.refresh_time.as_ref()) {
            return std::borrow::Cow::Borrowed(es);
        }
        let mut newer = es.clone();
        newer.status = Some(ours.clone());
        std::borrow::Cow::Owned(newer)
    }

    /// Remembers the status of a successful sync of `es`.
    fn wrote(&self, es: &ExternalSecret, status: ExternalSecretStatus) {
        if let Some(uid) = es.metadata.uid.clone() {
            locked(&self.written).insert(uid, (std::time::Instant::now(), status));
        }
    }

    /// Changes how long a resolved store is reused (zero: never).
    pub fn with_store_ttl(mut self, ttl: Duration) -> Self {
        self.store_ttl = ttl;
        self
    }

    /// The store an ExternalSecret uses, from the short-lived cache or the cluster.
    async fn store<A: SyncApi>(
        &self,
        api: &A,
        es: &ExternalSecret,
    ) -> Result<Arc<ResolvedStore>, SyncError> {
        let r = es.spec.secret_store_ref.clone().unwrap_or_default();
        // A ClusterSecretStore's answer depends on the ExternalSecret's namespace.
        let key = format!(
            "{}/{}/{}",
            r.kind.as_deref().unwrap_or("SecretStore"),
            es.namespace().unwrap_or_default(),
            r.name
        );
        let cell = {
            let mut stores = locked(&self.stores);
            let ttl = self.store_ttl;
            stores.retain(|_, (at, _)| at.elapsed() < ttl);
            stores
                .entry(key)
                .or_insert_with(|| (std::time::Instant::now(), Arc::default()))
                .1
                .clone()
        };
        // Errors are not kept: the next reconcile of this store tries again.
        cell.get_or_try_init(|| async { resolve_store(api, es).await.map(Arc::new) })
            .await
            .cloned()
    }
}

async fn template_sources<A: SyncApi>(
    api: &A,
    es: &ExternalSecret,
) -> Result<Vec<TemplateSource>, SyncError> {
    let ns = es.namespace().unwrap_or_default();
    let mut out = Vec::new();
    let Some(t) = es.spec.target.as_ref().and_then(|t| t.template.as_ref()) else {
        return Ok(out);
    };
    for (i, tf) in t.template_from.iter().flatten().enumerate() {
        let target = tf.target.clone().unwrap_or_else(|| "Data".into());
        if let Some(lit) = &tf.literal {
            out.push(TemplateSource {
                target: target.clone(),
                origin: format!("templateFrom[{i}].literal"),
                key: None,
                text: lit.clone(),
            });
        }
        for (kind, r) in [("configMap", &tf.config_map), ("secret", &tf.secret)] {
            let Some(r) = r else { continue };
            let map: BTreeMap<String, String> = if kind == "configMap" {
                api.get_config_map(&ns, &r.name)
                    .await
                    .map_err(|e| {
                        err(format!(
                            "templateFrom[{i}]: cannot read ConfigMap {ns}/{}: {e}",
                            r.name
                        ))
                    })?
                    .ok_or_else(|| {
                        err(format!(
                            "templateFrom[{i}]: ConfigMap {ns}/{} does not exist",
                            r.name
                        ))
                    })?
            } else {
                let s = api
                    .get_secret(&ns, &r.name)
                    .await
                    .map_err(|e| {
                        err(format!(
                            "templateFrom[{i}]: cannot read Secret {ns}/{}: {e}",
                            r.name
                        ))
                    })?
                    .ok_or_else(|| {
                        err(format!(
                            "templateFrom[{i}]: Secret {ns}/{} does not exist",
                            r.name
                        ))
                    })?;
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect()
            };
            for item in &r.items {
                let text = map.get(&item.key).ok_or_else(|| {
                    err(format!(
                        "templateFrom[{i}].{kind} {}: no key {:?}",
                        r.name, item.key
                    ))
                })?;
                let kv = match item.template_as.as_deref().unwrap_or("Values") {
                    "Values" => false,
                    "KeysAndValues" => true,
                    other => {
                        return Err(err(format!(
                            "templateFrom[{i}].{kind}.items templateAs {other:?} is not Values or KeysAndValues"
                        )));
                    }
                };
                out.push(TemplateSource {
                    target: target.clone(),
                    origin: format!("templateFrom[{i}].{kind} {}/{}", r.name, item.key),
                    key: (!kv).then(|| item.key.clone()),
                    text: text.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// Fetches and builds the Secret data, labels and annotations.
async fn fetch_and_build<A: SyncApi, F: ProviderFactory>(
    api: &A,
    ctx: &SyncContext<F>,
    es: &ExternalSecret,
    store: &ResolvedStore,
) -> Result<sync::Rendered, SyncError> {
    let provider = ctx
        .factory
        .provider(store)
        .await
        .map_err(|e| err(format!("{}: {e}", store.id)))?;
    let cache_id = store.cache_id();
    let keys = sync::needed_keys(&es.spec, &store.prefix);
    let queries = sync::find_queries(&es.spec, &store.prefix);
    let max_age = max_value_age(es);
    let values_fut = ctx.fetcher.get(&cache_id, provider.clone(), &keys, max_age);
    let finds_fut = futures::future::join_all(queries.iter().map(|(i, q)| {
        let (provider, cache_id) = (provider.clone(), cache_id.clone());
        async move { (*i, ctx.fetcher.find(&cache_id, provider, q, max_age).await) }
    }));
    let (values, finds) = futures::future::join(values_fut, finds_fut).await;
    let mut found = HashMap::new();
    for (i, r) in finds {
        found.insert(i, r.map_err(|e| err(format!("dataFrom[{i}].find: {e}")))?);
    }
    let merge_missing = es
        .spec
        .target
        .as_ref()
        .and_then(|t| t.deletion_policy.as_deref())
        == Some("Merge");
    let data = sync::build(&es.spec, &store.prefix, &values, &found, merge_missing)?;
    let sources = template_sources(api, es).await?;
    sync::render(&es.spec, data, &sources)
}

/// Whether `secret` has this ExternalSecret as its controller (by uid).
fn controlled_by(secret: &Secret, es: &ExternalSecret) -> bool {
    let uid = es.metadata.uid.as_deref().unwrap_or("");
    !uid.is_empty()
        && secret
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.uid == uid && o.kind == "ExternalSecret")
}

fn owner_ref(es: &ExternalSecret) -> Option<OwnerReference> {
    es.controller_owner_ref(&())
}

pub(crate) fn condition(
    ok: bool,
    reason: &str,
    message: &str,
    previous: Option<&StatusCondition>,
) -> StatusCondition {
    let status = status_word(ok);
    StatusCondition {
        type_: "Ready".into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(transition(
            previous.map(|p| (p.status.as_str(), p.last_transition_time.as_ref())),
            status,
        )),
    }
}

async fn write_status<A: SyncApi, F>(
    api: &A,
    ctx: &SyncContext<F>,
    es: &ExternalSecret,
    ok: bool,
    reason: &str,
    message: &str,
    synced_now: bool,
) -> Result<(), String> {
    // ESO's `externalsecret_status_condition`: 1 for the current status, 0 for the other.
    for (value, current) in [("True", ok), ("False", !ok)] {
        ctx.metrics
            .external_condition
            .get_or_create(&crate::runtime::metrics::EsConditionLabels {
                name: es.name_any(),
                namespace: es.namespace().unwrap_or_default(),
                condition: "Ready".into(),
                status: value.into(),
            })
            .set(i64::from(current));
    }
    let previous = es.status.clone().unwrap_or_default();
    let prev_ready = ready(es);
    let mut status = previous.clone();
    status.conditions = Some(vec![condition(ok, reason, message, prev_ready)]);
    if synced_now {
        status.refresh_time = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        status.synced_resource_version = Some(synced_resource_version(es));
        status.binding = Some(sealkit_api::Binding {
            name: target_name(es),
        });
    }
    let unchanged = !synced_now
        && prev_ready.is_some_and(|p| {
            p.status == (if ok { "True" } else { "False" })
                && p.reason.as_deref() == Some(reason)
                && p.message.as_deref() == Some(message)
        });
    if unchanged {
        return Ok(());
    }
    api.set_status(es, &status).await?;
    if ok && synced_now {
        ctx.wrote(es, status);
    }
    Ok(())
}

/// Reconciles one ExternalSecret. `Err` means "retry with backoff" (status already says why).
pub async fn reconcile<A: SyncApi, F: ProviderFactory>(
    es: &ExternalSecret,
    api: &A,
    ctx: &SyncContext<F>,
) -> Result<Next, String> {
    let started = std::time::Instant::now();
    let es = &*ctx.with_own_writes(es);
    let r = reconcile_inner(es, api, ctx).await;
    ctx.metrics
        .external_reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    let result = match &r {
        Ok((_, true)) => "synced",
        Ok((_, false)) => "skipped",
        Err(_) => "error",
    };
    ctx.metrics
        .external_syncs
        .get_or_create(&SyncLabels {
            result: result.into(),
        })
        .inc();
    // ESO's per-object counters, for existing dashboards.
    let object = crate::runtime::metrics::ObjectLabels {
        name: es.name_any(),
        namespace: es.namespace().unwrap_or_default(),
    };
    ctx.metrics.eso_sync_calls.get_or_create(&object).inc();
    if r.is_err() {
        ctx.metrics.eso_sync_errors.get_or_create(&object).inc();
    }
    r.map(|(n, _)| n)
}

async fn reconcile_inner<A: SyncApi, F: ProviderFactory>(
    es: &ExternalSecret,
    api: &A,
    ctx: &SyncContext<F>,
) -> Result<(Next, bool), String> {
    let ns = es.namespace().unwrap_or_default();
    let name = target_name(es);
    let existing = api.get_secret(&ns, &name).await?;
    let fail = async |msg: &str| -> Result<(Next, bool), String> {
        api.event(es, true, "UpdateFailed", msg).await;
        write_status(api, ctx, es, false, "SecretSyncedError", msg, false).await?;
        Err(msg.to_string())
    };
    let (is_due, next) = match due(es, existing.as_ref(), SystemTime::now()) {
        Ok(d) => d,
        // Bad spec: status says why; no retry storm (the object must change).
        Err(e) => {
            api.event(es, true, "UpdateFailed", &e.message).await;
            write_status(api, ctx, es, false, "SecretSyncedError", &e.message, false).await?;
            return Ok((Next::Wait, false));
        }
    };
    if !is_due {
        return Ok((next, false));
    }
    let target = es.spec.target.clone().unwrap_or_default();
    let creation = target.creation_policy.as_deref().unwrap_or("Owner");
    let deletion = target.deletion_policy.as_deref().unwrap_or("Retain");
    if !matches!(creation, "Owner" | "Orphan" | "Merge" | "None") {
        return fail(&format!(
            "spec.target.creationPolicy {creation:?} is not Owner, Orphan, Merge or None"
        ))
        .await;
    }
    if deletion == "Delete" && creation != "Owner" {
        return fail("spec.target.deletionPolicy Delete needs creationPolicy Owner").await;
    }
    let store = match ctx.store(api, es).await {
        Ok(s) => s,
        Err(e) => return fail(&e.message).await,
    };
    let rendered = match fetch_and_build(api, ctx, es, &store).await {
        Ok(r) => r,
        Err(e) if e.not_found && deletion == "Delete" => {
            // Only a Secret this ExternalSecret controls is ever deleted: never one it found
            // (adopted) or one another object controls.
            let ours = existing.as_ref().is_some_and(|s| controlled_by(s, es));
            let msg = match &existing {
                Some(s) if ours => {
                    let uid = s.metadata.uid.clone().unwrap_or_default();
                    api.delete_secret(&ns, &name, &uid).await?;
                    format!(
                        "{} (deletionPolicy Delete: the Secret was deleted)",
                        e.message
                    )
                }
                Some(_) => format!(
                    "{} (deletionPolicy Delete: Secret {ns}/{name} is not controlled by this ExternalSecret, so it was left alone)",
                    e.message
                ),
                None => format!("{} (deletionPolicy Delete: no Secret to delete)", e.message),
            };
            api.event(es, false, "Deleted", &msg).await;
            write_status(api, ctx, es, false, "SecretDeleted", &msg, true).await?;
            return Ok((next, true));
        }
        // The last good Secret stays as it is.
        Err(e) => return fail(&e.message).await,
    };
    if creation == "None" {
        write_status(
            api,
            ctx,
            es,
            true,
            "SecretSynced",
            "secret synced (creationPolicy None: not written)",
            true,
        )
        .await?;
        return Ok((next, true));
    }
    if let Some(s) = &existing {
        let foreign = s
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true) && Some(&o.uid) != es.metadata.uid.as_ref());
        if let Some(o) = foreign {
            return fail(&format!(
                "Secret {ns}/{name} is controlled by {} {}; refusing to take it over",
                o.kind, o.name
            ))
            .await;
        }
    } else if creation == "Merge" {
        return fail(&format!(
            "Secret {ns}/{name} does not exist (creationPolicy Merge only updates an existing Secret)"
        ))
        .await;
    }
    let data: BTreeMap<String, ByteString> = rendered
        .data
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.to_vec())))
        .collect();
    let mut labels = rendered.labels;
    labels.insert(MANAGED_LABEL.into(), "true".into());
    let mut annotations = rendered.annotations;
    let hash = if creation == "Merge" {
        // Our keys merged into someone else's Secret: the hash covers the result.
        let mut all = existing
            .as_ref()
            .and_then(|s| s.data.clone())
            .unwrap_or_default();
        all.extend(data.clone());
        sync::data_hash(&all)
    } else {
        sync::data_hash(&data)
    };
    annotations.insert(DATA_HASH_ANNOTATION.into(), hash);
    let type_ = target
        .template
        .as_ref()
        .and_then(|t| t.type_.clone())
        .or_else(|| existing.as_ref().and_then(|s| s.type_.clone()))
        .or_else(|| (creation != "Merge").then(|| "Opaque".to_string()));
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: (creation == "Owner").then(|| owner_ref(es).into_iter().collect()),
            ..Default::default()
        },
        type_,
        immutable: target.immutable,
        data: Some(data),
        ..Default::default()
    };
    drop(rendered.data);
    if let Err(e) = api.apply_secret(&secret).await {
        return fail(&format!("cannot write Secret {ns}/{name}: {e}")).await;
    }
    api.event(es, false, "Updated", "Updated Secret").await;
    write_status(api, ctx, es, true, "SecretSynced", "secret synced", true).await?;
    Ok((next, true))
}

#[cfg(test)]
mod tests;
