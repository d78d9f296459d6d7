//! Stores: which SecretStore or ClusterSecretStore an ExternalSecret uses, whether its
//! namespace may use it, where credentials may be read from (a SecretStore only from its own
//! namespace), the identity every cache keys on, the providers built for it, and the store's own
//! `Ready` status.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kube::ResourceExt;
use sealkit_api::{AwsProvider, ClusterSecretStore, ExternalSecret, StoreProvider};
use sealkit_keys::secret::SecretString;

use super::provider::{BoxFut, FetchError, Provider};
use super::reconcile::{SyncApi, condition};
use super::sync::{SyncError, err};
use crate::runtime::metrics::Metrics;

/// A resolved store: the provider settings and where credentials come from.
#[derive(Debug)]
pub struct ResolvedStore {
    /// `SecretStore/ns/name` or `ClusterSecretStore/name`.
    pub id: String,
    /// The AWS settings.
    pub aws: super::provider::aws::AwsSettings,
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
    pub limits: super::provider::aws::AwsLimits,
    /// Token buckets.
    pub limiters: Arc<super::provider::aws::Limiters>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    clients: tokio::sync::Mutex<HashMap<String, Arc<dyn Provider>>>,
}

impl AwsFactory {
    /// A factory with these budgets.
    pub fn new(limits: super::provider::aws::AwsLimits, metrics: Arc<Metrics>) -> Self {
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
            let p = super::provider::aws::provider(
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

/// Whether `labels` match a LabelSelector, by kube's `Selector` (a selector with an unknown
/// operator matches nothing).
fn selector_matches(
    sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    use kube::core::SelectorExt as _;
    kube::core::Selector::try_from(sel.clone()).is_ok_and(|s| s.matches(labels))
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
                Some(super::provider::aws::StaticCredentials {
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
        aws: super::provider::aws::AwsSettings {
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
