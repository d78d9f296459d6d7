//! The Go-template subset (SealedSecret `spec.template.data`, ExternalSecret templates).
//!
//! Input: `template\0data`, where data is `key=value` lines added to a fixed map of values (a
//! plain string, JSON, base64, an empty value); every `@` in a value becomes the marker, and
//! every fixed value carries it too.
//!
//! Invariants: no panic; no error carries a value (the marker shows up in an error only if the
//! template itself holds it); the output stays within `MAX_OUTPUT`; a template over
//! `MAX_TEMPLATE` is refused; rendering is deterministic.
#![no_main]

use std::collections::BTreeMap;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use sealkit_keys::gotemplate::{MAX_OUTPUT, MAX_TEMPLATE, render};
use sealkit_keys::secret::Zeroizing;
use sealkit_keys_fuzz::{MARKER, assert_no_marker, split_nul};

fn fixed() -> BTreeMap<String, Zeroizing<Vec<u8>>> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("b64-{MARKER}"));
    let json = format!(
        r#"{{"host":"db","port":5432,"secret":"{MARKER}","nested":{{"k":"v-{MARKER}"}},"list":[1,"two",null,true]}}"#
    );
    [
        ("user", "admin".to_string()),
        ("password", format!(" pw-{MARKER} ")),
        ("json", json),
        ("b64", b64),
        ("empty", String::new()),
        ("a-b", format!("dash-{MARKER}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Zeroizing::new(v.into_bytes())))
    .collect()
}

fuzz_target!(|data: &[u8]| {
    let parts = split_nul(data, 2);
    let Ok(template) = std::str::from_utf8(parts[0]) else {
        return;
    };
    let mut values = fixed();
    for line in String::from_utf8_lossy(parts[1]).lines() {
        if let Some((k, v)) = line.split_once('=') {
            values.insert(
                k.to_string(),
                Zeroizing::new(v.replace('@', MARKER).into_bytes()),
            );
        }
    }
    let first = render(template, &values);
    match &first {
        Ok(out) => assert!(out.len() <= MAX_OUTPUT, "output over MAX_OUTPUT"),
        Err(e) => assert_no_marker(&e.to_string(), template.as_bytes(), "render"),
    }
    if template.len() > MAX_TEMPLATE {
        assert!(first.is_err(), "a template over MAX_TEMPLATE is refused");
    }
    let second = render(template, &values);
    match (&first, &second) {
        (Ok(a), Ok(b)) => assert!(a[..] == b[..], "rendering is deterministic"),
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("rendering is deterministic"),
    }
});
