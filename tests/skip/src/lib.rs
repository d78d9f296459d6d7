//! How a sealkit test reports that a peer it needs is missing (the API server, the upstream
//! vectors or CRDs, moto, age, sops, git, kubectl…).
//!
//! A skipped test must never look like a pass:
//! - with `SEALKIT_REQUIRE_PEERS` set (CI, `scripts/test.sh`), a missing peer fails the test;
//! - otherwise the skip is printed and appended to the file named by `SEALKIT_SKIP_LOG`, which
//!   `scripts/test.sh` counts and reports in one loud line at the end of the run.
//!
//! No dependencies, so that every crate's tests (the pure `keys` crate included) can use it.
#![forbid(unsafe_code)]

use std::io::Write as _;

/// Whether missing peers fail tests (`SEALKIT_REQUIRE_PEERS` set to anything but `0` or empty).
pub fn required() -> bool {
    std::env::var("SEALKIT_REQUIRE_PEERS").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Reports that the running test cannot find `peer` (`why`: where it looked, how to get it).
///
/// Panics (fails the test) when peers are required; otherwise records the skip and returns, and
/// the caller returns early.
#[track_caller]
pub fn missing(peer: &str, why: impl std::fmt::Display) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    if required() {
        panic!("required test peer missing ({peer}): {why} [SEALKIT_REQUIRE_PEERS is set]");
    }
    eprintln!("SKIPPED {test}: {peer} missing: {why}");
    if let Some(path) = std::env::var_os("SEALKIT_SKIP_LOG") {
        // One short line per skip; O_APPEND keeps lines from parallel tests whole.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{test}\t{peer}\t{why}");
        }
    }
}

/// `shared/` beside the repository: the upstream vectors, CRDs and the control-plane tool.
/// `SEALKIT_SHARED` wins; otherwise the nearest ancestor of `start` that has a `shared/`
/// directory holding `vectors/` is used.
pub fn shared_dir(start: &std::path::Path) -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("SEALKIT_SHARED") {
        return Some(p.into());
    }
    start
        .ancestors()
        .map(|a| a.join("shared"))
        .find(|s| s.join("vectors").is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_dir_is_found_from_a_nested_path() {
        let d = std::env::temp_dir().join(format!("sealkit-skip-{}", std::process::id()));
        std::fs::create_dir_all(d.join("shared/vectors")).expect("mkdir");
        std::fs::create_dir_all(d.join("repo/keys/src")).expect("mkdir");
        if std::env::var_os("SEALKIT_SHARED").is_none() {
            assert_eq!(shared_dir(&d.join("repo/keys/src")), Some(d.join("shared")));
        }
        assert_eq!(
            shared_dir(std::path::Path::new("/nonexistent-root-for-sealkit")).is_none(),
            std::env::var_os("SEALKIT_SHARED").is_none()
        );
        let _ = std::fs::remove_dir_all(d);
    }
}
