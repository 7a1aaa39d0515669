//! Rate limits per provider credential: requests and tokens per minute (`governor`, GCRA), shared
//! by every pipeline that uses the credential.
//!
//! Limits come from config (`requests_per_minute`, `tokens_per_minute`) or, when absent, are learned
//! from the provider's headers (`x-ratelimit-limit-requests`, `anthropic-ratelimit-requests-limit`).
//! Headers also tighten: a response saying nothing remains until a reset time closes the gate until
//! then, and a 429 closes it for its `retry-after` (or a short backoff) — for every request on the
//! credential, not only the one refused.
//!
//! Several daemons on one database split each limit: every daemon heartbeats into the store, and
//! each gate runs at `limit / live daemons` (see [`RateGate::set_share`]).

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::HeaderMap;

/// Where a per-minute figure came from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Source {
    Configured(f64),
    Learned(f64),
}

impl Source {
    fn per_minute(self) -> f64 {
        match self {
            Source::Configured(v) | Source::Learned(v) => v,
        }
    }
}

struct Limit {
    source: Source,
    share: u32,
    limiter: DefaultDirectRateLimiter,
    burst: u32,
}

impl Limit {
    fn new(source: Source, share: u32) -> Limit {
        let per_second = (source.per_minute() / 60.0 / share.max(1) as f64).max(1e-6);
        // Half a second's worth of burst. Providers enforce per-minute limits over shorter windows, on
        // their own clock, and requests reach them with varying delay: keeping half of a second's
        // allowance in reserve absorbs that jitter, so a configured limit never draws a 429.
        let burst = ((per_second / 2.0).floor() as u32).max(1);
        let quota = Quota::with_period(Duration::from_secs_f64(1.0 / per_second))
            .expect("a positive period")
            .allow_burst(NonZeroU32::new(burst).expect("burst is at least 1"));
        Limit { source, share, limiter: RateLimiter::direct(quota), burst }
    }
}

#[derive(Default)]
struct State {
    requests: Option<std::sync::Arc<Limit>>,
    tokens: Option<std::sync::Arc<Limit>>,
    closed_until: Option<Instant>,
    share: u32,
    rate_limited: u64,
}

/// The gate every request on one credential passes.
pub struct RateGate {
    name: String,
    state: Mutex<State>,
}

impl RateGate {
    pub fn new(name: &str, requests_per_minute: Option<f64>, tokens_per_minute: Option<f64>) -> RateGate {
        let state = State {
            requests: requests_per_minute.filter(|v| *v > 0.0).map(|v| Limit::new(Source::Configured(v), 1).into()),
            tokens: tokens_per_minute.filter(|v| *v > 0.0).map(|v| Limit::new(Source::Configured(v), 1).into()),
            share: 1,
            ..State::default()
        };
        RateGate { name: name.to_owned(), state: Mutex::new(state) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a request estimated at `tokens` tokens may go.
    pub async fn acquire(&self, tokens: u32) {
        loop {
            let (closed, requests, token_limit) = {
                let s = self.lock();
                (s.closed_until, s.requests.clone(), s.tokens.clone())
            };
            if let Some(until) = closed {
                let now = Instant::now();
                if until > now {
                    tokio::time::sleep(until - now).await;
                    continue;
                }
            }
            if let Some(limit) = requests {
                limit.limiter.until_ready().await;
            }
            if let Some(limit) = token_limit {
                // A request larger than the burst waits for a full burst instead of failing.
                let n = NonZeroU32::new(tokens.clamp(1, limit.burst)).expect("at least 1");
                let _ = limit.limiter.until_n_ready(n).await;
            }
            // The gate may have closed while we waited (another request got a 429).
            match self.lock().closed_until {
                Some(until) if until > Instant::now() => continue,
                _ => return,
            }
        }
    }

    /// Splits the limits between `daemons` processes sharing the credential.
    pub fn set_share(&self, daemons: u32) {
        let daemons = daemons.max(1);
        let mut guard = self.lock();
        let s = &mut *guard;
        if s.share == daemons {
            return;
        }
        s.share = daemons;
        for slot in [&mut s.requests, &mut s.tokens] {
            if let Some(limit) = slot.as_ref() {
                *slot = Some(Limit::new(limit.source, daemons).into());
            }
        }
    }

    /// The requests per minute this process may send, when known.
    pub fn requests_per_minute(&self) -> Option<f64> {
        let s = self.lock();
        s.requests.as_ref().map(|l| l.source.per_minute() / l.share as f64)
    }

    /// 429s this gate has seen.
    pub fn rate_limited(&self) -> u64 {
        self.lock().rate_limited
    }

    /// Closes the gate for `wait` (a 429's `retry-after`, or a short backoff without one).
    pub fn rate_limited_for(&self, wait: Option<Duration>) {
        let wait = wait.unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(120));
        let until = Instant::now() + wait;
        let mut s = self.lock();
        s.rate_limited += 1;
        if s.closed_until.is_none_or(|u| u < until) {
            s.closed_until = Some(until);
        }
        tracing::warn!(provider = %self.name, wait_ms = wait.as_millis() as u64, "rate limited: holding every request on this credential");
    }

    /// Learns limits from a response's headers and closes the gate when they say nothing remains.
    pub fn observe(&self, headers: &HeaderMap) {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let number = |name: &str| get(name).and_then(|v| v.trim().parse::<f64>().ok());
        let reset = |name: &str| get(name).and_then(parse_reset);
        let requests_limit =
            number("x-ratelimit-limit-requests").or_else(|| number("anthropic-ratelimit-requests-limit"));
        let tokens_limit = number("x-ratelimit-limit-tokens").or_else(|| number("anthropic-ratelimit-tokens-limit"));
        let exhausted = [
            ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
            ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
            ("anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-reset"),
            ("anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset"),
        ]
        .into_iter()
        .filter(|(remaining, _)| number(remaining).is_some_and(|r| r < 1.0))
        .filter_map(|(_, at)| reset(at))
        .max();
        let mut guard = self.lock();
        let s = &mut *guard;
        let share = s.share;
        for (slot, learned) in [(&mut s.requests, requests_limit), (&mut s.tokens, tokens_limit)] {
            let Some(limit) = learned.filter(|v| *v > 0.0) else { continue };
            let replace = match slot.as_ref().map(|l| l.source) {
                None => true,
                Some(Source::Learned(old)) => (old - limit).abs() > f64::EPSILON,
                // The provider's figure wins when it is lower than what config says.
                Some(Source::Configured(configured)) => limit < configured,
            };
            if replace {
                tracing::info!(provider = %self.name, per_minute = limit, "rate limit learned from response headers");
                *slot = Some(Limit::new(Source::Learned(limit), share).into());
            }
        }
        if let Some(wait) = exhausted {
            let until = Instant::now() + wait.min(Duration::from_secs(120));
            if s.closed_until.is_none_or(|u| u < until) {
                s.closed_until = Some(until);
            }
        }
    }
}

/// A reset time: a Go duration (`12ms`, `1.5s`, `6m0s`, OpenAI) or an RFC 3339 instant (Anthropic).
fn parse_reset(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(value) {
        let at = SystemTime::from(at);
        return Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO));
    }
    parse_go_duration(value)
}

fn parse_go_duration(value: &str) -> Option<Duration> {
    let mut total = 0.0;
    let mut rest = value;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let number: f64 = rest[..split].parse().ok()?;
        rest = &rest[split..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_end..];
    }
    Some(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reset_headers() {
        assert_eq!(parse_reset("12ms"), Some(Duration::from_millis(12)));
        assert_eq!(parse_reset("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_reset("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_reset("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_reset("soon"), None);
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc3339();
        let d = parse_reset(&later).unwrap();
        assert!(d > Duration::from_secs(28) && d <= Duration::from_secs(30), "{d:?}");
        assert_eq!(parse_reset("2001-01-01T00:00:00Z"), Some(Duration::ZERO));
    }

    #[test]
    fn learns_limits_and_closes_when_nothing_remains() {
        let gate = RateGate::new("p", None, None);
        assert_eq!(gate.requests_per_minute(), None);
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-limit-requests", "600".parse().unwrap());
        h.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
        h.insert("x-ratelimit-reset-requests", "2s".parse().unwrap());
        gate.observe(&h);
        assert_eq!(gate.requests_per_minute(), Some(600.0));
        let closed = gate.lock().closed_until.unwrap();
        assert!(closed > Instant::now() + Duration::from_millis(1500));
        gate.set_share(3);
        assert_eq!(gate.requests_per_minute(), Some(200.0));
    }

    #[test]
    fn configured_limits_only_tighten() {
        let gate = RateGate::new("p", Some(120.0), None);
        let mut h = HeaderMap::new();
        h.insert("anthropic-ratelimit-requests-limit", "1000".parse().unwrap());
        gate.observe(&h);
        assert_eq!(gate.requests_per_minute(), Some(120.0), "a higher provider figure does not loosen config");
        h.insert("anthropic-ratelimit-requests-limit", "60".parse().unwrap());
        gate.observe(&h);
        assert_eq!(gate.requests_per_minute(), Some(60.0));
    }

    #[tokio::test]
    async fn paces_requests_at_the_limit() {
        // 600/min = 10/s with a burst of 5: 30 requests take about 2.5 s.
        let gate = RateGate::new("p", Some(600.0), None);
        let start = Instant::now();
        for _ in 0..30 {
            gate.acquire(1).await;
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(2400), "{took:?}");
    }
}
