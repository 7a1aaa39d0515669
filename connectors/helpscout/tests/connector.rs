//! The Help Scout connector against the sandbox over real HTTP: config validation, client-credentials
//! tokens (expiry mid-run, persistence through a TokenStore), HAL listing, merged tag writes, custom
//! fields by option id, per-item failures, conflicts, rate limits and Help Scout's error shape.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use enrichd_connector::oauth2::{TokenSet, TokenStore};
use enrichd_connector::{
    Change, Connector, ConnectorError, PageRequest, Version, WriteMode, WriteResult, WriteSubmission,
};
use enrichd_helpscout::sandbox::{CATEGORY_FIELD_ID, CLIENT_ID, CLIENT_SECRET, Faults, HelpScoutSandbox, START};
use enrichd_helpscout::{HelpScout, HelpScoutConfig};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

mod common;

async fn start(sandbox: &HelpScoutSandbox) -> String {
    let addr = sandbox.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    format!("http://{addr}")
}

fn config(base: &str, extra: Value) -> HelpScoutConfig {
    let mut config =
        json!({"base_url": base, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "mailbox": 100001});
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    serde_json::from_value(config).unwrap()
}

fn connector_with(base: &str, extra: Value, store: Option<Arc<dyn TokenStore>>) -> HelpScout {
    HelpScout::new("support", config(base, extra).validate("connections.support").unwrap(), store).unwrap()
}

fn connector(base: &str) -> HelpScout {
    connector_with(base, json!({"status": "all"}), None)
}

fn change(id: u64, version: &Version, fields: Value) -> Change {
    let Value::Object(fields) = fields else { panic!("fields must be an object") };
    Change { id: id.to_string(), base_version: version.clone(), fields, native: None, mode: WriteMode::Merge }
}

async fn written(helpscout: &HelpScout, changes: &[Change]) -> Vec<WriteResult> {
    let WriteSubmission::Done(outcomes) = helpscout.write("conversations", changes).await.unwrap() else {
        panic!("Help Scout writes are answered at once")
    };
    assert_eq!(
        outcomes.iter().map(|o| o.id.clone()).collect::<Vec<_>>(),
        changes.iter().map(|c| c.id.clone()).collect::<Vec<_>>()
    );
    outcomes.into_iter().map(|o| o.result).collect()
}

/// A token store that keeps the token set in a JSON file: the test's stand-in for the daemon's
/// encrypted vault (which is not what is under test here).
struct FileStore(PathBuf);

#[async_trait]
impl TokenStore for FileStore {
    async fn load(&self, connection: &str) -> Result<Option<TokenSet>, ConnectorError> {
        let Ok(raw) = std::fs::read_to_string(&self.0) else { return Ok(None) };
        let v: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(v["connection"], connection);
        Ok(Some(TokenSet {
            access_token: v["access_token"].as_str().unwrap().to_owned().into(),
            refresh_token: String::new().into(),
            expires_at: v["expires_at"].as_i64().unwrap(),
        }))
    }

    async fn save(&self, connection: &str, tokens: &TokenSet) -> Result<(), ConnectorError> {
        let v = json!({"connection": connection, "access_token": tokens.access_token.expose_secret(), "expires_at": tokens.expires_at});
        std::fs::write(&self.0, v.to_string()).unwrap();
        Ok(())
    }
}

#[test]
fn config_errors_name_the_key() {
    let error = |config: Value| -> String {
        match serde_json::from_value::<HelpScoutConfig>(config) {
            Err(e) => e.to_string(),
            Ok(c) => c.validate("connections.support").unwrap_err().to_string(),
        }
    };
    let base = json!({"client_id": "app", "client_secret": "s", "mailbox": 7});
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v;
        }
        c
    };
    assert!(error(with("api_key", json!("x"))).contains("unknown field `api_key`"));
    assert!(error(with("client_id", Value::Null)).starts_with("connections.support.client_id: missing"));
    assert!(error(with("client_secret", Value::Null)).starts_with("connections.support.client_secret: missing"));
    assert!(error(with("client_secret", json!(" "))).starts_with("connections.support.client_secret: is empty"));
    assert!(error(with("mailbox", Value::Null)).starts_with("connections.support.mailbox: missing"));
    assert!(error(with("mailboxes", json!([1, 2]))).starts_with("connections.support.mailboxes: set either"));
    assert!(error(with("status", json!("open"))).starts_with("connections.support.status: \"open\" is not"));
    assert!(error(with("timeout_secs", json!(0))).starts_with("connections.support.timeout_secs:"));
    assert!(error(with("conversation_chars", json!(10))).starts_with("connections.support.conversation_chars:"));
    assert!(
        error(with("base_url", json!("http://helpscout.example.com"))).starts_with("connections.support.base_url:"),
        "plain http off loopback is refused"
    );
    let ok: HelpScoutConfig = serde_json::from_value(base.clone()).unwrap();
    let options = ok.validate("c").unwrap();
    assert_eq!(options.base_url, "https://api.helpscout.net");
    assert_eq!((options.mailboxes.clone(), options.status.as_str()), (vec![7], "active"));
    assert!(!format!("{options:?}").contains("\"s\""), "the secret is not printed");
    let mut ok: HelpScoutConfig = serde_json::from_value(base).unwrap();
    use enrichd_connector::ConnectionSettings;
    assert_eq!(ok.secrets_mut().iter().map(|(k, _)| *k).collect::<Vec<_>>(), ["client_secret"]);
}

#[tokio::test]
async fn a_token_that_expires_mid_run_is_replaced_once_and_the_refused_call_succeeds() {
    let sandbox = HelpScoutSandbox::new(10, 3);
    let helpscout = connector(&start(&sandbox).await);
    helpscout.check("conversations").await.unwrap();
    assert_eq!(sandbox.stats().tokens_issued, 1);
    let id = sandbox.conversation_ids()[0].to_string();
    helpscout.fetch("conversations", std::slice::from_ref(&id)).await.unwrap();
    assert_eq!(sandbox.stats().tokens_issued, 1, "a valid token is reused");

    sandbox.expire_tokens();
    let records = helpscout.fetch("conversations", std::slice::from_ref(&id)).await.unwrap();
    assert_eq!(records.len(), 1, "the call refused with 401 succeeded with the new token");
    assert_eq!((sandbox.stats().tokens_issued, sandbox.stats().unauthorized), (2, 1), "one 401, one new token");

    // Many calls refused at once: one new token between them, not one each.
    sandbox.expire_tokens();
    let ids: Vec<String> = sandbox.conversation_ids().iter().take(5).map(u64::to_string).collect();
    let (a, b, c, d, e) = tokio::join!(
        helpscout.fetch("conversations", &ids[0..1]),
        helpscout.fetch("conversations", &ids[1..2]),
        helpscout.fetch("conversations", &ids[2..3]),
        helpscout.fetch("conversations", &ids[3..4]),
        helpscout.fetch("conversations", &ids[4..5]),
    );
    for r in [a, b, c, d, e] {
        assert_eq!(r.unwrap().len(), 1);
    }
    assert_eq!(sandbox.stats().tokens_issued, 3, "no token storm");
    assert_eq!(helpscout.tokens_requested(), 3);
}

#[tokio::test]
async fn tokens_are_kept_in_the_token_store_and_reused_by_a_restarted_daemon() {
    let sandbox = HelpScoutSandbox::new(4, 3);
    let base = start(&sandbox).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn TokenStore> = Arc::new(FileStore(dir.path().join("tokens.json")));
    let first = connector_with(&base, json!({}), Some(store.clone()));
    first.check("conversations").await.unwrap();
    let saved = store.load("support").await.unwrap().expect("the new token was saved");
    assert!(saved.expires_at > START, "with its expiry");
    drop(first);

    let restarted = connector_with(&base, json!({}), Some(store.clone()));
    restarted.check("conversations").await.unwrap();
    assert_eq!(sandbox.stats().tokens_issued, 1, "the stored token was reused, none requested");
    assert_eq!(restarted.tokens_requested(), 0);

    // A stored token past its expiry is not used: a new one is requested and stored.
    let mut stale = saved.clone();
    stale.expires_at = 1_000;
    store.save("support", &stale).await.unwrap();
    let third = connector_with(&base, json!({}), Some(store.clone()));
    third.check("conversations").await.unwrap();
    assert_eq!(sandbox.stats().tokens_issued, 2);
    let now = store.load("support").await.unwrap().unwrap();
    assert_ne!(now.access_token.expose_secret(), saved.access_token.expose_secret(), "the new token replaced it");
}

#[tokio::test]
async fn wrong_credentials_are_a_permanent_error_that_names_the_keys_not_the_secret() {
    let sandbox = HelpScoutSandbox::new(2, 3);
    let base = start(&sandbox).await;
    let wrong = connector_with(&base, json!({"client_secret": "not-the-secret"}), None);
    let err = wrong.check("conversations").await.unwrap_err();
    assert!(!err.retryable && err.status == Some(401), "{err:?}");
    assert!(err.message.contains("invalid_client") && err.message.contains("client_secret"), "{err}");
    assert!(!err.message.contains("not-the-secret"));
}

#[tokio::test]
async fn listing_walks_every_page_oldest_first_and_resumes_from_its_start() {
    let sandbox = HelpScoutSandbox::new(120, 5);
    sandbox.advance(1000);
    let helpscout = connector(&start(&sandbox).await);
    let mut request = PageRequest { cursor: None, per_page: 100, modified_after: None };
    let mut ids = Vec::new();
    let mut pages = 0;
    let resume = loop {
        let page = helpscout.list("conversations", &request).await.unwrap();
        pages += 1;
        assert_eq!(page.total, Some(120));
        for record in &page.records {
            let id: u64 = record.id.parse().unwrap();
            let native = sandbox.conversation(id).unwrap();
            assert_eq!(record.fields["subject"], native["subject"]);
            let tags: Vec<Value> = sandbox.tags(id).into_iter().map(Value::String).collect();
            assert_eq!(record.fields["tags"], Value::Array(tags));
            assert_eq!(record.fields["custom.Category"], sandbox.category(id).map_or(Value::Null, Value::String));
            assert!(record.fields.contains_key("custom.Summary"), "an empty field is there, as null");
            let first = &sandbox.threads(id)[0];
            let conversation = record.fields["conversation"].as_str().unwrap();
            assert!(
                conversation.starts_with(&format!("[{} customer]", enrichd_iso(first.created_at))),
                "{conversation}"
            );
            assert!(!conversation.contains("<p>"), "HTML is stripped: {conversation}");
            assert!(record.fields["description"].as_str().unwrap().len() > 10);
            if sandbox.threads(id).iter().any(|t| t.kind == "note") {
                assert!(conversation.contains("agent note, private]"), "{conversation}");
            }
        }
        ids.extend(page.records.iter().map(|r| r.id.parse::<u64>().unwrap()));
        match page.next {
            Some(next) => {
                assert!(page.resume.is_none());
                request.cursor = Some(next);
            }
            None => break page.resume.expect("the last page says where a later listing starts"),
        }
    };
    assert_eq!(pages, 3, "50 a page");
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, sandbox.conversation_ids(), "every conversation, once");
    assert_eq!(ids, sorted, "oldest created first");

    // Agents change two conversations; the resume cursor and modified_after both find just those.
    let changed = [sandbox.conversation_ids()[3], sandbox.conversation_ids()[77]];
    sandbox.edit_as_agent(changed[0], json!({"tags": ["escalated"]})).unwrap();
    sandbox.edit_as_agent(changed[1], json!({"note": "Called the customer back."})).unwrap();
    let page = helpscout
        .list("conversations", &PageRequest { cursor: Some(resume), per_page: 100, modified_after: None })
        .await
        .unwrap();
    assert_eq!(page.records.iter().map(|r| r.id.parse::<u64>().unwrap()).collect::<Vec<_>>(), changed);
    let after = enrichd_iso(START + 700);
    let page = helpscout
        .list("conversations", &PageRequest { cursor: None, per_page: 100, modified_after: Some(after) })
        .await
        .unwrap();
    assert_eq!(page.records.len(), 2);
    assert!(page.records[1].fields["conversation"].as_str().unwrap().ends_with("Called the customer back."));
}

fn enrichd_iso(epoch: i64) -> String {
    chrono::DateTime::from_timestamp(epoch, 0).unwrap().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The daemon writes while discovery is still listing: a conversation written (or edited by an
/// agent) between two pages must not push another one off the listing. Ordered by `modifiedAt`,
/// the written one moved to the end and the first of page 2 slid onto page 1, already read.
#[tokio::test]
async fn writes_during_a_listing_do_not_push_conversations_off_it() {
    let sandbox = HelpScoutSandbox::with_triaged_share(120, 6, 0.0);
    let helpscout = connector(&start(&sandbox).await);
    let mut request = PageRequest { cursor: None, per_page: 100, modified_after: None };
    let mut ids = Vec::new();
    loop {
        let page = helpscout.list("conversations", &request).await.unwrap();
        ids.extend(page.records.iter().map(|r| r.id.parse::<u64>().unwrap()));
        // After each page, one of its conversations is written and another edited by an agent.
        let first = &page.records[0];
        let results =
            written(&helpscout, &[change(first.id.parse().unwrap(), &first.version, json!({"tags": ["ai_triaged"]}))])
                .await;
        assert!(matches!(results[0], WriteResult::Written { .. }), "{results:?}");
        let last = page.records.last().unwrap().id.parse::<u64>().unwrap();
        sandbox.edit_as_agent(last, json!({"note": "Looking into it."})).unwrap();
        match page.next {
            Some(next) => request.cursor = Some(next),
            None => break,
        }
    }
    let mut seen = ids.clone();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), ids.len(), "no conversation twice");
    assert_eq!(seen, sandbox.conversation_ids(), "every conversation once");
}

#[tokio::test]
async fn tags_are_merged_fields_go_by_option_id_and_a_note_is_added() {
    let sandbox = HelpScoutSandbox::with_triaged_share(6, 8, 0.0);
    let helpscout = connector(&start(&sandbox).await);
    let id = sandbox.conversation_ids()[1];
    let agent_tags = sandbox.tags(id);
    assert!(!agent_tags.is_empty());
    let record = helpscout.fetch("conversations", &[id.to_string()]).await.unwrap().remove(0);
    let results = written(
        &helpscout,
        &[change(
            id,
            &record.version,
            json!({"tags": ["ai_triaged"], "custom.Category": "Shipping", "internal_note": "AI triage: shipping"}),
        )],
    )
    .await;
    assert!(matches!(results[0], WriteResult::Written { .. }), "{results:?}");
    let tags = sandbox.tags(id);
    for tag in &agent_tags {
        assert!(tags.contains(tag), "the agent's tag {tag} is still there: {tags:?}");
    }
    assert!(tags.contains(&"ai_triaged".to_owned()));
    assert_eq!(sandbox.category(id).as_deref(), Some("Shipping"));
    let writes = sandbox.received_writes();
    let fields = writes.iter().find(|w| w.path.ends_with("/fields")).unwrap();
    assert_eq!(
        fields.body,
        json!({"fields": [{"id": CATEGORY_FIELD_ID, "value": "9103"}]}),
        "the option's id, not its label"
    );
    let note = sandbox.threads(id).last().cloned().unwrap();
    assert_eq!((note.kind.as_str(), note.body.as_str()), ("note", "AI triage: shipping"));

    let stored = helpscout.fetch("conversations", &[id.to_string()]).await.unwrap().remove(0);
    assert!(helpscout.holds("tags", &json!(["AI_triaged"]), stored.field("tags")));
    assert!(helpscout.holds("custom.Category", &json!("Shipping"), stored.field("custom.Category")));

    // Undo: exactly the earlier list again.
    let mut restore = change(id, &stored.version, json!({"tags": agent_tags}));
    restore.mode = WriteMode::Restore;
    assert!(matches!(written(&helpscout, &[restore]).await[0], WriteResult::Written { .. }));
    let mut expected = agent_tags.clone();
    expected.sort();
    assert_eq!(sandbox.tags(id), expected);
    let restored = helpscout.fetch("conversations", &[id.to_string()]).await.unwrap().remove(0);
    assert!(helpscout.restored("tags", &json!(agent_tags), restored.field("tags")));
}

#[tokio::test]
async fn a_deleted_option_fails_that_conversation_alone_and_plainly() {
    let sandbox = HelpScoutSandbox::with_triaged_share(6, 8, 0.0);
    let helpscout = connector(&start(&sandbox).await);
    let ids = sandbox.conversation_ids();
    assert_eq!(
        helpscout.allowed_values("conversations", "custom.Category").await.unwrap().unwrap(),
        ["Billing", "Technical issue", "Shipping", "Account access", "Feedback"]
    );
    let records = helpscout.fetch("conversations", &[ids[0].to_string(), ids[1].to_string()]).await.unwrap();
    sandbox.delete_category_option("Shipping");
    let options = helpscout.allowed_values("conversations", "custom.Category").await.unwrap().unwrap();
    assert!(!options.contains(&"Shipping".to_owned()) && options.len() == 4, "read fresh: {options:?}");
    let results = written(
        &helpscout,
        &[
            change(ids[0], &records[0].version, json!({"custom.Category": "Shipping", "tags": ["ai"]})),
            change(ids[1], &records[1].version, json!({"custom.Category": "Billing"})),
        ],
    )
    .await;
    match &results[0] {
        WriteResult::Failed(e) => {
            assert!(!e.retryable, "not a retry: {e}");
            assert!(
                e.message.contains(&format!("conversation {}", ids[0]))
                    && e.message.contains("\"Shipping\"")
                    && e.message.contains("\"Category\""),
                "{e}"
            );
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(matches!(results[1], WriteResult::Written { .. }), "{results:?}");
    assert!(!sandbox.tags(ids[0]).contains(&"ai".to_owned()), "nothing of the failed change was written");
    assert_eq!(sandbox.category(ids[1]).as_deref(), Some("Billing"));
}

#[tokio::test]
async fn an_agents_edit_between_pull_and_write_is_a_conflict_with_their_values_intact() {
    let sandbox = HelpScoutSandbox::with_triaged_share(4, 8, 0.0);
    let helpscout = connector(&start(&sandbox).await);
    let id = sandbox.conversation_ids()[0];
    let record = helpscout.fetch("conversations", &[id.to_string()]).await.unwrap().remove(0);
    // Tags alone do not move userUpdatedAt; the version still sees them.
    sandbox.edit_as_agent(id, json!({"tags": ["urgent"], "category": "Billing"})).unwrap();
    let results =
        written(&helpscout, &[change(id, &record.version, json!({"tags": ["ai"], "custom.Category": "Feedback"}))])
            .await;
    assert!(matches!(results[0], WriteResult::Conflict { current: Some(_) }), "{results:?}");
    assert!(sandbox.tags(id).contains(&"urgent".to_owned()) && !sandbox.tags(id).contains(&"ai".to_owned()));
    assert_eq!(sandbox.category(id).as_deref(), Some("Billing"), "the agent's value is intact");

    // Agents picking conversations up during a run, seeded.
    let sandbox = HelpScoutSandbox::with_triaged_share(30, 9, 0.0);
    let helpscout = connector(&start(&sandbox).await);
    let ids: Vec<String> = sandbox.conversation_ids().iter().map(u64::to_string).collect();
    sandbox.set_faults(Faults { agent_edit_rate: 0.3, ..Default::default() });
    // The engine's re-read just before writing; agents pick some conversations up right after it.
    let records = helpscout.fetch("conversations", &ids[..20]).await.unwrap();
    let changes: Vec<Change> =
        records.iter().map(|r| change(r.id.parse().unwrap(), &r.version, json!({"tags": ["ai"]}))).collect();
    let results = written(&helpscout, &changes).await;
    let edited = sandbox.agent_edited();
    assert!(!edited.is_empty() && edited.len() < 20, "{edited:?}");
    for (change, result) in changes.iter().zip(&results) {
        let id: u64 = change.id.parse().unwrap();
        let tags = sandbox.tags(id);
        if edited.contains(&id) {
            assert!(matches!(result, WriteResult::Conflict { .. }), "{id}: {result:?}");
            assert!(tags.contains(&"agent_edited".to_owned()) && !tags.contains(&"ai".to_owned()), "{id}: {tags:?}");
            assert_eq!(sandbox.conversation(id).unwrap()["status"], "pending", "the agent's status is intact");
        } else {
            assert!(matches!(result, WriteResult::Written { .. }), "{id}: {result:?}");
            assert!(tags.contains(&"ai".to_owned()));
        }
    }
}

#[tokio::test]
async fn rate_limits_are_recorded_writes_cost_double_and_429s_are_waited_for() {
    let sandbox = HelpScoutSandbox::with_triaged_share(4, 8, 0.0);
    let helpscout = connector(&start(&sandbox).await);
    let ids = sandbox.conversation_ids();
    assert_eq!(helpscout.rate_limit(), None);
    let record = helpscout.fetch("conversations", &[ids[0].to_string()]).await.unwrap().remove(0);
    let before = helpscout.rate_limit().expect("the rate-limit headers were read");
    assert_eq!(before.limit, 400);
    let usage = helpscout.usage();
    assert!(matches!(
        written(&helpscout, &[change(ids[0], &record.version, json!({"tags": ["ai"]}))]).await[0],
        WriteResult::Written { .. }
    ));
    let after = helpscout.rate_limit().unwrap();
    assert_eq!(before.remaining - after.remaining, 3, "a re-read (1) and a tag PUT (2)");
    let spent = helpscout.usage();
    assert_eq!((spent.reads - usage.reads, spent.writes - usage.writes), (1, 1));
    assert_eq!(spent.units() - usage.units(), 3);

    // A 429 on a read: X-RateLimit-Retry-After is honoured and the read succeeds.
    sandbox.set_faults(Faults { rate_limited_requests: 1, retry_after_secs: 1, ..Default::default() });
    let started = std::time::Instant::now();
    assert_eq!(helpscout.fetch("conversations", &[ids[1].to_string()]).await.unwrap().len(), 1);
    assert!(started.elapsed() >= Duration::from_secs(1), "the read waited for the retry-after");
    assert_eq!(sandbox.stats().rate_limited, 1);

    // The minute's allowance runs out on a write: that change and the rest are retryable, with the wait.
    let records = helpscout.fetch("conversations", &[ids[2].to_string(), ids[3].to_string()]).await.unwrap();
    let used = 400 - helpscout.rate_limit().unwrap().remaining;
    sandbox.set_faults(Faults { per_minute: used + 2, ..Default::default() });
    let results = written(
        &helpscout,
        &[
            change(ids[2], &records[0].version, json!({"tags": ["ai"]})),
            change(ids[3], &records[1].version, json!({"tags": ["ai"]})),
        ],
    )
    .await;
    for result in &results {
        let WriteResult::Failed(e) = result else { panic!("{result:?}") };
        assert!(e.retryable && e.status == Some(429), "{e:?}");
        let wait = e.retry_after.expect("the wait Help Scout asked for");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(60), "{wait:?}");
    }
    assert!(!sandbox.tags(ids[2]).contains(&"ai".to_owned()));
    assert_eq!(sandbox.stats().rate_limited, 2, "the second change was not sent into the limit");
}

#[tokio::test]
async fn help_scouts_error_shape_is_named_in_messages() {
    let sandbox = HelpScoutSandbox::new(3, 2);
    let api = common::Api::start(&sandbox).await;
    let id = sandbox.conversation_ids()[0];
    let (status, headers, body) = api
        .call(
            reqwest::Method::PUT,
            &format!("/v2/conversations/{id}/fields"),
            Some(json!({"fields": [{"id": CATEGORY_FIELD_ID, "value": "424242"}]})),
        )
        .await;
    let e = enrichd_helpscout::classify(
        reqwest::StatusCode::from_u16(status).unwrap(),
        &headers,
        body.as_bytes(),
        &format!("helpscout: PUT conversations/{id}/fields"),
    );
    assert!(!e.retryable && e.status == Some(400));
    assert!(e.message.starts_with(&format!("helpscout: PUT conversations/{id}/fields: HTTP 400: Bad request [fields[0].value: Invalid option for field 'Category' (rejected \"424242\")]")), "{}", e.message);
    assert!(e.message.contains("(logRef "), "{}", e.message);
    assert_eq!(e.code.as_deref(), Some("InvalidOption"));
    let helpscout = connector(&api.base);
    let err = helpscout.fetch("tickets", &["1".into()]).await.unwrap_err();
    assert!(err.message.contains("unknown entity \"tickets\""));
    assert!(helpscout.fetch("conversations", &["1".into()]).await.unwrap().is_empty(), "an unknown id is absent");
}

#[tokio::test]
async fn requests_per_hundred_conversations_listed_and_written() {
    let sandbox = HelpScoutSandbox::with_triaged_share(100, 11, 0.0);
    // 504 units: more than a 400-a-minute plan allows in one minute; this counts, it does not pace.
    sandbox.set_faults(Faults { per_minute: 10_000, ..Default::default() });
    let helpscout = connector(&start(&sandbox).await);
    let mut request = PageRequest { cursor: None, per_page: 100, modified_after: None };
    let mut records = Vec::new();
    loop {
        let page = helpscout.list("conversations", &request).await.unwrap();
        records.extend(page.records);
        match page.next {
            Some(next) => request.cursor = Some(next),
            None => break,
        }
    }
    let listed = helpscout.usage();
    // Two pages of 50 with threads embedded, and the mailbox's fields once.
    assert_eq!((records.len(), listed.reads, listed.writes), (100, 3, 0));
    let started = std::time::Instant::now();
    for batch in records.chunks(helpscout.max_write_batch()) {
        let changes: Vec<Change> = batch
            .iter()
            .map(|r| {
                change(r.id.parse().unwrap(), &r.version, json!({"custom.Category": "Billing", "tags": ["ai_triaged"]}))
            })
            .collect();
        assert!(written(&helpscout, &changes).await.iter().all(|r| matches!(r, WriteResult::Written { .. })));
    }
    let spent = helpscout.usage();
    let (reads, writes) = (spent.reads - listed.reads, spent.writes - listed.writes);
    // Per conversation: a re-read, the fields PUT and the tags PUT; per batch of 25, the fields read fresh.
    assert_eq!((reads, writes), (100 + 4, 200));
    println!(
        "100 conversations written (category + tags): {reads} reads + {writes} writes = {} rate-limit units, {:?} against the sandbox",
        reads + 2 * writes,
        started.elapsed()
    );
}

#[tokio::test]
async fn server_errors_on_reads_are_retried() {
    let sandbox = HelpScoutSandbox::with_triaged_share(3, 8, 0.0);
    let helpscout = connector(&start(&sandbox).await);
    let id = sandbox.conversation_ids()[0];
    sandbox.set_faults(Faults { server_errors: 2, ..Default::default() });
    assert_eq!(helpscout.fetch("conversations", &[id.to_string()]).await.unwrap().len(), 1);
    assert_eq!(helpscout.usage().reads, 4, "two 503s, then the answer, and the mailbox's fields");
    sandbox.set_faults(Faults { server_errors: 10, ..Default::default() });
    let err = helpscout.fetch("conversations", &[id.to_string()]).await.unwrap_err();
    assert!(err.retryable && err.status == Some(503), "{err:?}");
    assert!(err.message.starts_with(&format!("helpscout: GET conversations/{id}: HTTP 503")), "{err}");
}
