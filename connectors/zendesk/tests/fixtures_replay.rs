//! Replays the recorded Zendesk exchanges in `tests/fixtures/zendesk` (copied from
//! `/work/shared/fixtures/zendesk`, provenance in its README) against the sandbox over HTTP and
//! compares what comes back with what Zendesk sent.
//!
//! Each fixture's request is sent again in the sandbox's terms (its ticket ids, not the recorded
//! account's). Compared: the status; the headers that matter (`x-rate-limit`, `x-rate-limit-remaining`,
//! the `ratelimit-*` or older `rate-limit-*` trio, `content-type`); the body's key sets and JSON types,
//! recursively for the objects a connector reads (tickets, job statuses and their results, fields and
//! their options, comments); error bodies exactly.
//!
//! What may legitimately differ (the one place that says so):
//! - values (ids, texts, timestamps, cursors): the sandbox has its own tickets;
//! - a JSON null where the recording has a value or the reverse (a ticket's `type`, `priority`,
//!   `organization_id` depend on the ticket);
//! - the `body_only/` files, which are response bodies from an older account (go-zendesk, 2019):
//!   search results there still carry the retired `satisfaction_probability` and lack keys added since
//!   (`custom_status_id`, `from_messaging_channel`); comments there are hand-written (a subset of the keys);
//! - `error_400_too_many_values_create_many.json` was recorded on `create_many`; the sandbox answers
//!   `update_many` and `show_many` with the same body, which Zendesk documents for every `*_many` call.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

mod common;

use enrichd_zendesk::sandbox::ZendeskSandbox;
use serde_json::{Value, json};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zendesk")
}

fn fixture(name: &str) -> Value {
    let raw = std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{name}: {e}"))
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

struct Replay(common::Api);

impl Replay {
    async fn start(sandbox: &ZendeskSandbox) -> Self {
        Replay(common::Api::start(sandbox).await)
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Answer {
        let (status, headers, text) = self.0.call(method, path, body).await;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, headers, body }
    }
}

fn compare_head(name: &str, recorded: &Value, answer: &Answer) {
    let response = &recorded["response"];
    assert_eq!(answer.status, response["status"]["code"].as_u64().unwrap() as u16, "{name}: status");
    let header = |h: &str| {
        response["headers"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(h))
            .and_then(|(_, v)| v[0].as_str())
            .map(str::to_owned)
    };
    let ours = |h: &str| answer.headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(ours("content-type"), header("content-type"), "{name}: content-type");
    assert_eq!(ours("x-rate-limit"), header("x-rate-limit"), "{name}: x-rate-limit");
    let h = "x-rate-limit-remaining";
    assert!(header(h).is_some(), "{name}: the recording has {h}");
    assert!(ours(h).and_then(|v| v.parse::<u32>().ok()).is_some(), "{name}: {h} missing or not a number");
    // 2023 recordings spell the trio `rate-limit-*`, 2024 ones `ratelimit-*`; the sandbox sends the newer.
    for suffix in ["limit", "remaining", "reset"] {
        let recorded = header(&format!("ratelimit-{suffix}")).or_else(|| header(&format!("rate-limit-{suffix}")));
        if suffix == "limit" {
            let recorded = recorded.or_else(|| header("rate-limit"));
            assert!(recorded.is_some(), "{name}: recording has a rate-limit limit header");
        }
        assert!(
            ours(&format!("ratelimit-{suffix}")).and_then(|v| v.parse::<u32>().ok()).is_some(),
            "{name}: ratelimit-{suffix} missing or not a number"
        );
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect()
}

/// Same keys and, where both are non-null, the same JSON types; nested objects compared too, and
/// the first element of arrays of objects.
fn same_shape(path: &str, recorded: &Value, ours: &Value) {
    assert_eq!(keys(ours), keys(recorded), "{path}: key set");
    for (key, r) in recorded.as_object().unwrap() {
        let o = &ours[key];
        if r.is_null() || o.is_null() {
            continue;
        }
        assert_eq!(kind(o), kind(r), "{path}.{key}: type ({o} against recorded {r})");
        match (r, o) {
            (Value::Object(_), Value::Object(_)) if key != "metadata" && key != "source" => {
                same_shape(&format!("{path}.{key}"), r, o)
            }
            (Value::Array(ra), Value::Array(oa)) => {
                if let (Some(r0 @ Value::Object(_)), Some(o0 @ Value::Object(_))) = (ra.first(), oa.first()) {
                    same_shape(&format!("{path}.{key}[0]"), r0, o0);
                }
            }
            _ => {}
        }
    }
}

/// A ticket with a category and tags, so custom field values and tags are non-empty.
fn sandbox() -> ZendeskSandbox {
    let sandbox = ZendeskSandbox::new(30, 7);
    // The recorded account's allowance: a Professional plan's 700 a minute.
    sandbox.set_faults(enrichd_zendesk::sandbox::Faults {
        requests_per_window: 700,
        incremental_per_minute: None,
        ..Default::default()
    });
    sandbox
}

#[tokio::test]
async fn ticket_show_and_show_many_match_the_recordings() {
    let sandbox = sandbox();
    let replay = Replay::start(&sandbox).await;
    let recorded = fixture("ticket_show.json");
    let answer = replay.send(reqwest::Method::GET, "/api/v2/tickets/1.json", None).await;
    compare_head("ticket_show.json", &recorded, &answer);
    same_shape("ticket_show.json", &recorded["response"]["body"], &answer.body);

    let recorded = fixture("tickets_show_many.json");
    let answer = replay.send(reqwest::Method::GET, "/api/v2/tickets/show_many.json?ids=1,2,999999", None).await;
    compare_head("tickets_show_many.json", &recorded, &answer);
    same_shape("tickets_show_many.json", &recorded["response"]["body"], &answer.body);
    let ids: Vec<u64> = answer.body["tickets"].as_array().unwrap().iter().map(|t| t["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2], "an unknown id is simply absent");
    assert_eq!(answer.body["count"], 2);
}

#[tokio::test]
async fn incremental_cursor_pages_match_the_recordings() {
    let sandbox = sandbox();
    let replay = Replay::start(&sandbox).await;
    let first = fixture("incremental_tickets_cursor_first_page.json");
    let answer = replay
        .send(reqwest::Method::GET, "/api/v2/incremental/tickets/cursor.json?per_page=1&start_time=0", None)
        .await;
    compare_head("incremental_tickets_cursor_first_page.json", &first, &answer);
    same_shape("incremental first page", &first["response"]["body"], &answer.body);
    assert_eq!(answer.body["tickets"].as_array().unwrap().len(), 1, "exactly per_page items");
    assert_eq!(answer.body["end_of_stream"], false);

    let next = fixture("incremental_tickets_cursor_next_page.json");
    let cursor = answer.body["after_cursor"].as_str().unwrap().replace('=', "%3D");
    let answer = replay
        .send(
            reqwest::Method::GET,
            &format!("/api/v2/incremental/tickets/cursor.json?cursor={cursor}&per_page=1"),
            None,
        )
        .await;
    compare_head("incremental_tickets_cursor_next_page.json", &next, &answer);
    same_shape("incremental next page", &next["response"]["body"], &answer.body);
    assert_eq!(answer.body["tickets"][0]["id"], 2, "the next page continues after the first ticket");
}

#[tokio::test]
async fn update_many_job_progresses_like_the_recordings() {
    let sandbox = sandbox();
    let replay = Replay::start(&sandbox).await;
    let body = json!({"tickets": [{"id": 1, "priority": "high"}, {"id": 2, "additional_tags": ["checked"]}]});
    let answer = replay.send(reqwest::Method::PUT, "/api/v2/tickets/update_many.json", Some(body)).await;
    let queued = fixture("tickets_update_many_batch_queued.json");
    compare_head("tickets_update_many_batch_queued.json", &queued, &answer);
    same_shape("update_many queued", &queued["response"]["body"], &answer.body);
    let job = &answer.body["job_status"];
    assert_eq!(job["status"], "queued");
    assert!(job["id"].as_str().unwrap().starts_with("V3-"));
    let url = job["url"].as_str().unwrap();
    let path = &url[url.find("/api/v2/").unwrap()..];

    let answer = replay.send(reqwest::Method::GET, path, None).await;
    let still_queued = fixture("job_status_create_queued_poll.json");
    compare_head("job_status_create_queued_poll.json", &still_queued, &answer);
    same_shape("poll queued", &still_queued["response"]["body"], &answer.body);
    assert_eq!(answer.body["job_status"]["status"], "queued");

    let answer = replay.send(reqwest::Method::GET, path, None).await;
    let working = fixture("job_status_update_working.json");
    compare_head("job_status_update_working.json", &working, &answer);
    same_shape("poll working", &working["response"]["body"], &answer.body);
    assert_eq!(answer.body["job_status"]["status"], "working");
    assert!(answer.body["job_status"]["message"].as_str().unwrap().starts_with("Updating ticket #"));
    assert!(
        !sandbox.ticket(2).unwrap()["tags"].as_array().unwrap().contains(&json!("checked")),
        "not applied while working"
    );

    let answer = replay.send(reqwest::Method::GET, path, None).await;
    let completed = fixture("job_status_update_completed.json");
    compare_head("job_status_update_completed.json", &completed, &answer);
    same_shape("poll completed", &completed["response"]["body"], &answer.body);
    let job = &answer.body["job_status"];
    assert_eq!(job["status"], "completed");
    assert_eq!(job["progress"], job["total"]);
    assert!(
        job["message"].as_str().unwrap().starts_with("Completed at ")
            && job["message"].as_str().unwrap().ends_with(" +0000")
    );
    assert_eq!(job["results"][0], json!({"action": "update", "status": "Updated", "success": true, "id": 1}));
    assert_eq!(sandbox.ticket(1).unwrap()["priority"], "high");
    assert!(sandbox.ticket(2).unwrap()["tags"].as_array().unwrap().contains(&json!("checked")));
}

#[tokio::test]
async fn errors_match_the_recordings_exactly() {
    let sandbox = sandbox();
    let replay = Replay::start(&sandbox).await;
    let recorded = fixture("error_404_record_not_found_put_ticket.json");
    let answer = replay
        .send(
            reqwest::Method::PUT,
            "/api/v2/tickets/9223372036854775807.json",
            Some(json!({"ticket": {"subject": "x"}})),
        )
        .await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.body, recorded["response"]["body"]);
    assert_eq!(answer.headers["x-rate-limit"], "700");

    let recorded = fixture("error_400_too_many_values_create_many.json");
    let tickets: Vec<Value> = (1..=101).map(|id| json!({"id": id, "priority": "low"})).collect();
    let answer =
        replay.send(reqwest::Method::PUT, "/api/v2/tickets/update_many.json", Some(json!({"tickets": tickets}))).await;
    compare_head("error_400_too_many_values_create_many.json", &recorded, &answer);
    assert_eq!(answer.body, recorded["response"]["body"]);
    let ids: Vec<String> = (1..=101).map(|i| i.to_string()).collect();
    let answer =
        replay.send(reqwest::Method::GET, &format!("/api/v2/tickets/show_many.json?ids={}", ids.join(",")), None).await;
    assert_eq!(answer.body, recorded["response"]["body"]);
    assert_eq!(sandbox.submissions(1), 0, "a refused batch submits nothing");
}

#[tokio::test]
async fn single_update_matches_the_recording() {
    let sandbox = sandbox();
    let replay = Replay::start(&sandbox).await;
    let recorded = fixture("ticket_update_put.json");
    let answer = replay
        .send(reqwest::Method::PUT, "/api/v2/tickets/3.json", Some(json!({"ticket": {"subject": "renamed"}})))
        .await;
    compare_head("ticket_update_put.json", &recorded, &answer);
    same_shape("ticket_update_put.json", &recorded["response"]["body"], &answer.body);
    assert_eq!(answer.body["audit"]["events"][0]["type"], "Change");
    assert_eq!(answer.body["ticket"]["subject"], "renamed");
}

#[tokio::test]
async fn body_only_shapes_agree() {
    let sandbox = sandbox();
    let replay = Replay::start(&sandbox).await;
    let fields = fixture("body_only/ticket_fields_list.json");
    let answer = replay.send(reqwest::Method::GET, "/api/v2/ticket_fields.json", None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(keys(&answer.body), keys(&fields));
    let tagger =
        |v: &Value| v["ticket_fields"].as_array().unwrap().iter().find(|f| f["type"] == "tagger").cloned().unwrap();
    same_shape("ticket_fields tagger", &tagger(&fields), &tagger(&answer.body));
    assert_eq!(tagger(&answer.body)["title"], "Category");

    let search = fixture("body_only/search_tickets.json");
    sandbox.advance(3600);
    let answer = replay.send(reqwest::Method::GET, "/api/v2/search.json?query=type%3Aticket", None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(keys(&answer.body), keys(&search));
    let recorded_result = &search["results"][0];
    let our_result = &answer.body["results"][0];
    assert_eq!(our_result["result_type"], "ticket");
    let missing: Vec<String> = keys(recorded_result)
        .difference(&keys(our_result))
        .filter(|k| *k != "satisfaction_probability")
        .cloned()
        .collect();
    assert!(missing.is_empty(), "search result lacks recorded keys {missing:?}");

    let comments = fixture("body_only/ticket_comments_list_EDITED.json");
    let answer = replay.send(reqwest::Method::GET, "/api/v2/tickets/1/comments.json", None).await;
    assert_eq!(answer.status, 200);
    let recorded_comment = keys(&comments["comments"][0]);
    let our_comment = keys(&answer.body["comments"][0]);
    assert!(recorded_comment.is_subset(&our_comment), "comment keys {our_comment:?} lack some of {recorded_comment:?}");
}

/// The headers of a recording as a `HeaderMap`, without `x-rate-limit*` when `drop_x` (so the
/// `rate-limit-*`/`ratelimit-*` spelling alone is read).
fn recorded_headers(recorded: &Value, drop_x: bool) -> reqwest::header::HeaderMap {
    let mut map = reqwest::header::HeaderMap::new();
    for (name, values) in recorded["response"]["headers"].as_object().unwrap() {
        let lower = name.to_ascii_lowercase();
        if drop_x && lower.starts_with("x-rate-limit") {
            continue;
        }
        let name = reqwest::header::HeaderName::from_bytes(lower.as_bytes()).unwrap();
        if let Some(value) = values[0].as_str().and_then(|v| reqwest::header::HeaderValue::from_str(v).ok()) {
            map.insert(name, value);
        }
    }
    map
}

#[test]
fn rate_limit_headers_are_read_in_every_recorded_spelling() {
    use enrichd_zendesk::RateLimit;
    // 2023: `rate-limit`, `rate-limit-remaining`, `rate-limit-reset` (ticket_show.json).
    let older = fixture("ticket_show.json");
    let read = RateLimit::from_headers(&recorded_headers(&older, true)).unwrap();
    assert_eq!(read, RateLimit { limit: 700, remaining: 650, reset_secs: Some(37) });
    // 2024: `ratelimit-limit`, `ratelimit-remaining`, `ratelimit-reset` (incremental export).
    let newer = fixture("incremental_tickets_cursor_first_page.json");
    let read = RateLimit::from_headers(&recorded_headers(&newer, true)).unwrap();
    assert_eq!(read, RateLimit { limit: 700, remaining: 696, reset_secs: Some(11) });
    // With `x-rate-limit*` present they are read first.
    let read = RateLimit::from_headers(&recorded_headers(&older, false)).unwrap();
    assert_eq!((read.limit, read.remaining), (700, 650));
}
