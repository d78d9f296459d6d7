//! Lean watch caches: what the unseal loop keeps of each object between reconciles.
//!
//! - A SealedSecret whose Secret was found up to date ([`super::verified`]) is cached without
//!   its ciphertext (3 RSA-4096 values are ~2.2 KB of base64, most of a cached object): its
//!   spec hash stands in for it, in an annotation of the cached copy only. A reconcile that
//!   finds its Secret at a verified version needs nothing more; one that has to plan reads the
//!   SealedSecret from the API server first. Every copy loses managedFields and kubectl's
//!   last-applied annotation (a second copy of the whole object).
//! - An owned Secret is cached as name, namespace, uid, resourceVersion and its SealedSecret
//!   owner references: what [`super::reconcile::ClusterApi::cached_version`] and the
//!   owner-to-SealedSecret mapping use.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::PartialObjectMeta;
use sealkit_api::SealedSecret;

use super::plan::spec_hash;
use super::verified::Verified;

/// In a lean cached copy: the spec hash of the spec whose ciphertext was dropped. Only
/// [`sealed`] sets it (removing what a user wrote there); it never reaches the API server.
pub const CACHED_SPEC_HASH_ANNOTATION: &str = "sealkit.dev/cached-spec-hash";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Makes the cached copy of `ss` lean (see the module docs).
pub fn sealed(ss: &mut SealedSecret, verified: &Verified) {
    ss.managed_fields_mut().clear();
    let annotations = ss.annotations_mut();
    annotations.remove(LAST_APPLIED);
    // A user's value is not ours: the marker must only ever mean "dropped by us".
    annotations.remove(CACHED_SPEC_HASH_ANNOTATION);
    let hash = spec_hash(ss);
    let (namespace, name) = (ss.namespace().unwrap_or_default(), ss.name_any());
    if verified.knows(&namespace, &name, &hash) {
        ss.spec.encrypted_data = Default::default();
        ss.spec.data = None;
        ss.annotations_mut()
            .insert(CACHED_SPEC_HASH_ANNOTATION.into(), hash);
    }
}

/// Whether `ss` is a lean copy (no ciphertext: a plan must read the object first).
pub fn is_lean(ss: &SealedSecret) -> bool {
    ss.annotations().contains_key(CACHED_SPEC_HASH_ANNOTATION)
}

/// The spec hash of `ss`, lean or not.
pub fn spec_hash_of(ss: &SealedSecret) -> String {
    match ss.annotations().get(CACHED_SPEC_HASH_ANNOTATION) {
        Some(hash) => hash.clone(),
        None => spec_hash(ss),
    }
}

/// Makes the cached metadata of an owned Secret lean (see the module docs).
pub fn owned(secret: &mut PartialObjectMeta<Secret>) {
    let m = &mut secret.metadata;
    m.managed_fields = None;
    m.annotations = None;
    m.labels = None;
    m.finalizers = None;
    m.creation_timestamp = None;
    m.generate_name = None;
    if let Some(refs) = &mut m.owner_references {
        refs.retain(|r| r.kind == "SealedSecret");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(annotations: serde_json::Value) -> SealedSecret {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "bitnami.com/v1alpha1", "kind": "SealedSecret",
            "metadata": {"name": "db", "namespace": "app", "uid": "u1",
                         "annotations": annotations},
            "spec": {"encryptedData": {"password": "AgBy3i4OJSWK+PiTySYZZA=="}}
        }))
        .expect("SealedSecret")
    }

    #[test]
    fn only_a_verified_spec_loses_its_ciphertext() {
        let verified = Verified::default();
        let full = object(serde_json::json!({}));
        let hash = spec_hash(&full);

        let mut unknown = full.clone();
        sealed(&mut unknown, &verified);
        assert!(!is_lean(&unknown));
        assert_eq!(unknown.spec.encrypted_data, full.spec.encrypted_data);

        verified.record("app", "db", "7", &hash, "fp".into());
        let mut known = full.clone();
        sealed(&mut known, &verified);
        assert!(is_lean(&known));
        assert!(known.spec.encrypted_data.is_empty());
        assert_eq!(spec_hash_of(&known), hash);

        // Another spec under the same name keeps its ciphertext.
        let mut changed = full.clone();
        changed
            .spec
            .encrypted_data
            .insert("user".into(), "AgAAAA==".into());
        sealed(&mut changed, &verified);
        assert!(!is_lean(&changed));
    }

    // A tenant who writes the marker annotation does not choose the hash a reconcile uses.
    #[test]
    fn a_marker_written_by_a_user_is_dropped() {
        let verified = Verified::default();
        let mut ss = object(serde_json::json!({
            CACHED_SPEC_HASH_ANNOTATION: "0000",
            LAST_APPLIED: "{\"a\": 1}",
        }));
        let real = spec_hash(&ss);
        sealed(&mut ss, &verified);
        assert!(!is_lean(&ss));
        assert_eq!(spec_hash_of(&ss), real);
        assert!(ss.annotations().is_empty());
    }
}
