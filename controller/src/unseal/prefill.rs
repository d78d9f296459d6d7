//! After a restart: which Secrets already hold their SealedSecret's values, from paginated
//! LISTs (one request per page) instead of one GET per object. What is kept per object is
//! small ([`Expected`], then a [`super::verified::Verified`] entry); a page of Secrets is
//! dropped, values and all, as soon as it is checked.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectList};
use sealkit_api::SealedSecret;

use super::http::AppState;
use super::plan::Expected;

/// SealedSecrets per page (a page is held whole, ciphertext and all, while it is read).
const SEALED_PAGE: u32 = 200;
/// Secrets per page: small, since a page of unrelated large Secrets (Helm releases hold up to
/// 1 MiB each) is held in memory while it is checked.
const SECRET_PAGE: u32 = 100;

/// Every page of a LIST, each handed to `each`; `Err` with the API's message when one fails.
async fn pages<K>(
    api: &Api<K>,
    selector: &Option<String>,
    limit: u32,
    mut each: impl FnMut(ObjectList<K>),
) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut params = ListParams::default().limit(limit);
    if let Some(sel) = selector {
        params = params.labels(sel);
    }
    loop {
        let page = api.list(&params).await?;
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        each(page);
        match next {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(()),
        }
    }
}

/// Fills `state.verified` from the SealedSecrets and Secrets the loop watches; returns how many
/// Secrets were found up to date. A failed LIST only means reads later (logged, not fatal).
pub(super) async fn run(
    sealed: &Api<SealedSecret>,
    secrets: &Api<Secret>,
    selector: &Option<String>,
    state: &AppState,
) -> usize {
    let mut expected = HashMap::new();
    let listed = pages(sealed, selector, SEALED_PAGE, |page| {
        for ss in page.items {
            let id = (ss.namespace().unwrap_or_default(), ss.name_any());
            expected.insert(id, Expected::of(&ss));
        }
    })
    .await;
    if let Err(e) = listed {
        tracing::warn!(error = %e, "cannot list SealedSecrets to find up-to-date Secrets");
        return 0;
    }
    if expected.is_empty() {
        return 0;
    }
    let keys = state.keys();
    let mut found = 0;
    let listed = pages(secrets, selector, SECRET_PAGE, |page| {
        found += state.verified.fill(&expected, page.items, &keys.keyring);
    })
    .await;
    if let Err(e) = listed {
        tracing::warn!(error = %e, "cannot list Secrets to find up-to-date ones");
    }
    found
}
