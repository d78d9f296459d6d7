//! The Kustomization reconciler: dependencies, source, render (+ decryption, substitution),
//! staged apply, prune, health, status. Every step that fails stops the reconcile before
//! anything is pruned; status and Events say which step and why, never a value.
//!
//! Tenants are not trusted (whoever may create a Kustomization or GitRepository, or push to a
//! followed repository):
//! - every name and ref that reaches a path, a URL or a git argument is validated first, and a
//!   bad one stalls the object with the field named;
//! - apply, prune and health reads run as `spec.serviceAccountName` (or
//!   `--default-service-account`) of the Kustomization's namespace, impersonated, so the
//!   tenant's RBAC decides what a repository may change; `--no-cross-namespace-refs` keeps
//!   sources and dependencies in the Kustomization's namespace;
//! - each reconcile renders in a private copy of the artifact (the sandboxed render of
//!   `sealkit-render`), never writing into the shared cache;
//! - values that came out of SOPS are redacted from every API error before it becomes a
//!   status message, an Event or a log line.

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

/// What the reconciler needs from the cluster.
pub trait FluxApi: Send + Sync {
    /// The cluster as one identity, for apply, prune and health reads.
    type Actor<'a>: ApplyApi
    where
        Self: 'a;
    /// The cluster as the controller itself (`None`) or as the ServiceAccount `(namespace,
    /// name)`, impersonated (`system:serviceaccount:<namespace>:<name>`).
    fn actor<'a>(
        &'a self,
        account: Option<(&'a str, &'a str)>,
    ) -> impl Future<Output = Result<Self::Actor<'a>, String>> + Send + 'a;
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
async fn finalize<A: FluxApi>(
    ks: &Kustomization,
    api: &A,
    settings: &GitopsSettings,
) -> Result<Next, String> {
    let finalizers = ks.finalizers().to_vec();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Next::Wait);
    }
    if ks.spec.prune && ks.spec.suspend != Some(true) {
        // Deleted as the identity that applied them: the tenant's RBAC bounds the prune too.
        let account = match service_account(ks, settings) {
            Ok(a) => a,
            Err(f) => {
                api.event(ks, true, "PruneFailed", &f.message).await;
                return Err(f.message);
            }
        };
        let ns = ks.namespace().unwrap_or_default();
        let actor = api
            .actor(account.as_deref().map(|a| (ns.as_str(), a)))
            .await?;
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
        if let Err(e) = apply::prune(&actor, &old, &mut report, &owner, &everything).await {
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
    /// `--default-service-account`: Kustomizations without `spec.serviceAccountName` apply as
    /// this ServiceAccount of their namespace (impersonated).
    pub default_service_account: Option<String>,
    /// `--no-cross-namespace-refs`: sources and dependencies only in the Kustomization's
    /// namespace.
    pub no_cross_namespace_refs: bool,
    /// `--allow-remote-bases`: kustomize may fetch remote bases and files.
    pub allow_remote_bases: bool,
}

impl GitopsSettings {
    /// Settings with fresh metrics.
    pub fn new(cache_dir: PathBuf) -> Self {
        GitopsSettings {
            cache_dir,
            metrics: Default::default(),
            default_service_account: None,
            no_cross_namespace_refs: false,
            allow_remote_bases: false,
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

/// `spec.path`, relative to the source root (`""` for the root).
fn spec_path(ks: &Kustomization) -> Result<String, String> {
    let rel = ks.spec.path.clone().unwrap_or_default();
    let rel = rel.trim_start_matches("./").trim_start_matches('/');
    if rel.split('/').any(|p| p == "..") {
        return Err(format!("spec.path {rel:?} leaves the source"));
    }
    Ok(rel.trim_end_matches('/').to_string())
}

/// What a render needs, owned (it runs on a blocking thread).
struct RenderJob {
    artifact: PathBuf,
    /// Where the private copies go (`<cache>/renders`).
    work_parent: PathBuf,
    rel: String,
    /// `spec.patches` and `spec.images`, when any.
    overlay: Option<(Vec<Value>, Vec<Value>)>,
    opts: sealkit_render::Options,
}

/// Renders in a directory of its own: the artifact is copied (a symlink out of it refused), an
/// overlay for `patches`/`images` is written into the copy, and the copy is deleted when done.
/// The shared cache is only read, so concurrent reconciles of one revision never meet.
fn render_job(job: RenderJob) -> Result<Vec<sealkit_render::Object>, Failure> {
    let build = |e: String| failure("BuildFailed", e);
    std::fs::create_dir_all(&job.work_parent)
        .map_err(|e| build(format!("cannot create a render directory: {e}")))?;
    let work = tempfile::Builder::new()
        .prefix("render-")
        .tempdir_in(&job.work_parent)
        .map_err(|e| build(format!("cannot create a render directory: {e}")))?;
    let root = work.path().join("source");
    std::fs::create_dir(&root)
        .map_err(|e| build(format!("cannot create a render directory: {e}")))?;
    sealkit_render::copy_source(&job.artifact, &root).map_err(|e| build(e.to_string()))?;
    let rel = &job.rel;
    let mut path = if rel.is_empty() {
        root.clone()
    } else {
        root.join(rel)
    };
    // The copy holds no link out of it, so plain file tests are safe here.
    if !path.exists() {
        return Err(build(format!(
            "spec.path {rel:?} does not exist in the source"
        )));
    }
    if let Some((patches, images)) = job.overlay {
        if !sealkit_render::is_kustomization(&path) {
            return Err(build("spec.patches and spec.images need a kustomization.yaml at spec.path (sealkit does not generate one yet)".into()));
        }
        let mut r = [0u8; 8];
        let _ = aws_lc_rs::rand::fill(&mut r);
        let name: String = r.iter().map(|b| format!("{b:02x}")).collect();
        let overlay = root.join(format!(".sealkit-overlay-{name}"));
        std::fs::create_dir(&overlay)
            .map_err(|e| build(format!("cannot create the overlay: {e}")))?;
        let base = if rel.is_empty() {
            "..".to_string()
        } else {
            format!("../{rel}")
        };
        let k = serde_json::json!({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [base],
            "patches": patches,
            "images": images,
        });
        std::fs::write(overlay.join("kustomization.yaml"), k.to_string())
            .map_err(|e| build(format!("cannot write the overlay: {e}")))?;
        path = overlay;
    }
    sealkit_render::render(&root, &path, &job.opts).map_err(|e| match e {
        sealkit_render::RenderError::Decrypt { .. } => failure("DecryptionFailed", e.to_string()),
        other => failure("BuildFailed", other.to_string()),
    })
}

/// A Kubernetes object name (a lowercase RFC 1123 subdomain).
fn object_name(field: &str, v: &str) -> Result<(), Failure> {
    static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
            .expect("static regex")
    });
    if v.len() <= 253 && RE.is_match(v) {
        Ok(())
    } else {
        Err(invalid(format!(
            "{field} {:?} is not a valid object name (a lowercase RFC 1123 subdomain)",
            v.chars().take(80).collect::<String>()
        )))
    }
}

/// A namespace name (a lowercase RFC 1123 label).
fn namespace_name(field: &str, v: &str) -> Result<(), Failure> {
    static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").expect("static regex")
    });
    if v.len() <= 63 && RE.is_match(v) {
        Ok(())
    } else {
        Err(invalid(format!(
            "{field} {:?} is not a valid namespace name (a lowercase RFC 1123 label)",
            v.chars().take(80).collect::<String>()
        )))
    }
}

/// A bad spec: stalled (nothing changes until the object does), the field named.
fn invalid(message: String) -> Failure {
    Failure {
        reason: "InvalidSpec",
        message,
        stalled: true,
    }
}

/// The ServiceAccount to act as: `spec.serviceAccountName`, else `--default-service-account`,
/// else none (the controller's own identity).
fn service_account(
    ks: &Kustomization,
    settings: &GitopsSettings,
) -> Result<Option<String>, Failure> {
    let named = match ks.spec.unsupported.get("serviceAccountName") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => {
            object_name("spec.serviceAccountName", s)?;
            Some(s.clone())
        }
        Some(_) => {
            return Err(invalid("spec.serviceAccountName must be a string".into()));
        }
    };
    match named {
        Some(n) => Ok(Some(n)),
        None => match &settings.default_service_account {
            Some(d) => {
                object_name("--default-service-account", d)?;
                Ok(Some(d.clone()))
            }
            None => Ok(None),
        },
    }
}

/// Refuses a reference into another namespace under `--no-cross-namespace-refs`.
fn same_namespace(
    settings: &GitopsSettings,
    field: &str,
    theirs: Option<&str>,
    ours: &str,
) -> Result<(), Failure> {
    match theirs {
        Some(t) if settings.no_cross_namespace_refs && t != ours => Err(Failure {
            reason: "AccessDenied",
            message: format!(
                "{field} {t:?}: cross-namespace references are not allowed (--no-cross-namespace-refs); use an object in namespace {ours:?}"
            ),
            stalled: true,
        }),
        _ => Ok(()),
    }
}

/// Checks every name and reference of the spec that reaches an API path, and the lockdown
/// rules; returns the ServiceAccount to act as.
fn check_spec(ks: &Kustomization, settings: &GitopsSettings) -> Result<Option<String>, Failure> {
    let ns = ks.namespace().unwrap_or_default();
    let src = &ks.spec.source_ref;
    object_name("spec.sourceRef.name", &src.name)?;
    if let Some(n) = &src.namespace {
        namespace_name("spec.sourceRef.namespace", n)?;
    }
    same_namespace(
        settings,
        "spec.sourceRef.namespace",
        src.namespace.as_deref(),
        &ns,
    )?;
    for (i, d) in ks.spec.depends_on.iter().flatten().enumerate() {
        object_name(&format!("spec.dependsOn[{i}].name"), &d.name)?;
        if let Some(n) = &d.namespace {
            namespace_name(&format!("spec.dependsOn[{i}].namespace"), n)?;
        }
        same_namespace(
            settings,
            &format!("spec.dependsOn[{i}].namespace"),
            d.namespace.as_deref(),
            &ns,
        )?;
    }
    if let Some(r) = ks
        .spec
        .decryption
        .as_ref()
        .and_then(|d| d.secret_ref.as_ref())
    {
        object_name("spec.decryption.secretRef.name", &r.name)?;
    }
    for (i, s) in ks
        .spec
        .post_build
        .iter()
        .flat_map(|p| p.substitute_from.iter().flatten())
        .enumerate()
    {
        object_name(&format!("spec.postBuild.substituteFrom[{i}].name"), &s.name)?;
    }
    for (i, h) in ks.spec.health_checks.iter().flatten().enumerate() {
        if let Some(n) = &h.namespace {
            namespace_name(&format!("spec.healthChecks[{i}].namespace"), n)?;
        }
        if !ObjRef::valid_name(&h.name) {
            return Err(invalid(format!(
                "spec.healthChecks[{i}].name {:?} is not a valid object name",
                h.name.chars().take(80).collect::<String>()
            )));
        }
    }
    service_account(ks, settings)
}

/// The private checks [`reconcile`] makes before it reads the cluster or runs git, for the
/// fuzz target `kustomization_spec` (`controller/fuzz`); not an API. Returns what
/// `check_spec` (names, references, lockdown rules; the ServiceAccount to act as), `spec_path`
/// and the GitRepository's `spec.secretRef.name` check (when a repository is given) say.
#[doc(hidden)]
#[allow(clippy::type_complexity)]
pub fn fuzz_checks(
    ks: &Kustomization,
    repo: Option<&GitRepository>,
    settings: &GitopsSettings,
) -> (
    Result<Option<String>, String>,
    Result<String, String>,
    Option<Result<(), String>>,
) {
    let secret_ref = repo.and_then(|r| r.spec.secret_ref.as_ref()).map(|r| {
        object_name("spec.secretRef.name", &r.name).map_err(|f| f.message)
    });
    (
        check_spec(ks, settings).map_err(|f| f.message),
        spec_path(ks),
        secret_ref,
    )
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
        return finalize(ks, api, settings).await;
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
        Ok((_, _, timeout)) => run(ks, api, settings, &mut status, timeout).await,
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
    timeout: Duration,
) -> Result<Option<String>, Failure> {
    let ns = ks.namespace().unwrap_or_default();
    let name = ks.name_any();
    // Fields we would otherwise silently ignore.
    let fields: Vec<String> = ks
        .spec
        .unsupported
        .iter()
        .filter(|(k, v)| !v.is_null() && k.as_str() != "serviceAccountName")
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
    // Names, references and lockdown rules before anything is read.
    let account = check_spec(ks, settings)?;
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
    // The ref and URL are checked before any use, whether or not this reconcile fetches.
    let stalled = |e: source::GitError| Failure {
        reason: "ArtifactFailed",
        message: format!("GitRepository '{sns}/{}': {e}", src.name),
        stalled: true,
    };
    let gref = GitRef::from_spec(repo.spec.reference.as_ref()).map_err(stalled)?;
    source::check_url(&repo.spec.url).map_err(stalled)?;
    if let Some(r) = &repo.spec.secret_ref {
        object_name(
            &format!("GitRepository '{sns}/{}': spec.secretRef.name", src.name),
            &r.name,
        )?;
    }
    // The source loop's artifact, when it is current and on this replica's disk: no second
    // `ls-remote` (a new revision wakes this Kustomization). Otherwise fetch here.
    // The status is not ours alone to write: its path is trusted only when it is exactly where
    // this URL's checkout of the revision's commit lives in our cache.
    let current = repo
        .status
        .as_ref()
        .filter(|st| st.observed_generation == repo.metadata.generation)
        .and_then(|st| st.artifact.as_ref())
        .filter(|a| {
            let commit = a.revision.rsplit(':').next().unwrap_or_default();
            source::artifact_dir(&settings.cache_dir, &repo.spec.url, commit)
                .is_ok_and(|d| Path::new(&a.path) == d && d.join(".sealkit-complete").is_file())
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
            let url = repo.spec.url.clone();
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
    let rel = spec_path(ks).map_err(|e| failure("BuildFailed", e))?;
    let patches = ks.spec.patches.clone().unwrap_or_default();
    let images = ks.spec.images.clone().unwrap_or_default();
    let job = RenderJob {
        artifact: fetched.dir.clone(),
        work_parent: settings.cache_dir.join("renders"),
        rel,
        overlay: (!patches.is_empty() || !images.is_empty()).then_some((patches, images)),
        opts: sealkit_render::Options {
            identities: ids,
            extra_ignore: repo.spec.ignore.clone(),
            // spec.timeout bounds the build too, within reason.
            kustomize_timeout: timeout.clamp(Duration::from_secs(30), Duration::from_secs(300)),
            allow_remote_bases: settings.allow_remote_bases,
            ..Default::default()
        },
    };
    let objects = tokio::task::spawn_blocking(move || render_job(job))
        .await
        .map_err(|e| failure("BuildFailed", e.to_string()))??;
    let mut values = Vec::with_capacity(objects.len());
    let mut redactor = sealkit_render::redact::Redactor::new();
    for mut o in objects {
        if let Some(vars) = &vars {
            substitute(&mut o.value, vars)
                .map_err(|e| failure("BuildFailed", format!("{}: {e}", o.origin)))?;
        }
        // As applied (after substitution): what an API error could quote.
        redactor.add(&o.value, &o.decrypted_paths);
        values.push(o.value);
    }
    let redactor = std::sync::Arc::new(redactor);
    // Apply, then prune, as the Kustomization's ServiceAccount when it has one.
    let actor = api
        .actor(account.as_deref().map(|a| (ns.as_str(), a)))
        .await
        .map_err(|e| failure("ReconciliationFailed", e))?;
    let opts = ApplyOptions {
        owner: (ns.clone(), name.clone()),
        target_namespace: ks.spec.target_namespace.clone().filter(|t| !t.is_empty()),
        force: ks.spec.force == Some(true),
        redactor: redactor.clone(),
    };
    let prepared = apply::prepare(&actor, values, &opts)
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
    let mut report = apply::apply_all(&actor, &prepared, &opts)
        .await
        .map_err(|e| failure("ReconciliationFailed", e.0))?;
    let old = status
        .inventory
        .clone()
        .map(|i| i.entries)
        .unwrap_or_default();
    if ks.spec.prune {
        let policy = PrunePolicy::from_annotations(ks.metadata.annotations.as_ref());
        if let Err(e) = apply::prune(&actor, &old, &mut report, &opts.owner, &policy).await {
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
    // Health messages come from the objects' status, which may quote their (decrypted) spec.
    for r in checks {
        let live = actor
            .get(&r)
            .await
            .map_err(|e| failure("HealthCheckFailed", format!("{r}: {}", redactor.redact(&e))))?;
        match live.as_ref().map(apply::health) {
            None => return Ok(Some(format!("{r} does not exist yet"))),
            Some(Health::Healthy) => {}
            Some(Health::Progressing(m)) => {
                return Ok(Some(format!("{r}: {}", redactor.redact(&m))));
            }
            Some(Health::Failed(m)) => {
                return Err(failure(
                    "HealthCheckFailed",
                    format!("{r}: {}", redactor.redact(&m)),
                ));
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
    /// What impersonated identities may touch: `system:serviceaccount:<ns>:<name>` →
    /// `(kind, namespace)` pairs. An identity not listed may touch nothing.
    pub grants: std::sync::Mutex<BTreeMap<String, Vec<(String, String)>>>,
    /// Who wrote what: `(identity, "apply|delete Kind ns/name")`; the controller's own identity
    /// is `controller`.
    pub writers: std::sync::Mutex<Vec<(String, String)>>,
}

fn lk<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// [`MemoryFlux`] as one identity: the controller (`None`, may do anything) or an
/// impersonated ServiceAccount, which may only touch what [`MemoryFlux::grants`] lists and is
/// refused otherwise with the API server's "forbidden".
pub struct MemoryActor<'a> {
    flux: &'a MemoryFlux,
    identity: Option<String>,
}

impl MemoryActor<'_> {
    fn allowed(&self, verb: &str, r: &ObjRef) -> Result<(), String> {
        let Some(who) = &self.identity else {
            return Ok(());
        };
        let ns = r.namespace.clone().unwrap_or_default();
        let ok = lk(&self.flux.grants)
            .get(who)
            .is_some_and(|g| g.iter().any(|(k, n)| *k == r.kind && *n == ns));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{}s {:?} is forbidden: User {who:?} cannot {verb} resource {:?} in API group {:?} in the namespace {ns:?}",
                r.kind.to_lowercase(),
                r.name,
                format!("{}s", r.kind.to_lowercase()),
                r.group
            ))
        }
    }

    fn who(&self) -> String {
        self.identity.clone().unwrap_or_else(|| "controller".into())
    }
}

impl ApplyApi for MemoryActor<'_> {
    async fn namespaced(&self, a: &str, k: &str) -> Result<Option<bool>, String> {
        self.flux.cluster.namespaced(a, k).await
    }
    async fn get(&self, r: &ObjRef) -> Result<Option<Value>, String> {
        self.allowed("get", r)?;
        self.flux.cluster.get(r).await
    }
    async fn apply(&self, o: &Value, dry: bool, force: bool) -> Result<Value, String> {
        self.allowed("patch", &ObjRef::of(o))?;
        let out = self.flux.cluster.apply(o, dry, force).await?;
        if !dry {
            lk(&self.flux.writers).push((self.who(), format!("apply {}", ObjRef::of(o))));
        }
        Ok(out)
    }
    async fn delete(&self, r: &ObjRef) -> Result<(), String> {
        self.allowed("delete", r)?;
        self.flux.cluster.delete(r).await?;
        lk(&self.flux.writers).push((self.who(), format!("delete {r}")));
        Ok(())
    }
}

impl FluxApi for MemoryFlux {
    type Actor<'a> = MemoryActor<'a>;
    async fn actor<'a>(
        &'a self,
        account: Option<(&'a str, &'a str)>,
    ) -> Result<MemoryActor<'a>, String> {
        Ok(MemoryActor {
            flux: self,
            identity: account.map(|(ns, n)| format!("system:serviceaccount:{ns}:{n}")),
        })
    }
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
