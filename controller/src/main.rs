//! `sealkit-controller`: unseals SealedSecrets (a drop-in for Bitnami's sealed-secrets-controller),
//! syncs ExternalSecrets from AWS, and follows Flux GitRepositories and Kustomizations — three
//! loops in one binary, behind one Lease, sharing one kube client and request budget. This file
//! only starts things; the flags are in `config`, each loop in its module.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use sealkit_controller::config::Flags;
use sealkit_controller::runtime::client::{Budget, Kube};
use sealkit_controller::runtime::leader::{Stopped, leadership, while_leading};
use sealkit_controller::runtime::metrics::Metrics;
use sealkit_controller::runtime::status::Writer;
use sealkit_controller::runtime::{guard, listen, shutdown_signal};
use sealkit_controller::{external, gitops, unseal};

/// A startup failure: what failed and a hint (printed, exit status 3).
struct Fail(String);

trait OrFail<T> {
    fn or_fail(self, what: &str, hint: &str) -> Result<T, Fail>;
}

impl<T, E: std::fmt::Display> OrFail<T> for Result<T, E> {
    fn or_fail(self, what: &str, hint: &str) -> Result<T, Fail> {
        self.map_err(|e| Fail(format!("error: {what}: {e}\n  hint: {hint}")))
    }
}

/// The HTTP servers: the unseal endpoints and metrics on every replica, the Git webhook
/// receiver (its own port) when the GitOps loop is on.
fn serve(flags: &Flags, client: &kube::Client, state: &Arc<unseal::http::AppState>) {
    let unseal = unseal::http::router(state.clone());
    tokio::spawn(listen(flags.listen_addr, unseal));
    let metrics = unseal::http::metrics_router(state.clone());
    tokio::spawn(listen(flags.listen_metrics_addr, metrics));
    if flags.gitops {
        let hooks = gitops::webhook::KubeHook {
            client: client.clone(),
            namespace: flags.watch_namespace.clone(),
        };
        let hooks = gitops::webhook::router(hooks);
        tokio::spawn(listen(flags.listen_webhook_addr, hooks));
    }
}

/// The loops the leader runs, each with its own status writer over the one shared client.
async fn loops(kube: Arc<Kube>, state: Arc<unseal::http::AppState>, flags: Flags, m: Arc<Metrics>) {
    let writer = || Writer::new(kube.client(), &flags.field_manager);
    let external = flags.external();
    futures::future::join3(
        unseal::run(kube.client(), writer(), state, flags.unseal()),
        external::run(
            kube.client(),
            writer(),
            m.clone(),
            flags.external_secrets,
            external,
        ),
        gitops::run(kube.clone(), writer(), flags.gitops, flags.gitops(m)),
    )
    .await;
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).init();
    guard::install_panic_hook();
    match start(Flags::parse()).await {
        Ok(code) => code,
        Err(Fail(message)) => {
            eprintln!("{message}");
            ExitCode::from(3)
        }
    }
}

async fn start(flags: Flags) -> Result<ExitCode, Fail> {
    let metrics = Arc::new(Metrics::default());
    // One client, one request budget, for every loop (impersonating clients included).
    let config = kube::Config::infer().await.or_fail(
        "cannot find the Kubernetes API",
        "run in a cluster, or set KUBECONFIG",
    )?;
    let requests = metrics.kube_requests.clone();
    let budget = Budget::new(flags.kube_api_qps, flags.kube_api_burst, requests);
    let kube = Arc::new(
        Kube::new(config, budget)
            .or_fail("cannot connect to the Kubernetes API", "check KUBECONFIG")?,
    );
    let client = kube.client();

    // Keys first: every replica serves the certificate, leader or not.
    let state = Arc::new(unseal::http::AppState::new(
        Default::default(),
        metrics.clone(),
    ));
    let keys = flags.unseal().keys;
    unseal::keys::refresh(&client, &keys, &state.keys, !flags.leader_elect)
        .await
        .or_fail(
            &format!(
                "cannot load or create sealing keys in namespace {}",
                flags.key_namespace
            ),
            "the controller needs get/list/create on Secrets of its namespace (deploy/rbac)",
        )?;
    serve(&flags, &client, &state);

    // Leadership: a Lease in the key namespace; without election this replica always leads.
    let (leader, _held) = leadership(
        client.clone(),
        flags.leader_elect,
        &flags.key_namespace,
        flags.identity.as_deref(),
        &flags.field_manager,
    )
    .await
    .or_fail(
        "cannot set up leader election",
        "the controller needs Leases in its namespace",
    )?;
    unseal::keys::spawn_refresh(client.clone(), keys, state.clone(), leader.clone());

    let gate = while_leading(
        leader,
        || loops(kube.clone(), state.clone(), flags.clone(), metrics.clone()),
        |leading| match leading {
            true => tracing::info!("leading: starting the loops"),
            false => tracing::warn!("lost leadership: stopping the loops"),
        },
    );
    // SIGTERM / Ctrl-C stop the process whether it leads or not; dropping the gate cancels the
    // loops (in-flight writes are idempotent server-side applies).
    Ok(tokio::select! {
        stopped = gate => match stopped {
            Stopped::Finished => ExitCode::SUCCESS,
            Stopped::SignalClosed => ExitCode::from(1),
        },
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            ExitCode::SUCCESS
        }
    })
}
