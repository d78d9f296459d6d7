//! The thin kube layer of the sync loop: server-side apply of any kind through discovery and
//! `DynamicObject`, reads of sources, Secrets and ConfigMaps, status and Events; and the two
//! controllers (GitRepository status, Kustomization apply) with their watches.
//!
//! Apply, prune and health reads go through a [`KubeActor`]: the controller's own client, or
//! one that impersonates a Kustomization's ServiceAccount (`Impersonate-User:
//! system:serviceaccount:<ns>:<name>`; the API server adds the ServiceAccount's groups), built
//! from the controller's client configuration once per identity and kept.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Scope};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use sealkit_api::{GitRepository, Kustomization, KustomizationStatus};
use serde_json::Value;

use super::apply::{ApplyApi, ObjRef};
use super::reconcile::{FluxApi, GitopsSettings, Next, reconcile};
use super::source::{self, GitRef};
use crate::kube_api::KubeApi;

/// The cluster, for the sync loop.
pub struct KubeFlux {
    base: KubeApi,
    kinds: Mutex<HashMap<(String, String), (ApiResource, bool)>>,
    /// The controller's client configuration (inferred as the client's was), the base of the
    /// impersonating clients.
    config: tokio::sync::OnceCell<kube::Config>,
    /// One client per impersonated user.
    accounts: Mutex<HashMap<String, Client>>,
}

impl KubeFlux {
    /// A client writing as `manager`.
    pub fn new(client: Client, manager: &str, qps: f64, burst: u32) -> Self {
        KubeFlux {
            base: KubeApi::new(client, manager, qps, burst),
            kinds: Mutex::default(),
            config: tokio::sync::OnceCell::new(),
            accounts: Mutex::default(),
        }
    }

    /// A client acting as `user` (cached).
    async fn impersonating(&self, user: &str) -> Result<Client, String> {
        if let Some(c) = self.accounts.lock().ok().and_then(|m| m.get(user).cloned()) {
            return Ok(c);
        }
        let base = self
            .config
            .get_or_try_init(|| async {
                kube::Config::infer()
                    .await
                    .map_err(|e| format!("cannot read the controller's client configuration: {e}"))
            })
            .await?;
        let mut config = base.clone();
        config.auth_info.impersonate = Some(user.to_string());
        // The API server adds a ServiceAccount's groups itself when none are given.
        config.auth_info.impersonate_groups = None;
        let client = Client::try_from(config)
            .map_err(|e| format!("cannot build a client impersonating {user}: {e}"))?;
        if let Ok(mut m) = self.accounts.lock() {
            m.insert(user.to_string(), client.clone());
        }
        Ok(client)
    }

    async fn resource(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<(ApiResource, bool)>, String> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(hit) = self.kinds.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(Some(hit));
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        self.base.acquire().await;
        let found = match kube::discovery::pinned_kind(
            self.base.client(),
            &GroupVersionKind::gvk(group, version, kind),
        )
        .await
        {
            Ok((ar, caps)) => Some((ar, caps.scope == Scope::Namespaced)),
            Err(kube::Error::Api(e)) if e.code == 404 => None,
            Err(e) => return Err(e.to_string()),
        };
        // Misses are not cached: a CRD applied in stage 1 is served moments later.
        if let Some(f) = &found
            && let Ok(mut m) = self.kinds.lock()
        {
            m.insert(key, f.clone());
        }
        Ok(found)
    }

    async fn dynamic(&self, client: &Client, r: &ObjRef) -> Result<Api<DynamicObject>, String> {
        let (ar, namespaced) =
            self.resource(&r.api_version(), &r.kind)
                .await?
                .ok_or_else(|| {
                    format!(
                        "the API server does not serve {} {}",
                        r.api_version(),
                        r.kind
                    )
                })?;
        Ok(match (&r.namespace, namespaced) {
            (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &ar),
            _ => Api::all_with(client.clone(), &ar),
        })
    }
}

/// The cluster as one identity: the controller's client or an impersonating one. Discovery
/// (which kinds exist, and their scope) is the controller's, shared.
pub struct KubeActor<'a> {
    flux: &'a KubeFlux,
    client: Client,
}

impl ApplyApi for KubeActor<'_> {
    async fn namespaced(&self, api_version: &str, kind: &str) -> Result<Option<bool>, String> {
        Ok(self.flux.resource(api_version, kind).await?.map(|(_, n)| n))
    }

    async fn get(&self, r: &ObjRef) -> Result<Option<Value>, String> {
        let api = match self.flux.dynamic(&self.client, r).await {
            Ok(a) => a,
            // A kind that is gone (CRD deleted) has no live objects.
            Err(_) => return Ok(None),
        };
        self.flux.base.acquire().await;
        let obj = api.get_opt(&r.name).await.map_err(|e| e.to_string())?;
        obj.map(|o| serde_json::to_value(o).map_err(|e| e.to_string()))
            .transpose()
    }

    async fn apply(&self, obj: &Value, dry_run: bool, force: bool) -> Result<Value, String> {
        let r = ObjRef::of(obj);
        let api = self.flux.dynamic(&self.client, &r).await?;
        let mut params = PatchParams::apply(self.flux.base.manager()).force();
        if dry_run {
            params = params.dry_run();
        }
        self.flux.base.acquire().await;
        let res = api.patch(&r.name, &params, &Patch::Apply(obj)).await;
        let res = match res {
            Err(kube::Error::Api(e)) if force && !dry_run && e.message.contains("immutable") => {
                // spec.force: recreate an object whose immutable fields changed.
                api.delete(&r.name, &DeleteParams::foreground())
                    .await
                    .map_err(|e| e.to_string())?;
                api.patch(&r.name, &params, &Patch::Apply(obj)).await
            }
            other => other,
        };
        let out = res.map_err(|e| e.to_string())?;
        serde_json::to_value(out).map_err(|e| e.to_string())
    }

    async fn delete(&self, r: &ObjRef) -> Result<(), String> {
        let api = self.flux.dynamic(&self.client, r).await?;
        self.flux.base.acquire().await;
        match api.delete(&r.name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl FluxApi for KubeFlux {
    type Actor<'a> = KubeActor<'a>;

    async fn actor<'a>(
        &'a self,
        account: Option<(&'a str, &'a str)>,
    ) -> Result<KubeActor<'a>, String> {
        let client = match account {
            None => self.base.client().clone(),
            Some((ns, name)) => {
                self.impersonating(&format!("system:serviceaccount:{ns}:{name}"))
                    .await?
            }
        };
        Ok(KubeActor { flux: self, client })
    }

    async fn git_repository(&self, ns: &str, name: &str) -> Result<Option<GitRepository>, String> {
        self.base
            .get_opt(Api::namespaced(self.base.client().clone(), ns), name)
            .await
    }

    async fn kustomization(&self, ns: &str, name: &str) -> Result<Option<Kustomization>, String> {
        self.base
            .get_opt(Api::namespaced(self.base.client().clone(), ns), name)
            .await
    }

    async fn secret_data(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        self.base.acquire().await;
        let s = Api::<Secret>::namespaced(self.base.client().clone(), ns)
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?;
        Ok(s.map(|s| {
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect()
        }))
    }

    async fn config_map_data(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, String> {
        self.base.acquire().await;
        let c = Api::<ConfigMap>::namespaced(self.base.client().clone(), ns)
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?;
        Ok(c.map(|c| c.data.unwrap_or_default()))
    }

    async fn set_status(
        &self,
        ks: &Kustomization,
        status: &KustomizationStatus,
    ) -> Result<(), String> {
        self.base.patch_status(ks, status).await
    }

    async fn event(&self, ks: &Kustomization, warning: bool, reason: &str, message: &str) {
        let note: String = message.chars().take(1024).collect();
        self.base
            .publish(ks.object_ref(&()), warning, reason, note, "Reconcile")
            .await;
    }

    async fn set_finalizers(
        &self,
        ks: &Kustomization,
        finalizers: Vec<String>,
    ) -> Result<(), String> {
        // A merge patch with the resourceVersion we read: a concurrent change is a conflict
        // (retried), never a lost finalizer of someone else's.
        let body = serde_json::json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": ks.resource_version(),
        }});
        self.base.acquire().await;
        match Api::<Kustomization>::namespaced(
            self.base.client().clone(),
            &ks.namespace().unwrap_or_default(),
        )
        .patch(
            &ks.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&body),
        )
        .await
        {
            Ok(_) => Ok(()),
            // Already gone: nothing left to finalize.
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

struct Ctx {
    api: KubeFlux,
    settings: GitopsSettings,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failed(String);

/// A duration field, or `default` when it is bad (the reconcile reports a bad one).
fn interval(field: &str, s: &str, default: Duration) -> Duration {
    crate::guard::duration_or(field, Some(s), default).unwrap_or(default)
}

async fn reconcile_ks(ks: Arc<Kustomization>, ctx: Arc<Ctx>) -> Result<Action, Failed> {
    Ok(
        match crate::guard::contained(reconcile(&ks, &ctx.api, &ctx.settings))
            .await
            .map_err(Failed)?
            .map_err(Failed)?
        {
            Next::After(d) => Action::requeue(d),
            Next::Wait => Action::await_change(),
        },
    )
}

fn ks_error(ks: Arc<Kustomization>, err: &Failed, _: Arc<Ctx>) -> Action {
    let every = interval("spec.interval", &ks.spec.interval, Duration::from_secs(600));
    let retry = ks
        .spec
        .retry_interval
        .as_deref()
        .map_or(every, |r| interval("spec.retryInterval", r, every));
    tracing::warn!(name = %ks.name_any(), namespace = ?ks.namespace(), error = %err, retry_in = ?retry, "Kustomization failed");
    Action::requeue(retry)
}

async fn reconcile_repo(repo: Arc<GitRepository>, ctx: Arc<Ctx>) -> Result<Action, Failed> {
    crate::guard::contained(reconcile_repo_inner(repo, ctx))
        .await
        .map_err(Failed)?
}

async fn reconcile_repo_inner(repo: Arc<GitRepository>, ctx: Arc<Ctx>) -> Result<Action, Failed> {
    if repo.spec.suspend == Some(true) {
        return Ok(Action::await_change());
    }
    let ns = repo.namespace().unwrap_or_default();
    let durations = crate::guard::duration_or(
        "spec.interval",
        Some(&repo.spec.interval),
        Duration::from_secs(60),
    )
    .and_then(|every| {
        let timeout = crate::guard::duration_or(
            "spec.timeout",
            repo.spec.timeout.as_deref(),
            Duration::from_secs(60),
        )?;
        Ok((every, timeout))
    });
    let (every, timeout) = match durations {
        Ok(d) => d,
        Err(message) => {
            // Told in the status; nothing to do until the object changes.
            write_repo_status(&ctx, &repo, false, "InvalidDuration", &message, None).await?;
            return Ok(Action::await_change());
        }
    };
    // The ref and URL reach git and the cache's paths: a bad one is told, never used.
    let checked = GitRef::from_spec(repo.spec.reference.as_ref())
        .and_then(|r| source::check_url(&repo.spec.url).map(|()| r));
    let r = match checked {
        Ok(r) => r,
        Err(e) => {
            write_repo_status(&ctx, &repo, false, "InvalidSpec", &e.0, None).await?;
            return Ok(Action::await_change());
        }
    };
    let auth = super::reconcile::git_auth(&ctx.api, &ns, &repo)
        .await
        .map_err(Failed)?;
    let url = repo.spec.url.clone();
    let cache = ctx.settings.cache_dir.clone();
    let res = tokio::task::spawn_blocking(move || source::fetch(&url, &r, &auth, &cache, timeout))
        .await
        .map_err(|e| Failed(e.to_string()))?;
    let (ok, reason, message, fetched) = match &res {
        Ok(f) => (
            true,
            "Succeeded",
            format!("stored artifact for revision '{}'", f.revision),
            Some(f),
        ),
        Err(e) => (false, "GitOperationFailed", e.0.clone(), None),
    };
    write_repo_status(&ctx, &repo, ok, reason, &message, fetched).await?;
    match res {
        // Up to +10 % so repositories with the same interval do not fetch in lockstep.
        Ok(_) => {
            let mut r = [0u8; 1];
            let _ = aws_lc_rs::rand::fill(&mut r);
            Ok(Action::requeue(
                every.mul_f64(1.0 + f64::from(r[0]) / 2550.0),
            ))
        }
        Err(e) => Err(Failed(e.0)),
    }
}

/// Writes a GitRepository's status when it changed: the Ready condition, and the artifact when
/// a fetch brought a new revision (only a new revision wakes the Kustomizations).
async fn write_repo_status(
    ctx: &Ctx,
    repo: &GitRepository,
    ok: bool,
    reason: &str,
    message: &str,
    fetched: Option<&source::Fetched>,
) -> Result<(), Failed> {
    let mut status = repo.status.clone().unwrap_or_default();
    status.observed_generation = repo.metadata.generation;
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    if let Some(f) = fetched
        && status.artifact.as_ref().map(|a| &a.revision) != Some(&f.revision)
    {
        status.artifact = Some(sealkit_api::Artifact {
            revision: f.revision.clone(),
            path: f.dir.display().to_string(),
            url: format!("file://{}", f.dir.display()),
            last_update_time: Some(now.clone()),
        });
    }
    let prev = status.conditions.clone().unwrap_or_default();
    let st = if ok { "True" } else { "False" };
    let last = prev
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == st)
        .map_or(now, |c| c.last_transition_time.clone());
    let mut conditions = vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        type_: "Ready".into(),
        status: st.into(),
        reason: reason.into(),
        message: message.to_string(),
        observed_generation: repo.metadata.generation,
        last_transition_time: last,
    }];
    // A spec that cannot work is not retried until it changes (kstatus: Stalled).
    if matches!(reason, "InvalidSpec" | "InvalidDuration") {
        let since = prev
            .iter()
            .find(|c| c.type_ == "Stalled" && c.status == "True")
            .map_or_else(
                || {
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::now(),
                    )
                },
                |c| c.last_transition_time.clone(),
            );
        conditions.push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: "Stalled".into(),
            status: "True".into(),
            reason: reason.into(),
            message: message.to_string(),
            observed_generation: repo.metadata.generation,
            last_transition_time: since,
        });
    }
    status.conditions = Some(conditions);
    if repo.status.as_ref() != Some(&status) {
        let body = serde_json::json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "status": status});
        ctx.api.base.acquire().await;
        Api::<GitRepository>::namespaced(
            ctx.api.base.client().clone(),
            &repo.namespace().unwrap_or_default(),
        )
        .patch_status(
            &repo.name_any(),
            &PatchParams::apply(ctx.api.base.manager()).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| Failed(e.to_string()))?;
    }
    Ok(())
}

fn repo_error(repo: Arc<GitRepository>, err: &Failed, _: Arc<Ctx>) -> Action {
    let every = interval(
        "spec.interval",
        &repo.spec.interval,
        Duration::from_secs(60),
    );
    tracing::warn!(name = %repo.name_any(), namespace = ?repo.namespace(), error = %err, "GitRepository fetch failed");
    Action::requeue(every)
}

/// Runs the GitRepository and Kustomization controllers until their streams end.
///
/// `namespace` limits both kinds to one namespace; `selector` filters them by label (so a
/// sealkit controller can run beside Flux on objects of its own).
pub async fn run(
    client: Client,
    api: KubeFlux,
    settings: GitopsSettings,
    namespace: Option<String>,
    selector: Option<String>,
) {
    let ctx = Arc::new(Ctx { api, settings });
    let (kss, repos) = match &namespace {
        Some(ns) => (
            Api::<Kustomization>::namespaced(client.clone(), ns),
            Api::<GitRepository>::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let watch = match &selector {
        Some(sel) => watcher::Config::default().labels(sel),
        None => watcher::Config::default(),
    };
    let controller = Controller::new(kss.clone(), watch.clone());
    let store = controller.store();
    let store2 = store.clone();
    let ks_loop = controller
        // A new revision of a source wakes the Kustomizations that follow it.
        .watches(
            repos.clone(),
            watcher::Config::default(),
            move |repo: GitRepository| {
                let (ns, name) = (repo.namespace().unwrap_or_default(), repo.name_any());
                store
                    .state()
                    .into_iter()
                    .filter(|k| {
                        k.spec.source_ref.kind == "GitRepository"
                            && k.spec.source_ref.name == name
                            && k.spec
                                .source_ref
                                .namespace
                                .clone()
                                .unwrap_or_else(|| k.namespace().unwrap_or_default())
                                == ns
                    })
                    .map(|k| ObjectRef::from_obj(&*k))
                    .collect::<Vec<_>>()
            },
        )
        // A dependency turning Ready wakes its dependents (no polling).
        .watches(
            kss,
            watcher::Config::default(),
            move |dep: Kustomization| {
                let (ns, name) = (dep.namespace().unwrap_or_default(), dep.name_any());
                store2
                    .state()
                    .into_iter()
                    .filter(|k| {
                        k.spec.depends_on.iter().flatten().any(|d| {
                            d.name == name
                                && d.namespace
                                    .clone()
                                    .unwrap_or_else(|| k.namespace().unwrap_or_default())
                                    == ns
                        })
                    })
                    .map(|k| ObjectRef::from_obj(&*k))
                    .collect::<Vec<_>>()
            },
        )
        .run(reconcile_ks, ks_error, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "Kustomization controller event");
            }
        });
    let repo_loop = Controller::new(repos, watch)
        .run(reconcile_repo, repo_error, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "GitRepository controller event");
            }
        });
    futures::future::join(ks_loop, repo_loop).await;
}
