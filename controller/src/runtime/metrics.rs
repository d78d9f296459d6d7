//! Prometheus metrics, on their own port. Upstream's names are kept so existing dashboards and
//! alerts work; sealkit adds a reconcile-duration histogram and a counter of RSA private-key
//! operations (the cost the restart path avoids). Labels carry names and reasons, never values.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `{reason, namespace}` of an unseal error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `unseal`, `update`, `collision`, …
    pub reason: String,
    /// Namespace of the SealedSecret.
    pub namespace: String,
}

/// `{name, namespace, condition}` of a SealedSecret's condition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    /// SealedSecret name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Condition type (`Synced`).
    pub condition: String,
}

/// `{provider, call, status}` of a cloud API call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderCallLabels {
    /// `aws-secretsmanager`, `aws-parameterstore`.
    pub provider: String,
    /// The API, e.g. `BatchGetSecretValue`.
    pub call: String,
    /// `success` or the error class (`not_found`, `access_denied`, `throttled`, `error`).
    pub status: String,
}

/// `{result}` of an ExternalSecret sync.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncLabels {
    /// `synced`, `skipped` (nothing due), `error`.
    pub result: String,
}

/// `{action}` of an applied object.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// `created`, `configured`, `unchanged`, `pruned`.
    pub action: String,
}

/// `{name, namespace, condition, status}` of an ExternalSecret condition (ESO's labels).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EsConditionLabels {
    /// ExternalSecret name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// `Ready`.
    pub condition: String,
    /// `True` or `False`.
    pub status: String,
}

/// `{name, namespace}` of an object.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
}

/// `{verb}` of a Kubernetes API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`.
    pub verb: String,
}

/// `{controller, kind}` of a failed reconcile (controller-runtime's label name).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoopErrorLabels {
    /// `unseal`, `externalsecret`, `secretstore`, `clustersecretstore`, `kustomization`,
    /// `gitrepository`.
    pub controller: String,
    /// The error's `metric_label()`.
    pub kind: String,
}

/// `{controller}` of a reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// The loop.
    pub controller: String,
}

/// `{revision}` of the build.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The version.
    pub revision: String,
}

/// Every metric the controller exports.
pub struct Metrics {
    /// Registry for `/metrics`.
    pub registry: Registry,
    /// `sealed_secrets_controller_unseal_requests_total`.
    pub unseal_requests: Counter,
    /// `sealed_secrets_controller_unseal_errors_total{reason,namespace}`.
    pub unseal_errors: Family<ErrorLabels, Counter>,
    /// `sealed_secrets_controller_condition_info{name,namespace,condition}`: 1 true, 0 false, -1 unknown.
    pub condition_info: Family<ConditionLabels, Gauge>,
    /// `sealkit_reconcile_duration_seconds`.
    pub reconcile_duration: Histogram,
    /// `sealkit_rsa_private_key_operations_total`.
    pub rsa_private_ops: Counter,
    /// `sealkit_provider_api_calls_total{provider,call,status}`.
    pub provider_calls: Family<ProviderCallLabels, Counter>,
    /// `sealkit_externalsecret_sync_calls_total{result}`.
    pub external_syncs: Family<SyncLabels, Counter>,
    /// `sealkit_externalsecret_reconcile_duration_seconds`.
    pub external_reconcile_duration: Histogram,
    /// ESO's `externalsecret_status_condition{name,namespace,condition,status}`.
    pub external_condition: Family<EsConditionLabels, Gauge>,
    /// ESO's `externalsecret_sync_calls_total{name,namespace}`.
    pub eso_sync_calls: Family<ObjectLabels, Counter>,
    /// ESO's `externalsecret_sync_calls_error{name,namespace}` (exposed with `_total`).
    pub eso_sync_errors: Family<ObjectLabels, Counter>,
    /// `sealkit_kustomization_reconcile_duration_seconds`.
    pub gitops_reconcile_duration: Histogram,
    /// `sealkit_gitops_objects_total{action}`.
    pub gitops_objects: Family<ActionLabels, Counter>,
    /// `sealkit_kube_requests_total{verb}`: every API request of every loop (one budget).
    pub kube_requests: Family<VerbLabels, Counter>,
    /// `sealkit_reconcile_errors_total{controller,kind}`.
    pub reconcile_errors: Family<LoopErrorLabels, Counter>,
    /// `sealkit_reconciles_total{controller}`.
    pub reconciles: Family<ControllerLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let unseal_requests = Counter::default();
        let unseal_errors = Family::<ErrorLabels, Counter>::default();
        let condition_info = Family::<ConditionLabels, Gauge>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let rsa_private_ops = Counter::default();
        let build_info = Family::<BuildLabels, Gauge>::default();
        let provider_calls = Family::<ProviderCallLabels, Counter>::default();
        let external_syncs = Family::<SyncLabels, Counter>::default();
        let external_reconcile_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let external_condition = Family::<EsConditionLabels, Gauge>::default();
        let eso_sync_calls = Family::<ObjectLabels, Counter>::default();
        let eso_sync_errors = Family::<ObjectLabels, Counter>::default();
        registry.register(
            "externalsecret_status_condition",
            "ExternalSecret conditions (ESO's metric)",
            external_condition.clone(),
        );
        registry.register(
            "externalsecret_sync_calls",
            "ExternalSecret reconciles (ESO's metric)",
            eso_sync_calls.clone(),
        );
        // OpenMetrics counters end in `_total`: ESO's `externalsecret_sync_calls_error` is
        // exposed as `externalsecret_sync_calls_error_total`.
        registry.register(
            "externalsecret_sync_calls_error",
            "ExternalSecret reconcile errors (ESO's metric)",
            eso_sync_errors.clone(),
        );
        let gitops_reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let gitops_objects = Family::<ActionLabels, Counter>::default();
        registry.register(
            "sealkit_kustomization_reconcile_duration_seconds",
            "Time of one Kustomization reconcile (fetch, render, apply, prune, health)",
            gitops_reconcile_duration.clone(),
        );
        registry.register(
            "sealkit_gitops_objects",
            "Objects handled by the GitOps loop, by action",
            gitops_objects.clone(),
        );
        registry.register(
            "sealkit_provider_api_calls",
            "Calls to external secret providers",
            provider_calls.clone(),
        );
        registry.register(
            "sealkit_externalsecret_sync_calls",
            "ExternalSecret reconciles by result",
            external_syncs.clone(),
        );
        registry.register(
            "sealkit_externalsecret_reconcile_duration_seconds",
            "Time of one ExternalSecret reconcile",
            external_reconcile_duration.clone(),
        );
        build_info
            .get_or_create(&BuildLabels {
                revision: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        registry.register(
            "sealed_secrets_controller_unseal_requests",
            "SealedSecrets unseal attempts",
            unseal_requests.clone(),
        );
        registry.register(
            "sealed_secrets_controller_unseal_errors",
            "SealedSecrets unseal errors by reason",
            unseal_errors.clone(),
        );
        registry.register(
            "sealed_secrets_controller_condition_info",
            "SealedSecret conditions (1 true, 0 false, -1 unknown)",
            condition_info.clone(),
        );
        registry.register(
            "sealed_secrets_controller_build_info",
            "Build information",
            build_info,
        );
        registry.register(
            "sealkit_reconcile_duration_seconds",
            "Time of one SealedSecret reconcile",
            reconcile_duration.clone(),
        );
        registry.register(
            "sealkit_rsa_private_key_operations",
            "RSA private-key operations performed",
            rsa_private_ops.clone(),
        );
        let kube_requests = Family::<VerbLabels, Counter>::default();
        registry.register(
            "sealkit_kube_requests",
            "Kubernetes API requests of every loop, by verb",
            kube_requests.clone(),
        );
        let reconcile_errors = Family::<LoopErrorLabels, Counter>::default();
        registry.register(
            "sealkit_reconcile_errors",
            "Failed reconciles by loop and kind of error",
            reconcile_errors.clone(),
        );
        let reconciles = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "sealkit_reconciles",
            "Reconciles by loop",
            reconciles.clone(),
        );
        Metrics {
            kube_requests,
            reconcile_errors,
            reconciles,
            registry,
            unseal_requests,
            unseal_errors,
            condition_info,
            reconcile_duration,
            rsa_private_ops,
            provider_calls,
            external_syncs,
            external_reconcile_duration,
            external_condition,
            eso_sync_calls,
            eso_sync_errors,
            gitops_reconcile_duration,
            gitops_objects,
        }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
