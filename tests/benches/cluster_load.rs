//! The controller on a real API server at scale (a bench binary, not a timed test).
//!
//! ```sh
//! cargo bench -p sealkit-tests --bench cluster_load -- --sealed 1000
//! ```
//!
//! Starts `shared/k8s/control-plane` (or uses `SEALKIT_E2E_KUBECONFIG`), creates N
//! SealedSecrets of 3 values each (sealed with the controller's own certificate by
//! `sealkit seal`), runs the release `sealkit-controller` as a local process and prints: the
//! time until every Secret exists, RSA private-key operations, the controller's peak and steady
//! RSS, and the time until every SealedSecret's status says Synced; then, after a restart with
//! nothing changed: the time until every object has been
//! reconciled once, RSA operations (must be 0) and Secret writes (must be 0: resourceVersions
//! unchanged); then, over an idle window (`--idle-seconds`, default 60): API requests by verb
//! (the controller's `sealkit_kube_requests_total` and the API server's
//! `apiserver_request_total`) and Secret writes. The baseline in the same run is
//! `openssl speed rsa4096` (private-key ops/s).
//!
//! `--external M` adds M ExternalSecrets (3 keys each from 100 AWS secrets in `moto_server`,
//! `SEALKIT_MOTO_SERVER`/`SEALKIT_MOTO_PYTHON` as scripts/test.sh installs them) and
//! `--kustomizations K` adds K Kustomizations of 10 ConfigMaps each from a local git
//! repository: time until all are Ready, AWS calls (against one per key, as ESO), and
//! `kubectl apply --server-side` of the same objects as the baseline of the first apply. Their
//! interval is half the idle window, so the window holds a no-op GitOps resync.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use sealkit_tests::cluster::{
    ControlPlane, build_bin, controller_bin, count_samples, delta, free_port, http_get, kubectl,
    metric_value, rss_kib, sum_by_label,
};

const NS: &str = "sealkit-bench";
const LABEL: &str = "sealkit-bench=load";

struct Args {
    sealed: usize,
    key_size: usize,
    idle_seconds: u64,
    /// ExternalSecrets (3 keys each from 100 AWS secrets in moto_server).
    external: usize,
    /// Kustomizations (10 ConfigMaps each, from one local git repository).
    kustomizations: usize,
}

fn args() -> Args {
    let mut a = Args {
        sealed: 1000,
        key_size: 4096,
        idle_seconds: 60,
        external: 0,
        kustomizations: 0,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let next = argv.get(i + 1).and_then(|v| v.parse().ok());
        match argv[i].as_str() {
            "--sealed" => a.sealed = next.expect("--sealed N"),
            "--key-size" => a.key_size = next.expect("--key-size BITS"),
            "--idle-seconds" => a.idle_seconds = next.expect("--idle-seconds S") as u64,
            "--external" => a.external = next.expect("--external M"),
            "--kustomizations" => a.kustomizations = next.expect("--kustomizations K"),
            _ => {} // cargo bench passes --bench
        }
        i += 1;
    }
    a
}

struct Controller {
    child: Child,
    metrics: u16,
    http: u16,
}

impl Controller {
    fn start(kubeconfig: &Path, key_size: usize, extra: &Extra) -> Controller {
        let (http, metrics) = (free_port(), free_port());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(std::env::temp_dir().join("sealkit-bench-controller.log"))
            .expect("log");
        let child = Command::new(controller_bin(true))
            .args([
                "--key-namespace",
                NS,
                "--watch-namespace",
                NS,
                "--leader-elect=false",
                &format!("--external-secrets={}", extra.aws_endpoint.is_some()),
                &format!("--gitops={}", extra.gitops_cache.is_some()),
                "--key-size",
                &key_size.to_string(),
                "--kube-api-qps",
                "100",
                "--kube-api-burst",
                "200",
                &format!("--listen-addr=127.0.0.1:{http}"),
                &format!("--listen-metrics-addr=127.0.0.1:{metrics}"),
                &format!("--listen-webhook-addr=127.0.0.1:{}", free_port()),
            ])
            .args(
                extra
                    .gitops_cache
                    .iter()
                    .flat_map(|d| ["--gitops-cache-dir", d.as_str()]),
            )
            .envs(extra.aws_endpoint.iter().map(|e| ("AWS_ENDPOINT_URL", e)))
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("SEALKIT_BENCH_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the controller");
        let c = Controller {
            child,
            metrics,
            http,
        };
        wait("the controller's metrics", Duration::from_secs(120), || {
            http_get(c.metrics, "/metrics")
        });
        c
    }

    fn metrics(&self) -> String {
        http_get(self.metrics, "/metrics").unwrap_or_default()
    }

    fn rsa_ops(&self) -> u64 {
        metric_value(&self.metrics(), "sealkit_rsa_private_key_operations_total").unwrap_or(0.0)
            as u64
    }

    /// Objects whose Synced condition gauge this process has set to 1.
    fn reconciled(&self) -> usize {
        count_samples(
            &self.metrics(),
            "sealed_secrets_controller_condition_info",
            1.0,
        )
    }

    /// Reconciles by loop (`unseal`, `externalsecret`, `kustomization`, ...).
    fn reconciles(&self, controller: &str) -> usize {
        sum_by_label(&self.metrics(), "sealkit_reconciles_total", "controller")
            .get(controller)
            .copied()
            .unwrap_or(0.0) as usize
    }

    /// Calls to AWS (every API, every status).
    fn aws_calls(&self) -> u64 {
        sum_by_label(&self.metrics(), "sealkit_provider_api_calls_total", "call")
            .values()
            .sum::<f64>() as u64
    }

    /// The controller's own count of API requests, by verb.
    fn requests(&self) -> BTreeMap<String, f64> {
        sum_by_label(&self.metrics(), "sealkit_kube_requests_total", "verb")
    }

    fn rss_mib(&self) -> (f64, f64) {
        rss_kib(self.child.id()).map_or((0.0, 0.0), |(now, peak)| {
            (now as f64 / 1024.0, peak as f64 / 1024.0)
        })
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `name → resourceVersion` of the benchmark's Secrets.
async fn versions(secrets: &Api<Secret>) -> BTreeMap<String, String> {
    secrets
        .list_metadata(&ListParams::default().labels(LABEL))
        .await
        .expect("list Secrets")
        .items
        .into_iter()
        .map(|s| {
            (
                s.metadata.name.unwrap_or_default(),
                s.metadata.resource_version.unwrap_or_default(),
            )
        })
        .collect()
}

/// The API server's `apiserver_request_total`, by verb (every client: the controller,
/// kube-controller-manager and this benchmark).
async fn apiserver_requests(client: &kube::Client) -> BTreeMap<String, f64> {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    match client.request_text(req).await {
        Ok(text) => sum_by_label(&text, "apiserver_request_total", "verb"),
        Err(_) => BTreeMap::new(),
    }
}

/// `verb n, verb n, …` (or `none`).
fn by_verb(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{} {v}", k.to_lowercase()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `openssl speed` RSA-4096 private-key operations per second on `cores` cores.
fn openssl_rsa4096(cores: usize) -> Option<f64> {
    let mut cmd = Command::new("openssl");
    cmd.args(["speed", "-seconds", "3"]);
    if cores > 1 {
        cmd.args(["-multi", &cores.to_string()]);
    }
    let out = cmd.arg("rsa4096").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "rsa 4096 bits 0.004785s 0.000075s    209.0  13333.3" (sign/s is the private-key op).
    text.lines()
        .find(|l| l.trim_start().starts_with("rsa 4096 bits") || l.starts_with("rsa  4096 bits"))
        .and_then(|l| l.split_whitespace().rev().nth(1)?.parse().ok())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// What the controller runs besides the unseal loop.
struct Extra {
    /// moto_server's endpoint, when ExternalSecrets are part of the run.
    aws_endpoint: Option<String>,
    /// The GitOps cache directory, when Kustomizations are part of the run.
    gitops_cache: Option<String>,
}

/// Server-side applies of `docs` (32 at a time) through `api`.
async fn create_all(api: Api<DynamicObject>, docs: Vec<serde_json::Value>) {
    let api = Arc::new(api);
    futures::stream::iter(docs)
        .map(|d| {
            let api = api.clone();
            async move {
                let name = d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                api.patch(
                    &name,
                    &PatchParams::apply("sealkit-bench"),
                    &Patch::Apply(&d),
                )
                .await
                .unwrap_or_else(|e| panic!("create {name}: {e}"));
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

fn api_of(
    client: &kube::Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(client.clone(), NS, &ar)
}

/// Objects of `api` whose `Ready` condition is `True`.
async fn ready(api: &Api<DynamicObject>) -> usize {
    let Ok(list) = api.list(&ListParams::default()).await else {
        return 0;
    };
    list.items
        .iter()
        .filter(|o| {
            o.data["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .count()
}

/// `kind` objects until all `n` are Ready; the time since `since`.
async fn until_ready(api: &Api<DynamicObject>, n: usize, since: Instant, what: &str) -> Duration {
    while ready(api).await < n {
        assert!(
            since.elapsed() < Duration::from_secs(1800),
            "{what}: not all Ready in 30 min"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    since.elapsed()
}

/// The ConfigMaps of Kustomization `k`, as YAML documents.
fn configmaps(k: usize) -> Vec<String> {
    (0..10)
        .map(|j| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: k{k}-cm{j}\ndata:\n  app: k{k}\n  index: \"{j}\"\n  payload: {}\n",
                "x".repeat(200)
            )
        })
        .collect()
}

/// A git repository with `apps/k<k>/` for every Kustomization (10 ConfigMaps each).
fn git_repository(dir: &Path, kustomizations: usize) {
    for k in 0..kustomizations {
        let app = dir.join(format!("apps/k{k}"));
        std::fs::create_dir_all(&app).expect("mkdir");
        for (j, cm) in configmaps(k).iter().enumerate() {
            std::fs::write(app.join(format!("cm{j}.yaml")), cm).expect("write");
        }
    }
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &[
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
            "commit",
            "-q",
            "-m",
            "apps",
        ],
    ] {
        let out = sealkit_tests::run(Command::new("git").args(args).current_dir(dir), b"");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    // Baselines first, on an idle machine.
    let one = openssl_rsa4096(1);
    let two = openssl_rsa4096(2);
    let own;
    let kubeconfig = match std::env::var_os("SEALKIT_E2E_KUBECONFIG") {
        Some(k) => std::path::PathBuf::from(k),
        None => {
            eprintln!("starting a control plane (shared/k8s/control-plane)…");
            own = ControlPlane::up().unwrap_or_else(|e| panic!("{e}"));
            own.kubeconfig.clone()
        }
    };
    let sealkit = build_bin("sealkit-cli", "sealkit", true);
    let _ = controller_bin(true);
    let crds = sealkit_tests::workspace().join("deploy/crds/");
    kubectl(
        &kubeconfig,
        &["apply", "--server-side", "-k", &crds.display().to_string()],
        None,
    )
    .expect("CRD");
    kubectl(
        &kubeconfig,
        &["wait", "--for=condition=Established", "crd", "--all"],
        None,
    )
    .expect("CRD established");
    let _ = kubectl(
        &kubeconfig,
        &["delete", "namespace", NS, "--wait=true"],
        None,
    );
    kubectl(&kubeconfig, &["create", "namespace", NS], None).expect("namespace");
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig"),
            &Default::default(),
        )
        .await
        .expect("config"),
    )
    .expect("client");

    // ExternalSecrets read 100 AWS secrets of 3 properties from moto_server.
    let moto = (a.external > 0).then(|| {
        let moto = sealkit_tests::Moto::start().unwrap_or_else(|| {
            eprintln!("--external needs moto_server: run scripts/test.sh once (it installs it) and set SEALKIT_MOTO_SERVER / SEALKIT_MOTO_PYTHON");
            std::process::exit(2);
        });
        moto.py("for i in range(100):\n    sm.create_secret(Name=f'bench/s{i:03d}', SecretString=json.dumps({'a': f'a{i}', 'b': f'b{i}', 'c': f'c{i}'}))");
        moto
    });
    let repo = tempfile::tempdir().expect("repo");
    let gitops_cache = tempfile::tempdir().expect("cache");
    if a.kustomizations > 0 {
        git_repository(repo.path(), a.kustomizations);
    }
    let extra = Extra {
        aws_endpoint: moto.as_ref().map(|m| m.endpoint.clone()),
        gitops_cache: (a.kustomizations > 0).then(|| gitops_cache.path().display().to_string()),
    };
    if a.external > 0 {
        kubectl(
            &kubeconfig,
            &["apply", "--server-side", "-f", "-"],
            Some(&*format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: awssm, namespace: {NS}}}\nstringData: {{id: testing, secret: testing}}\n---\napiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata: {{name: aws, namespace: {NS}}}\nspec:\n  provider:\n    aws:\n      service: SecretsManager\n      region: us-east-1\n      auth:\n        secretRef:\n          accessKeyIDSecretRef: {{name: awssm, key: id}}\n          secretAccessKeySecretRef: {{name: awssm, key: secret}}\n"
            )),
        )
        .expect("SecretStore");
    }
    // Every Kustomization and the repository resync within the idle window (a no-op resync).
    let interval = format!("{}s", (a.idle_seconds / 2).max(10));
    if a.kustomizations > 0 {
        kubectl(
            &kubeconfig,
            &["apply", "--server-side", "-f", "-"],
            Some(&*format!(
                "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {{name: repo, namespace: {NS}}}\nspec:\n  interval: {interval}\n  url: file://{}\n  ref: {{branch: main}}\n",
                repo.path().display()
            )),
        )
        .expect("GitRepository");
    }

    // The controller makes its key; we seal with its certificate.
    let c = Controller::start(&kubeconfig, a.key_size, &extra);
    let cert = wait("the certificate", Duration::from_secs(120), || {
        http_get(c.http, "/v1/cert.pem")
    });
    let cert_file = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(cert_file.path(), &cert).expect("cert");
    let mut input = String::new();
    for i in 0..a.sealed {
        input.push_str(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s{i}\n  namespace: {NS}\n  labels: {{sealkit-bench: load}}\nstringData:\n  username: user-{i}\n  password: password-{i}-0123456789\n  token: token-{i}-abcdefghijklmnopqrstuvwxyz\n---\n"
        ));
    }
    let sealed = sealkit_tests::run(
        Command::new(&sealkit).args([
            "seal",
            "--cert",
            &cert_file.path().display().to_string(),
            "-o",
            "json",
        ]),
        input.as_bytes(),
    );
    assert!(
        sealed.status.success(),
        "{}",
        String::from_utf8_lossy(&sealed.stderr)
    );
    let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&sealed.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("sealed JSON");
    assert_eq!(docs.len(), a.sealed);
    let sealed_api = api_of(
        &client,
        "bitnami.com",
        "v1alpha1",
        "SealedSecret",
        "sealedsecrets",
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);

    // First start: create everything, wait until every Secret exists.
    let server_before = apiserver_requests(&client).await;
    let created = Instant::now();
    create_all(sealed_api, docs).await;
    let create_time = created.elapsed();
    let es_api = api_of(
        &client,
        "external-secrets.io",
        "v1",
        "ExternalSecret",
        "externalsecrets",
    );
    let ks_api = api_of(
        &client,
        "kustomize.toolkit.fluxcd.io",
        "v1",
        "Kustomization",
        "kustomizations",
    );
    let extras_created = Instant::now();
    let es_docs = (0..a.external)
        .map(|i| {
            let data: Vec<serde_json::Value> = ["a", "b", "c"]
                .iter()
                .enumerate()
                .map(|(j, p)| serde_json::json!({"secretKey": p, "remoteRef": {"key": format!("bench/s{:03}", (i + j * 7) % 100), "property": p}}))
                .collect();
            serde_json::json!({
                "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                "metadata": {"name": format!("es{i}"), "namespace": NS},
                "spec": {"refreshInterval": "1h", "secretStoreRef": {"name": "aws", "kind": "SecretStore"},
                         "target": {"name": format!("es{i}")}, "data": data}
            })
        })
        .collect();
    create_all(es_api.clone(), es_docs).await;
    let ks_docs = (0..a.kustomizations)
        .map(|k| {
            serde_json::json!({
                "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                "metadata": {"name": format!("k{k}"), "namespace": NS},
                "spec": {"interval": interval.as_str(), "path": format!("./apps/k{k}"), "prune": true,
                         "targetNamespace": NS, "sourceRef": {"kind": "GitRepository", "name": "repo"}}
            })
        })
        .collect();
    create_all(ks_api.clone(), ks_docs).await;
    let es_ready = until_ready(&es_api, a.external, extras_created, "ExternalSecrets").await;
    let first_aws_calls = c.aws_calls();
    let ks_ready = until_ready(&ks_api, a.kustomizations, extras_created, "Kustomizations").await;
    loop {
        if versions(&secrets).await.len() == a.sealed {
            break;
        }
        assert!(
            created.elapsed() < Duration::from_secs(1800),
            "first sync timed out"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let first_sync = created.elapsed();
    // Then until every SealedSecret's status says Synced (its status write done).
    while c.reconciled() < a.sealed {
        assert!(
            created.elapsed() < Duration::from_secs(1800),
            "first sync timed out"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let first_synced = created.elapsed();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let first_ops = c.rsa_ops();
    let (steady, peak) = c.rss_mib();
    let first_requests = delta(&BTreeMap::new(), &c.requests());
    let first_server = delta(&server_before, &apiserver_requests(&client).await);

    // Restart with nothing changed.
    let before = versions(&secrets).await;
    c.stop();
    let restarted = Instant::now();
    let c = Controller::start(&kubeconfig, a.key_size, &extra);
    wait(
        "every object reconciled after the restart",
        Duration::from_secs(600),
        || {
            (c.reconciled() >= a.sealed
                && c.reconciles("externalsecret") >= a.external
                && c.reconciles("kustomization") >= a.kustomizations)
                .then_some(())
        },
    );
    let restart_time = restarted.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let restart_ops = c.rsa_ops();
    let restart_aws_calls = c.aws_calls();
    let after = versions(&secrets).await;
    let rewritten = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(*v))
        .count();
    let (restart_steady, restart_peak) = c.rss_mib();
    let restart_requests = delta(&BTreeMap::new(), &c.requests());

    // A no-op window: nothing changes; what does the controller still do?
    let idle_before = c.requests();
    let idle_aws_before = c.aws_calls();
    let idle_server_before = apiserver_requests(&client).await;
    let idle_versions = versions(&secrets).await;
    tokio::time::sleep(Duration::from_secs(a.idle_seconds)).await;
    let idle_requests = delta(&idle_before, &c.requests());
    let idle_aws = c.aws_calls() - idle_aws_before;
    let idle_reconciles = c.reconciles("kustomization");
    let idle_server = delta(&idle_server_before, &apiserver_requests(&client).await);
    let idle_after = versions(&secrets).await;
    let idle_written = idle_versions
        .iter()
        .filter(|(k, v)| idle_after.get(*k) != Some(*v))
        .count();
    let (idle_rss, _) = c.rss_mib();
    c.stop();
    // What a user would otherwise run for the first GitOps apply: `kubectl apply --server-side`
    // of the same objects, into a fresh namespace.
    let kubectl_apply = (a.kustomizations > 0).then(|| {
        let ns = format!("{NS}-kubectl");
        let _ = kubectl(
            &kubeconfig,
            &["delete", "namespace", &ns, "--wait=true"],
            None,
        );
        kubectl(&kubeconfig, &["create", "namespace", &ns], None).expect("namespace");
        let all: Vec<String> = (0..a.kustomizations).flat_map(configmaps).collect();
        let file = tempfile::NamedTempFile::new().expect("tmp");
        std::fs::write(file.path(), all.join("---\n")).expect("write");
        let started = Instant::now();
        kubectl(
            &kubeconfig,
            &[
                "apply",
                "--server-side",
                "-n",
                &ns,
                "-f",
                &file.path().display().to_string(),
            ],
            None,
        )
        .expect("kubectl apply");
        let took = started.elapsed();
        let _ = kubectl(
            &kubeconfig,
            &["delete", "namespace", &ns, "--wait=false"],
            None,
        );
        took
    });
    // SEALKIT_BENCH_KEEP=1 leaves the objects in place (e.g. to profile a controller by hand).
    if std::env::var_os("SEALKIT_BENCH_KEEP").is_none() {
        let _ = kubectl(
            &kubeconfig,
            &["delete", "namespace", NS, "--wait=false"],
            None,
        );
    }

    let values = a.sealed * 3;
    println!(
        "\n## sealkit-controller on kube-apiserver v1.28.7: {} SealedSecrets x 3 values (RSA-{})\n",
        a.sealed, a.key_size
    );
    println!(
        "CPU: {} ({} cores)\n",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| | value |");
    println!("|---|---|");
    println!(
        "| SealedSecrets created (32 concurrent server-side applies) | {:.1} s |",
        create_time.as_secs_f64()
    );
    println!(
        "| first start: every Secret exists | {:.1} s |",
        first_sync.as_secs_f64()
    );
    println!(
        "| first start: every SealedSecret Synced (status written) | {:.1} s |",
        first_synced.as_secs_f64()
    );
    println!("| first start: RSA private-key operations | {first_ops} ({values} values) |");
    println!(
        "| first start: unseal throughput | {:.0} values/s |",
        values as f64 / first_sync.as_secs_f64()
    );
    println!("| first start: controller RSS steady / peak | {steady:.1} / {peak:.1} MiB |");
    println!(
        "| restart: every object reconciled once | {:.1} s |",
        restart_time.as_secs_f64()
    );
    println!("| restart: RSA private-key operations | {restart_ops} |");
    println!(
        "| restart: Secrets written (resourceVersion changed) | {rewritten} of {} |",
        before.len()
    );
    println!(
        "| restart: controller RSS steady / peak | {restart_steady:.1} / {restart_peak:.1} MiB |"
    );
    println!(
        "| first start: controller API requests by verb | {} |",
        by_verb(&first_requests)
    );
    println!(
        "| first start: `apiserver_request_total` by verb (all clients) | {} |",
        by_verb(&first_server)
    );
    println!(
        "| restart: controller API requests by verb (until all reconciled + 5 s) | {} |",
        by_verb(&restart_requests)
    );
    println!(
        "| idle {} s after the restart: controller API requests by verb | {} |",
        a.idle_seconds,
        by_verb(&idle_requests)
    );
    println!(
        "| idle {} s: `apiserver_request_total` by verb (all clients) | {} |",
        a.idle_seconds,
        by_verb(&idle_server)
    );
    println!("| idle: Secrets written | {idle_written} |");
    println!("| idle: controller RSS | {idle_rss:.1} MiB |");
    if a.external > 0 {
        println!(
            "| first start: every ExternalSecret Ready ({} x 3 keys from 100 AWS secrets) | {:.1} s |",
            a.external,
            es_ready.as_secs_f64()
        );
        println!(
            "| first start: AWS API calls (one call per key, as ESO: {}) | {first_aws_calls} |",
            a.external * 3
        );
        println!("| restart: AWS API calls | {} |", restart_aws_calls);
        println!("| idle {} s: AWS API calls | {idle_aws} |", a.idle_seconds);
    }
    if a.kustomizations > 0 {
        println!(
            "| first start: every Kustomization Ready ({} x 10 ConfigMaps) | {:.1} s |",
            a.kustomizations,
            ks_ready.as_secs_f64()
        );
        if let Some(t) = kubectl_apply {
            println!(
                "| baseline: `kubectl apply --server-side` of the same {} objects | {:.1} s |",
                a.kustomizations * 10,
                t.as_secs_f64()
            );
        }
        println!(
            "| Kustomization reconciles since the restart (interval {interval}, incl. the idle window) | {idle_reconciles} |"
        );
    }
    if let (Some(one), Some(two)) = (one, two) {
        println!(
            "| baseline `openssl speed rsa4096` private-key ops/s, 1 / 2 cores | {one:.0} / {two:.0} |"
        );
    }
}
