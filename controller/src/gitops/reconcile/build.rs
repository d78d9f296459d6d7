//! The build phase: the keys to decrypt with (the Kustomization's `decryption.secretRef`), the
//! `postBuild` variables, the render (plain YAML or kustomize, in a directory of this reconcile's
//! own, SOPS decrypted after the build) and `${var}` substitution.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use sealkit_api::{GitRepository, Kustomization};
use sealkit_render::redact::Redactor;

use crate::gitops::source::Fetched;
use sealkit_keys::secret::SecretString;
use sealkit_keys::sops::keysource::AgeIdentities;
use serde_json::Value;

use super::{Failure, FluxApi, GitopsSettings, failure};

/// `${var}` and `${var:=default}` in string values (not in keys); `$${var}` is an escaped
/// literal. Objects annotated `kustomize.toolkit.fluxcd.io/substitute: disabled` are skipped.
pub fn substitute(v: &mut Value, vars: &BTreeMap<String, String>) -> Result<(), String> {
    fn walk(
        v: &mut Value,
        vars: &BTreeMap<String, String>,
        re: &regex::Regex,
    ) -> Result<(), String> {
        match v {
            Value::String(s) if s.contains("${") => {
                let mut missing = None;
                let out = re.replace_all(s, |c: &regex::Captures<'_>| {
                    if c.get(1).is_some() {
                        return c[0][1..].to_string();
                    }
                    let name = &c[2];
                    match (vars.get(name), c.get(3)) {
                        (Some(v), _) => v.clone(),
                        (None, Some(d)) => d.as_str().to_string(),
                        (None, None) => {
                            missing = Some(name.to_string());
                            String::new()
                        }
                    }
                });
                if let Some(m) = missing {
                    return Err(format!(
                        "variable ${{{m}}} is not defined (postBuild.substitute / substituteFrom)"
                    ));
                }
                *s = out.into_owned();
            }
            Value::Array(a) => {
                for x in a {
                    walk(x, vars, re)?;
                }
            }
            Value::Object(m) => {
                for x in m.values_mut() {
                    walk(x, vars, re)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
    if v["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/substitute"] == "disabled" {
        return Ok(());
    }
    static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(\$)?\$\{([A-Za-z_][A-Za-z0-9_]*)(?::=([^}]*))?\}")
            .expect("static regex")
    });
    walk(v, vars, &RE)
}

pub(super) fn text(b: &[u8]) -> SecretString {
    SecretString::from(
        String::from_utf8_lossy(b)
            .trim_end_matches('\n')
            .to_string(),
    )
}

async fn identities<A: FluxApi>(
    api: &A,
    ks: &Kustomization,
) -> Result<Option<AgeIdentities>, String> {
    let Some(d) = &ks.spec.decryption else {
        return Ok(None);
    };
    if d.provider != "sops" {
        return Err(format!(
            "decryption.provider {:?} is not supported (use sops)",
            d.provider
        ));
    }
    let Some(r) = &d.secret_ref else {
        return Ok(None);
    };
    let ns = ks.namespace().unwrap_or_default();
    let data = api
        .secret_data(&ns, &r.name)
        .await?
        .ok_or_else(|| format!("decryption.secretRef: Secret {ns}/{} not found", r.name))?;
    let mut ids = AgeIdentities::parse("").map_err(|e| e.to_string())?;
    for (k, v) in data.iter().filter(|(k, _)| k.ends_with(".agekey")) {
        let batch = AgeIdentities::parse(&String::from_utf8_lossy(v))
            .map_err(|e| format!("decryption.secretRef {ns}/{} key {k}: {e}", r.name))?;
        ids.extend(batch);
    }
    if ids.is_empty() {
        return Err(format!(
            "decryption.secretRef {ns}/{} has no *.agekey entry",
            r.name
        ));
    }
    Ok(Some(ids))
}

async fn variables<A: FluxApi>(
    api: &A,
    ks: &Kustomization,
) -> Result<Option<BTreeMap<String, String>>, String> {
    let Some(pb) = &ks.spec.post_build else {
        return Ok(None);
    };
    let ns = ks.namespace().unwrap_or_default();
    let mut vars = BTreeMap::new();
    for s in pb.substitute_from.iter().flatten() {
        let data: Option<BTreeMap<String, String>> = match s.kind.as_str() {
            "ConfigMap" => api.config_map_data(&ns, &s.name).await?,
            "Secret" => api.secret_data(&ns, &s.name).await?.map(|d| {
                d.into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect()
            }),
            other => {
                return Err(format!(
                    "postBuild.substituteFrom kind {other:?} is not ConfigMap or Secret"
                ));
            }
        };
        match data {
            Some(d) => vars.extend(d),
            None if s.optional == Some(true) => {}
            None => {
                return Err(format!(
                    "postBuild.substituteFrom: {} {ns}/{} not found",
                    s.kind, s.name
                ));
            }
        }
    }
    vars.extend(pb.substitute.clone().unwrap_or_default());
    Ok(Some(vars))
}

/// `spec.path`, relative to the source root (`""` for the root).
pub(super) fn spec_path(ks: &Kustomization) -> Result<String, String> {
    let rel = ks.spec.path.clone().unwrap_or_default();
    let rel = rel.trim_start_matches("./").trim_start_matches('/');
    if rel.split('/').any(|p| p == "..") {
        return Err(format!("spec.path {rel:?} leaves the source"));
    }
    Ok(rel.trim_end_matches('/').to_string())
}

/// What a render needs, owned (it runs on a blocking thread).
struct RenderJob {
    artifact: PathBuf,
    /// Where the private copies go (`<cache>/renders`).
    work_parent: PathBuf,
    rel: String,
    /// `spec.patches` and `spec.images`, when any.
    overlay: Option<(Vec<Value>, Vec<Value>)>,
    opts: sealkit_render::Options,
}

/// Renders in a directory of its own: the artifact is copied (a symlink out of it refused), an
/// overlay for `patches`/`images` is written into the copy, and the copy is deleted when done.
/// The shared cache is only read, so concurrent reconciles of one revision never meet.
fn render_job(job: RenderJob) -> Result<Vec<sealkit_render::Object>, Failure> {
    let build = |e: String| failure("BuildFailed", e);
    std::fs::create_dir_all(&job.work_parent)
        .map_err(|e| build(format!("cannot create a render directory: {e}")))?;
    let work = tempfile::Builder::new()
        .prefix("render-")
        .tempdir_in(&job.work_parent)
        .map_err(|e| build(format!("cannot create a render directory: {e}")))?;
    let root = work.path().join("source");
    std::fs::create_dir(&root)
        .map_err(|e| build(format!("cannot create a render directory: {e}")))?;
    sealkit_render::copy_source(&job.artifact, &root).map_err(|e| build(e.to_string()))?;
    let rel = &job.rel;
    let mut path = if rel.is_empty() {
        root.clone()
    } else {
        root.join(rel)
    };
    // The copy holds no link out of it, so plain file tests are safe here.
    if !path.exists() {
        return Err(build(format!(
            "spec.path {rel:?} does not exist in the source"
        )));
    }
    if let Some((patches, images)) = job.overlay {
        if !sealkit_render::is_kustomization(&path) {
            return Err(build("spec.patches and spec.images need a kustomization.yaml at spec.path (sealkit does not generate one yet)".into()));
        }
        let mut r = [0u8; 8];
        let _ = aws_lc_rs::rand::fill(&mut r);
        let name: String = r.iter().map(|b| format!("{b:02x}")).collect();
        let overlay = root.join(format!(".sealkit-overlay-{name}"));
        std::fs::create_dir(&overlay)
            .map_err(|e| build(format!("cannot create the overlay: {e}")))?;
        let base = if rel.is_empty() {
            "..".to_string()
        } else {
            format!("../{rel}")
        };
        let k = serde_json::json!({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [base],
            "patches": patches,
            "images": images,
        });
        std::fs::write(overlay.join("kustomization.yaml"), k.to_string())
            .map_err(|e| build(format!("cannot write the overlay: {e}")))?;
        path = overlay;
    }
    sealkit_render::render(&root, &path, &job.opts).map_err(|e| match e {
        sealkit_render::RenderError::Decrypt { .. } => failure("DecryptionFailed", e.to_string()),
        other => failure("BuildFailed", other.to_string()),
    })
}

/// What the build phase hands to apply: the objects as they will be applied, and a redactor
/// that knows every value SOPS decrypted (API errors quote invalid values).
pub(super) struct Built {
    pub(super) values: Vec<Value>,
    pub(super) redactor: Arc<Redactor>,
}

/// Renders the Kustomization's path of `fetched` in a directory of this reconcile's own,
/// decrypts, and substitutes `postBuild` variables.
pub(super) async fn build<A: FluxApi>(
    ks: &Kustomization,
    api: &A,
    settings: &GitopsSettings,
    repo: &GitRepository,
    fetched: &Fetched,
    timeout: Duration,
) -> Result<Built, Failure> {
    let ids = identities(api, ks)
        .await
        .map_err(|e| failure("DecryptionFailed", e))?;
    let vars = variables(api, ks)
        .await
        .map_err(|e| failure("BuildFailed", e))?;
    let rel = spec_path(ks).map_err(|e| failure("BuildFailed", e))?;
    let patches = ks.spec.patches.clone().unwrap_or_default();
    let images = ks.spec.images.clone().unwrap_or_default();
    let job = RenderJob {
        artifact: fetched.dir.clone(),
        work_parent: settings.cache_dir.join("renders"),
        rel,
        overlay: (!patches.is_empty() || !images.is_empty()).then_some((patches, images)),
        opts: sealkit_render::Options {
            identities: ids,
            extra_ignore: repo.spec.ignore.clone(),
            // spec.timeout bounds the build too, within reason.
            kustomize_timeout: timeout.clamp(Duration::from_secs(30), Duration::from_secs(300)),
            allow_remote_bases: settings.allow_remote_bases,
            ..Default::default()
        },
    };
    let objects = tokio::task::spawn_blocking(move || render_job(job))
        .await
        .map_err(|e| failure("BuildFailed", e.to_string()))??;
    let mut values = Vec::with_capacity(objects.len());
    let mut redactor = Redactor::new();
    for mut o in objects {
        if let Some(vars) = &vars {
            substitute(&mut o.value, vars)
                .map_err(|e| failure("BuildFailed", format!("{}: {e}", o.origin)))?;
        }
        // As applied (after substitution): what an API error could quote.
        redactor.add(&o.value, &o.decrypted_paths);
        values.push(o.value);
    }
    Ok(Built {
        values,
        redactor: Arc::new(redactor),
    })
}
