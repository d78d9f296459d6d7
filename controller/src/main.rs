//! `sealkit-controller`: unseals SealedSecrets into Secrets, as a drop-in for Bitnami's
//! sealed-secrets-controller (same CRD, key Secrets, HTTP endpoints and metric names).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PartialObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use sealkit_api::SealedSecret;
use sealkit_controller::http::{AppState, metrics_router, router};
use sealkit_controller::kube_api::KubeApi;
use sealkit_controller::leader::{Stopped, while_leading};
use sealkit_controller::metrics::Metrics;
use sealkit_controller::unseal::keys::{
    KEY_ACTIVE, KEY_LABEL, load, needs_new_key, new_key_secret,
};
use sealkit_controller::unseal::reconcile::{Failures, Outcome, reconcile};

/// Unseals SealedSecrets (bitnami.com/v1alpha1) into Secrets.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
struct Args {
    /// Namespace of the sealing key Secrets (the controller's namespace).
    #[arg(
        long,
        env = "SEALED_SECRETS_KEY_NAMESPACE",
        default_value = "kube-system"
    )]
    key_namespace: String,
    /// generateName prefix of new key Secrets.
    #[arg(long, default_value = "sealed-secrets-key")]
    key_prefix: String,
    /// RSA key size of new keys.
    #[arg(long, default_value_t = 4096)]
    key_size: usize,
    /// Certificate lifetime of new keys.
    #[arg(long, default_value = "87600h", value_parser = humantime::parse_duration)]
    key_ttl: Duration,
    /// A new key is added when the newest is this old; 0 disables renewal.
    #[arg(long, alias = "rotate-period", default_value = "720h", value_parser = humantime::parse_duration)]
    key_renew_period: Duration,
    /// Add a new key if the newest was created before this time (RFC 3339).
    #[arg(long, env = "SEALED_SECRETS_KEY_CUTOFF_TIME")]
    key_cutoff_time: Option<humantime::Timestamp>,
    /// Common name of new certificates.
    #[arg(long, default_value = "")]
    my_cn: String,
    /// HTTP endpoints (cert, verify, rotate, healthz).
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen_addr: SocketAddr,
    /// Prometheus metrics.
    #[arg(long, default_value = "0.0.0.0:8081")]
    listen_metrics_addr: SocketAddr,
    /// Git webhook receiver (`POST /hook/<digest>`), apart from the kubeseal endpoints.
    #[arg(long, default_value = "0.0.0.0:9292")]
    listen_webhook_addr: SocketAddr,
    /// Server-side-apply field manager.
    #[arg(long, default_value = "sealkit")]
    field_manager: String,
    /// Watch SealedSecrets in this namespace only (default: all namespaces).
    #[arg(long, env = "SEALED_SECRETS_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Only SealedSecrets (and owned Secrets) matching this label selector.
    #[arg(long, env = "SEALED_SECRETS_SELECTOR")]
    selector: Option<String>,
    /// Elect a leader with a Lease (in the key namespace) so that several replicas can run: every
    /// replica serves the HTTP endpoints, only the leader writes.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// This replica's identity in the Lease (default: $POD_NAME, else the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Average API requests per second the reconciler may make.
    #[arg(long, default_value_t = 20.0)]
    kube_api_qps: f64,
    /// API requests the reconciler may make at once.
    #[arg(long, default_value_t = 40)]
    kube_api_burst: u32,
    /// How often in-sync objects are checked again (drift safety net), jittered.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    resync: Duration,
    /// Run the ExternalSecret syncer (external-secrets.io/v1) when its CRD is installed.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    external_secrets: bool,
    /// How long a fetched value is shared between ExternalSecrets before it is fetched again.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    provider_cache_ttl: Duration,
    /// Requests per second per AWS Secrets Manager API (quota: 100 for batch and list calls).
    #[arg(long, default_value_t = 50.0)]
    aws_secretsmanager_qps: f64,
    /// Requests per second for AWS Parameter Store reads (default quota: 40).
    #[arg(long, default_value_t = 20.0)]
    aws_ssm_qps: f64,
    /// Run the GitOps sync loop (Flux GitRepository + Kustomization) when its CRDs are installed.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    gitops: bool,
    /// Where fetched Git revisions are kept (an emptyDir in the Deployment).
    #[arg(long, default_value = "/tmp/sealkit-gitops")]
    gitops_cache_dir: std::path::PathBuf,
    /// GitOps: Kustomizations without spec.serviceAccountName apply as this ServiceAccount of
    /// their namespace (impersonated), not as the controller.
    #[arg(long, value_name = "NAME")]
    default_service_account: Option<String>,
    /// GitOps: a Kustomization may only reference a GitRepository and dependencies in its own
    /// namespace.
    #[arg(long)]
    no_cross_namespace_refs: bool,
    /// GitOps: let kustomize fetch remote bases and files (URLs, remote Git refs).
    #[arg(long)]
    allow_remote_bases: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ReconcileError(String);

struct Ctx {
    api: KubeApi,
    state: Arc<AppState>,
    failures: Failures,
    resync: Duration,
}

fn jittered(d: Duration) -> Duration {
    let mut r = [0u8; 1];
    let _ = aws_lc_rs::rand::fill(&mut r);
    d.mul_f64(0.9 + f64::from(r[0]) / 255.0 * 0.2)
}

async fn reconcile_one(ss: Arc<SealedSecret>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let uid = ss.uid().unwrap_or_default();
    let outcome =
        match sealkit_controller::guard::contained(reconcile(&ss, &ctx.api, &ctx.state)).await {
            Ok(r) => r.map_err(ReconcileError)?,
            // One object's bug never stops the others: told on the object, retried with backoff.
            Err(msg) => {
                use sealkit_controller::unseal::reconcile::{ClusterApi, EventNote};
                ctx.api
                    .event(
                        &ss,
                        EventNote {
                            warning: true,
                            reason: "ErrUnsealFailed",
                            message: msg.clone(),
                        },
                    )
                    .await;
                return Err(ReconcileError(msg));
            }
        };
    ctx.failures.succeeded(&uid);
    Ok(match outcome {
        Outcome::Done | Outcome::Failed => Action::requeue(jittered(ctx.resync)),
    })
}

fn error_policy(ss: Arc<SealedSecret>, err: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    let wait = ctx.failures.failed(&ss.uid().unwrap_or_default());
    tracing::warn!(name = %ss.name_any(), namespace = ?ss.namespace(), error = %err, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

async fn load_keys(
    client: &Client,
    ns: &str,
) -> Result<sealkit_controller::unseal::keys::SealingKeys, kube::Error> {
    let secrets = Api::<Secret>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{KEY_LABEL}={KEY_ACTIVE}")))
        .await?;
    let keys = load(&secrets.items);
    for s in &keys.skipped {
        tracing::warn!(key_secret = %s, "skipping a key Secret");
    }
    Ok(keys)
}

/// Loads the keys, adding a new one when renewal is due, and swaps them in when they changed.
async fn refresh_keys(
    client: &Client,
    args: &Args,
    state: &AppState,
    leader: bool,
) -> Result<(), kube::Error> {
    let mut keys = load_keys(client, &args.key_namespace).await?;
    let renew = (!args.key_renew_period.is_zero()).then_some(args.key_renew_period);
    let cutoff = args.key_cutoff_time.map(SystemTime::from);
    if leader
        && needs_new_key(
            keys.newest.as_ref().map(|n| n.not_before),
            SystemTime::now(),
            renew,
            cutoff,
        )
    {
        match new_key_secret(
            &args.key_prefix,
            &args.key_namespace,
            args.key_size,
            args.key_ttl,
            &args.my_cn,
        ) {
            Ok((secret, fp)) => {
                Api::<Secret>::namespaced(client.clone(), &args.key_namespace)
                    .create(&PostParams::default(), &secret)
                    .await?;
                tracing::info!(fingerprint = %fp, "generated a new sealing key");
                keys = load_keys(client, &args.key_namespace).await?;
            }
            Err(e) => tracing::error!(error = %e, "cannot generate a sealing key"),
        }
    }
    let changed = {
        let current = state.keys();
        let fps = |k: &sealkit_controller::unseal::keys::SealingKeys| {
            k.keyring
                .keys()
                .map(|k| k.fingerprint().clone())
                .collect::<Vec<_>>()
        };
        fps(&current) != fps(&keys)
    };
    if changed {
        if let Ok(mut slot) = state.keys.write() {
            *slot = Arc::new(keys);
        }
        tracing::info!("sealing keys loaded");
    }
    Ok(())
}

/// Whether the API server serves `K` (its CRD is installed) and we may list it where we watch;
/// says which loop stays off, and why, if not.
async fn served<K>(client: &Client, namespace: Option<&str>, loop_name: &str) -> bool
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api = match namespace {
        Some(ns) => Api::<K>::namespaced(client.clone(), ns),
        None => Api::<K>::all(client.clone()),
    };
    match api.list(&ListParams::default().limit(1)).await {
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

/// The ExternalSecret loop, when enabled and its CRD is served; otherwise waits forever.
async fn external_secrets(client: &Client, args: &Args, state: &AppState) {
    use sealkit_controller::external::{aws::AwsLimits, cache::Fetcher, reconcile, run};
    if !args.external_secrets
        || !served::<sealkit_api::ExternalSecret>(
            client,
            args.watch_namespace.as_deref(),
            "the syncer",
        )
        .await
    {
        return std::future::pending().await;
    }
    let limits = AwsLimits {
        secretsmanager_qps: args.aws_secretsmanager_qps,
        ssm_qps: args.aws_ssm_qps,
    };
    let sync = reconcile::SyncContext::new(
        reconcile::AwsFactory::new(limits, state.metrics.clone()),
        Fetcher::new(args.provider_cache_ttl, Duration::from_millis(20)),
        state.metrics.clone(),
    );
    let api = KubeApi::new(
        client.clone(),
        &args.field_manager,
        args.kube_api_qps,
        args.kube_api_burst,
    );
    tracing::info!("starting the ExternalSecret syncer");
    run::run(
        client.clone(),
        api,
        sync,
        run::Settings {
            namespace: args.watch_namespace.clone(),
            selector: args.selector.clone(),
        },
    )
    .await;
}

/// The GitOps loop, when enabled and the Kustomization CRD is served; otherwise waits forever.
async fn gitops(client: &Client, args: &Args, state: &AppState) {
    use sealkit_controller::gitops::{reconcile::GitopsSettings, run};
    if !args.gitops
        || !served::<sealkit_api::Kustomization>(
            client,
            args.watch_namespace.as_deref(),
            "the GitOps loop",
        )
        .await
    {
        return std::future::pending().await;
    }
    if let Err(e) = std::fs::create_dir_all(&args.gitops_cache_dir) {
        tracing::error!(dir = %args.gitops_cache_dir.display(), error = %e, "cannot create the GitOps cache directory: the GitOps loop is off");
        return std::future::pending().await;
    }
    tracing::info!("starting the GitOps sync loop");
    let api = run::KubeFlux::new(
        client.clone(),
        &args.field_manager,
        args.kube_api_qps,
        args.kube_api_burst,
    );
    run::run(
        client.clone(),
        api,
        GitopsSettings {
            cache_dir: args.gitops_cache_dir.clone(),
            metrics: state.metrics.clone(),
            default_service_account: args.default_service_account.clone(),
            no_cross_namespace_refs: args.no_cross_namespace_refs,
            allow_remote_bases: args.allow_remote_bases,
        },
        args.watch_namespace.clone(),
        args.selector.clone(),
    )
    .await;
}

async fn shutdown_signal() {
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

async fn serve(addr: SocketAddr, app: axum::Router) {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => {
            sealkit_controller::http::server::serve(l, app, Default::default()).await;
        }
        Err(e) => tracing::error!(%addr, error = %e, "cannot listen"),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    sealkit_controller::guard::install_panic_hook();
    let args = Args::parse();
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "error: cannot connect to the Kubernetes API: {e}\n  hint: run in a cluster, or set KUBECONFIG"
            );
            return std::process::ExitCode::from(3);
        }
    };
    let metrics = Arc::new(Metrics::default());
    let state = Arc::new(AppState::new(Default::default(), metrics));
    if let Err(e) = refresh_keys(&client, &args, &state, !args.leader_elect).await {
        eprintln!(
            "error: cannot load or create sealing keys in namespace {}: {e}",
            args.key_namespace
        );
        return std::process::ExitCode::from(3);
    }
    tokio::spawn(serve(args.listen_addr, router(state.clone())));
    if args.gitops {
        tokio::spawn(serve(
            args.listen_webhook_addr,
            sealkit_controller::gitops::webhook::router(
                sealkit_controller::gitops::webhook::KubeHook {
                    client: client.clone(),
                    namespace: args.watch_namespace.clone(),
                },
            ),
        ));
    }
    tokio::spawn(serve(
        args.listen_metrics_addr,
        metrics_router(state.clone()),
    ));

    // Leadership: a Lease in the key namespace; without election this replica always leads.
    let (leader_tx, leader_rx) = tokio::sync::watch::channel(!args.leader_elect);
    let mut _lease_task = None;
    if args.leader_elect {
        let identity = args.identity.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "sealkit".into())
        });
        match kube_lease_manager::LeaseManagerBuilder::new(client.clone(), "sealkit-controller")
            .with_namespace(&args.key_namespace)
            .with_identity(identity)
            .with_field_manager(&args.field_manager)
            .build()
            .await
        {
            Ok(manager) => {
                let (mut rx, task) = manager.watch().await;
                _lease_task = Some(task);
                tokio::spawn(async move {
                    while rx.changed().await.is_ok() {
                        let leading = *rx.borrow_and_update();
                        tracing::info!(leading, "leadership changed");
                        if leader_tx.send(leading).is_err() {
                            break;
                        }
                    }
                });
            }
            Err(e) => {
                eprintln!(
                    "error: cannot set up leader election in {}: {e}",
                    args.key_namespace
                );
                return std::process::ExitCode::from(3);
            }
        }
    }
    {
        let (client, state, args, leader) = (
            client.clone(),
            state.clone(),
            args.clone(),
            leader_rx.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                let leading = *leader.borrow();
                if let Err(e) = refresh_keys(&client, &args, &state, leading).await {
                    tracing::warn!(error = %e, "cannot refresh sealing keys");
                }
            }
        });
    }

    let ctx = Arc::new(Ctx {
        api: KubeApi::new(
            client.clone(),
            &args.field_manager,
            args.kube_api_qps,
            args.kube_api_burst,
        ),
        state: state.clone(),
        failures: Failures::default(),
        resync: args.resync,
    });
    let gate = while_leading(
        leader_rx,
        || {
            let (client, state, args, ctx) =
                (client.clone(), state.clone(), args.clone(), ctx.clone());
            async move {
                // A new leader makes sure a sealing key exists before unsealing anything.
                if let Err(e) = refresh_keys(&client, &args, &state, true).await {
                    tracing::warn!(error = %e, "cannot refresh sealing keys");
                }
                let (sealed, secrets) = match &args.watch_namespace {
                    Some(ns) => (
                        Api::<SealedSecret>::namespaced(client.clone(), ns),
                        Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), ns),
                    ),
                    None => (
                        Api::<SealedSecret>::all(client.clone()),
                        Api::<PartialObjectMeta<Secret>>::all(client.clone()),
                    ),
                };
                let watch = match &args.selector {
                    Some(sel) => watcher::Config::default().labels(sel),
                    None => watcher::Config::default(),
                };
                // Owned Secrets are watched as metadata only: the watch cache never holds a
                // value (the reconcile reads its one Secret when it runs).
                let unseal = Controller::new(sealed, watch.clone())
                    .owns(secrets, watch)
                    .run(reconcile_one, error_policy, ctx)
                    .for_each(|res| async move {
                        if let Err(e) = res {
                            tracing::debug!(error = %e, "controller event");
                        }
                    });
                futures::future::join3(
                    unseal,
                    external_secrets(&client, &args, &state),
                    gitops(&client, &args, &state),
                )
                .await;
            }
        },
        |leading| {
            if leading {
                tracing::info!("leading: starting the unseal controller");
            } else {
                tracing::warn!("lost leadership: stopping the unseal controller");
            }
        },
    );
    // SIGTERM / Ctrl-C stop the process whether it leads or not; dropping the gate cancels the
    // controller (in-flight writes are idempotent server-side applies).
    tokio::select! {
        stopped = gate => match stopped {
            Stopped::Finished => std::process::ExitCode::SUCCESS,
            Stopped::SignalClosed => std::process::ExitCode::from(1),
        },
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            std::process::ExitCode::SUCCESS
        }
    }
}
