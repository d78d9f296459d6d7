//! When to refresh: `refreshInterval` and `refreshPolicy` as ESO reads them, a metadata
//! change forcing a refresh, a missing or hand-edited Secret healed, jitter so refreshes spread
//! out after a restart, and how old a shared cached value a refresh may use.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use sealkit_api::{ExternalSecret, StatusCondition};

use super::reconcile::{DATA_HASH_ANNOTATION, MANAGED_LABEL};
use super::sync::{self, SyncError};

/// What the loop should do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Come back after this long (a refresh is due then).
    After(Duration),
    /// Nothing until the object changes.
    Wait,
}

pub(crate) fn parse_interval(s: Option<&str>) -> Result<Duration, SyncError> {
    crate::runtime::guard::duration_or("spec.refreshInterval", s, Duration::from_secs(3600))
        .map_err(|message| SyncError {
            message,
            not_found: false,
        })
}

/// `<generation>-<hash of labels and annotations>`: any metadata change forces a refresh.
pub fn synced_resource_version(es: &ExternalSecret) -> String {
    let meta = serde_json::json!([es.metadata.labels, es.metadata.annotations]);
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, meta.to_string().as_bytes());
    let h: String = d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{}-{h}", es.metadata.generation.unwrap_or(0))
}

pub(crate) fn target_name(es: &ExternalSecret) -> String {
    es.spec
        .target
        .as_ref()
        .and_then(|t| t.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| es.name_any())
}

pub(crate) fn is_valid(secret: Option<&Secret>) -> bool {
    let Some(s) = secret else { return false };
    let managed = s
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_LABEL))
        .is_some_and(|v| v == "true");
    let hash = s
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DATA_HASH_ANNOTATION));
    managed && hash.is_some_and(|h| *h == sync::data_hash(&s.data.clone().unwrap_or_default()))
}

pub(crate) fn ready(es: &ExternalSecret) -> Option<&StatusCondition> {
    es.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
}

/// Whether a refresh is due now, and when the next one will be.
pub fn due(
    es: &ExternalSecret,
    secret: Option<&Secret>,
    now: SystemTime,
) -> Result<(bool, Next), SyncError> {
    let interval = parse_interval(es.spec.refresh_interval.as_deref())?;
    let policy = es.spec.refresh_policy.as_deref().unwrap_or("Periodic");
    let status = es.status.as_ref();
    let synced_before = status.and_then(|s| s.refresh_time.as_ref()).is_some();
    let version_changed = status.and_then(|s| s.synced_resource_version.as_deref())
        != Some(&synced_resource_version(es));
    let failing = ready(es).is_none_or(|c| c.status != "True");
    let creation_none = es
        .spec
        .target
        .as_ref()
        .and_then(|t| t.creation_policy.as_deref())
        == Some("None");
    let secret_ok = creation_none || is_valid(secret);
    let (due, next) = match policy {
        "CreatedOnce" => (!synced_before || !secret_ok, Next::Wait),
        "OnChange" => (version_changed || !secret_ok || failing, Next::Wait),
        "Periodic" => {
            if interval.is_zero() {
                (version_changed || !secret_ok || failing, Next::Wait)
            } else {
                let last = status.and_then(|s| s.refresh_time.as_ref()).map(|t| {
                    SystemTime::UNIX_EPOCH + Duration::from_secs(t.0.as_second().max(0) as u64)
                });
                let elapsed = last.and_then(|l| now.duration_since(l).ok());
                let expired = elapsed.is_none_or(|e| e >= interval);
                let due = expired || version_changed || !secret_ok || failing;
                let wait = if due {
                    interval
                } else {
                    interval.saturating_sub(elapsed.unwrap_or_default())
                };
                (due, Next::After(jitter(wait, interval)))
            }
        }
        other => {
            return Err(SyncError {
                message: format!(
                    "spec.refreshPolicy {other:?} is not Periodic, OnChange or CreatedOnce"
                ),
                not_found: false,
            });
        }
    };
    Ok((due, next))
}

/// Adds up to +10 % of the interval (at most 5 minutes), so refreshes after a restart spread out
/// instead of hitting the provider at the same instant (ESO #4231).
fn jitter(wait: Duration, interval: Duration) -> Duration {
    let spread = crate::runtime::requeue::jitter_up(interval, 0.1, Duration::from_secs(300));
    wait + spread.saturating_sub(interval)
}

/// How old a shared value a refresh of `es` may use: its `refreshInterval` for periodic
/// refreshes (ExternalSecrets due in the same wave still share one fetch; a value changed in the
/// store reaches the Secret within one interval), none otherwise (a refresh on a change, or of
/// an ExternalSecret that never refreshes, reads the store as it is now; only requests in
/// flight are shared).
pub(crate) fn max_value_age(es: &ExternalSecret) -> Duration {
    let periodic = es.spec.refresh_policy.as_deref().unwrap_or("Periodic") == "Periodic";
    match parse_interval(es.spec.refresh_interval.as_deref()) {
        Ok(interval) if periodic => interval,
        _ => Duration::ZERO,
    }
}
