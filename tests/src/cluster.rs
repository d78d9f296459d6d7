//! Pieces shared by the e2e suite and the cluster benchmarks: a local control plane
//! (`shared/k8s/control-plane`: kube-apiserver + kube-controller-manager v1.28.7 on etcd),
//! the `sealkit-controller` binary of this tree, plain-HTTP probes of its ports and metrics.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::workspace;

/// A control plane started for this process, stopped on drop.
pub struct ControlPlane {
    dir: tempfile::TempDir,
    tool: PathBuf,
    /// Its admin kubeconfig.
    pub kubeconfig: PathBuf,
}

impl ControlPlane {
    /// Starts one (about 12 s), or says why it cannot.
    pub fn up() -> Result<ControlPlane, String> {
        let tool = crate::shared()
            .map(|s| s.join("k8s/control-plane"))
            .filter(|t| t.exists())
            .ok_or("shared/k8s/control-plane not found (set SEALKIT_SHARED)")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new(&tool)
            .arg("up")
            .arg(dir.path())
            .output()
            .map_err(|e| format!("{}: {e}", tool.display()))?;
        if !out.status.success() {
            return Err(format!(
                "control-plane up failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let kubeconfig = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Ok(ControlPlane {
            dir,
            tool,
            kubeconfig,
        })
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new(&self.tool)
            .arg("down")
            .arg(self.dir.path())
            .output();
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The `sealkit-controller` binary of this source tree, built once per process (`release`
/// for benchmarks), so a stale binary is never tested.
pub fn controller_bin(release: bool) -> PathBuf {
    static DEBUG: OnceLock<PathBuf> = OnceLock::new();
    static RELEASE: OnceLock<PathBuf> = OnceLock::new();
    let cell = if release { &RELEASE } else { &DEBUG };
    cell.get_or_init(|| build_bin("sealkit-controller", "sealkit-controller", release))
        .clone()
}

/// Builds `bin` of `package` in this workspace and returns its path.
pub fn build_bin(package: &str, bin: &str, release: bool) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec!["build", "-q", "-p", package, "--bin", bin];
    if release {
        args.push("--release");
    }
    let ok = Command::new(cargo)
        .args(&args)
        .current_dir(workspace())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "building {bin} failed");
    // This test or bench binary is target/<profile>/deps/<name>.
    let target = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| workspace().join("target"));
    let path = target
        .join(if release { "release" } else { "debug" })
        .join(bin);
    assert!(path.exists(), "{} not found", path.display());
    path
}

/// One HTTP/1.1 request; (status code, body).
pub fn http(host: &str, port: u16, method: &str, path: &str, body: &[u8]) -> Option<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect((host, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let out = String::from_utf8_lossy(&out);
    let (head, body) = out.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// GET over plain HTTP on 127.0.0.1; the body of a 200 answer.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    http("127.0.0.1", port, "GET", path, b"").and_then(|(code, body)| (code == 200).then_some(body))
}

/// The value of `series` (an exact series with labels, or a bare name: its first sample) in a
/// Prometheus text exposition.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| {
            l.strip_prefix(series).is_some_and(|r| {
                r.starts_with(' ') || (!series.contains('{') && r.starts_with('{'))
            })
        })?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// The samples of `name` summed by the value of `label` (e.g. requests by verb), from a
/// Prometheus text exposition. Samples without the label are left out.
pub fn sum_by_label(
    text: &str,
    name: &str,
    label: &str,
) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let key = format!("{label}=\"");
    for l in text.lines() {
        let Some(rest) = l.strip_prefix(name) else {
            continue;
        };
        let Some(labels) = rest.strip_prefix('{') else {
            continue;
        };
        let Some((labels, value)) = labels.rsplit_once("} ") else {
            continue;
        };
        let Some(v) = labels.split(&key).nth(1).and_then(|r| r.split('"').next()) else {
            continue;
        };
        let Ok(n) = value.trim().parse::<f64>() else {
            continue;
        };
        *out.entry(v.to_string()).or_insert(0.0) += n;
    }
    out
}

/// `after − before` per key (keys of `after`), rounded to whole counts.
pub fn delta(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> std::collections::BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - before.get(k).copied().unwrap_or(0.0)).max(0.0) as u64,
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// How many samples of `name` have the value `value` (e.g. objects with a condition gauge at 1).
pub fn count_samples(text: &str, name: &str, value: f64) -> usize {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with('{')))
        .filter(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) == Some(value))
        .count()
}

/// Resident memory of a process: (current, peak) in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// kubectl with a given kubeconfig; stdout, or the error with stderr.
pub fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    use std::process::Stdio;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("kubectl: {e}"))?;
    if let Some(input) = stdin {
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
