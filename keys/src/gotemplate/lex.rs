//! Splitting one action (the text between `{{` and `}}`) into tokens: fields (`.a.b`), `.`,
//! string literals, numbers, identifiers, parentheses and pipes. Anything else is refused with
//! the character named.

use super::TemplateError;

/// One token of an action.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Field(Vec<String>),
    Dot,
    Str(String),
    Num(String),
    Ident(String),
    Open,
    Close,
    Pipe,
}

/// The tokens of one action, in order.
pub(super) fn lex(action: &str) -> Result<Vec<Tok>, TemplateError> {
    let malformed = |what: &str| TemplateError::Malformed(what.to_string());
    let mut out = Vec::new();
    let chars: Vec<char> = action.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            '|' => {
                out.push(Tok::Pipe);
                i += 1;
            }
            '"' => {
                let start = i;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(malformed("unterminated string literal"));
                }
                let lit: String = chars[start..=i].iter().collect();
                let s = serde_json::from_str::<String>(&lit)
                    .map_err(|_| malformed("invalid string literal"))?;
                out.push(Tok::Str(s));
                i += 1;
            }
            '`' => {
                let start = i + 1;
                i += 1;
                while i < chars.len() && chars[i] != '`' {
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(malformed("unterminated raw string"));
                }
                out.push(Tok::Str(chars[start..i].iter().collect()));
                i += 1;
            }
            '.' => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if word == "." {
                    out.push(Tok::Dot);
                } else {
                    let parts: Vec<String> = word[1..].split('.').map(str::to_string).collect();
                    if parts.iter().any(String::is_empty) {
                        return Err(TemplateError::Unsupported(word));
                    }
                    out.push(Tok::Field(parts));
                }
            }
            c if c.is_ascii_digit() || c == '-' => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                out.push(Tok::Num(chars[start..i].iter().collect()));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => return Err(TemplateError::Unsupported(other.to_string())),
        }
    }
    Ok(out)
}
