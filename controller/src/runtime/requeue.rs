//! When to come back: jitter (so objects with the same interval do not move in lockstep after a
//! restart), and capped exponential backoff after failures that never gives up
//! (sealed-secrets #1599).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

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
#[derive(Default)]
pub struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    /// Records a failure of `uid`; returns how long to wait before the next attempt (capped at
    /// [`BACKOFF_CAP`], jittered).
    pub fn failed(&self, uid: &str) -> Duration {
        let n = self
            .0
            .lock()
            .map(|mut f| {
                let c = f.entry(uid.to_string()).or_insert(0);
                *c += 1;
                *c
            })
            .unwrap_or(1);
        backoff(n, BACKOFF_CAP)
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
        let f = Failures::default();
        let waits: Vec<_> = (0..12).map(|_| f.failed("u")).collect();
        assert!(waits[11] > waits[0]);
        f.succeeded("u");
        assert!(f.failed("u") <= Duration::from_millis(2400));
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
