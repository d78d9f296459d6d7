//! The JSON store (and the document under the binary store, which is JSON with one `data`
//! string). Leaves are read in document order; emitting walks the same value in the same order
//! and substitutes leaves by position.

use serde_json::Value;

use super::SopsError;
use super::edit::{Step, json_set};
use super::store::{Loaded, Store};
use super::walk::{Leaf, Plain, Scalar};

/// The JSON store.
pub struct JsonStore;

impl Store for JsonStore {
    fn check_depth(&self, text: &str) -> Result<(), SopsError> {
        super::depth::check_json(text)
    }

    fn load(&self, text: &str) -> Result<Box<dyn Loaded>, SopsError> {
        Ok(Box::new(JsonDoc::load(text)?))
    }

    fn to_value(&self, text: &str) -> Result<Value, SopsError> {
        serde_json::from_str(text).map_err(|e| SopsError::Format(format!("invalid JSON: {e}")))
    }

    fn emit_value(&self, value: &Value) -> Result<String, SopsError> {
        let mut s = serde_json::to_string_pretty(value).unwrap_or_default();
        s.push('\n');
        Ok(s)
    }

    fn set_in_text(
        &self,
        text: &str,
        path: &[Step],
        value: Option<Value>,
    ) -> Result<String, SopsError> {
        let mut v = self.to_value(text)?;
        json_set(&mut v, path, value)?;
        Ok(to_string(&v, "\t"))
    }

    fn structured(&self) -> bool {
        true
    }
}

/// A loaded JSON file.
pub struct JsonDoc {
    /// The document without its `sops` key.
    pub value: Value,
    /// The leaves, in order.
    pub leaves: Vec<Leaf>,
    /// The `sops` object, if any.
    pub metadata: Option<Value>,
}

// Recursive, so bounded: `depth` counts the collections around `v` (serde_json's own limit is
// higher than ours). `replaced` walks only values that passed here.
fn collect(
    v: &Value,
    depth: usize,
    path: &mut Vec<String>,
    out: &mut Vec<Leaf>,
) -> Result<(), SopsError> {
    if matches!(v, Value::Object(_) | Value::Array(_)) && depth >= super::MAX_DEPTH {
        return Err(super::depth::too_deep());
    }
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                path.push(k.clone());
                collect(v, depth + 1, path, out)?;
                path.pop();
            }
        }
        Value::Array(a) => {
            for v in a {
                collect(v, depth + 1, path, out)?;
            }
        }
        other => out.push(Leaf {
            path: path.clone(),
            value: scalar(other),
            comment: false,
            comments: Vec::new(),
        }),
    }
    Ok(())
}

fn scalar(v: &Value) -> Scalar {
    match v {
        Value::String(s) => Scalar::Str(s.clone()),
        Value::Bool(b) => Scalar::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Scalar::Int(i),
            None => Scalar::Float(n.as_f64().unwrap_or(0.0)),
        },
        _ => Scalar::Null,
    }
}

impl JsonDoc {
    /// Parses a JSON object.
    pub fn load(text: &str) -> Result<Self, SopsError> {
        let mut value: Value = serde_json::from_str(text)
            .map_err(|e| SopsError::Format(format!("invalid JSON: {e}")))?;
        let obj = value.as_object_mut().ok_or_else(|| {
            SopsError::Format("a SOPS JSON file must be an object at the top level".into())
        })?;
        let metadata = obj.shift_remove("sops");
        let mut leaves = Vec::new();
        collect(&value, 0, &mut Vec::new(), &mut leaves)?;
        Ok(JsonDoc {
            value,
            leaves,
            metadata,
        })
    }

    /// The document with leaves replaced (per leaf, in order) and `sops` set to `metadata`.
    pub fn replaced(&self, replacements: &[Option<Value>], metadata: Option<Value>) -> Value {
        fn walk(v: &Value, reps: &mut std::slice::Iter<'_, Option<Value>>) -> Value {
            match v {
                Value::Object(m) => {
                    Value::Object(m.iter().map(|(k, v)| (k.clone(), walk(v, reps))).collect())
                }
                Value::Array(a) => Value::Array(a.iter().map(|v| walk(v, reps)).collect()),
                other => match reps.next() {
                    Some(Some(r)) => r.clone(),
                    _ => other.clone(),
                },
            }
        }
        let mut out = walk(&self.value, &mut replacements.iter());
        if let (Some(m), Value::Object(o)) = (metadata, &mut out) {
            o.insert("sops".into(), m);
        }
        out
    }
}

impl Loaded for JsonDoc {
    fn leaves(&self) -> &[Leaf] {
        &self.leaves
    }

    fn metadata(&self) -> Option<&Value> {
        self.metadata.as_ref()
    }

    fn emit_plain(
        &self,
        values: &[Option<Plain>],
        indent: Option<usize>,
    ) -> Result<String, SopsError> {
        let reps: Vec<Option<Value>> = values.iter().map(|v| v.as_ref().map(plain_json)).collect();
        Ok(to_string(&self.replaced(&reps, None), &indent_text(indent)))
    }

    fn emit_encrypted(
        &self,
        values: &[Option<String>],
        meta: &Value,
        indent: Option<usize>,
    ) -> String {
        let reps: Vec<Option<Value>> = values
            .iter()
            .map(|v| v.clone().map(Value::String))
            .collect();
        to_string(
            &self.replaced(&reps, Some(meta.clone())),
            &indent_text(indent),
        )
    }
}

/// `--indent N` as N spaces; sops indents JSON with a tab by default.
fn indent_text(indent: Option<usize>) -> String {
    indent.map_or_else(|| "\t".to_string(), |n| " ".repeat(n))
}

/// The JSON value of a decrypted leaf.
pub fn plain_json(p: &Plain) -> Value {
    match p {
        Plain::Str(s, _) | Plain::Comment(s) => Value::String(s.to_string()),
        Plain::Int(i) => Value::from(*i),
        Plain::Float(f) => float_json(*f),
        Plain::Bool(b) => Value::Bool(*b),
    }
}

/// A float as Go's `encoding/json` writes a float64: `5432`, not `5432.0` (sops keeps every
/// JSON number as a float64, so integers come back as `type:float`).
fn float_json(f: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53: every integer below is exact
    if f.fract() == 0.0 && f.abs() < EXACT {
        Value::from(f as i64)
    } else {
        Value::from(f)
    }
}

/// Pretty JSON with `indent` (sops uses a tab by default).
pub fn to_string(v: &Value, indent: &str) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut out,
        serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes()),
    );
    let _ = serde::Serialize::serialize(v, &mut ser);
    let mut s = String::from_utf8(out).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod float_tests {
    use super::*;

    #[test]
    fn integral_floats_print_as_go_prints_them() {
        assert_eq!(float_json(5432.0).to_string(), "5432");
        assert_eq!(float_json(-3.0).to_string(), "-3");
        assert_eq!(float_json(0.25).to_string(), "0.25");
        assert_eq!(float_json(1.5).to_string(), "1.5");
    }
}
