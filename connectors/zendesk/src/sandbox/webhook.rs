//! Webhooks the sandbox account delivers, as a Zendesk webhook subscribed to the ticket-created
//! event does: a `zen:event-type:ticket.created` event POSTed as JSON, signed with the webhook's
//! signing secret — `X-Zendesk-Webhook-Signature` = base64(HMAC-SHA256(secret, timestamp + body)),
//! `X-Zendesk-Webhook-Signature-Timestamp` = the time of sending (ISO 8601, the real clock: the
//! receiver compares it with its own).

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::ZendeskSandbox;

/// Where the account sends its webhooks, and the signing secret.
#[derive(Clone)]
pub(crate) struct Webhook {
    pub url: String,
    pub secret: String,
}

/// One delivery: the ticket it announced and the status the endpoint answered (0: unreachable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub ticket_id: u64,
    pub status: u16,
}

/// The signature headers' values for `body` sent at `timestamp`.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The event body Zendesk sends for a created ticket (the fields a receiver relies on).
fn ticket_created(account: &ZendeskSandbox, ticket_id: u64, subject: &str) -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    json!({
        "type": "zen:event-type:ticket.created",
        "account_id": 12_514_403,
        "id": format!("{:08x}-sandbox-{ticket_id}", account.now()),
        "time": now,
        "zendesk_event_version": "2022-11-06",
        "subject": format!("zen:ticket:{ticket_id}"),
        "detail": {
            "id": ticket_id.to_string(),
            "subject": subject,
            "status": "NEW",
            "created_at": now,
            "updated_at": now,
        },
        "event": {}
    })
}

/// Sends the ticket-created event for `ticket_id` to `hook` in the background and records the answer.
pub(crate) fn deliver(account: &ZendeskSandbox, hook: Webhook, ticket_id: u64, subject: &str) {
    let body = serde_json::to_vec(&ticket_created(account, ticket_id, subject)).expect("JSON");
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(ticket_id, "zendesk sandbox: no runtime to deliver the webhook on");
        return;
    };
    let account = account.clone();
    runtime.spawn(async move {
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let signature = sign(&hook.secret, &timestamp, &body);
        let client = enrichd_connector::http::client(std::time::Duration::from_secs(10));
        let status = client
            .post(&hook.url)
            .header("content-type", "application/json; charset=utf-8")
            .header("user-agent", "Zendesk Webhook")
            .header("x-zendesk-webhook-id", "01HSANDBOXWEBHOOK")
            .header("x-zendesk-webhook-invocation-id", format!("{ticket_id}"))
            .header("x-zendesk-webhook-signature", signature)
            .header("x-zendesk-webhook-signature-timestamp", timestamp)
            .body(body)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        account.lock().deliveries.push(Delivery { ticket_id, status });
    });
}
