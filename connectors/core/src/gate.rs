//! A platform's request allowance as its own responses report it (`X-Rate-Limit-Remaining`,
//! `ratelimit-remaining` and `ratelimit-reset`, `X-RateLimit-Remaining`, ...). A connector holds one
//! per connection and asks it before every request, so every pipeline and task on the connection
//! shares it; because the figures come from the platform, several daemons on one account see each
//! other's use too. When what is left falls to a reserve (kept for the platform's own apps and
//! agents), requests wait for the window to reset instead of running into 429s.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The allowance last reported, counted down by the requests sent since.
#[derive(Debug, Default)]
pub struct Allowance {
    seen: Mutex<Option<Seen>>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    limit: u32,
    remaining: u32,
    resets_at: Instant,
}

/// How long a window lasts when the platform does not say when it resets.
const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

impl Allowance {
    pub fn new() -> Allowance {
        Allowance::default()
    }

    /// Records what a response reported: the limit per window, what is left of it, and (when
    /// reported) the seconds until the window resets.
    pub fn observe(&self, limit: u32, remaining: u32, reset: Option<Duration>) {
        let resets_at = Instant::now() + reset.unwrap_or(DEFAULT_WINDOW);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(Seen { limit, remaining, resets_at });
    }

    /// The requests kept back for others: a twentieth of the limit, at least one.
    fn reserve(limit: u32) -> u32 {
        (limit / 20).max(1)
    }

    /// How long the next request must wait (zero when it may go now); counts it as sent when it may.
    fn take(&self) -> Duration {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = seen.as_mut() else { return Duration::ZERO };
        let now = Instant::now();
        if now >= s.resets_at {
            // A new window: go, and learn the new figures from the answer.
            *seen = None;
            return Duration::ZERO;
        }
        if s.remaining <= Self::reserve(s.limit) {
            return s.resets_at - now;
        }
        s.remaining -= 1;
        Duration::ZERO
    }

    /// Waits until a request fits in the allowance.
    pub async fn acquire(&self) {
        loop {
            let wait = self.take();
            if wait.is_zero() {
                return;
            }
            tracing::debug!(
                wait_ms = wait.as_millis() as u64,
                "platform allowance at its reserve; waiting for the window to reset"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// What is left as last seen (for reports), if a response reported it.
    pub fn remaining(&self) -> Option<u32> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).map(|s| s.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_wait_at_the_reserve_until_the_window_resets() {
        let a = Allowance::new();
        assert!(a.take().is_zero(), "nothing reported: no wait");
        a.observe(40, 4, Some(Duration::from_secs(30)));
        assert!(a.take().is_zero());
        assert!(a.take().is_zero());
        // 2 left = the reserve of a 40 limit.
        let wait = a.take();
        assert!(wait > Duration::from_secs(29) && wait <= Duration::from_secs(30), "{wait:?}");
        a.observe(40, 40, Some(Duration::ZERO));
        assert!(a.take().is_zero(), "a reset window lets requests go");
    }
}
