//! The ExternalSecret reconciler: decide whether a refresh is due, resolve the store, fetch
//! through the shared cache, build the Secret, write it, report status.
//!
//! The cluster is reached through [`SyncApi`] (kube in `kube_api.rs`, [`MemorySyncApi`] for
//! tests) and providers through [`ProviderFactory`] (the AWS SDK, or memory).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::{Resource, ResourceExt};
use sealkit_api::{
    AwsProvider, ClusterSecretStore, ExternalSecret, ExternalSecretStatus, SecretStore,
    StatusCondition, StoreProvider,
};
use sealkit_keys::secret::SecretString;

use super::cache::Fetcher;
use super::provider::{BoxFut, FetchError, Provider};
use super::sync::{self, SyncError, TemplateSource};
use crate::metrics::{Metrics, SyncLabels};

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

/// A resolved store: the provider settings and where credentials come from.
#[derive(Debug)]
pub struct ResolvedStore {
    /// `SecretStore/ns/name` or `ClusterSecretStore/name`.
    pub id: String,
    /// The AWS settings.
    pub aws: super::aws::AwsSettings,
    /// Key prefix.
    pub prefix: String,
    /// The credentials Secrets read, as `ns/name@resourceVersion` (empty: the default chain).
    pub credential_sources: Vec<String>,
}

impl ResolvedStore {
    /// The identity of everything cached for this store (clients with their AssumeRole
    /// sessions, fetched values): the whole AWS identity (service, region, access key id, role,
    /// external id, endpoint), the credentials Secrets with their resourceVersions, and a
    /// digest of the credential material (so edited credentials never reuse a client or a
    /// value fetched with the old ones). Never the credentials themselves.
    pub fn cache_id(&self) -> String {
        use sealkit_keys::secret::ExposeSecret;
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        if let Some(c) = &self.aws.credentials {
            for part in [
                c.access_key_id.as_str(),
                c.secret_access_key.expose_secret(),
                c.session_token.as_ref().map_or("", |t| t.expose_secret()),
            ] {
                ctx.update(&(part.len() as u64).to_be_bytes());
                ctx.update(part.as_bytes());
            }
        }
        let digest: String = ctx.finish().as_ref()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        serde_json::json!([self.aws.identity(), self.credential_sources, digest]).to_string()
    }
}

/// Builds (and caches) providers for resolved stores.
pub trait ProviderFactory: Send + Sync {
    /// The provider for a store.
    fn provider<'a>(
        &'a self,
        store: &'a ResolvedStore,
    ) -> BoxFut<'a, Result<Arc<dyn Provider>, FetchError>>;
}

/// The AWS SDK factory: one client per store identity, reused (its credentials cache with it).
pub struct AwsFactory {
    /// Request budgets.
    pub limits: super::aws::AwsLimits,
    /// Token buckets.
    pub limiters: Arc<super::aws::Limiters>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    clients: tokio::sync::Mutex<HashMap<String, Arc<dyn Provider>>>,
}

impl AwsFactory {
    /// A factory with these budgets.
    pub fn new(limits: super::aws::AwsLimits, metrics: Arc<Metrics>) -> Self {
        AwsFactory {
            limits,
            limiters: Arc::default(),
            metrics,
            clients: Default::default(),
        }
    }
}

impl ProviderFactory for AwsFactory {
    fn provider<'a>(
        &'a self,
        store: &'a ResolvedStore,
    ) -> BoxFut<'a, Result<Arc<dyn Provider>, FetchError>> {
        Box::pin(async move {
            let id = store.cache_id();
            let mut clients = self.clients.lock().await;
            if let Some(p) = clients.get(&id) {
                return Ok(p.clone());
            }
            let p = super::aws::provider(
                &store.aws,
                &self.limits,
                self.limiters.clone(),
                self.metrics.clone(),
            )
            .await?;
            clients.insert(id, p.clone());
            Ok(p)
        })
    }
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

/// What the loop should do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Come back after this long (a refresh is due then).
    After(Duration),
    /// Nothing until the object changes.
    Wait,
}

fn parse_interval(s: Option<&str>) -> Result<Duration, SyncError> {
    crate::guard::duration_or("spec.refreshInterval", s, Duration::from_secs(3600)).map_err(
        |message| SyncError {
            message,
            not_found: false,
        },
    )
}

/// `<generation>-<hash of labels and annotations>`: any metadata change forces a refresh.
pub fn synced_resource_version(es: &ExternalSecret) -> String {
    let meta = serde_json::json!([es.metadata.labels, es.metadata.annotations]);
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, meta.to_string().as_bytes());
    let h: String = d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{}-{h}", es.metadata.generation.unwrap_or(0))
}

fn target_name(es: &ExternalSecret) -> String {
    es.spec
        .target
        .as_ref()
        .and_then(|t| t.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| es.name_any())
}

fn is_valid(secret: Option<&Secret>) -> bool {
    let Some(s) = secret else { return false };
    let managed = s
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_LABEL))
        .is_some_and(|v| v == "true");
    let hash = s
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DATA_HASH_ANNOTATION));
    managed && hash.is_some_and(|h| *h == sync::data_hash(&s.data.clone().unwrap_or_default()))
}

fn ready(es: &ExternalSecret) -> Option<&StatusCondition> {
    es.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
}

/// Whether a refresh is due now, and when the next one will be.
pub fn due(
    es: &ExternalSecret,
    secret: Option<&Secret>,
    now: SystemTime,
) -> Result<(bool, Next), SyncError> {
    let interval = parse_interval(es.spec.refresh_interval.as_deref())?;
    let policy = es.spec.refresh_policy.as_deref().unwrap_or("Periodic");
    let status = es.status.as_ref();
    let synced_before = status.and_then(|s| s.refresh_time.as_ref()).is_some();
    let version_changed = status.and_then(|s| s.synced_resource_version.as_deref())
        != Some(&synced_resource_version(es));
    let failing = ready(es).is_none_or(|c| c.status != "True");
    let creation_none = es
        .spec
        .target
        .as_ref()
        .and_then(|t| t.creation_policy.as_deref())
        == Some("None");
    let secret_ok = creation_none || is_valid(secret);
    let (due, next) = match policy {
        "CreatedOnce" => (!synced_before || !secret_ok, Next::Wait),
        "OnChange" => (version_changed || !secret_ok || failing, Next::Wait),
        "Periodic" => {
            if interval.is_zero() {
                (version_changed || !secret_ok || failing, Next::Wait)
            } else {
                let last = status.and_then(|s| s.refresh_time.as_ref()).map(|t| {
                    SystemTime::UNIX_EPOCH + Duration::from_secs(t.0.as_second().max(0) as u64)
                });
                let elapsed = last.and_then(|l| now.duration_since(l).ok());
                let expired = elapsed.is_none_or(|e| e >= interval);
                let due = expired || version_changed || !secret_ok || failing;
                let wait = if due {
                    interval
                } else {
                    interval.saturating_sub(elapsed.unwrap_or_default())
                };
                (due, Next::After(jitter(wait, interval)))
            }
        }
        other => {
            return Err(SyncError {
                message: format!(
                    "spec.refreshPolicy {other:?} is not Periodic, OnChange or CreatedOnce"
                ),
                not_found: false,
            });
        }
    };
    Ok((due, next))
}

/// Adds up to +10 % of the interval (at most 5 minutes), so refreshes after a restart spread out
/// instead of hitting the provider at the same instant (ESO #4231).
fn jitter(wait: Duration, interval: Duration) -> Duration {
    let spread = interval.mul_f64(0.1).min(Duration::from_secs(300));
    let mut r = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut r);
    wait + spread.mul_f64(f64::from(u32::from_le_bytes(r)) / f64::from(u32::MAX))
}

fn err(message: impl Into<String>) -> SyncError {
    SyncError {
        message: message.into(),
        not_found: false,
    }
}

/// Whether a namespace may use a ClusterSecretStore.
fn namespace_allowed(
    store: &ClusterSecretStore,
    ns: &str,
    labels: &BTreeMap<String, String>,
) -> Result<bool, SyncError> {
    let Some(conds) = store.spec.conditions.as_ref().filter(|c| !c.is_empty()) else {
        return Ok(true);
    };
    for c in conds {
        if c.namespaces.iter().flatten().any(|n| n == ns) {
            return Ok(true);
        }
        for r in c.namespace_regexes.iter().flatten() {
            let re = regex::Regex::new(r).map_err(|e| {
                err(format!(
                    "ClusterSecretStore {}: conditions namespaceRegexes {r:?} is not valid: {e}",
                    store.name_any()
                ))
            })?;
            if re.is_match(ns) {
                return Ok(true);
            }
        }
        if let Some(sel) = &c.namespace_selector
            && selector_matches(sel, labels)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

fn selector_matches(
    sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let by_labels = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expr = sel.match_expressions.iter().flatten().all(|e| {
        let vals = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| vals.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !vals.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    by_labels && by_expr
}

fn aws_of(provider: &StoreProvider, store: &str) -> Result<AwsProvider, SyncError> {
    if let Some(aws) = &provider.aws {
        if let Some(k) = aws.other.keys().next() {
            return Err(err(format!(
                "{store}: provider.aws.{k} is not supported by sealkit yet"
            )));
        }
        if aws.auth.as_ref().is_some_and(|a| a.jwt.is_some()) {
            return Err(err(format!(
                "{store}: provider.aws.auth.jwt is not supported yet (use auth.secretRef, or no auth for IRSA / pod identity)"
            )));
        }
        return Ok(aws.clone());
    }
    match provider.other.keys().next() {
        Some(p) => Err(err(format!(
            "{store}: provider {p} is not supported (sealkit supports aws)"
        ))),
        None => Err(err(format!("{store}: spec.provider is empty"))),
    }
}

/// Where a store may read credentials from.
#[derive(Debug, Clone, Copy)]
pub enum CredentialScope<'a> {
    /// A SecretStore: its own namespace only (a `namespace` naming another one is refused, as
    /// ESO allows it only on ClusterSecretStores).
    Namespaced(&'a str),
    /// A ClusterSecretStore used from an ExternalSecret in this namespace: a reference without
    /// a namespace is read there.
    Cluster(&'a str),
    /// A ClusterSecretStore checked on its own: only references with a namespace are read.
    ClusterOnly,
}

async fn read_key<A: SyncApi>(
    api: &A,
    store: &str,
    field: &str,
    sel: &sealkit_api::SecretKeySelector,
    scope: CredentialScope<'_>,
    sources: &mut Vec<String>,
) -> Result<SecretString, SyncError> {
    let named = sel.namespace.as_deref().filter(|n| !n.is_empty());
    let ns = match (scope, named) {
        (CredentialScope::Namespaced(own), Some(n)) if n != own => {
            // Refused before any read: the answer must not tell whether that Secret exists.
            return Err(err(format!(
                "{store}: {field}.namespace may not name another namespace (only a ClusterSecretStore may read credentials from other namespaces)"
            )));
        }
        (_, Some(n)) => n,
        (CredentialScope::Namespaced(own) | CredentialScope::Cluster(own), None) => own,
        (CredentialScope::ClusterOnly, None) => {
            return Err(err(format!("{store}: {field} has no namespace")));
        }
    };
    // For a ClusterSecretStore, a tenant sees this message in its ExternalSecret's status:
    // whether a Secret of the store's namespace exists is the admin's business, not the tenant's.
    let own_namespace =
        matches!(scope, CredentialScope::Namespaced(o) | CredentialScope::Cluster(o) if o == ns);
    let unreadable = |detail: String| {
        if own_namespace {
            err(detail)
        } else {
            err(format!(
                "{store}: cannot read its {field} (see the store's status)"
            ))
        }
    };
    let secret = api
        .get_secret(ns, &sel.name)
        .await
        .map_err(|e| {
            unreadable(format!(
                "{store}: cannot read {field} Secret {ns}/{}: {e}",
                sel.name
            ))
        })?
        .ok_or_else(|| {
            unreadable(format!(
                "{store}: {field} Secret {ns}/{} does not exist",
                sel.name
            ))
        })?;
    sources.push(format!(
        "{ns}/{}@{}",
        sel.name,
        secret.metadata.resource_version.as_deref().unwrap_or("")
    ));
    let v = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&sel.key))
        .ok_or_else(|| {
            unreadable(format!(
                "{store}: {field} Secret {ns}/{} has no key {:?}",
                sel.name, sel.key
            ))
        })?;
    let text = String::from_utf8(v.0.clone()).map_err(|_| {
        unreadable(format!(
            "{store}: {field} in Secret {ns}/{} is not UTF-8",
            sel.name
        ))
    })?;
    Ok(SecretString::from(text.trim().to_string()))
}

/// Finds the store, checks it may be used from this namespace, reads its credentials.
pub async fn resolve_store<A: SyncApi>(
    api: &A,
    es: &ExternalSecret,
) -> Result<ResolvedStore, SyncError> {
    let ns = es.namespace().unwrap_or_default();
    let r = es
        .spec
        .secret_store_ref
        .as_ref()
        .filter(|r| !r.name.is_empty())
        .ok_or_else(|| {
            err("spec.secretStoreRef.name is required (sourceRef per entry is not supported)")
        })?;
    let kind = r.kind.as_deref().unwrap_or("SecretStore");
    let (id, provider, scope) = match kind {
        "SecretStore" => {
            let s = api
                .get_store(&ns, &r.name)
                .await
                .map_err(|e| err(format!("cannot read SecretStore {ns}/{}: {e}", r.name)))?
                .ok_or_else(|| {
                    err(format!(
                        "SecretStore {:?} not found in namespace {ns}",
                        r.name
                    ))
                })?;
            (
                format!("SecretStore {ns}/{}", r.name),
                s.spec.provider,
                CredentialScope::Namespaced(&ns),
            )
        }
        "ClusterSecretStore" => {
            let s = api
                .get_cluster_store(&r.name)
                .await
                .map_err(|e| err(format!("cannot read ClusterSecretStore {}: {e}", r.name)))?
                .ok_or_else(|| err(format!("ClusterSecretStore {:?} not found", r.name)))?;
            let labels = if s.spec.conditions.as_ref().is_some_and(|c| !c.is_empty()) {
                api.namespace_labels(&ns)
                    .await
                    .map_err(|e| err(format!("cannot read namespace {ns}: {e}")))?
            } else {
                BTreeMap::new()
            };
            if !namespace_allowed(&s, &ns, &labels)? {
                return Err(err(format!(
                    "ClusterSecretStore {:?} does not allow namespace {ns} (see its spec.conditions)",
                    r.name
                )));
            }
            (
                format!("ClusterSecretStore {}", r.name),
                s.spec.provider,
                CredentialScope::Cluster(&ns),
            )
        }
        other => {
            return Err(err(format!(
                "spec.secretStoreRef.kind {other:?} is not SecretStore or ClusterSecretStore"
            )));
        }
    };
    store_from_provider(api, &provider, id, scope).await
}

/// Turns a store's provider block into AWS settings, reading its credentials where `scope`
/// allows. A ClusterSecretStore checked on its own ([`CredentialScope::ClusterOnly`]) does not
/// read references without a namespace (they are resolved per ExternalSecret).
pub async fn store_from_provider<A: SyncApi>(
    api: &A,
    provider: &StoreProvider,
    id: String,
    scope: CredentialScope<'_>,
) -> Result<ResolvedStore, SyncError> {
    let aws = aws_of(provider, &id)?;
    if aws.region.is_empty() {
        return Err(err(format!("{id}: provider.aws.region is required")));
    }
    if !matches!(aws.service.as_str(), "SecretsManager" | "ParameterStore") {
        return Err(err(format!(
            "{id}: provider.aws.service {:?} is not supported (use SecretsManager or ParameterStore)",
            aws.service
        )));
    }
    let mut sources = Vec::new();
    let credentials = match aws.auth.as_ref().and_then(|a| a.secret_ref.as_ref()) {
        None => None,
        Some(sr) => {
            let (Some(kid), Some(sak)) = (
                &sr.access_key_id_secret_ref,
                &sr.secret_access_key_secret_ref,
            ) else {
                return Err(err(format!(
                    "{id}: auth.secretRef needs accessKeyIDSecretRef and secretAccessKeySecretRef"
                )));
            };
            let resolvable = |k: &sealkit_api::SecretKeySelector| {
                !matches!(scope, CredentialScope::ClusterOnly)
                    || k.namespace.as_deref().is_some_and(|n| !n.is_empty())
            };
            if !resolvable(kid) || !resolvable(sak) {
                // Referent authentication: resolved in each ExternalSecret's namespace.
                None
            } else {
                use sealkit_keys::secret::ExposeSecret;
                let src = &mut sources;
                let access_key_id = read_key(api, &id, "accessKeyIDSecretRef", kid, scope, src)
                    .await?
                    .expose_secret()
                    .to_string();
                let secret_access_key =
                    read_key(api, &id, "secretAccessKeySecretRef", sak, scope, src).await?;
                let session_token = match &sr.session_token_secret_ref {
                    Some(t) => {
                        Some(read_key(api, &id, "sessionTokenSecretRef", t, scope, src).await?)
                    }
                    None => None,
                };
                Some(super::aws::StaticCredentials {
                    access_key_id,
                    secret_access_key,
                    session_token,
                })
            }
        }
    };
    Ok(ResolvedStore {
        id,
        credential_sources: sources,
        prefix: aws.prefix.clone().unwrap_or_default(),
        aws: super::aws::AwsSettings {
            service: aws.service.clone(),
            region: aws.region.clone(),
            role: aws.role.clone(),
            external_id: aws.external_id.clone(),
            credentials,
            endpoint: None,
        },
    })
}

/// The `Ready` status a store should have: its provider block is supported and its credentials
/// can be read. (No call to AWS: a store is checked by the ExternalSecrets that use it.)
pub async fn store_status<A: SyncApi>(
    api: &A,
    provider: &StoreProvider,
    id: String,
    scope: CredentialScope<'_>,
    previous: Option<&sealkit_api::SecretStoreStatus>,
) -> sealkit_api::SecretStoreStatus {
    let (ok, reason, message) = match store_from_provider(api, provider, id, scope).await {
        Ok(_) => (true, "Valid", "store validated".to_string()),
        Err(e) => (false, "InvalidProviderConfig", e.message),
    };
    let prev = previous
        .and_then(|p| p.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    sealkit_api::SecretStoreStatus {
        conditions: Some(vec![condition(ok, reason, &message, prev)]),
        capabilities: Some("ReadOnly".into()),
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

/// How old a shared value a refresh of `es` may use: its `refreshInterval` for periodic
/// refreshes (ExternalSecrets due in the same wave still share one fetch; a value changed in the
/// store reaches the Secret within one interval), none otherwise (a refresh on a change, or of
/// an ExternalSecret that never refreshes, reads the store as it is now; only requests in
/// flight are shared).
fn max_value_age(es: &ExternalSecret) -> Duration {
    let periodic = es.spec.refresh_policy.as_deref().unwrap_or("Periodic") == "Periodic";
    match parse_interval(es.spec.refresh_interval.as_deref()) {
        Ok(interval) if periodic => interval,
        _ => Duration::ZERO,
    }
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

fn condition(
    ok: bool,
    reason: &str,
    message: &str,
    previous: Option<&StatusCondition>,
) -> StatusCondition {
    let status = if ok { "True" } else { "False" }.to_string();
    let transition = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(Time(k8s_openapi::jiff::Timestamp::now())),
    };
    StatusCondition {
        type_: "Ready".into(),
        status,
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: transition,
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
            .get_or_create(&crate::metrics::EsConditionLabels {
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
    let object = crate::metrics::ObjectLabels {
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

/// An in-memory cluster for reconcile tests.
#[derive(Default)]
pub struct MemorySyncApi {
    /// Secrets by `ns/name`.
    pub secrets: Mutex<BTreeMap<String, Secret>>,
    /// ConfigMaps by `ns/name`.
    pub config_maps: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    /// SecretStores by `ns/name`.
    pub stores: Mutex<BTreeMap<String, SecretStore>>,
    /// ClusterSecretStores by name.
    pub cluster_stores: Mutex<BTreeMap<String, ClusterSecretStore>>,
    /// Namespace labels.
    pub namespaces: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    /// Statuses by `ns/name`.
    pub statuses: Mutex<BTreeMap<String, ExternalSecretStatus>>,
    /// Events: (`ns/name`, reason, message).
    pub events: Mutex<Vec<(String, String, String)>>,
    /// Secret writes.
    pub writes: Mutex<u64>,
    /// SecretStore and ClusterSecretStore reads.
    pub store_reads: Mutex<u64>,
}

fn k(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SyncApi for MemorySyncApi {
    async fn get_secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, String> {
        Ok(locked(&self.secrets).get(&k(ns, name)).cloned())
    }
    async fn apply_secret(&self, secret: &Secret) -> Result<(), String> {
        let key = k(
            secret.metadata.namespace.as_deref().unwrap_or(""),
            secret.metadata.name.as_deref().unwrap_or(""),
        );
        let mut map = locked(&self.secrets);
        // Server-side apply: our fields replace what we sent before; other owners' keys stay
        // (keys only we wrote are dropped when we stop sending them).
        let mut out = secret.clone();
        if let Some(old) = map.get(&key) {
            let ours_before: Vec<String> = old
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("test/managed-keys"))
                .map(|s| s.split(',').map(str::to_string).collect())
                .unwrap_or_default();
            let mut data = old.data.clone().unwrap_or_default();
            data.retain(|k, _| !ours_before.contains(k));
            data.extend(secret.data.clone().unwrap_or_default());
            out.data = Some(data);
            if out.type_.is_none() {
                out.type_ = old.type_.clone();
            }
            out.metadata.uid = old.metadata.uid.clone();
        }
        // The API server gives every new object a uid.
        out.metadata
            .uid
            .get_or_insert_with(|| format!("uid-secret-{key}"));
        let ours: Vec<String> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .collect();
        out.metadata
            .annotations
            .get_or_insert_default()
            .insert("test/managed-keys".into(), ours.join(","));
        map.insert(key, out);
        *locked(&self.writes) += 1;
        Ok(())
    }
    async fn delete_secret(&self, ns: &str, name: &str, uid: &str) -> Result<(), String> {
        let mut secrets = locked(&self.secrets);
        if secrets
            .get(&k(ns, name))
            .is_some_and(|s| s.metadata.uid.as_deref().unwrap_or("") == uid)
        {
            secrets.remove(&k(ns, name));
        }
        Ok(())
    }
    async fn get_config_map(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, String> {
        Ok(locked(&self.config_maps).get(&k(ns, name)).cloned())
    }
    async fn get_store(&self, ns: &str, name: &str) -> Result<Option<SecretStore>, String> {
        *locked(&self.store_reads) += 1;
        Ok(locked(&self.stores).get(&k(ns, name)).cloned())
    }
    async fn get_cluster_store(&self, name: &str) -> Result<Option<ClusterSecretStore>, String> {
        *locked(&self.store_reads) += 1;
        Ok(locked(&self.cluster_stores).get(name).cloned())
    }
    async fn namespace_labels(&self, ns: &str) -> Result<BTreeMap<String, String>, String> {
        Ok(locked(&self.namespaces)
            .get(ns)
            .cloned()
            .unwrap_or_default())
    }
    async fn set_status(
        &self,
        es: &ExternalSecret,
        status: &ExternalSecretStatus,
    ) -> Result<(), String> {
        locked(&self.statuses).insert(
            k(&es.namespace().unwrap_or_default(), &es.name_any()),
            status.clone(),
        );
        Ok(())
    }
    async fn event(&self, es: &ExternalSecret, _warning: bool, reason: &str, message: &str) {
        locked(&self.events).push((
            k(&es.namespace().unwrap_or_default(), &es.name_any()),
            reason.to_string(),
            message.to_string(),
        ));
    }
}

/// A factory that hands out one in-memory (or any) provider for every store.
pub struct FixedFactory(pub Arc<dyn Provider>);

impl ProviderFactory for FixedFactory {
    fn provider<'a>(
        &'a self,
        _: &'a ResolvedStore,
    ) -> BoxFut<'a, Result<Arc<dyn Provider>, FetchError>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

#[cfg(test)]
mod tests;
