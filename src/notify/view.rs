//! The run page's "Notifications" section: each notification and each delivery attempt, in words.

use serde_json::{Value, json};

use super::config::Event;
use crate::store::{NotificationRecord, Result, Store};

/// What `templates/run_notifications.html` shows for run `run_id`.
pub async fn run_page(store: &Store, run_id: i64) -> Result<Value> {
    let list = store.run_notifications(run_id).await?;
    Ok(Value::Array(list.iter().map(notification).collect()))
}

fn notification(n: &NotificationRecord) -> Value {
    let state = match n.status.as_str() {
        "delivered" => format!("delivered at {} UTC", at(n.finished_at)),
        "failed" => format!("failed, given up at {} UTC", at(n.finished_at)),
        _ if n.attempts == 0 => "waiting to be sent".to_owned(),
        _ => format!("retrying at {} UTC", at(n.next_attempt_at)),
    };
    let tries: Vec<Value> = n
        .tries
        .iter()
        .map(|a| {
            let answer = match (a.http_status, &a.error) {
                (Some(code), Some(error)) if !error.starts_with("HTTP ") => format!("HTTP {code}: {error}"),
                (_, Some(error)) => error.clone(),
                (Some(code), None) => format!("HTTP {code}"),
                (None, None) => String::new(),
            };
            let result = match a.outcome.as_str() {
                "delivered" => "delivered".to_owned(),
                "retrying" => format!("retrying at {} UTC", at(a.retry_at)),
                _ => "failed".to_owned(),
            };
            json!({
                "attempt": a.attempt,
                "at": at(Some(a.at)),
                "http_status": a.http_status,
                "answer": answer,
                "outcome": a.outcome,
                "result": result,
                "duration_ms": a.duration_ms,
            })
        })
        .collect();
    json!({
        "id": n.id,
        "event": n.event,
        "event_plain": n.event.parse::<Event>().map_or(n.event.as_str(), |e| e.plain()),
        "endpoint": n.endpoint,
        "target": n.target,
        "created_at": at(Some(n.created_at)),
        "status": n.status,
        "state": state,
        "text": n.payload.get("text").and_then(Value::as_str),
        "tries": tries,
    })
}

fn at(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "—".into())
}
