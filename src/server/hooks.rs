//! `POST /hooks/{pipeline}`: the platform's own webhooks. No session: a request is taken only with
//! a valid signature under the pipeline's `[pipelines.<name>.webhook] secret`, by the rule of the
//! pipeline's connection kind —
//!
//! - WooCommerce: `X-WC-Webhook-Signature` = base64(HMAC-SHA256(secret, raw body)); the body is the
//!   product JSON (`product.created` / `product.updated`). The ping WooCommerce sends when a webhook
//!   is saved (form body `webhook_id=N`) is answered 200 and queues nothing.
//! - Zendesk: `X-Zendesk-Webhook-Signature` = base64(HMAC-SHA256(secret, timestamp + raw body)),
//!   with the timestamp from `X-Zendesk-Webhook-Signature-Timestamp`, which must be within the
//!   pipeline's `max_age_seconds` of our clock.
//!
//! A verified webhook queues its record into the pipeline's open webhook run (see
//! [`crate::store::Store::queue_hook`]); the daemon's discovery picks that run up at its next poll.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sha2::Sha256;

use super::Shared;
use crate::store::NewRun;

const WC_SIGNATURE: &str = "x-wc-webhook-signature";
const WC_TOPIC: &str = "x-wc-webhook-topic";
const ZD_SIGNATURE: &str = "x-zendesk-webhook-signature";
const ZD_TIMESTAMP: &str = "x-zendesk-webhook-signature-timestamp";

/// Why a webhook was not taken: the status and what to tell the sender.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn unauthorized(message: impl Into<String>) -> Refusal {
    Refusal(StatusCode::UNAUTHORIZED, message.into())
}

pub(super) async fn receive(
    State(engine): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match take(&engine, &name, &headers, &body).await {
        Ok(response) => response,
        Err(Refusal(status, message)) => {
            tracing::warn!(pipeline = %name, status = status.as_u16(), "webhook refused: {message}");
            Refusal(status, message).into_response()
        }
    }
}

async fn take(engine: &Shared, name: &str, headers: &HeaderMap, body: &[u8]) -> Result<Response, Refusal> {
    let not_here = || {
        Refusal(
            StatusCode::NOT_FOUND,
            format!(
                "pipeline {name:?} takes no webhooks here: it needs [pipelines.{name}.webhook] and a daemon that works it"
            ),
        )
    };
    let pipeline = engine.pipelines.get(name).ok_or_else(not_here)?;
    let hook = pipeline.config.webhook.as_ref().ok_or_else(not_here)?;
    let secret = hook.secret.0.expose_secret().as_bytes();
    let kind = pipeline.connector.kind();
    let external_id = match kind {
        "woocommerce" => {
            let Some(signature) = header(headers, WC_SIGNATURE) else {
                if let Some(id) = woocommerce_ping(body) {
                    tracing::info!(pipeline = %name, webhook_id = id, "WooCommerce webhook ping answered");
                    return Ok((StatusCode::OK, Json(json!({ "ping": id }))).into_response());
                }
                return Err(unauthorized(format!("missing {WC_SIGNATURE} header: nothing was queued")));
            };
            if !signed(secret, &[body], signature) {
                return Err(unauthorized(format!(
                    "{WC_SIGNATURE} does not match the body signed with pipelines.{name}.webhook.secret: nothing was queued"
                )));
            }
            if let Some(id) = woocommerce_ping(body) {
                return Ok((StatusCode::OK, Json(json!({ "ping": id }))).into_response());
            }
            match header(headers, WC_TOPIC) {
                None | Some("product.created" | "product.updated") => {}
                Some(topic @ ("product.deleted" | "product.restored")) => {
                    return Ok((StatusCode::OK, Json(json!({ "ignored": topic }))).into_response());
                }
                Some(topic) => {
                    return Err(Refusal(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "topic {topic:?} is not taken: this pipeline takes product.created and product.updated"
                        ),
                    ));
                }
            }
            woocommerce_id(body)?
        }
        "zendesk" => {
            let signature = header(headers, ZD_SIGNATURE)
                .ok_or_else(|| unauthorized(format!("missing {ZD_SIGNATURE} header: nothing was queued")))?;
            let timestamp = header(headers, ZD_TIMESTAMP)
                .ok_or_else(|| unauthorized(format!("missing {ZD_TIMESTAMP} header: nothing was queued")))?;
            // The signature first: an unsigned request learns nothing about our clock.
            if !signed(secret, &[timestamp.as_bytes(), body], signature) {
                return Err(unauthorized(format!(
                    "{ZD_SIGNATURE} does not match the timestamp and body signed with pipelines.{name}.webhook.secret: nothing was queued"
                )));
            }
            let at = chrono::DateTime::parse_from_rfc3339(timestamp).map_err(|_| {
                unauthorized(format!("{ZD_TIMESTAMP} {timestamp:?} is not an ISO 8601 time: nothing was queued"))
            })?;
            let skew = (chrono::Utc::now().timestamp() - at.timestamp()).abs();
            if skew > hook.max_age_seconds as i64 {
                return Err(unauthorized(format!(
                    "{ZD_TIMESTAMP} {timestamp} is {skew} s from this server's clock; the window is {} s either way \
                     (pipelines.{name}.webhook.max_age_seconds): a replayed or delayed delivery, nothing was queued",
                    hook.max_age_seconds
                )));
            }
            zendesk_ticket_id(body)?
        }
        other => {
            return Err(Refusal(
                StatusCode::NOT_FOUND,
                format!("pipeline {name:?} reads a {other} connection, which sends no webhooks enrichd verifies"),
            ));
        }
    };
    let config = &pipeline.config;
    let new = NewRun {
        pipeline: name.to_owned(),
        scheduled_for: None,
        item_limit: None,
        max_attempts: config.max_attempts as i64,
        budget_micros: config.budget_usd.map(|usd| (usd * 1e6).round() as i64),
        sample: config.review.sample_gate(),
    };
    let queued = engine.store.queue_hook(&new, &config.entity, &external_id).await.map_err(|e| {
        tracing::error!(pipeline = %name, error = %e, "queueing a webhook's record failed");
        Refusal(StatusCode::SERVICE_UNAVAILABLE, "could not queue the record; deliver again later".into())
    })?;
    tracing::info!(
        pipeline = %name,
        record = %external_id,
        run = queued.run_id,
        opened = queued.opened,
        repeated = queued.already_queued,
        "webhook queued a record"
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "queued": external_id, "entity": config.entity, "run": queued.run_id, "repeated": queued.already_queued })),
    )
        .into_response())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

/// Whether `signature` is base64(HMAC-SHA256(secret, parts concatenated)), compared in constant time.
fn signed(secret: &[u8], parts: &[&[u8]], signature: &str) -> bool {
    let Ok(presented) = base64::engine::general_purpose::STANDARD.decode(signature) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(&presented).is_ok()
}

/// The webhook id of WooCommerce's ping (`webhook_id=N`), if the body is one.
fn woocommerce_ping(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?.trim();
    text.strip_prefix("webhook_id=")?.parse().ok()
}

fn woocommerce_id(body: &[u8]) -> Result<String, Refusal> {
    let expected =
        "expected the product JSON WooCommerce sends for product.created and product.updated, with a numeric \"id\"";
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("the body is not JSON ({e}); {expected}")))?;
    match value.get("id") {
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => Ok(n.to_string()),
        _ => Err(Refusal(StatusCode::BAD_REQUEST, format!("no product id in the body; {expected}"))),
    }
}

/// The ticket a Zendesk webhook names: `{"ticket_id": ..}`, `{"id": ..}`, `{"ticket": {"id": ..}}`,
/// or a ticket event (`{"type": "zen:event-type:ticket.…", "detail": {"id": ..}}`).
fn zendesk_ticket_id(body: &[u8]) -> Result<String, Refusal> {
    let expected = "expected a JSON body naming the ticket: {\"ticket_id\": \"{{ticket.id}}\"} (see docs/webhooks.md), \
                    {\"id\": …}, {\"ticket\": {\"id\": …}}, or a Zendesk ticket event (type zen:event-type:ticket.*) with detail.id";
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("the body is not JSON ({e}); {expected}")))?;
    let event = value.get("type").and_then(Value::as_str);
    let found = match event {
        Some(t) if t.starts_with("zen:event-type:ticket.") => value.pointer("/detail/id"),
        Some(t) => {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                format!("event type {t:?} is not a ticket event; {expected}"),
            ));
        }
        None => value.get("ticket_id").or_else(|| value.pointer("/ticket/id")).or_else(|| value.get("id")),
    };
    let id = match found {
        Some(Value::Number(n)) => n.as_u64().filter(|n| *n > 0).map(|n| n.to_string()),
        Some(Value::String(s)) => {
            let s = s.trim();
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s != "0").then(|| s.to_owned())
        }
        _ => None,
    };
    id.ok_or_else(|| Refusal(StatusCode::BAD_REQUEST, format!("no ticket id in the body; {expected}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zendesk_rule_verifies() {
        // The secret, timestamp and body of Zendesk's example ("Verifying webhook authenticity"),
        // signed by its documented rule base64(HMAC-SHA256(secret, timestamp + body)); the expected
        // value was computed independently, with Python's hmac module.
        let secret = b"HRkRd4BeOAoUkfZr-mhauJT64rvBASlJRoIyPsd3zeA=";
        let (timestamp, body) = (b"2021-07-25T10:00:00Z".as_slice(), br#"{"say": "hello"}"#.as_slice());
        let signature = "Rry/4TtIdFyawtXXp8QdI6tlAUUQ/5kL1OTp5qo/ZIk=";
        assert!(signed(secret, &[timestamp, body], signature));
        assert!(!signed(secret, &[body, timestamp], signature), "the order matters");
        assert!(!signed(b"another secret", &[timestamp, body], signature));
        assert!(!signed(secret, &[timestamp, b"{\"say\": \"hellO\"}"], signature));
        assert!(!signed(secret, &[timestamp, body], "not base64!"));
    }

    #[test]
    fn payload_shapes() {
        let id = |b: &str| zendesk_ticket_id(b.as_bytes()).map_err(|r| r.1);
        assert_eq!(id(r#"{"ticket_id": "123"}"#).unwrap(), "123");
        assert_eq!(id(r#"{"id": 7}"#).unwrap(), "7");
        assert_eq!(id(r#"{"ticket": {"id": 9, "subject": "x"}}"#).unwrap(), "9");
        assert_eq!(
            id(r#"{"type": "zen:event-type:ticket.created", "detail": {"id": "35436"}, "id": "cbe4028c"}"#).unwrap(),
            "35436"
        );
        assert!(
            id(r#"{"type": "zen:event-type:user.created", "detail": {"id": "1"}}"#)
                .unwrap_err()
                .contains("not a ticket event")
        );
        assert!(id(r#"{"subject": "no id"}"#).unwrap_err().contains("ticket_id"));
        assert!(id(r#"{"ticket_id": "12; DROP"}"#).is_err());
        assert!(id("not json").unwrap_err().contains("not JSON"));
        assert_eq!(woocommerce_id(br#"{"id": 42, "name": "x"}"#).map_err(|r| r.1).unwrap(), "42");
        assert!(woocommerce_id(br#"{"name": "x"}"#).is_err());
        assert_eq!(woocommerce_ping(b"webhook_id=15"), Some(15));
        assert_eq!(woocommerce_ping(br#"{"id": 1}"#), None);
    }
}
