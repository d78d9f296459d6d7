//! `.sourceignore` at the source root, in gitignore syntax (the subset Flux users write):
//! comments, blank lines, `!` negation, a trailing `/` for directories only, a `/` inside the
//! pattern anchoring it to the root, `*`, `?` and `**`. `.git/` is always ignored.

use std::path::Path;

use regex::Regex;

use crate::RenderError;
use crate::sandbox::Sandbox;

struct Rule {
    re: Regex,
    dir_only: bool,
    negate: bool,
}

/// Compiled ignore rules.
pub struct SourceIgnore {
    rules: Vec<Rule>,
}

fn glob_to_regex(glob: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = glob.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' if chars.get(i + 1) == Some(&'*') => {
                // `**/` matches any number of directories, `**` anything.
                if chars.get(i + 2) == Some(&'/') {
                    out.push_str("(?:.*/)?");
                    i += 3;
                } else {
                    out.push_str(".*");
                    i += 2;
                }
                continue;
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            c => out.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    out
}

impl SourceIgnore {
    /// Parses rules from text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        for line in std::iter::once(".git/").chain(text.lines()) {
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negate, line) = match line.strip_prefix('!') {
                Some(l) => (true, l),
                None => (false, line),
            };
            let (dir_only, line) = match line.strip_suffix('/') {
                Some(l) => (true, l),
                None => (false, line),
            };
            let anchored = line.contains('/');
            let body = glob_to_regex(line.trim_start_matches('/'));
            let re = if anchored {
                format!("^{body}$")
            } else {
                format!("(?:^|/){body}$")
            };
            let re = Regex::new(&re).map_err(|e| format!("pattern {line:?}: {e}"))?;
            rules.push(Rule {
                re,
                dir_only,
                negate,
            });
        }
        Ok(SourceIgnore { rules })
    }

    /// Reads `root/.sourceignore` (none: only `.git/`), plus `extra` patterns. A
    /// `.sourceignore` that is a symlink out of the root is refused.
    pub fn load(root: &Path, extra: Option<&str>) -> Result<Self, RenderError> {
        Self::from_sandbox(&Sandbox::open(root)?, extra)
    }

    pub(crate) fn from_sandbox(sb: &Sandbox, extra: Option<&str>) -> Result<Self, RenderError> {
        let path = Path::new(".sourceignore");
        let mut text = match sb.read_optional(path)? {
            Some(b) => String::from_utf8(b).map_err(|_| RenderError::Syntax {
                path: ".sourceignore".into(),
                message: "not UTF-8 text".into(),
            })?,
            None => String::new(),
        };
        if let Some(e) = extra {
            text.push('\n');
            text.push_str(e);
        }
        Self::parse(&text).map_err(|message| RenderError::Syntax {
            path: ".sourceignore".into(),
            message,
        })
    }

    /// Whether `rel` (a `/`-separated path relative to the root) is ignored.
    pub fn is_ignored(&self, rel: &str, is_dir: bool) -> bool {
        let rel = rel.replace('\\', "/");
        let mut ignored = false;
        for r in &self.rules {
            if r.dir_only && !is_dir {
                continue;
            }
            if r.re.is_match(&rel) {
                ignored = !r.negate;
            }
        }
        ignored
    }
}
