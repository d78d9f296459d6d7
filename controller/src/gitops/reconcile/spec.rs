//! What is checked before anything is read or applied: fields we do not support (reported, not
//! ignored), every name and reference that reaches an API path, durations, and the lockdown
//! rules (`serviceAccountName`, `--default-service-account`, `--no-cross-namespace-refs`).

use kube::ResourceExt;
use sealkit_api::{GitRepository, Kustomization};
use serde_json::Value;

use super::apply::ObjRef;
use super::{Failure, GitopsSettings};

/// A Kubernetes object name (a lowercase RFC 1123 subdomain).
pub(super) fn object_name(field: &str, v: &str) -> Result<(), Failure> {
    static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
            .expect("static regex")
    });
    if v.len() <= 253 && RE.is_match(v) {
        Ok(())
    } else {
        Err(invalid(format!(
            "{field} {:?} is not a valid object name (a lowercase RFC 1123 subdomain)",
            v.chars().take(80).collect::<String>()
        )))
    }
}

/// A namespace name (a lowercase RFC 1123 label).
fn namespace_name(field: &str, v: &str) -> Result<(), Failure> {
    static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").expect("static regex")
    });
    if v.len() <= 63 && RE.is_match(v) {
        Ok(())
    } else {
        Err(invalid(format!(
            "{field} {:?} is not a valid namespace name (a lowercase RFC 1123 label)",
            v.chars().take(80).collect::<String>()
        )))
    }
}

/// A bad spec: stalled (nothing changes until the object does), the field named.
pub(super) fn invalid(message: String) -> Failure {
    Failure {
        reason: "InvalidSpec",
        message,
        stalled: true,
    }
}

/// The ServiceAccount to act as: `spec.serviceAccountName`, else `--default-service-account`,
/// else none (the controller's own identity).
pub(super) fn service_account(
    ks: &Kustomization,
    settings: &GitopsSettings,
) -> Result<Option<String>, Failure> {
    let named = match ks.spec.unsupported.get("serviceAccountName") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => {
            object_name("spec.serviceAccountName", s)?;
            Some(s.clone())
        }
        Some(_) => {
            return Err(invalid("spec.serviceAccountName must be a string".into()));
        }
    };
    match named {
        Some(n) => Ok(Some(n)),
        None => match &settings.default_service_account {
            Some(d) => {
                object_name("--default-service-account", d)?;
                Ok(Some(d.clone()))
            }
            None => Ok(None),
        },
    }
}

/// Refuses a reference into another namespace under `--no-cross-namespace-refs`.
fn same_namespace(
    settings: &GitopsSettings,
    field: &str,
    theirs: Option<&str>,
    ours: &str,
) -> Result<(), Failure> {
    match theirs {
        Some(t) if settings.no_cross_namespace_refs && t != ours => Err(Failure {
            reason: "AccessDenied",
            message: format!(
                "{field} {t:?}: cross-namespace references are not allowed (--no-cross-namespace-refs); use an object in namespace {ours:?}"
            ),
            stalled: true,
        }),
        _ => Ok(()),
    }
}

/// Checks every name and reference of the spec that reaches an API path, and the lockdown
/// rules; returns the ServiceAccount to act as.
pub(super) fn check(
    ks: &Kustomization,
    settings: &GitopsSettings,
) -> Result<Option<String>, Failure> {
    let ns = ks.namespace().unwrap_or_default();
    let src = &ks.spec.source_ref;
    object_name("spec.sourceRef.name", &src.name)?;
    if let Some(n) = &src.namespace {
        namespace_name("spec.sourceRef.namespace", n)?;
    }
    same_namespace(
        settings,
        "spec.sourceRef.namespace",
        src.namespace.as_deref(),
        &ns,
    )?;
    for (i, d) in ks.spec.depends_on.iter().flatten().enumerate() {
        object_name(&format!("spec.dependsOn[{i}].name"), &d.name)?;
        if let Some(n) = &d.namespace {
            namespace_name(&format!("spec.dependsOn[{i}].namespace"), n)?;
        }
        same_namespace(
            settings,
            &format!("spec.dependsOn[{i}].namespace"),
            d.namespace.as_deref(),
            &ns,
        )?;
    }
    if let Some(r) = ks
        .spec
        .decryption
        .as_ref()
        .and_then(|d| d.secret_ref.as_ref())
    {
        object_name("spec.decryption.secretRef.name", &r.name)?;
    }
    for (i, s) in ks
        .spec
        .post_build
        .iter()
        .flat_map(|p| p.substitute_from.iter().flatten())
        .enumerate()
    {
        object_name(&format!("spec.postBuild.substituteFrom[{i}].name"), &s.name)?;
    }
    for (i, h) in ks.spec.health_checks.iter().flatten().enumerate() {
        if let Some(n) = &h.namespace {
            namespace_name(&format!("spec.healthChecks[{i}].namespace"), n)?;
        }
        if !ObjRef::valid_name(&h.name) {
            return Err(invalid(format!(
                "spec.healthChecks[{i}].name {:?} is not a valid object name",
                h.name.chars().take(80).collect::<String>()
            )));
        }
    }
    service_account(ks, settings)
}

/// The checks [`super::reconcile`] makes before it reads the cluster or runs git, for the
/// fuzz target `kustomization_spec` (`controller/fuzz`); not an API. Returns what [`check`]
/// (names, references, lockdown rules; the ServiceAccount to act as), `spec.path` and the
/// GitRepository's `spec.secretRef.name` check (when a repository is given) say.
#[doc(hidden)]
#[allow(clippy::type_complexity)]
pub fn fuzz_checks(
    ks: &Kustomization,
    repo: Option<&GitRepository>,
    settings: &GitopsSettings,
) -> (
    Result<Option<String>, String>,
    Result<String, String>,
    Option<Result<(), String>>,
) {
    let secret_ref = repo
        .and_then(|r| r.spec.secret_ref.as_ref())
        .map(|r| object_name("spec.secretRef.name", &r.name).map_err(|f| f.message));
    (
        check(ks, settings).map_err(|f| f.message),
        super::build::spec_path(ks),
        secret_ref,
    )
}

/// Fields we would otherwise silently ignore stop the reconcile, named.
pub(super) fn unsupported(ks: &Kustomization) -> Result<(), Failure> {
    let fields: Vec<String> = ks
        .spec
        .unsupported
        .iter()
        .filter(|(k, v)| !v.is_null() && k.as_str() != "serviceAccountName")
        .map(|(k, _)| format!("spec.{k}"))
        .collect();
    if fields.is_empty() {
        return Ok(());
    }
    Err(Failure {
        reason: "UnsupportedField",
        message: format!(
            "{} not supported by sealkit: remove it or reconcile this Kustomization with Flux",
            fields.join(", ")
        ),
        stalled: true,
    })
}
