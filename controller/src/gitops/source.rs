//! Fetching a Git source: resolve the ref with `git ls-remote`, and fetch only when the commit
//! changed (shallow, depth 1), into a local artifact cache (`<cache>/<repo hash>/<commit>/`).
//!
//! This shells out to the `git` CLI (as Argo CD's repo-server does) rather than linking a Git
//! library: https, ssh and `git://` transports, proxies and credentials then behave exactly as
//! users know them from `git`, and the image ships `git`. Credentials never go on a command line
//! or into a URL: HTTP headers are passed through `GIT_CONFIG_*` environment variables of the
//! child, and SSH keys through a private (0600) temporary file named in `GIT_SSH_COMMAND`.
//! Error messages are git's, with any `user:password@` in URLs redacted.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sealkit_keys::secret::{ExposeSecret, SecretString};

/// Which revision to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRef {
    /// A branch.
    Branch(String),
    /// A tag.
    Tag(String),
    /// The highest tag matching a semver range.
    Semver(String),
    /// A full reference name (`refs/heads/main`, `refs/pull/1/head`).
    Name(String),
    /// A commit, optionally on a branch.
    Commit {
        /// The SHA.
        sha: String,
        /// The branch it is on (fetched fully to reach it).
        branch: Option<String>,
    },
}

impl GitRef {
    /// From a `spec.ref` (Flux's precedence: commit, name, semver, tag, branch; default `master`).
    pub fn from_spec(r: Option<&sealkit_api::GitRepositoryRef>) -> GitRef {
        let Some(r) = r else {
            return GitRef::Branch("master".into());
        };
        if let Some(sha) = r.commit.clone().filter(|s| !s.is_empty()) {
            return GitRef::Commit {
                sha,
                branch: r.branch.clone().filter(|b| !b.is_empty()),
            };
        }
        if let Some(n) = r.name.clone().filter(|s| !s.is_empty()) {
            return GitRef::Name(n);
        }
        if let Some(s) = r.semver.clone().filter(|s| !s.is_empty()) {
            return GitRef::Semver(s);
        }
        if let Some(t) = r.tag.clone().filter(|s| !s.is_empty()) {
            return GitRef::Tag(t);
        }
        GitRef::Branch(
            r.branch
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "master".into()),
        )
    }
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
}

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

fn auth_env(auth: &GitAuth) -> Result<Env, GitError> {
    let mut vars = vec![
        ("GIT_TERMINAL_PROMPT".to_string(), "0".to_string()),
        ("GIT_ASKPASS".to_string(), "true".to_string()),
    ];
    let mut files = Vec::new();
    let mut config: Vec<(String, String)> = Vec::new();
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
    if !config.is_empty() {
        vars.push(("GIT_CONFIG_COUNT".into(), config.len().to_string()));
        for (i, (k, v)) in config.into_iter().enumerate() {
            vars.push((format!("GIT_CONFIG_KEY_{i}"), k));
            vars.push((format!("GIT_CONFIG_VALUE_{i}"), v));
        }
    }
    if let Some(id) = &auth.ssh_identity {
        let mut key = id.expose_secret().to_string();
        if !key.ends_with('\n') {
            key.push('\n');
        }
        let key_file = private_file(key.as_bytes())?;
        let mut ssh = format!(
            "ssh -i '{}' -o IdentitiesOnly=yes -o BatchMode=yes",
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
    })
}

/// Runs git with a deadline; stdout on success, the (redacted) stderr otherwise.
fn git(
    args: &[&str],
    cwd: Option<&Path>,
    env: &Env,
    deadline: Instant,
) -> Result<String, GitError> {
    let mut cmd = Command::new("git");
    cmd.args(args)
        .envs(env.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| GitError(format!("cannot run git: {e} (hint: install git)")))?;
    // Read output on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = std::io::Read::read_to_string(o, &mut s);
        }
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = err.as_mut() {
            let _ = std::io::Read::read_to_string(e, &mut s);
        }
        s
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(GitError(format!(
                    "git {} timed out",
                    args.first().unwrap_or(&"")
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(GitError(format!("git: {e}"))),
        }
    };
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    if status.success() {
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

fn semver_req(range: &str) -> Result<semver::VersionReq, GitError> {
    // Flux (Masterminds) separates AND-ed comparators by spaces; Rust's semver by commas.
    let normalized = if range.contains(',') {
        range.to_string()
    } else {
        let mut parts: Vec<String> = Vec::new();
        for tok in range.split_whitespace() {
            match parts.last_mut() {
                Some(last)
                    if matches!(last.as_str(), ">" | ">=" | "<" | "<=" | "=" | "~" | "^") =>
                {
                    last.push_str(tok)
                }
                _ => parts.push(tok.to_string()),
            }
        }
        parts.join(", ")
    };
    semver::VersionReq::parse(&normalized)
        .map_err(|e| GitError(format!("ref.semver {range:?} is not a semver range: {e}")))
}

/// Resolves a ref to (refname to fetch, commit, revision string).
fn resolve(refs: &[(String, String)], r: &GitRef) -> Result<(String, String, String), GitError> {
    let find = |name: &str| refs.iter().find(|(n, _)| n == name).map(|(_, s)| s.clone());
    match r {
        GitRef::Branch(b) => {
            let full = format!("refs/heads/{b}");
            let sha = find(&full)
                .ok_or_else(|| GitError(format!("branch {b:?} not found in the repository")))?;
            Ok((full, sha.clone(), format!("{b}@sha1:{sha}")))
        }
        GitRef::Tag(t) => {
            let full = format!("refs/tags/{t}");
            let sha = find(&full)
                .ok_or_else(|| GitError(format!("tag {t:?} not found in the repository")))?;
            Ok((full, sha.clone(), format!("{t}@sha1:{sha}")))
        }
        GitRef::Name(n) => {
            let sha = find(n)
                .ok_or_else(|| GitError(format!("reference {n:?} not found in the repository")))?;
            Ok((n.clone(), sha.clone(), format!("{n}@sha1:{sha}")))
        }
        GitRef::Semver(range) => {
            let req = semver_req(range)?;
            let best = refs
                .iter()
                .filter_map(|(n, sha)| {
                    let tag = n.strip_prefix("refs/tags/")?;
                    let v = semver::Version::parse(tag.trim_start_matches('v')).ok()?;
                    req.matches(&v).then(|| (v, tag.to_string(), sha.clone()))
                })
                .max_by(|a, b| a.0.cmp(&b.0))
                .ok_or_else(|| GitError(format!("no tag matches the semver range {range:?}")))?;
            Ok((
                format!("refs/tags/{}", best.1),
                best.2.clone(),
                format!("{}@sha1:{}", best.1, best.2),
            ))
        }
        GitRef::Commit { sha, branch } => {
            let refname = match branch {
                Some(b) => format!("refs/heads/{b}"),
                None => String::new(),
            };
            let rev = match branch {
                Some(b) => format!("{b}@sha1:{sha}"),
                None => format!("sha1:{sha}"),
            };
            Ok((refname, sha.clone(), rev))
        }
    }
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
    let env = auth_env(auth)?;
    let refs = ls_remote(url, &env, deadline)?;
    let (refname, commit, revision) = resolve(&refs, r)?;
    let base = repo_dir(cache, url);
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
        git(&["init", "-q", "--bare"], Some(&repo), &env, deadline)?;
    }
    match r {
        GitRef::Commit { sha, branch: None } => {
            git(
                &["fetch", "-q", "--depth", "1", "--no-tags", "--", url, sha],
                Some(&repo),
                &env,
                deadline,
            )?;
        }
        GitRef::Commit { .. } => {
            // The commit may be anywhere on the branch: fetch its history.
            git(
                &["fetch", "-q", "--no-tags", "--", url, &refname],
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
        &[&work_tree, "checkout", "-q", "-f", &commit, "--", "."],
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
