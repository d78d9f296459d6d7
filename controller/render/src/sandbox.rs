//! Reading a source checkout without ever leaving it. Every path is resolved component by
//! component inside the checkout root (cap-std: `openat2(RESOLVE_BENEATH)` where the kernel
//! has it, a manual walk otherwise), so a symlink that points outside the root (an absolute
//! target, or `..` past the root) or that loops is an error naming the link, never a read of a
//! file elsewhere on the controller's disk. kustomize cannot be given such a handle, so
//! [`Sandbox::check_links`] refuses a tree holding any link out before kustomize runs.

use std::io;
use std::path::{Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, Metadata};

use crate::RenderError;

/// A checkout root, opened once; every read goes through it.
pub(crate) struct Sandbox {
    dir: Dir,
    /// Whether [`Sandbox::check_links`] already passed.
    links_checked: std::cell::Cell<bool>,
}

/// `rel` as errors show it (`.` for the root).
pub(crate) fn shown(rel: &Path) -> String {
    let s = rel.display().to_string();
    if s.is_empty() { ".".into() } else { s }
}

/// Why a path cannot be used, as a render error naming it.
pub(crate) fn refused(rel: &Path, e: &io::Error) -> RenderError {
    let path = shown(rel);
    if is_escape(e) {
        RenderError::Sandbox {
            path,
            message: "leads outside the source (a symlink may only point inside the checkout)"
                .into(),
        }
    } else if is_loop(e) {
        RenderError::Sandbox {
            path,
            message: "is a symlink loop".into(),
        }
    } else {
        RenderError::Io {
            path,
            message: e.to_string(),
        }
    }
}

/// cap-std's "a path led outside of the filesystem" (it carries no OS error number; a real
/// EACCES does).
fn is_escape(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied && e.raw_os_error().is_none()
}

fn is_loop(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

impl Sandbox {
    /// Opens `root` (which may itself be reached through symlinks: it is the caller's choice).
    pub(crate) fn open(root: &Path) -> Result<Sandbox, RenderError> {
        let dir =
            Dir::open_ambient_dir(root, ambient_authority()).map_err(|e| RenderError::Io {
                path: root.display().to_string(),
                message: e.to_string(),
            })?;
        Ok(Sandbox {
            dir,
            links_checked: std::cell::Cell::new(false),
        })
    }

    /// `rel` with every symlink resolved inside the root: its canonical path relative to the
    /// root. An escape or a loop is refused, naming `rel`.
    pub(crate) fn resolve(&self, rel: &Path) -> Result<PathBuf, RenderError> {
        if rel.as_os_str().is_empty() {
            return Ok(PathBuf::new());
        }
        self.dir.canonicalize(rel).map_err(|e| refused(rel, &e))
    }

    /// Metadata of what `rel` points to (symlinks followed inside the root).
    pub(crate) fn metadata(&self, rel: &Path) -> Result<Metadata, RenderError> {
        if rel.as_os_str().is_empty() {
            return self.dir.dir_metadata().map_err(|e| refused(rel, &e));
        }
        self.dir.metadata(rel).map_err(|e| refused(rel, &e))
    }

    /// Metadata of `rel` itself (a symlink is not followed).
    pub(crate) fn symlink_metadata(&self, rel: &Path) -> Result<Metadata, RenderError> {
        self.dir.symlink_metadata(rel).map_err(|e| refused(rel, &e))
    }

    /// Whether `rel` exists as a file (symlinks followed inside the root; an escape or a loop
    /// is an error, not "no").
    pub(crate) fn is_file(&self, rel: &Path) -> Result<bool, RenderError> {
        match self.dir.metadata(rel) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => {
                Ok(false)
            }
            Err(e) => Err(refused(rel, &e)),
        }
    }

    /// The bytes of the file at `rel`.
    pub(crate) fn read(&self, rel: &Path) -> Result<Vec<u8>, RenderError> {
        self.dir.read(rel).map_err(|e| refused(rel, &e))
    }

    /// The text of the file at `rel`; `None` when there is none.
    pub(crate) fn read_optional(&self, rel: &Path) -> Result<Option<Vec<u8>>, RenderError> {
        match self.dir.read(rel) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(refused(rel, &e)),
        }
    }

    /// The entries of the directory at `rel`, sorted by name.
    pub(crate) fn entries(&self, rel: &Path) -> Result<Vec<PathBuf>, RenderError> {
        let rd = if rel.as_os_str().is_empty() {
            self.dir.entries()
        } else {
            self.dir.read_dir(rel)
        }
        .map_err(|e| refused(rel, &e))?;
        let mut names: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| rel.join(e.file_name())))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Refuses the tree when any symlink in it leads outside the root or loops (a dangling
    /// link inside is harmless: nothing can be read through it). Needed before kustomize runs,
    /// which follows links by itself and may reach any directory of the checkout with `../`.
    pub(crate) fn check_links(&self) -> Result<(), RenderError> {
        if self.links_checked.get() {
            return Ok(());
        }
        let mut stack = vec![PathBuf::new()];
        while let Some(dir) = stack.pop() {
            for rel in self.entries(&dir)? {
                let meta = self.symlink_metadata(&rel)?;
                if meta.is_symlink() {
                    match self.dir.canonicalize(&rel) {
                        Ok(_) => {}
                        Err(e) if is_escape(&e) || is_loop(&e) => return Err(refused(&rel, &e)),
                        // Dangling (or through a file): kustomize cannot read through it either.
                        Err(_) => {}
                    }
                } else if meta.is_dir() {
                    stack.push(rel);
                }
            }
        }
        self.links_checked.set(true);
        Ok(())
    }
}

/// Copies the checkout at `from` into the empty directory `to`, so that a render can write
/// (an overlay) without touching the shared cache: regular files and directories as they are,
/// symlinks as symlinks once they are known to resolve inside the checkout (a link out or a
/// loop is refused, a dangling one left out). The copy therefore holds no link out either.
pub fn copy_source(from: &Path, to: &Path) -> Result<(), RenderError> {
    let src = Sandbox::open(from)?;
    let dst = Dir::open_ambient_dir(to, ambient_authority()).map_err(|e| RenderError::Io {
        path: to.display().to_string(),
        message: e.to_string(),
    })?;
    let write_err = |rel: &Path, e: io::Error| RenderError::Io {
        path: shown(rel),
        message: format!("cannot copy: {e}"),
    };
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        for rel in src.entries(&dir)? {
            let meta = src.symlink_metadata(&rel)?;
            if meta.is_symlink() {
                match src.dir.canonicalize(&rel) {
                    Ok(_) => {
                        // Relative (an absolute target never resolves inside): the same text
                        // resolves to the same place in the copy.
                        let target = src.dir.read_link(&rel).map_err(|e| refused(&rel, &e))?;
                        dst.symlink(&target, &rel).map_err(|e| write_err(&rel, e))?;
                    }
                    Err(e) if is_escape(&e) || is_loop(&e) => return Err(refused(&rel, &e)),
                    Err(_) => {}
                }
            } else if meta.is_dir() {
                dst.create_dir(&rel).map_err(|e| write_err(&rel, e))?;
                stack.push(rel);
            } else if meta.is_file() {
                src.dir
                    .copy(&rel, &dst, &rel)
                    .map_err(|e| write_err(&rel, e))?;
            }
        }
    }
    Ok(())
}
