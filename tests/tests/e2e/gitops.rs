//! The GitOps loop on the real API server, following a file:// repository on this host (the
//! controller runs here), with `deploy/rbac/`'s cluster-wide identity: a commit applied (SOPS
//! Secret decrypted), replicas changed in Git, a file deleted and pruned, a hand edit reverted,
//! an empty render refused, `git revert` rolled back, a Kustomization of Kustomizations, and
//! deleting Kustomizations: with `prune: true` what it applied goes (and nothing else), without
//! it everything stays. And tenants locked down: `serviceAccountName` impersonated (what its
//! Role does not allow is forbidden), `--no-cross-namespace-refs`, and a decrypted value the
//! API server quotes in a validation error never shown. Skipped on clusters that run Flux (it
//! would reconcile the same objects).

use std::process::Command;
use std::time::Duration;

use sealkit_tests::{sealkit_bin, workspace};

use crate::harness::{Cluster, Rbac, cluster, git_in};

fn runs_flux(c: &Cluster) -> bool {
    c.kubectl(
        &[
            "get",
            "deployment",
            "-A",
            "-l",
            "app.kubernetes.io/part-of=flux",
        ],
        None,
    )
    .is_ok_and(|o| !o.trim().is_empty())
        || c.kubectl(&["get", "namespace", "flux-system"], None)
            .is_ok()
}

#[test]
fn gitops_loop_follows_the_repository() {
    let Some(mut cluster) = cluster("git") else {
        return;
    };
    if runs_flux(&cluster) {
        sealkit_skip::missing(
            "a cluster without Flux",
            "this cluster runs Flux, which would reconcile the test's Kustomizations too",
        );
        return;
    }
    let suffix = cluster.suffix.clone();
    let ns = cluster.namespace(&format!("sealkit-e2e-{suffix}"));
    let target = cluster.namespace(&format!("sealkit-e2e-{suffix}-app"));
    cluster.install_crds(&[
        "gitrepositories.source.toolkit.fluxcd.io.yaml",
        "kustomizations.kustomize.toolkit.fluxcd.io.yaml",
    ]);
    let identity = cluster.controller_identity(&ns, Rbac::ClusterWide);

    // The repository: an app with a SOPS Secret, made with the example age key.
    let repo = tempfile::tempdir().expect("repo");
    let r = repo.path();
    std::fs::create_dir_all(r.join("app")).expect("mkdir");
    std::fs::write(
        r.join("app/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: gitops\n",
    )
    .expect("w");
    std::fs::write(
        r.join("app/extra.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  k: v\n",
    )
    .expect("w");
    std::fs::write(r.join("app/deploy.yaml"), "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n        - name: web\n          image: registry.k8s.io/pause:3.9\n").expect("w");
    let key = workspace().join("examples/gitops/keys/example.agekey");
    let recipient = std::fs::read_to_string(&key)
        .expect("key")
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_string))
        .expect("recipient");
    std::fs::write(r.join("app/secret.yaml"), "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  password: from-git-sops\n").expect("w");
    let enc = sealkit_tests::run(
        Command::new(sealkit_bin())
            .args([
                "sops",
                "encrypt",
                "--age",
                &recipient,
                "--encrypted-regex",
                "^(data|stringData)$",
                "-i",
                "app/secret.yaml",
            ])
            .current_dir(r),
        b"",
    );
    assert!(
        enc.status.success(),
        "{}",
        String::from_utf8_lossy(&enc.stderr)
    );
    // A second app whose Kustomization does not prune.
    std::fs::create_dir_all(r.join("keep")).expect("mkdir");
    std::fs::write(
        r.join("keep/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kept\ndata:\n  k: v\n",
    )
    .expect("w");
    git_in(r, &["init", "-q", "-b", "main"]);
    git_in(r, &["add", "-A"]);
    git_in(r, &["commit", "-q", "-m", "app"]);

    let agekey = std::fs::read_to_string(&key).expect("key");
    let label = format!("sealkit-e2e: \"{suffix}\"");
    cluster.apply(&format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: sops-age, namespace: {ns}}}
stringData:
  age.agekey: |
{key}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: repo, namespace: {ns}, labels: {{{label}}}}}
spec:
  interval: 5s
  url: file://{url}
  ref: {{branch: main}}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {{name: app, namespace: {ns}, labels: {{{label}}}}}
spec:
  interval: 5s
  path: ./app
  prune: true
  targetNamespace: {target}
  sourceRef: {{kind: GitRepository, name: repo}}
  decryption: {{provider: sops, secretRef: {{name: sops-age}}}}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {{name: keep, namespace: {ns}, labels: {{{label}}}}}
spec:
  interval: 5s
  path: ./keep
  prune: false
  targetNamespace: {target}
  sourceRef: {{kind: GitRepository, name: repo}}
"#,
        key = agekey
            .lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
        url = r.display(),
    ));
    let cache = tempfile::tempdir().expect("cache");
    let selector = format!("sealkit-e2e={suffix}");
    let cache_dir = cache.path().display().to_string();
    cluster.start_controller(
        &identity,
        &[
            "--key-namespace",
            &ns,
            "--watch-namespace",
            &ns,
            "--selector",
            &selector,
            "--key-size",
            "2048",
            "--leader-elect=false",
            "--external-secrets=false",
            "--gitops-cache-dir",
            &cache_dir,
        ],
        &[],
    );
    let get = |c: &Cluster, what: &[&str], jp: &str| c.get(&target, what, jp);
    let ready_message = |c: &Cluster| c.condition(&ns, "kustomization", "app", "Ready").1;
    cluster.wait_for("the app applied", Duration::from_secs(120), || {
        get(&cluster, &["deployment", "web"], "{.spec.replicas}").filter(|r| r == "1")
    });
    // base64("from-git-sops")
    assert_eq!(
        get(&cluster, &["secret", "creds"], "{.data.password}").as_deref(),
        Some("ZnJvbS1naXQtc29wcw==")
    );
    assert_eq!(
        cluster
            .get(&ns, &["kustomization", "app"], "{.metadata.finalizers[0]}")
            .as_deref(),
        Some("finalizers.fluxcd.io")
    );
    cluster.wait_for("the kept app applied", Duration::from_secs(60), || {
        get(&cluster, &["configmap", "kept"], "{.data.k}").filter(|v| v == "v")
    });

    // Replicas changed in Git; a file deleted.
    let d = std::fs::read_to_string(r.join("app/deploy.yaml"))
        .expect("r")
        .replace("replicas: 1", "replicas: 2");
    std::fs::write(r.join("app/deploy.yaml"), d).expect("w");
    std::fs::remove_file(r.join("app/extra.yaml")).expect("rm");
    git_in(r, &["commit", "-q", "-am", "two replicas, no extra"]);
    cluster.wait_for("replicas 2", Duration::from_secs(90), || {
        get(&cluster, &["deployment", "web"], "{.spec.replicas}").filter(|r| r == "2")
    });
    cluster.wait_for("extra pruned", Duration::from_secs(90), || {
        get(&cluster, &["configmap", "extra"], "{.metadata.name}")
            .is_none()
            .then_some(())
    });

    // kubectl edit: reverted.
    cluster
        .kubectl(
            &[
                "-n",
                &target,
                "patch",
                "configmap",
                "settings",
                "--type=merge",
                "-p",
                r#"{"data":{"mode":"edited"}}"#,
            ],
            None,
        )
        .expect("edit");
    cluster.wait_for("the edit reverted", Duration::from_secs(90), || {
        get(&cluster, &["configmap", "settings"], "{.data.mode}").filter(|m| m == "gitops")
    });

    // An empty render is refused; nothing is deleted.
    git_in(r, &["rm", "-q", "-r", "app"]);
    std::fs::create_dir_all(r.join("app")).expect("mkdir");
    std::fs::write(r.join("app/README.md"), "nothing here\n").expect("w");
    git_in(r, &["add", "-A"]);
    git_in(r, &["commit", "-q", "-m", "oops: empty"]);
    cluster.wait_for("the empty render refused", Duration::from_secs(90), || {
        ready_message(&cluster)
            .contains("render is empty")
            .then_some(())
    });
    assert!(
        get(&cluster, &["deployment", "web"], "{.metadata.name}").is_some(),
        "nothing pruned"
    );

    // git revert: back to two replicas and the settings.
    git_in(r, &["revert", "--no-edit", "HEAD"]);
    cluster.wait_for("Ready after the revert", Duration::from_secs(90), || {
        ready_message(&cluster)
            .starts_with("Applied revision")
            .then_some(())
    });

    // A Kustomization of Kustomizations: the parent applies a child that applies a ConfigMap.
    std::fs::create_dir_all(r.join("children")).expect("mkdir");
    std::fs::create_dir_all(r.join("child-app")).expect("mkdir");
    std::fs::write(
        r.join("child-app/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-child\ndata:\n  k: v\n",
    )
    .expect("w");
    std::fs::write(
        r.join("children/child.yaml"),
        format!("apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: child\n  namespace: {ns}\n  labels:\n    sealkit-e2e: \"{suffix}\"\nspec:\n  interval: 5s\n  path: ./child-app\n  prune: true\n  targetNamespace: {target}\n  sourceRef:\n    kind: GitRepository\n    name: repo\n"),
    )
    .expect("w");
    git_in(r, &["add", "-A"]);
    git_in(r, &["commit", "-q", "-m", "app of apps"]);
    cluster.apply(&format!(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {{name: parent, namespace: {ns}, labels: {{{label}}}}}\nspec:\n  interval: 5s\n  path: ./children\n  prune: true\n  sourceRef: {{kind: GitRepository, name: repo}}\n"
    ));
    cluster.wait_for("the child's ConfigMap", Duration::from_secs(120), || {
        get(&cluster, &["configmap", "from-child"], "{.metadata.name}")
    });

    // Deleting Kustomizations. An object of the same kind in the target namespace that no
    // Kustomization applied must survive.
    cluster.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bystander\n  namespace: {target}\ndata:\n  k: v\n"
    ));
    // prune: true → what it applied is deleted, then the Kustomization is gone.
    cluster
        .kubectl(
            &[
                "-n",
                &ns,
                "delete",
                "kustomization",
                "app",
                "--wait=true",
                "--timeout=90s",
            ],
            None,
        )
        .expect("delete app");
    for (kind, name) in [
        ("deployment", "web"),
        ("configmap", "settings"),
        ("secret", "creds"),
    ] {
        cluster.wait_for(
            &format!("{kind}/{name} garbage-collected"),
            Duration::from_secs(60),
            || {
                get(&cluster, &[kind, name], "{.metadata.name}")
                    .is_none()
                    .then_some(())
            },
        );
    }
    // The parent's deletion takes the child Kustomization, whose own finalizer takes its
    // ConfigMap.
    cluster
        .kubectl(
            &[
                "-n",
                &ns,
                "delete",
                "kustomization",
                "parent",
                "--wait=true",
                "--timeout=90s",
            ],
            None,
        )
        .expect("delete parent");
    cluster.wait_for(
        "the child Kustomization and its ConfigMap gone",
        Duration::from_secs(90),
        || {
            (cluster
                .get(&ns, &["kustomization", "child"], "{.metadata.name}")
                .is_none()
                && get(&cluster, &["configmap", "from-child"], "{.metadata.name}").is_none())
            .then_some(())
        },
    );
    // prune: false → the objects stay.
    cluster
        .kubectl(
            &[
                "-n",
                &ns,
                "delete",
                "kustomization",
                "keep",
                "--wait=true",
                "--timeout=90s",
            ],
            None,
        )
        .expect("delete keep");
    assert_eq!(
        get(&cluster, &["configmap", "kept"], "{.data.k}").as_deref(),
        Some("v"),
        "a Kustomization without prune leaves its objects"
    );
    assert_eq!(
        get(&cluster, &["configmap", "bystander"], "{.data.k}").as_deref(),
        Some("v"),
        "an object no Kustomization applied is never deleted"
    );
}

/// `sealkit sops encrypt` of `file` in `dir` for the example key, the leaves whose keys match
/// `regex`.
fn sops_encrypt(dir: &std::path::Path, file: &str, regex: &str) {
    let key = workspace().join("examples/gitops/keys/example.agekey");
    let recipient = std::fs::read_to_string(&key)
        .expect("key")
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_string))
        .expect("recipient");
    let enc = sealkit_tests::run(
        Command::new(sealkit_bin())
            .args([
                "sops",
                "encrypt",
                "--age",
                &recipient,
                "--encrypted-regex",
                regex,
                "-i",
                file,
            ])
            .current_dir(dir),
        b"",
    );
    assert!(
        enc.status.success(),
        "{}",
        String::from_utf8_lossy(&enc.stderr)
    );
}

/// Hostile tenants on the real API server: a Kustomization with `serviceAccountName` applies
/// as that ServiceAccount (impersonated), so what its Role does not allow (another kind,
/// another namespace) is refused with the API server's "forbidden"; with
/// `--no-cross-namespace-refs` a source in another namespace is refused; and an object whose
/// decrypted (SOPS) label value the API server rejects, quoting it, is reported without the
/// value in status, Events and the controller's log.
#[test]
fn gitops_tenants_are_locked_down() {
    let Some(mut cluster) = cluster("gtn") else {
        return;
    };
    if runs_flux(&cluster) {
        sealkit_skip::missing(
            "a cluster without Flux",
            "this cluster runs Flux, which would reconcile the test's Kustomizations too",
        );
        return;
    }
    let suffix = cluster.suffix.clone();
    let ns = cluster.namespace(&format!("sealkit-e2e-{suffix}"));
    let tenant = cluster.namespace(&format!("sealkit-e2e-{suffix}-tenant"));
    let other = cluster.namespace(&format!("sealkit-e2e-{suffix}-other"));
    cluster.install_crds(&[
        "gitrepositories.source.toolkit.fluxcd.io.yaml",
        "kustomizations.kustomize.toolkit.fluxcd.io.yaml",
    ]);
    let identity = cluster.controller_identity(&ns, Rbac::ClusterWide);

    let repo = tempfile::tempdir().expect("repo");
    let r = repo.path();
    let cm = |name: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{extra}data:\n  k: v\n"
        )
    };
    for (path, text) in [
        ("allowed/cm.yaml", cm("allowed", "")),
        (
            "kind/secret.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: not-allowed\nstringData:\n  k: v\n"
                .to_string(),
        ),
        (
            "elsewhere/cm.yaml",
            cm("elsewhere", &format!("  namespace: {other}\n")),
        ),
        (
            "bad-label/cm.yaml",
            cm(
                "bad-label",
                "  labels:\n    tier: \"not a valid label: e2e-decrypted-secret\"\n",
            ),
        ),
    ] {
        let p = r.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("w");
    }
    sops_encrypt(&r.join("bad-label"), "cm.yaml", "^tier$");
    git_in(r, &["init", "-q", "-b", "main"]);
    git_in(r, &["add", "-A"]);
    git_in(r, &["commit", "-q", "-m", "tenant"]);

    let key = workspace().join("examples/gitops/keys/example.agekey");
    let agekey = std::fs::read_to_string(&key).expect("key");
    let label = format!("sealkit-e2e: \"{suffix}\"");
    let ks = |name: &str, path: &str, extra: &str| {
        format!(
            "---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {{name: {name}, namespace: {tenant}, labels: {{{label}}}}}\nspec:\n  interval: 5s\n  path: {path}\n  prune: true\n  sourceRef: {{kind: GitRepository, name: repo}}\n{extra}"
        )
    };
    let mut manifests = format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: deployer, namespace: {tenant}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: configmaps-only, namespace: {tenant}}}
rules:
  - apiGroups: [""]
    resources: ["configmaps"]
    verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: deployer, namespace: {tenant}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmaps-only}}
subjects:
  - {{kind: ServiceAccount, name: deployer, namespace: {tenant}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: sops-age, namespace: {tenant}}}
stringData:
  age.agekey: |
{key}
"#,
        key = agekey
            .lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    for repo_ns in [&tenant, &ns] {
        manifests.push_str(&format!(
            "---\napiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {{name: repo, namespace: {repo_ns}, labels: {{{label}}}}}\nspec:\n  interval: 5s\n  url: file://{url}\n  ref: {{branch: main}}\n",
            url = r.display()
        ));
    }
    let sa = "  serviceAccountName: deployer\n";
    manifests.push_str(&ks("allowed", "./allowed", sa));
    manifests.push_str(&ks("kind", "./kind", sa));
    manifests.push_str(&ks("elsewhere", "./elsewhere", sa));
    manifests.push_str(
        &ks(
            "cross",
            "./allowed",
            &format!("  targetNamespace: {other}\n"),
        )
        .replace(
            "sourceRef: {kind: GitRepository, name: repo}",
            &format!("sourceRef: {{kind: GitRepository, name: repo, namespace: {ns}}}"),
        ),
    );
    manifests.push_str(&ks(
        "redact",
        "./bad-label",
        "  decryption: {provider: sops, secretRef: {name: sops-age}}\n",
    ));
    cluster.apply(&manifests);

    let cache = tempfile::tempdir().expect("cache");
    let selector = format!("sealkit-e2e={suffix}");
    let cache_dir = cache.path().display().to_string();
    let id = cluster.start_controller(
        &identity,
        &[
            "--key-namespace",
            &ns,
            "--selector",
            &selector,
            "--key-size",
            "2048",
            "--leader-elect=false",
            "--external-secrets=false",
            "--no-cross-namespace-refs",
            "--gitops-cache-dir",
            &cache_dir,
        ],
        &[],
    );
    let ready = |c: &Cluster, name: &str| c.condition(&tenant, "kustomization", name, "Ready");

    // Allowed: the ConfigMap (the identity it was applied as shows in the refusals below).
    cluster.wait_for("the tenant's ConfigMap", Duration::from_secs(120), || {
        cluster
            .get(&tenant, &["configmap", "allowed"], "{.data.k}")
            .filter(|v| v == "v")
    });
    cluster.wait_for("allowed Ready", Duration::from_secs(60), || {
        (ready(&cluster, "allowed").0 == "True").then_some(())
    });
    let user = format!("system:serviceaccount:{tenant}:deployer");
    for name in ["kind", "elsewhere"] {
        let msg = cluster.wait_for(
            &format!("{name} refused as forbidden"),
            Duration::from_secs(120),
            || {
                let (st, msg) = ready(&cluster, name);
                (st == "False" && msg.contains("forbidden")).then_some(msg)
            },
        );
        assert!(msg.contains(&user), "{name}: {msg}");
    }
    assert!(
        cluster
            .get(&tenant, &["secret", "not-allowed"], "{.metadata.name}")
            .is_none()
    );
    assert!(
        cluster
            .get(&other, &["configmap", "elsewhere"], "{.metadata.name}")
            .is_none()
    );

    // --no-cross-namespace-refs.
    let msg = cluster.wait_for(
        "the cross-namespace source refused",
        Duration::from_secs(60),
        || {
            let (st, msg) = cluster.condition(&tenant, "kustomization", "cross", "Stalled");
            (st == "True").then_some(msg)
        },
    );
    assert!(msg.contains("spec.sourceRef.namespace"), "{msg}");
    assert!(
        cluster
            .get(&other, &["configmap", "allowed"], "{.metadata.name}")
            .is_none()
    );

    // The API server rejects the decrypted label value and quotes it; we never show it.
    let msg = cluster.wait_for(
        "the invalid label refused",
        Duration::from_secs(120),
        || {
            let (st, msg) = ready(&cluster, "redact");
            (st == "False" && msg.contains("Invalid value")).then_some(msg)
        },
    );
    assert!(
        msg.contains("ConfigMap") && msg.contains("bad-label"),
        "{msg}"
    );
    let secret = "e2e-decrypted-secret";
    assert!(!msg.contains(secret), "{msg}");
    let events = cluster
        .kubectl(&["-n", &tenant, "get", "events", "-o", "json"], None)
        .expect("events");
    assert!(events.contains("bad-label"), "the refusal was recorded");
    assert!(!events.contains(secret), "Events quote no decrypted value");
    let log = cluster.controller(id).log();
    assert!(log.contains("bad-label"), "the refusal was logged");
    assert!(!log.contains(secret), "the log quotes no decrypted value");

    // Deleted while the controller runs, so their finalizers do not hold the namespace.
    cluster
        .kubectl(
            &[
                "-n",
                &tenant,
                "delete",
                "kustomizations",
                "--all",
                "--wait=true",
                "--timeout=90s",
            ],
            None,
        )
        .expect("delete the Kustomizations");
    assert!(
        cluster
            .get(&tenant, &["configmap", "allowed"], "{.metadata.name}")
            .is_none(),
        "pruned on deletion, as the ServiceAccount"
    );
}
