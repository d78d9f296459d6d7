//! Every check the GitOps loop makes on a Kustomization and its GitRepository before it runs
//! git or touches the cluster: durations, unsupported fields, names and references (with and
//! without the tenant lockdown flags), the source kind, the Git ref and URL, the
//! `secretRef` name, the artifact path taken from status, `spec.path`, and `postBuild`
//! substitution.
//!
//! Input: YAML or JSON documents; the first Kustomization and the first GitRepository among the
//! first three are used (either may be missing).
//!
//! Invariants: no panic; a duration that passes is at most `MAX_DURATION`; what the checks say
//! about a bad value quotes a bounded part of it (status messages must fit a condition); a ref
//! that passes starts with no `-` and holds no whitespace or control character, and a commit
//! is 40 or 64 hex digits; a URL that passes starts with no `-` and holds no control
//! character; an artifact directory stays under the cache; `spec.path` that passes has no
//! `..` step and is relative; the ServiceAccount to act as is a valid object name.
#![no_main]

use std::collections::BTreeMap;
use std::path::{Component, Path};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sealkit_api::{GitRepository, Kustomization};
use sealkit_controller::gitops::reconcile::GitopsSettings;
use sealkit_controller::gitops::reconcile::build::substitute;
use sealkit_controller::gitops::reconcile::spec::fuzz_checks;
use sealkit_controller::gitops::source::{GitRef, artifact_dir, check_url};
use sealkit_controller::runtime::guard::{MAX_DURATION, duration_or};
use sealkit_controller_fuzz::documents;

/// Room for field names and fixed text around the (at most 80-character) quoted value.
const MAX_MESSAGE: usize = 1024;

fn settings() -> &'static [GitopsSettings; 2] {
    static S: OnceLock<[GitopsSettings; 2]> = OnceLock::new();
    S.get_or_init(|| {
        let open = GitopsSettings::new("/nonexistent/sealkit-fuzz-cache".into());
        let mut locked = open.clone();
        locked.no_cross_namespace_refs = true;
        locked.default_service_account = Some("tenant-apply".into());
        [open, locked]
    })
}

fn bounded(r: Result<Duration, String>) -> Option<Duration> {
    match r {
        Ok(d) => {
            assert!(d <= MAX_DURATION, "a duration over MAX_DURATION passed");
            Some(d)
        }
        Err(m) => {
            assert!(m.len() <= MAX_MESSAGE, "an unbounded duration message");
            None
        }
    }
}

fn clean_name(s: &str) -> bool {
    !s.starts_with('-') && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

fuzz_target!(|data: &[u8]| {
    let docs = documents(data, 3);
    let ks = docs
        .iter()
        .filter(|d| d.get("kind").and_then(|k| k.as_str()) == Some("Kustomization"))
        .find_map(|d| serde_json::from_value::<Kustomization>(d.clone()).ok());
    let repo = docs
        .iter()
        .filter(|d| d.get("kind").and_then(|k| k.as_str()) == Some("GitRepository"))
        .find_map(|d| serde_json::from_value::<GitRepository>(d.clone()).ok());

    if let Some(ks) = &ks {
        let s = &ks.spec;
        let interval = bounded(duration_or(
            "spec.interval",
            Some(&s.interval),
            Duration::from_secs(600),
        ))
        .unwrap_or(Duration::from_secs(600));
        bounded(duration_or(
            "spec.retryInterval",
            s.retry_interval.as_deref(),
            interval,
        ));
        bounded(duration_or("spec.timeout", s.timeout.as_deref(), interval));
        // Fields sealkit would otherwise ignore stall the object (as `run` lists them).
        let _unsupported: Vec<String> = s
            .unsupported
            .iter()
            .filter(|(k, v)| !v.is_null() && k.as_str() != "serviceAccountName")
            .map(|(k, _)| format!("spec.{k}"))
            .collect();
        // The API server only stores valid namespaces; messages quote the object's own.
        let real_namespace = ks
            .metadata
            .namespace
            .as_deref()
            .is_none_or(|n| n.len() <= 63);
        for settings in settings() {
            let (spec, path, secret_ref) = fuzz_checks(ks, repo.as_ref(), settings);
            match spec {
                Ok(Some(account)) => {
                    assert!(!account.is_empty() && account.len() <= 253 && clean_name(&account));
                    assert!(!account.contains('/'), "an account name is no path");
                }
                Ok(None) => assert!(!settings.default_service_account.is_some()),
                Err(m) => assert!(
                    !real_namespace || m.len() <= MAX_MESSAGE,
                    "an unbounded spec message"
                ),
            }
            if let Ok(rel) = path {
                assert!(!rel.starts_with('/'), "spec.path is relative");
                assert!(
                    Path::new(&rel)
                        .components()
                        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir)),
                    "spec.path stays in the source"
                );
            }
            if let Some(Err(m)) = secret_ref {
                assert!(m.len() <= MAX_MESSAGE);
            }
        }
        let _ = s.source_ref.kind == "GitRepository";
        // postBuild substitution over the object itself, with its own variables.
        if let Some(vars) = s.post_build.as_ref().and_then(|p| p.substitute.clone()) {
            let vars: BTreeMap<String, String> = vars;
            if let Ok(mut v) = serde_json::to_value(ks) {
                let _ = substitute(&mut v, &vars);
            }
        }
    }

    if let Some(repo) = &repo {
        let s = &repo.spec;
        bounded(duration_or(
            "spec.interval",
            Some(&s.interval),
            Duration::from_secs(60),
        ));
        bounded(duration_or(
            "spec.timeout",
            s.timeout.as_deref(),
            Duration::from_secs(60),
        ));
        match GitRef::from_spec(s.reference.as_ref()) {
            Ok(r) => match &r {
                GitRef::Branch(n) | GitRef::Tag(n) | GitRef::Name(n) => assert!(clean_name(n)),
                GitRef::Semver(_) => {}
                GitRef::Commit { sha, branch } => {
                    assert!(matches!(sha.len(), 40 | 64));
                    assert!(sha.bytes().all(|b| b.is_ascii_hexdigit()));
                    assert!(branch.as_deref().is_none_or(clean_name));
                }
            },
            Err(e) => assert!(
                e.to_string().len() <= MAX_MESSAGE,
                "an unbounded ref message"
            ),
        }
        match check_url(&s.url) {
            Ok(()) => {
                assert!(!s.url.starts_with('-'));
                assert!(!s.url.chars().any(char::is_control));
            }
            Err(e) => assert!(
                e.to_string().len() <= MAX_MESSAGE,
                "an unbounded URL message"
            ),
        }
        if let Some(a) = repo.status.as_ref().and_then(|st| st.artifact.as_ref()) {
            let commit = a.revision.rsplit(':').next().unwrap_or_default();
            let cache = Path::new("/nonexistent/sealkit-fuzz-cache");
            if let Ok(dir) = artifact_dir(cache, &s.url, commit) {
                assert!(dir.starts_with(cache));
                assert!(
                    dir.components().all(|c| !matches!(c, Component::ParentDir)),
                    "the artifact directory stays in the cache"
                );
            }
        }
    }
});
