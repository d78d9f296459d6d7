//! Git references from a manifest: the ref a GitRepository follows, checked by git's rules
//! before any use, and resolved against what `git ls-remote` listed.

use super::GitError;

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
    /// From a `spec.ref` (Flux's precedence: commit, name, semver, tag, branch; default
    /// `master`), checked: an error names the field and says why.
    pub fn from_spec(r: Option<&sealkit_api::GitRepositoryRef>) -> Result<GitRef, GitError> {
        let r = GitRef::from_spec_unchecked(r);
        r.check()?;
        Ok(r)
    }

    fn from_spec_unchecked(r: Option<&sealkit_api::GitRepositoryRef>) -> GitRef {
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

    /// Whether every value is what git will take as a ref (or object id), and nothing else.
    pub fn check(&self) -> Result<(), GitError> {
        match self {
            GitRef::Branch(b) => ref_name("spec.ref.branch", "refs/heads/", b),
            GitRef::Tag(t) => ref_name("spec.ref.tag", "refs/tags/", t),
            GitRef::Name(n) => {
                if n != "HEAD" && !n.starts_with("refs/") {
                    return Err(GitError(format!(
                        "spec.ref.name {:?} is not a full reference name (refs/…)",
                        shown(n)
                    )));
                }
                ref_name("spec.ref.name", "", n)
            }
            GitRef::Semver(range) => semver_req(range).map(|_| ()),
            GitRef::Commit { sha, branch } => {
                object_id("spec.ref.commit", sha)?;
                match branch {
                    Some(b) => ref_name("spec.ref.branch", "refs/heads/", b),
                    None => Ok(()),
                }
            }
        }
    }
}

/// A value as messages show it: at most 80 characters, control characters escaped (`{:?}`).
pub(super) fn shown(v: &str) -> String {
    let short: String = v.chars().take(80).collect();
    if short.len() < v.len() {
        format!("{short}…")
    } else {
        short
    }
}

/// A 40 (SHA-1) or 64 (SHA-256) digit hex object id.
pub(super) fn object_id(field: &str, sha: &str) -> Result<(), GitError> {
    if matches!(sha.len(), 40 | 64) && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(GitError(format!(
            "{field} {:?} is not a commit: it must be a hex object id (40 or 64 hex digits)",
            shown(sha)
        )))
    }
}

/// `prefix + value` must be a valid ref name by git's rules, and `value` may not look like an
/// option.
pub(super) fn ref_name(field: &str, prefix: &str, value: &str) -> Result<(), GitError> {
    let bad = |why: String| {
        Err(GitError(format!(
            "{field} {:?} is not a valid Git reference name: {why}",
            shown(value)
        )))
    };
    if value.is_empty() {
        return bad("it is empty".into());
    }
    if value.starts_with('-') {
        return bad("it starts with '-'".into());
    }
    let full = format!("{prefix}{value}");
    match gix_validate::reference::name(full.as_bytes().into()) {
        Ok(_) => Ok(()),
        Err(e) => bad(e.to_string()),
    }
}

pub(super) fn semver_req(range: &str) -> Result<semver::VersionReq, GitError> {
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
    semver::VersionReq::parse(&normalized).map_err(|e| {
        GitError(format!(
            "spec.ref.semver {:?} is not a semver range: {e}",
            shown(range)
        ))
    })
}

/// Resolves a ref to (refname to fetch, commit, revision string).
pub(super) fn resolve(
    refs: &[(String, String)],
    r: &GitRef,
) -> Result<(String, String, String), GitError> {
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
            // Tag names come from the remote: only valid ref names are candidates.
            let best = refs
                .iter()
                .filter_map(|(n, sha)| {
                    let tag = n.strip_prefix("refs/tags/")?;
                    ref_name("tag", "refs/tags/", tag).ok()?;
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
            let sha = sha.to_ascii_lowercase();
            let refname = match branch {
                Some(b) => format!("refs/heads/{b}"),
                None => String::new(),
            };
            let rev = match branch {
                Some(b) => format!("{b}@sha1:{sha}"),
                None => format!("sha1:{sha}"),
            };
            Ok((refname, sha, rev))
        }
    }
}
