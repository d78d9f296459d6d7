//! One fetch cache shared by every ExternalSecret.
//!
//! Requests for keys of the same store that arrive within a short coalescing window (default
//! 20 ms) are merged into one `get_many` (which the AWS providers turn into
//! `BatchGetSecretValue` / `GetParameters` calls of 20 / 10 keys); identical concurrent `find`s
//! share one listing. Results are kept for `ttl`, keyed by (store identity, key, version), so
//! 1,000 ExternalSecrets reading 100 secrets cost about 100 / 20 = 5 calls per refresh cycle
//! instead of 3,000. Errors are shared by the waiters of one batch but never cached.
//!
//! Freshness is the caller's: every read says how old a value it accepts (an ExternalSecret's
//! `refreshInterval`), so a refresh is never served a value fetched before `now − interval`,
//! whatever the cache TTL. The age of a value counts from when its request was sent.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::provider::{FetchError, FindQuery, Provider, RemoteKey, SecretValue};

type BatchResult = Arc<HashMap<RemoteKey, Result<SecretValue, FetchError>>>;
type FindResult = Arc<Result<Vec<(String, SecretValue)>, FetchError>>;

struct Batch {
    /// Keys still being collected; `None` once the batch has been sent.
    keys: Arc<Mutex<Option<BTreeSet<RemoteKey>>>>,
    fut: Shared<BoxFuture<'static, BatchResult>>,
}

#[derive(Default)]
struct State {
    values: HashMap<(String, RemoteKey), (Instant, SecretValue)>,
    finds: HashMap<(String, FindQuery), (Instant, FindResult)>,
    open: HashMap<String, Batch>,
    finding: HashMap<(String, FindQuery), Shared<BoxFuture<'static, FindResult>>>,
}

/// The shared, coalescing fetch cache.
pub struct Fetcher {
    ttl: Duration,
    window: Duration,
    state: Arc<Mutex<State>>,
}

impl Fetcher {
    /// A cache keeping values for `ttl`, merging requests that arrive within `window`.
    pub fn new(ttl: Duration, window: Duration) -> Self {
        Fetcher {
            ttl,
            window,
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How old a cached value may be for a reader that accepts `max_age`.
    fn limit(&self, max_age: Duration) -> Duration {
        self.ttl.min(max_age)
    }

    /// Values for `keys` of the store `store` (an identity string), from the cache (only values
    /// fetched less than `max_age` ago, and within the TTL), a batch in flight, or the provider.
    pub async fn get(
        &self,
        store: &str,
        provider: Arc<dyn Provider>,
        keys: &[RemoteKey],
        max_age: Duration,
    ) -> HashMap<RemoteKey, Result<SecretValue, FetchError>> {
        let mut out = HashMap::new();
        let limit = self.limit(max_age);
        let fut = {
            let mut st = self.lock();
            let now = Instant::now();
            let mut missing = Vec::new();
            for k in keys {
                match st.values.get(&(store.to_string(), k.clone())) {
                    Some((at, v)) if now.duration_since(*at) < limit => {
                        out.insert(k.clone(), Ok(v.clone()));
                    }
                    _ => missing.push(k.clone()),
                }
            }
            if missing.is_empty() {
                return out;
            }
            let joined = st.open.get(store).and_then(|b| {
                let mut ks = b.keys.lock().ok()?;
                let set = ks.as_mut()?;
                set.extend(missing.iter().cloned());
                Some(b.fut.clone())
            });
            match joined {
                Some(f) => f,
                None => {
                    let batch = self.new_batch(store, provider, missing.iter().cloned().collect());
                    let f = batch.fut.clone();
                    st.open.insert(store.to_string(), batch);
                    f
                }
            }
        };
        let results = fut.await;
        for k in keys {
            if !out.contains_key(k) {
                let r = results
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| Err(FetchError::Other(format!("{k} was not fetched"))));
                out.insert(k.clone(), r);
            }
        }
        out
    }

    fn new_batch(
        &self,
        store: &str,
        provider: Arc<dyn Provider>,
        keys: BTreeSet<RemoteKey>,
    ) -> Batch {
        let keys = Arc::new(Mutex::new(Some(keys)));
        let (state, window, store_id, pending) = (
            self.state.clone(),
            self.window,
            store.to_string(),
            keys.clone(),
        );
        let fut = async move {
            tokio::time::sleep(window).await;
            let batch: Vec<RemoteKey> = {
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                if st
                    .open
                    .get(&store_id)
                    .is_some_and(|b| Arc::ptr_eq(&b.keys, &pending))
                {
                    st.open.remove(&store_id);
                }
                let taken = pending.lock().ok().and_then(|mut k| k.take());
                taken.unwrap_or_default().into_iter().collect()
            };
            let sent = Instant::now();
            let fetched = provider.get_many(&batch).await;
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            let mut map = HashMap::new();
            for (k, r) in fetched {
                if let Ok(v) = &r {
                    st.values
                        .insert((store_id.clone(), k.clone()), (sent, v.clone()));
                }
                map.insert(k, r);
            }
            Arc::new(map)
        }
        .boxed()
        .shared();
        Batch { keys, fut }
    }

    /// The result of `query` on the store, from the cache (a listing made less than `max_age`
    /// ago, and within the TTL), a listing in flight, or the provider.
    pub async fn find(
        &self,
        store: &str,
        provider: Arc<dyn Provider>,
        query: &FindQuery,
        max_age: Duration,
    ) -> Result<Vec<(String, SecretValue)>, FetchError> {
        let id = (store.to_string(), query.clone());
        let limit = self.limit(max_age);
        let fut = {
            let mut st = self.lock();
            if let Some((at, r)) = st.finds.get(&id)
                && at.elapsed() < limit
            {
                return (**r).clone();
            }
            match st.finding.get(&id) {
                Some(f) => f.clone(),
                None => {
                    let (state, id2, q) = (self.state.clone(), id.clone(), query.clone());
                    let f = async move {
                        let sent = Instant::now();
                        let r = Arc::new(provider.find(&q).await);
                        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                        st.finding.remove(&id2);
                        if r.is_ok() {
                            st.finds.insert(id2, (sent, r.clone()));
                        }
                        r
                    }
                    .boxed()
                    .shared();
                    st.finding.insert(id, f.clone());
                    f
                }
            }
        };
        (*fut.await).clone()
    }

    /// Drops expired entries (called from time to time by the syncer).
    pub fn sweep(&self) {
        let ttl = self.ttl;
        let mut st = self.lock();
        st.values.retain(|_, (at, _)| at.elapsed() < ttl);
        st.finds.retain(|_, (at, _)| at.elapsed() < ttl);
    }
}
