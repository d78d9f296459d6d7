//! The e2e harness: a real API server (the one `scripts/test.sh` starts with
//! `shared/k8s/control-plane`, or any cluster in `SEALKIT_E2E_KUBECONFIG`), kubectl as the
//! user's hands, and `sealkit-controller` run as a local process with the identity `deploy/`
//! gives it: the ServiceAccount and RBAC of `deploy/rbac.yaml` (cluster-wide) or
//! `deploy/namespaced/` (one namespace), renamed per test so tests run side by side, and a token
//! of that ServiceAccount in the controller's kubeconfig. Every test works in its own namespaces,
//! deleted afterwards with the cluster-scoped objects it made.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub use sealkit_tests::cluster::{
    free_port, http, http_get, kubectl as kubectl_with, metric_value,
};
use sealkit_tests::{sealkit_bin, workspace};

/// A cluster for one test.
pub struct Cluster {
    /// The admin kubeconfig (the user's).
    pub kubeconfig: PathBuf,
    /// A short id unique to this test run, for names and labels.
    pub suffix: String,
    namespaces: Vec<String>,
    cluster_objects: Vec<String>,
    controllers: Vec<Controller>,
    scratch: tempfile::TempDir,
}

/// The cluster to test against, or `None` after reporting the missing peer.
pub fn cluster(test: &str) -> Option<Cluster> {
    let Some(kubeconfig) = std::env::var_os("SEALKIT_E2E_KUBECONFIG").map(PathBuf::from) else {
        sealkit_skip::missing(
            "Kubernetes API server",
            "SEALKIT_E2E_KUBECONFIG is not set (scripts/test.sh starts shared/k8s/control-plane and sets it)",
        );
        return None;
    };
    let suffix = format!("{test}{:x}", std::process::id());
    Some(Cluster {
        kubeconfig,
        suffix,
        namespaces: Vec::new(),
        cluster_objects: Vec::new(),
        controllers: Vec::new(),
        scratch: tempfile::tempdir().expect("scratch dir"),
    })
}

/// Which RBAC of `deploy/` the controller runs with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Rbac {
    /// `deploy/rbac.yaml`: ClusterRoles bound to the ServiceAccount.
    ClusterWide,
    /// `deploy/namespaced/`: Roles in the controller's namespace only.
    Namespaced,
}

impl Cluster {
    /// Runs kubectl as the admin user.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        kubectl_with(&self.kubeconfig, args, stdin)
    }

    /// `kubectl apply --server-side -f -` of `yaml`; panics on failure.
    pub fn apply(&self, yaml: &str) {
        self.kubectl(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            Some(yaml),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// A field of an object through `-o jsonpath`, `None` when the object does not exist.
    pub fn get(&self, ns: &str, what: &[&str], jsonpath: &str) -> Option<String> {
        let mut a = vec!["-n", ns, "get"];
        a.extend_from_slice(what);
        let jp = format!("jsonpath={jsonpath}");
        a.extend_from_slice(&["-o", &jp]);
        self.kubectl(&a, None).ok()
    }

    /// A Ready-style condition's (status, message) on a custom object.
    pub fn condition(&self, ns: &str, kind: &str, name: &str, ty: &str) -> (String, String) {
        let st = self
            .get(
                ns,
                &[kind, name],
                &format!("{{.status.conditions[?(@.type==\"{ty}\")].status}}"),
            )
            .unwrap_or_default();
        let msg = self
            .get(
                ns,
                &[kind, name],
                &format!("{{.status.conditions[?(@.type==\"{ty}\")].message}}"),
            )
            .unwrap_or_default();
        (st, msg)
    }

    /// Creates a namespace that is deleted when the test ends.
    pub fn namespace(&mut self, name: &str) -> String {
        self.kubectl(&["create", "namespace", name], None)
            .unwrap_or_else(|e| panic!("{e}"));
        self.namespaces.push(name.to_string());
        name.to_string()
    }

    /// Server-side applies CRDs from `deploy/crds/` and waits until each is served.
    pub fn install_crds(&self, files: &[&str]) {
        for crd in files {
            let path = workspace().join("deploy/crds").join(crd);
            self.kubectl(
                &[
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "-f",
                    &path.display().to_string(),
                ],
                None,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let name = crd.trim_end_matches(".yaml");
            self.kubectl(
                &[
                    "wait",
                    "--for=condition=Established",
                    "--timeout=60s",
                    &format!("crd/{name}"),
                ],
                None,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Installs the ServiceAccount and RBAC of `deploy/` (renamed with this test's suffix) in
    /// `ns`, and returns a kubeconfig that authenticates as that ServiceAccount.
    pub fn controller_identity(&mut self, ns: &str, rbac: Rbac) -> PathBuf {
        let base = match rbac {
            Rbac::ClusterWide => workspace().join("deploy"),
            Rbac::Namespaced => workspace().join("deploy/namespaced"),
        };
        let overlay = self.scratch.path().join(format!("rbac-{ns}"));
        std::fs::create_dir_all(&overlay).expect("overlay dir");
        // kustomize takes bases by relative path only.
        let up = "../".repeat(overlay.components().count() - 1);
        let rel = format!("{up}{}", base.display().to_string().trim_start_matches('/'));
        let sfx = format!("-{}", self.suffix);
        std::fs::write(
            overlay.join("kustomization.yaml"),
            format!("namespace: {ns}\nnameSuffix: {sfx}\nresources: [\"{rel}\"]\n"),
        )
        .expect("overlay");
        let rendered = self
            .kubectl(&["kustomize", &overlay.display().to_string()], None)
            .unwrap_or_else(|e| panic!("{e}"));
        // Only the identity: the CRDs are installed by the tests, the Deployment would never run.
        let rbac_kinds = [
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ClusterRole",
            "ClusterRoleBinding",
        ];
        let mut docs = Vec::new();
        for doc in rendered.split("\n---\n") {
            let kind = doc
                .lines()
                .find_map(|l| l.strip_prefix("kind: "))
                .unwrap_or("");
            if !rbac_kinds.contains(&kind) {
                continue;
            }
            if kind.starts_with("Cluster") {
                let name = doc
                    .lines()
                    .skip_while(|l| *l != "metadata:")
                    .find_map(|l| l.strip_prefix("  name: "))
                    .expect("name");
                self.cluster_objects
                    .push(format!("{}/{name}", kind.to_lowercase()));
            }
            docs.push(doc.to_string());
        }
        assert!(
            docs.iter().any(|d| d.contains("kind: ServiceAccount")),
            "deploy/ gives the controller a ServiceAccount"
        );
        self.apply(&docs.join("\n---\n"));
        let sa = format!("sealed-secrets-controller{sfx}");
        let token = self
            .kubectl(
                &["-n", ns, "create", "token", &sa, "--duration", "3h"],
                None,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let server = self
            .kubectl(
                &[
                    "config",
                    "view",
                    "--raw",
                    "--minify",
                    "-o",
                    "jsonpath={.clusters[0].cluster.server}",
                ],
                None,
            )
            .expect("server");
        let ca = self
            .kubectl(
                &[
                    "config",
                    "view",
                    "--raw",
                    "--minify",
                    "-o",
                    "jsonpath={.clusters[0].cluster.certificate-authority-data}",
                ],
                None,
            )
            .expect("ca");
        let path = self
            .scratch
            .path()
            .join(format!("controller-{ns}.kubeconfig"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {sa}\n  user:\n    token: {token}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: {sa}, namespace: {ns}}}\ncurrent-context: e2e\n",
                token = token.trim()
            ),
        )
        .expect("kubeconfig");
        path
    }

    /// Starts `sealkit-controller` with `args` as the identity in `kubeconfig`, with free
    /// HTTP and metrics ports on `listen_ip` (127.0.0.1 unless given).
    pub fn start_controller(
        &mut self,
        kubeconfig: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> usize {
        self.start_controller_on("127.0.0.1", kubeconfig, args, env)
    }

    /// As [`Cluster::start_controller`], listening on `listen_ip`.
    pub fn start_controller_on(
        &mut self,
        listen_ip: &str,
        kubeconfig: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> usize {
        let (http, metrics) = (free_port(), free_port());
        let id = self.controllers.len();
        let log = self
            .scratch
            .path()
            .join(format!("controller-{}-{id}.log", self.suffix));
        let file = std::fs::File::create(&log).expect("log");
        let mut cmd = Command::new(sealkit_tests::cluster::controller_bin(false));
        cmd.args(args)
            .arg(format!("--listen-addr={listen_ip}:{http}"))
            .arg(format!("--listen-metrics-addr=127.0.0.1:{metrics}"))
            .arg(format!("--listen-webhook-addr=127.0.0.1:{}", free_port()))
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,sealkit_controller=debug")
            .env_remove("AWS_ENDPOINT_URL")
            .stdout(file.try_clone().expect("log"))
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start sealkit-controller");
        self.controllers.push(Controller {
            child: Some(child),
            http,
            metrics,
            log,
        });
        self.wait_for("the controller's metrics", Duration::from_secs(90), || {
            http_get(metrics, "/metrics").map(|_| ())
        });
        id
    }

    /// The controller started as number `id`.
    pub fn controller(&self, id: usize) -> &Controller {
        &self.controllers[id]
    }

    /// Kills controller `id` at once (no graceful shutdown, as a crashed or evicted pod).
    pub fn kill_controller(&mut self, id: usize) {
        if let Some(mut c) = self.controllers[id].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Polls `f` every half second until it returns `Some`, or fails after `timeout`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut() -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            if start.elapsed() > timeout {
                self.dump_logs();
                panic!("timed out after {timeout:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The tail of every controller log of this test, on stderr.
    pub fn dump_logs(&self) {
        for c in &self.controllers {
            eprintln!("---- {} (last 60 lines) ----", c.log.display());
            let lines: Vec<String> = std::fs::File::open(&c.log)
                .map(|f| {
                    std::io::BufReader::new(f)
                        .lines()
                        .map_while(Result::ok)
                        .collect()
                })
                .unwrap_or_default();
            for l in lines.iter().skip(lines.len().saturating_sub(60)) {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for id in 0..self.controllers.len() {
            self.kill_controller(id);
        }
        for ns in &self.namespaces {
            let _ = self.kubectl(&["delete", "namespace", ns, "--wait=false"], None);
        }
        for obj in &self.cluster_objects {
            let _ = self.kubectl(&["delete", obj, "--ignore-not-found"], None);
        }
    }
}

/// One controller process.
pub struct Controller {
    child: Option<Child>,
    /// Its HTTP port (cert, verify, rotate, webhooks).
    pub http: u16,
    /// Its metrics port.
    pub metrics: u16,
    log: PathBuf,
}

impl Controller {
    /// The value of the first sample of `metric` (an exact series name with labels, or a bare
    /// name), from this controller's /metrics.
    pub fn metric(&self, metric: &str) -> Option<f64> {
        metric_value(&http_get(self.metrics, "/metrics")?, metric)
    }

    /// RSA private-key operations since this process started.
    pub fn rsa_ops(&self) -> Option<u64> {
        self.metric("sealkit_rsa_private_key_operations_total")
            .map(|v| v as u64)
    }

    /// The controller's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `sealkit seal` of `secret` with the certificate at `cert_url`.
pub fn seal(cert_url: &str, secret: &str) -> Option<String> {
    let out = sealkit_tests::run(
        Command::new(sealkit_bin()).args(["seal", "-o", "yaml", "--cert", cert_url]),
        secret.as_bytes(),
    );
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Adds `labels` to the top-level metadata of a YAML document.
pub fn with_label(yaml: &str, key: &str, value: &str) -> String {
    yaml.replacen(
        "metadata:\n",
        &format!("metadata:\n  labels:\n    {key}: \"{value}\"\n"),
        1,
    )
}

/// Runs git in `dir` with a fixed identity; panics on failure.
pub fn git_in(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "e2e")
        .env("GIT_AUTHOR_EMAIL", "e2e@example.com")
        .env("GIT_COMMITTER_NAME", "e2e")
        .env("GIT_COMMITTER_EMAIL", "e2e@example.com")
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "git {args:?}");
}
