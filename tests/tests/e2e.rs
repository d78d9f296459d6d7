//! End to end against a real cluster: the CRD from `deploy/crds/`, `sealkit-controller` run as a
//! local process against the API server, `sealkit seal` with the controller's certificate, and
//! kubectl. Runs only when `SEALKIT_E2E_KUBECONFIG` names a kubeconfig; otherwise it says so and
//! passes. Everything happens in two fresh namespaces that are deleted afterwards; the
//! controller watches only the first, and keeps its keys there too.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sealkit_tests::{sealkit_bin, workspace};

struct Cluster {
    kubeconfig: PathBuf,
    namespaces: Vec<String>,
    controller: Option<Child>,
}

impl Cluster {
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().map_err(|e| format!("kubectl: {e}"))?;
        if let Some(input) = stdin {
            use std::io::Write;
            let _ = child
                .stdin
                .take()
                .map(|mut s| s.write_all(input.as_bytes()));
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("kubectl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Server-side applies CRDs from `deploy/crds/` and waits until `plural` is served.
    fn install_crds(&self, files: &[&str], plural: &str) {
        for crd in files {
            let path = workspace().join("deploy/crds").join(crd);
            self.kubectl(
                &["apply", "--server-side", "-f", &path.display().to_string()],
                None,
            )
            .expect("CRD");
        }
        self.wait_for(
            &format!("the {plural} CRD"),
            Duration::from_secs(60),
            || self.kubectl(&["get", plural, "-A"], None).ok().map(|_| ()),
        );
    }

    fn wait_for<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(start.elapsed() < timeout, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut c) = self.controller.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = self.kubectl(&["delete", "namespace", ns, "--wait=false"], None);
        }
    }
}

/// The cluster to test against, or `None` after saying why the test is skipped.
fn e2e_kubeconfig() -> Option<PathBuf> {
    let k = std::env::var_os("SEALKIT_E2E_KUBECONFIG").map(PathBuf::from);
    if k.is_none() {
        eprintln!(
            "skipped: set SEALKIT_E2E_KUBECONFIG to a kubeconfig to run the e2e suite against that cluster"
        );
    }
    k
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18080)
}

fn controller_bin() -> PathBuf {
    let sealkit = sealkit_bin();
    let bin = sealkit.with_file_name("sealkit-controller");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args([
                "build",
                "-q",
                "-p",
                "sealkit-controller",
                "--bin",
                "sealkit-controller",
            ])
            .current_dir(workspace())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "building sealkit-controller failed");
    }
    bin
}

fn start_controller(cluster: &Cluster, suffix: &str, args: &[String]) -> Child {
    let log_path = std::env::temp_dir().join(format!("sealkit-e2e-{suffix}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .expect("log");
    Command::new(controller_bin())
        .args(args)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start the controller")
}

/// GET over plain HTTP on 127.0.0.1.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

fn rsa_ops(metrics_port: u16) -> Option<u64> {
    http_get(metrics_port, "/metrics")?
        .lines()
        .find(|l| l.starts_with("sealkit_rsa_private_key_operations_total"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

#[test]
fn controller_unseals_heals_and_explains() {
    let Some(kubeconfig) = e2e_kubeconfig() else {
        return;
    };
    let suffix = format!("{:x}", std::process::id());
    let ns = format!("sealkit-e2e-{suffix}");
    let other = format!("sealkit-e2e-other-{suffix}");
    let mut cluster = Cluster {
        kubeconfig,
        namespaces: vec![ns.clone(), other.clone()],
        controller: None,
    };
    let crd = workspace().join("deploy/crds/sealedsecrets.bitnami.com.yaml");
    cluster
        .kubectl(&["apply", "-f", &crd.display().to_string()], None)
        .expect("CRD");
    for n in [&ns, &other] {
        cluster
            .kubectl(&["create", "namespace", n], None)
            .expect("namespace");
    }

    let port = free_port();
    let metrics_port = free_port();
    let controller_args = vec![
        "--key-namespace".to_string(),
        ns.clone(),
        "--selector".to_string(),
        format!("sealkit-e2e={suffix}"),
        "--key-size".to_string(),
        "2048".to_string(),
        // Restarts below must take over at once, not wait for the killed process's Lease.
        "--leader-elect=false".to_string(),
        "--listen-addr".to_string(),
        format!("127.0.0.1:{port}"),
        "--listen-metrics-addr".to_string(),
        format!("127.0.0.1:{metrics_port}"),
    ];
    let child = start_controller(&cluster, &suffix, &controller_args);
    cluster.controller = Some(child);
    let cert_url = format!("http://127.0.0.1:{port}/v1/cert.pem");
    cluster.wait_for(
        "the controller's certificate",
        Duration::from_secs(90),
        || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        },
    );
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: {ns}\n  labels:\n    sealkit-e2e: \"{suffix}\"\nstringData:\n  password: e2e-hunter2\n"
    );
    let sealed = cluster.wait_for("a sealed Secret", Duration::from_secs(60), || {
        let out = sealkit_tests::run(
            Command::new(sealkit_bin()).args(["seal", "-o", "yaml", "--cert", &cert_url]),
            secret.as_bytes(),
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    // The controller runs with a label selector, so it touches nothing but this test's objects.
    let label_top = |yaml: &str| {
        yaml.replacen(
            "metadata:\n",
            &format!("metadata:\n  labels:\n    sealkit-e2e: \"{suffix}\"\n"),
            1,
        )
    };
    let sealed = label_top(&sealed);
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&sealed))
        .expect("apply SealedSecret");

    let read_password = |c: &Cluster| -> Option<String> {
        c.kubectl(
            &[
                "-n",
                &ns,
                "get",
                "secret",
                "db",
                "-o",
                "jsonpath={.data.password}",
            ],
            None,
        )
        .ok()
        .filter(|s| !s.is_empty())
    };
    let pw = cluster.wait_for("the unsealed Secret", Duration::from_secs(60), || {
        read_password(&cluster)
    });
    assert_eq!(pw, "ZTJlLWh1bnRlcjI=", "base64 of e2e-hunter2");

    // Self-heal: delete the Secret; it comes back.
    cluster
        .kubectl(&["-n", &ns, "delete", "secret", "db"], None)
        .expect("delete");
    let pw = cluster.wait_for("the restored Secret", Duration::from_secs(60), || {
        read_password(&cluster)
    });
    assert_eq!(pw, "ZTJlLWh1bnRlcjI=");

    // Status: Synced=True on the SealedSecret.
    let status = cluster.wait_for("Synced=True", Duration::from_secs(30), || {
        cluster
            .kubectl(
                &[
                    "-n",
                    &ns,
                    "get",
                    "sealedsecret",
                    "db",
                    "-o",
                    "jsonpath={.status.conditions[0].status}",
                ],
                None,
            )
            .ok()
            .filter(|s| s == "True")
    });
    assert_eq!(status, "True");

    // A copy in another namespace does not open (strict scope) and says why.
    // Only the SealedSecret's own namespace changes (as when a file is copied and edited): its
    // template still says where it was sealed for, which is what the message can point to.
    let copy = sealed.replacen(
        &format!("namespace: {ns}"),
        &format!("namespace: {other}"),
        1,
    );
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&copy))
        .expect("apply the copy");
    let message = cluster.wait_for("Synced=False on the copy", Duration::from_secs(60), || {
        let st = cluster
            .kubectl(
                &[
                    "-n",
                    &other,
                    "get",
                    "sealedsecret",
                    "db",
                    "-o",
                    "jsonpath={.status.conditions[0].status}",
                ],
                None,
            )
            .ok()?;
        (st == "False").then(|| {
            cluster
                .kubectl(
                    &[
                        "-n",
                        &other,
                        "get",
                        "sealedsecret",
                        "db",
                        "-o",
                        "jsonpath={.status.conditions[0].message}",
                    ],
                    None,
                )
                .unwrap_or_default()
        })
    });
    assert!(message.contains(&format!("'{ns}/db'")), "{message}");
    assert!(!message.contains("e2e-hunter2"));
    assert!(
        cluster
            .kubectl(&["-n", &other, "get", "secret", "db"], None)
            .is_err(),
        "no Secret from a copy"
    );

    cluster
        .kubectl(&["-n", &other, "delete", "sealedsecret", "db"], None)
        .expect("delete the copy");

    // A hand edit of the Secret is undone.
    cluster
        .kubectl(
            &[
                "-n",
                &ns,
                "patch",
                "secret",
                "db",
                "--type",
                "merge",
                "-p",
                r#"{"data":{"password":"ZWRpdGVk"}}"#,
            ],
            None,
        )
        .expect("edit");
    cluster.wait_for("the edit to be undone", Duration::from_secs(60), || {
        read_password(&cluster).filter(|p| p == "ZTJlLWh1bnRlcjI=")
    });

    // A restart re-checks everything without a single RSA private-key operation.
    if let Some(mut c) = cluster.controller.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    cluster.controller = Some(start_controller(&cluster, &suffix, &controller_args));
    cluster.wait_for("the restarted controller", Duration::from_secs(90), || {
        rsa_ops(metrics_port)
    });
    std::thread::sleep(Duration::from_secs(15));
    assert_eq!(
        rsa_ops(metrics_port),
        Some(0),
        "a restart must not decrypt unchanged objects"
    );
    assert_eq!(read_password(&cluster).as_deref(), Some("ZTJlLWh1bnRlcjI="));

    // Rotation: a cutoff time forces a new key; new seals use it, old values still open.
    let old_cert = http_get(port, "/v1/cert.pem").expect("cert");
    std::thread::sleep(Duration::from_secs(2));
    let cutoff = String::from_utf8_lossy(
        &Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .expect("date")
            .stdout,
    )
    .trim()
    .to_string();
    if let Some(mut c) = cluster.controller.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let mut rotated_args = controller_args.clone();
    rotated_args.extend(["--key-cutoff-time".to_string(), cutoff]);
    cluster.controller = Some(start_controller(&cluster, &suffix, &rotated_args));
    let new_cert = cluster.wait_for("a new sealing key", Duration::from_secs(120), || {
        http_get(port, "/v1/cert.pem").filter(|c| *c != old_cert)
    });
    assert_ne!(new_cert, old_cert);
    let secret2 = secret
        .replace("name: db", "name: db2")
        .replace("e2e-hunter2", "second-value");
    let sealed2 = cluster.wait_for(
        "a value sealed with the new key",
        Duration::from_secs(60),
        || {
            let out = sealkit_tests::run(
                Command::new(sealkit_bin()).args(["seal", "-o", "yaml", "--cert", &cert_url]),
                secret2.as_bytes(),
            );
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    );
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&label_top(&sealed2)))
        .expect("apply db2");
    cluster.wait_for("db2", Duration::from_secs(60), || {
        cluster
            .kubectl(
                &[
                    "-n",
                    &ns,
                    "get",
                    "secret",
                    "db2",
                    "-o",
                    "jsonpath={.data.password}",
                ],
                None,
            )
            .ok()
            .filter(|p| p == "c2Vjb25kLXZhbHVl")
    });
    cluster
        .kubectl(&["-n", &ns, "delete", "secret", "db"], None)
        .expect("delete db");
    cluster.wait_for(
        "db restored with the old key",
        Duration::from_secs(60),
        || read_password(&cluster).filter(|p| p == "ZTJlLWh1bnRlcjI="),
    );

    // Two processes with leader election: only one of them writes.
    if let Some(mut c) = cluster.controller.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let mut others: Vec<Child> = Vec::new();
    let mut metric_ports = Vec::new();
    let mut http_ports = Vec::new();
    for id in ["e2e-a", "e2e-b"] {
        let (p, m) = (free_port(), free_port());
        let mut a: Vec<String> = controller_args
            .iter()
            .filter(|a| !a.starts_with("--leader-elect"))
            .cloned()
            .collect();
        for (i, v) in a.clone().iter().enumerate() {
            if v == "--listen-addr" {
                a[i + 1] = format!("127.0.0.1:{p}");
            }
            if v == "--listen-metrics-addr" {
                a[i + 1] = format!("127.0.0.1:{m}");
            }
        }
        a.extend([
            "--leader-elect=true".to_string(),
            "--identity".to_string(),
            id.to_string(),
        ]);
        others.push(start_controller(&cluster, &suffix, &a));
        metric_ports.push(m);
        http_ports.push(p);
    }
    let requests = |port: u16| -> Option<u64> {
        http_get(port, "/metrics")?
            .lines()
            .find(|l| l.starts_with("sealed_secrets_controller_unseal_requests_total"))?
            .split_whitespace()
            .last()?
            .parse()
            .ok()
    };
    cluster.wait_for("both replicas up", Duration::from_secs(90), || {
        metric_ports
            .iter()
            .all(|p| requests(*p).is_some())
            .then_some(())
    });
    let secret3 = secret
        .replace("name: db", "name: db3")
        .replace("e2e-hunter2", "third-value");
    // Every replica serves the certificate; seal with the first one's.
    let replica_cert = format!("http://127.0.0.1:{}/v1/cert.pem", http_ports[0]);
    let sealed3 = cluster.wait_for("a sealed db3", Duration::from_secs(60), || {
        let out = sealkit_tests::run(
            Command::new(sealkit_bin()).args(["seal", "-o", "yaml", "--cert", &replica_cert]),
            secret3.as_bytes(),
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&label_top(&sealed3)))
        .expect("apply db3");
    cluster.wait_for(
        "db3 from the elected leader",
        Duration::from_secs(120),
        || {
            cluster
                .kubectl(
                    &[
                        "-n",
                        &ns,
                        "get",
                        "secret",
                        "db3",
                        "-o",
                        "jsonpath={.data.password}",
                    ],
                    None,
                )
                .ok()
                .filter(|p| p == "dGhpcmQtdmFsdWU=")
        },
    );
    let counts: Vec<u64> = metric_ports
        .iter()
        .map(|p| requests(*p).unwrap_or(0))
        .collect();
    assert_eq!(
        counts.iter().filter(|c| **c > 0).count(),
        1,
        "exactly one replica unsealed: {counts:?}"
    );

    // Hand-over: kill the leader without a goodbye; the follower takes the Lease once it expires
    // and unseals what arrives next.
    let leader = counts.iter().position(|c| *c > 0).unwrap_or(0);
    let follower = 1 - leader;
    let _ = others[leader].kill();
    let _ = others[leader].wait();
    let secret4 = secret
        .replace("name: db", "name: db4")
        .replace("e2e-hunter2", "fourth-value");
    let sealed4 = sealkit_tests::run(
        Command::new(sealkit_bin()).args([
            "seal",
            "-o",
            "yaml",
            "--cert",
            &format!("http://127.0.0.1:{}/v1/cert.pem", http_ports[follower]),
        ]),
        secret4.as_bytes(),
    );
    assert!(
        sealed4.status.success(),
        "the follower serves the certificate"
    );
    cluster
        .kubectl(
            &["apply", "-f", "-"],
            Some(&label_top(&String::from_utf8_lossy(&sealed4.stdout))),
        )
        .expect("apply db4");
    cluster.wait_for("db4 from the new leader", Duration::from_secs(180), || {
        cluster
            .kubectl(
                &[
                    "-n",
                    &ns,
                    "get",
                    "secret",
                    "db4",
                    "-o",
                    "jsonpath={.data.password}",
                ],
                None,
            )
            .ok()
            .filter(|p| p == "Zm91cnRoLXZhbHVl")
    });
    assert!(
        requests(metric_ports[follower]).unwrap_or(0) > 0,
        "the former follower unsealed db4"
    );
    for mut c in others {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// `--validate` and `--re-encrypt` go through the API server's service proxy, so the API server
/// must reach the local controller: set `SEALKIT_E2E_CONTROLLER_IP` to an address of this host
/// that it can reach (the test registers a selector-less Service with Endpoints there).
#[test]
fn validate_and_re_encrypt_through_the_service_proxy() {
    let Some(kubeconfig) = std::env::var_os("SEALKIT_E2E_KUBECONFIG").map(PathBuf::from) else {
        eprintln!(
            "skipped: set SEALKIT_E2E_KUBECONFIG (and SEALKIT_E2E_CONTROLLER_IP) to run this e2e test"
        );
        return;
    };
    let Ok(host_ip) = std::env::var("SEALKIT_E2E_CONTROLLER_IP") else {
        eprintln!(
            "skipped: set SEALKIT_E2E_CONTROLLER_IP to an address of this host the API server can reach"
        );
        return;
    };
    let suffix = format!("p{:x}", std::process::id());
    let ns = format!("sealkit-e2e-proxy-{suffix}");
    let mut cluster = Cluster {
        kubeconfig,
        namespaces: vec![ns.clone()],
        controller: None,
    };
    let crd = workspace().join("deploy/crds/sealedsecrets.bitnami.com.yaml");
    cluster
        .kubectl(&["apply", "-f", &crd.display().to_string()], None)
        .expect("CRD");
    cluster
        .kubectl(&["create", "namespace", &ns], None)
        .expect("namespace");
    let port = free_port();
    let args: Vec<String> = [
        "--key-namespace",
        &ns,
        "--selector",
        &format!("sealkit-e2e={suffix}"),
        "--key-size",
        "2048",
        "--leader-elect=false",
        "--listen-addr",
        &format!("0.0.0.0:{port}"),
        "--listen-metrics-addr",
        &format!("127.0.0.1:{}", free_port()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    cluster.controller = Some(start_controller(&cluster, &suffix, &args));
    let service = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: sealed-secrets-controller\n  namespace: {ns}\nspec:\n  ports:\n  - name: http\n    port: 8080\n    targetPort: {port}\n---\napiVersion: v1\nkind: Endpoints\nmetadata:\n  name: sealed-secrets-controller\n  namespace: {ns}\nsubsets:\n- addresses:\n  - ip: {host_ip}\n  ports:\n  - name: http\n    port: {port}\n"
    );
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&service))
        .expect("service");
    let kc = cluster.kubeconfig.display().to_string();
    let seal_args = [
        "--controller-namespace",
        ns.as_str(),
        "--controller-name",
        "sealed-secrets-controller",
        "--kubeconfig",
        kc.as_str(),
    ];
    let cert = cluster.wait_for(
        "the certificate through the proxy",
        Duration::from_secs(120),
        || {
            let mut a = vec!["seal", "--fetch-cert"];
            a.extend_from_slice(&seal_args);
            let out = sealkit_tests::run(Command::new(sealkit_bin()).args(&a), b"");
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    );
    assert!(cert.contains("BEGIN CERTIFICATE"));
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: {ns}\nstringData:\n  password: proxied\n"
    );
    let mut a = vec!["seal", "-o", "yaml"];
    a.extend_from_slice(&seal_args);
    let out = sealkit_tests::run(Command::new(sealkit_bin()).args(&a), secret.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sealed = out.stdout;
    let mut v = vec!["seal", "--validate"];
    v.extend_from_slice(&seal_args);
    let out = sealkit_tests::run(Command::new(sealkit_bin()).args(&v), &sealed);
    assert!(
        out.status.success(),
        "validate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tampered = String::from_utf8_lossy(&sealed)
        .replace(&format!("namespace: {ns}"), "namespace: elsewhere");
    let out = sealkit_tests::run(Command::new(sealkit_bin()).args(&v), tampered.as_bytes());
    assert_eq!(
        out.status.code(),
        Some(1),
        "a copy for another namespace does not validate"
    );
    let mut r = vec!["seal", "--re-encrypt", "-o", "yaml"];
    r.extend_from_slice(&seal_args);
    let out = sealkit_tests::run(Command::new(sealkit_bin()).args(&r), &sealed);
    assert!(
        out.status.success(),
        "re-encrypt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("kind: SealedSecret"));
}

/// The ExternalSecret syncer against the cluster, with a local `moto_server` as AWS (the
/// controller runs on this host, so it reaches moto on 127.0.0.1): created, updated within the
/// refresh interval, kept with `Ready=False` while moto is down, `Ready=True` when it is back.
#[test]
fn external_secret_follows_aws_and_survives_an_outage() {
    let Some(kubeconfig) = e2e_kubeconfig() else {
        return;
    };
    let Some(mut moto) = sealkit_tests::Moto::start() else {
        return;
    };
    let suffix = format!("es{:x}", std::process::id());
    let ns = format!("sealkit-e2e-{suffix}");
    let mut cluster = Cluster {
        kubeconfig,
        namespaces: vec![ns.clone()],
        controller: None,
    };
    // Our ESO CRDs, unless ESO's own are installed (they are a superset of ours).
    if cluster
        .kubectl(&["get", "crd", "externalsecrets.external-secrets.io"], None)
        .is_err()
    {
        cluster.install_crds(
            &[
                "externalsecrets.external-secrets.io.yaml",
                "secretstores.external-secrets.io.yaml",
                "clustersecretstores.external-secrets.io.yaml",
            ],
            "externalsecrets",
        );
    }
    cluster
        .kubectl(&["create", "namespace", &ns], None)
        .expect("namespace");
    let seed =
        r#"sm.create_secret(Name="e2e/db", SecretString=json.dumps({"password": "from-aws-1"}))"#;
    moto.py(seed);
    let manifests = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: awssm, namespace: {ns}}}
stringData: {{access-key: testing, secret-access-key: testing}}
---
apiVersion: external-secrets.io/v1
kind: SecretStore
metadata: {{name: aws, namespace: {ns}}}
spec:
  provider:
    aws:
      service: SecretsManager
      region: us-east-1
      auth:
        secretRef:
          accessKeyIDSecretRef: {{name: awssm, key: access-key}}
          secretAccessKeySecretRef: {{name: awssm, key: secret-access-key}}
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata:
  name: db
  namespace: {ns}
  labels: {{sealkit-e2e: "{suffix}"}}
spec:
  refreshInterval: 5s
  secretStoreRef: {{name: aws, kind: SecretStore}}
  target: {{name: db-creds}}
  data:
    - secretKey: password
      remoteRef: {{key: e2e/db, property: password}}
"#
    );
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&manifests))
        .expect("apply store and ExternalSecret");
    let (port, metrics_port) = (free_port(), free_port());
    let args: Vec<String> = [
        "--key-namespace",
        &ns,
        "--watch-namespace",
        &ns,
        "--selector",
        &format!("sealkit-e2e={suffix}"),
        "--key-size",
        "2048",
        "--leader-elect=false",
        "--provider-cache-ttl",
        "1s",
        "--listen-addr",
        &format!("127.0.0.1:{port}"),
        "--listen-metrics-addr",
        &format!("127.0.0.1:{metrics_port}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log = std::env::temp_dir().join(format!("sealkit-e2e-{suffix}.log"));
    let child = Command::new(controller_bin())
        .args(&args)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("controller");
    cluster.controller = Some(child);
    let password = |c: &Cluster| -> Option<String> {
        c.kubectl(
            &[
                "-n",
                &ns,
                "get",
                "secret",
                "db-creds",
                "-o",
                "jsonpath={.data.password}",
            ],
            None,
        )
        .ok()
    };
    let ready = |c: &Cluster| -> Option<String> {
        c.kubectl(
            &[
                "-n",
                &ns,
                "get",
                "externalsecret",
                "db",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ],
            None,
        )
        .ok()
    };
    // base64("from-aws-1"), base64("from-aws-2")
    cluster.wait_for("the synced Secret", Duration::from_secs(90), || {
        password(&cluster).filter(|p| p == "ZnJvbS1hd3MtMQ==")
    });
    moto.py(r#"sm.put_secret_value(SecretId="e2e/db", SecretString=json.dumps({"password": "from-aws-2"}))"#);
    cluster.wait_for("the changed value", Duration::from_secs(60), || {
        password(&cluster).filter(|p| p == "ZnJvbS1hd3MtMg==")
    });
    moto.stop();
    cluster.wait_for(
        "Ready=False while AWS is down",
        Duration::from_secs(60),
        || ready(&cluster).filter(|r| r == "False"),
    );
    assert_eq!(
        password(&cluster).as_deref(),
        Some("ZnJvbS1hd3MtMg=="),
        "the last good Secret is kept"
    );
    let message = cluster
        .kubectl(
            &[
                "-n",
                &ns,
                "get",
                "externalsecret",
                "db",
                "-o",
                "jsonpath={.status.conditions[0].message}",
            ],
            None,
        )
        .unwrap_or_default();
    assert!(
        !message.contains("from-aws") && !message.contains("testing"),
        "{message}"
    );
    moto.restart();
    moto.py(seed);
    // Backoff after failures is capped at 5 minutes.
    cluster.wait_for(
        "Ready=True once AWS is back",
        Duration::from_secs(400),
        || ready(&cluster).filter(|r| r == "True"),
    );
}

fn git_in(dir: &std::path::Path, args: &[&str]) {
    let ok = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "e2e")
        .env("GIT_AUTHOR_EMAIL", "e2e@example.com")
        .env("GIT_COMMITTER_NAME", "e2e")
        .env("GIT_COMMITTER_EMAIL", "e2e@example.com")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "git {args:?}");
}

/// The GitOps loop against the cluster, following a file:// repository on this host (the
/// controller runs here): commit applied (SOPS Secret decrypted), replicas changed in Git, a
/// file deleted and pruned, an empty render refused, a hand edit reverted, `git revert` rolled
/// back, and a Kustomization of Kustomizations converging. Skipped on clusters that run Flux
/// (it would reconcile the same objects).
#[test]
fn gitops_loop_follows_the_repository() {
    let Some(kubeconfig) = e2e_kubeconfig() else {
        return;
    };
    let suffix = format!("git{:x}", std::process::id());
    let ns = format!("sealkit-e2e-{suffix}");
    let target = format!("sealkit-e2e-{suffix}-app");
    let mut cluster = Cluster {
        kubeconfig,
        namespaces: vec![ns.clone(), target.clone()],
        controller: None,
    };
    if cluster
        .kubectl(
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
        || cluster
            .kubectl(&["get", "namespace", "flux-system"], None)
            .is_ok()
    {
        eprintln!(
            "skipped: this cluster runs Flux, which would reconcile the test's Kustomizations too"
        );
        return;
    }
    cluster.install_crds(
        &[
            "gitrepositories.source.toolkit.fluxcd.io.yaml",
            "kustomizations.kustomize.toolkit.fluxcd.io.yaml",
        ],
        "kustomizations",
    );
    cluster
        .kubectl(&["create", "namespace", &ns], None)
        .expect("namespace");

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
    git_in(r, &["init", "-q", "-b", "main"]);
    git_in(r, &["add", "-A"]);
    git_in(r, &["commit", "-q", "-m", "app"]);

    let agekey = std::fs::read_to_string(&key).expect("key");
    let manifests = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: sops-age, namespace: {ns}}}
stringData:
  age.agekey: |
{key}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: repo, namespace: {ns}, labels: {{sealkit-e2e: "{suffix}"}}}}
spec:
  interval: 5s
  url: file://{url}
  ref: {{branch: main}}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {{name: app, namespace: {ns}, labels: {{sealkit-e2e: "{suffix}"}}}}
spec:
  interval: 5s
  path: ./app
  prune: true
  targetNamespace: {target}
  sourceRef: {{kind: GitRepository, name: repo}}
  decryption: {{provider: sops, secretRef: {{name: sops-age}}}}
"#,
        key = agekey
            .lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
        url = r.display(),
    );
    cluster
        .kubectl(&["create", "namespace", &target], None)
        .expect("target namespace");
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&manifests))
        .expect("apply Flux objects");
    let (port, metrics_port) = (free_port(), free_port());
    let cache = tempfile::tempdir().expect("cache");
    let args: Vec<String> = [
        "--key-namespace",
        &ns,
        "--watch-namespace",
        &ns,
        "--selector",
        &format!("sealkit-e2e={suffix}"),
        "--key-size",
        "2048",
        "--leader-elect=false",
        "--external-secrets=false",
        "--gitops-cache-dir",
        &cache.path().display().to_string(),
        "--listen-addr",
        &format!("127.0.0.1:{port}"),
        "--listen-metrics-addr",
        &format!("127.0.0.1:{metrics_port}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    cluster.controller = Some(start_controller(&cluster, &suffix, &args));
    let get = |c: &Cluster, what: &[&str]| -> Option<String> {
        let mut a = vec!["-n", &target, "get"];
        a.extend_from_slice(what);
        c.kubectl(&a, None).ok()
    };
    let ready_message = |c: &Cluster| {
        c.kubectl(
            &[
                "-n",
                &ns,
                "get",
                "kustomization",
                "app",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].message}",
            ],
            None,
        )
        .unwrap_or_default()
    };
    cluster.wait_for("the app applied", Duration::from_secs(120), || {
        get(
            &cluster,
            &["deployment", "web", "-o", "jsonpath={.spec.replicas}"],
        )
        .filter(|r| r == "1")
    });
    // base64("from-git-sops")
    assert_eq!(
        get(
            &cluster,
            &["secret", "creds", "-o", "jsonpath={.data.password}"]
        )
        .as_deref(),
        Some("ZnJvbS1naXQtc29wcw==")
    );

    // Replicas changed in Git; a file deleted.
    let d = std::fs::read_to_string(r.join("app/deploy.yaml"))
        .expect("r")
        .replace("replicas: 1", "replicas: 2");
    std::fs::write(r.join("app/deploy.yaml"), d).expect("w");
    std::fs::remove_file(r.join("app/extra.yaml")).expect("rm");
    git_in(r, &["commit", "-q", "-am", "two replicas, no extra"]);
    cluster.wait_for("replicas 2", Duration::from_secs(90), || {
        get(
            &cluster,
            &["deployment", "web", "-o", "jsonpath={.spec.replicas}"],
        )
        .filter(|r| r == "2")
    });
    cluster.wait_for("extra pruned", Duration::from_secs(90), || {
        get(&cluster, &["configmap", "extra"])
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
        get(
            &cluster,
            &["configmap", "settings", "-o", "jsonpath={.data.mode}"],
        )
        .filter(|m| m == "gitops")
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
        get(&cluster, &["deployment", "web"]).is_some(),
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
    let parent = format!(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {{name: parent, namespace: {ns}, labels: {{sealkit-e2e: \"{suffix}\"}}}}\nspec:\n  interval: 5s\n  path: ./children\n  prune: true\n  sourceRef: {{kind: GitRepository, name: repo}}\n"
    );
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&parent))
        .expect("parent");
    cluster.wait_for("the child's ConfigMap", Duration::from_secs(120), || {
        get(&cluster, &["configmap", "from-child"]).map(|_| ())
    });
}
