//! kubeseal's cluster path: `--fetch-cert`, `--validate` and `--re-encrypt` reach the controller
//! through the API server's service proxy (`services/…/proxy`). The API server refuses loopback
//! endpoints, so the test gives the controller an address of its own: a veth pair whose host end
//! holds a private /30 that nothing else on the machine uses, the other end in a network
//! namespace the test creates and deletes. `SEALKIT_E2E_CONTROLLER_IP` overrides this with an
//! address of this host that the API server reaches (for a remote cluster).

use std::process::Command;
use std::time::Duration;

use sealkit_tests::sealkit_bin;

use crate::harness::{Rbac, cluster};

/// A veth pair with `ip` on the host end, removed on drop.
struct Veth {
    netns: String,
    host_if: String,
    ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Veth {
    fn create() -> Result<Veth, String> {
        let id = std::process::id();
        let (netns, host_if, peer_if) = (
            format!("sealkit-e2e-{id:x}"),
            format!("skh{:x}", id & 0xffffff),
            format!("skn{:x}", id & 0xffffff),
        );
        // 10.213.X.0/30: X from the pid, so concurrent runs do not collide.
        let subnet = format!("10.213.{}", id % 250 + 1);
        let v = Veth {
            netns,
            host_if,
            ip: format!("{subnet}.1"),
        };
        ip(&["netns", "add", &v.netns])?;
        ip(&[
            "link", "add", &v.host_if, "type", "veth", "peer", "name", &peer_if, "netns", &v.netns,
        ])?;
        ip(&["addr", "add", &format!("{}/30", v.ip), "dev", &v.host_if])?;
        ip(&["link", "set", &v.host_if, "up"])?;
        ip(&[
            "-n",
            &v.netns,
            "addr",
            "add",
            &format!("{subnet}.2/30"),
            "dev",
            &peer_if,
        ])?;
        ip(&["-n", &v.netns, "link", "set", &peer_if, "up"])?;
        Ok(v)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it ours.
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.netns]);
    }
}

#[test]
fn validate_and_re_encrypt_through_the_service_proxy() {
    let Some(mut cluster) = cluster("px") else {
        return;
    };
    let (host_ip, _veth) = match std::env::var("SEALKIT_E2E_CONTROLLER_IP") {
        Ok(ip) => (ip, None),
        Err(_) => match Veth::create() {
            Ok(v) => (v.ip.clone(), Some(v)),
            Err(e) => {
                sealkit_skip::missing(
                    "a network namespace (root and iproute2)",
                    format!("{e}; or set SEALKIT_E2E_CONTROLLER_IP"),
                );
                return;
            }
        },
    };
    let suffix = cluster.suffix.clone();
    let ns = cluster.namespace(&format!("sealkit-e2e-{suffix}"));
    cluster.install_crds(&["sealedsecrets.bitnami.com.yaml"]);
    let identity = cluster.controller_identity(&ns, Rbac::Namespaced);
    let selector = format!("sealkit-e2e={suffix}");
    let c = cluster.start_controller_on(
        &host_ip,
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
        ],
        &[],
    );
    let port = cluster.controller(c).http;
    // What the cluster would have for the controller's Pod: the API server proxies only to an
    // endpoint address that names a Pod of the Service's namespace holding that IP. There is
    // no kubelet here, so the Pod stays Pending and its IP is set through the status
    // subresource; the Service has no selector and hand-made Endpoints.
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sealed-secrets-controller-0\n  namespace: {ns}\nspec:\n  containers:\n  - name: controller\n    image: ghcr.io/sealkit/sealkit-controller:0.1.0\n"
    ));
    cluster
        .kubectl(
            &[
                "-n",
                &ns,
                "patch",
                "pod",
                "sealed-secrets-controller-0",
                "--subresource=status",
                "--type=merge",
                "-p",
                &format!(r#"{{"status":{{"podIP":"{host_ip}","podIPs":[{{"ip":"{host_ip}"}}]}}}}"#),
            ],
            None,
        )
        .expect("pod IP");
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: sealed-secrets-controller\n  namespace: {ns}\nspec:\n  ports:\n  - name: http\n    port: 8080\n    targetPort: {port}\n---\napiVersion: v1\nkind: Endpoints\nmetadata:\n  name: sealed-secrets-controller\n  namespace: {ns}\nsubsets:\n- addresses:\n  - ip: {host_ip}\n    targetRef: {{kind: Pod, name: sealed-secrets-controller-0, namespace: {ns}}}\n  ports:\n  - name: http\n    port: {port}\n"
    ));
    let kc = cluster.kubeconfig.display().to_string();
    let seal_args = [
        "--controller-namespace",
        ns.as_str(),
        "--controller-name",
        "sealed-secrets-controller",
        "--kubeconfig",
        kc.as_str(),
    ];
    let sealkit = |args: &[&str], stdin: &[u8]| {
        let mut a: Vec<&str> = args.to_vec();
        a.extend_from_slice(&seal_args);
        sealkit_tests::run(Command::new(sealkit_bin()).args(&a), stdin)
    };
    let cert = cluster.wait_for(
        "the certificate through the proxy",
        Duration::from_secs(60),
        || {
            let out = sealkit(&["seal", "--fetch-cert"], b"");
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    );
    assert!(cert.contains("BEGIN CERTIFICATE"));
    assert_eq!(
        Some(cert.as_str()),
        crate::harness::http(&host_ip, port, "GET", "/v1/cert.pem", b"")
            .map(|(_, b)| b)
            .as_deref(),
        "the proxied certificate is the controller's"
    );
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: {ns}\nstringData:\n  password: proxied\n"
    );
    let out = sealkit(&["seal", "-o", "yaml"], secret.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sealed = out.stdout;
    let out = sealkit(&["seal", "--validate"], &sealed);
    assert!(
        out.status.success(),
        "validate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tampered = String::from_utf8_lossy(&sealed)
        .replace(&format!("namespace: {ns}"), "namespace: elsewhere");
    let out = sealkit(&["seal", "--validate"], tampered.as_bytes());
    assert_eq!(
        out.status.code(),
        Some(1),
        "a copy for another namespace does not validate"
    );
    let out = sealkit(&["seal", "--re-encrypt", "-o", "yaml"], &sealed);
    assert!(
        out.status.success(),
        "re-encrypt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resealed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(resealed.contains("kind: SealedSecret"));
    assert_ne!(resealed.as_bytes(), &sealed[..], "fresh ciphertext");
    // The re-encrypted document still opens: it validates too.
    let out = sealkit(&["seal", "--validate"], resealed.as_bytes());
    assert!(
        out.status.success(),
        "validate the re-encrypted: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
