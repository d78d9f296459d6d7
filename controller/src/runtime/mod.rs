//! What every loop shares, written once: the kube client with one request budget
//! ([`client`]), status and Events ([`status`]), conditions ([`conditions`]), requeue, jitter and
//! backoff ([`requeue`]), guards for tenant input and panics ([`guard`]), the leadership gate
//! ([`leader`]), the HTTP listeners ([`server`]), metrics ([`metrics`]), and the glue around each
//! reconcile ([`Glue`]): a tracing span with the object's namespace and name, panic containment,
//! errors counted by kind, capped backoff.
//!
//! Each loop (`unseal`, `external`, `gitops`) has the same shape: `mod.rs` wires the
//! `Controller` (its `run`), `reconcile.rs` is written against a seam trait, `kube.rs`
//! implements the seam over [`client::Kube`], `memory.rs` is the in-memory fake (tests and
//! benches, feature `testing`), and one error type implements [`LoopError`].

pub mod client;
pub mod conditions;
pub mod guard;
pub mod leader;
pub mod metrics;
pub mod requeue;
pub mod server;
pub mod status;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::Instrument;

use metrics::{ControllerLabels, LoopErrorLabels, Metrics};
use requeue::Failures;

/// What every loop's error type offers the shared glue.
pub trait LoopError: std::error::Error + Send + Sync + 'static {
    /// A short, stable label for `sealkit_reconcile_errors_total{kind}` (never a value).
    fn metric_label(&self) -> &'static str;
    /// The error of a reconcile that panicked (the glue contains the panic).
    fn panicked(message: String) -> Self;
}

/// The glue around one loop's reconciles.
pub struct Glue {
    controller: &'static str,
    failures: Failures,
    metrics: Arc<Metrics>,
}

impl Glue {
    /// The glue of the loop named `controller` (a metric label).
    pub fn new(controller: &'static str, metrics: Arc<Metrics>) -> Self {
        Glue {
            controller,
            failures: Failures::default(),
            metrics,
        }
    }

    /// Runs one reconcile of `obj`: in a span naming it, with a panic turned into an error, the
    /// outcome counted, and the failure count of the object reset on success.
    pub async fn reconcile<K, E>(
        &self,
        obj: &K,
        fut: impl Future<Output = Result<Action, E>>,
    ) -> Result<Action, E>
    where
        K: Resource,
        E: LoopError,
    {
        let span = tracing::info_span!(
            "reconcile",
            controller = self.controller,
            namespace = obj.namespace().unwrap_or_default(),
            name = obj.name_any(),
        );
        let result = match guard::contained(fut.instrument(span)).await {
            Ok(r) => r,
            Err(msg) => Err(E::panicked(msg)),
        };
        self.metrics
            .reconciles
            .get_or_create(&ControllerLabels {
                controller: self.controller.into(),
            })
            .inc();
        match &result {
            Ok(_) => self.failures.succeeded(&obj.uid().unwrap_or_default()),
            Err(e) => {
                self.metrics
                    .reconcile_errors
                    .get_or_create(&LoopErrorLabels {
                        controller: self.controller.into(),
                        kind: e.metric_label().into(),
                    })
                    .inc();
            }
        }
        result
    }

    /// After a failed reconcile: capped, jittered exponential backoff per object.
    pub fn backoff<K: Resource, E: LoopError>(&self, obj: &K, err: &E) -> Action {
        let wait = self.failures.failed(&obj.uid().unwrap_or_default());
        self.retry(obj, err, wait)
    }

    /// After a failed reconcile: come back after `wait` (a loop's own retry interval).
    pub fn retry<K: Resource, E: LoopError>(&self, obj: &K, err: &E, wait: Duration) -> Action {
        tracing::warn!(
            controller = self.controller,
            namespace = obj.namespace().unwrap_or_default(),
            name = obj.name_any(),
            kind = err.metric_label(),
            error = %err,
            retry_in = ?wait,
            "reconcile failed"
        );
        Action::requeue(wait)
    }
}

/// Drives a `Controller`'s result stream until it ends. Failed reconciles were logged by
/// [`Glue::retry`]; everything else (a watch that fails, RBAC that forbids a list) is logged at
/// warn, since the loop cannot see those objects until it is fixed.
pub async fn drain<S, T, E>(controller: &'static str, stream: S)
where
    S: Stream<Item = Result<T, kube::runtime::controller::Error<E, kube::runtime::watcher::Error>>>,
    E: std::error::Error + 'static,
{
    stream
        .for_each(|r| async move {
            match r {
                Ok(_) | Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(e) => {
                    tracing::warn!(controller, error = %e, "controller: watch or queue error")
                }
            }
        })
        .await;
}

/// Whether the API server serves `K` (its CRD is installed) and we may list it where we watch;
/// says which loop stays off, and why, if not.
pub async fn served<K>(client: &kube::Client, namespace: Option<&str>, loop_name: &str) -> bool
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api = match namespace {
        Some(ns) => kube::Api::<K>::namespaced(client.clone(), ns),
        None => kube::Api::<K>::all(client.clone()),
    };
    match api.list(&kube::api::ListParams::default().limit(1)).await {
        Err(kube::Error::Api(e)) if e.code == 404 => {
            tracing::info!(
                "the {} CRD is not installed: {loop_name} is off",
                K::kind(&())
            );
            false
        }
        Err(kube::Error::Api(e)) if e.code == 403 => {
            tracing::warn!(
                "this controller may not list {} ({}): {loop_name} is off; grant it with deploy/'s RBAC",
                K::plural(&()),
                namespace.map_or("in all namespaces".to_string(), |n| format!(
                    "in namespace {n}"
                )),
            );
            false
        }
        _ => true,
    }
}

/// Serves `app` on `addr` with the default listener limits (logs when it cannot listen).
pub async fn listen(addr: std::net::SocketAddr, app: axum::Router) {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => server::serve(l, app, Default::default()).await,
        Err(e) => tracing::error!(%addr, error = %e, "cannot listen"),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
}
