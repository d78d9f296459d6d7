//! One kube client for every loop, with one request budget.
//!
//! Every request any loop makes — through the controller's own client or through a client that
//! impersonates a tenant's ServiceAccount — passes one token bucket (`--kube-api-qps`,
//! `--kube-api-burst`), as client-go's rate limiter does (watch starts included: a watch is one
//! request that then streams). The budget is a layer under the kube client, so no call site can
//! forget it, and it counts requests by verb (`sealkit_kube_requests_total{verb}`).

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::Request;
use kube::Client;
use kube::client::ClientBuilder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::metrics::VerbLabels;

/// The shared request budget.
pub struct Budget {
    limiter: DefaultDirectRateLimiter,
    requests: Family<VerbLabels, Counter>,
}

/// A token bucket: `qps` per second on average, `burst` at once (the one token-bucket
/// implementation of the controller: kube requests, AWS calls, HTTP clients).
pub fn token_bucket(qps: f64, burst: u32) -> DefaultDirectRateLimiter {
    // governor counts whole tokens per period: take the period of one token.
    let period = std::time::Duration::from_secs_f64(1.0 / qps.clamp(0.001, 1_000_000.0));
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN));
    RateLimiter::direct(quota)
}

impl Budget {
    /// `qps` requests per second on average, `burst` at once; requests counted into `requests`.
    pub fn new(qps: f64, burst: u32, requests: Family<VerbLabels, Counter>) -> Arc<Budget> {
        Arc::new(Budget {
            limiter: token_bucket(qps, burst),
            requests,
        })
    }
}

/// The layer that puts a [`Budget`] under a kube client.
#[derive(Clone)]
pub struct BudgetLayer(pub Arc<Budget>);

impl<S> tower::Layer<S> for BudgetLayer {
    type Service = Budgeted<S>;
    fn layer(&self, inner: S) -> Budgeted<S> {
        Budgeted {
            inner,
            budget: self.0.clone(),
            wait: None,
            permitted: false,
        }
    }
}

type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A service that takes a token of the budget before each request.
pub struct Budgeted<S> {
    inner: S,
    budget: Arc<Budget>,
    wait: Option<Wait>,
    permitted: bool,
}

impl<S, B> tower::Service<Request<B>> for Budgeted<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.permitted {
            let budget = self.budget.clone();
            let wait = self
                .wait
                .get_or_insert_with(|| Box::pin(async move { budget.limiter.until_ready().await }));
            if wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.wait = None;
            self.permitted = true;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.permitted = false;
        self.budget
            .requests
            .get_or_create(&VerbLabels {
                verb: verb(req.method(), req.uri()).into(),
            })
            .inc();
        self.inner.call(req)
    }
}

/// The Kubernetes verb of a request: get/list/watch/create/update/patch/delete.
pub fn verb(method: &http::Method, uri: &http::Uri) -> &'static str {
    let query = uri.query().unwrap_or("");
    if query
        .split('&')
        .any(|q| q == "watch=true" || q == "watch=1")
    {
        return "watch";
    }
    match *method {
        http::Method::GET => {
            // /api/v1/… or /apis/<group>/<version>/…, then [namespaces/<ns>/]<resource>[/<name>…]
            let segs: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
            let rest = match segs.first() {
                Some(&"api") => segs.get(2..),
                Some(&"apis") => segs.get(3..),
                _ => None,
            }
            .unwrap_or(&[]);
            let named = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
                rest.len() >= 4
            } else {
                rest.len() >= 2
            };
            if named { "get" } else { "list" }
        }
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

/// The cluster connection every loop shares: the controller's client and the impersonating
/// clients, all under one budget.
pub struct Kube {
    client: Client,
    config: kube::Config,
    budget: Arc<Budget>,
    accounts: Mutex<HashMap<String, Client>>,
}

impl Kube {
    /// Connects with `config`, under `budget`.
    pub fn new(config: kube::Config, budget: Arc<Budget>) -> Result<Kube, kube::Error> {
        let client = build(config.clone(), &budget)?;
        Ok(Kube {
            client,
            config,
            budget,
            accounts: Mutex::default(),
        })
    }

    /// The controller's own client.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A client acting as `user` (`system:serviceaccount:<ns>:<name>`), under the same budget;
    /// built once per user and kept.
    pub fn impersonating(&self, user: &str) -> Result<Client, String> {
        if let Some(c) = self.accounts.lock().ok().and_then(|m| m.get(user).cloned()) {
            return Ok(c);
        }
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(user.to_string());
        // The API server adds a ServiceAccount's groups itself when none are given.
        config.auth_info.impersonate_groups = None;
        let client = build(config, &self.budget)
            .map_err(|e| format!("cannot build a client impersonating {user}: {e}"))?;
        if let Ok(mut m) = self.accounts.lock() {
            m.insert(user.to_string(), client.clone());
        }
        Ok(client)
    }
}

fn build(config: kube::Config, budget: &Arc<Budget>) -> Result<Client, kube::Error> {
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&BudgetLayer(budget.clone()))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_from_method_and_path() {
        let v = |m: &str, u: &str| verb(&m.parse().expect("method"), &u.parse().expect("uri"));
        assert_eq!(v("GET", "/api/v1/namespaces/a/secrets/b"), "get");
        assert_eq!(v("GET", "/api/v1/namespaces/a/secrets"), "list");
        assert_eq!(v("GET", "/api/v1/namespaces/a"), "get");
        assert_eq!(v("GET", "/api/v1/namespaces"), "list");
        assert_eq!(
            v("GET", "/apis/bitnami.com/v1alpha1/sealedsecrets?limit=1"),
            "list"
        );
        assert_eq!(
            v(
                "GET",
                "/apis/bitnami.com/v1alpha1/namespaces/a/sealedsecrets?watch=true&x=1"
            ),
            "watch"
        );
        assert_eq!(v("PATCH", "/api/v1/namespaces/a/secrets/b"), "patch");
        assert_eq!(
            v("POST", "/apis/events.k8s.io/v1/namespaces/a/events"),
            "create"
        );
        assert_eq!(v("DELETE", "/api/v1/namespaces/a/secrets/b"), "delete");
    }

    /// A stand-in API server that answers every GET with a Secret and counts requests.
    async fn stand_in() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        let app = axum::Router::new().fallback(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                axum::Json(serde_json::json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "s", "namespace": "ns"}
                }))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), seen)
    }

    /// Three loops — two on the controller's client, one impersonating a tenant — make 10
    /// requests each at once. Under one budget of 20/s with a burst of 1 the 30 requests take
    /// at least 29/20 s; three budgets would let them through in under half a second.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_loop_shares_one_request_budget() {
        let (url, seen) = stand_in().await;
        let config = kube::Config::new(url.parse().expect("url"));
        let requests = Family::<VerbLabels, Counter>::default();
        let kube = Kube::new(config, Budget::new(20.0, 1, requests.clone())).expect("client");
        let clients = [
            kube.client(),
            kube.client(),
            kube.impersonating("system:serviceaccount:tenant:deployer")
                .expect("impersonating"),
        ];
        let start = std::time::Instant::now();
        let loops = clients.into_iter().map(|c| {
            tokio::spawn(async move {
                let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
                    kube::Api::namespaced(c, "ns");
                for _ in 0..10 {
                    api.get("s").await.expect("get");
                }
            })
        });
        for l in loops.collect::<Vec<_>>() {
            l.await.expect("loop");
        }
        let took = start.elapsed();
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 30);
        assert_eq!(
            requests
                .get_or_create(&VerbLabels { verb: "get".into() })
                .get(),
            30
        );
        assert!(
            took >= std::time::Duration::from_millis(1400),
            "30 requests at 20/s took only {took:?}: the loops do not share one budget"
        );
    }
}
