//! The sync loop on a 1,000-object repository (100 files x 10 documents: ConfigMaps, Services
//! and Deployments), as a plain directory and as a kustomize overlay, against the in-memory
//! cluster: time of the first reconcile (render + 1,000 creates), of a no-op resync (render +
//! 1,000 dry-runs, and it must write nothing), and peak memory; beside `kubectl kustomize` alone
//! on the same overlay, measured in the same run.
//!
//! Run: `cargo bench -p sealkit-controller --bench gitops`

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use sealkit_api::{GitRepository, Kustomization};
use sealkit_controller::gitops::memory::{MemoryCluster, MemoryFlux};
use sealkit_controller::gitops::reconcile::{GitopsSettings, reconcile};

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "b")
        .env("GIT_AUTHOR_EMAIL", "b@example.com")
        .env("GIT_COMMITTER_NAME", "b")
        .env("GIT_COMMITTER_EMAIL", "b@example.com")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "git {args:?}");
}

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        / 1024
}

fn object(i: usize) -> String {
    match i % 3 {
        0 => format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n  key: value-{i}\n  other: \"{i}\"\n"
        ),
        1 => format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\nspec:\n  selector:\n    app: a{i}\n  ports:\n    - port: 80\n      targetPort: 8080\n"
        ),
        _ => format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: dep-{i}\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: a{i}\n  template:\n    metadata:\n      labels:\n        app: a{i}\n    spec:\n      containers:\n        - name: c\n          image: registry.example.com/app:{i}\n"
        ),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let repo = tempfile::tempdir().expect("repo");
    let apps = repo.path().join("apps");
    std::fs::create_dir_all(&apps).expect("mkdir");
    let mut names = Vec::new();
    for f in 0..100 {
        let docs: Vec<String> = (0..10).map(|d| object(f * 10 + d)).collect();
        let name = format!("f{f:03}.yaml");
        std::fs::write(apps.join(&name), docs.join("---\n")).expect("write");
        names.push(name);
    }
    // The same files as a kustomize base, and an overlay on it.
    let base = repo.path().join("base");
    std::fs::create_dir_all(&base).expect("mkdir");
    for n in &names {
        std::fs::copy(apps.join(n), base.join(n)).expect("copy");
    }
    let resources: String = names.iter().map(|n| format!("  - {n}\n")).collect();
    std::fs::write(
        base.join("kustomization.yaml"),
        format!("resources:\n{resources}"),
    )
    .expect("write");
    let overlay = repo.path().join("overlay");
    std::fs::create_dir_all(&overlay).expect("mkdir");
    std::fs::write(
        overlay.join("kustomization.yaml"),
        "namespace: bench\nresources:\n  - ../base\n",
    )
    .expect("write");
    git(repo.path(), &["init", "-q", "-b", "main"]);
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "bench"]);

    let started = Instant::now();
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(&overlay)
        .output()
        .expect("kubectl");
    assert!(out.status.success());
    let kubectl = started.elapsed();

    println!("gitops: 1,000 objects (100 files x 10 documents), in-memory cluster");
    println!(
        "  baseline: kubectl kustomize of the overlay alone: {:.0} ms",
        kubectl.as_secs_f64() * 1e3
    );
    for (label, path) in [
        ("plain directory", "./apps"),
        ("kustomize overlay", "./overlay"),
    ] {
        let flux = MemoryFlux {
            cluster: MemoryCluster::new(),
            ..Default::default()
        };
        let gr: GitRepository = serde_json::from_value(serde_json::json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "r", "namespace": "flux-system"},
            "spec": {"interval": "1m", "url": format!("file://{}", repo.path().display()), "ref": {"branch": "main"}}
        }))
        .expect("gr");
        flux.repos
            .lock()
            .expect("lock")
            .insert("flux-system/r".into(), gr);
        let mut ks: Kustomization = serde_json::from_value(serde_json::json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "apps", "namespace": "flux-system", "generation": 1},
            "spec": {"interval": "10m", "path": path, "prune": true, "targetNamespace": "bench",
                     "sourceRef": {"kind": "GitRepository", "name": "r"}}
        }))
        .expect("ks");
        let cache = tempfile::tempdir().expect("cache");
        let settings = GitopsSettings::new(cache.path().to_path_buf());
        let t = Instant::now();
        reconcile(&ks, &flux, &settings).await.expect("first");
        let first = t.elapsed();
        let writes = flux.cluster.writes();
        ks.status = flux.statuses.lock().expect("lock").get("apps").cloned();
        let t = Instant::now();
        reconcile(&ks, &flux, &settings).await.expect("resync");
        let resync = t.elapsed();
        let resync_writes = flux.cluster.writes() - writes;
        println!(
            "  {label}: first reconcile {:.0} ms ({writes} writes); no-op resync {:.0} ms ({resync_writes} writes) = {:.2}x kubectl kustomize alone",
            first.as_secs_f64() * 1e3,
            resync.as_secs_f64() * 1e3,
            resync.as_secs_f64() / kubectl.as_secs_f64()
        );
        assert_eq!(resync_writes, 0, "a no-op resync must not write");
        assert_eq!(writes, 1000);
    }
    println!("  peak RSS of this process: {} MiB", peak_rss_mib());
}
