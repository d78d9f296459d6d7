//! The provider seam: fetch many keys at once, or find keys by name, tags or path.
//!
//! Implementations: AWS Secrets Manager and Parameter Store (`aws`, the real SDK; tests run
//! it against `moto_server`) and `memory::MemoryProvider` (unit tests and benchmarks, feature
//! `testing`). Values are [`SecretValue`]s:
//! zeroized on drop and redacted in `Debug`. Errors carry AWS error codes and key names, never
//! values.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sealkit_keys::secret::Zeroizing;

pub mod aws;
#[cfg(any(test, feature = "testing"))]
pub mod memory;

/// A boxed, sendable future (the trait is used behind `dyn`).
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A fetched value. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(pub Arc<Zeroizing<Vec<u8>>>);

impl SecretValue {
    /// Wraps bytes.
    pub fn new(v: Vec<u8>) -> Self {
        SecretValue(Arc::new(Zeroizing::new(v)))
    }
    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValue([REDACTED {} bytes])", self.0.len())
    }
}

/// A remote key and optional version.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteKey {
    /// Secret name/ARN or parameter name.
    pub key: String,
    /// `uuid/<id>` (version id), a stage or label, or a Parameter Store version number.
    pub version: Option<String>,
}

impl RemoteKey {
    /// A key at its current version.
    pub fn current(key: impl Into<String>) -> Self {
        RemoteKey {
            key: key.into(),
            version: None,
        }
    }
}

impl std::fmt::Display for RemoteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{} (version {v})", self.key),
            None => f.write_str(&self.key),
        }
    }
}

/// Why a fetch failed. Messages name keys and AWS error codes, never values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The key does not exist.
    #[error("{0} was not found")]
    NotFound(String),
    /// The credentials may not read it.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// The provider throttled us.
    #[error("throttled by the provider: {0}")]
    Throttled(String),
    /// Anything else (network, credentials, bad request).
    #[error("{0}")]
    Other(String),
}

impl FetchError {
    /// The metric label.
    pub fn class(&self) -> &'static str {
        match self {
            FetchError::NotFound(_) => "not_found",
            FetchError::AccessDenied(_) => "access_denied",
            FetchError::Throttled(_) => "throttled",
            FetchError::Other(_) => "error",
        }
    }
}

/// `dataFrom[].find`, resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FindQuery {
    /// Name prefix (Secrets Manager) or parameter path (Parameter Store).
    pub path: Option<String>,
    /// Regular expression on the name.
    pub name_regexp: Option<String>,
    /// Tags that must all match.
    pub tags: BTreeMap<String, String>,
}

/// One result of a batched fetch.
pub type Fetched = (RemoteKey, Result<SecretValue, FetchError>);

/// A secrets provider.
pub trait Provider: Send + Sync {
    /// Metric label, e.g. `aws-secretsmanager`.
    fn name(&self) -> &'static str;
    /// Fetches `keys` with as few calls as the API allows; one result per key, in any order.
    fn get_many<'a>(&'a self, keys: &'a [RemoteKey]) -> BoxFut<'a, Vec<Fetched>>;
    /// Names matching `query`, with their current values.
    fn find<'a>(
        &'a self,
        query: &'a FindQuery,
    ) -> BoxFut<'a, Result<Vec<(String, SecretValue)>, FetchError>>;
}

/// Compiles a `find.name.regexp`.
pub fn compile(re: Option<&str>) -> Result<Option<regex::Regex>, FetchError> {
    re.map(|r| {
        regex::Regex::new(r)
            .map_err(|e| FetchError::Other(format!("find.name.regexp is not valid: {e}")))
    })
    .transpose()
}

/// Whether a name (with its tags) matches a find query.
pub fn matches(
    query: &FindQuery,
    re: Option<&regex::Regex>,
    name: &str,
    tags: Option<&BTreeMap<String, String>>,
) -> bool {
    query.path.as_deref().is_none_or(|p| name.starts_with(p))
        && re.is_none_or(|r| r.is_match(name))
        && query
            .tags
            .iter()
            .all(|(k, v)| tags.and_then(|t| t.get(k)) == Some(v))
}
