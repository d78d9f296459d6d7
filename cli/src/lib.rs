//! The `sealkit` command line as a library: argument definitions, one module per command,
//! and the small pieces of I/O they share (atomic writes, certificate sources, kubeconfig).
//! The binary only calls [`run`].

pub mod args;
pub mod cert;
pub mod cluster;
pub mod commands;
pub mod error;
pub mod io;
pub mod kubeconfig;

use args::{Cli, Command};
pub use error::CliError;

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Seal(a) => commands::seal::run(&a),
        Command::Reseal(a) => commands::reseal::run(&a),
        Command::Keygen(a) => commands::keygen::run(&a),
        Command::Sops(a) => commands::sops::run(&a.command),
        Command::Build(a) => commands::build::run(&a),
        Command::Diff(a) => commands::diff::run(&a),
        Command::Demo(a) => commands::demo::run(&a),
        Command::Completions { shell } => {
            let mut cmd = args::command();
            clap_complete::generate(shell, &mut cmd, "sealkit", &mut std::io::stdout());
            Ok(())
        }
    }
}
