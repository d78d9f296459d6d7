//! The controller's flags, and the settings of each loop derived from them. Every flag is
//! documented in `sealkit-controller --help` and docs/controller.md.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// The controller's flags (`sealkit-controller --help`).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sealkit-controller",
    version,
    about = "Unseals SealedSecrets, syncs ExternalSecrets from AWS, and follows Flux GitRepositories and Kustomizations."
)]
pub struct Flags {
    /// Namespace of the sealing key Secrets (the controller's namespace).
    #[arg(
        long,
        env = "SEALED_SECRETS_KEY_NAMESPACE",
        default_value = "kube-system"
    )]
    pub key_namespace: String,
    /// generateName prefix of new key Secrets.
    #[arg(long, default_value = "sealed-secrets-key")]
    pub key_prefix: String,
    /// RSA key size of new keys.
    #[arg(long, default_value_t = 4096)]
    pub key_size: usize,
    /// Certificate lifetime of new keys.
    #[arg(long, default_value = "87600h", value_parser = humantime::parse_duration)]
    pub key_ttl: Duration,
    /// A new key is added when the newest is this old; 0 disables renewal.
    #[arg(long, alias = "rotate-period", default_value = "720h", value_parser = humantime::parse_duration)]
    pub key_renew_period: Duration,
    /// Add a new key if the newest was created before this time (RFC 3339).
    #[arg(long, env = "SEALED_SECRETS_KEY_CUTOFF_TIME")]
    pub key_cutoff_time: Option<humantime::Timestamp>,
    /// Common name of new certificates.
    #[arg(long, default_value = "")]
    pub my_cn: String,
    /// HTTP endpoints (cert, verify, rotate, healthz).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,
    /// Prometheus metrics.
    #[arg(long, default_value = "0.0.0.0:8081")]
    pub listen_metrics_addr: SocketAddr,
    /// Git webhook receiver (`POST /hook/<digest>`), apart from the kubeseal endpoints.
    #[arg(long, default_value = "0.0.0.0:9292")]
    pub listen_webhook_addr: SocketAddr,
    /// Server-side-apply field manager.
    #[arg(long, default_value = "sealkit")]
    pub field_manager: String,
    /// Watch SealedSecrets in this namespace only (default: all namespaces).
    #[arg(long, env = "SEALED_SECRETS_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Only SealedSecrets (and owned Secrets) matching this label selector.
    #[arg(long, env = "SEALED_SECRETS_SELECTOR")]
    pub selector: Option<String>,
    /// Elect a leader with a Lease (in the key namespace) so that several replicas can run: every
    /// replica serves the HTTP endpoints, only the leader writes.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// This replica's identity in the Lease (default: $POD_NAME, else the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Average API requests per second the reconciler may make.
    #[arg(long, default_value_t = 20.0)]
    pub kube_api_qps: f64,
    /// API requests the reconciler may make at once.
    #[arg(long, default_value_t = 40)]
    pub kube_api_burst: u32,
    /// Reconciles the unseal loop, and each GitOps loop, run at once (Flux's and ESO's
    /// `--concurrent`). Every reconcile in flight holds memory while it waits for the request
    /// budget, so unbounded concurrency costs memory, not speed. ExternalSecrets are not bounded
    /// by it: their reconciles wait together for batched provider calls.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrent: u16,
    /// How often in-sync objects are checked again (drift safety net), jittered.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub resync: Duration,
    /// Run the ExternalSecret syncer (external-secrets.io/v1) when its CRD is installed.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub external_secrets: bool,
    /// How long a fetched value is shared between ExternalSecrets before it is fetched again.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub provider_cache_ttl: Duration,
    /// Requests per second per AWS Secrets Manager API (quota: 100 for batch and list calls).
    #[arg(long, default_value_t = 50.0)]
    pub aws_secretsmanager_qps: f64,
    /// Requests per second for AWS Parameter Store reads (default quota: 40).
    #[arg(long, default_value_t = 20.0)]
    pub aws_ssm_qps: f64,
    /// Run the GitOps sync loop (Flux GitRepository + Kustomization) when its CRDs are installed.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub gitops: bool,
    /// Where fetched Git revisions are kept (an emptyDir in the Deployment).
    #[arg(long, default_value = "/tmp/sealkit-gitops")]
    pub gitops_cache_dir: std::path::PathBuf,
    /// GitOps: Kustomizations without spec.serviceAccountName apply as this ServiceAccount of
    /// their namespace (impersonated), not as the controller.
    #[arg(long, value_name = "NAME")]
    pub default_service_account: Option<String>,
    /// GitOps: a Kustomization may only reference a GitRepository and dependencies in its own
    /// namespace.
    #[arg(long)]
    pub no_cross_namespace_refs: bool,
    /// GitOps: let kustomize fetch remote bases and files (URLs, remote Git refs).
    #[arg(long)]
    pub allow_remote_bases: bool,
}

impl Flags {
    /// The unseal loop's settings.
    pub fn unseal(&self) -> crate::unseal::Settings {
        crate::unseal::Settings {
            keys: crate::unseal::keys::KeySettings {
                namespace: self.key_namespace.clone(),
                prefix: self.key_prefix.clone(),
                size: self.key_size,
                ttl: self.key_ttl,
                renew_period: (!self.key_renew_period.is_zero()).then_some(self.key_renew_period),
                cutoff: self.key_cutoff_time.map(std::time::SystemTime::from),
                common_name: self.my_cn.clone(),
            },
            namespace: self.watch_namespace.clone(),
            selector: self.selector.clone(),
            resync: self.resync,
            concurrency: self.concurrent,
        }
    }

    /// The ExternalSecret loop's settings.
    pub fn external(&self) -> crate::external::Settings {
        crate::external::Settings {
            namespace: self.watch_namespace.clone(),
            selector: self.selector.clone(),
            provider_cache_ttl: self.provider_cache_ttl,
            limits: crate::external::provider::aws::AwsLimits {
                secretsmanager_qps: self.aws_secretsmanager_qps,
                ssm_qps: self.aws_ssm_qps,
            },
        }
    }

    /// The GitOps loop's settings.
    pub fn gitops(
        &self,
        metrics: std::sync::Arc<crate::runtime::metrics::Metrics>,
    ) -> crate::gitops::Settings {
        crate::gitops::Settings {
            namespace: self.watch_namespace.clone(),
            selector: self.selector.clone(),
            concurrency: self.concurrent,
            reconcile: crate::gitops::GitopsSettings {
                cache_dir: self.gitops_cache_dir.clone(),
                metrics,
                default_service_account: self.default_service_account.clone(),
                no_cross_namespace_refs: self.no_cross_namespace_refs,
                allow_remote_bases: self.allow_remote_bases,
            },
        }
    }
}
