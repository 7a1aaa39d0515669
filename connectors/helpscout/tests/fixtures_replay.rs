//! Replays the recorded Help Scout exchanges in `tests/fixtures/helpscout` (copied from
//! `/work/shared/fixtures/helpscout`, provenance in its README) against the sandbox over HTTP and
//! compares what comes back with what Help Scout sent.
//!
//! Each fixture's request is sent again in the sandbox's terms (its conversation ids and app
//! credentials). Compared: the status; `content-type`; the rate-limit headers (present on API calls,
//! absent on the token call); `Location`/`Resource-Id` on a 201; empty bodies on 201/204; the
//! body's key sets and JSON types, recursively for conversations, threads, tags, pages and links.
//! And the behaviour the recordings show: tags returned sorted as `{id,color,tag}` objects; a tag
//! `PUT` replacing the set without moving `userUpdatedAt`; a subject `PATCH` moving it.
//!
//! What may legitimately differ (the one place that says so):
//! - values (ids, texts, timestamps, tokens): the sandbox has its own account;
//! - keys that depend on the conversation or thread: `assignee` (assigned conversations only),
//!   `closedAt` (closed ones), `_links.createdByUser` for a conversation an agent started where ours
//!   were started by customers (`_links.createdByCustomer`), a thread's `savedReplyId` and `openedAt`
//!   (replies only), `photoUrl` (people with a photo);
//! - not replayed (the sandbox does not serve them, the connector does not call them): attachments,
//!   customers, users, folders, thread text PATCH.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

mod common;

use enrichd_helpscout::sandbox::{CLIENT_ID, CLIENT_SECRET, HelpScoutSandbox, MAILBOX_ID};
use reqwest::Method;
use serde_json::{Value, json};

/// Keys that one side may have and the other not (see the module comment).
const OPTIONAL: [&str; 7] =
    ["assignee", "closedAt", "createdByUser", "createdByCustomer", "savedReplyId", "openedAt", "photoUrl"];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/helpscout")
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

async fn send(api: &common::Api, method: Method, path: &str, body: Option<Value>) -> Answer {
    let (status, headers, text) = api.call(method, path, body).await;
    let body = if text.is_empty() { Value::String(String::new()) } else { serde_json::from_str(&text).unwrap() };
    Answer { status, headers, body }
}

fn recorded_header(recorded: &Value, name: &str) -> Option<String> {
    recorded["response"]["headers"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v[0].as_str())
        .map(str::to_owned)
}

fn ours(answer: &Answer, name: &str) -> Option<String> {
    answer.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn compare_head(name: &str, recorded: &Value, answer: &Answer) {
    let response = &recorded["response"];
    assert_eq!(answer.status, response["status"]["code"].as_u64().unwrap() as u16, "{name}: status");
    assert_eq!(ours(answer, "content-type"), recorded_header(recorded, "content-type"), "{name}: content-type");
    for h in ["x-ratelimit-limit-minute", "x-ratelimit-remaining-minute", "location", "resource-id"] {
        let r = recorded_header(recorded, h);
        let o = ours(answer, h);
        assert_eq!(o.is_some(), r.is_some(), "{name}: {h} present in one answer only ({o:?} against recorded {r:?})");
    }
    assert_eq!(
        ours(answer, "x-ratelimit-limit-minute"),
        recorded_header(recorded, "x-ratelimit-limit-minute"),
        "{name}: the recorded plan's 400 a minute"
    );
    if response["body"] == "" {
        assert_eq!(answer.body, "", "{name}: no body");
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
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .filter(|k| !OPTIONAL.contains(&k.as_str()))
        .cloned()
        .collect()
}

/// Same keys (but the optional ones) and JSON types, recursively; arrays by their first element.
fn same_shape(path: &str, recorded: &Value, ours: &Value) {
    assert_eq!(keys(ours), keys(recorded), "{path}: key set");
    for (key, r) in recorded.as_object().unwrap() {
        let o = &ours[key];
        if r.is_null() || o.is_null() || OPTIONAL.contains(&key.as_str()) {
            continue;
        }
        assert_eq!(kind(o), kind(r), "{path}.{key}: type ({o} against recorded {r})");
        match (r, o) {
            (Value::Object(_), Value::Object(_)) => same_shape(&format!("{path}.{key}"), r, o),
            (Value::Array(ra), Value::Array(oa)) => {
                if let (Some(r0 @ Value::Object(_)), Some(o0 @ Value::Object(_))) = (ra.first(), oa.first()) {
                    same_shape(&format!("{path}.{key}[0]"), r0, o0);
                }
            }
            _ => {}
        }
    }
}

/// A closed, assigned conversation, as `conversation_get.json` shows one.
fn closed_assigned(sandbox: &HelpScoutSandbox) -> u64 {
    sandbox
        .conversation_ids()
        .into_iter()
        .find(|id| {
            let c = sandbox.conversation(*id).unwrap();
            c["status"] == "closed" && c.get("assignee").is_some()
        })
        .expect("the generated account has a closed, assigned conversation")
}

#[tokio::test]
async fn the_token_endpoint_answers_as_recorded() {
    let sandbox = HelpScoutSandbox::new(3, 1);
    let api = common::Api::start(&sandbox).await;
    let recorded = fixture("oauth2_token_client_credentials.json");
    let mut body = recorded["request"]["body"].clone();
    body["client_id"] = json!(CLIENT_ID);
    body["client_secret"] = json!(CLIENT_SECRET);
    let response = api.http.post(format!("{}/v2/oauth2/token", api.base)).json(&body).send().await.unwrap();
    let answer = Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.json().await.unwrap(),
    };
    compare_head("oauth2_token_client_credentials", &recorded, &answer);
    assert_eq!(ours(&answer, "cache-control").as_deref(), Some("no-store"));
    same_shape("token", &recorded["response"]["body"], &answer.body);
    assert_eq!(answer.body["token_type"], "bearer");
    assert_eq!(answer.body["expires_in"], recorded["response"]["body"]["expires_in"], "the recorded lifetime");
    assert!(answer.body.get("refresh_token").is_none(), "client credentials give no refresh token");
}

#[tokio::test]
async fn lists_and_reads_agree_with_the_recordings() {
    let sandbox = HelpScoutSandbox::new(30, 2);
    let api = common::Api::start(&sandbox).await;

    let recorded = fixture("conversations_list_mailbox.json");
    let answer = send(&api, Method::GET, &format!("/v2/conversations?mailbox={MAILBOX_ID}"), None).await;
    compare_head("conversations_list_mailbox", &recorded, &answer);
    same_shape("conversations list", &recorded["response"]["body"], &answer.body);
    assert_eq!(answer.body["page"]["size"], 50);
    assert_eq!(answer.body["page"]["number"], 1, "pages are 1-based");

    let id = closed_assigned(&sandbox);
    let recorded = fixture("conversation_get.json");
    let answer = send(&api, Method::GET, &format!("/v2/conversations/{id}"), None).await;
    compare_head("conversation_get", &recorded, &answer);
    same_shape("conversation", &recorded["response"]["body"], &answer.body);
    assert!(answer.body.get("assignee").is_some() && answer.body.get("closedAt").is_some());

    let recorded = fixture("threads_list.json");
    let answer = send(&api, Method::GET, &format!("/v2/conversations/{id}/threads"), None).await;
    compare_head("threads_list", &recorded, &answer);
    same_shape("threads", &recorded["response"]["body"], &answer.body);
    assert_eq!(answer.body["page"]["size"], 25);
    let times: Vec<&str> = answer.body["_embedded"]["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["createdAt"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "threads are listed newest first, as recorded: {times:?}");

    let recorded = fixture("mailboxes_list.json");
    let answer = send(&api, Method::GET, "/v2/mailboxes", None).await;
    compare_head("mailboxes_list", &recorded, &answer);
    same_shape("mailboxes", &recorded["response"]["body"], &answer.body);
}

#[tokio::test]
async fn writes_answer_without_a_body_and_tags_replace_the_set() {
    let sandbox = HelpScoutSandbox::new(30, 2);
    let api = common::Api::start(&sandbox).await;
    let id = closed_assigned(&sandbox);
    let before = sandbox.conversation(id).unwrap();

    let recorded = fixture("conversation_tags_clear_put_204.json");
    let answer =
        send(&api, Method::PUT, &format!("/v2/conversations/{id}/tags"), Some(recorded["request"]["body"].clone()))
            .await;
    compare_head("conversation_tags_clear_put_204", &recorded, &answer);
    assert!(sandbox.tags(id).is_empty(), "an empty list clears the tags");

    let recorded = fixture("conversation_tags_put_204.json");
    assert_eq!(recorded["request"]["body"], json!({"tags": ["vip", "pro"]}));
    let answer =
        send(&api, Method::PUT, &format!("/v2/conversations/{id}/tags"), Some(recorded["request"]["body"].clone()))
            .await;
    compare_head("conversation_tags_put_204", &recorded, &answer);

    let recorded = fixture("conversation_get_with_tags.json");
    let answer = send(&api, Method::GET, &format!("/v2/conversations/{id}"), None).await;
    compare_head("conversation_get_with_tags", &recorded, &answer);
    same_shape("conversation with tags", &recorded["response"]["body"], &answer.body);
    let names = |v: &Value| v["tags"].as_array().unwrap().iter().map(|t| t["tag"].clone()).collect::<Vec<_>>();
    assert_eq!(names(&answer.body), names(&recorded["response"]["body"]), "sent vip, pro; returned pro, vip");
    assert_eq!(
        answer.body["userUpdatedAt"], before["userUpdatedAt"],
        "a tag PUT does not move userUpdatedAt (as recorded)"
    );

    let recorded = fixture("conversation_patch_subject_204.json");
    let answer =
        send(&api, Method::PATCH, &format!("/v2/conversations/{id}"), Some(recorded["request"]["body"].clone())).await;
    compare_head("conversation_patch_subject_204", &recorded, &answer);
    let recorded = fixture("conversation_get_after_patch.json");
    let answer = send(&api, Method::GET, &format!("/v2/conversations/{id}"), None).await;
    compare_head("conversation_get_after_patch", &recorded, &answer);
    assert_eq!(answer.body["subject"], recorded["response"]["body"]["subject"]);
    assert_ne!(answer.body["userUpdatedAt"], before["userUpdatedAt"], "a PATCH moves userUpdatedAt (as recorded)");

    let recorded = fixture("thread_note_create_201.json");
    let answer =
        send(&api, Method::POST, &format!("/v2/conversations/{id}/notes"), Some(recorded["request"]["body"].clone()))
            .await;
    compare_head("thread_note_create_201", &recorded, &answer);
    assert_eq!(sandbox.threads(id).last().unwrap().body, "Hello, note!");

    let recorded = fixture("conversation_create_201.json");
    let answer = send(&api, Method::POST, "/v2/conversations", Some(recorded["request"]["body"].clone())).await;
    compare_head("conversation_create_201", &recorded, &answer);
    let created: u64 = ours(&answer, "resource-id").unwrap().parse().unwrap();
    assert_eq!(ours(&answer, "location").unwrap(), format!("{}/v2/conversations/{created}", api.base));
    assert_eq!(sandbox.conversation(created).unwrap()["subject"], "Hello World!");
}

#[tokio::test]
async fn errors_use_help_scouts_documented_shape() {
    let sandbox = HelpScoutSandbox::new(3, 2);
    let api = common::Api::start(&sandbox).await;
    let id = sandbox.conversation_ids()[0];
    let answer = send(
        &api,
        Method::PUT,
        &format!("/v2/conversations/{id}/fields"),
        Some(json!({"fields": [{"id": enrichd_helpscout::sandbox::CATEGORY_FIELD_ID, "value": "424242"}]})),
    )
    .await;
    assert_eq!(answer.status, 400);
    let body = &answer.body;
    assert!(body["logRef"].is_string() && body["message"] == "Bad request", "{body}");
    let error = &body["_embedded"]["errors"][0];
    assert_eq!(error["path"], "fields[0].value");
    assert_eq!(error["rejectedValue"], "424242");
    assert!(error["_links"]["about"]["href"].as_str().unwrap().contains("/errors#"), "{error}");
}
