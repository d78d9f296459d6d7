//! The source phase: the Kustomization's GitRepository and its artifact — the source loop's
//! when it is current and on this replica's disk (no second `ls-remote`), otherwise a fetch —
//! and the GitRepository's own reconcile (fetch on its interval, artifact and status).
//!
//! Refs and URLs reach git and paths of the cache: they are checked before any use, and a bad
//! one stalls the object, named.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::ResourceExt;
use sealkit_api::{GitRepository, Kustomization};
use sealkit_keys::secret::ExposeSecret;

use super::build::text;
use super::spec::object_name;
use super::{Failure, FluxApi, GitopsSettings, Next, failure};
use crate::gitops::source::{self as git, Fetched, GitAuth, GitError, GitRef};
use crate::runtime::conditions::{condition, now};
use crate::runtime::guard::duration_or;
use crate::runtime::requeue::jitter_up;

/// Credentials from a GitRepository's `secretRef` (a Secret of the GitRepository's namespace).
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

/// The GitRepository a Kustomization follows, and the checkout of its current revision.
pub(super) async fn artifact<A: FluxApi>(
    ks: &Kustomization,
    api: &A,
    settings: &GitopsSettings,
) -> Result<(GitRepository, Fetched), Failure> {
    let ns = ks.namespace().unwrap_or_default();
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
    let stalled = |e: GitError| Failure {
        reason: "ArtifactFailed",
        message: format!("GitRepository '{sns}/{}': {e}", src.name),
        stalled: true,
    };
    let gref = GitRef::from_spec(repo.spec.reference.as_ref()).map_err(stalled)?;
    git::check_url(&repo.spec.url).map_err(stalled)?;
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
            git::artifact_dir(&settings.cache_dir, &repo.spec.url, commit)
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
        Some(a) => Fetched {
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
            let timeout = duration_or(
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
            tokio::task::spawn_blocking(move || git::fetch(&url, &gref, &auth, &cache, timeout))
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
    Ok((repo, fetched))
}

/// Reconciles one GitRepository: checks its spec, fetches its ref (nothing when the commit is
/// unchanged), and writes its status — the artifact only on a new revision, which wakes the
/// Kustomizations that follow it. `Err` means "retry" (the status already says why).
pub async fn reconcile_repository<A: FluxApi>(
    repo: &GitRepository,
    api: &A,
    settings: &GitopsSettings,
) -> Result<Next, String> {
    if repo.spec.suspend == Some(true) {
        return Ok(Next::Wait);
    }
    let ns = repo.namespace().unwrap_or_default();
    let durations = duration_or(
        "spec.interval",
        Some(&repo.spec.interval),
        Duration::from_secs(60),
    )
    .and_then(|every| {
        let timeout = duration_or(
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
            write_repo_status(api, repo, false, "InvalidDuration", &message, None).await?;
            return Ok(Next::Wait);
        }
    };
    // The ref and URL reach git and the cache's paths: a bad one is told, never used.
    let checked = GitRef::from_spec(repo.spec.reference.as_ref())
        .and_then(|r| git::check_url(&repo.spec.url).map(|()| r));
    let r = match checked {
        Ok(r) => r,
        Err(e) => {
            write_repo_status(api, repo, false, "InvalidSpec", &e.0, None).await?;
            return Ok(Next::Wait);
        }
    };
    let auth = git_auth(api, &ns, repo).await?;
    let url = repo.spec.url.clone();
    let cache = settings.cache_dir.clone();
    let res = tokio::task::spawn_blocking(move || git::fetch(&url, &r, &auth, &cache, timeout))
        .await
        .map_err(|e| e.to_string())?;
    match &res {
        Ok(f) => {
            let msg = format!("stored artifact for revision '{}'", f.revision);
            write_repo_status(api, repo, true, "Succeeded", &msg, Some(f)).await?;
            // Up to +10 % so repositories with the same interval do not fetch in lockstep.
            Ok(Next::After(jitter_up(every, 0.1, Duration::from_secs(300))))
        }
        Err(e) => {
            write_repo_status(api, repo, false, "GitOperationFailed", &e.0, None).await?;
            Err(e.0.clone())
        }
    }
}

/// Writes a GitRepository's status when it changed: the Ready condition (and Stalled for a spec
/// that cannot work), and the artifact when a fetch brought a new revision.
async fn write_repo_status<A: FluxApi>(
    api: &A,
    repo: &GitRepository,
    ok: bool,
    reason: &str,
    message: &str,
    fetched: Option<&Fetched>,
) -> Result<(), String> {
    let mut status = repo.status.clone().unwrap_or_default();
    status.observed_generation = repo.metadata.generation;
    if let Some(f) = fetched
        && status.artifact.as_ref().map(|a| &a.revision) != Some(&f.revision)
    {
        status.artifact = Some(sealkit_api::Artifact {
            revision: f.revision.clone(),
            path: f.dir.display().to_string(),
            url: format!("file://{}", f.dir.display()),
            last_update_time: Some(now()),
        });
    }
    let prev = status.conditions.clone().unwrap_or_default();
    let generation = repo.metadata.generation;
    let mut conditions = vec![condition("Ready", ok, reason, message, generation, &prev)];
    // A spec that cannot work is not retried until it changes (kstatus: Stalled).
    if matches!(reason, "InvalidSpec" | "InvalidDuration") {
        conditions.push(condition(
            "Stalled", true, reason, message, generation, &prev,
        ));
    }
    status.conditions = Some(conditions);
    if repo.status.as_ref() == Some(&status) {
        return Ok(());
    }
    api.set_repo_status(repo, &status).await
}
