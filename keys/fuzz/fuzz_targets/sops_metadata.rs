//! The `sops:` metadata block: read as YAML or JSON (the layouts of the YAML and JSON stores),
//! or (input starting with `sops_`) as the flattened `sops_key__list_0__map_field=value` lines
//! of the dotenv store.
//!
//! Invariants: no panic; a block that reads gives one rule or a clear error, and its recipients
//! are those of its groups; flattening it and reading the pairs back (the dotenv/INI layout)
//! gives the same metadata, unless a string holds the two characters `\n`, which that layout
//! cannot tell from a newline (as in sops); the key-unwrap path runs with the example identity.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealkit_keys::sops::keysource::unwrap_data_key;
use sealkit_keys::sops::metadata::{flatten, unflatten};
use sealkit_keys::sops::{Metadata, MetadataRule};
use sealkit_keys_fuzz::age_identities;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let trimmed = text.trim_start();
    let value: Option<Value> = if trimmed.starts_with('{') {
        serde_json::from_str(text).ok()
    } else if trimmed.starts_with("sops_") {
        // The dotenv layout: `sops_key__list_0__map_field=value` lines (INI's `[sops]`
        // section holds the same pairs without the prefix).
        let pairs: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter_map(|(k, v)| Some((k.strip_prefix("sops_")?.to_string(), v.to_string())))
            .collect();
        unflatten(&pairs).ok()
    } else {
        serde_saphyr::from_str_with_options(text, sealkit_keys::seal::manifest::yaml_read_options())
            .ok()
    };
    let Some(value) = value else {
        return;
    };
    // A file's block is the `sops` key; accept the block itself too.
    let block = value.get("sops").cloned().unwrap_or(value);
    let Ok(meta) = Metadata::from_value(&block) else {
        return;
    };
    check(&meta);

    // The dotenv/INI layout round trip.
    let pairs = flatten(&block);
    if pairs.iter().any(|(_, v)| v.contains("\\n")) {
        return;
    }
    let Ok(back) = unflatten(&pairs) else {
        return;
    };
    let Ok(again) = Metadata::from_value(&back) else {
        return;
    };
    assert_eq!(again.age, meta.age);
    assert_eq!(again.lastmodified, meta.lastmodified);
    assert_eq!(again.mac, meta.mac);
    assert_eq!(again.version, meta.version);
    assert_eq!(again.shamir_threshold, meta.shamir_threshold);
    assert_eq!(
        again.mac_only_encrypted.unwrap_or(false),
        meta.mac_only_encrypted.unwrap_or(false)
    );
    assert_eq!(MetadataRule::of(&again), MetadataRule::of(&meta));
    assert_eq!(again.age_recipients(), meta.age_recipients());
});

fn check(meta: &Metadata) {
    match meta.rule() {
        Ok(_) => {}
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let groups = meta.groups();
    assert!(!groups.is_empty());
    let recipients: Vec<String> = groups
        .iter()
        .flat_map(|g| g.age.iter().map(|a| a.recipient.clone()))
        .collect();
    assert_eq!(recipients, meta.age_recipients());
    let other = meta.other_key_types();
    assert!(
        other.windows(2).all(|w| w[0] < w[1]),
        "sorted, no duplicates"
    );
    let _ = MetadataRule::of(meta);
    // Unwrapping is bounded by the entries there are; each costs one X25519 operation.
    if meta.groups().iter().map(|g| g.age.len()).sum::<usize>() <= 16 {
        match unwrap_data_key(meta, age_identities()) {
            Ok(k) => assert_eq!(k.expose().len(), 32),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}
