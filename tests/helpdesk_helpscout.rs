//! Help Scout conversation triage end to end over HTTP: the Help Scout sandbox, the simulated model,
//! the shipped `ticket_triage_helpscout` task, and a real database (SQLite and Postgres).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::TestDb;
use common::harness::work_named;
use common::helpscout::*;
use common::process::{Enrichd, Env};
use enrichd::store::ItemState;
use enrichd_helpscout::sandbox::{CATEGORIES, Faults, HelpScoutSandbox, SENTIMENTS};
use sqlx::{AnyConnection, AssertSqlSafe, Connection, Row};

on_both_backends! {
    thousand_conversations => thousand_conversations;
    token_expiry => token_expiry;
    half_done_write => half_done_write;
}

/// Request units per minute high enough that the account's limit never holds a test up (the
/// sandbox's default is Help Scout's 400).
const UNLIMITED: u32 = 1_000_000;

/// 1,000 conversations, about 60% untriaged: exactly the untriaged ones are triaged and written;
/// every tag an agent set stays; a conversation an agent edits between the pull and the write ends
/// `conflict` with the agent's values intact; a conversation whose field write Help Scout refuses
/// is a per-item outcome (dead, with the reason) while the rest of its batch is written.
async fn thousand_conversations(db: &TestDb) {
    let account = HelpScoutSandbox::with_triaged_share(1000, 11, 0.4);
    account.set_faults(Faults {
        agent_edit_rate: 0.03,
        field_write_refusal_rate: 0.03,
        per_minute: UNLIMITED,
        ..Faults::default()
    });
    let before = conversations(&account);
    let untriaged: BTreeSet<u64> = untriaged(&before).into_iter().collect();
    assert!((500..700).contains(&untriaged.len()), "about 60% untriaged: {}", untriaged.len());

    let t = triage(db, account.clone(), &Knobs::default()).await;
    let run = start_triage(&t.engine).await;
    let run = work_named(&t.engine, "triage", run.id, Duration::from_secs(180), true).await;
    let store = &t.engine.store;
    let counts = store.counts(run.id).await.unwrap();

    // Exactly the untriaged conversations became candidates; the triaged ones were skipped.
    let items = store.items(run.id, None, 5000).await.unwrap();
    assert_eq!(items.len(), 1000, "one item per conversation: {counts:?}");
    let candidates: BTreeSet<u64> =
        items.iter().filter(|i| i.state != ItemState::Skipped).map(|i| i.external_id.parse().unwrap()).collect();
    assert_eq!(candidates, untriaged, "the candidates are exactly the conversations without a category");

    let after = conversations(&account);
    let edited: BTreeSet<u64> = account.agent_edited().into_iter().collect();
    let refused: BTreeSet<u64> = account.refused_writes().into_iter().collect();
    let sentiments: Vec<&str> = SENTIMENTS.iter().map(|(_, l)| *l).collect();
    let (mut written, mut conflicts, mut failed) = (0, 0, 0);
    for item in &items {
        let id: u64 = item.external_id.parse().unwrap();
        let (was, now) = (&before[&id], &after[&id]);
        // Every tag anyone set before is still there.
        for tag in &was.tags {
            assert!(now.tags.contains(tag), "conversation {id} lost tag {tag:?}: {:?}", now.tags);
        }
        match item.state {
            ItemState::Skipped => assert_eq!(was, now, "triaged conversation {id} must be untouched"),
            ItemState::Written => {
                written += 1;
                let category = now.category.as_deref().unwrap_or_default();
                assert!(
                    CATEGORIES.iter().any(|(_, l)| *l == category),
                    "conversation {id} got a category that is a live option: {now:?}"
                );
                let sentiment = now.sentiment.as_deref().unwrap_or_default();
                assert!(sentiments.contains(&sentiment), "conversation {id} sentiment: {now:?}");
                assert!(now.language.as_deref().is_some_and(|l| l.len() >= 2), "conversation {id} language: {now:?}");
                assert!(
                    now.tags.iter().any(|t| TAGS.contains(&t.as_str())),
                    "conversation {id} got an allowed tag: {now:?}"
                );
                // (An agent may pick it up after our write, when it is read back: that edit is theirs.)
                if !edited.contains(&id) {
                    assert_eq!(now.status, was.status, "conversation {id}: the status is not ours to change");
                }
                assert!(item.verified_at.is_some(), "conversation {id} written and read back");
                assert!(
                    item.verify_issues.as_ref().is_none_or(Vec::is_empty),
                    "conversation {id}: {:?}",
                    item.verify_issues
                );
            }
            ItemState::Conflict => {
                conflicts += 1;
                assert!(edited.contains(&id), "conversation {id} ended conflict but no agent edited it");
                // The agent's values, and nothing of ours.
                assert_eq!(now.status, "pending", "conversation {id}: the agent's status stays");
                assert!(now.tags.contains(&"agent_edited".to_owned()), "{now:?}");
                assert_eq!(now.category, None, "conversation {id}: nothing of ours was written");
                assert!(!now.tags.iter().any(|t| TAGS.contains(&t.as_str())), "conversation {id}: {now:?}");
            }
            ItemState::Dead => {
                failed += 1;
                assert!(refused.contains(&id), "conversation {id} failed without a refusal: {:?}", item.last_error);
                let error = item.last_error.as_deref().unwrap_or_default();
                assert!(
                    error.contains(&id.to_string()) && error.contains("HTTP 400") && error.contains("fields"),
                    "conversation {id}: the reason names the conversation, the status and the field: {error}"
                );
                assert_eq!(item.write_attempts, 1, "a refusal is not retried: {error}");
                assert_eq!(was, now, "conversation {id}: the refused conversation is unchanged");
            }
            other => panic!("conversation {id} ended {other}: {:?}", item.last_error),
        }
    }
    assert!(conflicts > 0 && failed > 0, "the faults happened: {conflicts} conflicts, {failed} failures");
    assert_eq!(written + conflicts + failed, untriaged.len(), "{counts:?}");
    assert_eq!(counts.get(ItemState::Written), written as i64);
}

/// A write left half done: Help Scout stored a conversation's custom fields, then answered the
/// tag write 503. The retry finds the conversation changed since the pull — by our own fields —
/// and finishes the write (the tags) instead of calling it a conflict; what an undo puts back is
/// what the conversation held before our first call, not our own half write.
async fn half_done_write(db: &TestDb) {
    let account = HelpScoutSandbox::with_triaged_share(40, 7, 0.0);
    account.set_faults(Faults { tag_write_server_errors: 3, per_minute: UNLIMITED, ..Faults::default() });
    let before = conversations(&account);
    let t = triage(db, account.clone(), &Knobs::default()).await;
    let run = start_triage(&t.engine).await;
    let run = work_named(&t.engine, "triage", run.id, Duration::from_secs(60), true).await;
    let counts = t.engine.store.counts(run.id).await.unwrap();
    let items = t.engine.store.items(run.id, None, 100).await.unwrap();
    let failed: Vec<String> = items
        .iter()
        .filter(|i| i.state != ItemState::Written)
        .map(|i| format!("conversation {} {}: {:?}", i.external_id, i.state, i.last_error))
        .collect();
    assert_eq!(
        counts.get(ItemState::Written),
        40,
        "every conversation written, none a conflict: {counts:?}\n{failed:#?}"
    );
    let retried: Vec<_> = items.iter().filter(|i| i.write_attempts > 0).collect();
    assert!(!retried.is_empty(), "some writes were left half done and retried");
    let after = conversations(&account);
    for item in &items {
        let id: u64 = item.external_id.parse().unwrap();
        let now = &after[&id];
        assert!(now.category.is_some(), "conversation {id}: {now:?}");
        assert!(now.tags.iter().any(|t| TAGS.contains(&t.as_str())), "conversation {id} got its tags: {now:?}");
        for tag in &before[&id].tags {
            assert!(now.tags.contains(tag), "conversation {id} lost tag {tag:?}");
        }
        let replaced = item.replaced.as_ref().expect("kept before the write");
        assert!(replaced["custom.Category"].is_null(), "conversation {id}: undo restores no category: {replaced:?}");
    }
}

/// The access token expires mid-run (Help Scout answers 401): one new token is requested, the
/// refused calls are repeated, and the run ends with every untriaged conversation written. With
/// `database.secret_key` set, the token is kept encrypted in our database (its text is nowhere in
/// the database, nor in the logs), and a second daemon (the real binary) reuses it instead of
/// asking Help Scout for another.
async fn token_expiry(db: &TestDb) {
    let account = HelpScoutSandbox::with_triaged_share(200, 5, 0.4);
    account.set_faults(Faults { per_minute: UNLIMITED, ..Faults::default() });
    let untriaged: BTreeSet<u64> = untriaged(&conversations(&account)).into_iter().collect();
    let t = triage(db, account.clone(), &Knobs { keep_tokens: true, ..Knobs::default() }).await;
    let run = start_triage(&t.engine).await;
    // Expire every token once the first conversations are written: what follows meets a 401.
    let watcher = {
        let (account, store, run_id) = (account.clone(), t.engine.store.clone(), run.id);
        tokio::spawn(async move {
            loop {
                let counts = store.counts(run_id).await.unwrap();
                if counts.get(ItemState::Written) > 0 {
                    account.expire_tokens();
                    return counts.get(ItemState::Written);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let run = work_named(&t.engine, "triage", run.id, Duration::from_secs(120), true).await;
    let written_at_expiry = watcher.await.unwrap();
    let counts = t.engine.store.counts(run.id).await.unwrap();
    assert!(written_at_expiry < untriaged.len() as i64, "the token expired mid-run ({written_at_expiry} written)");
    assert_eq!(counts.get(ItemState::Written), untriaged.len() as i64, "nothing lost: {counts:?}");
    for id in &untriaged {
        assert!(account.category(*id).is_some(), "conversation {id} was not written");
    }
    let stats = account.stats();
    assert!(stats.unauthorized >= 1, "a call met the expired token: {stats:?}");
    assert_eq!(stats.tokens_issued, 2, "one token at the start and exactly one after the expiry: {stats:?}");

    // Kept encrypted: a row for the connection, and neither token's text anywhere in the database.
    let tokens = account.issued_tokens();
    assert_eq!(tokens.len(), 2);
    let mut conn = AnyConnection::connect(&db.url).await.unwrap();
    let stored: i64 = sqlx::query("SELECT COUNT(*) AS n FROM credentials WHERE connection = 'support'")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get("n");
    assert_eq!(stored, 1, "the token is kept for connection support");
    let everything = database_text(db, &mut conn).await;
    conn.close().await.unwrap();
    for token in &tokens {
        assert!(!everything.contains(token.as_str()), "token {token} is in the database in plain text");
    }
    assert!(!everything.contains(enrichd_helpscout::sandbox::CLIENT_SECRET), "the app secret is in the database");

    // A second daemon on the same database: the stored token is still valid, so no new one.
    let created = account.create_conversation("Rechnung doppelt", "<p>Guten Tag, bitte erstatten.</p>");
    let env = Env { vars: &helpscout_env(), ..Env::default() };
    let log = t.dir.path().join("second.log");
    let (status, output) = Enrichd::run_with(&t.config, "triage", log, &env).wait(Duration::from_secs(120)).await;
    assert!(status.success(), "the second daemon's run failed: {output}");
    assert!(account.category(created).is_some(), "the second daemon triaged the new conversation: {output}");
    assert_eq!(account.stats().tokens_issued, 2, "the second daemon reused the stored token: {output}");
    for token in &tokens {
        assert!(!output.contains(token.as_str()), "token {token} is in the second daemon's output");
    }
    assert!(!output.contains(enrichd_helpscout::sandbox::CLIENT_SECRET), "the app secret is in the output");
}

/// All the text the database holds: the SQLite file (with its write-ahead log) as bytes, or every
/// row of every Postgres table as text.
async fn database_text(db: &TestDb, conn: &mut AnyConnection) -> String {
    if let Some(path) = db.url.strip_prefix("sqlite://") {
        let dir = std::path::Path::new(path).parent().unwrap();
        let mut text = String::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
        assert!(text.contains("credentials"), "read the database file");
        return text;
    }
    let tables: Vec<String> =
        sqlx::query("SELECT table_name::text AS t FROM information_schema.tables WHERE table_schema = 'public'")
            .fetch_all(&mut *conn)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.get("t"))
            .collect();
    assert!(tables.iter().any(|t| t == "credentials"), "{tables:?}");
    let mut text = String::new();
    for table in tables {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT COALESCE(string_agg(x::text, ' '), '') AS t FROM \"{table}\" x"
        )))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        text.push_str(&rows.get::<String, _>("t"));
    }
    text
}

/// Throughput and request cost at zero model latency, printed for the README (SQLite; run with
/// `--no-capture`; `ENRICHD_HELPSCOUT_FIGURES=N` sets the number of conversations, 300 unless set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures() {
    let n: u64 = std::env::var("ENRICHD_HELPSCOUT_FIGURES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let db = common::sqlite().await;
    let account = HelpScoutSandbox::with_triaged_share(n, 21, 0.4);
    account.set_faults(Faults { per_minute: UNLIMITED, ..Faults::default() });
    let untriaged = untriaged(&conversations(&account)).len() as f64;
    let t = triage(&db, account.clone(), &Knobs::default()).await;
    let run = start_triage(&t.engine).await;
    let started = Instant::now();
    let run = work_named(&t.engine, "triage", run.id, Duration::from_secs(600), true).await;
    let elapsed = started.elapsed().as_secs_f64();
    let counts = t.engine.store.counts(run.id).await.unwrap();
    let written = counts.get(ItemState::Written) as f64;
    assert_eq!(written, untriaged, "{counts:?}");
    let stats = account.stats();
    let writes = account.received_writes().len() as f64;
    let requests = (stats.requests - stats.tokens_issued) as f64;
    let reads = requests - writes;
    let per100 = |x: f64| x / written * 100.0;
    println!(
        "helpscout figures: {n} conversations, {written} untriaged written in {elapsed:.2} s: {:.0} conversations/s end to end (every one listed and judged), {:.1} conversations written/s",
        n as f64 / elapsed,
        written / elapsed
    );
    println!(
        "helpscout figures: per 100 written: {:.0} requests ({:.0} GET, {:.0} PUT), {:.0} rate-limit units; list pages {}, conversation reads {}, field writes {}, tag writes {}, tokens {}",
        per100(requests),
        per100(reads),
        per100(writes),
        per100(reads + 2.0 * writes),
        stats.list_pages,
        stats.conversation_reads,
        stats.field_writes,
        stats.tag_writes,
        stats.tokens_issued
    );
    db.cleanup().await;
}
