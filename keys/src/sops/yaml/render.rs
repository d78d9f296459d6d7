//! Writing YAML text: decrypted scalars that read back as the same type (literal blocks for
//! multi-line strings), and the `sops:` block as sops writes it.

use serde_json::Value;

use super::tree::resolve_plain;
use crate::sops::walk::Scalar;

/// A literal block scalar for `s` with content at `indent` spaces, or `None` when a block
/// cannot hold it exactly (leading spaces on the first line, trailing spaces, control chars).
pub(super) fn block_scalar(s: &str, indent: usize) -> Option<String> {
    if s.starts_with([' ', '\t']) || s.chars().any(|c| c.is_control() && c != '\n') {
        return None;
    }
    let body = s.trim_end_matches('\n');
    if body.is_empty() || body.lines().any(|l| l.ends_with(' ')) {
        return None;
    }
    let trailing = s.len() - body.len();
    let chomp = match trailing {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let pad = " ".repeat(indent);
    let mut out = format!("|{chomp}");
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
    }
    // The span ends before the scalar's own line break; extra trailing newlines are kept
    // by the `+` chomping indicator as empty lines.
    for _ in 1..trailing {
        out.push('\n');
    }
    Some(out)
}

/// Renders a decrypted scalar as YAML text that reads back as the same type.
pub fn render_plain(p: &crate::sops::walk::Plain) -> String {
    use crate::sops::walk::Plain;
    match p {
        Plain::Int(i) => i.to_string(),
        Plain::Float(f) => {
            let s = crate::sops::walk::format_float(*f);
            if s.contains(['.', 'e', 'I', 'N']) {
                s
            } else {
                format!("{s}.0")
            }
        }
        Plain::Bool(b) => b.to_string(),
        Plain::Comment(c) => c.to_string(),
        Plain::Str(s, _) => {
            // Plain when a YAML reader gives back exactly this string (1.2 core schema, and no
            // 1.1 boolean words either, for kubectl's sake); otherwise double-quoted, which JSON
            // escaping makes valid YAML.
            let plain_ok = !s.is_empty()
                && !s.starts_with([
                    ' ', '-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>',
                    '\'', '"', '%', '@', '`',
                ])
                && !s.ends_with([' ', ':'])
                && !s.contains(": ")
                && !s.contains(" #")
                && !s.contains([',', '[', ']', '{', '}'])
                && !s.chars().any(|c| c.is_control())
                && !matches!(
                    s.to_ascii_lowercase().as_str(),
                    "yes" | "no" | "on" | "off" | "y" | "n" | "true" | "false" | "null" | "~"
                )
                && matches!(resolve_plain(s), Scalar::Str(_));
            if plain_ok {
                s.to_string()
            } else {
                serde_json::to_string(s.as_str()).unwrap_or_default()
            }
        }
    }
}

/// Whether a string can be written as a plain scalar in block context and read back as itself.
fn block_plain_ok(s: &str) -> bool {
    // YAML 1.1 readers (go-yaml, PyYAML) take `2026-11-26…` for a timestamp and may reformat it;
    // `lastmodified` must come back byte for byte (it is the MAC's AAD), so dates are quoted.
    let date_like = s.len() >= 10
        && s.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && s.as_bytes()[4] == b'-';
    !date_like
        && !s.is_empty()
        && !s.starts_with([
            ' ', '-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"',
            '%', '@', '`',
        ])
        && !s.ends_with([' ', ':'])
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.chars().any(|c| c.is_control())
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "yes" | "no" | "on" | "off" | "y" | "n" | "true" | "false" | "null" | "~"
        )
        && matches!(resolve_plain(s), Scalar::Str(_))
}

fn block_scalar_text(s: &str) -> String {
    if block_plain_ok(s) {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

fn emit_entries(
    out: &mut String,
    m: &serde_json::Map<String, Value>,
    col: usize,
    step: usize,
    first_prefix: Option<String>,
) {
    let mut first = first_prefix;
    for (k, v) in m {
        if v.is_null() {
            continue;
        }
        let prefix = first.take().unwrap_or_else(|| " ".repeat(col));
        match v {
            Value::String(s) if s.contains('\n') => {
                let body = s.strip_suffix('\n').unwrap_or(s);
                let chomp = if s.ends_with('\n') { "" } else { "-" };
                out.push_str(&format!("{prefix}{k}: |{chomp}\n"));
                for line in body.split('\n') {
                    if !line.is_empty() {
                        out.push_str(&" ".repeat(col + step));
                        out.push_str(line);
                    }
                    out.push('\n');
                }
            }
            Value::String(s) => out.push_str(&format!("{prefix}{k}: {}\n", block_scalar_text(s))),
            Value::Array(items) => {
                out.push_str(&format!("{prefix}{k}:\n"));
                for item in items {
                    let dash = format!("{}- ", " ".repeat(col + step));
                    match item {
                        Value::Object(o) => emit_entries(out, o, col + step + 2, step, Some(dash)),
                        Value::String(s) => {
                            out.push_str(&format!("{dash}{}\n", block_scalar_text(s)))
                        }
                        other => out.push_str(&format!("{dash}{other}\n")),
                    }
                }
            }
            Value::Object(o) => {
                out.push_str(&format!("{prefix}{k}:\n"));
                emit_entries(out, o, col + step, step, None);
            }
            other => out.push_str(&format!("{prefix}{k}: {other}\n")),
        }
    }
}

/// The `sops:` block as sops writes it: keys in the given (sorted) order, `enc` envelopes as
/// literal blocks, plain scalars where they read back the same, `step`-space indentation.
pub fn sops_block(meta: &Value, step: usize) -> String {
    let mut out = String::from("sops:\n");
    if let Value::Object(m) = meta {
        emit_entries(&mut out, m, step, step, None);
    }
    out
}
