//! Plaintext edits by path for `sops set` / `unset` / `--extract`: the `["a"]["b"][0]` index
//! syntax, and changes applied to a decrypted file in its own format (YAML through the lossless
//! tree, so everything else in the file stays as it was).

use serde_json::Value;

use super::{FileFormat, SopsError};

/// One step of an index path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A mapping key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// Parses `["a"]["b"][0]` (sops' `--extract` / `set` syntax).
pub fn parse_path(s: &str) -> Result<Vec<Step>, SopsError> {
    let bad = || {
        SopsError::Format(format!(
            "invalid index path '{s}': expected e.g. [\"data\"][\"password\"] or [\"list\"][0]"
        ))
    };
    let mut steps = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let inner_end = rest.find(']').ok_or_else(bad)?;
        let inner = rest.strip_prefix('[').ok_or_else(bad)?;
        let inner = &inner[..inner_end - 1];
        if let Ok(i) = inner.trim().parse::<usize>() {
            steps.push(Step::Index(i));
        } else {
            let key: String = serde_json::from_str(inner.trim()).map_err(|_| bad())?;
            steps.push(Step::Key(key));
        }
        rest = rest[inner_end + 1..].trim_start();
    }
    if steps.is_empty() {
        return Err(bad());
    }
    Ok(steps)
}

/// A plaintext file as a JSON value (YAML and JSON; dotenv and INI as flat maps).
pub fn to_value(text: &str, format: FileFormat) -> Result<Value, SopsError> {
    let store = format.store();
    store.check_depth(text)?;
    store.to_value(text)
}

/// A JSON value as a plaintext file in `format` (for `--output-type` conversions).
pub fn from_value(value: &Value, format: FileFormat) -> Result<String, SopsError> {
    format.store().emit_value(value)
}

/// The value at `path`.
pub fn extract<'a>(v: &'a Value, path: &[Step]) -> Result<&'a Value, SopsError> {
    let mut cur = v;
    for (i, step) in path.iter().enumerate() {
        let next = match step {
            Step::Key(k) => cur.get(k),
            Step::Index(n) => cur.get(n),
        };
        cur =
            next.ok_or_else(|| SopsError::Format(format!("{} not found", describe(&path[..=i]))))?;
    }
    Ok(cur)
}

pub(crate) fn describe(path: &[Step]) -> String {
    path.iter()
        .map(|s| match s {
            Step::Key(k) => format!("[{}]", serde_json::to_string(k).unwrap_or_default()),
            Step::Index(i) => format!("[{i}]"),
        })
        .collect()
}

pub(crate) fn json_set(
    root: &mut Value,
    path: &[Step],
    value: Option<Value>,
) -> Result<(), SopsError> {
    let (last, parents) = path
        .split_last()
        .ok_or_else(|| SopsError::Format("empty path".into()))?;
    let mut cur = root;
    for (i, step) in parents.iter().enumerate() {
        cur = match step {
            Step::Key(k) => {
                if !cur.is_object() {
                    return Err(SopsError::Format(format!(
                        "{} is not a mapping",
                        describe(&path[..i])
                    )));
                }
                let m = cur
                    .as_object_mut()
                    .ok_or_else(|| SopsError::Format("not a mapping".into()))?;
                if value.is_none() && !m.contains_key(k) {
                    return Err(SopsError::Format(format!(
                        "{} not found",
                        describe(&path[..=i])
                    )));
                }
                m.entry(k.clone())
                    .or_insert_with(|| Value::Object(Default::default()))
            }
            Step::Index(n) => cur
                .get_mut(*n)
                .ok_or_else(|| SopsError::Format(format!("{} not found", describe(&path[..=i]))))?,
        };
    }
    match (last, value) {
        (Step::Key(k), Some(v)) => {
            cur.as_object_mut()
                .ok_or_else(|| SopsError::Format("not a mapping".into()))?
                .insert(k.clone(), v);
        }
        (Step::Key(k), None) => {
            cur.as_object_mut()
                .and_then(|m| m.shift_remove(k))
                .ok_or_else(|| SopsError::Format(format!("{} not found", describe(path))))?;
        }
        (Step::Index(n), Some(v)) => {
            let a = cur
                .as_array_mut()
                .ok_or_else(|| SopsError::Format("not a list".into()))?;
            if *n < a.len() {
                a[*n] = v;
            } else if *n == a.len() {
                a.push(v);
            } else {
                return Err(SopsError::Format(format!(
                    "{} is past the end of the list",
                    describe(path)
                )));
            }
        }
        (Step::Index(n), None) => {
            let a = cur
                .as_array_mut()
                .ok_or_else(|| SopsError::Format("not a list".into()))?;
            if *n >= a.len() {
                return Err(SopsError::Format(format!("{} not found", describe(path))));
            }
            a.remove(*n);
        }
    }
    Ok(())
}

pub(crate) fn yaml_scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some("null".into()),
        _ => None,
    }
}

/// Sets (`Some`) or removes (`None`) the value at `path` in a plaintext file, keeping the
/// rest of the file as it is where the format allows.
pub fn set_in_text(
    text: &str,
    format: FileFormat,
    path: &[Step],
    value: Option<Value>,
) -> Result<String, SopsError> {
    let store = format.store();
    store.check_depth(text)?;
    store.set_in_text(text, path, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse() {
        assert_eq!(
            parse_path(r#"["a"]["b c"][0]"#).expect("p"),
            vec![
                Step::Key("a".into()),
                Step::Key("b c".into()),
                Step::Index(0)
            ]
        );
        assert!(parse_path("a.b").is_err());
        assert!(parse_path("").is_err());
    }

    #[test]
    fn yaml_set_keeps_the_rest() {
        let text = "# keep me\na:\n  b: 1 # and me\n  c: x\n";
        let out = set_in_text(
            text,
            FileFormat::Yaml,
            &parse_path(r#"["a"]["c"]"#).expect("p"),
            Some(Value::from("new value")),
        )
        .expect("set");
        assert!(
            out.contains("# keep me") && out.contains("b: 1 # and me"),
            "{out}"
        );
        let v = to_value(&out, FileFormat::Yaml).expect("v");
        assert_eq!(v["a"]["c"], "new value");
        let out = set_in_text(
            &out,
            FileFormat::Yaml,
            &parse_path(r#"["a"]["b"]"#).expect("p"),
            None,
        )
        .expect("unset");
        assert!(
            to_value(&out, FileFormat::Yaml).expect("v")["a"]
                .get("b")
                .is_none()
        );
    }
}
