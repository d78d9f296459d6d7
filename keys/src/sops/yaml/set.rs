//! `set` / `unset` on a YAML file through the lossless tree (yaml-edit), so comments, order
//! and formatting of everything else stay as they were.

use std::str::FromStr;

use serde_json::Value;

use crate::sops::SopsError;
use crate::sops::edit::{Step, describe, yaml_scalar};

/// Sets (`Some`) or removes (`None`) the value at `path` (mapping keys only).
pub(super) fn set_in_text(
    text: &str,
    path: &[Step],
    value: Option<Value>,
) -> Result<String, SopsError> {
    let file = yaml_edit::YamlFile::from_str(text)
        .map_err(|e| SopsError::Format(format!("invalid YAML: {e}")))?;
    let doc = file
        .document()
        .ok_or_else(|| SopsError::Format("empty YAML file".into()))?;
    let mut map = doc
        .as_mapping()
        .ok_or_else(|| SopsError::Format("the YAML document is not a mapping".into()))?;
    let (last, parents) = path
        .split_last()
        .ok_or_else(|| SopsError::Format("empty path".into()))?;
    for (i, step) in parents.iter().enumerate() {
        let Step::Key(k) = step else {
            return Err(SopsError::Unsupported(
                "list indices in YAML set/unset paths".into(),
            ));
        };
        map = match map.get_mapping(k.as_str()) {
            Some(m) => m,
            None if value.is_some() && !map.contains_key(k.as_str()) => {
                map.set(k.as_str(), yaml_edit::Mapping::new());
                map.get_mapping(k.as_str()).ok_or_else(|| {
                    SopsError::Format(format!("{} could not be created", describe(&path[..=i])))
                })?
            }
            None => {
                return Err(SopsError::Format(format!(
                    "{} is not a mapping",
                    describe(&path[..=i])
                )));
            }
        };
    }
    let Step::Key(k) = last else {
        return Err(SopsError::Unsupported(
            "list indices in YAML set/unset paths".into(),
        ));
    };
    match value {
        Some(v) => {
            let s = yaml_scalar(&v).ok_or_else(|| {
                SopsError::Unsupported(
                    "setting a mapping or list in YAML (set its leaves one by one)".into(),
                )
            })?;
            match &v {
                Value::String(_) => map.set(k.as_str(), s.as_str()),
                Value::Bool(b) => map.set(k.as_str(), *b),
                Value::Number(n) if n.is_i64() => {
                    map.set(k.as_str(), n.as_i64().unwrap_or_default())
                }
                Value::Number(n) => map.set(k.as_str(), n.as_f64().unwrap_or_default()),
                _ => map.set(k.as_str(), s.as_str()),
            }
        }
        None => {
            map.remove(k.as_str())
                .ok_or_else(|| SopsError::Format(format!("{} not found", describe(path))))?;
        }
    }
    Ok(file.to_string())
}
