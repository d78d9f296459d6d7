//! AWS Systems Manager Parameter Store: `GetParameters` (10 names per call) for explicit keys,
//! `GetParametersByPath` for `find`.

use super::super::{
    BoxFut, FetchError, Fetched, FindQuery, Provider, RemoteKey, SecretValue, compile,
};
use std::collections::HashMap;

use super::{Meter, classify};

pub(super) struct ParameterStore {
    pub(super) client: aws_sdk_ssm::Client,
    pub(super) qps: f64,
    pub(super) meter: Meter,
}

const PS: &str = "aws-parameterstore";

impl ParameterStore {
    async fn batch(&self, keys: &[RemoteKey]) -> Vec<Fetched> {
        let selector = |k: &RemoteKey| match &k.version {
            Some(v) => format!("{}:{v}", k.key),
            None => k.key.clone(),
        };
        self.meter.before("GetParameters", self.qps).await;
        let res = self
            .client
            .get_parameters()
            .set_names(Some(keys.iter().map(selector).collect()))
            .with_decryption(true)
            .send()
            .await;
        let out = match res {
            Ok(o) => {
                self.meter.after(PS, "GetParameters", "success");
                o
            }
            Err(e) => {
                let err = classify("GetParameters", &e);
                self.meter.after(PS, "GetParameters", err.class());
                return keys.iter().map(|k| (k.clone(), Err(err.clone()))).collect();
            }
        };
        // Answers are matched by `name:selector` (AWS echoes the selector), `name:version`, and
        // for an unversioned request the newest version returned under that name.
        let mut exact: HashMap<String, SecretValue> = HashMap::new();
        let mut newest: HashMap<&str, (i64, SecretValue)> = HashMap::new();
        for p in out.parameters() {
            let (Some(name), Some(value)) = (p.name(), p.value()) else {
                continue;
            };
            let v = SecretValue::new(value.as_bytes().to_vec());
            if let Some(sel) = p.selector() {
                exact.insert(format!("{name}{sel}"), v.clone());
            }
            exact.insert(format!("{name}:{}", p.version()), v.clone());
            if newest.get(name).is_none_or(|(ver, _)| *ver < p.version()) {
                newest.insert(name, (p.version(), v));
            }
        }
        keys.iter()
            .map(|k| {
                let hit = match &k.version {
                    Some(_) => exact.get(&selector(k)).cloned(),
                    None => newest.get(k.key.as_str()).map(|(_, v)| v.clone()),
                };
                (
                    k.clone(),
                    hit.ok_or_else(|| FetchError::NotFound(k.to_string())),
                )
            })
            .collect()
    }
}

impl Provider for ParameterStore {
    fn name(&self) -> &'static str {
        PS
    }

    fn get_many<'a>(&'a self, keys: &'a [RemoteKey]) -> BoxFut<'a, Vec<Fetched>> {
        Box::pin(async move {
            futures::future::join_all(keys.chunks(10).map(|c| self.batch(c)))
                .await
                .into_iter()
                .flatten()
                .collect()
        })
    }

    fn find<'a>(
        &'a self,
        query: &'a FindQuery,
    ) -> BoxFut<'a, Result<Vec<(String, SecretValue)>, FetchError>> {
        Box::pin(async move {
            if !query.tags.is_empty() {
                return Err(FetchError::Other(
                    "find.tags is not supported for Parameter Store yet (use find.path)".into(),
                ));
            }
            let re = compile(query.name_regexp.as_deref())?;
            let path = query.path.clone().unwrap_or_else(|| "/".into());
            let mut out = Vec::new();
            let mut token = None;
            loop {
                self.meter.before("GetParametersByPath", self.qps).await;
                let res = self
                    .client
                    .get_parameters_by_path()
                    .path(&path)
                    .recursive(true)
                    .with_decryption(true)
                    .set_next_token(token.take())
                    .send()
                    .await;
                let page = match res {
                    Ok(o) => {
                        self.meter.after(PS, "GetParametersByPath", "success");
                        o
                    }
                    Err(e) => {
                        let err = classify("GetParametersByPath", &e);
                        self.meter.after(PS, "GetParametersByPath", err.class());
                        return Err(err);
                    }
                };
                for p in page.parameters() {
                    if let (Some(n), Some(v)) = (p.name(), p.value())
                        && re.as_ref().is_none_or(|r| r.is_match(n))
                    {
                        out.push((n.to_string(), SecretValue::new(v.as_bytes().to_vec())));
                    }
                }
                match page.next_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_string()),
                    _ => break,
                }
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(out)
        })
    }
}
