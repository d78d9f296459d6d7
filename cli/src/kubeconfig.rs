//! The default namespace from the kubeconfig, resolved as kubectl does: `--kubeconfig`, else
//! each file of `$KUBECONFIG` (first file that sets a value wins), else `~/.kube/config`;
//! `--context`, else `current-context`; that context's namespace, else `default`.

use std::path::PathBuf;

use serde_json::Value;

/// The default namespace, or `None` when there is no kubeconfig at all (as kubeseal, which
/// then refuses to guess).
pub fn default_namespace(kubeconfig: Option<&str>, context: Option<&str>) -> Option<String> {
    let files: Vec<PathBuf> = match kubeconfig {
        Some(list) if !list.is_empty() => std::env::split_paths(list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect(),
        _ => {
            let home = std::env::var_os("HOME")?;
            vec![PathBuf::from(home).join(".kube").join("config")]
        }
    };
    let configs: Vec<Value> = files
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|t| serde_saphyr::from_str::<Value>(&t).ok())
        .collect();
    if configs.is_empty() {
        return None;
    }
    let ctx_name = match context {
        Some(c) => c.to_string(),
        None => configs
            .iter()
            .find_map(|c| {
                c.get("current-context")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or("")
            .to_string(),
    };
    let ns = configs.iter().find_map(|c| {
        c.get("contexts")?.as_array()?.iter().find_map(|ctx| {
            (ctx.get("name")?.as_str()? == ctx_name).then(|| {
                ctx.pointer("/context/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            })
        })
    });
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
}
