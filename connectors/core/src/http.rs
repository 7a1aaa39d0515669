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
/// A TLS failure (a certificate not trusted, for another name, expired) is permanent: trying again
/// meets the same certificate. Its message says in plain words what is wrong and what to do.
pub fn transport_error(error: reqwest::Error, what: &str) -> ConnectorError {
    if let Some(tls) = tls_error(&error) {
        let mut err = ConnectorError::permanent(format!("{what}: TLS: {}", tls_advice(tls)));
        err.code = Some("tls".into());
        return err;
    }
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

/// The rustls error somewhere in `error`'s chain of causes (I/O errors carry it inside them).
fn tls_error<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) =
            e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).and_then(|inner| tls_error(inner))
        {
            return Some(tls);
        }
        current = e.source();
    }
    None
}

/// What a TLS failure means for the person running enrichd, and what to do about it.
fn tls_advice(error: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    const TRUST: &str = "to trust it, give its certificate (or the CA that issued it) as a PEM file in the \
        connection's `ca_cert`, or add that CA to this machine's trusted certificates";
    let date = |t: rustls::pki_types::UnixTime| {
        httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(t.as_secs()))
    };
    let rustls::Error::InvalidCertificate(cert) = error else {
        return match error {
            rustls::Error::AlertReceived(alert) => {
                format!("the server ended the TLS handshake ({alert:?}): it does not accept this client's connection")
            }
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => format!(
                "the server did not answer in TLS ({error}): is base_url https:// pointing at a plain-HTTP port? Use http:// for it"
            ),
            other => format!("the TLS handshake failed: {other}"),
        };
    };
    match cert {
        C::UnknownIssuer => format!(
            "the server's certificate is not issued by a certificate authority this machine trusts (it is self-signed or from a private CA); {TRUST}"
        ),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            let names = match cert {
                C::NotValidForNameContext { expected, presented } => {
                    format!(" it is for {} and the address asked for is {}", presented.join(", "), expected.to_str())
                }
                _ => String::new(),
            };
            format!(
                "the server's certificate is not for the host name in base_url:{names}; use a host name the certificate names in base_url, or have a certificate issued for this name"
            )
        }
        C::Expired => "the server's certificate has expired: renew it on the server".into(),
        C::ExpiredContext { not_after, .. } => {
            format!("the server's certificate expired on {}: renew it on the server", date(*not_after))
        }
        C::NotValidYet => {
            "the server's certificate is not valid yet: check the clock of this machine and of the server".into()
        }
        C::NotValidYetContext { not_before, .. } => format!(
            "the server's certificate is valid only from {}: check the clock of this machine and of the server",
            date(*not_before)
        ),
        C::Revoked => "the server's certificate was revoked by its issuer: the server needs a new one".into(),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "the server's certificate is not a server (TLS web server) certificate: the server needs one that is".into()
        }
        C::Other(other) if other.to_string().contains("CaUsedAsEndEntity") => {
            "the server presents a CA certificate as its own certificate; configure the server with a certificate that CA issued for its host name (the CA belongs in `ca_cert`, not on the server)".into()
        }
        other => format!("the server's certificate was refused: {other}"),
    }
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
    ConnectorError { message, retryable, status: Some(status.as_u16()), code, retry_after, deferred: false }
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
    fn explains_tls_failures_in_plain_words() {
        use rustls::CertificateError as C;
        use rustls::pki_types::{ServerName, UnixTime};
        let advice = |c: C| tls_advice(&rustls::Error::InvalidCertificate(c));
        let untrusted = advice(C::UnknownIssuer);
        assert!(untrusted.contains("not issued by a certificate authority this machine trusts"), "{untrusted}");
        assert!(untrusted.contains("`ca_cert`"), "{untrusted}");
        let name = advice(C::NotValidForNameContext {
            expected: ServerName::try_from("shop.example.com").unwrap().to_owned(),
            presented: vec!["staging.example.com".into()],
        });
        assert!(name.contains("it is for staging.example.com and the address asked for is shop.example.com"), "{name}");
        let expired = advice(C::ExpiredContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000)),
            not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000)),
        });
        assert_eq!(
            expired,
            "the server's certificate expired on Tue, 14 Nov 2023 22:13:20 GMT: renew it on the server"
        );
        let alert = tls_advice(&rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure));
        assert!(alert.contains("the server ended the TLS handshake"), "{alert}");
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
