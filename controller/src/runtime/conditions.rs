//! Conditions, built one way for every kind: `True`/`False`, and a `lastTransitionTime` that is
//! kept while the status stays and set to now when it changes. The CRDs we mirror each have
//! their own condition type (Flux's is metav1.Condition, ESO's and sealed-secrets' are their
//! own), so each loop fills its type from [`transition`]; Flux-style ones come whole from
//! [`condition`].

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// `"True"` or `"False"`.
pub fn status_word(ok: bool) -> &'static str {
    if ok { "True" } else { "False" }
}

/// Now, as a condition time.
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// The `lastTransitionTime` of a condition whose status becomes `status`, given the previous
/// condition of that type (its status and transition time), if any.
pub fn transition(previous: Option<(&str, Option<&Time>)>, status: &str) -> Time {
    match previous {
        Some((prev, Some(at))) if prev == status => at.clone(),
        _ => now(),
    }
}

/// A metav1 condition of `type_`, given the object's previous conditions.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    previous: &[Condition],
) -> Condition {
    let status = status_word(ok);
    let prev = previous
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), Some(&c.last_transition_time)));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: transition(prev, status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_time_moves_only_with_the_status() {
        let then = Time(k8s_openapi::jiff::Timestamp::from_second(1_000_000).expect("ts"));
        assert_eq!(transition(Some(("True", Some(&then))), "True"), then);
        assert_ne!(transition(Some(("False", Some(&then))), "True"), then);
        assert_ne!(transition(None, "True"), then);
        let c = condition("Ready", true, "Ok", "", Some(2), &[]);
        let again = condition("Ready", true, "Ok", "x", Some(3), std::slice::from_ref(&c));
        assert_eq!(again.last_transition_time, c.last_transition_time);
        assert_eq!(
            (again.status.as_str(), again.observed_generation),
            ("True", Some(3))
        );
    }
}
