//! CLI errors: a message, an optional hint, and a stable exit code.
//!
//! Exit codes (also in `sealkit --help` and docs/cli.md):
//! 0 success · 1 a document or key was rejected (bad input, wrong key, tampered value) ·
//! 2 usage error (bad flags) · 3 I/O error (unreadable input, unwritable output, network).

use std::fmt;

/// A document, key or value was rejected.
pub const EXIT_INPUT: u8 = 1;
/// The command line itself is wrong.
pub const EXIT_USAGE: u8 = 2;
/// Reading or writing a file, or fetching a URL, failed.
pub const EXIT_IO: u8 = 3;

/// An error as the user sees it.
#[derive(Debug)]
pub struct CliError {
    message: String,
    hint: Option<String>,
    code: u8,
    broken_pipe: bool,
}

impl CliError {
    /// Bad input (exit 1).
    pub fn input(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
            code: EXIT_INPUT,
            broken_pipe: false,
        }
    }

    /// Bad usage (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
            code: EXIT_USAGE,
            broken_pipe: false,
        }
    }

    /// I/O failure (exit 3).
    pub fn io(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
            code: EXIT_IO,
            broken_pipe: false,
        }
    }

    /// Reading or writing `what` failed.
    pub fn io_at(what: &str, e: &std::io::Error) -> Self {
        let mut err = Self::io(format!("{what}: {e}"));
        err.broken_pipe = e.kind() == std::io::ErrorKind::BrokenPipe;
        err
    }

    /// A failure whose story was already told (e.g. a child process's exit code): exit with
    /// `code`, print nothing more.
    pub fn silent(code: u8) -> Self {
        Self {
            message: String::new(),
            hint: None,
            code,
            broken_pipe: false,
        }
    }

    /// Whether there is nothing to print.
    pub fn is_silent(&self) -> bool {
        self.message.is_empty()
    }

    /// The same error with another exit code (e.g. `sealkit diff` reserves 1 for "differences").
    pub fn with_code(mut self, code: u8) -> Self {
        self.code = code;
        self
    }

    /// The same error, its message preceded by `context` (what was being done, and why).
    pub fn with_context(mut self, context: &str) -> Self {
        if !self.message.is_empty() {
            self.message = format!("{context}: {}", self.message);
        }
        self
    }

    /// Adds a hint line.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        if self.broken_pipe { 0 } else { self.code }
    }

    /// Whether this is a closed stdout (e.g. `| head`): exit quietly.
    pub fn is_broken_pipe(&self) -> bool {
        self.broken_pipe
    }

    /// The message without the hint.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}
