//! SealedSecret `spec.template.data`: Go `text/template` over the map of decrypted values, in the
//! subset [`crate::gotemplate`] renders (`{{ .key }}`, `{{ index . "key" }}`, pipes and the
//! common sprig functions). Anything else is refused with the construct named, never guessed at.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

pub use crate::gotemplate::TemplateError;
use crate::secret::{ExposeSecret, SecretBytes};

/// Renders `template` over `data`.
pub fn render(
    template: &str,
    data: &BTreeMap<String, SecretBytes>,
) -> Result<Zeroizing<Vec<u8>>, TemplateError> {
    let values = data
        .iter()
        .map(|(k, v)| (k.clone(), Zeroizing::new(v.expose_secret().to_vec())))
        .collect();
    crate::gotemplate::render(template, &values)
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
        assert_eq!(r("{{ .user | upper }}").as_deref(), Ok("ADMIN"));
        assert_eq!(
            r("{{ .user | sha256sum }}"),
            Err(TemplateError::Unsupported("sha256sum".into()))
        );
        assert!(matches!(
            r("{{ if .user }}x{{ end }}"),
            Err(TemplateError::Unsupported(_))
        ));
        assert!(matches!(r("{{ .user"), Err(TemplateError::Malformed(_))));
    }
}
