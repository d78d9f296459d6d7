//! The ExternalSecret syncer on the real API server, with `moto_server` as AWS (the controller
//! runs on this host, so it reaches moto on 127.0.0.1) and `deploy/namespaced/`'s identity (Roles
//! in one namespace, `--watch-namespace`): `data` with properties and a template, `dataFrom`
//! extract and find, Parameter Store, a changed value arriving within one refresh interval,
//! `deletionPolicy: Delete`, an outage that keeps the last good Secret, and recovery. The
//! controller's identity cannot read Secrets in any other namespace.

use std::time::{Duration, Instant};

use crate::harness::{Cluster, Rbac, cluster, kubectl_with};

fn data(c: &Cluster, ns: &str, secret: &str, key: &str) -> Option<String> {
    use base64::Engine as _;
    let b64 = c.get(ns, &["secret", secret], &format!("{{.data.{key}}}"))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    String::from_utf8(raw).ok()
}

#[test]
fn external_secrets_follow_aws_and_survive_an_outage() {
    let Some(mut cluster) = cluster("es") else {
        return;
    };
    let Some(mut moto) = sealkit_tests::Moto::start() else {
        return;
    };
    let suffix = cluster.suffix.clone();
    let ns = cluster.namespace(&format!("sealkit-e2e-{suffix}"));
    let other = cluster.namespace(&format!("sealkit-e2e-other-{suffix}"));
    cluster.install_crds(&[
        "externalsecrets.external-secrets.io.yaml",
        "secretstores.external-secrets.io.yaml",
        "clustersecretstores.external-secrets.io.yaml",
    ]);
    let identity = cluster.controller_identity(&ns, Rbac::Namespaced);
    let seed = r#"
sm.create_secret(Name="e2e/db", SecretString=json.dumps({"password": "from-aws-1", "user": "app"}))
sm.create_secret(Name="e2e/config", SecretString=json.dumps({"a": "1", "b": "2"}))
for n in ["e2e/found/one", "e2e/found/two"]:
    sm.create_secret(Name=n, SecretString="v-" + n.split("/")[-1], Tags=[{"Key": "team", "Value": "e2e"}])
sm.create_secret(Name="e2e/untagged", SecretString="no")
sm.create_secret(Name="e2e/gone", SecretString="soon-gone")
ssm.put_parameter(Name="/e2e/ssm/one", Value="param-one", Type="SecureString")
ssm.put_parameter(Name="/e2e/ssm/two", Value="param-two", Type="String")
"#;
    moto.py(seed);
    cluster.apply(&format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: awssm, namespace: {ns}}}
stringData: {{access-key: testing, secret-access-key: testing}}
---
apiVersion: v1
kind: Secret
metadata: {{name: untouchable, namespace: {other}}}
stringData: {{token: other-tenant-token}}
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
kind: SecretStore
metadata: {{name: ssm, namespace: {ns}}}
spec:
  provider:
    aws:
      service: ParameterStore
      region: us-east-1
      auth:
        secretRef:
          accessKeyIDSecretRef: {{name: awssm, key: access-key}}
          secretAccessKeySecretRef: {{name: awssm, key: secret-access-key}}
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {{name: db, namespace: {ns}}}
spec:
  refreshInterval: 10s
  secretStoreRef: {{name: aws, kind: SecretStore}}
  target:
    name: db-creds
    template:
      data:
        password: "{{{{ .password }}}}"
        dsn: "postgres://{{{{ .user }}}}:{{{{ .password }}}}@db:5432/app"
  data:
    - secretKey: password
      remoteRef: {{key: e2e/db, property: password}}
    - secretKey: user
      remoteRef: {{key: e2e/db, property: user}}
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {{name: extract, namespace: {ns}}}
spec:
  refreshInterval: 1h
  secretStoreRef: {{name: aws}}
  dataFrom:
    - extract: {{key: e2e/config}}
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {{name: found, namespace: {ns}}}
spec:
  refreshInterval: 1h
  secretStoreRef: {{name: aws}}
  dataFrom:
    - find:
        tags: {{team: e2e}}
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {{name: params, namespace: {ns}}}
spec:
  refreshInterval: 1h
  secretStoreRef: {{name: ssm}}
  data:
    - secretKey: one
      remoteRef: {{key: /e2e/ssm/one}}
  dataFrom:
    - find:
        path: /e2e/ssm/
        name: {{regexp: "two$"}}
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {{name: gone, namespace: {ns}}}
spec:
  refreshInterval: 5s
  secretStoreRef: {{name: aws}}
  target: {{deletionPolicy: Delete}}
  data:
    - secretKey: value
      remoteRef: {{key: e2e/gone}}
"#
    ));
    let ns_arg = ns.as_str();
    let c = cluster.start_controller(
        &identity,
        &[
            "--key-namespace",
            ns_arg,
            "--watch-namespace",
            ns_arg,
            "--key-size",
            "2048",
            "--leader-elect=false",
            "--gitops=false",
        ],
        &[("AWS_ENDPOINT_URL", &moto.endpoint)],
    );

    // data + property + template.
    cluster.wait_for("the synced Secret", Duration::from_secs(60), || {
        data(&cluster, &ns, "db-creds", "password").filter(|p| p == "from-aws-1")
    });
    assert_eq!(
        data(&cluster, &ns, "db-creds", "dsn").as_deref(),
        Some("postgres://app:from-aws-1@db:5432/app")
    );
    // dataFrom extract.
    cluster.wait_for("extract", Duration::from_secs(60), || {
        data(&cluster, &ns, "extract", "b").filter(|v| v == "2")
    });
    assert_eq!(data(&cluster, &ns, "extract", "a").as_deref(), Some("1"));
    // dataFrom find by tags (names made key-safe as ESO does): the untagged secret stays out.
    cluster.wait_for("find", Duration::from_secs(60), || {
        data(&cluster, &ns, "found", "e2e_found_two").filter(|v| v == "v-two")
    });
    assert_eq!(
        data(&cluster, &ns, "found", "e2e_found_one").as_deref(),
        Some("v-one")
    );
    let keys = cluster
        .get(&ns, &["secret", "found"], "{.data}")
        .unwrap_or_default();
    assert!(!keys.contains("untagged"), "{keys}");
    // Parameter Store: a SecureString by name and a parameter found by path.
    cluster.wait_for("Parameter Store", Duration::from_secs(60), || {
        data(&cluster, &ns, "params", "one").filter(|v| v == "param-one")
    });
    let params = cluster
        .get(&ns, &["secret", "params"], "{.data}")
        .unwrap_or_default();
    assert!(params.contains("two"), "the found parameter: {params}");

    // A value changed in AWS reaches the Secret within one refresh interval (10 s, +10 %
    // jitter), although the shared cache keeps values for 30 s.
    cluster.wait_for("Ready=True", Duration::from_secs(30), || {
        Some(cluster.condition(&ns, "externalsecret", "db", "Ready")).filter(|(s, _)| s == "True")
    });
    moto.py(r#"sm.put_secret_value(SecretId="e2e/db", SecretString=json.dumps({"password": "from-aws-2", "user": "app"}))"#);
    let changed = Instant::now();
    cluster.wait_for("the changed value", Duration::from_secs(40), || {
        data(&cluster, &ns, "db-creds", "password").filter(|p| p == "from-aws-2")
    });
    // One interval (10 s) plus its jitter (≤ 1 s) plus the time to reconcile and to see it
    // here on a loaded machine; a cache that ignores the interval (its 30 s TTL) takes ~30 s.
    assert!(
        changed.elapsed() < Duration::from_secs(20),
        "the change took {:?}: more than one refresh interval",
        changed.elapsed()
    );
    assert_eq!(
        data(&cluster, &ns, "db-creds", "dsn").as_deref(),
        Some("postgres://app:from-aws-2@db:5432/app")
    );

    // deletionPolicy Delete: the remote secret is deleted, so is the Secret.
    cluster.wait_for("gone synced", Duration::from_secs(30), || {
        data(&cluster, &ns, "gone", "value").filter(|v| v == "soon-gone")
    });
    moto.py(r#"sm.delete_secret(SecretId="e2e/gone", ForceDeleteWithoutRecovery=True)"#);
    cluster.wait_for(
        "the Secret deleted with its remote",
        Duration::from_secs(40),
        || {
            cluster
                .kubectl(&["-n", &ns, "get", "secret", "gone"], None)
                .is_err()
                .then_some(())
        },
    );
    let reason = cluster
        .get(
            &ns,
            &["externalsecret", "gone"],
            "{.status.conditions[0].reason}",
        )
        .unwrap_or_default();
    assert_eq!(reason, "SecretDeleted");

    // Outage: the last good Secret stays, Ready=False says why without a value or credential.
    moto.stop();
    let (_, message) = cluster.wait_for(
        "Ready=False while AWS is down",
        Duration::from_secs(40),
        || {
            Some(cluster.condition(&ns, "externalsecret", "db", "Ready"))
                .filter(|(s, _)| s == "False")
        },
    );
    assert_eq!(
        data(&cluster, &ns, "db-creds", "password").as_deref(),
        Some("from-aws-2"),
        "the last good Secret is kept"
    );
    for leak in ["from-aws", "testing", "app:"] {
        assert!(!message.contains(leak), "status leaks {leak:?}: {message}");
    }
    // Recovery (moto comes back empty: seed it again with a third value).
    moto.restart();
    moto.py(&seed.replace("from-aws-1", "from-aws-3"));
    cluster.wait_for(
        "Ready=True once AWS is back",
        Duration::from_secs(120),
        || {
            Some(cluster.condition(&ns, "externalsecret", "db", "Ready"))
                .filter(|(s, _)| s == "True")
        },
    );
    cluster.wait_for("the value after recovery", Duration::from_secs(40), || {
        data(&cluster, &ns, "db-creds", "password").filter(|p| p == "from-aws-3")
    });

    // The controller's identity (deploy/namespaced) cannot read another namespace's Secrets.
    let denied = kubectl_with(
        &identity,
        &["-n", &other, "get", "secret", "untouchable"],
        None,
    )
    .expect_err("the namespaced identity must not read other namespaces");
    assert!(denied.contains("forbidden"), "{denied}");
    assert!(
        kubectl_with(&identity, &["get", "secrets", "-A"], None).is_err(),
        "no cluster-wide Secret list"
    );
    let log = cluster.controller(c).log();
    for leak in ["from-aws-", "param-one", "other-tenant-token", "soon-gone"] {
        assert!(!log.contains(leak), "the controller log leaks {leak:?}");
    }
}
