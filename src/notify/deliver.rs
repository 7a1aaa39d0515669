//! The deliverer: claims due notifications, POSTs them signed, and records each attempt.
//!
//! Signing follows Stripe's and Slack's scheme: `X-Enrichd-Signature: sha256=<hex>` is the
//! HMAC-SHA256, keyed with the endpoint's secret, of `<timestamp>.<body>`, where the timestamp
//! (Unix seconds) is sent in `X-Enrichd-Timestamp`; a receiver recomputes it and refuses old
//! timestamps, so a captured delivery cannot be replayed later.

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;

use super::Notifier;
use super::config::masked;
use crate::store::{Attempt, AttemptOutcome, Delivery, Result, now_ms};

/// The header carrying the signature: `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Enrichd-Signature";
/// The header carrying the Unix time (seconds) the signature covers.
pub const TIMESTAMP_HEADER: &str = "X-Enrichd-Timestamp";
/// Deliveries claimed per pass.
const CLAIM: i64 = 16;
/// How much of a receiver's error answer is kept.
const BODY_EXCERPT: usize = 200;

/// `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What one POST came to, before the attempt count decides between retrying and giving up.
enum Answer {
    Delivered(u16),
    /// Trying again may work (5xx, 408, 429, a timeout); after at least this long, if the
    /// receiver said so.
    Retry {
        status: Option<u16>,
        error: String,
        after: Option<Duration>,
    },
    /// Trying again cannot work (the receiver refused the request, a certificate we do not trust).
    Refused {
        status: Option<u16>,
        error: String,
    },
}

impl Notifier {
    /// One pass: delivers the notifications that are due. Returns how many were delivered.
    pub async fn deliver_due(&self) -> Result<usize> {
        let timeout = Duration::from_secs_f64(self.config.timeout_seconds);
        // Long enough that it never runs out during a POST (bounded by the timeout).
        let lease_ms = (timeout * 2 + Duration::from_secs(30)).as_millis() as i64;
        let mut delivered = 0;
        loop {
            let due = self.store.claim_notifications(&self.owner, lease_ms, CLAIM).await?;
            if due.is_empty() {
                return Ok(delivered);
            }
            for d in due {
                delivered += usize::from(self.deliver(d).await?);
            }
        }
    }

    /// Makes one attempt at `d` and records it. Returns whether it was delivered.
    async fn deliver(&self, d: Delivery) -> Result<bool> {
        let started_at = now_ms();
        let clock = Instant::now();
        let answer = match self.config.webhooks.get(&d.endpoint) {
            Some(hook) => self.post(hook, &d).await,
            None => Answer::Refused {
                status: None,
                error: format!("endpoint {} is no longer in [notifications.webhooks]", d.endpoint),
            },
        };
        let attempt_no = d.attempts + 1;
        let (http_status, error, outcome) = match answer {
            Answer::Delivered(status) => (Some(status), None, AttemptOutcome::Delivered),
            Answer::Refused { status, error } => (status, Some(error), AttemptOutcome::Failed),
            Answer::Retry { status, error, after } => {
                if attempt_no >= i64::from(self.config.max_attempts) {
                    let error = format!("{error} (gave up after {attempt_no} attempts)");
                    (status, Some(error), AttemptOutcome::Failed)
                } else {
                    let wait = self.backoff(attempt_no, after);
                    (status, Some(error), AttemptOutcome::Retrying(now_ms() + wait.as_millis() as i64))
                }
            }
        };
        let target = self.config.webhooks.get(&d.endpoint).map(|h| masked(h.url.value())).unwrap_or_default();
        match (&outcome, &error) {
            (AttemptOutcome::Delivered, _) => {
                tracing::info!(run = d.run_id, event = %d.event, endpoint = %d.endpoint, %target, attempt = attempt_no, "notification delivered")
            }
            (_, error) => tracing::warn!(
                run = d.run_id, event = %d.event, endpoint = %d.endpoint, %target, attempt = attempt_no,
                error = error.as_deref().unwrap_or(""),
                gave_up = matches!(outcome, AttemptOutcome::Failed),
                "notification not delivered"
            ),
        }
        let attempt = Attempt {
            started_at,
            duration_ms: clock.elapsed().as_millis() as i64,
            http_status: http_status.map(i64::from),
            error,
            outcome,
        };
        let recorded = self.store.record_attempt(d.id, &self.owner, &attempt).await?;
        if !recorded {
            tracing::warn!(run = d.run_id, endpoint = %d.endpoint, "a notification's lease ran out during its delivery; another daemon has it");
        }
        Ok(recorded && outcome == AttemptOutcome::Delivered)
    }

    /// The wait after failed attempt `n` (1-based): `retry_base_ms` doubled per attempt, with ±20%
    /// jitter, at most `retry_max_seconds` — or longer when the receiver asked for it (up to a day).
    fn backoff(&self, n: i64, asked: Option<Duration>) -> Duration {
        let base = Duration::from_millis(self.config.retry_base_ms);
        let max = Duration::from_secs(self.config.retry_max_seconds);
        let doubled = base.saturating_mul(1u32 << (n - 1).clamp(0, 20) as u32).min(max);
        let jittered = doubled.mul_f64(rand::random_range(0.8..1.2));
        match asked {
            Some(asked) => jittered.max(asked.min(Duration::from_secs(86_400))),
            None => jittered,
        }
    }

    async fn post(&self, hook: &super::WebhookEndpoint, d: &Delivery) -> Answer {
        let timestamp = now_ms() / 1000;
        let body = d.payload.as_bytes().to_vec();
        let signature = sign(hook.secret.0.expose_secret().as_bytes(), timestamp, &body);
        let request = self
            .http
            .post(hook.url.value())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Enrichd-Event", d.event.as_str())
            .header("X-Enrichd-Delivery", d.id.to_string())
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body);
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                // Without the URL: it may carry the endpoint's secret.
                let e = enrichd_connector::http::transport_error(e, "POST");
                return if e.retryable {
                    Answer::Retry { status: None, error: e.message, after: None }
                } else {
                    Answer::Refused { status: None, error: e.message }
                };
            }
        };
        let status = response.status();
        let code = status.as_u16();
        if status.is_success() {
            return Answer::Delivered(code);
        }
        let after = enrichd_connector::http::retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        let excerpt: String =
            text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(BODY_EXCERPT).collect();
        let error = if excerpt.is_empty() { format!("HTTP {code}") } else { format!("HTTP {code}: {excerpt}") };
        if status.is_server_error() || matches!(code, 408 | 425 | 429) {
            Answer::Retry { status: Some(code), error, after }
        } else if status.is_redirection() {
            Answer::Refused {
                status: Some(code),
                error: format!("{error} (the receiver redirects; configure the address it redirects to)"),
            }
        } else {
            Answer::Refused { status: Some(code), error: format!("{error} (the receiver refused it; not retried)") }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_matches_a_known_value() {
        // HMAC-SHA256("secret", "1700000000.{}"), computed independently:
        // `printf '1700000000.{}' | openssl dgst -sha256 -hmac secret`.
        let sig = super::sign(b"secret", 1_700_000_000, b"{}");
        assert_eq!(sig, "sha256=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163");
        assert_ne!(sig, super::sign(b"other", 1_700_000_000, b"{}"));
    }
}
