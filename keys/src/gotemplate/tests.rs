//! Expected outputs follow Go `text/template` + sprig semantics (as documented for each
//! function); unsupported constructs must be refused by name.

use super::*;

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Zeroizing<Vec<u8>>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Zeroizing::new(v.as_bytes().to_vec())))
        .collect()
}

fn r(t: &str, d: &BTreeMap<String, Zeroizing<Vec<u8>>>) -> Result<String, TemplateError> {
    render(t, d).map(|b| String::from_utf8_lossy(&b).into_owned())
}

#[test]
fn fields_index_and_trim_markers() {
    let d = data(&[("user", "app"), ("pass", "s3cr3t"), ("a-b", "dash")]);
    assert_eq!(r("{{ .user }}:{{ .pass }}", &d).unwrap(), "app:s3cr3t");
    assert_eq!(r(r#"{{ index . "a-b" }}"#, &d).unwrap(), "dash");
    assert_eq!(r("x  {{- .user -}}  y", &d).unwrap(), "xappy");
    assert_eq!(r("{{ .missing }}", &d).unwrap(), "<no value>");
    assert_eq!(r("{{/* a comment */}}ok", &d).unwrap(), "ok");
}

#[test]
fn functions_and_pipes() {
    let d = data(&[
        ("pass", " Hunter2 "),
        ("b64", "aGVsbG8="),
        ("json", r#"{"host":"db","port":5432,"nested":{"k":"v"}}"#),
        ("empty", ""),
    ]);
    assert_eq!(r("{{ .pass | trim | upper }}", &d).unwrap(), "HUNTER2");
    assert_eq!(
        r("{{ .pass | trim | lower | b64enc }}", &d).unwrap(),
        "aHVudGVyMg=="
    );
    assert_eq!(r("{{ .b64 | b64dec }}", &d).unwrap(), "hello");
    assert!(
        r("{{ (.json | fromJson).host }}", &d).is_err(),
        "field of a pipeline is not in the subset"
    );
    assert_eq!(
        r(r#"{{ index (.json | fromJson) "host" }}"#, &d).unwrap(),
        "db"
    );
    assert_eq!(
        r(r#"{{ index (fromJson .json) "nested" "k" }}"#, &d).unwrap(),
        "v"
    );
    assert_eq!(r("{{ .json.port }}", &d).unwrap(), "5432");
    assert_eq!(
        r(r#"{{ .empty | default "fallback" }}"#, &d).unwrap(),
        "fallback"
    );
    assert_eq!(
        r(r#"{{ default "fallback" .b64 }}"#, &d).unwrap(),
        "aGVsbG8="
    );
    assert_eq!(r("{{ .pass | trim | quote }}", &d).unwrap(), "\"Hunter2\"");
    assert_eq!(
        r(
            r#"{{ printf "%s@%s:%d %%" "u" .json.host .json.port }}"#,
            &d
        )
        .unwrap(),
        "u@db:5432 %"
    );
    assert_eq!(
        r(r#"{{ dict | toJson }}"#, &d).unwrap_err(),
        TemplateError::Unsupported("dict".into())
    );
    assert_eq!(
        r("{{ .json | fromJson | toJson }}", &d).unwrap(),
        r#"{"host":"db","port":5432,"nested":{"k":"v"}}"#
    );
    assert_eq!(r(r#"{{ replace "-" "_" "a-b-c" }}"#, &d).unwrap(), "a_b_c");
    assert_eq!(
        r(r#"{{ trimPrefix "pre/" "pre/name" }}"#, &d).unwrap(),
        "name"
    );
}

#[test]
fn refusals_name_the_construct_and_never_a_value() {
    let d = data(&[("pass", "very-secret")]);
    for t in [
        "{{ if .pass }}x{{ end }}",
        "{{ range . }}{{ end }}",
        "{{ $x := .pass }}",
        "{{ sha256sum .pass }}",
    ] {
        let e = r(t, &d).unwrap_err().to_string();
        assert!(e.contains("unsupported"), "{t}: {e}");
        assert!(!e.contains("very-secret"), "{e}");
    }
    let e = r("{{ .pass | b64dec }}", &d).unwrap_err().to_string();
    assert!(e.contains("b64dec") && !e.contains("very-secret"), "{e}");
    let e = r("{{ .pass | fromJson }}", &d).unwrap_err().to_string();
    assert!(e.contains("fromJson") && !e.contains("very-secret"), "{e}");
    assert!(matches!(
        r("{{ .pass ", &d),
        Err(TemplateError::Malformed(_))
    ));
    assert!(matches!(
        r("{{ (upper .pass }}", &d),
        Err(TemplateError::Malformed(_))
    ));
}

/// Templates are written by tenants: no input may abort the process or take unbounded memory.
#[test]
fn hostile_templates_are_refused_not_fatal() {
    let d = data(&[("password", "hunter22")]);
    // 50,000 nested parentheses (the reproduced crash): an error, not a stack overflow.
    let deep = format!(
        "{{{{ {}.password{} }}}}",
        "(".repeat(50_000),
        ")".repeat(50_000)
    );
    assert!(render(&deep, &d).is_err());
    // Within the size limit, the nesting limit answers.
    let deep = format!(
        "{{{{ {}.password{} }}}}",
        "(".repeat(30_000),
        ")".repeat(30_000)
    );
    assert!(
        matches!(render(&deep, &d), Err(TemplateError::Malformed(m)) if m.contains("nested")),
        "{:?}",
        render(&deep, &d)
    );
    // Nesting within the limit still works.
    let ok = format!(
        "{{{{ {}.password{} }}}}",
        "(".repeat(MAX_DEPTH - 1),
        ")".repeat(MAX_DEPTH - 1)
    );
    assert_eq!(r(&ok, &d).unwrap(), "hunter22");
    // Nested replace grows quadratically: refused by size.
    let mut t = String::from(".password");
    for _ in 0..12 {
        t = format!("(replace \"\" .password {t})");
    }
    let grown = format!("{{{{ {t} }}}}");
    assert!(
        matches!(render(&grown, &d), Err(TemplateError::Call(m)) if m.contains("larger than") || m.contains("in all"))
    );
    // Calls that each stay under the output limit still hit the total budget.
    let big = data(&[("big", &"a".repeat(900 * 1024))]);
    let chain = format!("{{{{ .big{} }}}}", " | upper | lower".repeat(10));
    assert!(
        matches!(render(&chain, &big), Err(TemplateError::Call(m)) if m.contains("in all")),
        "{:?}",
        render(&chain, &big).map(|v| v.len())
    );
    assert_eq!(
        render("{{ .big | upper | lower }}", &big).map(|v| v.len()),
        Ok(900 * 1024)
    );
    // Longer than the template limit.
    let long = "x".repeat(MAX_TEMPLATE + 1);
    assert!(render(&long, &d).is_err());
}

/// No error message depends on a value: the fromJson oracle (the position of a parse error
/// reveals the value's length and content) answers the same for every value.
#[test]
fn errors_never_depend_on_values() {
    let probe = r#"{{ fromJson (printf "\"%s" .password) }}"#;
    let a = render(probe, &data(&[("password", "hunter22")]))
        .err()
        .map(|e| e.to_string());
    let b = render(probe, &data(&[("password", "x")]))
        .err()
        .map(|e| e.to_string());
    let c = render(probe, &data(&[("password", "a\"b")]))
        .err()
        .map(|e| e.to_string());
    assert!(a.is_some());
    assert_eq!(a, b);
    assert_eq!(a, c);
    let msg = a.unwrap_or_default();
    assert!(!msg.contains("line") && !msg.contains("column"), "{msg}");
    let d1 = render("{{ .password | b64dec }}", &data(&[("password", "!!")])).err();
    let d2 = render("{{ .password | b64dec }}", &data(&[("password", "####")])).err();
    assert_eq!(d1, d2);
}
