//! `deploy/`: the single-namespace RBAC (`deploy/namespaced/rbac.yaml`) grants what the
//! cluster-wide RBAC (`deploy/rbac/rbac.yaml`) grants, minus what only exists cluster-wide, so
//! the two installs cannot drift apart. (The e2e suite proves on a real API server that each is
//! enough for the loops it runs.)

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

fn docs(rel: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
    sealkit_keys::seal::manifest::parse_documents(&text)
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
        .into_iter()
        .map(|d| d.value)
        .collect()
}

/// Role name → its rules, one (group, resource, verb) per entry.
fn rules(docs: &[Value], kind: &str) -> BTreeMap<String, Vec<(String, String, String)>> {
    let mut out = BTreeMap::new();
    for d in docs.iter().filter(|d| d["kind"] == kind) {
        let name = d["metadata"]["name"].as_str().unwrap_or("").to_string();
        let mut flat = Vec::new();
        for r in d["rules"].as_array().into_iter().flatten() {
            for g in r["apiGroups"].as_array().into_iter().flatten() {
                for res in r["resources"].as_array().into_iter().flatten() {
                    for v in r["verbs"].as_array().into_iter().flatten() {
                        flat.push((
                            g.as_str().unwrap_or("").to_string(),
                            res.as_str().unwrap_or("").to_string(),
                            v.as_str().unwrap_or("").to_string(),
                        ));
                    }
                }
            }
        }
        flat.sort();
        out.insert(name, flat);
    }
    out
}

#[test]
fn namespaced_rbac_mirrors_the_cluster_rbac() {
    let cluster = rules(&docs("deploy/rbac/rbac.yaml"), "ClusterRole");
    let namespaced = rules(&docs("deploy/namespaced/rbac.yaml"), "Role");
    // Cluster-scoped resources have no namespaced equivalent.
    let cluster_only = |res: &str| res.starts_with("clustersecretstores") || res == "namespaces";
    for (name, ns_rules) in &namespaced {
        let expected: Vec<_> = cluster
            .get(name)
            .unwrap_or_else(|| panic!("Role {name} has no ClusterRole of that name"))
            .iter()
            .filter(|(_, res, _)| !cluster_only(res))
            .cloned()
            .collect();
        assert_eq!(ns_rules, &expected, "Role {name}");
    }
    // Every bound ClusterRole has its Role (the service proxier is for users, not bound).
    for name in cluster.keys().filter(|n| *n != "sealkit-service-proxier") {
        assert!(
            namespaced.contains_key(name),
            "no Role for ClusterRole {name}"
        );
    }
}
