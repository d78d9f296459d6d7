//! The subset of Go `text/template` that SealedSecret `spec.template.data` uses in practice:
//! literal text with `{{ .key }}` and `{{ index . "key" }}` actions (and `{{-`/`-}}` trim
//! markers), over the map of decrypted values. Anything else is refused with the construct
//! named, never guessed at. A missing key renders as `<no value>`, as Go's default does.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::secret::{ExposeSecret, SecretBytes};

/// A template the subset cannot render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// `{{` without `}}`.
    #[error("unclosed action (a '{{{{' without '}}}}')")]
    Unclosed,
    /// An action we do not support.
    #[error(
        "unsupported template construct '{{{{ {0} }}}}': only {{{{ .key }}}} and {{{{ index . \"key\" }}}} are supported"
    )]
    Unsupported(String),
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// The key an action refers to.
fn key_of(action: &str) -> Result<String, TemplateError> {
    let unsupported = || TemplateError::Unsupported(action.to_string());
    if let Some(name) = action.strip_prefix('.') {
        return if is_ident(name) {
            Ok(name.to_string())
        } else {
            Err(unsupported())
        };
    }
    let mut words = action.splitn(3, char::is_whitespace);
    if words.next() == Some("index") && words.next() == Some(".") {
        let lit = words.next().map(str::trim).ok_or_else(unsupported)?;
        if lit.starts_with('"') {
            return serde_json::from_str::<String>(lit).map_err(|_| unsupported());
        }
        if let Some(raw) = lit.strip_prefix('`').and_then(|l| l.strip_suffix('`')) {
            return Ok(raw.to_string());
        }
    }
    Err(unsupported())
}

/// Renders `template` over `data`.
pub fn render(
    template: &str,
    data: &BTreeMap<String, SecretBytes>,
) -> Result<Zeroizing<Vec<u8>>, TemplateError> {
    let mut out = Zeroizing::new(Vec::with_capacity(template.len()));
    let mut rest = template;
    let mut trim_next = false;
    while let Some(open) = rest.find("{{") {
        let mut text = &rest[..open];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or(TemplateError::Unclosed)?;
        let mut action = &after[..close];
        if let Some(a) = action
            .strip_prefix('-')
            .filter(|a| a.starts_with(char::is_whitespace))
        {
            text = text.trim_end();
            action = a;
        }
        trim_next = false;
        if let Some(a) = action
            .strip_suffix('-')
            .filter(|a| a.ends_with(char::is_whitespace))
        {
            trim_next = true;
            action = a;
        }
        out.extend_from_slice(text.as_bytes());
        let action = action.trim();
        if !(action.starts_with("/*") && action.ends_with("*/")) {
            let key = key_of(action)?;
            match data.get(&key) {
                Some(v) => out.extend_from_slice(v.expose_secret()),
                None => out.extend_from_slice(b"<no value>"),
            }
        }
        rest = &after[close + 2..];
    }
    let tail = if trim_next { rest.trim_start() } else { rest };
    out.extend_from_slice(tail.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::secret_bytes;

    fn data() -> BTreeMap<String, SecretBytes> {
        let mut m = BTreeMap::new();
        m.insert("user".to_string(), secret_bytes(b"admin".to_vec()));
        m.insert("pass-word".to_string(), secret_bytes(b"s3cr3t".to_vec()));
        m
    }

    fn r(t: &str) -> Result<String, TemplateError> {
        render(t, &data()).map(|v| String::from_utf8(v.to_vec()).unwrap_or_default())
    }

    #[test]
    fn supported_forms() {
        assert_eq!(
            r("postgres://{{ .user }}:{{ index . \"pass-word\" }}@db").as_deref(),
            Ok("postgres://admin:s3cr3t@db")
        );
        assert_eq!(r("a  {{- .user -}}  b").as_deref(), Ok("aadminb"));
        assert_eq!(r("{{.user}}{{/* note */}}").as_deref(), Ok("admin"));
        assert_eq!(r("{{ .missing }}").as_deref(), Ok("<no value>"));
        assert_eq!(r("no actions").as_deref(), Ok("no actions"));
    }

    #[test]
    fn unsupported_forms_are_named() {
        assert_eq!(
            r("{{ .user | upper }}"),
            Err(TemplateError::Unsupported(".user | upper".into()))
        );
        assert!(matches!(
            r("{{ if .user }}x{{ end }}"),
            Err(TemplateError::Unsupported(_))
        ));
        assert_eq!(r("{{ .user"), Err(TemplateError::Unclosed));
    }
}
