//! How deeply a SOPS document may nest. The stores, the metadata reader and serde all recurse
//! over the document tree, so a hostile file nested 100,000 levels deep would exhaust the stack
//! (an abort, not an error). Every YAML or JSON text is measured here first, without building a
//! tree and without recursion, and one nested deeper than [`MAX_DEPTH`] is refused with
//! [`SopsError::TooDeep`] (the YAML and JSON stores' [`Store::check_depth`]). The recursive
//! loaders check the same bound as they go, so no caller depends on having called it first.
//! dotenv and INI files are flat (their flattened metadata keys are bounded where they are
//! unflattened); binary files are JSON read by serde_json, whose own recursion limit applies.
//!
//! [`Store::check_depth`]: super::Store::check_depth

use granit_parser::{ErrorKind, Event, Options, Parser};

use super::SopsError;

/// The deepest nesting of mappings and lists a SOPS file may have. It is the limit
/// serde-saphyr's default budget sets for every other YAML sealkit reads (`sealkit seal`,
/// `.sops.yaml`, `--extract`), so a file is never accepted by one command and refused by
/// another; configuration files and Kubernetes objects stay far below it.
pub const MAX_DEPTH: usize = 64;

pub(crate) fn too_deep() -> SopsError {
    SopsError::TooDeep { limit: MAX_DEPTH }
}

/// YAML through the event parser: collection start and end events give the exact depth in
/// every style (flow `[[…]]`, block, compact `- - -` sequences). The scanner looks ahead for
/// implicit keys and may meet its own nesting limits before the events reach ours; those limits
/// are set to ours, so its "recursion limit exceeded" also means too deep.
pub(crate) fn check_yaml(text: &str) -> Result<(), SopsError> {
    let mut options = Options::default();
    options.flow_nesting_limit = MAX_DEPTH;
    options.block_nesting_limit = MAX_DEPTH;
    options.set_emit_comments(false);
    let mut parser = Parser::new_from_str_with_options(text, options);
    let mut depth = 0usize;
    while let Some(event) = parser.next_event() {
        match event {
            Ok((Event::SequenceStart(..) | Event::MappingStart(..), _)) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(too_deep());
                }
            }
            Ok((Event::SequenceEnd | Event::MappingEnd, _)) => depth = depth.saturating_sub(1),
            Ok((Event::StreamEnd, _)) => break,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::RecursionLimitExceeded) => {
                return Err(too_deep());
            }
            Err(_) => break,
        }
    }
    Ok(())
}

/// JSON by its brackets outside strings: exact for valid JSON, which is all that matters (the
/// JSON parser refuses the rest).
pub(crate) fn check_json(text: &str) -> Result<(), SopsError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(too_deep());
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sops::FileFormat;

    // Through the stores, as every caller reaches these checks.
    fn check(text: &str, format: FileFormat) -> Result<(), SopsError> {
        format.store().check_depth(text)
    }

    fn nested(open: &str, close: &str, n: usize) -> String {
        format!("a: {}1{}\n", open.repeat(n), close.repeat(n))
    }

    #[test]
    fn limits_in_every_style() {
        // The top-level mapping counts: `a: [[1]]` is three levels.
        let ok = MAX_DEPTH - 1;
        for (open, close) in [("[", "]"), ("{a: ", "}")] {
            assert!(check(&nested(open, close, ok), FileFormat::Yaml).is_ok());
            let err = check(&nested(open, close, ok + 1), FileFormat::Yaml).expect_err("deep");
            assert!(matches!(err, SopsError::TooDeep { limit: MAX_DEPTH }));
        }
        let block = |n: usize| format!("a:\n{}x\n", "- ".repeat(n));
        assert!(check(&block(ok), FileFormat::Yaml).is_ok());
        assert!(check(&block(ok + 1), FileFormat::Yaml).is_err());
        let indented = |n: usize| {
            (0..n)
                .map(|i| format!("{}k:\n", " ".repeat(i)))
                .collect::<String>()
                + &" ".repeat(n)
                + "v\n"
        };
        assert!(check(&indented(MAX_DEPTH), FileFormat::Yaml).is_ok());
        assert!(check(&indented(MAX_DEPTH + 1), FileFormat::Yaml).is_err());
        let json = |n: usize| format!("{{\"a\": {}1{}}}", "[".repeat(n), "]".repeat(n));
        assert!(check(&json(ok), FileFormat::Json).is_ok());
        assert!(check(&json(ok + 1), FileFormat::Json).is_err());
        // Brackets inside strings are text.
        let quoted = format!("{{\"a\": \"{}\\\"{}\"}}", "[".repeat(500), "{".repeat(500));
        assert!(check(&quoted, FileFormat::Json).is_ok());
        let quoted = format!("a: '{}'\nb: \"{}\"\n", "[".repeat(500), "{".repeat(500));
        assert!(check(&quoted, FileFormat::Yaml).is_ok());
        // Flattened dotenv/INI metadata keys: one level per segment; list indices bounded.
        let key = |segs: usize| format!("version{}", "__map_a".repeat(segs));
        let pair = |k: String| vec![(k, "x".to_string())];
        assert!(super::super::metadata::unflatten(&pair(key(MAX_DEPTH - 1))).is_ok());
        assert!(matches!(
            super::super::metadata::unflatten(&pair(key(100_000))),
            Err(SopsError::TooDeep { .. })
        ));
        assert!(super::super::metadata::unflatten(&pair("age__list_999999999".into())).is_err());
        // 100,000 levels: an error, quickly and without recursion.
        assert!(check(&nested("[", "]", 100_000), FileFormat::Yaml).is_err());
        assert!(check(&json(100_000), FileFormat::Json).is_err());
    }
}
