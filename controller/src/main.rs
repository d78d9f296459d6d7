//! `sealkit-controller`: a placeholder until the controller issue lands. It says so plainly
//! instead of pretending to run.

use std::process::ExitCode;

fn main() -> ExitCode {
    let arg = std::env::args().nth(1).unwrap_or_default();
    if arg == "--version" || arg == "-V" {
        println!("sealkit-controller {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "sealkit-controller: the in-cluster controller is not implemented in this version.\n  \
         hint: use the upstream sealed-secrets controller for now; `sealkit seal` output is compatible with it."
    );
    ExitCode::from(2)
}
