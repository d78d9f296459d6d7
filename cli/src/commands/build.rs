//! `sealkit build`: render a GitOps path the way the controller does (kustomize or plain YAML,
//! SOPS decrypted after the build, symlinks kept inside the root, remote bases refused unless
//! `--allow-remote-bases`) and print the objects, Secret values and every value that came out
//! of SOPS masked unless `--show-secrets`.

use std::path::{Path, PathBuf};

use sealkit_keys::seal::manifest::yaml_body;
use sealkit_keys::sops::AgeIdentities;
use sealkit_render::{Options, RenderError, mask::mask_object, render};

use crate::args::{BuildArgs, OutputFormat};
use crate::error::CliError;
use crate::io::write_output;

/// The nearest directory at or above `path` holding `.git`, `.sops.yaml` or `.sourceignore`.
pub fn find_root(path: &Path) -> PathBuf {
    let start = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let start = std::fs::canonicalize(&start).unwrap_or(start);
    start
        .ancestors()
        .find(|d| {
            [".git", ".sops.yaml", ".sourceignore"]
                .iter()
                .any(|m| d.join(m).exists())
        })
        .map(Path::to_path_buf)
        .unwrap_or(start)
}

/// Age identities from `--age-key-file` and the environment (`None` when there are none).
pub fn identities(files: &[PathBuf]) -> Result<Option<AgeIdentities>, CliError> {
    let mut ids = super::sops::identities::load()?.ids;
    for f in files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| CliError::io_at(&format!("cannot read {}", f.display()), &e))?;
        let batch = AgeIdentities::parse(&text)
            .map_err(|e| CliError::input(format!("{}: {e}", f.display())))?;
        ids.extend(batch);
    }
    Ok((!ids.is_empty()).then_some(ids))
}

/// A render error as the user sees it.
pub fn render_error(e: RenderError) -> CliError {
    let hint = match &e {
        RenderError::Decrypt { message, .. } if message.contains("no age keys") => {
            Some("pass --age-key-file FILE or set SOPS_AGE_KEY_FILE")
        }
        RenderError::Kustomize { message, .. } if message.contains("cannot run") => Some(
            "install kubectl (it includes kustomize) or set SEALKIT_KUSTOMIZE=\"kustomize build\"",
        ),
        RenderError::Sandbox { .. } => Some(
            "a symlink must point inside the source root (see --root); the controller refuses it too",
        ),
        _ => None,
    };
    let io = matches!(e, RenderError::Io { .. });
    let err = if io {
        CliError::io(e.to_string())
    } else {
        CliError::input(e.to_string())
    };
    match hint {
        Some(h) => err.with_hint(h),
        None => err,
    }
}

/// Renders `path` (under `root`, or the root found from it) with the identities of the
/// environment and `key_files`. `render_code` overrides the exit code of render failures.
pub fn render_path(
    path: &Path,
    root: Option<&Path>,
    key_files: &[PathBuf],
    render_code: Option<u8>,
    allow_remote_bases: bool,
) -> Result<Vec<sealkit_render::Object>, CliError> {
    let recode = |e: CliError| match render_code {
        Some(c) => e.with_code(c),
        None => e,
    };
    let root = match root {
        Some(r) => std::fs::canonicalize(r)
            .map_err(|e| CliError::io_at(&format!("cannot open --root {}", r.display()), &e))?,
        None => find_root(path),
    };
    let canonical = std::fs::canonicalize(path)
        .map_err(|e| CliError::io_at(&format!("cannot open {}", path.display()), &e))?;
    let opts = Options {
        identities: identities(key_files).map_err(recode)?,
        allow_remote_bases,
        ..Default::default()
    };
    render(&root, &canonical, &opts).map_err(|e| recode(render_error(e)))
}

/// Runs `sealkit build`.
pub fn run(args: &BuildArgs) -> Result<(), CliError> {
    let mut objects = render_path(
        &args.path,
        args.root.as_deref(),
        &args.age_key_files,
        None,
        args.allow_remote_bases,
    )?;
    if !args.show_secrets {
        for o in &mut objects {
            mask_object(&mut o.value, &o.decrypted_paths, None);
        }
    }
    let out = match args.format {
        OutputFormat::Yaml => {
            let mut s = String::new();
            for o in &objects {
                s.push_str("---\n");
                s.push_str(&yaml_body(&o.value));
                if !s.ends_with('\n') {
                    s.push('\n');
                }
            }
            s
        }
        OutputFormat::Json => {
            let list = serde_json::json!({
                "apiVersion": "v1",
                "kind": "List",
                "items": objects.iter().map(|o| o.value.clone()).collect::<Vec<_>>(),
            });
            serde_json::to_string_pretty(&list).unwrap_or_default() + "\n"
        }
    };
    let decrypted = objects.iter().filter(|o| o.decrypted).count();
    write_output(None, out.as_bytes())?;
    eprintln!(
        "rendered {} objects from {} ({decrypted} decrypted from SOPS{})",
        objects.len(),
        args.path.display(),
        if args.show_secrets {
            ""
        } else {
            "; Secret and decrypted values masked"
        }
    );
    Ok(())
}
