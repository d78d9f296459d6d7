//! `sealkit diff`: render a path as `sealkit build` does, server-side dry-run apply every object
//! (as the controller would, same field manager), and compare with the live objects. Secret
//! values, and every value that came out of SOPS (at the same fields of the live object), are
//! masked on both sides with a keyed hash (a random key per run), so a changed value shows as
//! changed without being printed, and equal values compare equal. API errors about an object
//! are printed with the decrypted values of the render redacted (the API server quotes invalid
//! values).

use std::io::Write as _;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use sealkit_keys::seal::manifest::yaml_body;
use sealkit_render::{comparable, mask::mask_object, redact::Redactor};
use serde_json::Value;

use super::build::render_path;
use crate::args::DiffArgs;
use crate::cluster::{Target, client, runtime};
use crate::error::CliError;

/// Exit code: the path cannot be rendered or decrypted.
const EXIT_RENDER: u8 = 2;

/// Labels the sync controller adds; a path diff does not know the Kustomization, so they are
/// not compared.
const OWNER_LABELS: [&str; 2] = [
    "kustomize.toolkit.fluxcd.io/name",
    "kustomize.toolkit.fluxcd.io/namespace",
];

fn shown(v: &Value, key: &[u8], decrypted: &[String]) -> String {
    let mut v = comparable(v);
    if let Some(l) = v["metadata"]
        .get_mut("labels")
        .and_then(Value::as_object_mut)
    {
        for k in OWNER_LABELS {
            l.remove(k);
        }
        if l.is_empty() {
            v["metadata"].as_object_mut().map(|m| m.remove("labels"));
        }
    }
    if let Some(a) = v["metadata"]
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
    {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
        if a.is_empty() {
            v["metadata"]
                .as_object_mut()
                .map(|m| m.remove("annotations"));
        }
    }
    mask_object(&mut v, decrypted, Some(key));
    yaml_body(&v)
}

/// Runs `sealkit diff`.
pub fn run(args: &DiffArgs) -> Result<(), CliError> {
    let objects = render_path(
        &args.path,
        args.root.as_deref(),
        &args.age_key_files,
        Some(EXIT_RENDER),
        args.allow_remote_bases,
    )?;
    let mut redactor = Redactor::new();
    for o in &objects {
        redactor.add(&o.value, &o.decrypted_paths);
    }
    let namespace = args
        .namespace
        .clone()
        .or_else(|| {
            crate::kubeconfig::default_namespace(
                args.kubeconfig.as_deref(),
                args.context.as_deref(),
            )
        })
        .unwrap_or_else(|| "default".into());
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key)
        .map_err(|_| CliError::io("the random number generator failed"))?;
    let target = Target {
        kubeconfig: args.kubeconfig.as_deref(),
        context: args.context.as_deref(),
        namespace: "",
        name: "",
    };
    let rt = runtime()?;
    let changed = rt.block_on(async {
        let client = client(&target).await.map_err(|e| e.with_code(3))?;
        let mut changed = 0usize;
        let mut out = std::io::stdout().lock();
        for o in &objects {
            let mut desired = o.value.clone();
            let api_version = desired["apiVersion"].as_str().unwrap_or("").to_string();
            let kind = desired["kind"].as_str().unwrap_or("").to_string();
            let name = desired["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
            let (ar, caps) = kube::discovery::pinned_kind(
                &client,
                &GroupVersionKind::gvk(group, version, &kind),
            )
            .await
            .map_err(|e| {
                CliError::io(format!("{}: {api_version} {kind}: {e}", o.origin))
                    .with_hint("is its CRD installed?")
            })?;
            let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
                let ns = desired["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or(&namespace)
                    .to_string();
                desired["metadata"]["namespace"] = Value::String(ns.clone());
                Api::namespaced_with(client.clone(), &ns, &ar)
            } else {
                Api::all_with(client.clone(), &ar)
            };
            let id = sealkit_render::object_id(&desired);
            let live = api.get_opt(&name).await.map_err(|e| {
                CliError::io(format!(
                    "{id}: cannot read the live object: {}",
                    redactor.redact(&e.to_string())
                ))
            })?;
            let dry = api
                .patch(
                    &name,
                    &PatchParams::apply(&args.field_manager).force().dry_run(),
                    &Patch::Apply(&desired),
                )
                .await
                .map_err(|e| {
                    CliError::io(format!(
                        "{id}: the server refused the dry-run: {}",
                        redactor.redact(&e.to_string())
                    ))
                })?;
            let dry = serde_json::to_value(dry).map_err(|e| CliError::io(e.to_string()))?;
            let before = live
                .map(|l| serde_json::to_value(l).map(|v| shown(&v, &key, &o.decrypted_paths)))
                .transpose()
                .map_err(|e| CliError::io(e.to_string()))?;
            let after = shown(&dry, &key, &o.decrypted_paths);
            if before.as_deref() == Some(after.as_str()) {
                continue;
            }
            changed += 1;
            let header = match &before {
                None => format!("► {id} created"),
                Some(_) => format!("► {id} drifted"),
            };
            let diff = similar::TextDiff::from_lines(before.as_deref().unwrap_or(""), &after);
            let text = diff
                .unified_diff()
                .context_radius(3)
                .header(&format!("live/{id}"), &format!("desired/{id}"))
                .to_string();
            writeln!(out, "{header}\n{text}")
                .map_err(|e| CliError::io_at("cannot write the diff", &e))?;
        }
        Ok::<usize, CliError>(changed)
    })?;
    if changed > 0 {
        eprintln!(
            "{changed} of {} objects differ from the cluster",
            objects.len()
        );
        return Err(CliError::silent(1));
    }
    eprintln!("no differences ({} objects)", objects.len());
    Ok(())
}
