//! Command-line definitions. `sealkit seal` takes kubeseal's flags (and its
//! `SEALED_SECRETS_<FLAG>` environment variables), so scripts can swap `kubeseal` for
//! `sealkit seal`; invoked as `kubeseal` (a symlink), sealkit behaves as `sealkit seal`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use sealkit_keys::seal::Scope;

use crate::commands::sops::{
    CheckArgs, DecryptArgs, EditArgs, EncryptArgs, ExecArgs, FilestatusArgs, RotateArgs, SetArgs,
    UnsetArgs, UpdatekeysArgs,
};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  a document, key or value was rejected (bad input, wrong key, tampered value)
  2  usage error (bad or conflicting flags)
  3  I/O error (unreadable input, unwritable output, certificate download)";

/// Secrets for GitOps: seal Kubernetes Secrets (kubeseal-compatible), encrypt files with SOPS and
/// age, and render or diff GitOps paths as the controller would.
#[derive(Debug, Parser)]
#[command(name = "sealkit", version, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Seal Secrets into SealedSecrets (kubeseal's flags and output).
    #[command(after_help = SEAL_EXAMPLES)]
    Seal(SealArgs),
    /// Re-encrypt SealedSecrets to a new certificate offline, in place, using backed-up keys.
    #[command(after_help = RESEAL_EXAMPLES)]
    Reseal(ResealArgs),
    /// Create an offline sealing key pair (for local use and disaster-recovery drills).
    #[command(after_help = KEYGEN_EXAMPLES)]
    Keygen(KeygenArgs),
    /// SOPS-compatible file encryption with age (sops' subcommands and flags).
    #[command(after_help = SOPS_EXAMPLES)]
    Sops(SopsArgs),
    /// Render a GitOps path as the controller would (kustomize, SOPS), Secret values masked.
    #[command(after_help = BUILD_EXAMPLES)]
    Build(BuildArgs),
    /// Compare a GitOps path with the cluster (server-side dry-run, Secret values masked).
    ///
    /// A changed Secret value still shows as changed (keyed hash). Exit 0 no difference,
    /// 1 differences, >1 error.
    #[command(after_help = DIFF_EXAMPLES)]
    Diff(DiffArgs),
    /// Run the quickstart: make a key pair, seal the example Secrets, recover them.
    Demo(DemoArgs),
    /// Print shell completions.
    #[command(after_help = "Example:\n  sealkit completions bash > /etc/bash_completion.d/sealkit")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

const SEAL_EXAMPLES: &str = "\
Examples:
  # Seal a Secret with the cluster's certificate (as kubeseal does)
  sealkit seal --cert cert.pem -f secret.yaml -w sealed.yaml
  # From a pipe, YAML out, usable anywhere in the namespace
  kubectl create secret generic db --from-literal=password=s3cr3t --dry-run=client -o yaml \\
    | sealkit seal --cert cert.pem --scope namespace-wide -o yaml
  # Seal one value for an existing SealedSecret
  echo -n s3cr3t | sealkit seal --cert cert.pem --raw -n prod --name db --from-file=/dev/stdin
  # Add or replace keys in an existing SealedSecret file, in place
  sealkit seal --cert cert.pem --merge-into sealed.yaml < new-keys.yaml
  # Recover Secrets with backed-up private keys (no cluster)
  sealkit seal --recovery-unseal --recovery-private-key backup.key -f sealed.yaml

Every flag can also be set as SEALED_SECRETS_<FLAG>, e.g. SEALED_SECRETS_CERT=cert.pem.";

const RESEAL_EXAMPLES: &str = "\
Examples:
  # Re-encrypt every SealedSecret under a GitOps tree to the new certificate, in place
  sealkit reseal --cert new.pem --recovery-private-key old-keys.yaml apps/
  # One file to stdout
  sealkit reseal --cert new.pem --recovery-private-key old.key < sealed.yaml";

const KEYGEN_EXAMPLES: &str = "\
Examples:
  sealkit keygen --out-dir ./keys            # writes keys/tls.key (0600) and keys/tls.crt
  sealkit keygen --out-dir ./keys --secret-out key-secret.yaml --namespace kube-system";

/// Output format of documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Pretty JSON, as kubeseal writes by default.
    Json,
    /// YAML documents starting with `---`.
    Yaml,
}

/// `sealkit seal`: kubeseal's flags.
#[derive(Debug, Clone, Args)]
pub struct SealArgs {
    /// Input Secret file (YAML or JSON, one or many documents); stdin when absent.
    #[arg(
        short = 'f',
        long = "secret-file",
        env = "SEALED_SECRETS_SECRET_FILE",
        value_name = "FILE"
    )]
    pub secret_file: Option<PathBuf>,
    /// Output file, written atomically; stdout when absent. A .yaml/.yml name implies -o yaml.
    #[arg(
        short = 'w',
        long = "sealed-secret-file",
        env = "SEALED_SECRETS_SEALED_SECRET_FILE",
        value_name = "FILE"
    )]
    pub sealed_secret_file: Option<PathBuf>,
    /// Output format.
    #[arg(
        short = 'o',
        long = "format",
        env = "SEALED_SECRETS_FORMAT",
        value_enum
    )]
    pub format: Option<OutputFormat>,
    /// Certificate: a file, or an http(s):// or file:// URL.
    #[arg(long, env = "SEALED_SECRETS_CERT", value_name = "FILE|URL")]
    pub cert: Option<String>,
    /// Print the certificate (from --cert, else from the controller through the API server).
    #[arg(long = "fetch-cert", env = "SEALED_SECRETS_FETCH_CERT")]
    pub fetch_cert: bool,
    /// Scope: strict (default), namespace-wide or cluster-wide. Overrides the Secret's annotations.
    #[arg(long, env = "SEALED_SECRETS_SCOPE", value_parser = parse_scope, value_name = "SCOPE")]
    pub scope: Option<Scope>,
    /// Secret name (required with --raw for strict scope; overrides metadata.name otherwise).
    #[arg(long, env = "SEALED_SECRETS_NAME")]
    pub name: Option<String>,
    /// Namespace (a missing one is taken from the kubeconfig context, as kubectl does).
    #[arg(short = 'n', long, env = "SEALED_SECRETS_NAMESPACE")]
    pub namespace: Option<String>,
    /// Seal a single value (from --from-file or stdin) and print its base64 ciphertext.
    #[arg(long, env = "SEALED_SECRETS_RAW")]
    pub raw: bool,
    /// With --raw: the value's file, as [key=]path.
    #[arg(
        long = "from-file",
        env = "SEALED_SECRETS_FROM_FILE",
        value_name = "[KEY=]PATH"
    )]
    pub from_file: Vec<String>,
    /// Merge the sealed values into this SealedSecret file (using its name and namespace), in place.
    #[arg(
        long = "merge-into",
        env = "SEALED_SECRETS_MERGE_INTO",
        value_name = "FILE"
    )]
    pub merge_into: Option<PathBuf>,
    /// Seal a Secret that has no data.
    #[arg(long = "allow-empty-data", env = "SEALED_SECRETS_ALLOW_EMPTY_DATA")]
    pub allow_empty_data: bool,
    /// Decrypt SealedSecrets offline with --recovery-private-key (prints Secrets!).
    #[arg(long = "recovery-unseal", env = "SEALED_SECRETS_RECOVERY_UNSEAL")]
    pub recovery_unseal: bool,
    /// Private keys for --recovery-unseal: PEM files or Secret/List backups (comma-separated).
    #[arg(
        long = "recovery-private-key",
        env = "SEALED_SECRETS_RECOVERY_PRIVATE_KEY",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub recovery_private_key: Vec<PathBuf>,
    /// Path to the kubeconfig (for the default namespace).
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<String>,
    /// Kubeconfig context to read the default namespace from.
    #[arg(long, env = "SEALED_SECRETS_CONTEXT")]
    pub context: Option<String>,
    /// Controller Service name (used when fetching the certificate from a cluster).
    #[arg(
        long = "controller-name",
        env = "SEALED_SECRETS_CONTROLLER_NAME",
        default_value = "sealed-secrets-controller"
    )]
    pub controller_name: String,
    /// Controller namespace (used when fetching the certificate from a cluster).
    #[arg(
        long = "controller-namespace",
        env = "SEALED_SECRETS_CONTROLLER_NAMESPACE",
        default_value = "kube-system"
    )]
    pub controller_namespace: String,
    /// Ask the controller (through the API server) whether it can unseal the input.
    #[arg(long, env = "SEALED_SECRETS_VALIDATE")]
    pub validate: bool,
    /// Re-encrypt the input with the controller's newest key (through the API server; in place
    /// when only -f is given). Offline, with backed-up keys: `sealkit reseal`.
    #[arg(
        long = "re-encrypt",
        alias = "rotate",
        env = "SEALED_SECRETS_RE_ENCRYPT"
    )]
    pub re_encrypt: bool,
}

/// `sealkit reseal`.
#[derive(Debug, Clone, Args)]
pub struct ResealArgs {
    /// Files or directories (searched recursively for .yaml/.yml/.json) to rewrite in place;
    /// stdin to stdout when none.
    pub paths: Vec<PathBuf>,
    /// The new certificate: a file, or an http(s):// or file:// URL.
    #[arg(long, env = "SEALED_SECRETS_CERT", value_name = "FILE|URL")]
    pub cert: String,
    /// Private keys that open the current values (PEM or Secret/List backups; comma-separated).
    #[arg(
        long = "recovery-private-key",
        env = "SEALED_SECRETS_RECOVERY_PRIVATE_KEY",
        value_delimiter = ',',
        required = true,
        value_name = "FILE"
    )]
    pub recovery_private_key: Vec<PathBuf>,
    /// Only report what would change.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format for stdin input (default: the input's).
    #[arg(short = 'o', long = "format", value_enum)]
    pub format: Option<OutputFormat>,
    /// No progress bar or summary.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `sealkit keygen`.
#[derive(Debug, Clone, Args)]
pub struct KeygenArgs {
    /// Directory for tls.key (mode 0600) and tls.crt; created if missing.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out_dir: PathBuf,
    /// RSA key size.
    #[arg(long, default_value_t = 4096)]
    pub bits: usize,
    /// Certificate common name (upstream's --my-cn; empty by default).
    #[arg(long, default_value = "")]
    pub cn: String,
    /// Certificate lifetime in days (upstream: 3650).
    #[arg(long, default_value_t = 3650)]
    pub days: u64,
    /// Also write a sealing-key Secret (upstream layout) that the controller can import.
    #[arg(long, value_name = "FILE")]
    pub secret_out: Option<PathBuf>,
    /// Name of that Secret.
    #[arg(long, default_value = "sealed-secrets-key-offline")]
    pub secret_name: String,
    /// Namespace of that Secret (the controller's).
    #[arg(long, default_value = "kube-system")]
    pub namespace: String,
    /// Overwrite existing key files.
    #[arg(long)]
    pub force: bool,
}

const BUILD_EXAMPLES: &str = "\
Examples:
  # Render an overlay as the controller would (no cluster needed); Secret values masked
  SOPS_AGE_KEY_FILE=examples/gitops/keys/example.agekey sealkit build examples/gitops/apps/overlays/staging
  # A plain directory of manifests, as JSON, with the values shown
  sealkit build --age-key-file key.txt --show-secrets -o json clusters/prod

SOPS documents are decrypted after the kustomize build, with identities from --age-key-file,
SOPS_AGE_KEY, SOPS_AGE_KEY_FILE, SOPS_AGE_KEY_CMD and ~/.config/sops/age/keys.txt. The source
root (for .sourceignore and the SOPS files) is the nearest directory upwards holding .git,
.sops.yaml or .sourceignore, unless --root is given.";

/// `sealkit build`.
#[derive(Debug, Clone, Args)]
pub struct BuildArgs {
    /// The directory (or file) to render.
    pub path: PathBuf,
    /// Source root (default: the nearest directory upwards with .git, .sops.yaml or .sourceignore).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// age identity file(s), in addition to the SOPS_AGE_* sources.
    #[arg(long = "age-key-file", value_name = "FILE")]
    pub age_key_files: Vec<PathBuf>,
    /// Print Secret values and values decrypted from SOPS instead of masking them.
    #[arg(long)]
    pub show_secrets: bool,
    /// Let kustomize fetch remote bases and files (URLs, remote Git refs); refused otherwise.
    #[arg(long)]
    pub allow_remote_bases: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "yaml")]
    pub format: OutputFormat,
}

const DIFF_EXAMPLES: &str = "\
Examples:
  # What would change if this overlay were applied now?
  SOPS_AGE_KEY_FILE=key.txt sealkit diff apps/overlays/production
  # In CI: fail the job when the cluster has drifted from Git
  sealkit diff --context prod clusters/prod || echo drift

Exit codes: 0 no difference, 1 differences found, 2 the path cannot be rendered or decrypted,
3 the cluster cannot be reached or refused the dry-run.";

/// `sealkit diff`.
#[derive(Debug, Clone, Args)]
pub struct DiffArgs {
    /// The directory (or file) to compare.
    pub path: PathBuf,
    /// Source root (default: the nearest directory upwards with .git, .sops.yaml or .sourceignore).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// age identity file(s), in addition to the SOPS_AGE_* sources.
    #[arg(long = "age-key-file", value_name = "FILE")]
    pub age_key_files: Vec<PathBuf>,
    /// Namespace for namespaced objects that name none (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Path to a kubeconfig (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<String>,
    /// Kubeconfig context.
    #[arg(long)]
    pub context: Option<String>,
    /// Server-side-apply field manager for the dry-run (the controller's).
    #[arg(long, default_value = "sealkit")]
    pub field_manager: String,
    /// Let kustomize fetch remote bases and files (URLs, remote Git refs); refused otherwise.
    #[arg(long)]
    pub allow_remote_bases: bool,
}

/// `sealkit demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Keep the generated keys and sealed files in this directory (default: a temporary one).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// RSA key size for the demo key (4096 as the controller uses).
    #[arg(long, default_value_t = 4096)]
    pub bits: usize,
}

const SOPS_EXAMPLES: &str = "\
Examples:
  age-keygen -o key.txt                                   # an identity (Debian package `age`)
  sealkit sops encrypt --age age1... -i secret.yaml        # encrypt values in place
  SOPS_AGE_KEY_FILE=key.txt sealkit sops decrypt secret.yaml
  sealkit sops edit secret.yaml                            # $EDITOR on the plaintext
  sealkit sops set secret.yaml '[\"stringData\"][\"password\"]' '\"s3cr3t\"'
  sealkit sops updatekeys --check apps/                    # recipients out of date with .sops.yaml?
  sealkit sops check .                                     # pre-commit: anything in clear?

Identities come from SOPS_AGE_KEY, SOPS_AGE_KEY_FILE, SOPS_AGE_KEY_CMD and
~/.config/sops/age/keys.txt, all together; recipients from --age, SOPS_AGE_RECIPIENTS or .sops.yaml.";

/// `sealkit sops`.
#[derive(Debug, Clone, Args)]
pub struct SopsArgs {
    /// The sops subcommand.
    #[command(subcommand)]
    pub command: SopsCommand,
}

/// Flags every sops subcommand shares.
#[derive(Debug, Clone, Args)]
pub struct SopsCommon {
    /// Path of the .sops.yaml to use (default: the nearest one upwards from the working directory).
    #[arg(long, env = "SOPS_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Input format (default: from the file extension; anything unknown is binary).
    #[arg(long, value_parser = ["yaml", "json", "dotenv", "ini", "binary"], global = true)]
    pub input_type: Option<String>,
    /// Output format (default: the input format).
    #[arg(long, value_parser = ["yaml", "json", "dotenv", "ini", "binary"], global = true)]
    pub output_type: Option<String>,
    /// Use this name instead of the file's for format detection and .sops.yaml rules.
    #[arg(long, value_name = "NAME", global = true)]
    pub filename_override: Option<String>,
    /// Indentation of written JSON (spaces; default a tab) and of the YAML `sops:` block.
    #[arg(long, value_name = "N", global = true, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub indent: Option<u8>,
}

/// Encryption-rule flags (at most one).
#[derive(Debug, Clone, Args)]
pub struct RuleFlags {
    /// Leave values clear whose key (or any parent key) ends with this suffix.
    #[arg(long, value_name = "SUFFIX")]
    pub unencrypted_suffix: Option<String>,
    /// Encrypt only values whose key (or a parent key) ends with this suffix.
    #[arg(long, value_name = "SUFFIX")]
    pub encrypted_suffix: Option<String>,
    /// Leave values clear whose key (or a parent key) matches.
    #[arg(long, value_name = "REGEX")]
    pub unencrypted_regex: Option<String>,
    /// Encrypt only values whose key (or a parent key) matches, e.g. '^(data|stringData)$'.
    #[arg(long, value_name = "REGEX")]
    pub encrypted_regex: Option<String>,
    /// Leave values clear that follow a comment matching this regex.
    #[arg(long, value_name = "REGEX")]
    pub unencrypted_comment_regex: Option<String>,
    /// Encrypt only values that follow a comment matching this regex (e.g. 'sops:enc').
    #[arg(long, value_name = "REGEX")]
    pub encrypted_comment_regex: Option<String>,
    /// Compute the MAC over encrypted values only (clear values may then be edited freely).
    #[arg(long)]
    pub mac_only_encrypted: bool,
}

/// Where output goes.
#[derive(Debug, Clone, Args)]
pub struct OutputFlags {
    /// Write the result back to the file (atomically).
    #[arg(short = 'i', long)]
    pub in_place: bool,
    /// Write the result to this file (atomically) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// sops subcommands; each one's arguments live beside its code in `commands::sops`.
#[derive(Debug, Clone, Subcommand)]
pub enum SopsCommand {
    /// Encrypt a file's values for age recipients.
    Encrypt(EncryptArgs),
    /// Decrypt a file (prints the plaintext).
    Decrypt(DecryptArgs),
    /// Edit the plaintext in $EDITOR; unchanged values keep their exact ciphertext.
    Edit(EditArgs),
    /// Re-encrypt with a new data key, optionally adding or removing age recipients.
    Rotate(RotateArgs),
    /// Re-wrap the data key for the recipients .sops.yaml now lists (values untouched).
    Updatekeys(UpdatekeysArgs),
    /// Set one value, e.g. set FILE '["a"]["b"]' '"text"' (the value is JSON).
    Set(SetArgs),
    /// Remove one value.
    Unset(UnsetArgs),
    /// Run a command with the file's top-level values as environment variables.
    ExecEnv(ExecArgs),
    /// Run a command with the plaintext in a temporary 0600 file; {} in the command is its path.
    ExecFile(ExecArgs),
    /// Print {"encrypted": true|false}.
    Filestatus(FilestatusArgs),
    /// Find files .sops.yaml says must be encrypted but are not, and Kubernetes Secrets in clear
    /// (exit 1 with the list; made for pre-commit hooks).
    Check(CheckArgs),
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    s.parse::<Scope>().map_err(|e| e.to_string())
}

/// The clap command (for completions and tests).
pub fn command() -> clap::Command {
    Cli::command()
}

/// Parses arguments.
pub fn parse(args: Vec<OsString>) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(args)
}

/// When run as `kubeseal` (a symlink or copy), behave as `sealkit seal`.
pub fn normalize_argv(mut args: Vec<OsString>) -> Vec<OsString> {
    let invoked = args
        .first()
        .and_then(|a| {
            std::path::Path::new(a)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    if invoked == "kubeseal" {
        args.insert(1, OsString::from("seal"));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_valid() {
        command().debug_assert();
    }

    #[test]
    fn kubeseal_alias() {
        let a = normalize_argv(vec!["/usr/bin/kubeseal".into(), "--raw".into()]);
        assert_eq!(a[1], "seal");
        let a = normalize_argv(vec!["sealkit".into(), "demo".into()]);
        assert_eq!(a[1], "demo");
    }
}
