//! Fetching a Git source: resolve the ref with `git ls-remote`, and fetch only when the commit
//! changed (shallow, depth 1), into a local artifact cache (`<cache>/<repo hash>/<commit>/`).
//!
//! This shells out to the `git` CLI (as Argo CD's repo-server does) rather than linking a Git
//! library: https, ssh and `git://` transports, proxies and credentials then behave exactly as
//! users know them from `git`, and the image ships `git`. Credentials never go on a command line
//! or into a URL: HTTP headers are passed through `GIT_CONFIG_*` environment variables of the
//! child, and SSH keys through a private (0600) temporary file named in `GIT_SSH_COMMAND`.
//! Error messages are git's, with any `user:password@` in URLs redacted.
//!
//! Everything that reaches git from a manifest is checked first, and git is fenced in:
//! - `spec.ref.commit` must be a hex object id (it names a cache directory); branch, tag,
//!   `ref.name` and the tags a semver range picks must be valid ref names by git's rules
//!   (gix-validate) and may not start with `-`; the URL must be one of the known transports.
//!   A bad value is an error naming the field, before git runs.
//! - Values go after `--` / `--end-of-options`, never where git parses options.
//! - git runs with an environment of our making: no system, global or XDG configuration
//!   (`GIT_CONFIG_NOSYSTEM`, `GIT_CONFIG_GLOBAL=/dev/null`, an empty `HOME`), hooks off
//!   (`core.hooksPath=/dev/null`, no templates), no submodules, no fsmonitor, and
//!   `protocol.allow=never` but for the one transport the URL names (`file` only for a
//!   `file://` URL). Each git process leads its own process group, killed on timeout.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sealkit_keys::secret::{ExposeSecret, SecretString};

mod refs;
pub use refs::GitRef;
use refs::{object_id, resolve, shown};

/// The transport a URL names, which is the only one git may use for it.
fn transport(url: &str) -> Result<&'static str, GitError> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    let t = match scheme.as_deref() {
        Some("https") => "https",
        Some("http") => "http",
        Some("ssh") => "ssh",
        Some("git") => "git",
        Some("file") => "file",
        Some(_) => "",
        // `<helper>::<address>` runs a remote helper (`ext::` runs a command): never.
        None if url.contains("::") => "",
        // scp-like `[user@]host:path` (ssh), as git reads it: a colon before any slash.
        None if url
            .find(':')
            .is_some_and(|c| c > 0 && !url[..c].contains('/') && c + 1 < url.len()) =>
        {
            "ssh"
        }
        None => "",
    };
    if t.is_empty() || url.starts_with('-') || url.chars().any(char::is_control) {
        return Err(GitError(format!(
            "spec.url {:?} is not supported: use an https://, http://, ssh://, git@host:path, git:// or file:// URL",
            redact(&shown(url))
        )));
    }
    Ok(t)
}

/// Checks a GitRepository's URL before any use (an error names `spec.url`).
pub fn check_url(url: &str) -> Result<(), GitError> {
    transport(url).map(|_| ())
}

/// Credentials from the GitRepository's `secretRef`.
#[derive(Default)]
pub struct GitAuth {
    /// `username` + `password`.
    pub basic: Option<(String, SecretString)>,
    /// `bearerToken`.
    pub bearer: Option<SecretString>,
    /// `identity` (an OpenSSH private key).
    pub ssh_identity: Option<SecretString>,
    /// `known_hosts`.
    pub known_hosts: Option<String>,
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitAuth")
            .field("basic_user", &self.basic.as_ref().map(|b| &b.0))
            .field("bearer", &self.bearer.is_some())
            .field("ssh_identity", &self.ssh_identity.is_some())
            .finish()
    }
}

/// A fetch failure (git's message, redacted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GitError(pub String);

/// A fetched revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// `main@sha1:<commit>` (Flux's format).
    pub revision: String,
    /// The commit.
    pub commit: String,
    /// The checked-out tree.
    pub dir: PathBuf,
    /// Whether this call fetched (false: the commit was already in the cache).
    pub fetched: bool,
}

/// Removes `user:password@` from URLs in a message.
pub fn redact(msg: &str) -> String {
    static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?i)([a-z][a-z0-9+.-]*://)[^/@\s]+@").expect("static regex")
    });
    RE.replace_all(msg, "${1}***@").into_owned()
}

struct Env {
    vars: Vec<(String, String)>,
    _files: Vec<tempfile::TempPath>,
    /// An empty `HOME` (and XDG config home): no user configuration, ssh files or credential
    /// stores are found.
    _home: tempfile::TempDir,
}

/// Variables of the controller's environment git may see: how to reach the network (proxies,
/// CA bundles the operator set), nothing that changes what git does with a repository.
const PASSED_THROUGH: [&str; 11] = [
    "PATH",
    "LANG",
    "LC_ALL",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

fn private_file(contents: &[u8]) -> Result<tempfile::TempPath, GitError> {
    let mut f = tempfile::Builder::new()
        .prefix("sealkit-git-")
        .tempfile()
        .map_err(|e| GitError(format!("cannot create a temporary file: {e}")))?;
    // tempfile creates files readable by the owner only.
    f.write_all(contents)
        .map_err(|e| GitError(format!("cannot write a temporary file: {e}")))?;
    Ok(f.into_temp_path())
}

fn auth_env(auth: &GitAuth, transport: &str) -> Result<Env, GitError> {
    let home = tempfile::Builder::new()
        .prefix("sealkit-git-home-")
        .tempdir()
        .map_err(|e| GitError(format!("cannot create a temporary directory: {e}")))?;
    let home_dir = home.path().display().to_string();
    let mut vars: Vec<(String, String)> = PASSED_THROUGH
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    vars.extend(
        [
            ("GIT_TERMINAL_PROMPT", "0"),
            ("GIT_ASKPASS", "true"),
            ("SSH_ASKPASS", "true"),
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("GIT_CONFIG_GLOBAL", "/dev/null"),
            ("GIT_ATTR_NOSYSTEM", "1"),
            ("GIT_NO_REPLACE_OBJECTS", "1"),
            ("GIT_PROTOCOL_FROM_USER", "0"),
            ("HOME", &home_dir),
            ("XDG_CONFIG_HOME", &home_dir),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let mut files = Vec::new();
    // Set through GIT_CONFIG_* (highest precedence short of the command line); nothing else
    // configures git here.
    let mut config: Vec<(String, String)> = [
        ("protocol.allow", "never"),
        (&format!("protocol.{transport}.allow"), "always"),
        ("core.hooksPath", "/dev/null"),
        ("core.fsmonitor", "false"),
        ("submodule.recurse", "false"),
        ("fetch.recurseSubmodules", "false"),
        ("credential.helper", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some((user, pass)) = &auth.basic {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{user}:{}", pass.expose_secret()));
        config.push((
            "http.extraHeader".into(),
            format!("Authorization: Basic {token}"),
        ));
    }
    if let Some(t) = &auth.bearer {
        config.push((
            "http.extraHeader".into(),
            format!("Authorization: Bearer {}", t.expose_secret()),
        ));
    }
    vars.push(("GIT_CONFIG_COUNT".into(), config.len().to_string()));
    for (i, (k, v)) in config.into_iter().enumerate() {
        vars.push((format!("GIT_CONFIG_KEY_{i}"), k));
        vars.push((format!("GIT_CONFIG_VALUE_{i}"), v));
    }
    if let Some(id) = &auth.ssh_identity {
        let mut key = id.expose_secret().to_string();
        if !key.ends_with('\n') {
            key.push('\n');
        }
        let key_file = private_file(key.as_bytes())?;
        // -F none: no ssh_config of the controller's user or system (ProxyCommand etc.).
        let mut ssh = format!(
            "ssh -F none -i '{}' -o IdentitiesOnly=yes -o BatchMode=yes",
            key_file.display()
        );
        match &auth.known_hosts {
            Some(kh) => {
                let kh_file = private_file(kh.as_bytes())?;
                ssh.push_str(&format!(
                    " -o UserKnownHostsFile='{}' -o StrictHostKeyChecking=yes",
                    kh_file.display()
                ));
                files.push(kh_file);
            }
            None => {
                return Err(GitError(
                    "the secretRef has an ssh identity but no known_hosts entry; host keys must be pinned".into(),
                ));
            }
        }
        files.push(key_file);
        vars.push(("GIT_SSH_COMMAND".into(), ssh));
    }
    Ok(Env {
        vars,
        _files: files,
        _home: home,
    })
}

/// Runs git with a deadline, in the environment of `env` only; stdout on success, the
/// (redacted) stderr otherwise.
fn git(
    args: &[&str],
    cwd: Option<&Path>,
    env: &Env,
    deadline: Instant,
) -> Result<String, GitError> {
    let mut cmd = Command::new("git");
    cmd.args(args)
        .env_clear()
        .envs(env.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let what = args
        .iter()
        .find(|a| !a.starts_with('-'))
        .copied()
        .unwrap_or("");
    let out =
        sealkit_render::process::run(&mut cmd, deadline.saturating_duration_since(Instant::now()))
            .map_err(|e| match e {
                sealkit_render::process::RunError::Spawn(e) => {
                    GitError(format!("cannot run git: {e} (hint: install git)"))
                }
                sealkit_render::process::RunError::TimedOut => {
                    GitError(format!("git {what} timed out"))
                }
                sealkit_render::process::RunError::Wait(e) => GitError(format!("git: {e}")),
            })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(stdout)
    } else {
        let msg = stderr.trim();
        Err(GitError(redact(if msg.is_empty() {
            "git failed"
        } else {
            msg
        })))
    }
}

/// `(ref name, commit)` pairs of the remote (tags peeled).
fn ls_remote(url: &str, env: &Env, deadline: Instant) -> Result<Vec<(String, String)>, GitError> {
    let out = git(&["ls-remote", "--", url], None, env, deadline)?;
    let mut refs: Vec<(String, String)> = Vec::new();
    for line in out.lines() {
        let Some((sha, name)) = line.split_once('\t') else {
            continue;
        };
        if let Some(base) = name.strip_suffix("^{}") {
            // A peeled annotated tag: the commit it points to wins.
            refs.retain(|(n, _)| n != base);
            refs.push((base.to_string(), sha.to_string()));
        } else if !refs.iter().any(|(n, _)| n == name) {
            refs.push((name.to_string(), sha.to_string()));
        }
    }
    Ok(refs)
}

/// Where the checkout of `commit` of `url` is kept in `cache`: the only directory an artifact
/// of that revision may be read from.
pub fn artifact_dir(cache: &Path, url: &str, commit: &str) -> Result<PathBuf, GitError> {
    object_id("the artifact's commit", commit)?;
    Ok(repo_dir(cache, url)
        .join("artifacts")
        .join(commit.to_ascii_lowercase()))
}

/// One lock per cached repository: two fetches of it at once (the source loop and a
/// Kustomization) would trip over each other's git locks and artifact directories.
fn repo_lock(dir: &Path) -> std::sync::Arc<std::sync::Mutex<()>> {
    static LOCKS: std::sync::LazyLock<
        std::sync::Mutex<std::collections::HashMap<PathBuf, std::sync::Arc<std::sync::Mutex<()>>>>,
    > = std::sync::LazyLock::new(Default::default);
    let mut locks = LOCKS.lock().unwrap_or_else(|p| p.into_inner());
    locks.entry(dir.to_path_buf()).or_default().clone()
}

/// The cache directory of a URL.
fn repo_dir(cache: &Path, url: &str) -> PathBuf {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, url.as_bytes());
    let h: String = d.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    cache.join(h)
}

/// Fetches `r` of `url` into the cache, unless that commit is there already.
pub fn fetch(
    url: &str,
    r: &GitRef,
    auth: &GitAuth,
    cache: &Path,
    timeout: Duration,
) -> Result<Fetched, GitError> {
    let deadline = Instant::now() + timeout;
    let transport = transport(url)?;
    r.check()?;
    let env = auth_env(auth, transport)?;
    let refs = ls_remote(url, &env, deadline)?;
    let (refname, commit, revision) = resolve(&refs, r)?;
    // The commit names a directory: whatever the remote answered, only a hex object id.
    object_id("the commit the remote resolved the ref to", &commit)?;
    let commit = commit.to_ascii_lowercase();
    let base = repo_dir(cache, url);
    let lock = repo_lock(&base);
    let _turn = lock.lock().unwrap_or_else(|p| p.into_inner());
    let artifact = base.join("artifacts").join(&commit);
    if artifact.join(".sealkit-complete").is_file() {
        return Ok(Fetched {
            revision,
            commit,
            dir: artifact,
            fetched: false,
        });
    }
    let repo = base.join("repo.git");
    std::fs::create_dir_all(&repo)
        .map_err(|e| GitError(format!("cannot create {}: {e}", repo.display())))?;
    if !repo.join("HEAD").exists() {
        // --template=: no hooks (or anything else) copied from a template directory.
        git(
            &["init", "-q", "--bare", "--template="],
            Some(&repo),
            &env,
            deadline,
        )?;
    }
    match r {
        GitRef::Commit { branch: None, .. } => {
            git(
                &[
                    "fetch",
                    "-q",
                    "--depth",
                    "1",
                    "--no-tags",
                    "--no-recurse-submodules",
                    "--",
                    url,
                    &commit,
                ],
                Some(&repo),
                &env,
                deadline,
            )?;
        }
        GitRef::Commit { .. } => {
            // The commit may be anywhere on the branch: fetch its history.
            git(
                &[
                    "fetch",
                    "-q",
                    "--no-tags",
                    "--no-recurse-submodules",
                    "--",
                    url,
                    &refname,
                ],
                Some(&repo),
                &env,
                deadline,
            )?;
        }
        _ => {
            git(
                &[
                    "fetch",
                    "-q",
                    "--depth",
                    "1",
                    "--no-tags",
                    "--no-recurse-submodules",
                    "--",
                    url,
                    &refname,
                ],
                Some(&repo),
                &env,
                deadline,
            )?;
        }
    }
    let tmp = base.join("artifacts").join(format!(".tmp-{commit}"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)
        .map_err(|e| GitError(format!("cannot create {}: {e}", tmp.display())))?;
    let work_tree = format!("--work-tree={}", tmp.display());
    git(
        &[
            &work_tree,
            "checkout",
            "-q",
            "-f",
            "--no-recurse-submodules",
            "--end-of-options",
            &commit,
            "--",
            ".",
        ],
        Some(&repo),
        &env,
        deadline,
    )
    .map_err(|e| GitError(format!("commit {commit} cannot be checked out: {e}")))?;
    std::fs::write(tmp.join(".sealkit-complete"), revision.as_bytes())
        .map_err(|e| GitError(format!("cannot write the artifact: {e}")))?;
    let _ = std::fs::remove_dir_all(&artifact);
    std::fs::rename(&tmp, &artifact)
        .map_err(|e| GitError(format!("cannot store the artifact: {e}")))?;
    // Keep only this artifact (and the one in use by a running apply, which holds no lock: the
    // next reconcile will use the new one).
    if let Ok(rd) = std::fs::read_dir(base.join("artifacts")) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy() != commit {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(Fetched {
        revision,
        commit,
        dir: artifact,
        fetched: true,
    })
}

#[cfg(test)]
mod tests;
