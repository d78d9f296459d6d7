//! File and stream I/O shared by the commands: named inputs, atomic outputs.
//!
//! Outputs are written to a temporary file in the target directory and renamed over the
//! target, so a failure (or a crash) never leaves a partial or truncated file behind.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::CliError;

/// Where input came from, for messages. (No Debug: the text may hold secrets.)
#[derive(Clone)]
pub struct Input {
    /// Display name: the path, or `<stdin>`.
    pub name: String,
    /// The path, if a file.
    pub path: Option<PathBuf>,
    /// The text.
    pub text: String,
}

/// Reads a file, or stdin when `path` is `None` or `-`.
pub fn read_input(path: Option<&Path>) -> Result<Input, CliError> {
    match path {
        Some(p) if p.as_os_str() != "-" => {
            let name = p.display().to_string();
            let bytes =
                fs::read(p).map_err(|e| CliError::io_at(&format!("cannot read {name}"), &e))?;
            let text = String::from_utf8(bytes).map_err(|_| {
                CliError::input(format!("{name}: not UTF-8 text (expected YAML or JSON)"))
            })?;
            Ok(Input {
                name,
                path: Some(p.to_path_buf()),
                text,
            })
        }
        _ => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::io_at("cannot read <stdin>", &e))?;
            Ok(Input {
                name: "<stdin>".into(),
                path: None,
                text,
            })
        }
    }
}

/// Reads a file's bytes with a named error.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, CliError> {
    fs::read(path).map_err(|e| CliError::io_at(&format!("cannot read {}", path.display()), &e))
}

/// Reads a file, refusing one larger than `limit` bytes with a clear error (before reading it).
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, CliError> {
    if let Ok(meta) = fs::metadata(path)
        && meta.len() > limit
    {
        return Err(CliError::input(format!(
            "{}: the file is {} MiB; this command handles files up to {} MiB",
            path.display(),
            meta.len() >> 20,
            limit >> 20
        )));
    }
    read_bytes(path)
}

/// Whether two paths name the same file (when both exist) or the same path text.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Writes `bytes` to `path` atomically. With `mode`, the file gets that mode whether or not it
/// existed (plaintext outputs pass 0600); without, an existing file keeps its permissions and a
/// new one gets 0644. The temporary file is created 0600, so the content is never readable by
/// others, even before the final mode is set.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<(), CliError> {
    let name = path.display().to_string();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let err = |what: &str, e: std::io::Error| {
        CliError::io_at(&format!("cannot write {name} ({what})"), &e)
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".sealkit-")
        .tempfile_in(&dir)
        .map_err(|e| err("creating a temporary file", e))?;
    tmp.write_all(bytes).map_err(|e| err("writing", e))?;
    tmp.as_file().sync_all().map_err(|e| err("syncing", e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let perms = match (mode, fs::metadata(path)) {
            (Some(m), _) => fs::Permissions::from_mode(m),
            (None, Ok(meta)) => meta.permissions(),
            (None, Err(_)) => fs::Permissions::from_mode(0o644),
        };
        fs::set_permissions(tmp.path(), perms).map_err(|e| err("setting permissions", e))?;
    }
    tmp.persist(path)
        .map_err(|e| err("renaming into place", e.error))?;
    Ok(())
}

/// Writes to `path` atomically, or to stdout when `None`.
pub fn write_output(path: Option<&Path>, bytes: &[u8]) -> Result<(), CliError> {
    match path {
        Some(p) if p.as_os_str() != "-" => write_atomic(p, bytes, None),
        _ => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)
                .and_then(|_| out.flush())
                .map_err(|e| CliError::io_at("cannot write to stdout", &e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_keeps_mode() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("out.yaml");
        write_atomic(&p, b"one", None).expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        write_atomic(&p, b"two", None).expect("write");
        assert_eq!(fs::read(&p).expect("read"), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&p).expect("meta").permissions().mode() & 0o777,
                0o600
            );
        }
        // No temporary files left behind.
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}
