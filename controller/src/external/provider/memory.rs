//! An in-memory provider for tests and benchmarks: values by key, call counting, failure
//! injection. The AWS providers are tested against moto instead.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::*;

/// An in-memory provider: values by key (versions as `key@version`), with call counting and
/// failure injection.
#[derive(Default)]
pub struct MemoryProvider {
    /// Values by key (`key` or `key@version`).
    pub values: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Tags by key.
    pub tags: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    /// Calls made (`get_many` counts once per call).
    pub calls: Mutex<u64>,
    /// When set, every call fails with this error.
    pub fail: Mutex<Option<FetchError>>,
}

impl MemoryProvider {
    /// Sets a value.
    pub fn put(&self, key: &str, value: &str) {
        if let Ok(mut v) = self.values.lock() {
            v.insert(key.to_string(), value.as_bytes().to_vec());
        }
    }

    fn count(&self) -> Result<(), FetchError> {
        if let Ok(mut c) = self.calls.lock() {
            *c += 1;
        }
        match self.fail.lock().ok().and_then(|f| f.clone()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Provider for MemoryProvider {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn get_many<'a>(&'a self, keys: &'a [RemoteKey]) -> BoxFut<'a, Vec<Fetched>> {
        Box::pin(async move {
            let failed = self.count().err();
            let values = self.values.lock().map(|v| v.clone()).unwrap_or_default();
            keys.iter()
                .map(|k| {
                    if let Some(e) = &failed {
                        return (k.clone(), Err(e.clone()));
                    }
                    let name = match &k.version {
                        Some(v) => format!("{}@{v}", k.key),
                        None => k.key.clone(),
                    };
                    let r = values
                        .get(&name)
                        .map(|v| SecretValue::new(v.clone()))
                        .ok_or_else(|| FetchError::NotFound(k.to_string()));
                    (k.clone(), r)
                })
                .collect()
        })
    }

    fn find<'a>(
        &'a self,
        query: &'a FindQuery,
    ) -> BoxFut<'a, Result<Vec<(String, SecretValue)>, FetchError>> {
        Box::pin(async move {
            self.count()?;
            let re = compile(query.name_regexp.as_deref())?;
            let values = self.values.lock().map(|v| v.clone()).unwrap_or_default();
            let tags = self.tags.lock().map(|t| t.clone()).unwrap_or_default();
            Ok(values
                .into_iter()
                .filter(|(k, _)| !k.contains('@'))
                .filter(|(k, _)| matches(query, re.as_ref(), k, tags.get(k)))
                .map(|(k, v)| (k, SecretValue::new(v)))
                .collect())
        })
    }
}
