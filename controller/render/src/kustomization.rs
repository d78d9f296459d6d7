//! What a kustomization may reach, checked before kustomize runs: every base, component,
//! generator, transformer, patch or generator file it names must be a path inside the source.
//! kustomize would otherwise fetch remote bases (`https://…`, `github.com/…`, `git@…`; any
//! entry that is not a local path is tried as a remote Git repository) and remote files
//! (`patches[].path: https://…`), or read directories elsewhere on the disk (an absolute path,
//! `../` past the root). Remote bases are allowed only when the caller says so
//! (`--allow-remote-bases`).

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use crate::RenderError;
use crate::sandbox::{Sandbox, shown};

/// Fields whose entries kustomize loads as kustomizations or resource files, trying an entry
/// that is not a local path as a remote Git repository.
const RESOURCE_FIELDS: [&str; 6] = [
    "resources",
    "bases",
    "components",
    "generators",
    "transformers",
    "validators",
];

/// Top-level fields whose entries are files (kustomize fetches `http(s)://` ones).
const FILE_LISTS: [&str; 3] = ["crds", "configurations", "patchesStrategicMerge"];

/// Names kustomize looks for in a kustomization root.
pub(crate) const FILE_NAMES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// The kustomization file of the directory `dir` (relative to the root), if any.
pub(crate) fn file_of(sb: &Sandbox, dir: &Path) -> Result<Option<PathBuf>, RenderError> {
    for name in FILE_NAMES {
        let p = dir.join(name);
        if sb.is_file(&p)? {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

fn looks_remote(s: &str) -> bool {
    s.contains("://")
        || s.starts_with("git@")
        || s.starts_with("git::")
        || s.starts_with("gh:")
        || s.starts_with("github.com/")
        || s.starts_with("gitlab.com/")
        || s.starts_with("bitbucket.org/")
}

/// `rel` joined to `base` without touching the disk; `None` when `..` climbs past the root.
fn lexical_join(base: &Path, rel: &Path) -> Option<PathBuf> {
    let mut out: Vec<std::ffi::OsString> = base
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out.iter().collect())
}

struct Check<'a> {
    sb: &'a Sandbox,
    allow_remote: bool,
    seen: HashSet<PathBuf>,
}

impl Check<'_> {
    /// One path entry of `file` (in directory `dir`): `field` names it in errors. Returns the
    /// directory to check next when the entry is a local kustomization directory.
    fn entry(
        &self,
        file: &Path,
        dir: &Path,
        field: &str,
        entry: &str,
        resource: bool,
    ) -> Result<Option<PathBuf>, RenderError> {
        let fail = |message: String| RenderError::Kustomize {
            dir: shown(dir),
            message: format!("{}: {field} entry {entry:?} {message}", shown(file)),
        };
        // Inline generator/transformer configurations and patches are not paths.
        if entry.contains('\n') {
            return Ok(None);
        }
        let remote = if resource {
            looks_remote(entry)
        } else {
            entry.starts_with("https://") || entry.starts_with("http://")
        };
        if remote {
            if self.allow_remote {
                return Ok(None);
            }
            return Err(fail(
                "is remote: kustomize would fetch it, and remote bases and files are refused (allow them with --allow-remote-bases)".into(),
            ));
        }
        let path = Path::new(entry);
        if path.is_absolute() {
            return Err(fail("leaves the source (an absolute path)".into()));
        }
        let Some(joined) = lexical_join(dir, path) else {
            return Err(fail("leaves the source".into()));
        };
        match self.sb.resolve(&joined) {
            Ok(canonical) => {
                let is_dir = self.sb.metadata(&canonical)?.is_dir();
                Ok((resource && is_dir).then_some(canonical))
            }
            Err(RenderError::Io { .. }) if resource => {
                if self.allow_remote {
                    return Ok(None);
                }
                Err(fail(
                    "does not exist in the source: kustomize would try it as a remote base, and remote bases are refused (allow them with --allow-remote-bases)".into(),
                ))
            }
            // A missing file: kustomize says so itself.
            Err(RenderError::Io { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn dir(&mut self, dir: &Path) -> Result<(), RenderError> {
        let canonical = self.sb.resolve(dir)?;
        if !self.seen.insert(canonical.clone()) {
            return Ok(());
        }
        let Some(file) = file_of(self.sb, &canonical)? else {
            return Ok(());
        };
        let text = self.sb.read(&file)?;
        let fail = |message: String| RenderError::Kustomize {
            dir: shown(&canonical),
            message: format!("{}: {message}", shown(&file)),
        };
        let text = String::from_utf8(text).map_err(|_| fail("not UTF-8 text".into()))?;
        // What kustomize will parse must be what we check: a file we cannot read the same way
        // is refused rather than passed unchecked.
        let docs = sealkit_keys::seal::manifest::parse_documents(&text)
            .map_err(|e| fail(format!("cannot be checked: {e}")))?;
        let k = match docs.as_slice() {
            [] => return Ok(()),
            [d] => &d.value,
            _ => return Err(fail("holds more than one YAML document".into())),
        };
        let Some(k) = k.as_object() else {
            return Err(fail("is not a mapping".into()));
        };
        if k.contains_key("<<") {
            return Err(fail(
                "uses a YAML merge key at the top level, which sealkit cannot check".into(),
            ));
        }
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        let mut next = Vec::new();
        for field in RESOURCE_FIELDS {
            for e in strings(k.get(field)) {
                if let Some(d) = self.entry(&file, &canonical, field, &e, true)? {
                    next.push(d);
                }
            }
        }
        for field in FILE_LISTS {
            for e in strings(k.get(field)) {
                self.entry(&file, &canonical, field, &e, false)?;
            }
        }
        for field in ["patches", "patchesJson6902", "replacements"] {
            for (i, p) in k
                .get(field)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                if let Some(path) = p.get("path").and_then(Value::as_str) {
                    self.entry(
                        &file,
                        &canonical,
                        &format!("{field}[{i}].path"),
                        path,
                        false,
                    )?;
                }
            }
        }
        if let Some(path) = k
            .get("openapi")
            .and_then(|o| o.get("path"))
            .and_then(Value::as_str)
        {
            self.entry(&file, &canonical, "openapi.path", path, false)?;
        }
        for field in ["configMapGenerator", "secretGenerator"] {
            for (i, g) in k
                .get(field)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let mut files: Vec<String> = strings(g.get("files"))
                    .into_iter()
                    // `[key=]path`
                    .map(|f| f.split_once('=').map_or(f.clone(), |(_, p)| p.to_string()))
                    .collect();
                files.extend(strings(g.get("envs")));
                if let Some(env) = g.get("env").and_then(Value::as_str) {
                    files.push(env.to_string());
                }
                for f in files {
                    self.entry(&file, &canonical, &format!("{field}[{i}]"), &f, false)?;
                }
            }
        }
        for d in next {
            self.dir(&d)?;
        }
        Ok(())
    }
}

/// Checks the kustomization at `dir` (relative to the root) and every local kustomization it
/// reaches.
pub(crate) fn check(sb: &Sandbox, dir: &Path, allow_remote: bool) -> Result<(), RenderError> {
    Check {
        sb,
        allow_remote,
        seen: HashSet::new(),
    }
    .dir(dir)
}
