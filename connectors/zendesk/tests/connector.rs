//! The Zendesk connector against the sandbox over real HTTP: config validation, listing through the
//! incremental export, fetch through show_many, writes (single with safe_update, batches as jobs),
//! per-ticket job failures, tags merged, error classification and Retry-After.

use std::time::Duration;

use enrichd_connector::{Change, Connector, PageRequest, Version, WriteMode, WriteResult, WriteSubmission};
use enrichd_zendesk::sandbox::{API_TOKEN, EMAIL, Faults, OAUTH_TOKEN, READ_ONLY_OAUTH_TOKEN, ZendeskSandbox};
use enrichd_zendesk::{Zendesk, ZendeskConfig};
use serde_json::{Map, Value, json};

async fn start(sandbox: &ZendeskSandbox) -> String {
    let addr = sandbox.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    format!("http://{addr}")
}

fn connector(config: Value) -> Zendesk {
    let config: ZendeskConfig = serde_json::from_value(config).unwrap();
    Zendesk::new(config.validate("connections.support").unwrap()).unwrap()
}

fn token_connector(base: &str) -> Zendesk {
    connector(json!({"base_url": base, "email": EMAIL, "api_token": API_TOKEN}))
}

fn change(id: u64, version: &str, fields: Value) -> Change {
    let Value::Object(fields) = fields else { panic!("fields must be an object") };
    Change { id: id.to_string(), base_version: Version(version.into()), fields, native: None, mode: WriteMode::Merge }
}

fn quiet(sandbox: &ZendeskSandbox) {
    sandbox.set_faults(Faults { incremental_per_minute: None, ..Default::default() });
}

#[test]
fn config_errors_name_the_key() {
    let error = |config: Value| -> String {
        match serde_json::from_value::<ZendeskConfig>(config) {
            Err(e) => e.to_string(),
            Ok(c) => c.validate("connections.support").unwrap_err().to_string(),
        }
    };
    assert!(
        error(json!({"subdomain": "acme", "email": EMAIL, "api_token": "t", "token": "x"}))
            .contains("unknown field `token`")
    );
    assert!(error(json!({"email": EMAIL, "api_token": "t"})).starts_with("connections.support.subdomain: missing"));
    assert!(
        error(json!({"subdomain": "acme.zendesk.com", "email": EMAIL, "api_token": "t"}))
            .starts_with("connections.support.subdomain: \"acme.zendesk.com\" is not a Zendesk subdomain")
    );
    assert!(
        error(json!({"subdomain": "acme", "base_url": "https://x", "email": EMAIL, "api_token": "t"}))
            .starts_with("connections.support.base_url:")
    );
    assert!(
        error(json!({"subdomain": "acme", "email": EMAIL, "api_token": "t", "oauth_token": "o"}))
            .starts_with("connections.support.oauth_token:")
    );
    assert!(error(json!({"subdomain": "acme", "api_token": "t"})).starts_with("connections.support.email: missing"));
    assert!(error(json!({"subdomain": "acme", "email": EMAIL})).starts_with("connections.support.api_token: missing"));
    assert!(error(json!({"subdomain": "acme"})).starts_with("connections.support.api_token: missing"));
    assert!(
        error(json!({"base_url": "http://support.example.com", "oauth_token": "o"}))
            .starts_with("connections.support.base_url: \"http://support.example.com\" is plain http://")
    );
    assert!(
        error(json!({"subdomain": "acme", "email": "nobody", "api_token": "t"}))
            .starts_with("connections.support.email:")
    );
    assert!(
        error(json!({"subdomain": "acme", "oauth_token": "o", "timeout_secs": 0}))
            .starts_with("connections.support.timeout_secs:")
    );
    assert!(
        error(json!({"subdomain": "acme", "oauth_token": "o", "search": "type:user -tags:x"}))
            .starts_with("connections.support.search:")
    );
    let ok: ZendeskConfig = serde_json::from_value(json!({"subdomain": "Acme", "oauth_token": "o"})).unwrap();
    assert_eq!(ok.validate("c").unwrap().base_url, "https://acme.zendesk.com");
    let secret = format!("{:?}", ok.validate("c").unwrap());
    assert!(!secret.contains("\"o\""), "secrets are not printed: {secret}");
}

#[tokio::test]
async fn listing_walks_the_incremental_export_with_fields_by_title_and_conversations() {
    let sandbox = ZendeskSandbox::new(25, 4);
    quiet(&sandbox);
    // The newest ticket changed within the last minute, which the export holds back.
    sandbox.advance(120);
    let zendesk = token_connector(&start(&sandbox).await);
    zendesk.check("tickets").await.unwrap();
    let mut request = PageRequest { cursor: None, per_page: 10, modified_after: None };
    let mut ids = Vec::new();
    let mut pages = 0;
    loop {
        let page = zendesk.list("tickets", &request).await.unwrap();
        pages += 1;
        for record in &page.records {
            let ticket = sandbox.ticket(record.id.parse().unwrap()).unwrap();
            assert_eq!(record.version.0, ticket["updated_at"].as_str().unwrap());
            assert_eq!(record.fields["subject"], ticket["subject"]);
            assert_eq!(record.fields["tags"], ticket["tags"]);
            assert_eq!(record.fields["custom.Category"], ticket["custom_fields"][0]["value"]);
            assert!(record.fields.contains_key("custom.Summary"));
            let organization = enrichd_zendesk::sandbox::ORGANIZATIONS
                .iter()
                .find(|(id, _)| ticket["organization_id"] == *id)
                .map(|(_, name)| json!(name));
            assert_eq!(record.fields["organization"], organization.unwrap_or(Value::Null));
            let conversation = record.fields["conversation"].as_str().unwrap();
            assert!(conversation.contains("end-user, public]"), "{conversation}");
            assert!(conversation.contains(ticket["description"].as_str().unwrap()));
        }
        ids.extend(page.records.iter().map(|r| r.id.parse::<u64>().unwrap()));
        match page.next {
            Some(cursor) => request.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    ids.sort_unstable();
    assert_eq!(ids, (1..=25).collect::<Vec<_>>());
}

#[tokio::test]
async fn discovery_searches_first_and_switches_to_the_export_past_one_thousand_results() {
    let sandbox = ZendeskSandbox::with_triaged_share(1300, 6, 0.15);
    quiet(&sandbox);
    sandbox.advance(600); // everything indexed by Search and out of the export's last minute
    let base = start(&sandbox).await;
    let zendesk =
        connector(json!({"base_url": base, "email": EMAIL, "api_token": API_TOKEN, "search": "-tags:triaged"}));
    let untriaged: Vec<u64> = sandbox
        .ticket_ids()
        .into_iter()
        .filter(|id| !sandbox.ticket(*id).unwrap()["tags"].as_array().unwrap().contains(&json!("triaged")))
        .collect();
    assert!(untriaged.len() > 1000, "the test needs more untriaged tickets than Search returns");

    let mut request = PageRequest { cursor: None, per_page: 1000, modified_after: None };
    let mut from_search = Vec::new();
    let mut from_export = Vec::new();
    loop {
        let searching = request.cursor.as_deref().is_none_or(|c| c.starts_with("search:"));
        let page = zendesk.list("tickets", &request).await.unwrap();
        let ids = page.records.iter().map(|r| r.id.parse::<u64>().unwrap());
        if searching {
            assert_eq!(page.total, Some(untriaged.len() as u64), "Search counts past its cap");
            from_search.extend(ids);
        } else {
            from_export.extend(ids);
        }
        match page.next {
            Some(next) => request.cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(from_search.len(), 1000, "Search gives its 1,000 results");
    assert!(from_search.iter().all(|id| untriaged.contains(id)), "Search found untriaged tickets only");
    assert_eq!(sandbox.stats().search, 10, "no page past the cap was asked for (it is a 422)");
    let mut every: Vec<u64> = from_search.iter().chain(&from_export).copied().collect();
    every.sort_unstable();
    every.dedup();
    assert!(untriaged.iter().all(|id| every.contains(id)), "past the cap the export finds the rest");
    assert_eq!(from_export.len(), 1300, "the export continues from the beginning");

    let plain = token_connector(&base);
    let cursor = PageRequest { cursor: Some("search:2".into()), per_page: 10, modified_after: None };
    let err = plain.list("tickets", &cursor).await.unwrap_err();
    assert!(err.message.contains("no `search` condition"), "{err}");
}

#[tokio::test]
async fn dropdown_options_are_read_live_once_per_connector() {
    let sandbox = ZendeskSandbox::new(3, 4);
    let base = start(&sandbox).await;
    let zendesk = token_connector(&base);
    let options = |fields: &[enrichd_zendesk::CustomField]| {
        fields.iter().find(|f| f.title == "Category").map(|f| (f.kind.clone(), f.options.clone())).unwrap()
    };
    let (kind, before) = options(zendesk.custom_fields().await.unwrap());
    assert_eq!(kind, "tagger");
    assert_eq!(before, ["billing", "technical_issue", "shipping", "account_access", "feedback"]);
    sandbox.delete_category_option("shipping");
    let (_, cached) = options(zendesk.custom_fields().await.unwrap());
    assert_eq!(cached, before, "one connector (one run) reads the fields once");
    let (_, fresh) = options(token_connector(&base).custom_fields().await.unwrap());
    assert!(!fresh.contains(&"shipping".to_owned()) && fresh.len() == 4, "a new run sees the live options");
}

#[tokio::test]
async fn fetch_reads_current_versions_through_show_many() {
    let sandbox = ZendeskSandbox::new(8, 4);
    let zendesk = token_connector(&start(&sandbox).await);
    let before = zendesk.fetch("tickets", &["3".into(), "999".into()]).await.unwrap();
    assert_eq!(before.len(), 1, "an unknown ticket is absent");
    sandbox.edit_as_agent(3, json!({"additional_tags": ["agent_was_here"]})).unwrap();
    let after = zendesk.fetch("tickets", &["3".into()]).await.unwrap();
    assert_ne!(after[0].version, before[0].version, "an agent's edit moves the version");
    assert!(after[0].fields["tags"].as_array().unwrap().contains(&json!("agent_was_here")));
    assert!(!after[0].fields.contains_key("conversation"), "fetch re-reads versions only");
    let err = zendesk.fetch("users", &["1".into()]).await.unwrap_err();
    assert!(err.message.contains("unknown entity \"users\""));
}

#[tokio::test]
async fn a_batch_is_a_job_whose_results_become_per_ticket_outcomes() {
    let sandbox = ZendeskSandbox::with_triaged_share(6, 8, 0.0);
    let zendesk = token_connector(&start(&sandbox).await);
    let records = zendesk.fetch("tickets", &["1".into(), "2".into(), "3".into()]).await.unwrap();
    let agent_tags: Vec<Value> = sandbox.ticket(2).unwrap()["tags"].as_array().unwrap().clone();
    let changes = vec![
        change(1, &records[0].version.0, json!({"custom.Category": "shipping", "priority": "high"})),
        change(2, &records[1].version.0, json!({"custom.Category": "billing", "tags": ["ai_triaged"]})),
        change(3, &records[2].version.0, json!({"type": "question", "internal_note": "AI triage: a question"})),
    ];
    let WriteSubmission::Pending(pending) = zendesk.write("tickets", &changes).await.unwrap() else {
        panic!("a batch is an asynchronous job")
    };
    assert_eq!(pending.ids, ["1", "2", "3"]);
    // The option is deleted while the job waits: only ticket 1 fails, and not as a retry.
    sandbox.delete_category_option("shipping");
    let mut outcomes = None;
    for _ in 0..5 {
        if let Some(done) = zendesk.poll_write(&pending).await.unwrap() {
            outcomes = Some(done);
            break;
        }
    }
    let outcomes = outcomes.expect("the job completes");
    match &outcomes[0].result {
        WriteResult::Failed(e) => {
            assert!(!e.retryable, "a deleted option is not a retry: {e}");
            assert!(e.message.contains("ticket 1") && e.message.contains("Category"), "{e}");
        }
        other => panic!("ticket 1 should fail, got {other:?}"),
    }
    assert!(matches!(outcomes[1].result, WriteResult::Written { .. }), "{:?}", outcomes[1]);
    assert!(matches!(outcomes[2].result, WriteResult::Written { .. }), "{:?}", outcomes[2]);
    assert_eq!(sandbox.ticket(1).unwrap()["priority"], Value::Null, "the failed ticket is untouched");
    let ticket2 = sandbox.ticket(2).unwrap();
    for tag in &agent_tags {
        assert!(ticket2["tags"].as_array().unwrap().contains(tag), "the agent's tag {tag} is still there");
    }
    let stored = zendesk.fetch("tickets", &["2".into()]).await.unwrap();
    assert!(zendesk.holds("tags", &json!(["ai_triaged"]), stored[0].field("tags")));
    assert!(zendesk.holds("custom.Category", &json!("billing"), stored[0].field("custom.Category")));
    assert!(!zendesk.restored("tags", &json!(["es"]), stored[0].field("tags")), "a restore must remove what we added");
    let note = sandbox.comments(3).last().cloned().unwrap();
    assert!(!note.public && note.body == "AI triage: a question");
    assert_eq!(sandbox.submissions(2), 1, "submitted once");
}

#[tokio::test]
async fn an_agent_edit_while_the_job_waits_is_a_conflict_not_an_overwrite() {
    let sandbox = ZendeskSandbox::with_triaged_share(4, 8, 0.0);
    let zendesk = token_connector(&start(&sandbox).await);
    let records = zendesk.fetch("tickets", &["1".into(), "2".into()]).await.unwrap();
    let changes = vec![
        change(1, &records[0].version.0, json!({"custom.Category": "billing"})),
        change(2, &records[1].version.0, json!({"custom.Category": "billing"})),
    ];
    let WriteSubmission::Pending(pending) = zendesk.write("tickets", &changes).await.unwrap() else { panic!() };
    sandbox
        .edit_as_agent(
            2,
            json!({"custom_fields": [{"id": enrichd_zendesk::sandbox::CATEGORY_FIELD_ID, "value": "shipping"}]}),
        )
        .unwrap();
    let outcomes = loop {
        if let Some(done) = zendesk.poll_write(&pending).await.unwrap() {
            break done;
        }
    };
    assert!(matches!(outcomes[0].result, WriteResult::Written { .. }), "{:?}", outcomes[0]);
    assert!(matches!(outcomes[1].result, WriteResult::Conflict { .. }), "{:?}", outcomes[1]);
    assert_eq!(sandbox.ticket(2).unwrap()["custom_fields"][0]["value"], "shipping", "the agent's value is intact");
    assert_eq!(sandbox.ticket(1).unwrap()["custom_fields"][0]["value"], "billing");
}

#[tokio::test]
async fn a_stored_job_is_polled_by_a_new_connector_and_never_submitted_again() {
    let sandbox = ZendeskSandbox::with_triaged_share(6, 8, 0.0);
    sandbox.set_faults(Faults { job_cap: 1, job_queued_polls: 2, job_working_polls: 2, ..Default::default() });
    let base = start(&sandbox).await;
    let zendesk = token_connector(&base);
    let records = zendesk.fetch("tickets", &["1".into(), "2".into()]).await.unwrap();
    let changes = vec![
        change(1, &records[0].version.0, json!({"priority": "high"})),
        change(2, &records[1].version.0, json!({"priority": "low"})),
    ];
    let WriteSubmission::Pending(pending) = zendesk.write("tickets", &changes).await.unwrap() else { panic!() };
    assert_eq!(zendesk.poll_write(&pending).await.unwrap(), None, "still queued");
    // The account's job cap: another job while this one is unfinished is refused, retryably.
    let err = zendesk.write("tickets", &changes).await.unwrap_err();
    assert!(err.retryable && err.status == Some(429) && err.code.as_deref() == Some("TooManyJobs"), "{err:?}");
    // The engine stored the job; a restarted daemon (a new connector) reads it back and polls on.
    let stored = serde_json::to_string(&pending).unwrap();
    drop(zendesk);
    let restarted = token_connector(&base);
    let pending: enrichd_connector::PendingWrite = serde_json::from_str(&stored).unwrap();
    let outcomes = loop {
        if let Some(done) = restarted.poll_write(&pending).await.unwrap() {
            break done;
        }
    };
    assert!(outcomes.iter().all(|o| matches!(o.result, WriteResult::Written { .. })), "{outcomes:?}");
    assert_eq!((sandbox.submissions(1), sandbox.submissions(2)), (1, 1), "each ticket submitted once");
    assert_eq!(sandbox.ticket(1).unwrap()["priority"], "high");
}

#[tokio::test]
async fn tickets_agents_edit_during_a_run_end_as_conflicts_with_their_values_intact() {
    let sandbox = ZendeskSandbox::with_triaged_share(40, 8, 0.0);
    sandbox.set_faults(Faults { agent_edit_rate: 0.3, ..Default::default() });
    let zendesk = token_connector(&start(&sandbox).await);
    let ids: Vec<String> = (1..=40).map(|id| id.to_string()).collect();
    // The re-read just before the write; agents pick up some tickets right after it.
    let records = zendesk.fetch("tickets", &ids).await.unwrap();
    let edited = sandbox.agent_edited();
    assert!(!edited.is_empty() && edited.len() < 40, "{edited:?}");
    let changes: Vec<Change> =
        records.iter().map(|r| change(r.id.parse().unwrap(), &r.version.0, json!({"priority": "low"}))).collect();
    let WriteSubmission::Pending(pending) = zendesk.write("tickets", &changes).await.unwrap() else { panic!() };
    let outcomes = loop {
        if let Some(done) = zendesk.poll_write(&pending).await.unwrap() {
            break done;
        }
    };
    for outcome in &outcomes {
        let id: u64 = outcome.id.parse().unwrap();
        let ticket = sandbox.ticket(id).unwrap();
        if edited.contains(&id) {
            assert!(matches!(outcome.result, WriteResult::Conflict { .. }), "{outcome:?}");
            assert_eq!(ticket["priority"], "urgent", "ticket {id}: the agent's value is intact");
        } else {
            assert!(matches!(outcome.result, WriteResult::Written { .. }), "{outcome:?}");
            assert_eq!(ticket["priority"], "low");
        }
    }
}

#[tokio::test]
async fn a_single_write_uses_safe_update_and_a_stale_version_is_a_conflict() {
    let sandbox = ZendeskSandbox::with_triaged_share(4, 8, 0.0);
    let zendesk = token_connector(&start(&sandbox).await);
    let record = zendesk.fetch("tickets", &["2".into()]).await.unwrap().remove(0);
    sandbox.edit_as_agent(2, json!({"priority": "urgent"})).unwrap();
    let submission =
        zendesk.write("tickets", &[change(2, &record.version.0, json!({"priority": "low"}))]).await.unwrap();
    let WriteSubmission::Done(outcomes) = submission else { panic!("one change is written at once") };
    assert!(matches!(outcomes[0].result, WriteResult::Conflict { .. }), "{:?}", outcomes[0]);
    assert_eq!(sandbox.ticket(2).unwrap()["priority"], "urgent", "the agent's value is intact");

    let record = zendesk.fetch("tickets", &["2".into()]).await.unwrap().remove(0);
    let submission = zendesk
        .write("tickets", &[change(2, &record.version.0, json!({"custom.Category": "feedback"}))])
        .await
        .unwrap();
    let WriteSubmission::Done(outcomes) = submission else { panic!("done at once") };
    let WriteResult::Written { version: Some(version) } = &outcomes[0].result else { panic!("{:?}", outcomes[0]) };
    assert_eq!(version.0, sandbox.ticket(2).unwrap()["updated_at"].as_str().unwrap());
    assert_eq!(sandbox.ticket(2).unwrap()["custom_fields"][0]["value"], "feedback");

    let mut fields = Map::new();
    fields.insert("description".into(), json!("rewritten"));
    let bad = Change { id: "2".into(), base_version: version.clone(), fields, native: None, mode: WriteMode::Merge };
    let err = zendesk.write("tickets", &[bad]).await.unwrap_err();
    assert!(err.message.contains("ticket 2") && err.message.contains("\"description\" cannot be written"), "{err}");
}

#[tokio::test]
async fn rate_limits_are_retried_on_reads_and_classified_on_writes() {
    let sandbox = ZendeskSandbox::new(4, 8);
    let zendesk = token_connector(&start(&sandbox).await);
    sandbox.set_faults(Faults { rate_limited_requests: 1, retry_after_secs: 1, ..Default::default() });
    let started = std::time::Instant::now();
    assert_eq!(zendesk.rate_limit(), None);
    let records = zendesk.fetch("tickets", &["1".into()]).await.unwrap();
    let limit = zendesk.rate_limit().expect("the rate-limit headers were read");
    assert_eq!(limit.limit, 2500);
    assert!(limit.remaining < 2500 && limit.reset_secs.is_some(), "{limit:?}");
    assert_eq!(records.len(), 1);
    assert!(started.elapsed() >= Duration::from_secs(1), "the read waited for Retry-After");
    assert_eq!(sandbox.stats().rate_limited, 1);

    sandbox.set_faults(Faults { rate_limited_requests: 1, retry_after_secs: 7, ..Default::default() });
    let changes =
        vec![change(1, &records[0].version.0, json!({"priority": "low"})), change(2, "x", json!({"priority": "low"}))];
    let err = zendesk.write("tickets", &changes).await.unwrap_err();
    assert!(err.retryable && err.status == Some(429), "{err:?}");
    assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
    assert_eq!(sandbox.submissions(1), 0, "nothing was submitted");
}

#[tokio::test]
async fn auth_failures_are_permanent_and_bearer_tokens_work() {
    let sandbox = ZendeskSandbox::new(4, 8);
    quiet(&sandbox);
    let base = start(&sandbox).await;
    let wrong = connector(json!({"base_url": base, "email": EMAIL, "api_token": "not-the-token"}));
    let err = wrong.check("tickets").await.unwrap_err();
    assert!(!err.retryable && err.status == Some(401), "{err:?}");
    assert!(err.message.contains("Couldn't authenticate you"), "{err}");
    assert!(!err.message.contains("not-the-token"));

    let bearer = connector(json!({"base_url": base, "oauth_token": OAUTH_TOKEN}));
    bearer.check("tickets").await.unwrap();
    let read_only = connector(json!({"base_url": base, "oauth_token": READ_ONLY_OAUTH_TOKEN}));
    let record = read_only.fetch("tickets", &["1".into()]).await.unwrap().remove(0);
    let changes = vec![
        change(1, &record.version.0, json!({"priority": "low"})),
        change(2, &record.version.0, json!({"priority": "low"})),
    ];
    let err = read_only.write("tickets", &changes).await.unwrap_err();
    assert!(!err.retryable && err.status == Some(403), "{err:?}");
    assert_eq!(err.code.as_deref(), Some("Forbidden"), "JSON:API errors[] read: {err}");
    let too_many: Vec<Change> = (1..=101).map(|id| change(id, "v", json!({"priority": "low"}))).collect();
    assert!(bearer.write("tickets", &too_many).await.unwrap_err().message.contains("at most 100"));
}

/// The allowance the account reports (`ratelimit-remaining`, `ratelimit-reset`) paces the
/// connector: past the allowance Zendesk answers 429, so requests wait for the window instead.
#[tokio::test]
async fn the_reported_allowance_paces_requests_instead_of_running_into_429s() {
    let sandbox = ZendeskSandbox::new(30, 4);
    sandbox.set_faults(Faults {
        requests_per_window: 20,
        window_secs: 2,
        enforce_allowance: true,
        incremental_per_minute: None,
        ..Default::default()
    });
    let zendesk = token_connector(&start(&sandbox).await);
    let started = std::time::Instant::now();
    let page =
        zendesk.list("tickets", &PageRequest { cursor: None, per_page: 100, modified_after: None }).await.unwrap();
    assert_eq!(page.records.len(), 30);
    let stats = sandbox.stats();
    assert!(stats.requests > 20, "more requests than one window allows: {stats:?}");
    assert_eq!(stats.rate_limited, 0, "paced by the reported allowance, never refused: {stats:?}");
    assert!(started.elapsed() >= Duration::from_secs(1), "it waited for the window to reset");
}
