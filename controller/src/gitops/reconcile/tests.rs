//! The Kustomization reconciler end to end against a real Git repository (file://), the real
//! `kubectl kustomize`, SOPS files of the example repository, and the in-memory cluster.

use std::path::Path;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use super::*;
use crate::gitops::memory::{MemoryCluster, MemoryFlux};
use crate::gitops::reconcile::build::substitute;
use crate::gitops::testutil::{commit_all, git};

type Flux = MemoryFlux;

fn lk<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("dir").flatten() {
        let (p, t) = (e.path(), to.join(e.file_name()));
        if p.is_dir() {
            copy_dir(&p, &t);
        } else {
            std::fs::copy(&p, &t).expect("copy");
        }
    }
}

struct Setup {
    repo: tempfile::TempDir,
    _cache: tempfile::TempDir,
    flux: Flux,
    settings: GitopsSettings,
}

fn setup() -> Setup {
    let repo = tempfile::tempdir().expect("repo");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/gitops"),
        repo.path(),
    );
    git(repo.path(), &["init", "-q", "-b", "main"]);
    commit_all(repo.path(), "example");
    let flux = Flux {
        cluster: MemoryCluster::new(),
        ..Default::default()
    };
    let gr: GitRepository = serde_json::from_value(serde_json::json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": "gitops", "namespace": "flux-system"},
        "spec": {"interval": "1m", "url": format!("file://{}", repo.path().display()), "ref": {"branch": "main"}}
    }))
    .expect("gr");
    lk(&flux.repos).insert("flux-system/gitops".into(), gr);
    let key = std::fs::read(repo.path().join("keys/example.agekey")).expect("key");
    lk(&flux.secrets).insert(
        "flux-system/sops-age".into(),
        BTreeMap::from([("age.agekey".to_string(), key)]),
    );
    let cache = tempfile::tempdir().expect("cache");
    let settings = GitopsSettings::new(cache.path().to_path_buf());
    Setup {
        repo,
        _cache: cache,
        flux,
        settings,
    }
}

fn ks(path: &str, extra: Value) -> Kustomization {
    let mut spec = serde_json::json!({
        "interval": "10m", "path": path, "prune": true,
        "sourceRef": {"kind": "GitRepository", "name": "gitops"},
        "decryption": {"provider": "sops", "secretRef": {"name": "sops-age"}}
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "apps", "namespace": "flux-system", "generation": 1}, "spec": spec
    }))
    .expect("ks")
}

fn observed(f: &Flux, k: &Kustomization) -> Kustomization {
    let mut k = k.clone();
    k.status = lk(&f.statuses).get(&k.name_any()).cloned();
    k
}

fn ready(f: &Flux) -> (String, String, String) {
    let st = lk(&f.statuses).get("apps").cloned().expect("status");
    let c = st
        .conditions
        .expect("conditions")
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("ready");
    (c.status, c.reason, c.message)
}

#[tokio::test]
async fn commit_applies_changes_prune_and_no_op_resync() {
    let s = setup();
    let k = ks("./apps/overlays/staging", serde_json::json!({}));
    reconcile(&k, &s.flux, &s.settings).await.expect("first");
    let (st, _, msg) = ready(&s.flux);
    assert_eq!(st, "True", "{msg}");
    assert!(msg.starts_with("Applied revision: main@sha1:"), "{msg}");
    let secret = s
        .flux
        .cluster
        .live("Secret", Some("podinfo-staging"), "db-credentials")
        .expect("secret");
    assert_eq!(
        secret["stringData"]["DB_PASSWORD"], "example-staging-password-change-me",
        "decrypted before apply"
    );
    assert!(secret.get("sops").is_none());
    assert!(
        s.flux
            .cluster
            .live("SealedSecret", Some("podinfo-staging"), "api-token")
            .is_some()
    );
    assert_eq!(
        s.flux
            .cluster
            .live("Deployment", Some("podinfo-staging"), "podinfo")
            .expect("dep")["spec"]["replicas"],
        1
    );
    for e in lk(&s.flux.events).iter() {
        assert!(!e.contains("password-change-me"), "{e}");
    }

    let metrics = s.settings.metrics.encode();
    assert!(
        metrics.contains("sealkit_gitops_objects_total{action=\"created\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sealkit_kustomization_reconcile_duration_seconds_count 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("password"), "no values in metrics");

    // No change: zero writes.
    let writes = s.flux.cluster.writes();
    reconcile(&observed(&s.flux, &k), &s.flux, &s.settings)
        .await
        .expect("resync");
    assert_eq!(
        s.flux.cluster.writes(),
        writes,
        "a no-op resync writes nothing"
    );

    // Replicas changed in Git.
    let kz = s
        .repo
        .path()
        .join("apps/overlays/staging/kustomization.yaml");
    let text = std::fs::read_to_string(&kz)
        .expect("read")
        .replace("value: 1", "value: 2");
    std::fs::write(&kz, text.replace("  - api-token.sealed.yaml\n", "")).expect("write");
    commit_all(s.repo.path(), "two replicas, no api token");
    reconcile(&observed(&s.flux, &k), &s.flux, &s.settings)
        .await
        .expect("update");
    assert_eq!(
        s.flux
            .cluster
            .live("Deployment", Some("podinfo-staging"), "podinfo")
            .expect("dep")["spec"]["replicas"],
        2
    );
    assert!(
        s.flux
            .cluster
            .live("SealedSecret", Some("podinfo-staging"), "api-token")
            .is_none(),
        "removed from Git: pruned"
    );

    // Drift: a hand edit is reverted on the next interval.
    lk(&s.flux.cluster.objects).values_mut().for_each(|v| {
        if v["kind"] == "Deployment" {
            v["spec"]["replicas"] = 9.into();
        }
    });
    reconcile(&observed(&s.flux, &k), &s.flux, &s.settings)
        .await
        .expect("drift");
    assert_eq!(
        s.flux
            .cluster
            .live("Deployment", Some("podinfo-staging"), "podinfo")
            .expect("dep")["spec"]["replicas"],
        2
    );
}

#[tokio::test]
async fn failures_apply_nothing_and_prune_nothing() {
    let s = setup();
    let k = ks("./apps/overlays/staging", serde_json::json!({}));
    reconcile(&k, &s.flux, &s.settings).await.expect("first");
    let before = lk(&s.flux.cluster.objects).len();

    // An empty render never prunes.
    std::fs::write(
        s.repo
            .path()
            .join("apps/overlays/staging/kustomization.yaml"),
        "resources: []\n",
    )
    .expect("write");
    commit_all(s.repo.path(), "empty");
    assert!(
        reconcile(&observed(&s.flux, &k), &s.flux, &s.settings)
            .await
            .is_err()
    );
    assert_eq!(ready(&s.flux).1, "PruneFailed");
    assert!(ready(&s.flux).2.contains("render is empty"));
    assert_eq!(lk(&s.flux.cluster.objects).len(), before);
    git(s.repo.path(), &["revert", "--no-edit", "HEAD"]);

    // Without the decryption key: nothing applied, the old objects stay.
    lk(&s.flux.secrets).clear();
    let writes = s.flux.cluster.writes();
    assert!(
        reconcile(&observed(&s.flux, &k), &s.flux, &s.settings)
            .await
            .is_err()
    );
    assert_eq!(ready(&s.flux).1, "DecryptionFailed");
    assert_eq!(s.flux.cluster.writes(), writes);

    // Invalid YAML in Git: named, nothing applied.
    let s2 = setup();
    std::fs::write(
        s2.repo.path().join("apps/base/podinfo/service.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: [\n",
    )
    .expect("write");
    commit_all(s2.repo.path(), "broken");
    assert!(reconcile(&k, &s2.flux, &s2.settings).await.is_err());
    let (_, reason, msg) = ready(&s2.flux);
    assert_eq!(reason, "BuildFailed");
    assert!(msg.contains("kustomize"), "{msg}");
    assert_eq!(s2.flux.cluster.writes(), 0);

    // Unreachable repository and a missing path.
    lk(&s2.flux.repos)
        .get_mut("flux-system/gitops")
        .expect("gr")
        .spec
        .url = "file:///nonexistent/repo".into();
    assert!(reconcile(&k, &s2.flux, &s2.settings).await.is_err());
    assert_eq!(ready(&s2.flux).1, "ArtifactFailed");
    let s3 = setup();
    assert!(
        reconcile(&ks("./nope", serde_json::json!({})), &s3.flux, &s3.settings)
            .await
            .is_err()
    );
    assert!(ready(&s3.flux).2.contains("does not exist"));
}

#[tokio::test]
async fn depends_on_substitution_and_plain_directories() {
    let s = setup();
    let waiting = ks(
        "./apps/overlays/staging",
        serde_json::json!({"dependsOn": [{"name": "infra"}]}),
    );
    assert!(matches!(
        reconcile(&waiting, &s.flux, &s.settings).await,
        Ok(Next::After(_))
    ));
    assert_eq!(ready(&s.flux).1, "DependencyNotReady");
    assert_eq!(s.flux.cluster.writes(), 0);

    std::fs::create_dir_all(s.repo.path().join("plain")).expect("mkdir");
    std::fs::write(
        s.repo.path().join("plain/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  region: ${region}\n  tier: ${tier:=gold}\n  literal: $${kept}\n",
    )
    .expect("write");
    commit_all(s.repo.path(), "plain");
    let k = ks(
        "./plain",
        serde_json::json!({"targetNamespace": "team-a", "postBuild": {"substitute": {"region": "eu-west-1"}}}),
    );
    reconcile(&k, &s.flux, &s.settings).await.expect("plain");
    let cm = s
        .flux
        .cluster
        .live("ConfigMap", Some("team-a"), "settings")
        .expect("cm");
    assert_eq!(
        cm["data"],
        serde_json::json!({"region": "eu-west-1", "tier": "gold", "literal": "${kept}"})
    );
    let mut v = serde_json::json!({"a": "${missing}"});
    assert!(
        substitute(&mut v, &BTreeMap::new())
            .unwrap_err()
            .contains("missing")
    );
}

#[tokio::test]
async fn unsupported_fields_are_reported_not_ignored_and_spec_ignore_applies() {
    let s = setup();
    let k = ks(
        "./apps/overlays/staging",
        serde_json::json!({"kubeConfig": {"secretRef": {"name": "remote"}}}),
    );
    assert!(
        matches!(reconcile(&k, &s.flux, &s.settings).await, Ok(Next::Wait)),
        "stalled: no retry storm"
    );
    let (st, reason, msg) = ready(&s.flux);
    assert_eq!(
        (st.as_str(), reason.as_str()),
        ("False", "UnsupportedField")
    );
    assert!(msg.contains("spec.kubeConfig"), "{msg}");
    assert_eq!(s.flux.cluster.writes(), 0);

    lk(&s.flux.repos)
        .get_mut("flux-system/gitops")
        .expect("gr")
        .spec
        .unsupported
        .insert("recurseSubmodules".into(), serde_json::json!(true));
    let k = ks("./apps/overlays/staging", serde_json::json!({}));
    assert!(matches!(
        reconcile(&k, &s.flux, &s.settings).await,
        Ok(Next::Wait)
    ));
    assert!(ready(&s.flux).2.contains("spec.recurseSubmodules"));

    // spec.ignore: extra .sourceignore patterns.
    let s2 = setup();
    std::fs::create_dir_all(s2.repo.path().join("plain")).expect("mkdir");
    for n in ["keep", "skip"] {
        std::fs::write(
            s2.repo.path().join(format!("plain/{n}.yaml")),
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {n}\n"),
        )
        .expect("write");
    }
    commit_all(s2.repo.path(), "plain");
    lk(&s2.flux.repos)
        .get_mut("flux-system/gitops")
        .expect("gr")
        .spec
        .ignore = Some("skip.yaml\n".into());
    reconcile(
        &ks("./plain", serde_json::json!({"targetNamespace": "t"})),
        &s2.flux,
        &s2.settings,
    )
    .await
    .expect("plain");
    assert!(
        s2.flux
            .cluster
            .live("ConfigMap", Some("t"), "keep")
            .is_some()
    );
    assert!(
        s2.flux
            .cluster
            .live("ConfigMap", Some("t"), "skip")
            .is_none()
    );
}

#[tokio::test]
async fn wait_reports_health_and_times_out() {
    let s = setup();
    let k = ks(
        "./apps/overlays/staging",
        serde_json::json!({"wait": true, "timeout": "1s"}),
    );
    assert!(
        matches!(reconcile(&k, &s.flux, &s.settings).await, Ok(Next::After(d)) if d <= Duration::from_secs(10))
    );
    let (st, reason, msg) = ready(&s.flux);
    assert_eq!(
        (st.as_str(), reason.as_str()),
        ("False", "HealthCheckFailed")
    );
    assert!(msg.contains("Deployment podinfo-staging/podinfo"), "{msg}");
    std::thread::sleep(Duration::from_millis(1100));
    reconcile(&observed(&s.flux, &k), &s.flux, &s.settings)
        .await
        .expect("again");
    assert!(
        ready(&s.flux)
            .2
            .starts_with("health check timed out after 1s"),
        "{:?}",
        ready(&s.flux)
    );
    // The Deployment becomes available: Ready.
    lk(&s.flux.cluster.objects).values_mut().for_each(|v| {
        if v["kind"] == "Deployment" {
            v["status"] = serde_json::json!({"observedGeneration": 0, "updatedReplicas": 1, "availableReplicas": 1});
        }
    });
    reconcile(&observed(&s.flux, &k), &s.flux, &s.settings)
        .await
        .expect("healthy");
    assert_eq!(ready(&s.flux).0, "True");
}

#[tokio::test]
async fn an_api_error_mid_apply_prunes_nothing() {
    let s = setup();
    let k = ks("./apps/overlays/staging", serde_json::json!({}));
    reconcile(&k, &s.flux, &s.settings).await.expect("first");
    // Remove the SealedSecret from Git and make Deployments fail to apply.
    let kz = s
        .repo
        .path()
        .join("apps/overlays/staging/kustomization.yaml");
    let text = std::fs::read_to_string(&kz)
        .expect("read")
        .replace("  - api-token.sealed.yaml\n", "");
    std::fs::write(&kz, text.replace("value: 1", "value: 4")).expect("write");
    commit_all(s.repo.path(), "drop the token, four replicas");
    *s.flux.cluster.fail_kind.lock().expect("lock") = Some("Deployment".into());
    let err = reconcile(&observed(&s.flux, &k), &s.flux, &s.settings)
        .await
        .unwrap_err();
    assert!(
        err.contains("Deployment podinfo-staging/podinfo") && err.contains("admission webhook"),
        "{err}"
    );
    assert_eq!(ready(&s.flux).1, "ReconciliationFailed");
    assert!(
        s.flux
            .cluster
            .live("SealedSecret", Some("podinfo-staging"), "api-token")
            .is_some(),
        "nothing pruned after a failed apply"
    );
    assert!(
        lk(&s.flux.events)
            .iter()
            .any(|e| e.starts_with("ReconciliationFailed") && e.contains("podinfo"))
    );
}

#[tokio::test]
async fn uses_the_source_loops_artifact_without_fetching_again() {
    let s = setup();
    let k = ks("./apps/overlays/staging", serde_json::json!({}));
    reconcile(&k, &s.flux, &s.settings)
        .await
        .expect("first (fetches)");
    let rev = lk(&s.flux.statuses)
        .get("apps")
        .and_then(|st| st.last_applied_revision.clone())
        .expect("rev");
    // Where the fetch put it, as the GitRepository loop would report it.
    let dir = std::fs::read_dir(
        s.settings
            .cache_dir
            .read_dir()
            .expect("cache")
            .flatten()
            .find(|e| e.file_name() != "renders")
            .expect("repo")
            .path()
            .join("artifacts"),
    )
    .expect("artifacts")
    .flatten()
    .next()
    .expect("artifact")
    .path();
    {
        let mut repos = lk(&s.flux.repos);
        let gr = repos.get_mut("flux-system/gitops").expect("gr");
        gr.status = Some(sealkit_api::GitRepositoryStatus {
            observed_generation: gr.metadata.generation,
            conditions: None,
            artifact: Some(sealkit_api::Artifact {
                revision: rev.clone(),
                path: dir.display().to_string(),
                url: String::new(),
                last_update_time: None,
            }),
        });
    }
    // Unreachable now (the repository moved away): only the artifact can serve this reconcile.
    let moved = s.repo.path().with_extension("moved");
    std::fs::rename(s.repo.path(), &moved).expect("move the repository");
    reconcile(&observed(&s.flux, &k), &s.flux, &s.settings)
        .await
        .expect("from the artifact");
    assert_eq!(ready(&s.flux).2, format!("Applied revision: {rev}"));
    // A suspended source is not fetched: its last artifact is used while it is there.
    lk(&s.flux.repos)
        .get_mut("flux-system/gitops")
        .expect("gr")
        .spec
        .suspend = Some(true);
    reconcile(&observed(&s.flux, &k), &s.flux, &s.settings)
        .await
        .expect("suspended source");
    lk(&s.flux.repos)
        .get_mut("flux-system/gitops")
        .expect("gr")
        .spec
        .suspend = None;
    std::fs::rename(&moved, s.repo.path()).expect("move it back");
    // A stale artifact (spec changed since) is not trusted.
    lk(&s.flux.repos)
        .get_mut("flux-system/gitops")
        .expect("gr")
        .spec
        .url = "file:///nonexistent".into();
    lk(&s.flux.repos)
        .get_mut("flux-system/gitops")
        .expect("gr")
        .metadata
        .generation = Some(2);
    assert!(
        reconcile(&observed(&s.flux, &k), &s.flux, &s.settings)
            .await
            .is_err()
    );
    assert_eq!(ready(&s.flux).1, "ArtifactFailed");
}

/// The finalizer: added before anything is applied; on deletion with `prune: true` what the
/// Kustomization applied (and still labelled as its own: the prune guards apply) is deleted
/// and the finalizer goes; with `prune: false` everything stays.
#[tokio::test]
async fn deleting_a_kustomization_collects_what_it_applied() {
    let s = setup();
    let k = ks("./apps/overlays/staging", serde_json::json!({}));
    reconcile(&k, &s.flux, &s.settings).await.expect("first");
    assert_eq!(
        lk(&s.flux.finalizers).get("apps").cloned(),
        Some(vec![FINALIZER.to_string()])
    );
    let applied = observed(&s.flux, &k);
    let entries = applied
        .status
        .as_ref()
        .and_then(|st| st.inventory.as_ref())
        .map(|i| i.entries.len())
        .unwrap_or(0);
    assert!(entries >= 3, "{entries} objects applied");
    assert!(
        s.flux
            .cluster
            .live("Secret", Some("podinfo-staging"), "db-credentials")
            .is_some()
    );

    // prune: false: the objects stay, only the finalizer goes.
    let mut keep = applied.clone();
    keep.spec.prune = false;
    keep.metadata.finalizers = Some(vec!["other.io/keep".into(), FINALIZER.to_string()]);
    keep.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    reconcile(&keep, &s.flux, &s.settings)
        .await
        .expect("finalize");
    assert_eq!(
        lk(&s.flux.finalizers).get("apps").cloned(),
        Some(vec!["other.io/keep".to_string()]),
        "only our finalizer is removed"
    );
    assert!(
        s.flux
            .cluster
            .live("Secret", Some("podinfo-staging"), "db-credentials")
            .is_some()
    );

    // prune: true: everything in the inventory that is still ours is deleted.
    let mut gone = applied.clone();
    gone.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
    gone.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    reconcile(&gone, &s.flux, &s.settings)
        .await
        .expect("finalize");
    assert_eq!(lk(&s.flux.finalizers).get("apps").cloned(), Some(vec![]));
    assert!(
        s.flux
            .cluster
            .live("Secret", Some("podinfo-staging"), "db-credentials")
            .is_none()
    );
    assert!(
        lk(&s.flux.events)
            .iter()
            .any(|e| e.starts_with("GarbageCollected")),
        "{:?}",
        lk(&s.flux.events)
    );
}

/// Durations no arithmetic survives stall the object with the field named; nothing applied.
#[tokio::test]
async fn absurd_durations_stall_the_object() {
    let s = setup();
    for (field, value) in [
        ("interval", "18446744073709551615s"),
        ("retryInterval", "9999999999h"),
        ("timeout", "not-a-duration"),
    ] {
        let k = ks(
            "./apps/overlays/staging",
            serde_json::json!({ field: value }),
        );
        let next = reconcile(&k, &s.flux, &s.settings).await.expect("handled");
        assert_eq!(next, Next::Wait, "{field}");
        let st = lk(&s.flux.statuses).get("apps").cloned().expect("status");
        let stalled = st
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Stalled")
            .expect("stalled");
        assert_eq!(stalled.status, "True", "{field}");
        assert!(
            stalled.message.contains(&format!("spec.{field}")),
            "{}",
            stalled.message
        );
        assert_eq!(s.flux.cluster.writes(), 0, "nothing applied");
    }
}

fn stalled(f: &Flux) -> (String, String) {
    let st = lk(&f.statuses).get("apps").cloned().expect("status");
    let c = st
        .conditions
        .expect("conditions")
        .into_iter()
        .find(|c| c.type_ == "Stalled")
        .expect("stalled");
    (c.status, c.message)
}

/// Refs that are not refs (paths, options, ref-name violations) stall the Kustomization with
/// the field named; git is never asked.
#[tokio::test]
async fn refs_that_are_not_refs_stall_naming_the_field() {
    for (field, r) in [
        (
            "spec.ref.commit",
            serde_json::json!({"commit": "../../x/artifacts/y"}),
        ),
        ("spec.ref.branch", serde_json::json!({"branch": "-x"})),
        ("spec.ref.branch", serde_json::json!({"branch": "a\u{1b}b"})),
        ("spec.ref.tag", serde_json::json!({"tag": "v1..2"})),
        (
            "spec.ref.name",
            serde_json::json!({"name": "refs/heads/a:refs/heads/b"}),
        ),
    ] {
        let s = setup();
        lk(&s.flux.repos)
            .get_mut("flux-system/gitops")
            .expect("gr")
            .spec
            .reference = Some(serde_json::from_value(r).expect("ref"));
        let k = ks("./apps/overlays/staging", serde_json::json!({}));
        assert_eq!(
            reconcile(&k, &s.flux, &s.settings).await,
            Ok(Next::Wait),
            "{field}: stalled, no retry storm"
        );
        let (st, msg) = stalled(&s.flux);
        assert_eq!(st, "True", "{field}: {msg}");
        assert!(msg.contains(field), "{field}: {msg}");
        assert_eq!(s.flux.cluster.writes(), 0);
    }
}

/// Grants `identity` the `(kind, namespace)` pairs.
fn grant(f: &Flux, identity: &str, pairs: &[(&str, &str)]) {
    lk(&f.grants).insert(
        identity.to_string(),
        pairs
            .iter()
            .map(|(k, n)| (k.to_string(), n.to_string()))
            .collect(),
    );
}

fn tenant_repo(s: &Setup, files: &[(&str, &str)]) {
    let dir = s.repo.path().join("tenant");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write");
    }
    commit_all(s.repo.path(), "tenant");
}

const TENANT_CM: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  k: v\n";

/// `spec.serviceAccountName`: apply, prune and health reads go through that ServiceAccount
/// (impersonated); what it may not touch is refused with the API's "forbidden".
#[tokio::test]
async fn service_account_name_applies_prunes_and_reads_as_that_account() {
    let s = setup();
    let sa = "system:serviceaccount:flux-system:deployer";
    grant(&s.flux, sa, &[("ConfigMap", "flux-system")]);
    tenant_repo(
        &s,
        &[
            ("cm.yaml", TENANT_CM),
            ("extra.yaml", &TENANT_CM.replace("settings", "extra")),
        ],
    );
    let k = ks(
        "./tenant",
        serde_json::json!({"serviceAccountName": "deployer", "wait": true}),
    );
    reconcile(&k, &s.flux, &s.settings).await.expect("applied");
    assert_eq!(ready(&s.flux).0, "True", "{:?}", ready(&s.flux));
    assert!(
        s.flux
            .cluster
            .live("ConfigMap", Some("flux-system"), "settings")
            .is_some()
    );
    let writers = lk(&s.flux.writers).clone();
    assert!(!writers.is_empty());
    assert!(
        writers.iter().all(|(who, _)| who == sa),
        "every write as the ServiceAccount: {writers:?}"
    );
    // Prune as the ServiceAccount.
    tenant_repo(&s, &[("cm.yaml", TENANT_CM)]);
    lk(&s.flux.writers).clear();
    let mut pk = observed(&s.flux, &k);
    pk.metadata.annotations = Some(BTreeMap::from([(
        crate::gitops::reconcile::prune::PRUNE_THRESHOLD_ANNOTATION.to_string(),
        "100".to_string(),
    )]));
    reconcile(&pk, &s.flux, &s.settings).await.expect("pruned");
    assert!(
        lk(&s.flux.writers)
            .iter()
            .any(|(who, what)| who == sa && what.starts_with("delete ConfigMap flux-system/extra")),
        "{:?}",
        lk(&s.flux.writers)
    );

    // A kind it may not create, and a namespace it may not write to: forbidden, nothing else.
    for (name, text) in [
        (
            "secret.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  k: v\n".to_string(),
        ),
        (
            "other.yaml",
            TENANT_CM.replace("name: settings", "name: o\n  namespace: kube-system"),
        ),
    ] {
        tenant_repo(&s, &[("cm.yaml", TENANT_CM), (name, &text)]);
        assert!(
            reconcile(&observed(&s.flux, &k), &s.flux, &s.settings)
                .await
                .is_err()
        );
        let (st, reason, msg) = ready(&s.flux);
        assert_eq!(
            (st.as_str(), reason.as_str()),
            ("False", "ReconciliationFailed")
        );
        assert!(
            msg.contains("forbidden") && msg.contains(sa),
            "{name}: {msg}"
        );
    }
    assert!(
        s.flux
            .cluster
            .live("ConfigMap", Some("kube-system"), "o")
            .is_none()
            && s.flux
                .cluster
                .live("Secret", Some("flux-system"), "s")
                .is_none()
    );
}

/// `--default-service-account` for Kustomizations that name none; `--no-cross-namespace-refs`
/// refuses sources and dependencies in other namespaces, naming the field.
#[tokio::test]
async fn lockdown_flags_default_account_and_no_cross_namespace_refs() {
    let mut s = setup();
    let sa = "system:serviceaccount:flux-system:tenant-default";
    grant(&s.flux, sa, &[("ConfigMap", "flux-system")]);
    tenant_repo(&s, &[("cm.yaml", TENANT_CM)]);
    s.settings.default_service_account = Some("tenant-default".into());
    reconcile(&ks("./tenant", serde_json::json!({})), &s.flux, &s.settings)
        .await
        .expect("applied");
    let writers = lk(&s.flux.writers).clone();
    assert!(
        !writers.is_empty() && writers.iter().all(|(who, _)| who == sa),
        "{writers:?}"
    );
    // Without a grant for it, the default account applies nothing.
    s.settings.default_service_account = Some("nobody".into());
    assert!(
        reconcile(&ks("./tenant", serde_json::json!({})), &s.flux, &s.settings)
            .await
            .is_err()
    );
    assert!(ready(&s.flux).2.contains("forbidden"));

    s.settings.default_service_account = None;
    s.settings.no_cross_namespace_refs = true;
    let other = lk(&s.flux.repos)
        .get("flux-system/gitops")
        .cloned()
        .expect("gr");
    lk(&s.flux.repos).insert("other/gitops".into(), other);
    for (field, extra) in [
        (
            "spec.sourceRef.namespace",
            serde_json::json!({"sourceRef": {"kind": "GitRepository", "name": "gitops", "namespace": "other"}}),
        ),
        (
            "spec.dependsOn[0].namespace",
            serde_json::json!({"dependsOn": [{"name": "infra", "namespace": "other"}]}),
        ),
    ] {
        lk(&s.flux.writers).clear();
        let next = reconcile(&ks("./tenant", extra), &s.flux, &s.settings)
            .await
            .expect("reported");
        assert_eq!(next, Next::Wait, "{field}");
        let (st, msg) = stalled(&s.flux);
        assert_eq!(st, "True", "{field}: {msg}");
        assert!(msg.contains(field), "{field}: {msg}");
        assert!(lk(&s.flux.writers).is_empty());
    }
}

/// Each reconcile renders in a directory of its own: the shared artifact is never written
/// (two Kustomizations named alike in two namespaces used to share an overlay directory).
#[tokio::test]
async fn each_reconcile_renders_in_a_directory_of_its_own() {
    let s = setup();
    let key = lk(&s.flux.secrets)
        .get("flux-system/sops-age")
        .cloned()
        .expect("key");
    let mut kss = Vec::new();
    for team in ["team-a", "team-b"] {
        lk(&s.flux.secrets).insert(format!("{team}/sops-age"), key.clone());
        let mut k = ks(
            "./apps/overlays/staging",
            serde_json::json!({
                "targetNamespace": team,
                "sourceRef": {"kind": "GitRepository", "name": "gitops", "namespace": "flux-system"},
                "images": [{"name": "ghcr.io/stefanprodan/podinfo", "newTag": team}],
            }),
        );
        k.metadata.namespace = Some(team.into());
        kss.push(k);
    }
    // Fetched once, so that the two below only render (at the same time).
    reconcile(&kss[0], &s.flux, &s.settings)
        .await
        .expect("team-a, first");
    let again = observed(&s.flux, &kss[0]);
    let (a, b) = tokio::join!(
        reconcile(&again, &s.flux, &s.settings),
        reconcile(&kss[1], &s.flux, &s.settings)
    );
    a.expect("team-a");
    b.expect("team-b");
    for team in ["team-a", "team-b"] {
        let dep = s
            .flux
            .cluster
            .live("Deployment", Some(team), "podinfo")
            .expect("deployment");
        assert_eq!(
            dep["spec"]["template"]["spec"]["containers"][0]["image"],
            format!("ghcr.io/stefanprodan/podinfo:{team}")
        );
    }
    let mut written = Vec::new();
    let mut stack = vec![s.settings.cache_dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("dir").flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".sealkit-overlay") {
                written.push(e.path());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) && name != "repo.git" {
                stack.push(e.path());
            }
        }
    }
    assert!(written.is_empty(), "written into the cache: {written:?}");
}

/// The API server quotes invalid values in its errors; a decrypted value quoted there never
/// reaches status, Events or the returned error (which is logged).
#[tokio::test]
async fn api_errors_never_quote_decrypted_values() {
    let s = setup();
    *lk(&s.flux.cluster.fail_echo) = Some("Secret".into());
    let k = ks("./apps/overlays/staging", serde_json::json!({}));
    let err = reconcile(&k, &s.flux, &s.settings).await.unwrap_err();
    let (_, reason, msg) = ready(&s.flux);
    assert_eq!(reason, "ReconciliationFailed");
    for text in std::iter::once(&err)
        .chain(std::iter::once(&msg))
        .chain(lk(&s.flux.events).iter())
    {
        assert!(
            !text.contains("example-staging-password-change-me")
                && !text.contains("\"podinfo-staging\""),
            "{text}"
        );
    }
    assert!(
        msg.contains("Secret podinfo-staging/db-credentials") && msg.contains("is invalid"),
        "{msg}"
    );
}

/// A GitRepository's status is not ours alone to write (tenants who may edit Flux objects may
/// edit their status): an artifact path that is not where our cache keeps that URL's revision
/// is never rendered, whatever it holds.
#[tokio::test]
async fn an_artifact_path_from_status_is_trusted_only_where_our_cache_keeps_it() {
    let s = setup();
    // Someone else's checkout in the cache (as another tenant's repository would be).
    let stolen = s
        .settings
        .cache_dir
        .join("0123456789abcdef01234567/artifacts/x");
    std::fs::create_dir_all(stolen.join("tenant")).expect("mkdir");
    std::fs::write(
        stolen.join("tenant/cm.yaml"),
        TENANT_CM.replace("settings", "stolen"),
    )
    .expect("write");
    std::fs::write(stolen.join(".sealkit-complete"), "x").expect("write");
    tenant_repo(&s, &[("cm.yaml", TENANT_CM)]);
    {
        let mut repos = lk(&s.flux.repos);
        let gr = repos.get_mut("flux-system/gitops").expect("gr");
        gr.status = Some(sealkit_api::GitRepositoryStatus {
            observed_generation: gr.metadata.generation,
            conditions: None,
            artifact: Some(sealkit_api::Artifact {
                revision: format!("main@sha1:{}", "a".repeat(40)),
                path: stolen.display().to_string(),
                url: String::new(),
                last_update_time: None,
            }),
        });
    }
    let k = ks("./tenant", serde_json::json!({}));
    reconcile(&k, &s.flux, &s.settings).await.expect("applied");
    assert!(
        s.flux
            .cluster
            .live("ConfigMap", Some("flux-system"), "stolen")
            .is_none(),
        "the forged artifact was rendered"
    );
    assert!(
        s.flux
            .cluster
            .live("ConfigMap", Some("flux-system"), "settings")
            .is_some(),
        "the repository itself was fetched instead"
    );
}
