//! The decision of one unseal reconcile, without any I/O.
//!
//! Restart cost is the point (upstream #1833): the Secret we write carries
//! `sealkit.dev/sealed-spec-hash` (SHA-256 of what was sealed and where) and
//! `sealkit.dev/data-mac` (the opening key's fingerprint and an HMAC of the data we wrote, keyed
//! by a key derived from that private key, so it reveals nothing about the values). When both
//! still match, the Secret is up to date and no private-key operation is needed; a hand-edited or
//! deleted Secret fails the check and is rewritten (self-heal, upstream #952/#1336).

use std::collections::{BTreeMap, BTreeSet};

use aws_lc_rs::{digest, hmac};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use sealkit_api::SealedSecret;
use sealkit_keys::seal::manifest::{ManifestError, unseal_detailed};
use sealkit_keys::seal::{Keyring, PrivateKey};

/// Hash of the sealed spec and its identity, on the Secret we write.
pub const SPEC_HASH_ANNOTATION: &str = "sealkit.dev/sealed-spec-hash";
/// `<key fingerprint>:<hex HMAC of the data we wrote>`, on the Secret we write.
pub const DATA_MAC_ANNOTATION: &str = "sealkit.dev/data-mac";
/// On an existing Secret: the controller may take it over.
pub const MANAGED_ANNOTATION: &str = "sealedsecrets.bitnami.com/managed";
/// On an existing Secret: merge our keys into it instead of replacing it.
pub const PATCH_ANNOTATION: &str = "sealedsecrets.bitnami.com/patch";
/// On the template: do not set an ownerReference.
pub const SKIP_OWNER_REFERENCES_ANNOTATION: &str =
    "sealedsecrets.bitnami.com/skip-set-owner-references";

const MAC_PURPOSE: &str = "sealkit secret data mac v1";

/// What one reconcile should do.
pub enum Plan {
    /// The Secret already holds this spec's values: no RSA work, no write.
    UpToDate,
    /// Server-side apply this Secret (with the field manager; in patch mode only our keys).
    Apply(Box<Secret>),
    /// A Secret of that name exists and is not ours to overwrite (message for status/Event).
    Collision(String),
    /// The SealedSecret cannot be unsealed (message for status/Event; never a secret value).
    Failed(String),
}

// An Apply carries the unsealed Secret: Debug names it and counts its keys, nothing more.
impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Plan::UpToDate => f.write_str("UpToDate"),
            Plan::Apply(s) => write!(
                f,
                "Apply(Secret {}/{} with {} keys)",
                s.metadata.namespace.as_deref().unwrap_or(""),
                s.metadata.name.as_deref().unwrap_or(""),
                s.data.as_ref().map_or(0, |d| d.len())
            ),
            Plan::Collision(m) => write!(f, "Collision({m:?})"),
            Plan::Failed(m) => write!(f, "Failed({m:?})"),
        }
    }
}

fn annotation<'a>(map: &'a Option<BTreeMap<String, String>>, key: &str) -> Option<&'a str> {
    map.as_ref().and_then(|m| m.get(key)).map(String::as_str)
}

/// SHA-256 over the SealedSecret's identity (name, namespace, scope annotations) and spec.
pub fn spec_hash(ss: &SealedSecret) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let scope_of = |k: &str| {
        annotation(&ss.metadata.annotations, k)
            .unwrap_or("")
            .to_string()
    };
    let identity = serde_json::json!([
        ss.name_any(),
        ss.namespace().unwrap_or_default(),
        scope_of(sealkit_keys::seal::CLUSTER_WIDE_ANNOTATION),
        scope_of(sealkit_keys::seal::NAMESPACE_WIDE_ANNOTATION),
    ]);
    ctx.update(identity.to_string().as_bytes());
    ctx.update(b"\0");
    // serde_json with sorted maps (BTreeMap in the spec) gives a stable encoding.
    ctx.update(
        serde_json::to_string(&ss.spec)
            .unwrap_or_default()
            .as_bytes(),
    );
    hex(ctx.finish().as_ref())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The Secret keys this SealedSecret produces, known without decrypting anything.
pub fn managed_keys(ss: &SealedSecret) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = ss.spec.encrypted_data.keys().cloned().collect();
    if let Some(data) = ss.spec.template.as_ref().and_then(|t| t.data.as_ref()) {
        for (k, v) in data {
            if v.is_some() {
                keys.insert(k.clone());
            } else {
                keys.remove(k);
            }
        }
    }
    keys
}

fn data_mac(key: &PrivateKey, secret: &Secret, keys: &BTreeSet<String>) -> String {
    let mac_key = key.derive_mac_key(MAC_PURPOSE);
    let k = hmac::Key::new(hmac::HMAC_SHA256, &mac_key[..]);
    let mut ctx = hmac::Context::with_key(&k);
    // As the API server stores it: an untyped Secret is defaulted to Opaque on create, so the
    // MAC of what we send and of what is read back must agree.
    let type_ = secret.type_.as_deref().filter(|t| !t.is_empty());
    ctx.update(type_.unwrap_or("Opaque").as_bytes());
    ctx.update(b"\0");
    for name in keys {
        ctx.update(name.as_bytes());
        ctx.update(b"\0");
        match secret.data.as_ref().and_then(|d| d.get(name)) {
            Some(v) => {
                ctx.update(&(v.0.len() as u64).to_be_bytes());
                ctx.update(&v.0);
            }
            None => ctx.update(b"absent"),
        }
    }
    hex(ctx.sign().as_ref())
}

fn owned_by(secret: &Secret, name: &str, uid: &str) -> bool {
    secret.metadata.owner_references.iter().flatten().any(|o| {
        o.kind == "SealedSecret"
            && o.api_version.starts_with("bitnami.com/")
            && o.uid == uid
            && o.name == name
    })
}

/// What a Secret must hold to be up to date with a SealedSecret, without the SealedSecret
/// itself: small enough to keep for every object while a restart checks their Secrets.
#[derive(Debug, Clone)]
pub struct Expected {
    name: String,
    uid: String,
    hash: String,
    keys: BTreeSet<String>,
}

impl Expected {
    /// What `ss` unseals to, as far as the up-to-date check needs it.
    pub fn of(ss: &SealedSecret) -> Self {
        Expected {
            name: ss.name_any(),
            uid: ss.metadata.uid.clone().unwrap_or_default(),
            hash: spec_hash(ss),
            keys: managed_keys(ss),
        }
    }

    /// The spec hash ([`spec_hash`]).
    pub fn hash(&self) -> &str {
        &self.hash
    }
}

/// When `existing` is ours (owned or marked managed, not a patch target) and still holds
/// exactly what the spec unseals to, the fingerprint of the key its MAC was made with; no RSA
/// operation. `plan` says `UpToDate` exactly then.
pub fn verify(expected: &Expected, existing: &Secret, keyring: &Keyring) -> Option<String> {
    let ann = &existing.metadata.annotations;
    let managed = annotation(ann, MANAGED_ANNOTATION) == Some("true");
    let patch = annotation(ann, PATCH_ANNOTATION) == Some("true");
    if patch || !(managed || owned_by(existing, &expected.name, &expected.uid)) {
        return None;
    }
    if annotation(ann, SPEC_HASH_ANNOTATION) != Some(expected.hash.as_str()) {
        return None;
    }
    let (fp, mac) = annotation(ann, DATA_MAC_ANNOTATION).and_then(|v| v.rsplit_once(':'))?;
    let key = keyring.keys().find(|k| k.fingerprint().as_str() == fp)?;
    (data_mac(key, existing, &expected.keys) == mac).then(|| fp.to_string())
}

/// Decides what a reconcile of `ss` does, given the Secret that exists now.
pub fn plan(ss: &SealedSecret, existing: Option<&Secret>, keyring: &Keyring) -> Plan {
    let name = ss.name_any();
    let expected = Expected::of(ss);
    let hash = expected.hash.clone();
    let mut patch = false;
    if let Some(existing) = existing {
        let managed =
            annotation(&existing.metadata.annotations, MANAGED_ANNOTATION) == Some("true");
        patch = annotation(&existing.metadata.annotations, PATCH_ANNOTATION) == Some("true");
        let uid = ss.metadata.uid.as_deref().unwrap_or("");
        let ours = owned_by(existing, &name, uid) || managed;
        if !ours && !patch {
            return Plan::Collision(format!(
                "Resource \"{name}\" already exists and is not managed by SealedSecret"
            ));
        }
        if verify(&expected, existing, keyring).is_some() {
            return Plan::UpToDate;
        }
        patch = patch && !ours;
    }

    let doc = match serde_json::to_value(ss) {
        Ok(v) => v,
        Err(e) => return Plan::Failed(format!("cannot read the SealedSecret: {e}")),
    };
    let (value, used) = match unseal_detailed(&doc, keyring) {
        Ok(r) => r,
        Err(e) => return Plan::Failed(failure_message(&e)),
    };
    let mut secret: Secret = match serde_json::from_value(value) {
        Ok(s) => s,
        Err(e) => return Plan::Failed(format!("the unsealed Secret is invalid: {e}")),
    };
    secret.metadata.name = Some(name.clone());
    secret.metadata.namespace = ss.namespace();
    let skip_owner = ss
        .spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(SKIP_OWNER_REFERENCES_ANNOTATION))
        .is_some_and(|v| v == "true");
    if !skip_owner && !patch {
        secret.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "bitnami.com/v1alpha1".into(),
            kind: "SealedSecret".into(),
            name: name.clone(),
            uid: ss.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
    }
    let annotations = secret
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new);
    annotations.insert(SPEC_HASH_ANNOTATION.into(), hash);
    // One key opened every value in practice; the MAC uses the newest of them.
    if let Some(key) = used
        .last()
        .and_then(|fp| keyring.keys().find(|k| k.fingerprint() == fp))
    {
        let mac = data_mac(key, &secret, &expected.keys);
        if let Some(a) = secret.metadata.annotations.as_mut() {
            a.insert(
                DATA_MAC_ANNOTATION.into(),
                format!("{}:{mac}", key.fingerprint()),
            );
        }
    }
    Plan::Apply(Box::new(secret))
}

fn failure_message(e: &ManifestError) -> String {
    // ManifestError messages name fields and keys, never values.
    e.to_string()
}

#[cfg(test)]
mod tests;
