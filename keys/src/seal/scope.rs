//! Sealing scopes and the RSA-OAEP label each one binds a value to.
//!
//! The label is the only thing that ties a sealed value to where it may be unsealed: a strict
//! value opens only under the same namespace and name, a namespace-wide one anywhere in its
//! namespace, a cluster-wide one anywhere. Upstream reads the scope from the SealedSecret's own
//! annotations at unseal time, so that is the rule here too.

use std::fmt;
use std::str::FromStr;

/// Annotation that marks a Secret / SealedSecret as cluster-wide (value must be exactly `"true"`).
pub const CLUSTER_WIDE_ANNOTATION: &str = "sealedsecrets.bitnami.com/cluster-wide";
/// Annotation that marks a Secret / SealedSecret as namespace-wide (value must be exactly `"true"`).
pub const NAMESPACE_WIDE_ANNOTATION: &str = "sealedsecrets.bitnami.com/namespace-wide";

/// Where a sealed value may be unsealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scope {
    /// Only under the same namespace and name (label `"<ns>/<name>"`). The default.
    #[default]
    Strict,
    /// Under any name in the same namespace (label `"<ns>"`).
    NamespaceWide,
    /// Anywhere in the cluster (empty label).
    ClusterWide,
}

impl Scope {
    /// Every scope, strictest first.
    pub const ALL: [Scope; 3] = [Scope::Strict, Scope::NamespaceWide, Scope::ClusterWide];

    /// The OAEP label for a value sealed with this scope for `namespace`/`name`.
    pub fn label(self, namespace: &str, name: &str) -> Vec<u8> {
        match self {
            Scope::Strict => format!("{namespace}/{name}").into_bytes(),
            Scope::NamespaceWide => namespace.as_bytes().to_vec(),
            Scope::ClusterWide => Vec::new(),
        }
    }

    /// The scope that a set of annotations selects, as upstream reads it: `cluster-wide: "true"`
    /// wins over `namespace-wide: "true"`; anything else is strict.
    pub fn from_annotations<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Scope {
        if get(CLUSTER_WIDE_ANNOTATION) == Some("true") {
            Scope::ClusterWide
        } else if get(NAMESPACE_WIDE_ANNOTATION) == Some("true") {
            Scope::NamespaceWide
        } else {
            Scope::Strict
        }
    }

    /// The annotation that marks this scope, if it needs one (strict needs none).
    pub fn annotation(self) -> Option<&'static str> {
        match self {
            Scope::Strict => None,
            Scope::NamespaceWide => Some(NAMESPACE_WIDE_ANNOTATION),
            Scope::ClusterWide => Some(CLUSTER_WIDE_ANNOTATION),
        }
    }

    /// The flag spelling: `strict`, `namespace-wide` or `cluster-wide`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Strict => "strict",
            Scope::NamespaceWide => "namespace-wide",
            Scope::ClusterWide => "cluster-wide",
        }
    }

    /// Whether a namespace is part of the label.
    pub fn needs_namespace(self) -> bool {
        self != Scope::ClusterWide
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown scope name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope '{0}': must be one of strict, namespace-wide, cluster-wide")]
pub struct ParseScopeError(pub String);

impl FromStr for Scope {
    type Err = ParseScopeError;

    /// Accepts the kubeseal spellings; the empty string means the default (strict).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "strict" => Ok(Scope::Strict),
            "namespace-wide" => Ok(Scope::NamespaceWide),
            "cluster-wide" => Ok(Scope::ClusterWide),
            other => Err(ParseScopeError(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_match_upstream() {
        assert_eq!(Scope::Strict.label("ns", "name"), b"ns/name");
        assert_eq!(Scope::NamespaceWide.label("ns", "name"), b"ns");
        assert_eq!(Scope::ClusterWide.label("ns", "name"), b"");
    }

    #[test]
    fn annotations_select_scope() {
        let none = |_: &str| None;
        assert_eq!(Scope::from_annotations(none), Scope::Strict);
        let cw = |k: &str| (k == CLUSTER_WIDE_ANNOTATION).then_some("true");
        assert_eq!(Scope::from_annotations(cw), Scope::ClusterWide);
        let nw = |k: &str| (k == NAMESPACE_WIDE_ANNOTATION).then_some("true");
        assert_eq!(Scope::from_annotations(nw), Scope::NamespaceWide);
        // Only the exact string "true" counts.
        let yes = |k: &str| (k == CLUSTER_WIDE_ANNOTATION).then_some("True");
        assert_eq!(Scope::from_annotations(yes), Scope::Strict);
        // Cluster-wide wins when both are set.
        let both = |_: &str| Some("true");
        assert_eq!(Scope::from_annotations(both), Scope::ClusterWide);
    }

    #[test]
    fn parse_round_trips() {
        for s in Scope::ALL {
            assert_eq!(s.as_str().parse::<Scope>(), Ok(s));
        }
        assert_eq!("".parse::<Scope>(), Ok(Scope::Strict));
        assert!("global".parse::<Scope>().is_err());
    }
}
