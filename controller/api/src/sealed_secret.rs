//! `SealedSecret` (`bitnami.com/v1alpha1`), shaped exactly like upstream's CRD.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// A Secret encrypted to the controller's key, safe to store in Git.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "bitnami.com",
    version = "v1alpha1",
    kind = "SealedSecret",
    plural = "sealedsecrets",
    namespaced,
    status = "SealedSecretStatus",
    doc = "SealedSecret is a Secret encrypted with the controller's public key; only the controller can decrypt it.",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[0].message"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[0].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SealedSecretSpec {
    /// The shape of the Secret to create: metadata, type, immutability, templated values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<SecretTemplateSpec>,
    /// Deprecated: the whole Secret as one sealed blob. Use `encryptedData`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "byte_string")]
    pub data: Option<String>,
    /// Sealed values by key: base64 of the kubeseal hybrid envelope.
    #[schemars(schema_with = "encrypted_data_schema")]
    pub encrypted_data: BTreeMap<String, String>,
}

/// The Secret the controller creates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplateSpec {
    /// Metadata of the Secret (name and namespace are forced to the SealedSecret's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "template_metadata_schema")]
    pub metadata: Option<TemplateMetadata>,
    /// Secret type, e.g. `Opaque` or `kubernetes.io/tls`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Whether the Secret is immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
    /// Keys rendered with Go-template syntax over the decrypted values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "template_data_schema")]
    pub data: Option<BTreeMap<String, Option<String>>>,
}

/// The subset of ObjectMeta a template carries; other fields are kept as they are.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Ignored: the SealedSecret's name is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Ignored: the SealedSecret's namespace is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels of the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations of the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Finalizers of the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalizers: Option<Vec<String>>,
    /// Any other ObjectMeta field, preserved.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// What the controller last observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SealedSecretStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions; upstream uses only `Synced`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<SealedSecretCondition>>,
}

/// One condition of a SealedSecret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SealedSecretCondition {
    /// Condition type (`Synced`).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// When the condition was last updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable message (never secret values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn byte_string(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "format": "byte",
        "description": "Deprecated: the whole Secret as one sealed blob. Use encryptedData."
    })
}

fn encrypted_data_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": {"type": "string"},
        "x-kubernetes-preserve-unknown-fields": true,
        "description": "Sealed values by key: base64 of the kubeseal hybrid envelope."
    })
}

fn template_data_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "nullable": true,
        "additionalProperties": {"type": "string"},
        "description": "Keys rendered with Go-template syntax over the decrypted values."
    })
}

fn template_metadata_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true,
        "description": "Metadata of the Secret (name and namespace are forced to the SealedSecret's).",
        "properties": {
            "name": {"type": "string"},
            "namespace": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            "finalizers": {"type": "array", "items": {"type": "string"}}
        }
    })
}
