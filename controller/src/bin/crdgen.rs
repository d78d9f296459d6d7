//! Writes the CRD manifests into `deploy/crds/` (or the directory given as the argument).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("deploy/crds"), PathBuf::from);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("error: cannot create {}: {e}", dir.display());
        return ExitCode::from(3);
    }
    let files = sealkit_controller::crds().into_iter().chain([(
        "kustomization.yaml".to_string(),
        sealkit_controller::crds_kustomization(),
    )]);
    for (name, text) in files {
        let path = dir.join(&name);
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(3);
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
