//! One unseal reconcile's decision: a document → SealedSecret → `plan()`, without and with an
//! existing Secret (the input's second document, when it is one, and the Secret the first plan
//! wrote), with the fixed keyring.
//!
//! Input: YAML or JSON (a SealedSecret, then optionally the existing Secret). An RSA
//! private-key operation costs about a millisecond (and a value that does not open costs up to
//! six more, for the diagnosis), so only one input in 32 (by a hash of the whole input,
//! [`roll`], which every mutation rolls again), on SealedSecrets of at most four values, gets
//! the real keyring; the others get an empty one, with which every value fails cheaply and
//! everything else (names, scope, templates without values, the Secret, the hashes) runs the
//! same.
//!
//! Invariants: no panic; no status message (Failed, Collision) carries a decrypted value (the
//! corpus seals the marker); `Debug` of a plan never shows one; the Secret a plan applies
//! carries the spec hash, and when it also carries the data MAC and our ownerReference, planning
//! again against it is `UpToDate` (no RSA work, as restarts rely on).
#![no_main]

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use libfuzzer_sys::fuzz_target;
use sealkit_api::SealedSecret;
use sealkit_controller::unseal::{
    DATA_MAC_ANNOTATION, PATCH_ANNOTATION, Plan, SPEC_HASH_ANNOTATION, plan, spec_hash,
};
use sealkit_controller_fuzz::{MARKER, assert_no_marker, documents, keyring, roll};
use sealkit_keys::seal::Keyring;

fuzz_target!(|data: &[u8]| {
    let docs = documents(data, 2);
    let Some(first) = docs.first() else {
        return;
    };
    let Ok(ss) = serde_json::from_value::<SealedSecret>(first.clone()) else {
        return;
    };
    let empty = Keyring::new();
    let cheap = roll(data) % 32 != 0 || ss.spec.encrypted_data.len() > 4;
    let ring = if cheap { &empty } else { keyring() };

    let existing = docs
        .get(1)
        .and_then(|d| serde_json::from_value::<Secret>(d.clone()).ok());
    if let Some(existing) = &existing {
        check(&plan(&ss, Some(existing), ring), data);
    }
    let first_plan = plan(&ss, None, ring);
    check(&first_plan, data);
    let Plan::Apply(secret) = first_plan else {
        return;
    };
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.get(SPEC_HASH_ANNOTATION),
        Some(&spec_hash(&ss)),
        "the applied Secret carries the spec hash"
    );
    // As the planner recognises its own Secrets.
    let uid = ss.metadata.uid.as_deref().unwrap_or("");
    let owned = secret.metadata.owner_references.iter().flatten().any(|o| {
        o.kind == "SealedSecret"
            && o.api_version.starts_with("bitnami.com/")
            && o.uid == uid
            && o.name == ss.name_any()
    });
    let patch = annotations.get(PATCH_ANNOTATION).map(String::as_str) == Some("true");
    if owned && !patch && annotations.contains_key(DATA_MAC_ANNOTATION) {
        let before = ring.private_key_operations();
        let again = plan(&ss, Some(&secret), ring);
        assert!(
            matches!(again, Plan::UpToDate),
            "planning against the Secret just written is UpToDate, got {again:?}"
        );
        assert_eq!(
            ring.private_key_operations(),
            before,
            "an up-to-date check does no RSA work"
        );
    } else {
        // Not provably ours (patch mode, no MAC, no ownerReference): any plan but a panic.
        check(&plan(&ss, Some(&secret), ring), data);
    }
});

fn check(p: &Plan, input: &[u8]) {
    let shown = format!("{p:?}");
    assert!(!shown.contains(MARKER), "Debug of a plan shows a value");
    match p {
        Plan::Failed(m) | Plan::Collision(m) => assert_no_marker(m, input, "plan message"),
        Plan::Apply(_) | Plan::UpToDate => {}
    }
}
