//! The subset of Go `text/template` (with the sprig functions people actually use in secret
//! templates) that SealedSecret `spec.template.data` and ExternalSecret `target.template` need.
//!
//! Supported: literal text; `{{ pipeline }}` actions with `{{-` / `-}}` trim markers and
//! `{{/* comments */}}`; operands `.`, `.key`, `.key.sub`, string literals (`"…"`, `` `…` ``),
//! numbers and parenthesised pipelines; pipes (`a | f b` passes `a` as the last argument);
//! functions `index`, `b64enc`, `b64dec`, `toJson`, `fromJson`, `upper`, `lower`, `trim`,
//! `trimPrefix`, `trimSuffix`, `replace`, `quote`, `squote`, `default`, `printf` (`%s %d %v %q %%`),
//! `toString`. Anything else (`if`, `range`, variables, other functions) is refused with the
//! construct named, never guessed at. A missing key renders as `<no value>`, as Go's default.
//!
//! Values stay in zeroizing buffers. Errors never carry a value or a position inside one: they
//! name the construct or the function that failed, so no message depends on a secret (a
//! template is the caller's, the values are not).
//!
//! Templates come from whoever writes a SealedSecret or an ExternalSecret, so the engine is
//! bounded: a template is at most [`MAX_TEMPLATE`] bytes, parentheses nest at most
//! [`MAX_DEPTH`] deep, no value or output grows beyond [`MAX_OUTPUT`] bytes, and one render
//! produces at most [`MAX_WORK`] bytes in all (so nested `replace` cannot grow quadratically).

use std::collections::BTreeMap;

use base64::Engine as _;
use zeroize::Zeroizing;

mod lex;
use lex::{Tok, lex};

/// A template the subset cannot render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// `{{` without `}}`, or an unbalanced parenthesis or quote.
    #[error("malformed action: {0}")]
    Malformed(String),
    /// An action or function we do not support.
    #[error(
        "unsupported template construct '{0}' (supported: .key, index, pipes and the functions {FUNCTIONS})"
    )]
    Unsupported(String),
    /// A function failed (wrong arguments, bad base64, bad JSON).
    #[error("{0}")]
    Call(String),
}

/// The largest template accepted, in bytes.
pub const MAX_TEMPLATE: usize = 64 * 1024;
/// How deep parentheses may nest.
pub const MAX_DEPTH: usize = 32;
/// The largest value or output, in bytes (a Secret holds at most 1 MiB).
pub const MAX_OUTPUT: usize = 1024 * 1024;
/// The most bytes one render may produce across every function call.
pub const MAX_WORK: usize = 16 * 1024 * 1024;

const FUNCTIONS: &str = "b64enc b64dec toJson fromJson upper lower trim trimPrefix trimSuffix replace quote squote default printf toString";

/// A value inside a template.
#[derive(Clone, Debug)]
enum Val {
    /// Bytes (secret values, strings).
    Bytes(Zeroizing<Vec<u8>>),
    /// Parsed JSON (from `fromJson`, or numbers).
    Json(serde_json::Value),
    /// The whole data map (`.`).
    Root,
    /// A missing key.
    Nil,
}

impl Val {
    fn text(s: impl Into<Vec<u8>>) -> Val {
        Val::Bytes(Zeroizing::new(s.into()))
    }

    fn bytes(&self, data: &BTreeMap<String, Zeroizing<Vec<u8>>>) -> Zeroizing<Vec<u8>> {
        match self {
            Val::Bytes(b) => b.clone(),
            Val::Json(serde_json::Value::String(s)) => Zeroizing::new(s.as_bytes().to_vec()),
            Val::Json(v) => Zeroizing::new(v.to_string().into_bytes()),
            Val::Root => Zeroizing::new(root_json(data).to_string().into_bytes()),
            Val::Nil => Zeroizing::new(b"<no value>".to_vec()),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Val::Bytes(b) => b.is_empty(),
            Val::Json(v) => {
                matches!(v, serde_json::Value::Null)
                    || v.as_str() == Some("")
                    || v.as_bool() == Some(false)
                    || v.as_array().is_some_and(Vec::is_empty)
                    || v.as_object().is_some_and(serde_json::Map::is_empty)
            }
            Val::Root => false,
            Val::Nil => true,
        }
    }
}

fn root_json(data: &BTreeMap<String, Zeroizing<Vec<u8>>>) -> serde_json::Value {
    serde_json::Value::Object(
        data.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    serde_json::Value::String(String::from_utf8_lossy(v).into_owned()),
                )
            })
            .collect(),
    )
}

fn to_json(v: &Val, data: &BTreeMap<String, Zeroizing<Vec<u8>>>) -> serde_json::Value {
    match v {
        Val::Bytes(b) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
        Val::Json(j) => j.clone(),
        Val::Root => root_json(data),
        Val::Nil => serde_json::Value::Null,
    }
}

struct Eval<'a> {
    data: &'a BTreeMap<String, Zeroizing<Vec<u8>>>,
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
    /// Bytes still allowed to be produced in this render.
    work: &'a mut usize,
}

fn too_large(what: &str) -> TemplateError {
    TemplateError::Call(format!(
        "{what}: the result would be larger than {MAX_OUTPUT} bytes"
    ))
}

impl Eval<'_> {
    fn pipeline(&mut self) -> Result<Val, TemplateError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(TemplateError::Malformed(format!(
                "parentheses nested deeper than {MAX_DEPTH}"
            )));
        }
        let mut value = self.command(None)?;
        while self.toks.get(self.pos) == Some(&Tok::Pipe) {
            self.pos += 1;
            value = self.command(Some(value))?;
        }
        self.depth -= 1;
        Ok(value)
    }

    /// Charges a function's result to the render's budget.
    fn charge(&mut self, name: &str, v: Val) -> Result<Val, TemplateError> {
        let len = match &v {
            Val::Bytes(b) => b.len(),
            Val::Json(j) => j.to_string().len(),
            Val::Root | Val::Nil => 0,
        };
        if len > MAX_OUTPUT {
            return Err(too_large(name));
        }
        *self.work = self.work.checked_sub(len).ok_or_else(|| {
            TemplateError::Call(format!(
                "{name}: the template produces more than {MAX_WORK} bytes in all"
            ))
        })?;
        Ok(v)
    }

    fn command(&mut self, piped: Option<Val>) -> Result<Val, TemplateError> {
        let Some(first) = self.toks.get(self.pos).cloned() else {
            return Err(TemplateError::Malformed("empty command".into()));
        };
        if let Tok::Ident(name) = first {
            self.pos += 1;
            let mut args = Vec::new();
            while let Some(t) = self.toks.get(self.pos) {
                if matches!(t, Tok::Pipe | Tok::Close) {
                    break;
                }
                args.push(self.operand()?);
            }
            args.extend(piped);
            let v = self.call(&name, args)?;
            return self.charge(&name, v);
        }
        let v = self.operand()?;
        if piped.is_some() {
            return Err(TemplateError::Malformed(
                "a value cannot be piped into a value".into(),
            ));
        }
        if let Some(t) = self.toks.get(self.pos)
            && !matches!(t, Tok::Pipe | Tok::Close)
        {
            return Err(TemplateError::Malformed(
                "a value cannot take arguments".into(),
            ));
        }
        Ok(v)
    }

    fn operand(&mut self) -> Result<Val, TemplateError> {
        let tok = self.toks.get(self.pos).cloned();
        self.pos += 1;
        match tok {
            Some(Tok::Dot) => Ok(Val::Root),
            Some(Tok::Field(path)) => Ok(self.field(&path)),
            Some(Tok::Str(s)) => Ok(Val::text(s)),
            Some(Tok::Num(n)) => serde_json::from_str(&n)
                .map(Val::Json)
                .map_err(|_| TemplateError::Malformed(format!("bad number {n}"))),
            Some(Tok::Open) => {
                let v = self.pipeline()?;
                if self.toks.get(self.pos) != Some(&Tok::Close) {
                    return Err(TemplateError::Malformed("missing ')'".into()));
                }
                self.pos += 1;
                Ok(v)
            }
            Some(Tok::Ident(name)) => Err(TemplateError::Unsupported(format!(
                "{name} (as an argument; use parentheses)"
            ))),
            Some(Tok::Close) => Err(TemplateError::Malformed("unexpected ')'".into())),
            Some(Tok::Pipe) => Err(TemplateError::Malformed("unexpected '|'".into())),
            None => Err(TemplateError::Malformed("missing operand".into())),
        }
    }

    fn field(&self, path: &[String]) -> Val {
        let Some(first) = self.data.get(&path[0]) else {
            return Val::Nil;
        };
        if path.len() == 1 {
            return Val::Bytes(first.clone());
        }
        let mut v = match serde_json::from_slice::<serde_json::Value>(first) {
            Ok(v) => v,
            Err(_) => return Val::Nil,
        };
        for p in &path[1..] {
            v = match v.get(p) {
                Some(x) => x.clone(),
                None => return Val::Nil,
            };
        }
        Val::Json(v)
    }

    fn call(&self, name: &str, args: Vec<Val>) -> Result<Val, TemplateError> {
        let arity = |n: usize| -> Result<(), TemplateError> {
            if args.len() == n {
                Ok(())
            } else {
                Err(TemplateError::Call(format!(
                    "{name} takes {n} argument(s), got {}",
                    args.len()
                )))
            }
        };
        let text = |v: &Val| -> Zeroizing<Vec<u8>> { v.bytes(self.data) };
        let string = |v: &Val| -> Zeroizing<String> {
            Zeroizing::new(String::from_utf8_lossy(&v.bytes(self.data)).into_owned())
        };
        let map_str = |f: &dyn Fn(&str) -> String| -> Result<Val, TemplateError> {
            arity(1)?;
            Ok(Val::text(f(&string(&args[0]))))
        };
        match name {
            "index" => {
                if args.len() < 2 {
                    return Err(TemplateError::Call("index takes a map and a key".into()));
                }
                let mut v = args[0].clone();
                for k in &args[1..] {
                    let key = string(k);
                    v = match v {
                        Val::Root => self
                            .data
                            .get(key.as_str())
                            .map_or(Val::Nil, |b| Val::Bytes(b.clone())),
                        Val::Json(j) => j.get(key.as_str()).cloned().map_or(Val::Nil, Val::Json),
                        _ => {
                            return Err(TemplateError::Call(
                                "index of a value that is not a map".into(),
                            ));
                        }
                    };
                }
                Ok(v)
            }
            "b64enc" => {
                arity(1)?;
                Ok(Val::text(
                    base64::engine::general_purpose::STANDARD.encode(text(&args[0])),
                ))
            }
            "b64dec" => {
                arity(1)?;
                let t = text(&args[0]);
                base64::engine::general_purpose::STANDARD
                    .decode(t.trim_ascii())
                    .map(Val::text)
                    .map_err(|_| {
                        TemplateError::Call("b64dec: the value is not valid base64".into())
                    })
            }
            "toJson" => {
                arity(1)?;
                Ok(Val::text(to_json(&args[0], self.data).to_string()))
            }
            "fromJson" => {
                arity(1)?;
                // Never where it failed: a position inside a value tells what the value is.
                serde_json::from_slice(&text(&args[0]))
                    .map(Val::Json)
                    .map_err(|_| {
                        TemplateError::Call("fromJson: the value is not valid JSON".into())
                    })
            }
            "upper" => map_str(&|s| s.to_uppercase()),
            "lower" => map_str(&|s| s.to_lowercase()),
            "trim" => map_str(&|s| s.trim().to_string()),
            "toString" => map_str(&|s| s.to_string()),
            "quote" => map_str(&|s| serde_json::Value::String(s.to_string()).to_string()),
            "squote" => map_str(&|s| format!("'{s}'")),
            "trimPrefix" | "trimSuffix" => {
                arity(2)?;
                let (affix, s) = (string(&args[0]), string(&args[1]));
                let out = if name == "trimPrefix" {
                    s.strip_prefix(affix.as_str()).unwrap_or(&s).to_string()
                } else {
                    s.strip_suffix(affix.as_str()).unwrap_or(&s).to_string()
                };
                Ok(Val::text(out))
            }
            "replace" => {
                arity(3)?;
                let (from, to, s) = (string(&args[0]), string(&args[1]), string(&args[2]));
                // Bound the result before building it: every match (an empty pattern matches
                // between all characters) adds `to`.
                let matches = if from.is_empty() {
                    s.chars().count() + 1
                } else {
                    s.matches(from.as_str()).count()
                };
                let grows = to.len().saturating_sub(from.len());
                if s.len().saturating_add(matches.saturating_mul(grows)) > MAX_OUTPUT {
                    return Err(too_large("replace"));
                }
                Ok(Val::text(s.replace(from.as_str(), &to)))
            }
            "default" => {
                arity(2)?;
                Ok(if args[1].is_empty() {
                    args[0].clone()
                } else {
                    args[1].clone()
                })
            }
            "printf" => {
                let Some(format) = args.first() else {
                    return Err(TemplateError::Call("printf needs a format".into()));
                };
                self.printf(&string(format), &args[1..])
            }
            other => Err(TemplateError::Unsupported(other.to_string())),
        }
    }

    fn printf(&self, format: &str, args: &[Val]) -> Result<Val, TemplateError> {
        let mut out = Zeroizing::new(Vec::new());
        let mut it = args.iter();
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                continue;
            }
            let verb = chars.next();
            if verb == Some('%') {
                out.push(b'%');
                continue;
            }
            let arg = it
                .next()
                .ok_or_else(|| TemplateError::Call("printf: more verbs than arguments".into()))?;
            if out.len() > MAX_OUTPUT {
                return Err(too_large("printf"));
            }
            match verb {
                Some('s' | 'v' | 'd') => out.extend_from_slice(&arg.bytes(self.data)),
                Some('q') => out.extend_from_slice(
                    serde_json::Value::String(
                        String::from_utf8_lossy(&arg.bytes(self.data)).into_owned(),
                    )
                    .to_string()
                    .as_bytes(),
                ),
                other => {
                    return Err(TemplateError::Unsupported(format!(
                        "printf verb %{}",
                        other.map(String::from).unwrap_or_default()
                    )));
                }
            }
        }
        Ok(Val::Bytes(out))
    }
}

const CONTROL: &[&str] = &[
    "if", "else", "end", "range", "with", "define", "template", "block", "break", "continue",
];

fn action(
    action: &str,
    data: &BTreeMap<String, Zeroizing<Vec<u8>>>,
    work: &mut usize,
) -> Result<Option<Zeroizing<Vec<u8>>>, TemplateError> {
    let trimmed = action.trim();
    if trimmed.starts_with("/*") && trimmed.ends_with("*/") {
        return Ok(None);
    }
    let first = trimmed.split_whitespace().next().unwrap_or("");
    if CONTROL.contains(&first) || trimmed.contains('$') || trimmed.contains(":=") {
        return Err(TemplateError::Unsupported(format!("{{{{ {trimmed} }}}}")));
    }
    let mut ev = Eval {
        data,
        toks: lex(trimmed)?,
        pos: 0,
        depth: 0,
        work,
    };
    let v = ev.pipeline()?;
    if ev.pos != ev.toks.len() {
        return Err(TemplateError::Malformed(format!(
            "unexpected input in '{{{{ {trimmed} }}}}'"
        )));
    }
    Ok(Some(v.bytes(data)))
}

/// Renders `template` over `data` (`.key` is a value of the map).
pub fn render(
    template: &str,
    data: &BTreeMap<String, Zeroizing<Vec<u8>>>,
) -> Result<Zeroizing<Vec<u8>>, TemplateError> {
    if template.len() > MAX_TEMPLATE {
        return Err(TemplateError::Malformed(format!(
            "the template is longer than {MAX_TEMPLATE} bytes"
        )));
    }
    let mut work = MAX_WORK;
    let mut out = Zeroizing::new(Vec::with_capacity(template.len()));
    let mut rest = template;
    let mut trim_next = false;
    while let Some(open) = rest.find("{{") {
        let mut text = &rest[..open];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| TemplateError::Malformed("a '{{' without '}}'".into()))?;
        let mut inner = &after[..close];
        if let Some(a) = inner
            .strip_prefix('-')
            .filter(|a| a.starts_with(char::is_whitespace))
        {
            text = text.trim_end();
            inner = a;
        }
        trim_next = false;
        if let Some(a) = inner
            .strip_suffix('-')
            .filter(|a| a.ends_with(char::is_whitespace))
        {
            trim_next = true;
            inner = a;
        }
        out.extend_from_slice(text.as_bytes());
        if let Some(v) = action(inner, data, &mut work)? {
            out.extend_from_slice(&v);
        }
        if out.len() > MAX_OUTPUT {
            return Err(too_large("the template"));
        }
        rest = &after[close + 2..];
    }
    let tail = if trim_next { rest.trim_start() } else { rest };
    out.extend_from_slice(tail.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests;
