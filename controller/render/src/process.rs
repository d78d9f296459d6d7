//! Running a helper program (kustomize, git) with a deadline. The child leads a process group
//! of its own, so that on timeout the whole group is killed: kustomize's git clones and git's
//! ssh or remote helpers included, none left running or holding our pipes.

use std::os::unix::process::CommandExt as _;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What a finished run printed.
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

/// Why a run did not finish.
#[derive(Debug)]
pub enum RunError {
    /// The program could not be started.
    Spawn(std::io::Error),
    /// The deadline passed; the process group was killed.
    TimedOut,
    /// Waiting for it failed.
    Wait(std::io::Error),
}

fn reader(
    mut from: impl std::io::Read + Send + 'static,
    tx: mpsc::Sender<(bool, Vec<u8>)>,
    out: bool,
) {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = from.read_to_end(&mut buf);
        let _ = tx.send((out, buf));
    });
}

/// Runs `cmd` (stdin closed) until it exits or `timeout` passes.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Finished, RunError> {
    let deadline = Instant::now() + timeout;
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(RunError::Spawn)?;
    let group = rustix::process::Pid::from_child(&child);
    // Read output on threads so a chatty child cannot block on a full pipe.
    let (tx, rx) = mpsc::channel();
    if let Some(o) = child.stdout.take() {
        reader(o, tx.clone(), true);
    }
    if let Some(e) = child.stderr.take() {
        reader(e, tx, false);
    }
    // The group is killed only while its leader is not yet reaped: until then its id cannot
    // name another process group.
    let kill_group = || {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                kill_group();
                let _ = child.wait();
                return Err(RunError::TimedOut);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                kill_group();
                let _ = child.wait();
                return Err(RunError::Wait(e));
            }
        }
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        // A process the child left behind may still hold a pipe: the deadline bounds the wait.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        match rx.recv_timeout(left) {
            Ok((true, b)) => stdout = b,
            Ok((false, b)) => stderr = b,
            Err(_) => return Err(RunError::TimedOut),
        }
    }
    Ok(Finished {
        status,
        stdout,
        stderr,
    })
}
