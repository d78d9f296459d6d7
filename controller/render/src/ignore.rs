//! `.sourceignore` at the source root, in gitignore syntax (the subset Flux users write):
//! comments, blank lines, `!` negation, a trailing `/` for directories only, a `/` inside the
//! pattern anchoring it to the root, `*`, `?` and `**`. `.git/` is always ignored.

use std::path::Path;

use regex::Regex;

use crate::RenderError;

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

    /// Reads `root/.sourceignore` (none: only `.git/`), plus `extra` patterns.
    pub fn load(root: &Path, extra: Option<&str>) -> Result<Self, RenderError> {
        let path = root.join(".sourceignore");
        let mut text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(e) = extra {
            text.push('\n');
            text.push_str(e);
        }
        Self::parse(&text).map_err(|message| RenderError::Syntax {
            path: path.display().to_string(),
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
