//! `sealkit`: a thin binary over `sealkit_cli`. Parses arguments, runs the command, and turns
//! the outcome into a message, a hint and a documented exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = sealkit_cli::args::normalize_argv(std::env::args_os().collect());
    let cli = match sealkit_cli::args::parse(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                sealkit_cli::error::EXIT_USAGE
            } else {
                0
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match sealkit_cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.is_broken_pipe() && !e.is_silent() {
                eprintln!("{e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
