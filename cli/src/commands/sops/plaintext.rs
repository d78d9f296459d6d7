//! Plaintext that `sops edit` and `sops exec-file` put on disk while the editor or command runs:
//! a private temporary file (0600 in a 0700 directory), wiped and removed when the command ends
//! — and also when sealkit is stopped by SIGINT, SIGTERM or SIGHUP.
//!
//! Drop does not run when a signal kills the process, so while such a file exists those signals
//! are caught (signal-hook) and handled on a thread: it stops the child with SIGTERM, wipes and
//! removes every live temporary directory, and ends the process as the signal would have. One
//! lock orders this against the main thread: creating the file, starting the child and writing
//! the re-encrypted file all happen under it, so a signal either comes first (and nothing is
//! written) or waits until that step is complete.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, kill_process, waitid};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::error::CliError;
use crate::io::write_atomic;

/// What a signal must clean up.
struct Live {
    /// Temporary directories holding plaintext.
    dirs: Vec<PathBuf>,
    /// The editor or command running on one of them.
    child: Option<Pid>,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    dirs: Vec::new(),
    child: None,
});

fn live() -> MutexGuard<'static, Live> {
    // A panic elsewhere must not stop the cleanup.
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Catches the signals (once per process) on a thread that cleans up and exits.
fn install() -> Result<(), CliError> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|e| e.to_string())?;
            std::thread::Builder::new()
                .name("sealkit-signals".into())
                .spawn(move || {
                    if let Some(signal) = signals.forever().next() {
                        on_signal(signal);
                    }
                })
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| CliError::io(format!("cannot set up signal handling: {e}")))
}

fn on_signal(signal: i32) -> ! {
    // Held until the process ends: the main thread starts no child and writes no file after
    // this point.
    let live = live();
    if let Some(pid) = live.child {
        // The plaintext is going away; so does whatever was reading it. (A terminal's Ctrl+C
        // also reached the child, but an editor may ignore SIGINT.)
        let _ = kill_process(pid, Signal::TERM);
    }
    for dir in &live.dirs {
        wipe(dir);
    }
    let name = signal_hook::low_level::signal_name(signal).unwrap_or("a signal");
    let _ = writeln!(
        std::io::stderr(),
        "error: stopped by {name}; the temporary plaintext was removed"
    );
    // End as the signal would have (the shell sees "killed by SIGTERM"); if that fails, the
    // conventional 128 + signal number.
    let _ = signal_hook::low_level::emulate_default_handler(signal);
    std::process::exit(128 + signal)
}

/// Overwrites every regular file in `dir` (the plaintext, and any swap or backup file an editor
/// left) with zeros, then removes the directory. Overwriting in place is best effort: it keeps
/// the bytes out of the page cache and simple filesystems, not out of copy-on-write ones.
fn wipe(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_file()
                && let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&path)
            {
                let zeros = vec![0u8; usize::try_from(meta.len()).unwrap_or(0)];
                let _ = f.write_all(&zeros).and_then(|_| f.sync_all());
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A private temporary copy of a plaintext (0600 in a 0700 directory), wiped and removed on
/// drop or on SIGINT/SIGTERM/SIGHUP.
pub struct PlainFile {
    dir: PathBuf,
    /// The file's path.
    pub path: PathBuf,
}

impl PlainFile {
    /// Writes `bytes` to a new temporary file named like `original`.
    pub fn new(original: &Path, bytes: &[u8]) -> Result<Self, CliError> {
        install()?;
        let mut live = live();
        // The TempDir handle is let go of: removal is ours (wipe), on drop or on a signal.
        let dir = tempfile::Builder::new()
            .prefix("sealkit-sops-")
            .tempdir()
            .map_err(|e| CliError::io_at("cannot create a temporary directory", &e))?
            .keep();
        live.dirs.push(dir.clone());
        let path = dir.join(
            original
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_else(|| "plaintext".into()),
        );
        if let Err(e) = Self::fill(&dir, &path, bytes) {
            wipe(&dir);
            live.dirs.retain(|d| d != &dir);
            return Err(e);
        }
        drop(live);
        Ok(PlainFile { dir, path })
    }

    fn fill(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), CliError> {
        // tempfile creates the directory with the umask's mode (often 0755): the names in it
        // (the editor's swap and backup files too) are nobody else's business.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| CliError::io_at("cannot make the temporary directory private", &e))?;
        }
        write_atomic(path, bytes, Some(0o600))
    }

    /// Runs `cmd` (the editor, or the command of `exec-file`) and waits for it. On a signal
    /// meanwhile it is stopped, and the process exits from the signal thread.
    pub fn run(&self, cmd: &mut Command) -> Result<ExitStatus, CliError> {
        let mut child = {
            let mut live = live();
            let child = cmd
                .spawn()
                .map_err(|e| CliError::io_at("cannot start the command", &e))?;
            live.child = Pid::from_raw(child.id() as i32);
            child
        };
        // Wait for it to end without reaping it, then forget its pid, then reap it: a reaped
        // pid may be reused at once, and the signal thread must never stop another process.
        if let Some(pid) = Pid::from_raw(child.id() as i32) {
            while let Err(rustix::io::Errno::INTR) = waitid(
                WaitId::Pid(pid),
                WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
            ) {}
        }
        live().child = None;
        child
            .wait()
            .map_err(|e| CliError::io_at("cannot wait for the command", &e))
    }

    /// Runs `f` (the write of the re-encrypted file) so that a signal cannot interrupt it: the
    /// signal waits until it is done.
    pub fn guarded<T>(&self, f: impl FnOnce() -> T) -> T {
        let _live = live();
        f()
    }
}

impl Drop for PlainFile {
    fn drop(&mut self) {
        let mut live = live();
        wipe(&self.dir);
        live.dirs.retain(|d| d != &self.dir);
    }
}
