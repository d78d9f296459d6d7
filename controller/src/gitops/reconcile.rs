//! The Kustomization reconciler: dependencies, source, render (+ decryption, substitution),
//! staged apply, prune, health, status. Every step that fails stops the reconcile before
//! anything is pruned; status and Events say which step and why, never a value.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use sealkit_api::{GitRepository, Kustomization, KustomizationStatus};
use sealkit_keys::secret::SecretString;
use sealkit_keys::sops::keysource::AgeIdentities;
use serde_json::Value;

use super::apply::{self, ApplyApi, ApplyOptions, Health, ObjRef, PrunePolicy};
use super::source::{self, GitAuth, GitRef};

/// What the reconciler needs from the cluster besides applying.
pub trait FluxApi: ApplyApi {
    /// A GitRepository.
    fn git_repository(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<GitRepository>, String>> + Send;
    /// A Kustomization (for `dependsOn`).
    fn kustomization(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Kustomization>, String>> + Send;
    /// A Secret's data.
    fn secret_data(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<BTreeMap<String, Vec<u8>>>, String>> + Send;
    /// A ConfigMap's data.
    fn config_map_data(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<BTreeMap<String, String>>, String>> + Send;
    /// Writes the status.
    fn set_status(
        &self,
        ks: &Kustomization,
        status: &KustomizationStatus,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Records an Event.
    fn event(
        &self,
        ks: &Kustomization,
        warning: bool,
        reason: &str,
        message: &str,
    ) -> impl Future<Output = ()> + Send;
    /// Replaces the Kustomization's finalizers (optimistic: fails if it changed since `ks` was
    /// read).
    fn set_finalizers(
        &self,
        ks: &Kustomization,
        finalizers: Vec<String>,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// The finalizer that lets a deleted Kustomization with `prune: true` delete what it applied
/// (Flux's name, so objects Flux finalized are cleaned up by us after a migration, and back).
pub const FINALIZER: &str = "finalizers.fluxcd.io";

/// Deletion of a Kustomization: with `prune: true` (and not suspended), everything in its
/// inventory that still carries its labels is deleted (objects annotated
/// `kustomize.toolkit.fluxcd.io/prune: disabled` are kept), then the finalizer is removed;
/// otherwise the objects stay and only the finalizer goes. A failed delete keeps the
/// finalizer, so the next attempt finishes the job.
async fn finalize<A: FluxApi>(ks: &Kustomization, api: &A) -> Result<Next, String> {
    let finalizers = ks.finalizers().to_vec();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Next::Wait);
    }
    if ks.spec.prune && ks.spec.suspend != Some(true) {
        let old = ks
            .status
            .as_ref()
            .and_then(|s| s.inventory.as_ref())
            .map(|i| i.entries.clone())
            .unwrap_or_default();
        let owner = (ks.namespace().unwrap_or_default(), ks.name_any());
        let mut report = apply::Report::default();
        let everything = PrunePolicy {
            threshold_percent: 100,
            allow_empty: true,
        };
        if let Err(e) = apply::prune(api, &old, &mut report, &owner, &everything).await {
            let msg = format!("garbage collection on deletion failed: {e}");
            api.event(ks, true, "PruneFailed", &msg).await;
            return Err(msg);
        }
        if !report.pruned.is_empty() {
            api.event(
                ks,
                false,
                "GarbageCollected",
                &format!(
                    "deleted {} object(s) of the deleted Kustomization",
                    report.pruned.len()
                ),
            )
            .await;
        }
    }
    let rest = finalizers.into_iter().filter(|f| f != FINALIZER).collect();
    api.set_finalizers(ks, rest).await?;
    Ok(Next::Wait)
}

/// Shared settings.
#[derive(Clone)]
pub struct GitopsSettings {
    /// Where fetched revisions are kept.
    pub cache_dir: PathBuf,
    /// Metrics.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl GitopsSettings {
    /// Settings with fresh metrics.
    pub fn new(cache_dir: PathBuf) -> Self {
        GitopsSettings {
            cache_dir,
            metrics: Default::default(),
        }
    }
}

/// When to come back.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// After this long.
    After(Duration),
    /// Only when something changes.
    Wait,
}

/// Up to +5 %, so Kustomizations with the same interval do not apply in lockstep.
fn jittered(d: Duration) -> Duration {
    let mut r = [0u8; 1];
    let _ = aws_lc_rs::rand::fill(&mut r);
    d.mul_f64(1.0 + f64::from(r[0]) / 5100.0)
}

fn cond(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: i64,
    prev: &[Condition],
) -> Condition {
    let status = if ok { "True" } else { "False" }.to_string();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let last = prev
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(now);
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(generation),
        last_transition_time: last,
    }
}

/// `${var}` and `${var:=default}` in string values (not in keys); `$${var}` is an escaped
/// literal. Objects annotated `kustomize.toolkit.fluxcd.io/substitute: disabled` are skipped.
pub fn substitute(v: &mut Value, vars: &BTreeMap<String, String>) -> Result<(), String> {
    fn walk(
        v: &mut Value,
        vars: &BTreeMap<String, String>,
        re: &regex::Regex,
    ) -> Result<(), String> {
        match v {
            Value::String(s) if s.contains("${") => {
                let mut missing = None;
                let out = re.replace_all(s, |c: &regex::Captures<'_>| {
                    if c.get(1).is_some() {
                        return c[0][1..].to_string();
                    }
                    let name = &c[2];
                    match (vars.get(name), c.get(3)) {
                        (Some(v), _) => v.clone(),
                        (None, Some(d)) => d.as_str().to_string(),
                        (None, None) => {
                            missing = Some(name.to_string());
                            String::new()
                        }
                    }
                });
                if let Some(m) = missing {
                    return Err(format!(
                        "variable ${{{m}}} is not defined (postBuild.substitute / substituteFrom)"
                    ));
                }
                *s = out.into_owned();
            }
            Value::Array(a) => {
                for x in a {
                    walk(x, vars, re)?;
                }
            }
            Value::Object(m) => {
                for x in m.values_mut() {
                    walk(x, vars, re)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
    if v["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/substitute"] == "disabled" {
        return Ok(());
    }
    static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(\$)?\$\{([A-Za-z_][A-Za-z0-9_]*)(?::=([^}]*))?\}")
            .expect("static regex")
    });
    walk(v, vars, &RE)
}

fn text(b: &[u8]) -> SecretString {
    SecretString::from(
        String::from_utf8_lossy(b)
            .trim_end_matches('\n')
            .to_string(),
    )
}

/// Credentials from a GitRepository's `secretRef`.
pub(crate) async fn git_auth<A: FluxApi>(
    api: &A,
    ns: &str,
    repo: &GitRepository,
) -> Result<GitAuth, String> {
    let Some(r) = &repo.spec.secret_ref else {
        return Ok(GitAuth::default());
    };
    let data = api
        .secret_data(ns, &r.name)
        .await?
        .ok_or_else(|| format!("GitRepository secretRef: Secret {ns}/{} not found", r.name))?;
    let get = |k: &str| data.get(k).map(|v| text(v));
    use sealkit_keys::secret::ExposeSecret;
    Ok(GitAuth {
        basic: match (get("username"), get("password")) {
            (Some(u), Some(p)) => Some((u.expose_secret().to_string(), p)),
            _ => None,
        },
        bearer: get("bearerToken"),
        ssh_identity: get("identity"),
        known_hosts: get("known_hosts").map(|k| k.expose_secret().to_string()),
    })
}

async fn identities<A: FluxApi>(
    api: &A,
    ks: &Kustomization,
) -> Result<Option<AgeIdentities>, String> {
    let Some(d) = &ks.spec.decryption else {
        return Ok(None);
    };
    if d.provider != "sops" {
        return Err(format!(
            "decryption.provider {:?} is not supported (use sops)",
            d.provider
        ));
    }
    let Some(r) = &d.secret_ref else {
        return Ok(None);
    };
    let ns = ks.namespace().unwrap_or_default();
    let data = api
        .secret_data(&ns, &r.name)
        .await?
        .ok_or_else(|| format!("decryption.secretRef: Secret {ns}/{} not found", r.name))?;
    let mut ids = AgeIdentities::parse("").map_err(|e| e.to_string())?;
    for (k, v) in data.iter().filter(|(k, _)| k.ends_with(".agekey")) {
        let batch = AgeIdentities::parse(&String::from_utf8_lossy(v))
            .map_err(|e| format!("decryption.secretRef {ns}/{} key {k}: {e}", r.name))?;
        ids.extend(batch);
    }
    if ids.is_empty() {
        return Err(format!(
            "decryption.secretRef {ns}/{} has no *.agekey entry",
            r.name
        ));
    }
    Ok(Some(ids))
}

async fn variables<A: FluxApi>(
    api: &A,
    ks: &Kustomization,
) -> Result<Option<BTreeMap<String, String>>, String> {
    let Some(pb) = &ks.spec.post_build else {
        return Ok(None);
    };
    let ns = ks.namespace().unwrap_or_default();
    let mut vars = BTreeMap::new();
    for s in pb.substitute_from.iter().flatten() {
        let data: Option<BTreeMap<String, String>> = match s.kind.as_str() {
            "ConfigMap" => api.config_map_data(&ns, &s.name).await?,
            "Secret" => api.secret_data(&ns, &s.name).await?.map(|d| {
                d.into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect()
            }),
            other => {
                return Err(format!(
                    "postBuild.substituteFrom kind {other:?} is not ConfigMap or Secret"
                ));
            }
        };
        match data {
            Some(d) => vars.extend(d),
            None if s.optional == Some(true) => {}
            None => {
                return Err(format!(
                    "postBuild.substituteFrom: {} {ns}/{} not found",
                    s.kind, s.name
                ));
            }
        }
    }
    vars.extend(pb.substitute.clone().unwrap_or_default());
    Ok(Some(vars))
}

/// The path to render: `spec.path` inside the artifact, and an overlay when `patches` or
/// `images` are set.
fn render_path(dir: &Path, ks: &Kustomization) -> Result<PathBuf, String> {
    let rel = ks.spec.path.clone().unwrap_or_default();
    let rel = rel.trim_start_matches("./").trim_start_matches('/');
    if rel.split('/').any(|p| p == "..") {
        return Err(format!("spec.path {rel:?} leaves the source"));
    }
    let path = if rel.is_empty() {
        dir.to_path_buf()
    } else {
        dir.join(rel)
    };
    if !path.exists() {
        return Err(format!("spec.path {rel:?} does not exist in the source"));
    }
    let patches = ks.spec.patches.clone().unwrap_or_default();
    let images = ks.spec.images.clone().unwrap_or_default();
    if patches.is_empty() && images.is_empty() {
        return Ok(path);
    }
    if !sealkit_render::is_kustomization(&path) {
        return Err("spec.patches and spec.images need a kustomization.yaml at spec.path (sealkit does not generate one yet)".into());
    }
    let overlay = dir.join(format!(".sealkit-overlay-{}", ks.name_any()));
    std::fs::create_dir_all(&overlay).map_err(|e| format!("cannot create the overlay: {e}"))?;
    let k = serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [format!("../{rel}")],
        "patches": patches,
        "images": images,
    });
    std::fs::write(overlay.join("kustomization.yaml"), k.to_string())
        .map_err(|e| format!("cannot write the overlay: {e}"))?;
    Ok(overlay)
}

struct Failure {
    reason: &'static str,
    message: String,
    stalled: bool,
}

fn failure(reason: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        reason,
        message: message.into(),
        stalled: false,
    }
}

/// Reconciles one Kustomization.
pub async fn reconcile<A: FluxApi>(
    ks: &Kustomization,
    api: &A,
    settings: &GitopsSettings,
) -> Result<Next, String> {
    if ks.metadata.deletion_timestamp.is_some() {
        return finalize(ks, api).await;
    }
    if ks.spec.suspend == Some(true) {
        return Ok(Next::Wait);
    }
    // The finalizer goes on before anything is applied, so nothing applied can be orphaned by
    // a deletion.
    if !ks.finalizers().iter().any(|f| f == FINALIZER) {
        let mut f = ks.finalizers().to_vec();
        f.push(FINALIZER.to_string());
        api.set_finalizers(ks, f).await?;
    }
    // Durations are checked before any arithmetic; a bad one stalls this object, with why.
    let durations = (|| {
        let interval = crate::guard::duration_or(
            "spec.interval",
            Some(&ks.spec.interval),
            Duration::from_secs(600),
        )?;
        let retry = crate::guard::duration_or(
            "spec.retryInterval",
            ks.spec.retry_interval.as_deref(),
            interval,
        )?;
        let timeout =
            crate::guard::duration_or("spec.timeout", ks.spec.timeout.as_deref(), interval)?;
        Ok::<_, String>((interval, retry, timeout))
    })();
    let (interval, retry, timeout) = durations.clone().unwrap_or((
        Duration::from_secs(600),
        Duration::from_secs(600),
        Duration::from_secs(600),
    ));
    let generation = ks.metadata.generation.unwrap_or(0);
    let prev = ks.status.clone().unwrap_or_default();
    let prev_conds = prev.conditions.clone().unwrap_or_default();
    let mut status = prev.clone();
    status.observed_generation = Some(generation);
    let started = std::time::Instant::now();
    let result = match durations {
        Ok(_) => run(ks, api, settings, &mut status).await,
        Err(message) => Err(Failure {
            reason: "InvalidDuration",
            message,
            stalled: true,
        }),
    };
    settings
        .metrics
        .gitops_reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(healthy) => {
            let rev = status.last_applied_revision.clone().unwrap_or_default();
            let (ready, reason, msg) = match &healthy {
                None => (
                    true,
                    "ReconciliationSucceeded",
                    format!("Applied revision: {rev}"),
                ),
                Some(h) => (false, "HealthCheckFailed", h.clone()),
            };
            // How long the objects have been unhealthy (since Healthy turned False).
            let unhealthy_for = prev_conds
                .iter()
                .find(|c| c.type_ == "Healthy" && c.status == "False")
                .and_then(|c| {
                    let since = c.last_transition_time.0.as_second();
                    let now = k8s_openapi::jiff::Timestamp::now().as_second();
                    u64::try_from(now - since).ok()
                })
                .map(Duration::from_secs);
            let timed_out = healthy.is_some() && unhealthy_for.is_some_and(|d| d >= timeout);
            let msg = if timed_out {
                format!(
                    "health check timed out after {}: {msg}",
                    humantime::format_duration(timeout)
                )
            } else {
                msg
            };
            status.conditions = Some(vec![
                cond("Ready", ready, reason, &msg, generation, &prev_conds),
                cond(
                    "Healthy",
                    healthy.is_none(),
                    if healthy.is_none() {
                        "Succeeded"
                    } else {
                        "Progressing"
                    },
                    &msg,
                    generation,
                    &prev_conds,
                ),
                cond(
                    "Reconciling",
                    false,
                    "Succeeded",
                    "",
                    generation,
                    &prev_conds,
                ),
                cond("Stalled", false, "Succeeded", "", generation, &prev_conds),
            ]);
            api.set_status(ks, &status).await?;
            Ok(Next::After(if timed_out {
                retry
            } else if healthy.is_some() {
                Duration::from_secs(10).min(interval)
            } else {
                jittered(interval)
            }))
        }
        Err(f) => {
            status.conditions = Some(vec![
                cond(
                    "Ready",
                    false,
                    f.reason,
                    &f.message,
                    generation,
                    &prev_conds,
                ),
                cond(
                    "Reconciling",
                    false,
                    f.reason,
                    &f.message,
                    generation,
                    &prev_conds,
                ),
                cond(
                    "Stalled",
                    f.stalled,
                    f.reason,
                    if f.stalled { &f.message } else { "" },
                    generation,
                    &prev_conds,
                ),
            ]);
            api.event(ks, true, f.reason, &f.message).await;
            api.set_status(ks, &status).await?;
            if f.stalled {
                Ok(Next::Wait)
            } else if f.reason == "DependencyNotReady" {
                Ok(Next::After(Duration::from_secs(30).min(retry)))
            } else {
                Err(f.message)
            }
        }
    }
}

/// The steps; `Ok(Some(msg))` when applied but not yet healthy.
async fn run<A: FluxApi>(
    ks: &Kustomization,
    api: &A,
    settings: &GitopsSettings,
    status: &mut KustomizationStatus,
) -> Result<Option<String>, Failure> {
    let ns = ks.namespace().unwrap_or_default();
    let name = ks.name_any();
    // Dependencies first.
    for d in ks.spec.depends_on.iter().flatten() {
        let dns = d.namespace.clone().unwrap_or_else(|| ns.clone());
        let dep = api
            .kustomization(&dns, &d.name)
            .await
            .map_err(|e| failure("DependencyNotReady", e))?;
        let ready = dep.as_ref().is_some_and(|k| {
            k.status.as_ref().is_some_and(|s| {
                s.observed_generation == k.metadata.generation
                    && s.conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        });
        if !ready {
            return Err(failure(
                "DependencyNotReady",
                format!("dependency '{dns}/{}' is not ready", d.name),
            ));
        }
    }
    // Fields we would otherwise silently ignore.
    let fields: Vec<String> = ks
        .spec
        .unsupported
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, _)| format!("spec.{k}"))
        .collect();
    if !fields.is_empty() {
        return Err(Failure {
            reason: "UnsupportedField",
            message: format!(
                "{} not supported by sealkit: remove it or reconcile this Kustomization with Flux",
                fields.join(", ")
            ),
            stalled: true,
        });
    }
    // Source.
    let src = &ks.spec.source_ref;
    if src.kind != "GitRepository" {
        return Err(Failure {
            reason: "ArtifactFailed",
            message: format!(
                "sourceRef.kind {:?} is not supported (sealkit follows GitRepository sources)",
                src.kind
            ),
            stalled: true,
        });
    }
    let sns = src.namespace.clone().unwrap_or_else(|| ns.clone());
    let repo = api
        .git_repository(&sns, &src.name)
        .await
        .map_err(|e| failure("ArtifactFailed", e))?
        .ok_or_else(|| {
            failure(
                "ArtifactFailed",
                format!("GitRepository '{sns}/{}' not found", src.name),
            )
        })?;
    if !repo.spec.unsupported.is_empty() {
        let fields: Vec<String> = repo
            .spec
            .unsupported
            .keys()
            .map(|k| format!("spec.{k}"))
            .collect();
        return Err(Failure {
            reason: "ArtifactFailed",
            message: format!(
                "GitRepository '{sns}/{}': {} not supported by sealkit",
                src.name,
                fields.join(", ")
            ),
            stalled: true,
        });
    }
    // The source loop's artifact, when it is current and on this replica's disk: no second
    // `ls-remote` (a new revision wakes this Kustomization). Otherwise fetch here.
    let current = repo
        .status
        .as_ref()
        .filter(|st| st.observed_generation == repo.metadata.generation)
        .and_then(|st| st.artifact.as_ref())
        .filter(|a| {
            let dir = Path::new(&a.path);
            dir.starts_with(&settings.cache_dir) && dir.join(".sealkit-complete").is_file()
        });
    if repo.spec.suspend == Some(true) && current.is_none() {
        return Err(failure(
            "ArtifactFailed",
            format!(
                "GitRepository '{sns}/{}' is suspended and has no artifact on this replica",
                src.name
            ),
        ));
    }
    let fetched = match current {
        Some(a) => source::Fetched {
            revision: a.revision.clone(),
            commit: a
                .revision
                .rsplit(':')
                .next()
                .unwrap_or_default()
                .to_string(),
            dir: PathBuf::from(&a.path),
            fetched: false,
        },
        None => {
            let auth = git_auth(api, &sns, &repo)
                .await
                .map_err(|e| failure("ArtifactFailed", e))?;
            let (url, gref) = (
                repo.spec.url.clone(),
                GitRef::from_spec(repo.spec.reference.as_ref()),
            );
            let timeout = crate::guard::duration_or(
                "spec.timeout",
                repo.spec.timeout.as_deref(),
                Duration::from_secs(60),
            )
            .map_err(|e| Failure {
                reason: "ArtifactFailed",
                message: format!("GitRepository '{sns}/{}': {e}", src.name),
                stalled: true,
            })?;
            let cache = settings.cache_dir.clone();
            tokio::task::spawn_blocking(move || source::fetch(&url, &gref, &auth, &cache, timeout))
                .await
                .map_err(|e| failure("ArtifactFailed", e.to_string()))?
                .map_err(|e| {
                    failure(
                        "ArtifactFailed",
                        format!("GitRepository '{sns}/{}': {e}", src.name),
                    )
                })?
        }
    };
    status.last_attempted_revision = Some(fetched.revision.clone());
    // Render, decrypt, substitute.
    let ids = identities(api, ks)
        .await
        .map_err(|e| failure("DecryptionFailed", e))?;
    let vars = variables(api, ks)
        .await
        .map_err(|e| failure("BuildFailed", e))?;
    let path = render_path(&fetched.dir, ks).map_err(|e| failure("BuildFailed", e))?;
    let root = fetched.dir.clone();
    let ignore = repo.spec.ignore.clone();
    let objects = tokio::task::spawn_blocking(move || {
        let opts = sealkit_render::Options {
            identities: ids,
            extra_ignore: ignore,
            ..Default::default()
        };
        sealkit_render::render(&root, &path, &opts)
    })
    .await
    .map_err(|e| failure("BuildFailed", e.to_string()))?
    .map_err(|e| match e {
        sealkit_render::RenderError::Decrypt { .. } => failure("DecryptionFailed", e.to_string()),
        other => failure("BuildFailed", other.to_string()),
    })?;
    let mut values = Vec::with_capacity(objects.len());
    for mut o in objects {
        if let Some(vars) = &vars {
            substitute(&mut o.value, vars)
                .map_err(|e| failure("BuildFailed", format!("{}: {e}", o.origin)))?;
        }
        values.push(o.value);
    }
    // Apply, then prune.
    let opts = ApplyOptions {
        owner: (ns.clone(), name.clone()),
        target_namespace: ks.spec.target_namespace.clone().filter(|t| !t.is_empty()),
        force: ks.spec.force == Some(true),
    };
    let prepared = apply::prepare(api, values, &opts)
        .await
        .map_err(|e| failure("ReconciliationFailed", e.0))?;
    let count = |action: &str, n: usize| {
        settings
            .metrics
            .gitops_objects
            .get_or_create(&crate::metrics::ActionLabels {
                action: action.into(),
            })
            .inc_by(n as u64);
    };
    let mut report = apply::apply_all(api, &prepared, &opts)
        .await
        .map_err(|e| failure("ReconciliationFailed", e.0))?;
    let old = status
        .inventory
        .clone()
        .map(|i| i.entries)
        .unwrap_or_default();
    if ks.spec.prune {
        let policy = PrunePolicy::from_annotations(ks.metadata.annotations.as_ref());
        if let Err(e) = apply::prune(api, &old, &mut report, &opts.owner, &policy).await {
            // Applied but not pruned: keep the old entries still in the cluster in the inventory.
            let mut inv = report.inventory.clone();
            inv.extend(
                old.iter()
                    .filter(|e| !report.inventory.contains(e))
                    .cloned(),
            );
            inv.sort();
            status.inventory = Some(sealkit_api::Inventory { entries: inv });
            return Err(failure("PruneFailed", e.0));
        }
    }
    count("created", report.created.len());
    count("configured", report.configured.len());
    count("unchanged", report.unchanged);
    count("pruned", report.pruned.len());
    status.inventory = Some(sealkit_api::Inventory {
        entries: report.inventory.clone(),
    });
    status.last_applied_revision = Some(fetched.revision.clone());
    if !report.created.is_empty() || !report.configured.is_empty() || !report.pruned.is_empty() {
        let msg = format!(
            "{}: {} created, {} configured, {} pruned, {} unchanged{}",
            fetched.revision,
            report.created.len(),
            report.configured.len(),
            report.pruned.len(),
            report.unchanged,
            if report.kept.is_empty() {
                String::new()
            } else {
                format!("; kept: {}", report.kept.join(", "))
            }
        );
        api.event(ks, false, "ReconciliationSucceeded", &msg).await;
    }
    // Health.
    let mut checks: Vec<ObjRef> = ks
        .spec
        .health_checks
        .iter()
        .flatten()
        .map(|h| {
            let api_version = h.api_version.clone().unwrap_or_else(|| "v1".into());
            ObjRef::of(&serde_json::json!({"apiVersion": api_version, "kind": h.kind,
                "metadata": {"name": h.name, "namespace": h.namespace.clone().unwrap_or_else(|| ns.clone())}}))
        })
        .collect();
    if ks.spec.wait == Some(true) {
        checks.extend(prepared.iter().map(ObjRef::of));
    }
    for r in checks {
        let live = api
            .get(&r)
            .await
            .map_err(|e| failure("HealthCheckFailed", e))?;
        match live.as_ref().map(apply::health) {
            None => return Ok(Some(format!("{r} does not exist yet"))),
            Some(Health::Healthy) => {}
            Some(Health::Progressing(m)) => return Ok(Some(format!("{r}: {m}"))),
            Some(Health::Failed(m)) => {
                return Err(failure("HealthCheckFailed", format!("{r}: {m}")));
            }
        }
    }
    Ok(None)
}

/// An in-memory cluster for the sync loop: [`MemoryCluster`](super::apply::MemoryCluster) plus
/// sources, Kustomizations, Secrets, statuses and Events.
#[derive(Default)]
pub struct MemoryFlux {
    /// Applied objects.
    pub cluster: super::apply::MemoryCluster,
    /// GitRepositories by `ns/name`.
    pub repos: std::sync::Mutex<BTreeMap<String, GitRepository>>,
    /// Kustomizations by `ns/name`.
    pub kss: std::sync::Mutex<BTreeMap<String, Kustomization>>,
    /// Secret data by `ns/name`.
    pub secrets: std::sync::Mutex<BTreeMap<String, BTreeMap<String, Vec<u8>>>>,
    /// Statuses by Kustomization name.
    pub statuses: std::sync::Mutex<BTreeMap<String, KustomizationStatus>>,
    /// Events as `reason: message`.
    pub events: std::sync::Mutex<Vec<String>>,
    /// Finalizers by Kustomization name.
    pub finalizers: std::sync::Mutex<BTreeMap<String, Vec<String>>>,
}

fn lk<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ApplyApi for MemoryFlux {
    async fn namespaced(&self, a: &str, k: &str) -> Result<Option<bool>, String> {
        self.cluster.namespaced(a, k).await
    }
    async fn get(&self, r: &ObjRef) -> Result<Option<Value>, String> {
        self.cluster.get(r).await
    }
    async fn apply(&self, o: &Value, dry: bool, force: bool) -> Result<Value, String> {
        self.cluster.apply(o, dry, force).await
    }
    async fn delete(&self, r: &ObjRef) -> Result<(), String> {
        self.cluster.delete(r).await
    }
}

impl FluxApi for MemoryFlux {
    async fn git_repository(&self, ns: &str, name: &str) -> Result<Option<GitRepository>, String> {
        Ok(lk(&self.repos).get(&format!("{ns}/{name}")).cloned())
    }
    async fn kustomization(&self, ns: &str, name: &str) -> Result<Option<Kustomization>, String> {
        Ok(lk(&self.kss).get(&format!("{ns}/{name}")).cloned())
    }
    async fn secret_data(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        Ok(lk(&self.secrets).get(&format!("{ns}/{name}")).cloned())
    }
    async fn config_map_data(
        &self,
        _: &str,
        _: &str,
    ) -> Result<Option<BTreeMap<String, String>>, String> {
        Ok(None)
    }
    async fn set_status(&self, ks: &Kustomization, st: &KustomizationStatus) -> Result<(), String> {
        lk(&self.statuses).insert(ks.name_any(), st.clone());
        Ok(())
    }
    async fn event(&self, _: &Kustomization, _: bool, reason: &str, message: &str) {
        lk(&self.events).push(format!("{reason}: {message}"));
    }
    async fn set_finalizers(&self, ks: &Kustomization, f: Vec<String>) -> Result<(), String> {
        lk(&self.finalizers).insert(ks.name_any(), f);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
