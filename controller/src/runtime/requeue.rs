//! When to come back: jitter (so objects with the same interval do not move in lockstep after a
//! restart), and capped exponential backoff after failures that never gives up
//! (sealed-secrets #1599).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A uniform random number in [0, 1).
fn unit() -> f64 {
    let mut r = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut r);
    f64::from(u32::from_le_bytes(r)) / (f64::from(u32::MAX) + 1.0)
}

/// `d` plus up to `fraction` of it, the addition at most `cap`.
pub fn jitter_up(d: Duration, fraction: f64, cap: Duration) -> Duration {
    d + d.mul_f64(fraction * unit()).min(cap)
}

/// `d` within ±`fraction` of it.
pub fn jitter_around(d: Duration, fraction: f64) -> Duration {
    d.mul_f64(1.0 - fraction + 2.0 * fraction * unit())
}

/// 2^n seconds from 1 s, capped at `cap`, ±20 %.
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    jitter_around(Duration::from_secs(1u64 << failures.min(16)).min(cap), 0.2)
}

/// The longest wait after failures.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// Consecutive failures per object (by uid), for [`backoff`].
///
/// Only a failure of the attempt the backoff scheduled (or a later one) counts: an object's own
/// status write, or any other event, wakes its reconcile before the retry is due, and a failure
/// then must not double the wait (seven status-triggered failures in a few seconds would push a
/// provider outage's retry out to minutes). Such an early failure keeps the retry where it was.
#[derive(Default)]
pub struct Failures(Mutex<HashMap<String, Failing>>);

/// One object's failures: how many counted, and when the scheduled retry is due.
struct Failing {
    count: u32,
    due: Instant,
}

impl Failures {
    /// Records a failure of `uid`; returns how long to wait before the next attempt (capped at
    /// [`BACKOFF_CAP`], jittered).
    pub fn failed(&self, uid: &str) -> Duration {
        self.failed_at(uid, Instant::now())
    }

    fn failed_at(&self, uid: &str, now: Instant) -> Duration {
        let Ok(mut all) = self.0.lock() else {
            return backoff(1, BACKOFF_CAP);
        };
        let f = all
            .entry(uid.to_string())
            .or_insert(Failing { count: 0, due: now });
        if f.count > 0 && now < f.due {
            return f.due - now;
        }
        f.count += 1;
        let wait = backoff(f.count, BACKOFF_CAP);
        f.due = now + wait;
        wait
    }

    /// Forgets the failures of `uid` after a success.
    pub fn succeeded(&self, uid: &str) {
        if let Ok(mut f) = self.0.lock() {
            f.remove(uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let cap = Duration::from_secs(300);
        for n in 0..40 {
            let d = backoff(n, cap);
            assert!(
                d <= cap.mul_f64(1.2) && d >= Duration::from_millis(800),
                "{n}: {d:?}"
            );
        }
        assert!(backoff(0, cap) < Duration::from_secs(2));
        // Failures of the scheduled retries double the wait...
        let f = Failures::default();
        let mut now = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..12 {
            let w = f.failed_at("u", now);
            waits.push(w);
            now += w;
        }
        assert!(waits[11] > waits[0]);
        assert!(waits[5] > Duration::from_secs(40), "{waits:?}");
        f.succeeded("u");
        assert!(f.failed("u") <= Duration::from_millis(2400));
    }

    #[test]
    fn failures_before_the_retry_is_due_do_not_escalate() {
        let f = Failures::default();
        let t0 = Instant::now();
        let first = f.failed_at("u", t0);
        // Woken by its own status write 10 ms later, failing again, seven times: the retry
        // stays where the first failure put it.
        for i in 1..=7 {
            let w = f.failed_at("u", t0 + Duration::from_millis(10 * i));
            assert_eq!(w, first - Duration::from_millis(10 * i));
        }
        // The scheduled retry fails: now the wait grows.
        let second = f.failed_at("u", t0 + first);
        assert!(second > first.mul_f64(1.2), "{first:?} then {second:?}");
        // Other objects are not affected.
        assert!(f.failed_at("v", t0) <= Duration::from_millis(2400));
    }

    #[test]
    fn jitter_stays_in_its_bounds() {
        for _ in 0..200 {
            let d = jitter_up(Duration::from_secs(100), 0.1, Duration::from_secs(5));
            assert!(
                d >= Duration::from_secs(100) && d <= Duration::from_secs(105),
                "{d:?}"
            );
            let a = jitter_around(Duration::from_secs(100), 0.1);
            assert!(
                a >= Duration::from_secs(90) && a <= Duration::from_secs(110),
                "{a:?}"
            );
        }
    }
}
