//! The Freshdesk connector against the sandbox over real HTTP: config validation, listing past the
//! page wall, conversations, allowed values, fetch, writes (per ticket and bulk jobs), tags merged,
//! private notes, validation errors, rate limits and auth failures.

use std::time::Duration;

use enrichd_connector::{Change, Connector, PageRequest, Record, Version, WriteMode, WriteResult, WriteSubmission};
use enrichd_freshdesk::sandbox::{API_KEY, CATEGORY_FIELD, Faults, FreshdeskSandbox};
use enrichd_freshdesk::{Freshdesk, FreshdeskConfig};
use serde_json::{Value, json};

async fn start(sandbox: &FreshdeskSandbox) -> String {
    let addr = sandbox.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    format!("http://{addr}")
}

fn connector(config: Value) -> Freshdesk {
    let config: FreshdeskConfig = serde_json::from_value(config).unwrap();
    Freshdesk::new(config.validate("connections.helpdesk").unwrap()).unwrap()
}

fn key_connector(base: &str) -> Freshdesk {
    connector(json!({"base_url": base, "api_key": API_KEY}))
}

fn change(id: &str, version: &Version, fields: Value) -> Change {
    let Value::Object(fields) = fields else { panic!("fields must be an object") };
    Change { id: id.into(), base_version: version.clone(), fields, native: None, mode: WriteMode::Merge }
}

fn tags(ticket: &Value) -> Vec<String> {
    ticket["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect()
}

/// Every page of a listing from `request`: the records in order, and the last page's `resume`.
async fn list_all(freshdesk: &Freshdesk, mut request: PageRequest) -> (Vec<Record>, Option<String>, usize) {
    let mut records = Vec::new();
    let mut pages = 0;
    loop {
        let page = freshdesk.list("tickets", &request).await.unwrap();
        pages += 1;
        records.extend(page.records);
        match page.next {
            Some(next) => request.cursor = Some(next),
            None => return (records, page.resume, pages),
        }
    }
}

async fn poll(
    freshdesk: &Freshdesk,
    pending: &enrichd_connector::PendingWrite,
) -> Vec<enrichd_connector::WriteOutcome> {
    for _ in 0..10 {
        if let Some(done) = freshdesk.poll_write(pending).await.unwrap() {
            return done;
        }
    }
    panic!("the job did not complete in 10 polls")
}

#[test]
fn config_errors_name_the_key() {
    let error = |config: Value| -> String {
        match serde_json::from_value::<FreshdeskConfig>(config) {
            Err(e) => e.to_string(),
            Ok(c) => c.validate("connections.helpdesk").unwrap_err().to_string(),
        }
    };
    assert!(error(json!({"domain": "acme", "api_key": "k", "password": "x"})).contains("unknown field `password`"));
    assert!(error(json!({"api_key": "k"})).starts_with("connections.helpdesk.domain: missing"));
    assert!(
        error(json!({"domain": "acme.freshdesk.com", "api_key": "k"}))
            .starts_with("connections.helpdesk.domain: \"acme.freshdesk.com\" is not a Freshdesk domain")
    );
    assert!(
        error(json!({"domain": "acme", "base_url": "https://x", "api_key": "k"}))
            .starts_with("connections.helpdesk.base_url:")
    );
    assert!(error(json!({"domain": "acme"})).starts_with("connections.helpdesk.api_key: missing"));
    assert!(error(json!({"domain": "acme", "api_key": " "})).starts_with("connections.helpdesk.api_key: is empty"));
    assert!(
        error(json!({"domain": "acme", "api_key": "k:X"})).starts_with("connections.helpdesk.api_key: contains ':'")
    );
    assert!(
        error(json!({"base_url": "http://help.example.com", "api_key": "k"}))
            .starts_with("connections.helpdesk.base_url: \"http://help.example.com\" is plain http://")
    );
    assert!(
        error(json!({"domain": "acme", "api_key": "k", "timeout_secs": 0}))
            .starts_with("connections.helpdesk.timeout_secs:")
    );
    assert!(
        error(json!({"domain": "acme", "api_key": "k", "conversation_chars": 50}))
            .starts_with("connections.helpdesk.conversation_chars:")
    );
    assert!(
        error(json!({"domain": "acme", "api_key": "k", "list_since": "yesterday"}))
            .starts_with("connections.helpdesk.list_since: \"yesterday\" is not an RFC 3339 instant")
    );
    let ok: FreshdeskConfig = serde_json::from_value(
        json!({"domain": "Acme", "api_key": "s3cret-key", "list_since": "2024-01-01T02:00:00+02:00"}),
    )
    .unwrap();
    let options = ok.validate("c").unwrap();
    assert_eq!(options.base_url, "https://acme.freshdesk.com");
    assert_eq!(options.list_since, "2024-01-01T00:00:00Z");
    assert!(!format!("{options:?}").contains("s3cret-key"), "secrets are not printed");
}

#[tokio::test]
async fn listing_goes_past_the_page_wall_completely_and_in_order() {
    let sandbox = FreshdeskSandbox::new(120, 4);
    // Three pages of ten is all this account serves per window: 120 tickets need the window to move.
    sandbox.set_page_wall(3);
    let freshdesk = key_connector(&start(&sandbox).await);
    freshdesk.check("tickets").await.unwrap();
    let mut request = PageRequest { cursor: None, per_page: 10, modified_after: None };
    let first = freshdesk.list("tickets", &request).await.unwrap();
    // An agent edits a ticket already listed: it moves to the end of the listing and must not
    // shift an unseen ticket onto a page already read.
    sandbox.edit_as_agent(3, json!({"priority": 2})).unwrap();
    request.cursor = first.next.clone();
    let (rest, resume, pages) = list_all(&freshdesk, request).await;
    let records: Vec<Record> = first.records.into_iter().chain(rest).collect();
    assert!(pages >= 12, "{pages} pages");
    assert_eq!(sandbox.stats().page_wall_hits, 0, "the wall was never hit");
    let mut ids: Vec<u64> = records.iter().map(|r| r.id.parse().unwrap()).collect();
    let versions: Vec<&str> = records.iter().map(|r| r.version.0.as_str()).collect();
    assert!(versions.windows(2).all(|w| w[0] <= w[1]), "oldest change first");
    assert_eq!(ids.iter().filter(|id| **id == 3).count(), 2, "the edited ticket is listed again, as changed");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids, (1..=120).collect::<Vec<_>>(), "every ticket listed");

    for record in records.iter().filter(|r| r.id != "3") {
        let ticket = sandbox.ticket(record.id.parse().unwrap()).unwrap();
        assert_eq!(record.version.0, ticket["updated_at"].as_str().unwrap());
        assert_eq!(record.fields["subject"], ticket["subject"]);
        assert_eq!(record.fields["description"], ticket["description_text"]);
        assert_eq!(record.fields["tags"], ticket["tags"]);
        let priority = ["low", "medium", "high", "urgent"][ticket["priority"].as_u64().unwrap() as usize - 1];
        assert_eq!(record.fields["priority"], priority);
        assert!(["open", "pending", "resolved"].contains(&record.fields["status"].as_str().unwrap()));
        assert_eq!(record.fields["custom.Category"], ticket["custom_fields"][CATEGORY_FIELD]);
        assert!(record.fields.contains_key("custom.Summary"));
        let company = enrichd_freshdesk::sandbox::COMPANIES
            .iter()
            .find(|(id, _)| ticket["company_id"] == *id)
            .map(|(_, name)| json!(name));
        assert_eq!(record.fields["company"], company.unwrap_or(Value::Null));
        let conversation = record.fields["conversation"].as_str().unwrap();
        assert!(conversation.starts_with(&format!("[{} customer, public]", ticket["created_at"].as_str().unwrap())));
        assert!(conversation.contains(ticket["description_text"].as_str().unwrap()));
    }
    let triaged = records.iter().filter(|r| r.field("custom.Category").is_some()).count();
    assert!((30..=70).contains(&triaged), "about 40% already triaged: {triaged}");

    // The next incremental listing starts where this one ended and sees only what changed.
    let resume = resume.expect("the last page says where a later listing continues");
    sandbox.advance(60);
    let new = sandbox.create_ticket("Refund please", "I returned the item two weeks ago.");
    let (later, _, _) =
        list_all(&freshdesk, PageRequest { cursor: Some(resume), per_page: 10, modified_after: None }).await;
    let later: Vec<&str> = later.iter().map(|r| r.id.as_str()).collect();
    assert!(later.contains(&new.to_string().as_str()), "{later:?}");
    assert!(later.len() <= 2, "only the new ticket and the last one seen: {later:?}");
}

#[tokio::test]
async fn modified_after_lists_only_later_changes_and_bad_cursors_are_refused() {
    let sandbox = FreshdeskSandbox::new(30, 4);
    let freshdesk = key_connector(&start(&sandbox).await);
    let cut = sandbox.ticket(21).unwrap()["updated_at"].as_str().unwrap().to_owned();
    let request = PageRequest { cursor: None, per_page: 100, modified_after: Some(cut.clone()) };
    let (records, _, _) = list_all(&freshdesk, request).await;
    assert!(!records.is_empty());
    assert!(records.iter().all(|r| r.version.0 >= cut), "only changes at or after {cut}");
    let expected = sandbox
        .ticket_ids()
        .into_iter()
        .filter(|id| sandbox.ticket(*id).unwrap()["updated_at"].as_str().unwrap() >= cut.as_str())
        .count();
    assert_eq!(records.len(), expected);

    let bad = PageRequest { cursor: Some("search:2".into()), per_page: 10, modified_after: None };
    let err = freshdesk.list("tickets", &bad).await.unwrap_err();
    assert!(!err.retryable && err.message.contains("\"search:2\" is not one this connector wrote"), "{err}");
    let err = freshdesk.list("contacts", &PageRequest::default()).await.unwrap_err();
    assert!(err.message.contains("unknown entity \"contacts\""), "{err}");
}

#[tokio::test]
async fn a_long_conversation_keeps_the_description_and_the_latest_messages() {
    let sandbox = FreshdeskSandbox::with_triaged_share(3, 4, 0.0);
    let base = start(&sandbox).await;
    let api = enrichd_connector::http::client(Duration::from_secs(10));
    for n in 0..30 {
        let note = json!({"body": format!("note {n}: {}", "checked the logs again ".repeat(4)), "private": n % 2 == 0});
        let response = api
            .post(format!("{base}/api/v2/tickets/2/notes"))
            .basic_auth(API_KEY, Some("X"))
            .json(&note)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
    }
    let freshdesk = connector(json!({"base_url": base, "api_key": API_KEY, "conversation_chars": 800}));
    let (records, _, _) = list_all(&freshdesk, PageRequest { cursor: None, per_page: 100, modified_after: None }).await;
    let record = records.iter().find(|r| r.id == "2").unwrap();
    let conversation = record.fields["conversation"].as_str().unwrap();
    assert!(conversation.chars().count() <= 800, "{}", conversation.chars().count());
    let description = sandbox.ticket(2).unwrap()["description_text"].as_str().unwrap().to_owned();
    assert!(conversation.contains(&description), "the first message is kept");
    assert!(conversation.contains("note 29:"), "the latest message is kept");
    assert!(conversation.contains("agent, private note]"), "{conversation}");
    assert!(conversation.contains("message(s) left out"));
    assert!(!conversation.contains("note 3:"), "the middle is left out");
}

#[tokio::test]
async fn allowed_values_are_the_live_choices() {
    let sandbox = FreshdeskSandbox::new(3, 4);
    let freshdesk = key_connector(&start(&sandbox).await);
    let category = freshdesk.allowed_values("tickets", "custom.Category").await.unwrap().unwrap();
    assert_eq!(category, ["Billing", "Technical issue", "Shipping", "Account access", "Feedback"]);
    sandbox.delete_category_choice("Shipping");
    let category = freshdesk.allowed_values("tickets", "custom.Category").await.unwrap().unwrap();
    assert_eq!(category, ["Billing", "Technical issue", "Account access", "Feedback"], "read fresh each call");
    assert_eq!(
        freshdesk.allowed_values("tickets", "priority").await.unwrap().unwrap(),
        ["low", "medium", "high", "urgent"]
    );
    assert_eq!(
        freshdesk.allowed_values("tickets", "type").await.unwrap().unwrap(),
        ["Question", "Incident", "Problem", "Feature Request", "Refund"]
    );
    assert_eq!(
        freshdesk.allowed_values("tickets", "status").await.unwrap().unwrap(),
        ["open", "pending", "resolved", "closed"]
    );
    assert_eq!(freshdesk.allowed_values("tickets", "custom.Summary").await.unwrap(), None, "a text field is free");
    assert_eq!(freshdesk.allowed_values("tickets", "subject").await.unwrap(), None);
}

#[tokio::test]
async fn fetch_reads_the_current_version_after_an_agent_edit() {
    let sandbox = FreshdeskSandbox::new(8, 4);
    let freshdesk = key_connector(&start(&sandbox).await);
    let before = freshdesk.fetch("tickets", &["3".into(), "999".into()]).await.unwrap();
    assert_eq!(before.len(), 1, "an unknown ticket is absent");
    let mut tags = tags(&sandbox.ticket(3).unwrap());
    tags.push("agent_was_here".into());
    sandbox.edit_as_agent(3, json!({"tags": tags, "priority": 4})).unwrap();
    let after = freshdesk.fetch("tickets", &["3".into()]).await.unwrap();
    assert_ne!(after[0].version, before[0].version, "an agent's edit moves the version");
    assert_eq!(after[0].fields["priority"], "urgent");
    assert!(after[0].fields["tags"].as_array().unwrap().contains(&json!("agent_was_here")));
    assert!(!after[0].fields.contains_key("conversation"), "fetch re-reads versions and values only");
}

#[tokio::test]
async fn single_writes_merge_tags_map_names_and_add_a_private_note() {
    let sandbox = FreshdeskSandbox::with_triaged_share(6, 8, 0.0);
    let freshdesk = key_connector(&start(&sandbox).await);
    let agent_tags = vec!["vip".to_owned(), "web".to_owned()];
    sandbox.edit_as_agent(1, json!({"tags": agent_tags})).unwrap();
    sandbox.edit_as_agent(2, json!({"tags": agent_tags})).unwrap();
    let records = freshdesk.fetch("tickets", &["1".into(), "2".into()]).await.unwrap();
    // Ticket 1 carries the re-read ticket (the engine's way); ticket 2 makes the connector read it.
    let mut with_native = change(
        "1",
        &records[0].version,
        json!({"tags": ["ai_triaged", "VIP"], "priority": "high",
        "custom.Category": "Billing", "type": "Refund", "internal_note": "AI triage: billing, refund"}),
    );
    with_native.native = records[0].native.clone();
    let without_native = change("2", &records[1].version, json!({"tags": ["ai_triaged"], "status": "pending"}));
    let WriteSubmission::Done(outcomes) = freshdesk.write("tickets", &[with_native, without_native]).await.unwrap()
    else {
        panic!("different changes are written ticket by ticket")
    };
    assert!(outcomes.iter().all(|o| matches!(o.result, WriteResult::Written { .. })), "{outcomes:?}");
    let one = sandbox.ticket(1).unwrap();
    assert_eq!(tags(&one), ["vip", "web", "ai_triaged"], "the agent's tags kept, no duplicate of VIP");
    assert_eq!((one["priority"].clone(), one["type"].clone()), (json!(3), json!("Refund")));
    assert_eq!(one["custom_fields"][CATEGORY_FIELD], "Billing");
    let note = sandbox.conversations(1).last().cloned().unwrap();
    assert!(note.private && !note.incoming && note.body_text == "AI triage: billing, refund");
    let two = sandbox.ticket(2).unwrap();
    assert_eq!(tags(&two), ["vip", "web", "ai_triaged"]);
    assert_eq!(two["status"], 3);
    assert_eq!(sandbox.stats().bulk_updates, 0);

    let stored = freshdesk.fetch("tickets", &["1".into()]).await.unwrap().remove(0);
    assert!(freshdesk.holds("tags", &json!(["ai_triaged"]), stored.field("tags")));
    assert!(freshdesk.holds("priority", &json!("high"), stored.field("priority")));
    assert!(!freshdesk.restored("tags", &json!(["vip", "web"]), stored.field("tags")));

    // Undo: a restore puts back exactly the earlier list.
    let mut restore = change("1", &stored.version, json!({"tags": ["vip", "web"]}));
    restore.mode = WriteMode::Restore;
    let WriteSubmission::Done(outcomes) = freshdesk.write("tickets", &[restore]).await.unwrap() else { panic!() };
    let WriteResult::Written { version: Some(version) } = &outcomes[0].result else { panic!("{outcomes:?}") };
    let one = sandbox.ticket(1).unwrap();
    assert_eq!(version.0, one["updated_at"].as_str().unwrap(), "the written version is the ticket's new one");
    assert_eq!(tags(&one), ["vip", "web"]);
    let stored = freshdesk.fetch("tickets", &["1".into()]).await.unwrap().remove(0);
    assert!(freshdesk.restored("tags", &json!(["vip", "web"]), stored.field("tags")));
}

#[tokio::test]
async fn identical_changes_are_one_bulk_job_with_per_ticket_outcomes() {
    let sandbox = FreshdeskSandbox::with_triaged_share(20, 8, 0.0);
    sandbox.set_faults(Faults {
        bulk_failure_rate: 0.3,
        job_queued_polls: 2,
        job_in_progress_polls: 2,
        ..Default::default()
    });
    let freshdesk = key_connector(&start(&sandbox).await);
    let ids: Vec<String> = (1..=20).map(|id| id.to_string()).collect();
    let records = freshdesk.fetch("tickets", &ids).await.unwrap();
    let changes: Vec<Change> = records
        .iter()
        .map(|r| change(&r.id, &r.version, json!({"custom.Category": "Technical issue", "priority": "high"})))
        .collect();
    let WriteSubmission::Pending(pending) = freshdesk.write("tickets", &changes).await.unwrap() else {
        panic!("identical changes are one bulk_update job")
    };
    assert_eq!(pending.ids, ids);
    let body = sandbox.received_writes().pop().unwrap().body;
    assert_eq!(
        body["bulk_action"]["properties"],
        json!({"priority": 3, "custom_fields": {CATEGORY_FIELD: "Technical issue"}})
    );
    assert_eq!(freshdesk.poll_write(&pending).await.unwrap(), None, "queued");
    assert_eq!(freshdesk.poll_write(&pending).await.unwrap(), None, "queued");
    assert_eq!(freshdesk.poll_write(&pending).await.unwrap(), None, "in progress");
    // The engine stored the job: a restarted daemon (a new connector) polls it to the end.
    let outcomes = poll(&key_connector(&start(&sandbox).await), &pending).await;
    let failed: Vec<&str> =
        outcomes.iter().filter(|o| matches!(o.result, WriteResult::Failed(_))).map(|o| o.id.as_str()).collect();
    assert!(!failed.is_empty() && failed.len() < 20, "a seeded share fails: {failed:?}");
    for outcome in &outcomes {
        let ticket = sandbox.ticket(outcome.id.parse().unwrap()).unwrap();
        match &outcome.result {
            WriteResult::Written { .. } => assert_eq!(ticket["priority"], 3),
            WriteResult::Failed(e) => {
                assert!(e.retryable, "a busy ticket may be tried again: {e}");
                assert!(e.message.contains(&format!("ticket {}", outcome.id)), "{e}");
                assert_eq!(ticket["priority"], 1, "a failed ticket is untouched");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(sandbox.submissions(outcome.id.parse().unwrap()), 1, "each ticket submitted once");
    }
}

#[tokio::test]
async fn a_deleted_choice_is_a_clear_per_ticket_failure() {
    let sandbox = FreshdeskSandbox::with_triaged_share(6, 8, 0.0);
    let freshdesk = key_connector(&start(&sandbox).await);
    let records = freshdesk.fetch("tickets", &["1".into(), "2".into(), "3".into()]).await.unwrap();
    let shipping = |r: &Record| change(&r.id, &r.version, json!({"custom.Category": "Shipping"}));
    // A bulk job: the choice is deleted while the job waits.
    let WriteSubmission::Pending(pending) =
        freshdesk.write("tickets", &[shipping(&records[0]), shipping(&records[1])]).await.unwrap()
    else {
        panic!("a bulk job")
    };
    sandbox.delete_category_choice("Shipping");
    for outcome in poll(&freshdesk, &pending).await {
        let WriteResult::Failed(e) = outcome.result else { panic!("{outcome:?}") };
        assert!(!e.retryable, "a deleted choice is not a retry: {e}");
        assert!(
            e.message.contains(&format!("ticket {}", outcome.id))
                && e.message.contains("custom.Category (cf_category)"),
            "{e}"
        );
        assert!(e.message.contains("It should be one of these values"), "{e}");
    }
    // A single write after the deletion.
    let WriteSubmission::Done(outcomes) = freshdesk.write("tickets", &[shipping(&records[2])]).await.unwrap() else {
        panic!()
    };
    let WriteResult::Failed(e) = &outcomes[0].result else { panic!("{outcomes:?}") };
    assert!(!e.retryable && e.status == Some(400) && e.code.as_deref() == Some("invalid_value"), "{e:?}");
    assert!(e.message.contains("PUT tickets/3") && e.message.contains("custom.Category (cf_category)"), "{e}");
    assert_eq!(sandbox.ticket(3).unwrap()["custom_fields"][CATEGORY_FIELD], Value::Null);
}

#[tokio::test]
async fn bad_values_fail_their_ticket_naming_the_field() {
    let sandbox = FreshdeskSandbox::with_triaged_share(6, 8, 0.0);
    let freshdesk = key_connector(&start(&sandbox).await);
    let v = Version("x".into());
    let changes = vec![
        change("1", &v, json!({"priority": "critical"})),
        change("2", &v, json!({"custom.Colour": "red"})),
        change("3", &v, json!({"type": "Banana"})),
        change("4", &v, json!({"description": "rewritten"})),
        change("5", &v, json!({"priority": "low"})),
        change("999", &v, json!({"priority": "low"})),
    ];
    let WriteSubmission::Done(outcomes) = freshdesk.write("tickets", &changes).await.unwrap() else { panic!() };
    let message = |i: usize| match &outcomes[i].result {
        WriteResult::Failed(e) => {
            assert!(!e.retryable, "{e}");
            e.message.clone()
        }
        other => panic!("change {i}: {other:?}"),
    };
    assert!(message(0).contains("ticket 1: priority: \"critical\" is not a Freshdesk priority"), "{}", message(0));
    assert!(
        message(1).contains("ticket 2: custom.Colour: there is no custom ticket field labelled \"Colour\""),
        "{}",
        message(1)
    );
    let banana = message(2);
    assert!(
        banana.contains(
            "PUT tickets/3: HTTP 400 invalid_value: Validation failed: type: It should be one of these values"
        ),
        "{banana}"
    );
    assert!(message(3).contains("ticket 4: description: cannot be written"), "{}", message(3));
    assert!(matches!(outcomes[4].result, WriteResult::Written { .. }), "the good change in the call is written");
    assert!(message(5).contains("ticket 999 does not exist"), "{}", message(5));
    assert_eq!(sandbox.stats().single_updates, 3, "only the changes that map are sent");
}

#[tokio::test]
async fn rate_limits_are_retried_on_reads_and_per_ticket_on_writes() {
    let sandbox = FreshdeskSandbox::new(4, 8);
    let freshdesk = key_connector(&start(&sandbox).await);
    assert_eq!(freshdesk.rate_limit(), None);
    sandbox.set_faults(Faults { rate_limited_requests: 1, retry_after_secs: 1, ..Default::default() });
    let started = std::time::Instant::now();
    let records = freshdesk.fetch("tickets", &["1".into()]).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "the read waited for Retry-After");
    assert_eq!(records.len(), 1);
    assert_eq!(sandbox.stats().rate_limited, 1);
    let limit = freshdesk.rate_limit().expect("the rate-limit headers were read");
    assert_eq!((limit.total, limit.used_current_request), (700, Some(1)));
    assert!(limit.remaining < 700, "{limit:?}");

    sandbox.set_faults(Faults { rate_limited_requests: 1, retry_after_secs: 7, ..Default::default() });
    let changes = vec![
        change("1", &records[0].version, json!({"priority": "low"})),
        change("2", &records[0].version, json!({"priority": "medium"})),
    ];
    let WriteSubmission::Done(outcomes) = freshdesk.write("tickets", &changes).await.unwrap() else { panic!() };
    let WriteResult::Failed(e) = &outcomes[0].result else { panic!("{outcomes:?}") };
    assert!(e.retryable && e.status == Some(429) && e.retry_after == Some(Duration::from_secs(7)), "{e:?}");
    assert!(matches!(outcomes[1].result, WriteResult::Written { .. }), "the next ticket went through: {outcomes:?}");
    assert_eq!(sandbox.ticket(2).unwrap()["priority"], 2);

    // A 503 and a truncated body on reads are retried too.
    sandbox.set_faults(Faults { server_errors: 1, malformed_bodies: 1, ..Default::default() });
    let before = sandbox.stats().ticket_reads;
    assert_eq!(freshdesk.fetch("tickets", &["2".into()]).await.unwrap()[0].fields["priority"], "medium");
    assert_eq!(sandbox.stats().ticket_reads - before, 2, "the truncated answer was read again");
}

#[tokio::test]
async fn a_wrong_api_key_is_a_clear_permanent_failure() {
    let sandbox = FreshdeskSandbox::new(4, 8);
    let base = start(&sandbox).await;
    let wrong = connector(json!({"base_url": base, "api_key": "not-the-key"}));
    let err = wrong.check("tickets").await.unwrap_err();
    assert!(!err.retryable && err.status == Some(401), "{err:?}");
    assert_eq!(err.code.as_deref(), Some("invalid_credentials"));
    assert!(err.message.contains("You have to be logged in"), "{err}");
    assert!(!err.message.contains("not-the-key"));
    assert_eq!(sandbox.stats().unauthorized, 1, "not retried");
    let too_many: Vec<Change> =
        (1..=101).map(|id| change(&id.to_string(), &Version("v".into()), json!({"priority": "low"}))).collect();
    assert!(key_connector(&base).write("tickets", &too_many).await.unwrap_err().message.contains("at most 100"));
}

#[tokio::test]
async fn agents_editing_between_pull_and_re_read_show_as_new_versions() {
    let sandbox = FreshdeskSandbox::with_triaged_share(30, 8, 0.0);
    sandbox.set_faults(Faults { agent_edit_rate: 0.3, ..Default::default() });
    let freshdesk = key_connector(&start(&sandbox).await);
    let (pulled, _, _) = list_all(&freshdesk, PageRequest { cursor: None, per_page: 100, modified_after: None }).await;
    assert_eq!(pulled.len(), 30);
    assert!(sandbox.agent_edited().is_empty(), "listing alone does not trigger the agents");
    // The engine's re-read just before writing; agents picked up some tickets since the pull.
    let ids: Vec<String> = pulled.iter().map(|r| r.id.clone()).collect();
    let now = freshdesk.fetch("tickets", &ids).await.unwrap();
    let edited = sandbox.agent_edited();
    assert!(!edited.is_empty() && edited.len() < 30, "{edited:?}");
    for (before, after) in pulled.iter().zip(&now) {
        let was_edited = edited.contains(&before.id.parse().unwrap());
        // Freshdesk has no concurrency token: this version change is what the engine's re-check
        // sees, so it ends the item as a conflict instead of writing over the agent.
        assert_eq!(before.version != after.version, was_edited, "ticket {}", before.id);
        if was_edited {
            assert_eq!(after.fields["priority"], "urgent");
            assert!(after.fields["tags"].as_array().unwrap().contains(&json!("agent_edited")));
        }
    }
    // Agents strike once per ticket, before its first read: a read-back sees what the re-read saw.
    let again = freshdesk.fetch("tickets", &ids).await.unwrap();
    assert_eq!(sandbox.agent_edited(), edited);
    assert!(again.iter().zip(&now).all(|(a, b)| a.version == b.version));
}

/// Requests and time for listing 1,000 tickets and writing 100, printed for the README
/// (`cargo nextest run -p enrichd-freshdesk --no-capture -E 'test(costs)'`).
#[tokio::test]
async fn costs_of_listing_and_writing_tickets() {
    let sandbox = FreshdeskSandbox::new(1000, 11);
    let freshdesk = key_connector(&start(&sandbox).await);
    let started = std::time::Instant::now();
    let (records, _, pages) =
        list_all(&freshdesk, PageRequest { cursor: None, per_page: 100, modified_after: None }).await;
    let listing = started.elapsed();
    let listed = sandbox.stats().requests;
    assert_eq!(records.len(), 1000);
    // One page request per 100 tickets, one conversation read per ticket, the fields once and
    // each company once.
    assert_eq!(listed, pages as u64 + 1000 + 1 + enrichd_freshdesk::sandbox::COMPANIES.len() as u64);

    let ids: Vec<String> = (1..=100).map(|id| id.to_string()).collect();
    let pulled = freshdesk.fetch("tickets", &ids).await.unwrap();
    let before = sandbox.stats().requests;
    let same: Vec<Change> = pulled.iter().map(|r| change(&r.id, &r.version, json!({"priority": "high"}))).collect();
    let started = std::time::Instant::now();
    let WriteSubmission::Pending(pending) = freshdesk.write("tickets", &same).await.unwrap() else { panic!() };
    let outcomes = poll(&freshdesk, &pending).await;
    let bulk_time = started.elapsed();
    assert!(outcomes.iter().all(|o| matches!(o.result, WriteResult::Written { .. })));
    let bulk = sandbox.stats().requests - before;
    assert_eq!(bulk, 1 + 3, "one bulk_update and three polls (queued, in progress, completed)");

    let pulled = freshdesk.fetch("tickets", &ids).await.unwrap();
    let before = sandbox.stats().requests;
    let each: Vec<Change> = pulled
        .iter()
        .map(|r| {
            let mut c =
                change(&r.id, &r.version, json!({"custom.Category": "Billing", "tags": [format!("t{}", r.id)]}));
            c.native = r.native.clone();
            c
        })
        .collect();
    let started = std::time::Instant::now();
    let WriteSubmission::Done(outcomes) = freshdesk.write("tickets", &each).await.unwrap() else { panic!() };
    let single_time = started.elapsed();
    assert!(outcomes.iter().all(|o| matches!(o.result, WriteResult::Written { .. })));
    let single = sandbox.stats().requests - before;
    assert_eq!(single, 100, "one PUT per ticket; tags merged from the re-read copy, no extra read");
    println!(
        "listing: 1000 tickets in {listing:?} ({:.0} tickets/s), {listed} requests; writing 100 tickets: bulk job {bulk} requests in {bulk_time:?}, per ticket {single} requests in {single_time:?}",
        1000.0 / listing.as_secs_f64()
    );
}
