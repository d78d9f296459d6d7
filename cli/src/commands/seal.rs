//! `sealkit seal`: kubeseal's behaviour, flag for flag, for the offline flags.

use std::path::Path;

use sealkit_keys::seal::manifest::{
    self, Format, SealOptions, Target, emit, merge_into, parse_documents, seal_raw, seal_secret,
    unseal,
};
use sealkit_keys::seal::{PublicKey, Scope};
use serde_json::Value;

use super::{doc_error, load_keyring, parse_error, to_format};
use crate::args::{OutputFormat, SealArgs};
use crate::error::CliError;
use crate::io::{read_bytes, read_input, same_file, write_atomic, write_output};
use crate::{cert, kubeconfig};

/// Runs `sealkit seal`.
pub fn run(a: &SealArgs) -> Result<(), CliError> {
    if a.validate {
        return validate(a);
    }
    if a.re_encrypt {
        return re_encrypt(a);
    }
    if a.fetch_cert {
        let pem = match a.cert.as_deref() {
            Some(source) => cert::fetch(source)?,
            None => crate::cluster::fetch_cert(&controller(a))?,
        };
        return write_output(a.sealed_secret_file.as_deref(), &pem);
    }
    if a.recovery_unseal {
        return recovery_unseal(a);
    }
    if !a.recovery_private_key.is_empty() {
        return Err(CliError::usage(
            "--recovery-private-key is only used with --recovery-unseal",
        ));
    }
    if a.raw {
        return raw(a);
    }
    if !a.from_file.is_empty() {
        return Err(CliError::usage("--from-file is only used with --raw")
            .with_hint("to seal a Secret built from files, use `kubectl create secret generic NAME --from-file=... --dry-run=client -o yaml | sealkit seal ...`"));
    }
    if let Some(target) = &a.merge_into {
        return merge(a, target);
    }
    seal_documents(a)
}

/// The controller, as the cluster flags name it.
fn controller(a: &SealArgs) -> crate::cluster::Target<'_> {
    crate::cluster::Target {
        kubeconfig: a.kubeconfig.as_deref(),
        context: a.context.as_deref(),
        namespace: &a.controller_namespace,
        name: &a.controller_name,
    }
}

/// `--validate`: asks the controller whether it can unseal the input.
fn validate(a: &SealArgs) -> Result<(), CliError> {
    let input = read_input(a.secret_file.as_deref())?;
    match crate::cluster::verify(&controller(a), input.text.into_bytes())? {
        Ok(()) => Ok(()),
        Err(reason) => Err(CliError::input(format!(
            "unable to decrypt sealed secret: {reason}"
        ))),
    }
}

/// `--re-encrypt`: the controller re-encrypts the input with its newest key; written to `-w`,
/// or back into `-f` when only `-f` is given (as kubeseal does).
fn re_encrypt(a: &SealArgs) -> Result<(), CliError> {
    let input = read_input(a.secret_file.as_deref())?;
    let in_format = Format::sniff(&input.text);
    let body = crate::cluster::rotate(&controller(a), input.text.clone().into_bytes())?;
    let mut doc: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| CliError::io(format!("the controller answered with invalid JSON: {e}")))?;
    if let Some(meta) = doc
        .get_mut("metadata")
        .and_then(serde_json::Value::as_object_mut)
    {
        meta.insert("creationTimestamp".into(), serde_json::Value::Null);
        for k in [
            "generation",
            "resourceVersion",
            "uid",
            "managedFields",
            "deletionTimestamp",
        ] {
            meta.remove(k);
        }
    }
    let format = a
        .format
        .map(to_format)
        .unwrap_or(match &a.sealed_secret_file {
            Some(_) => output_format(a),
            None => in_format,
        });
    let out = emit(&doc, format);
    match (&a.sealed_secret_file, &input.path) {
        (Some(w), _) => write_atomic(w, out.as_bytes(), None),
        (None, Some(f)) => write_atomic(f, out.as_bytes(), None),
        (None, None) => write_output(None, out.as_bytes()),
    }
}

fn output_format(a: &SealArgs) -> Format {
    if let Some(f) = a.format {
        return to_format(f);
    }
    match a
        .sealed_secret_file
        .as_deref()
        .and_then(Path::extension)
        .and_then(|e| e.to_str())
    {
        Some("yaml") | Some("yml") => Format::Yaml,
        _ => Format::Json,
    }
}

fn check_not_same(a: &SealArgs) -> Result<(), CliError> {
    if let (Some(i), Some(o)) = (&a.secret_file, &a.sealed_secret_file)
        && same_file(i, o)
    {
        return Err(CliError::usage(format!(
            "the output file {} is the input file; refusing to overwrite the input",
            o.display()
        ))
        .with_hint(
            "write to another file, or use --merge-into to update a SealedSecret in place",
        ));
    }
    Ok(())
}

fn seal_options(a: &SealArgs) -> SealOptions {
    SealOptions {
        scope: a.scope,
        name: a.name.clone(),
        namespace: a.namespace.clone(),
        fallback_namespace: kubeconfig::default_namespace(
            a.kubeconfig.as_deref(),
            a.context.as_deref(),
        ),
        allow_empty_data: a.allow_empty_data,
    }
}

/// Seals every Secret of `text` and returns the output text; nothing is written on error.
pub fn seal_text(
    input_name: &str,
    text: &str,
    opts: &SealOptions,
    key: &PublicKey,
    format: Format,
) -> Result<(String, usize), CliError> {
    let docs = parse_documents(text).map_err(|e| parse_error(input_name, &e))?;
    if docs.is_empty() {
        return Err(CliError::input(format!(
            "{input_name}: no Secret found (the input is empty)"
        )));
    }
    let mut out = String::new();
    for doc in &docs {
        let sealed =
            seal_secret(&doc.value, opts, key).map_err(|e| doc_error(input_name, doc, &e))?;
        out.push_str(&emit(&sealed, format));
    }
    Ok((out, docs.len()))
}

fn seal_documents(a: &SealArgs) -> Result<(), CliError> {
    check_not_same(a)?;
    let key = cert::load(a.cert.as_deref(), Some(&controller(a)))?;
    let input = read_input(a.secret_file.as_deref())?;
    let (out, _) = seal_text(
        &input.name,
        &input.text,
        &seal_options(a),
        &key,
        output_format(a),
    )?;
    write_output(a.sealed_secret_file.as_deref(), out.as_bytes())
}

fn raw(a: &SealArgs) -> Result<(), CliError> {
    let scope = a.scope.unwrap_or(Scope::Strict);
    let namespace = match (&a.namespace, scope) {
        (_, Scope::ClusterWide) => a.namespace.clone().unwrap_or_default(),
        (Some(n), _) => n.clone(),
        (None, _) => kubeconfig::default_namespace(a.kubeconfig.as_deref(), a.context.as_deref())
            .ok_or_else(|| {
            CliError::usage("--raw needs a namespace for this scope")
                .with_hint("pass -n NAMESPACE, or --scope cluster-wide")
        })?,
    };
    let name = match (&a.name, scope) {
        (Some(n), _) => n.clone(),
        (None, Scope::Strict) => {
            return Err(CliError::usage("--raw with strict scope needs --name")
                .with_hint("pass --name SECRET, or --scope namespace-wide / cluster-wide"));
        }
        (None, _) => String::new(),
    };
    if a.from_file.len() > 1 {
        return Err(CliError::usage("--raw takes at most one --from-file"));
    }
    let key = cert::load(a.cert.as_deref(), Some(&controller(a)))?;
    let value = match a.from_file.first() {
        Some(spec) => {
            let path = spec.split_once('=').map_or(spec.as_str(), |(_, p)| p);
            read_bytes(Path::new(path))?
        }
        None => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .map_err(|e| CliError::io_at("cannot read <stdin>", &e))?;
            buf
        }
    };
    let value = sealkit_keys::secret::Zeroizing::new(value);
    let target = Target {
        name,
        namespace,
        scope,
    };
    let out = seal_raw(&key, &target, &value).map_err(|e| CliError::input(e.to_string()))?;
    write_output(a.sealed_secret_file.as_deref(), out.as_bytes())
}

fn merge(a: &SealArgs, target: &Path) -> Result<(), CliError> {
    let name = target.display().to_string();
    let text = String::from_utf8(read_bytes(target)?)
        .map_err(|_| CliError::input(format!("{name}: not UTF-8 text")))?;
    let mut docs = parse_documents(&text).map_err(|e| parse_error(&name, &e))?;
    if docs.len() != 1 {
        return Err(CliError::input(format!(
            "{name}: --merge-into needs exactly one SealedSecret, found {} documents",
            docs.len()
        )));
    }
    let mut orig = docs.remove(0);
    let t = manifest::sealed_target(&orig.value).map_err(|e| doc_error(&name, &orig, &e))?;
    let key = cert::load(a.cert.as_deref(), Some(&controller(a)))?;
    let input = read_input(a.secret_file.as_deref())?;
    let secrets = parse_documents(&input.text).map_err(|e| parse_error(&input.name, &e))?;
    if secrets.len() != 1 {
        return Err(CliError::input(format!(
            "{}: --merge-into needs exactly one Secret, found {}",
            input.name,
            secrets.len()
        )));
    }
    let mut secret = secrets[0].value.clone();
    // The target file decides name and namespace; its scope too, unless --scope says otherwise
    // (kubeseal uses the input's annotations here, which silently seals with the wrong label).
    if let Some(meta) = secret.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("namespace");
    }
    let opts = SealOptions {
        scope: Some(a.scope.unwrap_or(t.scope)),
        name: Some(t.name.clone()),
        namespace: Some(t.namespace.clone()).filter(|n| !n.is_empty()),
        fallback_namespace: None,
        allow_empty_data: a.allow_empty_data,
    };
    let update =
        seal_secret(&secret, &opts, &key).map_err(|e| doc_error(&input.name, &secrets[0], &e))?;
    merge_into(&mut orig.value, &update).map_err(|e| doc_error(&name, &orig, &e))?;
    let format = a
        .format
        .map(to_format)
        .unwrap_or_else(|| Format::sniff(&text));
    write_atomic(target, emit(&orig.value, format).as_bytes(), None)
}

fn recovery_unseal(a: &SealArgs) -> Result<(), CliError> {
    check_not_same(a)?;
    let ring = load_keyring(&a.recovery_private_key)?;
    let input = read_input(a.secret_file.as_deref())?;
    let docs = parse_documents(&input.text).map_err(|e| parse_error(&input.name, &e))?;
    if docs.is_empty() {
        return Err(CliError::input(format!(
            "{}: no SealedSecret found (the input is empty)",
            input.name
        )));
    }
    let format = output_format(a);
    let mut out = String::new();
    let mut opened = 0;
    for doc in &docs {
        if doc.kind() != Some(manifest::SEALED_SECRET_KIND) {
            // Manifest files often mix kinds; say what was skipped rather than fail.
            eprintln!(
                "note: {}: skipped document {} ({} '{}'): not a SealedSecret",
                input.name,
                doc.index,
                doc.kind().unwrap_or("no kind"),
                doc.name().unwrap_or("?")
            );
            continue;
        }
        let secret = unseal(&doc.value, &ring).map_err(|e| doc_error(&input.name, doc, &e))?;
        out.push_str(&emit(&secret, format));
        opened += 1;
    }
    if opened == 0 {
        return Err(CliError::input(format!(
            "{}: no SealedSecret found",
            input.name
        )));
    }
    // The output holds plaintext: a new file is readable by its owner only.
    match a.sealed_secret_file.as_deref() {
        Some(p) if p.as_os_str() != "-" => write_atomic(p, out.as_bytes(), Some(0o600)),
        _ => write_output(None, out.as_bytes()),
    }
}

/// The output format for `-o`, for other commands.
pub fn format_or(f: Option<OutputFormat>, default: Format) -> Format {
    f.map(to_format).unwrap_or(default)
}
