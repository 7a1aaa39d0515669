//! Review for tickets, from outside, on SQLite and Postgres: a triage run over the Zendesk sandbox
//! (review policy `all`, so every proposal waits) and the simulated model answering as a classifier
//! with a known confidence per ticket. In a real browser: the item page shows the ticket's
//! conversation message by message (author, private or public, time, oldest first, the subject on
//! top) and runs nothing of a ticket's `<script>` or `<img onerror>`; the queue filtered by proposed
//! category and by confidence band lists exactly the expected items with the right counts, and a
//! bulk approve of the filtered view approves exactly those. Over the JSON API and the CLI: the same
//! filters, their counts, bulk decisions over them, and clear refusals of malformed filters.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::TestDb;
use common::browser::{browser, chromedriver, click, click_and_load, sign_in, text_of, wait_for};
use common::harness::work_named;
use common::process::{self, Env, text};
use common::zendesk::{Helpdesk, helpdesk, set_zendesk_env, start_triage, write_zendesk_config, zendesk_env};
use enrichd::config::{Config, Secret, ServerAuthConfig};
use enrichd::engine::Engine;
use enrichd::sandbox::provider::classify::{Classifier, ErrorRule, bucket};
use enrichd::server::{Access, Site, serve};
use enrichd::store::{ItemState, RunStatus};
use enrichd_zendesk::sandbox::{CATEGORIES, ZendeskSandbox, sample};
use fantoccini::Locator;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "ticket review password";
const REVIEWER: &str = "Tess Triage";
const XSS_SUBJECT: &str = "<script>window.__pwned = 1</script> Refund please";
const XSS_BODY: &str = "Hello <img src=x onerror=\"window.__pwned = 2\"> my card was charged twice.\n\n\
                        <script>window.__pwned = 3</script> Please refund one.";
const NOTE: &str = "Checked the <b>payment logs</b>: two charges. Escalating.";
const REPLY: &str = "We have refunded the second charge.";

/// The simulated model: it reads each sample subject's category (and `billing` for the hand-made
/// ticket), and its confidence depends on the ticket id's bucket: 0.3, 0.6 or 0.93.
fn classifier() -> Classifier {
    let mut clues: Vec<(String, Value)> = (0..20u64)
        .map(|n| (sample(n).0.to_owned(), json!(CATEGORIES[((n / 4) % CATEGORIES.len() as u64) as usize].1)))
        .collect();
    clues.push(("Refund please".into(), json!("billing")));
    let rule = |bucket: u64, confidence: f64| ErrorRule {
        modulus: 3,
        buckets: vec![bucket],
        answers: BTreeMap::new(),
        confidence,
    };
    Classifier {
        clues: [("category".to_owned(), clues)].into(),
        confidence_property: "confidence".into(),
        confidence: 0.93,
        rules: vec![rule(0, 0.3), rule(1, 0.6)],
    }
}

/// What the model answers for ticket `id` with `subject`, computed here from the classifier's rules.
fn expected(id: &str, subject: &str) -> (String, f64) {
    let category = if subject == XSS_SUBJECT {
        "billing"
    } else {
        let n = (0..20u64).find(|n| sample(*n).0 == subject).unwrap_or_else(|| panic!("subject {subject:?}"));
        CATEGORIES[((n / 4) % CATEGORIES.len() as u64) as usize].1
    };
    let confidence = match bucket(id, 3) {
        0 => 0.3,
        1 => 0.6,
        _ => 0.93,
    };
    (category.to_owned(), confidence)
}

fn band_holds(band: &str, c: f64) -> bool {
    match band {
        "..0.5" => c < 0.5,
        "0.5..0.8" => (0.5..0.8).contains(&c),
        "0.8.." => c >= 0.8,
        other => panic!("band {other}"),
    }
}

/// A triage run whose proposals all wait for review, served on a loopback port.
struct TicketQueue {
    /// The sandboxes and the engine, kept for the test's length.
    _hd: Helpdesk,
    _engine: Arc<Engine>,
    config: PathBuf,
    run_id: i64,
    base: String,
    stop: CancellationToken,
    /// The ticket with the script in its subject and body.
    xss_item: i64,
    /// Item id → (external id, expected category, expected confidence), for every waiting item.
    items: BTreeMap<i64, (String, String, f64)>,
    _dir: tempfile::TempDir,
}

impl TicketQueue {
    fn matching(&self, category: Option<&str>, band: Option<&str>) -> BTreeSet<i64> {
        self.items
            .iter()
            .filter(|(_, (_, c, conf))| category.is_none_or(|w| w == c) && band.is_none_or(|b| band_holds(b, *conf)))
            .map(|(id, _)| *id)
            .collect()
    }
}

async fn ticket_queue(db: &TestDb, access: Access) -> TicketQueue {
    set_zendesk_env();
    let account = ZendeskSandbox::with_triaged_share(40, 21, 0.0);
    let xss = account.create_ticket(XSS_SUBJECT, XSS_BODY);
    account.advance(60);
    account.edit_as_agent(xss, json!({ "comment": { "body": NOTE, "public": false } })).unwrap();
    account.advance(60);
    account.edit_as_agent(xss, json!({ "comment": { "body": REPLY, "public": true } })).unwrap();
    // Past Search's lag and the export's one-minute horizon.
    account.advance(600);
    let hd = helpdesk(account.clone()).await;
    hd.provider.classify(Some(classifier()));
    let dir = tempfile::tempdir().unwrap();
    let path = write_zendesk_config(dir.path(), &db.url, &hd, "", "");
    let shipped = std::fs::read_to_string(&path).unwrap();
    let auto = r#"review = { policy = "auto_approve", confidence_field = "confidence", min_confidence = 0.0 }"#;
    assert!(shipped.contains(auto), "the test config's review line moved: {shipped}");
    std::fs::write(&path, shipped.replace(auto, r#"review = { policy = "all" }"#)).unwrap();
    let config = Config::load(&path).unwrap();
    let engine = Arc::new(Engine::build(&config, db.store.clone()));
    let run = start_triage(&engine).await;
    let run = work_named(&engine, "triage", run.id, Duration::from_secs(60), true).await;
    assert_eq!(run.status, RunStatus::AwaitingReview, "{run:?}");

    let waiting = db.store.items(run.id, Some(ItemState::Proposed), 1000).await.unwrap();
    assert_eq!(waiting.len(), 41, "every ticket waits for review");
    let mut items = BTreeMap::new();
    let mut xss_item = None;
    for item in &waiting {
        let subject =
            account.ticket(item.external_id.parse().unwrap()).unwrap()["subject"].as_str().unwrap().to_owned();
        if subject == XSS_SUBJECT {
            xss_item = Some(item.id);
        }
        let (category, confidence) = expected(&item.external_id, &subject);
        // The model's answer reached the proposal: the category to write, the confidence beside it.
        let proposal = item.proposal.as_ref().unwrap();
        assert_eq!(proposal.fields["custom.Category"].proposed, json!(category), "item {}", item.id);
        assert_eq!(proposal.confidence, Some(confidence), "item {}", item.id);
        items.insert(item.id, (item.external_id.clone(), category, confidence));
    }
    let site = Site { access, ..Site::from_config(&config) };
    let stop = CancellationToken::new();
    let (addr, _server) = serve(engine.clone(), site, "127.0.0.1:0", stop.clone()).await.unwrap();
    TicketQueue {
        _hd: hd,
        _engine: engine,
        config: path,
        run_id: run.id,
        base: format!("http://{addr}"),
        stop,
        xss_item: xss_item.expect("the hand-made ticket was triaged"),
        items,
        _dir: dir,
    }
}

/// The category with the most waiting items and, within it, a band that holds some of them but not
/// all: so each filter visibly narrows the queue.
fn pick(q: &TicketQueue) -> (String, &'static str) {
    let mut by_category: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, c, _) in q.items.values() {
        *by_category.entry(c).or_default() += 1;
    }
    let category = by_category.iter().max_by_key(|(_, n)| **n).unwrap().0.to_string();
    let all = q.matching(Some(&category), None).len();
    let band = ["..0.5", "0.5..0.8", "0.8.."]
        .into_iter()
        .find(|b| (1..all).contains(&q.matching(Some(&category), Some(b)).len()))
        .expect("a band that narrows the category");
    assert!(all < q.items.len(), "the category filter narrows the queue");
    (category, band)
}

async fn ids_in_queue(client: &fantoccini::Client) -> BTreeSet<i64> {
    let ids = client
        .execute("return Array.from(document.querySelectorAll('a.open')).map(a => a.textContent);", vec![])
        .await
        .unwrap();
    ids.as_array().unwrap().iter().map(|t| t.as_str().unwrap().trim_start_matches('#').parse().unwrap()).collect()
}

async fn option_texts(client: &fantoccini::Client, select: &str) -> Vec<String> {
    let script = "return Array.from(document.querySelectorAll(arguments[0] + ' option')).map(o => o.textContent);";
    let texts = client.execute(script, vec![Value::from(select)]).await.unwrap();
    texts.as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect()
}

async fn choose(client: &fantoccini::Client, select: &str, value: &str) {
    let css = format!("{select} option[value=\"{value}\"]");
    client.find(Locator::Css(&css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
}

fn band_label(band: &str) -> &'static str {
    match band {
        "..0.5" => "< 0.5",
        "0.5..0.8" => "0.5–0.8",
        _ => "≥ 0.8",
    }
}

async fn tickets_are_reviewed_in_the_browser(db: &TestDb) {
    let Some(driver) = chromedriver().await else { return };
    let auth = ServerAuthConfig { password: Some(Secret(PASSWORD.to_owned().into())), token: None, session_hours: 1 };
    let q = ticket_queue(db, Access::new(Some(&auth))).await;
    let base = &q.base;
    let client = browser(&driver).await;
    sign_in(&client, base, REVIEWER, PASSWORD).await;

    // The item page: the subject on top, then each message with its author, visibility and time,
    // oldest first; the ticket's markup is text, and none of it ran.
    client.goto(&format!("{base}/items/{}", q.xss_item)).await.unwrap();
    wait_for(&client, "#conversation").await;
    assert_eq!(text_of(&client, "#ticket-subject").await, XSS_SUBJECT);
    let messages = client
        .execute(
            "return Array.from(document.querySelectorAll('#conversation li.message')).map(li => ({ \
               author: li.querySelector('.author').textContent, \
               visibility: li.querySelector('.visibility').textContent, \
               at: li.querySelector('time').getAttribute('datetime'), \
               shown: li.querySelector('time').textContent, \
               text: li.querySelector('.message-text').textContent, \
               private: li.classList.contains('private') }));",
            vec![],
        )
        .await
        .unwrap();
    let messages = messages.as_array().unwrap();
    let who: Vec<(&str, &str, bool)> = messages
        .iter()
        .map(|m| (m["author"].as_str().unwrap(), m["visibility"].as_str().unwrap(), m["private"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        who,
        [("customer", "public", false), ("agent", "private note", true), ("agent", "public", false)],
        "{messages:?}"
    );
    let texts: Vec<&str> = messages.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, [XSS_BODY, NOTE, REPLY], "each message whole, as text");
    let times: Vec<chrono::DateTime<chrono::FixedOffset>> =
        messages.iter().map(|m| chrono::DateTime::parse_from_rfc3339(m["at"].as_str().unwrap()).unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "oldest first: {times:?}");
    for m in messages {
        assert!(m["shown"].as_str().unwrap().ends_with(" UTC"), "{m}");
    }
    assert_eq!(
        client.execute("return window.__pwned === undefined;", vec![]).await.unwrap(),
        json!(true),
        "no script of the ticket ran"
    );
    let scripts =
        client.execute("return Array.from(document.scripts).map(s => s.src || s.textContent);", vec![]).await.unwrap();
    assert_eq!(scripts, json!([format!("{base}/assets/review.js")]), "only our own script");
    let injected = client.execute("return document.querySelectorAll('img, b').length;", vec![]).await.unwrap();
    assert_eq!(injected, 0, "no element of the ticket exists");
    // The proposal is beside it, and the raw conversation is not repeated under the record.
    assert!(text_of(&client, ".proposal-side").await.contains("custom.Category"));
    assert!(!text_of(&client, "table.facts").await.contains("payment logs"));

    // The queue: the category select lists the values waiting, with their counts.
    let (category, band) = pick(&q);
    client.goto(&format!("{base}/queue?run={}", q.run_id)).await.unwrap();
    wait_for(&client, "#filter-proposed").await;
    let options = option_texts(&client, "#filter-proposed").await;
    let mut by_category: BTreeMap<String, usize> = BTreeMap::new();
    for (_, c, _) in q.items.values() {
        *by_category.entry(c.clone()).or_default() += 1;
    }
    for (c, n) in &by_category {
        let line = format!("custom.Category: {c} ({n})");
        assert!(options.contains(&line), "{line} in {options:?}");
    }
    let bands = option_texts(&client, "#filter-confidence").await;
    for b in ["..0.5", "0.5..0.8", "0.8.."] {
        let line = format!("{} ({})", band_label(b), q.matching(None, Some(b)).len());
        assert!(bands.contains(&line), "{line} in {bands:?}");
    }

    // Filtered by category: exactly its items, counted; the filter is in the URL.
    choose(&client, "#filter-proposed", &format!("custom.Category={category}")).await;
    click_and_load(&client, "form.filters button").await;
    let url = client.current_url().await.unwrap();
    assert!(url.query().unwrap().contains(&format!("proposed=custom.Category%3D{category}")), "{url}");
    let in_category = q.matching(Some(&category), None);
    assert_eq!(ids_in_queue(&client).await, in_category);
    assert_eq!(text_of(&client, "p.count").await, format!("{} items match", in_category.len()));
    // The band select now counts within the category.
    let bands = option_texts(&client, "#filter-confidence").await;
    let line = format!("{} ({})", band_label(band), q.matching(Some(&category), Some(band)).len());
    assert!(bands.contains(&line), "{line} in {bands:?}");

    // And by confidence band: both filters together.
    choose(&client, "#filter-confidence", band).await;
    click_and_load(&client, "form.filters button").await;
    let chosen = q.matching(Some(&category), Some(band));
    assert_eq!(ids_in_queue(&client).await, chosen);
    let shared = client.current_url().await.unwrap().to_string();
    assert!(shared.contains("confidence="), "{shared}");

    // A band alone, from a shared URL.
    let only_band = q.matching(None, Some(band));
    client.goto(&format!("{base}/queue?run={}&confidence={band}", q.run_id)).await.unwrap();
    wait_for(&client, "p.count").await;
    assert_eq!(ids_in_queue(&client).await, only_band);

    // Bulk approve of the filtered view: the count first, then exactly those items.
    client.goto(&shared).await.unwrap();
    wait_for(&client, "#approve-all").await;
    assert_eq!(text_of(&client, "#approve-all").await, format!("Approve all {} matching this filter…", chosen.len()));
    click(&client, "#approve-all").await;
    wait_for(&client, "#bulk-question").await;
    let n = chosen.len();
    assert_eq!(text_of(&client, "#bulk-question").await, format!("Approve {n} item{}?", if n == 1 { "" } else { "s" }));
    let said = text_of(&client, "main").await;
    assert!(said.contains(&format!("proposed custom.Category = {category}")), "{said}");
    assert!(said.contains(&format!("confidence {}", band_label(band))), "{said}");
    click(&client, "#bulk-confirm button").await;
    wait_for(&client, "#bulk-result").await;
    for id in q.items.keys() {
        let state = db.store.item(*id).await.unwrap().state;
        let want = if chosen.contains(id) { ItemState::Approved } else { ItemState::Proposed };
        assert_eq!(state, want, "item {id}");
    }
    client.close().await.unwrap();
    q.stop.cancel();
}

fn http() -> reqwest::Client {
    enrichd_connector::http::builder(Duration::from_secs(10)).build().unwrap()
}

async fn get(base: &str, query: &str) -> (u16, Value) {
    let r = http().get(format!("{base}/api/review?{query}")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn ids(body: &Value) -> BTreeSet<i64> {
    body["items"].as_array().unwrap().iter().map(|i| i["id"].as_i64().unwrap()).collect()
}

fn enrichd(config: &Path, args: &[&str], code: i32) -> String {
    let vars = zendesk_env();
    let env = Env { vars: &vars, ..Env::default() };
    let out = process::output(config, args, &env);
    assert_eq!(out.status.code(), Some(code), "enrichd {}: {}", args.join(" "), text(&out));
    text(&out)
}

async fn ticket_filters_over_the_api_and_the_cli(db: &TestDb) {
    let q = ticket_queue(db, Access::new(None)).await;
    let (base, run) = (&q.base, q.run_id);
    let (category, band) = pick(&q);

    // The queue API: the same filters as query parameters, the values with their counts.
    let (status, all) = get(base, &format!("run={run}&limit=500")).await;
    assert_eq!(status, 200, "{all}");
    let categories: BTreeMap<String, i64> = all["values"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["field"] == "custom.Category")
        .map(|v| (v["value"].as_str().unwrap().to_owned(), v["count"].as_i64().unwrap()))
        .collect();
    for (c, n) in &categories {
        assert_eq!(*n as usize, q.matching(Some(c), None).len(), "{c}");
    }
    assert_eq!(categories.values().sum::<i64>() as usize, q.items.len());
    let (_, by_category) = get(base, &format!("run={run}&limit=500&proposed=custom.Category%3D{category}")).await;
    assert_eq!(ids(&by_category), q.matching(Some(&category), None));
    assert_eq!(by_category["total"].as_u64().unwrap() as usize, q.matching(Some(&category), None).len());
    for b in ["..0.5", "0.5..0.8", "0.8.."] {
        let (_, by_band) = get(base, &format!("run={run}&limit=500&confidence={b}")).await;
        assert_eq!(ids(&by_band), q.matching(None, Some(b)), "band {b}");
    }
    let both_query = format!("run={run}&limit=500&proposed=custom.Category%3D{category}&confidence={band}");
    let (_, both) = get(base, &both_query).await;
    let chosen = q.matching(Some(&category), Some(band));
    assert_eq!(ids(&both), chosen);

    // Malformed filters are refused, naming the parameter.
    let (status, body) = get(base, "confidence=high").await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().starts_with("confidence: \"high\""), "{body}");
    let (status, body) = get(base, "confidence=0.9..0.2").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = get(base, "proposed=custom.Category").await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("proposed: \"custom.Category\": expected FIELD=VALUE"), "{body}");

    // Bulk over the API's filter: a count first, then exactly those.
    let filter = json!({ "run": run, "proposed": format!("custom.Category={category}"), "confidence": band });
    let bulk = |body: Value| async move {
        let r = http().post(format!("{base}/api/review/bulk")).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let (status, counted) = bulk(json!({ "action": "reject", "reviewer": "api-eve", "filter": filter })).await;
    assert_eq!((status, counted["matching"].as_u64()), (200, Some(chosen.len() as u64)), "{counted}");
    let (status, done) = bulk(json!({
        "action": "reject", "reviewer": "api-eve", "reason": "wrong queue", "filter": filter, "confirm": chosen.len(),
    }))
    .await;
    assert_eq!(status, 200, "{done}");
    let rejected: BTreeSet<i64> = done["done"].as_array().unwrap().iter().map(|i| i.as_i64().unwrap()).collect();
    assert_eq!(rejected, chosen);

    // The CLI: the same filters through `--filter`, on what is left waiting.
    let cfg = q.config.as_path();
    let r = run.to_string();
    let left: BTreeSet<i64> = q.items.keys().copied().filter(|id| !chosen.contains(id)).collect();
    let other = ["..0.5", "0.5..0.8", "0.8.."]
        .into_iter()
        .find(|b| q.matching(None, Some(b)).intersection(&left).count() > 0)
        .unwrap();
    let want: BTreeSet<i64> = q.matching(None, Some(other)).intersection(&left).copied().collect();
    let proposed = format!("proposed=custom.Category={category}");
    let confidence = format!("confidence={other}");
    let listed: Value = serde_json::from_str(&enrichd(
        cfg,
        &["review", "list", "--run", &r, "--filter", &confidence, "--limit", "500", "--json"],
        0,
    ))
    .unwrap();
    assert_eq!(ids(&listed), want);
    assert_eq!(listed["total"].as_u64().unwrap() as usize, want.len());
    let plain = enrichd(cfg, &["review", "list", "--run", &r, "--filter", &confidence, "--limit", "500"], 0);
    assert!(plain.contains(&format!("{} item(s) match", want.len())), "{plain}");
    assert!(plain.contains(" · confidence "), "{plain}");
    let both: BTreeSet<i64> = q.matching(Some(&category), Some(other)).intersection(&left).copied().collect();
    let counted = enrichd(
        cfg,
        &["review", "approve", "--run", &r, "--filter", &proposed, "--filter", &confidence, "--as", "cli-eve"],
        0,
    );
    assert!(counted.contains(&format!("{} item(s) match; nothing changed", both.len())), "{counted}");
    if !both.is_empty() {
        let n = both.len().to_string();
        let args = [
            "review",
            "approve",
            "--run",
            &r,
            "--filter",
            &proposed,
            "--filter",
            &confidence,
            "--confirm",
            &n,
            "--as",
            "cli-eve",
        ];
        enrichd(cfg, &args, 0);
    }
    for id in q.items.keys() {
        let state = db.store.item(*id).await.unwrap().state;
        let want = if chosen.contains(id) {
            ItemState::Rejected
        } else if both.contains(id) {
            ItemState::Approved
        } else {
            ItemState::Proposed
        };
        assert_eq!(state, want, "item {id}");
    }
    let bad = enrichd(cfg, &["review", "list", "--filter", "confidence=0.8..0.5"], 2);
    assert!(bad.contains("--filter confidence: \"0.8..0.5\": the low end must be below the high end"), "{bad}");
    let bad = enrichd(cfg, &["review", "list", "--filter", "proposed=custom.Category"], 2);
    assert!(bad.contains("--filter proposed"), "{bad}");
    q.stop.cancel();
}

on_both_backends! {
    browser_ticket_review => tickets_are_reviewed_in_the_browser;
    api_and_cli_ticket_filters => ticket_filters_over_the_api_and_the_cli;
}
