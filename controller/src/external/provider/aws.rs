//! AWS Secrets Manager and Parameter Store through the AWS SDK (hyper 1 + rustls on aws-lc-rs).
//!
//! Cost model (the point of this module): explicit keys go through `BatchGetSecretValue`
//! (20 per call) or `GetParameters` (10 per call); `find` lists names once (`ListSecrets`,
//! 100 per page, or `GetParametersByPath`) and then batch-gets the matches. Every call passes a
//! token bucket per (credentials, region, API) first, and is counted in
//! `sealkit_provider_api_calls_total{provider,call,status}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata};

use super::{
    BoxFut, FetchError, Fetched, FindQuery, Provider, RemoteKey, SecretValue, compile, matches,
};
use crate::runtime::client::token_bucket;
use crate::runtime::metrics::{Metrics, ProviderCallLabels};

mod parameter_store;
use parameter_store::ParameterStore;

/// Per-API request budgets (requests per second), kept below AWS's default quotas.
#[derive(Clone, Debug)]
pub struct AwsLimits {
    /// Secrets Manager, per API (quotas: BatchGetSecretValue and ListSecrets 100/s).
    pub secretsmanager_qps: f64,
    /// Parameter Store, shared by the read APIs (quota: 40/s).
    pub ssm_qps: f64,
}

impl Default for AwsLimits {
    fn default() -> Self {
        AwsLimits {
            secretsmanager_qps: 50.0,
            ssm_qps: 20.0,
        }
    }
}

/// Token buckets by (credentials identity, region, API), shared by every store.
#[derive(Default)]
pub struct Limiters {
    buckets: Mutex<HashMap<String, Arc<governor::DefaultDirectRateLimiter>>>,
}

impl Limiters {
    async fn acquire(&self, key: String, qps: f64) {
        let t = {
            let Ok(mut map) = self.buckets.lock() else {
                return;
            };
            map.entry(key)
                .or_insert_with(|| Arc::new(token_bucket(qps, qps.ceil().max(1.0) as u32)))
                .clone()
        };
        t.until_ready().await;
    }
}

/// Static credentials read from the store's `auth.secretRef`.
pub struct StaticCredentials {
    /// Access key id (not secret, used as the rate-limit identity).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: sealkit_keys::secret::SecretString,
    /// Session token.
    pub session_token: Option<sealkit_keys::secret::SecretString>,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StaticCredentials({}, [REDACTED])", self.access_key_id)
    }
}

/// Everything that identifies an AWS client.
#[derive(Debug)]
pub struct AwsSettings {
    /// `SecretsManager` or `ParameterStore`.
    pub service: String,
    /// Region.
    pub region: String,
    /// Role to assume.
    pub role: Option<String>,
    /// AssumeRole external id.
    pub external_id: Option<String>,
    /// Static credentials; none = the default chain.
    pub credentials: Option<StaticCredentials>,
    /// An explicit endpoint (tests); in the cluster the SDK reads `AWS_ENDPOINT_URL` itself.
    pub endpoint: Option<String>,
}

impl AwsSettings {
    /// Everything that decides which AWS principal calls which endpoint (no secret in it): the
    /// service, region, access key id (or the default chain), role, AssumeRole external id and
    /// endpoint. Rate limits are kept per identity; caches add the credential material.
    pub fn identity(&self) -> String {
        let endpoint = self
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .unwrap_or_default();
        // serde_json escapes `|` and quotes, so no two identities can collide by concatenation.
        serde_json::json!([
            self.service,
            self.region,
            self.credentials
                .as_ref()
                .map_or("default-chain", |c| c.access_key_id.as_str()),
            self.role.as_deref().unwrap_or(""),
            self.external_id.as_deref().unwrap_or(""),
            endpoint,
        ])
        .to_string()
    }
}

async fn sdk_config(s: &AwsSettings) -> SdkConfig {
    use sealkit_keys::secret::ExposeSecret;
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_timeout(Duration::from_secs(20))
        .connect_timeout(Duration::from_secs(5))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(s.region.clone()))
        .timeout_config(timeouts);
    if let Some(e) = &s.endpoint {
        loader = loader.endpoint_url(e);
    }
    if let Some(c) = &s.credentials {
        loader = loader.credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.expose_secret().to_string(),
            c.session_token
                .as_ref()
                .map(|t| t.expose_secret().to_string()),
            None,
            "sealkit-secretRef",
        ));
    }
    let base = loader.load().await;
    match &s.role {
        Some(role) => {
            // AssumeRole credentials are cached by the SDK's identity cache until shortly before
            // they expire; the client (and so the cache) lives as long as the store is unchanged.
            let mut b = aws_config::sts::AssumeRoleProvider::builder(role.clone())
                .session_name("sealkit")
                .configure(&base);
            if let Some(id) = &s.external_id {
                b = b.external_id(id.clone());
            }
            let provider = b.build().await;
            base.to_builder()
                .credentials_provider(
                    aws_sdk_secretsmanager::config::SharedCredentialsProvider::new(provider),
                )
                .build()
        }
        None => base,
    }
}

/// Builds the provider for these settings.
pub async fn provider(
    settings: &AwsSettings,
    limits: &AwsLimits,
    limiters: Arc<Limiters>,
    metrics: Arc<Metrics>,
) -> Result<Arc<dyn Provider>, FetchError> {
    let conf = sdk_config(settings).await;
    let meter = Meter {
        identity: settings.identity(),
        limiters,
        metrics,
    };
    match settings.service.as_str() {
        "SecretsManager" | "" => Ok(Arc::new(SecretsManager {
            client: aws_sdk_secretsmanager::Client::new(&conf),
            qps: limits.secretsmanager_qps,
            meter,
        })),
        "ParameterStore" => Ok(Arc::new(ParameterStore {
            client: aws_sdk_ssm::Client::new(&conf),
            qps: limits.ssm_qps,
            meter,
        })),
        other => Err(FetchError::Other(format!(
            "AWS service {other:?} is not supported (use SecretsManager or ParameterStore)"
        ))),
    }
}

struct Meter {
    identity: String,
    limiters: Arc<Limiters>,
    metrics: Arc<Metrics>,
}

impl Meter {
    async fn before(&self, call: &str, qps: f64) {
        self.limiters
            .acquire(format!("{}|{call}", self.identity), qps)
            .await;
    }

    fn after(&self, provider: &str, call: &str, status: &str) {
        self.metrics
            .provider_calls
            .get_or_create(&ProviderCallLabels {
                provider: provider.into(),
                call: call.into(),
                status: status.into(),
            })
            .inc();
    }
}

/// Maps an SDK error to a [`FetchError`] (code and message; AWS messages carry no values).
fn classify<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    what: &str,
    e: &aws_sdk_secretsmanager::error::SdkError<E, R>,
) -> FetchError {
    let code = e.code().unwrap_or("");
    let msg = match e.message() {
        Some(m) => format!("{what}: {code}: {m}"),
        None => format!("{what}: {}", DisplayErrorContext(e)),
    };
    match code {
        "ResourceNotFoundException" | "ParameterNotFound" | "ParameterVersionNotFound" => {
            FetchError::NotFound(what.to_string())
        }
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "ExpiredTokenException" => FetchError::AccessDenied(msg),
        "ThrottlingException" | "Throttling" | "TooManyRequestsException" => {
            FetchError::Throttled(msg)
        }
        _ => FetchError::Other(msg),
    }
}

struct SecretsManager {
    client: aws_sdk_secretsmanager::Client,
    qps: f64,
    meter: Meter,
}

const SM: &str = "aws-secretsmanager";

impl SecretsManager {
    async fn batch(&self, ids: &[RemoteKey]) -> Vec<Fetched> {
        self.meter.before("BatchGetSecretValue", self.qps).await;
        let res = self
            .client
            .batch_get_secret_value()
            .set_secret_id_list(Some(ids.iter().map(|k| k.key.clone()).collect()))
            .send()
            .await;
        let out = match res {
            Err(e) => {
                let err = classify("BatchGetSecretValue", &e);
                self.meter.after(SM, "BatchGetSecretValue", err.class());
                // A whole-call NotFound names no key; report it per key.
                return ids
                    .iter()
                    .map(|k| {
                        let e = match &err {
                            FetchError::NotFound(_) => FetchError::NotFound(k.to_string()),
                            other => other.clone(),
                        };
                        (k.clone(), Err(e))
                    })
                    .collect();
            }
            Ok(out) => out,
        };
        self.meter.after(SM, "BatchGetSecretValue", "success");
        let mut found: HashMap<&str, SecretValue> = HashMap::new();
        for v in out.secret_values() {
            let value = match (v.secret_string(), v.secret_binary()) {
                (Some(s), _) => SecretValue::new(s.as_bytes().to_vec()),
                (None, Some(b)) => SecretValue::new(b.as_ref().to_vec()),
                (None, None) => continue,
            };
            for id in [v.name(), v.arn()].into_iter().flatten() {
                found.insert(id, value.clone());
            }
        }
        let mut errors: HashMap<&str, FetchError> = HashMap::new();
        for e in out.errors() {
            let id = e.secret_id().unwrap_or("");
            let code = e.error_code().unwrap_or("");
            let err = match code {
                "ResourceNotFoundException" => FetchError::NotFound(id.to_string()),
                "AccessDeniedException" => {
                    FetchError::AccessDenied(format!("{id}: {}", e.message().unwrap_or(code)))
                }
                _ => FetchError::Other(format!("{id}: {code}: {}", e.message().unwrap_or(""))),
            };
            errors.insert(id, err);
        }
        ids.iter()
            .map(|k| {
                let r = match found.get(k.key.as_str()) {
                    Some(v) => Ok(v.clone()),
                    None => Err(errors
                        .remove(k.key.as_str())
                        .unwrap_or_else(|| FetchError::NotFound(k.to_string()))),
                };
                (k.clone(), r)
            })
            .collect()
    }

    async fn one(&self, k: &RemoteKey) -> Fetched {
        self.meter.before("GetSecretValue", self.qps).await;
        let mut req = self.client.get_secret_value().secret_id(&k.key);
        match k.version.as_deref() {
            Some(v) if v.starts_with("uuid/") => req = req.version_id(&v[5..]),
            Some(v) => req = req.version_stage(v),
            None => {}
        }
        let r = match req.send().await {
            Ok(out) => {
                self.meter.after(SM, "GetSecretValue", "success");
                match (out.secret_string(), out.secret_binary()) {
                    (Some(s), _) => Ok(SecretValue::new(s.as_bytes().to_vec())),
                    (None, Some(b)) => Ok(SecretValue::new(b.as_ref().to_vec())),
                    (None, None) => Err(FetchError::NotFound(k.to_string())),
                }
            }
            Err(e) => {
                let err = match classify("GetSecretValue", &e) {
                    FetchError::NotFound(_) => FetchError::NotFound(k.to_string()),
                    other => other,
                };
                self.meter.after(SM, "GetSecretValue", err.class());
                Err(err)
            }
        };
        (k.clone(), r)
    }

    async fn batch_by_path(
        &self,
        path: &str,
        q: &FindQuery,
    ) -> Result<Vec<(String, SecretValue)>, FetchError> {
        use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
        let re = compile(q.name_regexp.as_deref())?;
        let filter = Filter::builder()
            .key(FilterNameStringType::Name)
            .values(path)
            .build();
        let mut out = Vec::new();
        let mut token = None;
        loop {
            self.meter.before("BatchGetSecretValue", self.qps).await;
            let res = self
                .client
                .batch_get_secret_value()
                .filters(filter.clone())
                .max_results(20)
                .set_next_token(token.take())
                .send()
                .await;
            let page = match res {
                Ok(p) => {
                    self.meter.after(SM, "BatchGetSecretValue", "success");
                    p
                }
                Err(e) => {
                    let err = classify("BatchGetSecretValue", &e);
                    self.meter.after(SM, "BatchGetSecretValue", err.class());
                    return Err(err);
                }
            };
            for v in page.secret_values() {
                let Some(name) = v.name() else { continue };
                // The name filter matches prefixes of words; the exact check is ours.
                if !matches(q, re.as_ref(), name, None) {
                    continue;
                }
                let value = match (v.secret_string(), v.secret_binary()) {
                    (Some(s), _) => SecretValue::new(s.as_bytes().to_vec()),
                    (None, Some(b)) => SecretValue::new(b.as_ref().to_vec()),
                    (None, None) => continue,
                };
                out.push((name.to_string(), value));
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn list(&self, q: &FindQuery) -> Result<Vec<String>, FetchError> {
        use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
        let re = compile(q.name_regexp.as_deref())?;
        let mut filters = Vec::new();
        if let Some(p) = &q.path {
            filters.push(
                Filter::builder()
                    .key(FilterNameStringType::Name)
                    .values(p)
                    .build(),
            );
        }
        for (k, v) in &q.tags {
            filters.push(
                Filter::builder()
                    .key(FilterNameStringType::TagKey)
                    .values(k)
                    .build(),
            );
            filters.push(
                Filter::builder()
                    .key(FilterNameStringType::TagValue)
                    .values(v)
                    .build(),
            );
        }
        let mut names = Vec::new();
        let mut token = None;
        loop {
            self.meter.before("ListSecrets", self.qps).await;
            let res = self
                .client
                .list_secrets()
                .set_filters((!filters.is_empty()).then(|| filters.clone()))
                .max_results(100)
                .set_next_token(token.take())
                .send()
                .await;
            let out = match res {
                Ok(o) => {
                    self.meter.after(SM, "ListSecrets", "success");
                    o
                }
                Err(e) => {
                    let err = classify("ListSecrets", &e);
                    self.meter.after(SM, "ListSecrets", err.class());
                    return Err(err);
                }
            };
            for s in out.secret_list() {
                let Some(name) = s.name() else { continue };
                let tags: BTreeMap<String, String> = s
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                    .collect();
                // Filters are prefix/any matches server-side; the exact check is ours.
                if matches(q, re.as_ref(), name, Some(&tags)) {
                    names.push(name.to_string());
                }
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(names)
    }
}

impl Provider for SecretsManager {
    fn name(&self) -> &'static str {
        SM
    }

    fn get_many<'a>(&'a self, keys: &'a [RemoteKey]) -> BoxFut<'a, Vec<Fetched>> {
        Box::pin(async move {
            let (current, versioned): (Vec<RemoteKey>, Vec<RemoteKey>) = keys
                .iter()
                .cloned()
                .partition(|k| k.version.as_deref().is_none_or(|v| v == "AWSCURRENT"));
            let batches = current.chunks(20).map(|c| self.batch(c));
            let singles = versioned.iter().map(|k| self.one(k));
            let (a, b) = futures::future::join(
                futures::future::join_all(batches),
                futures::future::join_all(singles),
            )
            .await;
            let mut out: Vec<Fetched> = a.into_iter().flatten().collect();
            out.extend(b);
            out
        })
    }

    fn find<'a>(
        &'a self,
        query: &'a FindQuery,
    ) -> BoxFut<'a, Result<Vec<(String, SecretValue)>, FetchError>> {
        Box::pin(async move {
            // By path alone: BatchGetSecretValue with a name filter returns the values directly
            // (20 per call). Tags need ListSecrets, whose entries carry the tags for an exact match.
            if let (Some(path), true) = (&query.path, query.tags.is_empty()) {
                return self.batch_by_path(path, query).await;
            }
            let names = self.list(query).await?;
            let keys: Vec<RemoteKey> = names.into_iter().map(RemoteKey::current).collect();
            let mut out = Vec::new();
            for (k, r) in self.get_many(&keys).await {
                match r {
                    Ok(v) => out.push((k.key, v)),
                    // Deleted between the listing and the fetch: not part of the result.
                    Err(FetchError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buckets_are_per_identity_and_api() {
        let l = Limiters::default();
        let start = std::time::Instant::now();
        // 2 per second, burst 2: the third call on one key waits about half a second...
        for _ in 0..3 {
            l.acquire("creds-a|us-east-1|BatchGetSecretValue".into(), 2.0)
                .await;
        }
        let one_key = start.elapsed();
        assert!(one_key >= Duration::from_millis(400), "{one_key:?}");
        // ...while another API or other credentials get buckets of their own.
        l.acquire("creds-a|us-east-1|ListSecrets".into(), 2.0).await;
        l.acquire("creds-b|us-east-1|BatchGetSecretValue".into(), 2.0)
            .await;
        assert_eq!(l.buckets.lock().map(|b| b.len()).unwrap_or(0), 3);
    }
}
