//! Kubeconfig files, read by kube's [`Kubeconfig`] and merged by kubectl's rules (the first
//! file that sets a value wins): `--kubeconfig`, else each file of `$KUBECONFIG`, else
//! `~/.kube/config`. The default namespace is `--context`, else `current-context`; that
//! context's namespace, else `default`.

use std::path::PathBuf;

use kube::config::Kubeconfig;

use crate::error::CliError;

/// The files to read: `list` (a path list, as `$KUBECONFIG`; `--kubeconfig` and `$KUBECONFIG`
/// both arrive here through clap), else `~/.kube/config`.
fn files(list: Option<&str>) -> Vec<PathBuf> {
    match list {
        Some(list) if !list.is_empty() => std::env::split_paths(list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect(),
        _ => std::env::var_os("HOME")
            .map(|home| vec![PathBuf::from(home).join(".kube").join("config")])
            .unwrap_or_default(),
    }
}

/// The files of `list` that exist, each read and then merged. `Ok(None)` when none exists; a
/// file that exists but cannot be read or parsed is an error that names it.
pub fn load(list: &str) -> Result<Option<Kubeconfig>, CliError> {
    let mut merged: Option<Kubeconfig> = None;
    for p in files(Some(list)).into_iter().filter(|p| p.exists()) {
        let kc = Kubeconfig::read_from(&p)
            .map_err(|e| CliError::input(format!("{}: {e}", p.display())))?;
        merged = Some(match merged {
            Some(m) => m.merge(kc).map_err(|e| CliError::input(e.to_string()))?,
            None => kc,
        });
    }
    Ok(merged)
}

/// The default namespace, or `None` when there is no kubeconfig at all (as kubeseal, which
/// then refuses to guess). Files that do not parse are passed over here, as if absent: the
/// namespace falls back the same way, and a command that needs the cluster reports them.
pub fn default_namespace(kubeconfig: Option<&str>, context: Option<&str>) -> Option<String> {
    let merged = files(kubeconfig)
        .into_iter()
        .filter_map(|p| Kubeconfig::read_from(p).ok())
        .try_fold(None::<Kubeconfig>, |m, kc| match m {
            Some(m) => m.merge(kc).map(Some),
            None => Ok(Some(kc)),
        })
        .ok()??;
    let ctx_name = context
        .map(str::to_string)
        .or_else(|| merged.current_context.clone())
        .unwrap_or_default();
    let ns = merged
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.namespace.clone());
    Some(
        ns.filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_namespace_and_fallbacks() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, "current-context: dev\n").expect("w");
        std::fs::write(
            &b,
            "contexts:\n- name: dev\n  context: {cluster: c, namespace: team-a}\n- name: prod\n  context: {cluster: c}\n",
        )
        .expect("w");
        let list = std::env::join_paths([&a, &b])
            .expect("join")
            .into_string()
            .expect("utf8");
        assert_eq!(
            default_namespace(Some(&list), None).as_deref(),
            Some("team-a")
        );
        assert_eq!(
            default_namespace(Some(&list), Some("prod")).as_deref(),
            Some("default")
        );
        let missing = dir.path().join("nope").display().to_string();
        assert_eq!(default_namespace(Some(&missing), None), None);
    }

    // kubectl's merge: the first file that sets a value wins, for current-context and for a
    // context's entry as a whole.
    #[test]
    fn first_file_wins() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(
            &a,
            "current-context: dev\ncontexts:\n- name: dev\n  context: {cluster: c, namespace: first}\n",
        )
        .expect("w");
        std::fs::write(
            &b,
            "current-context: prod\ncontexts:\n- name: dev\n  context: {cluster: c, namespace: second}\n",
        )
        .expect("w");
        let list = std::env::join_paths([&a, &b])
            .expect("join")
            .into_string()
            .expect("utf8");
        assert_eq!(
            default_namespace(Some(&list), None).as_deref(),
            Some("first")
        );
        let kc = load(&list).expect("load").expect("some");
        assert_eq!(kc.current_context.as_deref(), Some("dev"));
    }

    #[test]
    fn load_names_a_broken_file_and_skips_missing_ones() {
        let dir = tempfile::tempdir().expect("tmp");
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "contexts: [\n").expect("w");
        let missing = dir.path().join("nope");
        let list = std::env::join_paths([&missing, &bad])
            .expect("join")
            .into_string()
            .expect("utf8");
        let err = load(&list).expect_err("broken");
        assert!(
            err.to_string().contains(&bad.display().to_string()),
            "{err}"
        );
        assert!(load(&missing.display().to_string()).expect("ok").is_none());
    }
}
