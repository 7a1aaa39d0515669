//! The HTTP machinery every connector uses: one client setup, one place that turns transport errors
//! and HTTP statuses into classified [`ConnectorError`]s, `Retry-After` parsing, and retries for
//! idempotent reads.

use std::future::Future;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::ConnectorError;
use crate::retry::backoff;

/// A client with the timeouts a daemon needs: nothing may hang forever. TLS is rustls with the
/// `ring` provider (installed here once for the process).
pub fn client(timeout: Duration) -> reqwest::Client {
    builder(timeout).build().expect("the HTTP client configuration is static and valid")
}

/// The settings of [`client`], for a connector that adds its own (a CA certificate to trust).
pub fn builder(timeout: Duration) -> reqwest::ClientBuilder {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        // Another part of the process may have installed one already; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .user_agent(concat!("enrichd/", env!("CARGO_PKG_VERSION")))
}

/// Sends `request` and returns the response if its status is 2xx. `what` names the call in errors
/// ("GET products page 3"). URLs are left out of errors because platforms put keys in query strings.
pub async fn send(request: RequestBuilder, what: &str) -> Result<Response, ConnectorError> {
    let response = request.send().await.map_err(|e| transport_error(e, what))?;
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap_or_default();
    Err(classify(status, &headers, &body, what))
}

/// Reads a JSON body. A body that does not parse is treated as transient: it is what a proxy error
/// page or a truncated response looks like.
pub async fn json<T: DeserializeOwned>(response: Response, what: &str) -> Result<T, ConnectorError> {
    let bytes = response.bytes().await.map_err(|e| transport_error(e, what))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let mut err = ConnectorError::transient(format!("{what}: response body is not the expected JSON: {e}"));
        err.code = Some("malformed_body".into());
        err
    })
}

/// Maps a transport failure (timeout, refused connection, reset) to a retryable error without the URL.
pub fn transport_error(error: reqwest::Error, what: &str) -> ConnectorError {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "broken response body"
    } else {
        "request failed"
    };
    let code = if error.is_timeout() { "timeout" } else { "transport" };
    let detail = error.without_url();
    let mut err = ConnectorError::transient(format!("{what}: {kind}: {detail}"));
    err.code = Some(code.into());
    err
}

/// Classifies a non-2xx response. 408, 425, 429 and 5xx are retryable; everything else is not.
/// The message carries the status and the platform's error code and message when the body has them.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str, what: &str) -> ConnectorError {
    let retryable = matches!(status.as_u16(), 408 | 425 | 429) || status.is_server_error();
    let (code, detail) = platform_error(body);
    let mut message = format!("{what}: HTTP {}", status.as_u16());
    if let Some(code) = &code {
        message.push(' ');
        message.push_str(code);
    }
    match detail {
        Some(detail) => {
            message.push_str(": ");
            message.push_str(&detail);
        }
        None if !body.trim().is_empty() && code.is_none() => {
            message.push_str(": ");
            message.push_str(&snippet(body));
        }
        None => {}
    }
    let retry_after = retry_after(headers).or_else(|| google_retry_delay(body));
    ConnectorError { message, retryable, status: Some(status.as_u16()), code, retry_after }
}

/// The wait a Google API asked for in its error body: `google.rpc.RetryInfo.retryDelay` (`"2s"`,
/// `"0.5s"`) among the `error.details`. Google sends no `Retry-After` header.
fn google_retry_delay(body: &str) -> Option<Duration> {
    let value: Value = serde_json::from_str(body).ok()?;
    value["error"]["details"].as_array()?.iter().find_map(|d| {
        let retry_info = d["@type"].as_str()?.ends_with("google.rpc.RetryInfo");
        let seconds = d["retryDelay"].as_str()?.trim().strip_suffix('s')?.parse::<f64>().ok()?;
        (retry_info && seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
    })
}

/// The wait a server asked for: `retry-after-ms` (OpenAI), `Retry-After` in seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// Retries an idempotent call (a read) on retryable errors, up to `attempts` times in all, waiting
/// with backoff and honouring `Retry-After`. Writes are never retried here: the engine owns that.
pub async fn with_retries<T, F, Fut>(attempts: u32, base: Duration, mut call: F) -> Result<T, ConnectorError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ConnectorError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if e.retryable && attempt < attempts => {
                let wait = backoff(attempt, base, Duration::from_secs(30), e.retry_after);
                tracing::debug!(attempt, wait_ms = wait.as_millis() as u64, error = %e, "retrying read");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Pulls an error code and message out of the common JSON error shapes: `{"code","message"}`
/// (WordPress), `{"error":{"code"|"type","message"}}` (OpenAI, Anthropic), `{"error":{"code":429,"status",
/// "message"}}` (Google's `google.rpc.Status`: the code is the HTTP status, `status` names it),
/// `{"error":"...","description"}`.
fn platform_error(body: &str) -> (Option<String>, Option<String>) {
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return (None, None);
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let error = value.get("error");
    let code = text(value.get("code"))
        .or_else(|| {
            error.and_then(|e| {
                text(e.pointer("/details/error_code"))
                    .or_else(|| text(e.get("code")))
                    .or_else(|| text(e.get("type")))
                    .or_else(|| text(e.get("status")))
            })
        })
        .or_else(|| text(error));
    let message = text(value.get("message"))
        .or_else(|| error.and_then(|e| text(e.get("message"))))
        .or_else(|| text(value.get("description")));
    (code, message)
}

fn snippet(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &body[..cut]),
        None => body.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn classifies_statuses() {
        let h = HeaderMap::new();
        for s in [408u16, 425, 429, 500, 502, 503, 504] {
            assert!(classify(StatusCode::from_u16(s).unwrap(), &h, "", "x").retryable, "{s} should retry");
        }
        for s in [400u16, 401, 403, 404, 409, 413, 422] {
            assert!(!classify(StatusCode::from_u16(s).unwrap(), &h, "", "x").retryable, "{s} should not retry");
        }
    }

    #[test]
    fn names_platform_code_and_message() {
        let body = r#"{"code":"woocommerce_rest_product_invalid_id","message":"Invalid ID.","data":{"status":404}}"#;
        let e = classify(StatusCode::NOT_FOUND, &HeaderMap::new(), body, "GET products/9");
        assert_eq!(e.message, "GET products/9: HTTP 404 woocommerce_rest_product_invalid_id: Invalid ID.");
        assert_eq!(e.code.as_deref(), Some("woocommerce_rest_product_invalid_id"));
        let body = r#"{"error":{"type":"rate_limit_error","message":"slow down"}}"#;
        let e = classify(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), body, "POST messages");
        assert_eq!(e.code.as_deref(), Some("rate_limit_error"));
        assert!(e.message.ends_with("slow down"));
        let body = r#"{"type":"error","error":{"type":"rate_limit_error","message":"spend limit","details":{"error_code":"enforced_spend_limit_reached"}}}"#;
        let e = classify(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), body, "POST messages");
        assert_eq!(e.code.as_deref(), Some("enforced_spend_limit_reached"));
    }

    #[test]
    fn reads_google_status_errors() {
        let body = r#"{"error":{"code":429,"message":"Quota exceeded.","status":"RESOURCE_EXHAUSTED","details":[
            {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[]},
            {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"2.5s"}]}}"#;
        let e = classify(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), body, "POST generateContent");
        assert_eq!(e.message, "POST generateContent: HTTP 429 RESOURCE_EXHAUSTED: Quota exceeded.");
        assert_eq!(e.code.as_deref(), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(e.retry_after, Some(Duration::from_millis(2500)));
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        let e = classify(StatusCode::TOO_MANY_REQUESTS, &h, body, "x");
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)), "a header wins over the body");
    }

    #[test]
    fn parses_retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        let mut h = HeaderMap::new();
        let later = std::time::SystemTime::now() + Duration::from_secs(90);
        h.insert("retry-after", HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap());
        let got = retry_after(&h).unwrap();
        assert!(got > Duration::from_secs(85) && got <= Duration::from_secs(90), "{got:?}");
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
