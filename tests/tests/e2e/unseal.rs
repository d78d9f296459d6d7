//! The unseal loop on the real API server, with `deploy/rbac/`'s cluster-wide identity: unseal,
//! self-heal, truthful status, a strict copy that refuses to open and says why, a hand edit
//! undone, exactly one RSA operation per value on the first start and none after a restart (no
//! Secret written either), key rotation, and leader hand-over between two replicas.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::{Rbac, cluster, http_get, seal, with_label};

/// `namespace/name` → resourceVersion of every Secret labelled for this test.
fn secret_versions(c: &crate::harness::Cluster, label: &str) -> BTreeMap<String, String> {
    c.kubectl(
        &[
            "get",
            "secrets",
            "-A",
            "-l",
            label,
            "-o",
            "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}={.metadata.resourceVersion}{\"\\n\"}{end}",
        ],
        None,
    )
    .unwrap_or_default()
    .lines()
    .filter_map(|l| l.split_once('='))
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[test]
fn controller_unseals_heals_and_explains() {
    let Some(mut cluster) = cluster("un") else {
        return;
    };
    let suffix = cluster.suffix.clone();
    let ns = cluster.namespace(&format!("sealkit-e2e-{suffix}"));
    let other = cluster.namespace(&format!("sealkit-e2e-other-{suffix}"));
    cluster.install_crds(&["sealedsecrets.bitnami.com.yaml"]);
    let identity = cluster.controller_identity(&ns, Rbac::ClusterWide);
    let selector = format!("sealkit-e2e={suffix}");
    let base_args = [
        "--key-namespace",
        &ns,
        "--selector",
        &selector,
        "--key-size",
        "2048",
        "--external-secrets=false",
        "--gitops=false",
    ];
    let mut args: Vec<&str> = base_args.to_vec();
    // Restarts below must take over at once, not wait for the killed process's Lease.
    args.push("--leader-elect=false");
    let mut c = cluster.start_controller(&identity, &args, &[]);
    let port = cluster.controller(c).http;
    let cert_url = format!("http://127.0.0.1:{port}/v1/cert.pem");
    cluster.wait_for("the certificate", Duration::from_secs(60), || {
        http_get(port, "/v1/cert.pem")
    });

    // Three SealedSecrets; one with 150 values.
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: {ns}\n  labels:\n    sealkit-e2e: \"{suffix}\"\nstringData:\n  password: e2e-hunter2\n"
    );
    let many: String = (0..150).map(|i| format!("  k{i}: value-{i}\n")).collect();
    let big = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: many\n  namespace: {ns}\n  labels:\n    sealkit-e2e: \"{suffix}\"\nstringData:\n{many}"
    );
    let typed = format!(
        "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/basic-auth\nmetadata:\n  name: basic\n  namespace: {ns}\n  labels:\n    sealkit-e2e: \"{suffix}\"\nstringData:\n  username: admin\n  password: basic-pw\n"
    );
    let label = |y: &str| with_label(y, "sealkit-e2e", &suffix);
    let sealed = label(&seal(&cert_url, &secret).expect("seal db"));
    for doc in [
        &sealed,
        &label(&seal(&cert_url, &big).expect("seal many")),
        &label(&seal(&cert_url, &typed).expect("seal basic")),
    ] {
        cluster.apply(doc);
    }

    let read_password = |c: &crate::harness::Cluster| -> Option<String> {
        c.get(&ns, &["secret", "db"], "{.data.password}")
            .filter(|s| !s.is_empty())
    };
    let pw = cluster.wait_for("the unsealed Secret", Duration::from_secs(60), || {
        read_password(&cluster)
    });
    assert_eq!(pw, "ZTJlLWh1bnRlcjI=", "base64 of e2e-hunter2");
    cluster.wait_for("all three Secrets", Duration::from_secs(60), || {
        (secret_versions(&cluster, &selector).len() == 3).then_some(())
    });
    assert_eq!(
        cluster
            .get(&ns, &["secret", "many"], "{.data.k149}")
            .as_deref(),
        Some("dmFsdWUtMTQ5")
    );
    // Each value is opened once: the reconciles that follow our own writes (Secret and status
    // watch events) find the Secret up to date without any RSA work.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        cluster.controller(c).rsa_ops(),
        Some(1 + 150 + 2),
        "one RSA operation per sealed value on the first start"
    );

    // A restart with nothing changed: every object is checked again, without a single RSA
    // private-key operation and without writing any Secret.
    let before = secret_versions(&cluster, &selector);
    cluster.kill_controller(c);
    c = cluster.start_controller(&identity, &args, &[]);
    cluster.wait_for(
        "every object reconciled after the restart",
        Duration::from_secs(60),
        || {
            (cluster
                .controller(c)
                .metric("sealkit_reconcile_duration_seconds_count")?
                >= 3.0)
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        cluster.controller(c).rsa_ops(),
        Some(0),
        "a restart must not decrypt unchanged objects"
    );
    assert_eq!(
        secret_versions(&cluster, &selector),
        before,
        "a restart must not write unchanged Secrets"
    );
    let port = cluster.controller(c).http;
    let cert_url = format!("http://127.0.0.1:{port}/v1/cert.pem");

    // Self-heal: delete the Secret; it comes back.
    cluster
        .kubectl(&["-n", &ns, "delete", "secret", "db"], None)
        .expect("delete");
    let pw = cluster.wait_for("the restored Secret", Duration::from_secs(60), || {
        read_password(&cluster)
    });
    assert_eq!(pw, "ZTJlLWh1bnRlcjI=");
    let (status, _) = cluster.wait_for("Synced=True", Duration::from_secs(30), || {
        Some(cluster.condition(&ns, "sealedsecret", "db", "Synced")).filter(|(s, _)| s == "True")
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
    cluster.apply(&copy);
    let (_, message) =
        cluster.wait_for("Synced=False on the copy", Duration::from_secs(60), || {
            Some(cluster.condition(&other, "sealedsecret", "db", "Synced"))
                .filter(|(s, _)| s == "False")
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

    // Rotation: a cutoff time forces a new key; new seals use it, old values still open.
    let old_cert = http_get(port, "/v1/cert.pem").expect("cert");
    std::thread::sleep(Duration::from_secs(2));
    let cutoff = String::from_utf8_lossy(
        &std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .expect("date")
            .stdout,
    )
    .trim()
    .to_string();
    cluster.kill_controller(c);
    let mut rotated = args.clone();
    rotated.extend(["--key-cutoff-time", &cutoff]);
    c = cluster.start_controller(&identity, &rotated, &[]);
    let port = cluster.controller(c).http;
    let cert_url2 = format!("http://127.0.0.1:{port}/v1/cert.pem");
    let new_cert = cluster.wait_for("a new sealing key", Duration::from_secs(120), || {
        http_get(port, "/v1/cert.pem").filter(|c| *c != old_cert)
    });
    assert_ne!(new_cert, old_cert);
    drop(cert_url);
    let secret2 = secret
        .replace("name: db", "name: db2")
        .replace("e2e-hunter2", "second-value");
    cluster.apply(&label(&seal(&cert_url2, &secret2).expect("seal db2")));
    cluster.wait_for("db2", Duration::from_secs(60), || {
        cluster
            .get(&ns, &["secret", "db2"], "{.data.password}")
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

    // Two replicas with leader election: only one of them writes.
    cluster.kill_controller(c);
    let replicas: Vec<usize> = ["e2e-a", "e2e-b"]
        .iter()
        .map(|id| {
            let mut a: Vec<&str> = base_args.to_vec();
            a.extend(["--leader-elect=true", "--identity", id]);
            cluster.start_controller(&identity, &a, &[])
        })
        .collect();
    let requests = |cl: &crate::harness::Cluster, r: usize| {
        cl.controller(r)
            .metric("sealed_secrets_controller_unseal_requests_total")
            .map(|v| v as u64)
    };
    let secret3 = secret
        .replace("name: db", "name: db3")
        .replace("e2e-hunter2", "third-value");
    // Every replica serves the certificate; seal with the first one's.
    let replica_cert = format!(
        "http://127.0.0.1:{}/v1/cert.pem",
        cluster.controller(replicas[0]).http
    );
    let sealed3 = cluster.wait_for("a sealed db3", Duration::from_secs(60), || {
        seal(&replica_cert, &secret3)
    });
    cluster.apply(&label(&sealed3));
    cluster.wait_for(
        "db3 from the elected leader",
        Duration::from_secs(120),
        || {
            cluster
                .get(&ns, &["secret", "db3"], "{.data.password}")
                .filter(|p| p == "dGhpcmQtdmFsdWU=")
        },
    );
    let counts: Vec<u64> = replicas
        .iter()
        .map(|r| requests(&cluster, *r).unwrap_or(0))
        .collect();
    assert_eq!(
        counts.iter().filter(|c| **c > 0).count(),
        1,
        "exactly one replica unsealed: {counts:?}"
    );

    // Hand-over: kill the leader without a goodbye; the follower takes the Lease once it expires
    // (30 s lease) and unseals what arrives next.
    let leader = replicas[counts.iter().position(|c| *c > 0).unwrap_or(0)];
    let follower = if leader == replicas[0] {
        replicas[1]
    } else {
        replicas[0]
    };
    cluster.kill_controller(leader);
    let killed = std::time::Instant::now();
    let secret4 = secret
        .replace("name: db", "name: db4")
        .replace("e2e-hunter2", "fourth-value");
    let follower_cert = format!(
        "http://127.0.0.1:{}/v1/cert.pem",
        cluster.controller(follower).http
    );
    let sealed4 = seal(&follower_cert, &secret4).expect("the follower serves the certificate");
    cluster.apply(&label(&sealed4));
    cluster.wait_for("db4 from the new leader", Duration::from_secs(90), || {
        cluster
            .get(&ns, &["secret", "db4"], "{.data.password}")
            .filter(|p| p == "Zm91cnRoLXZhbHVl")
    });
    assert!(
        killed.elapsed() < Duration::from_secs(60),
        "the follower took over within the lease duration (+ renew grace): {:?}",
        killed.elapsed()
    );
    assert!(
        requests(&cluster, follower).unwrap_or(0) > 0,
        "the former follower unsealed db4"
    );
}
