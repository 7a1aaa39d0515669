//! Backoff for retries, shared by connectors (a page fetch that hit a 503) and the engine (an item
//! whose enrichment failed is scheduled again later).

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with full jitter: a random wait in `[base·2^(attempt-1) / 2, base·2^(attempt-1)]`,
/// capped at `max`, and never shorter than what the platform asked for in `retry_after`.
///
/// Half the window is kept fixed so a retry never fires immediately; the other half is random so that
/// many items failing together do not come back together.
pub fn backoff(attempt: u32, base: Duration, max: Duration, retry_after: Option<Duration>) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let ceiling = base.saturating_mul(1u32 << exp).min(max);
    let half = ceiling / 2;
    let jitter = if half.is_zero() { Duration::ZERO } else { rand::rng().random_range(Duration::ZERO..=half) };
    let wait = half + jitter;
    match retry_after {
        Some(asked) if asked > wait => asked,
        _ => wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jittered_bounds() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(60);
        for attempt in 1..=8 {
            let ceiling = base * (1 << (attempt - 1));
            for _ in 0..50 {
                let wait = backoff(attempt, base, max, None);
                assert!(
                    wait >= ceiling / 2 && wait <= ceiling,
                    "attempt {attempt}: {wait:?} outside [{:?}, {ceiling:?}]",
                    ceiling / 2
                );
            }
        }
    }

    #[test]
    fn is_capped_and_honours_retry_after() {
        let wait = backoff(40, Duration::from_secs(1), Duration::from_secs(30), None);
        assert!(wait <= Duration::from_secs(30) && wait >= Duration::from_secs(15));
        let asked = Duration::from_secs(120);
        assert_eq!(backoff(1, Duration::from_secs(1), Duration::from_secs(30), Some(asked)), asked);
    }

    #[test]
    fn jitter_spreads_retries() {
        let waits: std::collections::HashSet<_> =
            (0..20).map(|_| backoff(5, Duration::from_secs(1), Duration::from_secs(600), None)).collect();
        assert!(waits.len() > 10, "20 retries got only {} distinct waits", waits.len());
    }
}
