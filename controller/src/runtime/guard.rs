//! Guards for what tenants write: durations from manifests are validated and bounded before any
//! arithmetic (a `refreshInterval` of `18446744073709551615s` used to overflow an `Instant`
//! and abort the process), and a reconcile that panics anyway is contained: its object gets an
//! error, every other object and loop keeps running.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;

/// The longest duration a manifest may ask for (a year): far beyond any useful interval, far
/// below anything that overflows time arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// A duration field of a manifest (`1h`, `15m`, `90s`, `1h30m`, `0`), checked: `field` names it
/// in the error (e.g. `spec.interval`).
pub fn duration(field: &str, value: &str) -> Result<Duration, String> {
    let v = value.trim();
    if v == "0" {
        return Ok(Duration::ZERO);
    }
    let shown = quoted(value);
    let d = humantime::parse_duration(v)
        .map_err(|_| format!("{field} {shown} is not a duration like 1h, 15m or 90s"))?;
    if d > MAX_DURATION {
        return Err(format!(
            "{field} {shown} is too long (at most {}h)",
            MAX_DURATION.as_secs() / 3600
        ));
    }
    Ok(d)
}

/// The longest part of a tenant's value a message quotes (characters).
const QUOTED: usize = 40;

/// `value` quoted for a status message: at most [`QUOTED`] characters of it, so a tenant's
/// kilobyte of text does not become a kilobyte of status (found by the `kustomization_spec`
/// fuzz target).
fn quoted(value: &str) -> String {
    match value.char_indices().nth(QUOTED) {
        Some((cut, _)) => format!("{:?}… ({} bytes)", &value[..cut], value.len()),
        None => format!("{value:?}"),
    }
}

/// An optional duration field: `default` when absent or empty.
pub fn duration_or(
    field: &str,
    value: Option<&str>,
    default: Duration,
) -> Result<Duration, String> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) => duration(field, v),
        None => Ok(default),
    }
}

/// What a contained panic says: where it happened, and its message only when the message is a
/// literal of our code (a formatted message could carry a value, so it is never shown).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match payload.downcast_ref::<&'static str>() {
        Some(s) => format!("a bug: the reconcile panicked ({s})"),
        None => "a bug: the reconcile panicked (message withheld: it may hold a value)".into(),
    }
}

/// Runs one reconcile; a panic inside it becomes an `Err` with [`panic_message`].
pub async fn contained<T>(fut: impl Future<Output = T>) -> Result<T, String> {
    AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .map_err(|p| panic_message(&*p))
}

/// Installs a panic hook that logs where a panic happened but never a formatted message (which
/// could carry a secret value), then lets the default behaviour (unwinding) go on.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&'static str>()
            .copied()
            .unwrap_or("<message withheld>");
        tracing::error!(%location, message = msg, "panic");
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_bad_duration_is_quoted_in_part() {
        let long = format!("36666\t{}", "[]2\"#2\"".repeat(200));
        let e = duration("spec.interval", &long).expect_err("not a duration");
        assert!(e.len() < 200, "{} bytes: {e}", e.len());
        assert!(e.starts_with("spec.interval \"36666\\t[]2"), "{e}");
        assert!(e.contains(&format!("({} bytes)", long.len())), "{e}");
        let e = duration("spec.interval", "2x").expect_err("not a duration");
        assert_eq!(
            e,
            "spec.interval \"2x\" is not a duration like 1h, 15m or 90s"
        );
    }

    #[test]
    fn durations_are_bounded_and_named() {
        assert_eq!(
            duration("spec.interval", "5m"),
            Ok(Duration::from_secs(300))
        );
        assert_eq!(
            duration("spec.interval", "1h30m"),
            Ok(Duration::from_secs(5400))
        );
        assert_eq!(duration("spec.interval", "0"), Ok(Duration::ZERO));
        let e = duration("spec.refreshInterval", "18446744073709551615s").unwrap_err();
        assert!(
            e.contains("spec.refreshInterval") && e.contains("too long"),
            "{e}"
        );
        let e = duration("spec.timeout", "soon").unwrap_err();
        assert!(e.contains("spec.timeout"), "{e}");
        assert_eq!(
            duration_or("spec.timeout", None, Duration::from_secs(7)),
            Ok(Duration::from_secs(7))
        );
        assert_eq!(
            duration_or("spec.timeout", Some(" "), Duration::from_secs(7)),
            Ok(Duration::from_secs(7))
        );
    }

    #[tokio::test]
    async fn a_panic_is_contained_and_its_formatted_message_withheld() {
        let secret = String::from("hunter2");
        let r = contained(async move {
            if !secret.is_empty() {
                panic!("value was {secret}");
            }
        })
        .await;
        let e = r.unwrap_err();
        assert!(!e.contains("hunter2") && e.contains("withheld"), "{e}");
        let r = contained(async { panic!("static text") }).await;
        assert!(r.unwrap_err().contains("static text"));
        assert_eq!(contained(async { 7 }).await, Ok(7));
    }
}
