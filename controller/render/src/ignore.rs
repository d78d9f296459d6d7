//! Which files of a source are not part of it, as Flux's source-controller decides when it
//! packages a GitRepository artifact: gitignore syntax (matched by the `ignore` crate, the
//! matcher ripgrep uses), in this order, later patterns overruling earlier ones (`!` negates):
//!
//! 1. `.git/`, always;
//! 2. Flux's default exclusions — VCS files, images and archives, CI configuration, and tool
//!    configuration such as `.sops.yaml` and `.goreleaser.yml` — unless the GitRepository
//!    gives `spec.ignore`, which replaces them (as in Flux);
//! 3. the patterns of `.sourceignore` at the source root;
//! 4. `spec.ignore`.

use std::path::Path;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::RenderError;
use crate::sandbox::Sandbox;

/// Flux's default exclusions (source-controller's `sourceignore` package): VCS, file types
/// that are never manifests, CI configuration, and tool configuration files.
pub const FLUX_DEFAULTS: &[&str] = &[
    ".git/",
    ".gitignore",
    ".gitmodules",
    ".gitattributes",
    "*.jpg",
    "*.jpeg",
    "*.gif",
    "*.png",
    "*.wmv",
    "*.flv",
    "*.tar.gz",
    "*.zip",
    ".github/",
    ".circleci/",
    ".travis.yml",
    ".gitlab-ci.yml",
    "appveyor.yml",
    ".drone.yml",
    "cloudbuild.yaml",
    "codeship-services.yml",
    "codeship-steps.yml",
    "**/.goreleaser.yml",
    "**/.sops.yaml",
    "**/.flux.yaml",
];

/// Compiled ignore rules.
pub struct SourceIgnore {
    matcher: Gitignore,
}

impl SourceIgnore {
    /// Rules from `.sourceignore` text, after Flux's defaults (see the module documentation).
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::build(Some(text), None)
    }

    /// `.git/`, then Flux's defaults unless `extra` is given, then `sourceignore`, then `extra`.
    fn build(sourceignore: Option<&str>, extra: Option<&str>) -> Result<Self, String> {
        let mut b = GitignoreBuilder::new("");
        let defaults: &[&str] = if extra.is_some() {
            &[".git/"]
        } else {
            FLUX_DEFAULTS
        };
        let lines = defaults
            .iter()
            .copied()
            .chain(sourceignore.unwrap_or("").lines())
            .chain(extra.unwrap_or("").lines());
        for line in lines {
            b.add_line(None, line)
                .map_err(|e| format!("pattern {:?}: {e}", line.trim()))?;
        }
        let matcher = b.build().map_err(|e| e.to_string())?;
        Ok(SourceIgnore { matcher })
    }

    /// Reads `root/.sourceignore` (none: the defaults only), plus `extra` patterns (a
    /// GitRepository's `spec.ignore`). A `.sourceignore` that is a symlink out of the root is
    /// refused.
    pub fn load(root: &Path, extra: Option<&str>) -> Result<Self, RenderError> {
        Self::from_sandbox(&Sandbox::open(root)?, extra)
    }

    pub(crate) fn from_sandbox(sb: &Sandbox, extra: Option<&str>) -> Result<Self, RenderError> {
        let path = Path::new(".sourceignore");
        let text = match sb.read_optional(path)? {
            Some(b) => Some(String::from_utf8(b).map_err(|_| RenderError::Syntax {
                path: ".sourceignore".into(),
                message: "not UTF-8 text".into(),
            })?),
            None => None,
        };
        Self::build(text.as_deref(), extra).map_err(|message| RenderError::Syntax {
            path: ".sourceignore (or spec.ignore)".into(),
            message,
        })
    }

    /// Whether `rel` (a `/`-separated path relative to the root) is ignored, itself or through
    /// a directory it is in.
    pub fn is_ignored(&self, rel: &str, is_dir: bool) -> bool {
        let rel = rel.replace('\\', "/");
        let rel = rel.trim_start_matches('/');
        if rel.is_empty() {
            return false;
        }
        self.matcher
            .matched_path_or_any_parents(rel, is_dir)
            .is_ignore()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flux_defaults_then_sourceignore_then_spec_ignore() {
        let d = SourceIgnore::parse("").expect("defaults");
        assert!(d.is_ignored(".sops.yaml", false));
        assert!(d.is_ignored("apps/prod/.sops.yaml", false));
        assert!(d.is_ignored(".github/workflows/ci.yaml", false));
        assert!(d.is_ignored(".git", true));
        assert!(d.is_ignored("logo.png", false));
        assert!(!d.is_ignored("apps/deploy.yaml", false));

        // .sourceignore adds patterns and may negate a default.
        let s = SourceIgnore::parse("/drafts/\n!keep.png\n*.tmp.yaml\n").expect("parse");
        assert!(s.is_ignored("drafts", true));
        assert!(s.is_ignored("drafts/x.yaml", false));
        assert!(
            !s.is_ignored("apps/drafts/x.yaml", false),
            "anchored to the root"
        );
        assert!(s.is_ignored("a/b/scratch.tmp.yaml", false));
        assert!(!s.is_ignored("keep.png", false));
        assert!(s.is_ignored("other.png", false));

        // spec.ignore replaces the defaults (not `.git/`) and comes last.
        let e = SourceIgnore::build(Some("x.yaml\n"), Some("/*\n!/apps/\n")).expect("extra");
        assert!(!e.is_ignored("apps/.sops.yaml", false));
        assert!(e.is_ignored("README.md", false));
        assert!(e.is_ignored(".git/config", false));
        assert!(e.is_ignored("apps/x.yaml", false));
        assert!(!e.is_ignored("apps/y.yaml", false));
    }
}
