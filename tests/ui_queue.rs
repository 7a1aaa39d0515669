//! The review queue, on SQLite and Postgres. A catalogue run over the WooCommerce sandbox with the
//! provider sandbox writing copy (and a confidence per product) waits for review; then, in a real
//! browser: rows show the text each item would write (shortened, the whole of it on hover and when
//! opened, tags as chips); keys tick rows (j/k/x) and approve (a) or reject (r) exactly the ticked
//! items; select all approves every listed item; the confidence sort orders the rows and the item
//! page's previous/next (and its j) follow it; the warning kinds are counted and each filters the
//! rows. Over HTTP: `/api/review`'s `sort` and `warning` parameters, their counts and refusals. In
//! the store: warning kinds read back the same in Rust and in SQL, on texts built to trip them up.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::TestDb;
use common::browser::{browser, chromedriver, click, click_and_load, press, text_of, wait_for};
use common::harness::start_run;
use common::woo::{Woo, woo_with_task, work_until_idle};
use enrichd::config::Config;
use enrichd::server::{Access, Site, serve};
use enrichd::store::{FieldChange, Item, ItemState, Proposal, ReviewFilter, ReviewOrder, RunStatus, WarningKind};
use enrichd_woocommerce::sandbox::WooSandbox;
use fantoccini::Locator;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/queue");
const REVIEWER: &str = "Quinn Queue";
/// The WebDriver key for Enter.
const ENTER: char = '\u{E007}';

/// A catalogue run whose proposals all wait for review, served on a loopback port (open mode).
struct Shop {
    _w: Woo,
    run_id: i64,
    base: String,
    stop: CancellationToken,
    /// The waiting items, oldest first.
    items: Vec<Item>,
}

impl Drop for Shop {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn shop(db: &TestDb) -> Shop {
    let products: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(Path::new(FIXTURES).join("products.json")).unwrap()).unwrap();
    let task = Path::new(FIXTURES).join("product_copy.toml");
    let w = woo_with_task(db, WooSandbox::with_products(products), "all", 3, "", Some(&task)).await;
    w.provider.write_copy(true);
    let run = start_run(&w.engine).await;
    let run = work_until_idle(&w.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::AwaitingReview, "{run:?}");
    let config = Config::load(&w.config).unwrap();
    let site = Site { access: Access::new(None), ..Site::from_config(&config) };
    let stop = CancellationToken::new();
    let (addr, _server) = serve(w.engine.clone(), site, "127.0.0.1:0", stop.clone()).await.unwrap();
    let items = db.store.items(run.id, Some(ItemState::Proposed), 100).await.unwrap();
    assert_eq!(items.len(), 6, "every bare product waits for review");
    Shop { _w: w, run_id: run.id, base: format!("http://{addr}"), stop, items }
}

fn confidence(item: &Item) -> f64 {
    item.proposal.as_ref().and_then(|p| p.confidence).expect("the task answers a confidence")
}

fn warnings(item: &Item) -> &[String] {
    &item.proposal.as_ref().unwrap().warnings
}

/// Item ids by confidence, high to low (ties by id).
fn by_confidence(items: &[Item]) -> Vec<i64> {
    let mut sorted: Vec<&Item> = items.iter().collect();
    sorted.sort_by(|a, b| confidence(b).total_cmp(&confidence(a)).then(a.id.cmp(&b.id)));
    sorted.iter().map(|i| i.id).collect()
}

/// Each kind of warning the items carry → the ids of the items carrying one, read in Rust.
fn kinds_of(items: &[Item]) -> BTreeMap<WarningKind, BTreeSet<i64>> {
    let mut kinds: BTreeMap<WarningKind, BTreeSet<i64>> = BTreeMap::new();
    for item in items {
        for w in warnings(item) {
            kinds.entry(WarningKind::of(w)).or_default().insert(item.id);
        }
    }
    kinds
}

/// A kind that some items carry and some do not, so filtering on it visibly narrows the queue.
fn narrowing_kind(shop: &Shop) -> (WarningKind, BTreeSet<i64>) {
    kinds_of(&shop.items)
        .into_iter()
        .find(|(_, ids)| !ids.is_empty() && ids.len() < shop.items.len())
        .expect("the fixture gives some items a warning others do not have")
}

// ---- in the browser ----

async fn sign_in(client: &fantoccini::Client, base: &str) {
    client.goto(&format!("{base}/login")).await.unwrap();
    client.find(Locator::Css("input[name=name]")).await.unwrap().send_keys(REVIEWER).await.unwrap();
    click_and_load(client, "form.login button").await;
}

async fn row_ids(client: &fantoccini::Client) -> Vec<i64> {
    let ids = client
        .execute("return Array.from(document.querySelectorAll('table.queue tbody tr')).map(r => r.dataset.id);", vec![])
        .await
        .unwrap();
    ids.as_array().unwrap().iter().map(|v| v.as_str().unwrap().parse().unwrap()).collect()
}

async fn js(client: &fantoccini::Client, script: &str, args: Vec<Value>) -> Value {
    client.execute(script, args).await.unwrap()
}

async fn wait_for_states(db: &TestDb, want: &[(i64, ItemState)]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for (id, state) in want {
        while db.store.item(*id).await.unwrap().state != *state {
            assert!(tokio::time::Instant::now() < deadline, "item {id} did not become {state}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Rows show what each item would write; keys tick rows (one by one and as a range) and approve
/// or reject exactly those; select all approves the rest.
async fn rows_show_proposals_and_keys_decide_the_ticked_items(db: &TestDb) {
    let Some(driver) = chromedriver().await else { return };
    let shop = shop(db).await;
    let client = browser(&driver).await;
    sign_in(&client, &shop.base).await;
    client.goto(&format!("{}/queue?run={}", shop.base, shop.run_id)).await.unwrap();
    wait_for(&client, "table.queue").await;
    let order = row_ids(&client).await;
    assert_eq!(order, shop.items.iter().map(|i| i.id).collect::<Vec<_>>(), "oldest first by default");

    // Each row holds the meta description the item would write: whole on hover, shortened in view.
    for item in &shop.items {
        let proposal = item.proposal.as_ref().unwrap();
        let meta = proposal.fields["seo_description"].value().as_str().unwrap().to_owned();
        let cell = js(
            &client,
            "const dd = document.querySelector(`tr[data-id='${arguments[0]}'] dd[data-field=seo_description]`);
             const hover = dd.querySelector('[title]');
             return [hover ? hover.title : null, dd.innerText.trim()];",
            vec![json!(item.id)],
        )
        .await;
        assert_eq!(cell[0], json!(meta), "item {}: the whole meta description on hover", item.id);
        let shown = cell[1].as_str().unwrap();
        if meta.chars().count() <= 120 {
            assert_eq!(shown, meta, "item {}", item.id);
        } else {
            let kept = shown.strip_suffix('…').unwrap_or_else(|| panic!("item {}: {shown:?} is not cut", item.id));
            assert!(meta.starts_with(kept) && kept.chars().count() > 90, "item {}: {shown:?}", item.id);
        }
        // Tags as chips, HTML as the words a customer reads.
        let tags: Vec<String> = proposal.fields["tags"]
            .value()
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        let chips = js(
            &client,
            "return Array.from(document.querySelectorAll(`tr[data-id='${arguments[0]}'] dd[data-field=tags] li.chip`)).map(c => c.textContent);",
            vec![json!(item.id)],
        )
        .await;
        assert_eq!(chips, json!(tags), "item {}", item.id);
        let description = js(
            &client,
            "return document.querySelector(`tr[data-id='${arguments[0]}'] dd[data-field=description]`).innerText;",
            vec![json!(item.id)],
        )
        .await;
        let description = description.as_str().unwrap();
        assert!(!description.contains("<p>") && description.starts_with("The "), "item {}: {description:?}", item.id);
    }

    // The longest description is cut; opening it shows the whole text.
    let long = shop
        .items
        .iter()
        .max_by_key(|i| i.proposal.as_ref().unwrap().fields["description"].value().as_str().unwrap().len())
        .unwrap();
    let full = format!("tr[data-id='{}'] dd[data-field=description] p.full", long.id);
    assert!(!client.find(Locator::Css(&full)).await.unwrap().is_displayed().await.unwrap());
    click(&client, &format!("tr[data-id='{}'] dd[data-field=description] summary", long.id)).await;
    assert!(client.find(Locator::Css(&full)).await.unwrap().is_displayed().await.unwrap(), "opened");
    let whole = text_of(&client, &full).await;
    let sku = long.input_fields().unwrap()["sku"].as_str().unwrap().to_owned();
    assert!(whole.contains(&format!("SKU: {sku}")) && !whole.contains('…'), "{whole}");

    // Keys do nothing while typing in a field (on a fresh page: the click above put the cursor on
    // that row).
    client.goto(&format!("{}/queue?run={}", shop.base, shop.run_id)).await.unwrap();
    wait_for(&client, "table.queue").await;
    client.find(Locator::Css("input[name=q]")).await.unwrap().send_keys("jjx").await.unwrap();
    assert_eq!(text_of(&client, "#selected-count").await, "0 selected");
    assert_eq!(js(&client, "return document.querySelectorAll('tr.cursor').length;", vec![]).await, 0);
    js(&client, "document.activeElement.blur(); document.querySelector('input[name=q]').value = '';", vec![]).await;

    // j j x j x: the second and third rows are ticked, and the cursor is on the third.
    for key in ['j', 'j', 'x', 'j', 'x'] {
        press(&client, key).await;
    }
    assert_eq!(text_of(&client, "#selected-count").await, "2 selected");
    let cursor = js(&client, "return document.querySelector('tr.cursor').dataset.id;", vec![]).await;
    assert_eq!(cursor, json!(order[2].to_string()));
    let focused = js(&client, "return document.activeElement.dataset.id;", vec![]).await;
    assert_eq!(focused, json!(order[2].to_string()), "the cursor's row has the focus (and its ring)");
    let ticked = js(
        &client,
        "return Array.from(document.querySelectorAll('input[name=ids]:checked')).map(b => Number(b.value));",
        vec![],
    )
    .await;
    assert_eq!(ticked, json!([order[1], order[2]]));

    // a: the bulk form asks to confirm exactly those two; Enter confirms.
    press(&client, 'a').await;
    wait_for(&client, "#bulk-question").await;
    assert_eq!(text_of(&client, "#bulk-question").await, "Approve 2 items?");
    assert_eq!(db.store.item(order[1]).await.unwrap().state, ItemState::Proposed, "nothing before confirming");
    press(&client, ENTER).await;
    wait_for(&client, "#bulk-result").await;
    assert_eq!(text_of(&client, "#bulk-result").await, format!("2 items were approved by {REVIEWER}."));
    wait_for_states(db, &[(order[1], ItemState::Approved), (order[2], ItemState::Approved)]).await;
    for id in [order[0], order[3], order[4], order[5]] {
        assert_eq!(db.store.item(id).await.unwrap().state, ItemState::Proposed, "item {id} was not ticked");
    }

    // r: the reason first, then Enter rejects the ticked item (after the count).
    client.goto(&format!("{}/queue?run={}", shop.base, shop.run_id)).await.unwrap();
    wait_for(&client, "table.queue").await;
    let left = row_ids(&client).await;
    assert_eq!(left, vec![order[0], order[3], order[4], order[5]]);
    press(&client, 'j').await;
    press(&client, 'x').await;
    press(&client, 'r').await;
    assert_eq!(js(&client, "return document.activeElement.id;", vec![]).await, "bulk-reason");
    client.find(Locator::Css("#bulk-reason")).await.unwrap().send_keys("too generic").await.unwrap();
    assert_eq!(text_of(&client, "#selected-count").await, "1 selected", "typing the reason ticks nothing");
    press(&client, ENTER).await;
    wait_for(&client, "#bulk-question").await;
    assert_eq!(text_of(&client, "#bulk-question").await, "Reject 1 item?");
    assert!(text_of(&client, "main").await.contains("Reason: too generic"));
    press(&client, ENTER).await;
    wait_for(&client, "#bulk-result").await;
    wait_for_states(db, &[(order[0], ItemState::Rejected)]).await;
    let last = db.store.item_events(order[0]).await.unwrap().pop().unwrap();
    assert_eq!(last.detail.unwrap()["reason"], "too generic");

    // X ticks a range (from the last ticked row to the cursor); select all unticks and ticks every
    // listed row; approving them leaves nothing waiting.
    client.goto(&format!("{}/queue?run={}", shop.base, shop.run_id)).await.unwrap();
    wait_for(&client, "#select-all").await;
    for key in ['j', 'x', 'j', 'j', 'X'] {
        press(&client, key).await;
    }
    assert_eq!(text_of(&client, "#selected-count").await, "3 selected");
    click(&client, "#select-all").await;
    assert_eq!(text_of(&client, "#selected-count").await, "0 selected");
    click(&client, "#select-all").await;
    assert_eq!(text_of(&client, "#selected-count").await, "3 selected");
    click_and_load(&client, "#approve-selected").await;
    assert_eq!(text_of(&client, "#bulk-question").await, "Approve 3 items?");
    click_and_load(&client, "#bulk-confirm button").await;
    wait_for_states(
        db,
        &[(order[3], ItemState::Approved), (order[4], ItemState::Approved), (order[5], ItemState::Approved)],
    )
    .await;
    client.close().await.unwrap();
}

/// The confidence sort orders the rows and the item page's paging; warning kinds are counted and
/// each one filters the rows.
async fn sort_and_warning_kinds_in_the_browser(db: &TestDb) {
    let Some(driver) = chromedriver().await else { return };
    let shop = shop(db).await;
    let client = browser(&driver).await;
    sign_in(&client, &shop.base).await;
    let high_first = by_confidence(&shop.items);
    assert_ne!(high_first, shop.items.iter().map(|i| i.id).collect::<Vec<_>>(), "the sort changes the order");

    // Chosen in the form: high to low, then low to high; the order is in the URL.
    client.goto(&format!("{}/queue?run={}", shop.base, shop.run_id)).await.unwrap();
    wait_for(&client, "#sort").await;
    client.find(Locator::Css("#sort option[value=confidence]")).await.unwrap().click().await.unwrap();
    click_and_load(&client, "form.filters button").await;
    assert!(client.current_url().await.unwrap().query().unwrap().contains("sort=confidence"));
    assert_eq!(row_ids(&client).await, high_first);
    let shown: Vec<f64> = js(
        &client,
        "return Array.from(document.querySelectorAll('td.confidence')).map(td => Number(td.textContent));",
        vec![],
    )
    .await
    .as_array()
    .unwrap()
    .iter()
    .map(|v| v.as_f64().unwrap())
    .collect();
    assert!(shown.windows(2).all(|w| w[0] >= w[1]), "{shown:?}");
    client.find(Locator::Css("#sort option[value=confidence-asc]")).await.unwrap().click().await.unwrap();
    click_and_load(&client, "form.filters button").await;
    let mut low_first = high_first.clone();
    low_first.reverse();
    assert_eq!(row_ids(&client).await, low_first, "the fixture's confidences are all different");

    // The item page pages through the same order: its next link, and j.
    client.goto(&format!("{}/queue?run={}&sort=confidence", shop.base, shop.run_id)).await.unwrap();
    wait_for(&client, "table.queue").await;
    click_and_load(&client, "a.open").await;
    assert_eq!(client.current_url().await.unwrap().path(), format!("/items/{}", high_first[0]));
    press(&client, 'j').await;
    let want = format!("/items/{}", high_first[1]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.current_url().await.unwrap().path() != want {
        assert!(tokio::time::Instant::now() < deadline, "j did not move to {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let prev = js(&client, "return new URL(document.getElementById('prev').href).pathname;", vec![]).await;
    assert_eq!(prev, json!(format!("/items/{}", high_first[0])));

    // The warning kinds, each with its count.
    let kinds = kinds_of(&shop.items);
    client.goto(&format!("{}/queue?run={}", shop.base, shop.run_id)).await.unwrap();
    wait_for(&client, "nav.warning-kinds").await;
    let listed = js(
        &client,
        "return Array.from(document.querySelectorAll('nav.warning-kinds a')).map(a => [a.dataset.kind, Number(a.querySelector('.n').textContent)]);",
        vec![],
    )
    .await;
    let listed: BTreeMap<String, usize> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| (pair[0].as_str().unwrap().to_owned(), pair[1].as_u64().unwrap() as usize))
        .collect();
    let expected: BTreeMap<String, usize> = kinds.iter().map(|(k, ids)| (k.key(), ids.len())).collect();
    assert_eq!(listed, expected);
    let options = js(&client, "return document.querySelectorAll('#filter-warning option').length;", vec![]).await;
    assert_eq!(options, json!(kinds.len() + 1), "the select offers every kind and any");

    // One kind's link lists exactly its items, and stays chosen in the select.
    let (kind, ids) = narrowing_kind(&shop);
    click_and_load(&client, &format!("nav.warning-kinds a[data-kind='{}']", kind.key())).await;
    assert_eq!(row_ids(&client).await.into_iter().collect::<BTreeSet<_>>(), ids);
    assert_eq!(
        text_of(&client, "p.count").await,
        format!(
            "{} item{} match{}",
            ids.len(),
            if ids.len() == 1 { "" } else { "s" },
            if ids.len() == 1 { "es" } else { "" }
        )
    );
    let chosen = js(&client, "return document.getElementById('filter-warning').value;", vec![]).await;
    assert_eq!(chosen, json!(kind.key()));

    // A link with an order or kind the queue does not know says which.
    client.goto(&format!("{}/queue?sort=sideways", shop.base)).await.unwrap();
    assert!(text_of(&client, "main").await.contains("sort \"sideways\": use one of oldest, confidence"));
    client.close().await.unwrap();
}

// ---- over HTTP ----

async fn get(base: &str, path: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{base}{path}")).await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn ids(v: &Value) -> Vec<i64> {
    v["items"].as_array().unwrap().iter().map(|i| i["id"].as_i64().unwrap()).collect()
}

/// `/api/review` sorts and filters by warning kind, counts the kinds, and refuses unknown values
/// naming them; the queue page refuses them too; bulk decisions take the kind.
async fn the_api_sorts_and_filters_by_warning_kind(db: &TestDb) {
    let shop = shop(db).await;
    let (base, run) = (&shop.base, shop.run_id);

    let (status, body) = get(base, &format!("/api/review?run={run}&sort=confidence")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), by_confidence(&shop.items));
    assert_eq!(body["sort"], "confidence");
    let (_, body) = get(base, &format!("/api/review?run={run}&sort=confidence-asc&limit=2&offset=1")).await;
    let mut low_first = by_confidence(&shop.items);
    low_first.reverse();
    assert_eq!(ids(&body), low_first[1..3], "pages of a sorted queue");

    let mut most_warnings: Vec<&Item> = shop.items.iter().collect();
    most_warnings.sort_by(|a, b| warnings(b).len().cmp(&warnings(a).len()).then(a.id.cmp(&b.id)));
    let (_, body) = get(base, &format!("/api/review?run={run}&sort=warnings")).await;
    assert_eq!(ids(&body), most_warnings.iter().map(|i| i.id).collect::<Vec<_>>());

    let mut by_name: Vec<&Item> = shop.items.iter().collect();
    by_name.sort_by_key(|i| (i.record_name().unwrap().to_lowercase(), i.id));
    let (_, body) = get(base, &format!("/api/review?run={run}&sort=record")).await;
    assert_eq!(ids(&body), by_name.iter().map(|i| i.id).collect::<Vec<_>>());

    // The kinds with their counts, then each kind as a filter.
    let kinds = kinds_of(&shop.items);
    assert!(kinds.len() >= 2, "the fixture raises several kinds: {kinds:?}");
    let (_, body) = get(base, &format!("/api/review?run={run}")).await;
    let counted: BTreeMap<String, usize> = body["warning_kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["kind"].as_str().unwrap().to_owned(), k["count"].as_u64().unwrap() as usize))
        .collect();
    assert_eq!(counted, kinds.iter().map(|(k, ids)| (k.key(), ids.len())).collect());
    for (kind, want) in &kinds {
        let (status, body) = get(base, &format!("/api/review?run={run}&warning={}&sort=confidence", kind.key())).await;
        assert_eq!(status, 200, "{body}");
        let got = ids(&body);
        assert_eq!(got.iter().copied().collect::<BTreeSet<_>>(), *want, "{kind}");
        let sorted: Vec<i64> = by_confidence(&shop.items).into_iter().filter(|id| want.contains(id)).collect();
        assert_eq!(got, sorted, "{kind}: filtered and sorted");
        assert_eq!(body["total"], want.len(), "{kind}");
    }

    // Unknown values are refused, naming them.
    let (status, body) = get(base, &format!("/api/review?run={run}&sort=sideways")).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("sort \"sideways\""), "{body}");
    let (status, body) = get(base, &format!("/api/review?run={run}&warning=too_wide:seo_title")).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("\"too_wide:seo_title\""), "{body}");

    // A bulk approval over a kind: the count, then exactly its items.
    let (kind, want) = narrowing_kind(&shop);
    let client = reqwest::Client::new();
    let filter = json!({ "run": run, "warning": kind.key() });
    let body = json!({ "action": "approve", "reviewer": "api-ann", "filter": filter });
    let counted: Value =
        client.post(format!("{base}/api/review/bulk")).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(counted["matching"], want.len());
    let mut confirmed = body.clone();
    confirmed["confirm"] = json!(want.len());
    let r = client.post(format!("{base}/api/review/bulk")).json(&confirmed).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for item in &shop.items {
        let state = db.store.item(item.id).await.unwrap().state;
        let expected = if want.contains(&item.id) { ItemState::Approved } else { ItemState::Proposed };
        assert_eq!(state, expected, "item {}", item.id);
    }
}

// ---- in the store ----

fn proposal(warnings: &[&str], confidence: Option<f64>) -> Proposal {
    Proposal {
        fields: [("description".to_owned(), FieldChange { before: json!(""), proposed: json!("text"), edited: None })]
            .into(),
        model: "m".into(),
        task_version: "t1".into(),
        warnings: warnings.iter().map(|w| w.to_string()).collect(),
        confidence,
        ..Default::default()
    }
}

/// Warning texts built to trip a naive SQL reading up (`_` and `%` as LIKE wildcards, SQLite's
/// case-blind LIKE, a rule named like a property, a rule message that reads like a check, a
/// property with `: ` in its name) are put in the same kind by the SQL filter as by
/// `WarningKind::of`; every order is stable and the item page's neighbours follow it, also for an
/// item the filter no longer selects.
async fn warning_kinds_and_orders_agree_in_sql(db: &TestDb) {
    let store = &db.store;
    let texts: Vec<(Value, Vec<&str>, Option<f64>)> = vec![
        (json!({"name": "banana"}), vec!["seo_description: 172 characters, at most 160"], Some(0.9)),
        (
            json!({"name": "Apple"}),
            vec!["seoXdescription: 172 characters, at most 160", "tags: 1 items, at least 3"],
            Some(0.2),
        ),
        (json!({"title": " "}), vec![], None),
        (
            json!({"name": "cherry"}),
            vec!["SEO_DESCRIPTION: 200 characters, at most 160", "seo_description: too vague"],
            Some(0.9),
        ),
        (
            json!({"subject": "Date"}),
            vec![
                "totals: lines: 3 items, at most 2",
                "supplier not found: \"Acme: Ltd\" (approve to create a new supplier)",
                "duplicate of bill 17 INV-9 (AUTHORISED): same number",
                "duplicate of bill 18 (DRAFT): same total",
            ],
            Some(0.5),
        ),
        (
            json!({"name": 7, "title": "elder"}),
            vec![
                "look-up: the platform answered 503; check before approving",
                "odd text",
                "a%b: 9 characters, at least 10",
            ],
            Some(0.2),
        ),
        (
            json!({"name": "fig"}),
            vec!["seo_description: 52 characters, at least 120", "a: b: 3 characters, at most 2"],
            None,
        ),
    ];
    let items = texts.iter().map(|(input, w, c)| (input.clone(), proposal(w, *c))).collect();
    let (run, ids) = common::queue::proposals_waiting(store, "shop", items).await;
    let filter = ReviewFilter { run_id: Some(run), ..Default::default() };

    let mut expected: BTreeMap<WarningKind, BTreeSet<i64>> = BTreeMap::new();
    for ((_, w, _), id) in texts.iter().zip(&ids) {
        for text in w {
            expected.entry(WarningKind::of(text)).or_default().insert(*id);
        }
    }
    assert!(expected.len() >= 10, "{expected:?}");
    let counted = store.review_warning_kinds(&filter).await.unwrap();
    let counted: BTreeMap<WarningKind, i64> = counted.into_iter().map(|k| (k.warning_kind, k.count)).collect();
    assert_eq!(counted, expected.iter().map(|(k, ids)| (k.clone(), ids.len() as i64)).collect());
    for (kind, want) in &expected {
        let listed = store.review_queue(&ReviewFilter { warning: Some(kind.clone()), ..filter.clone() }, 100, 0).await;
        let listed: BTreeSet<i64> = listed.unwrap().iter().map(|i| i.id).collect();
        assert_eq!(listed, *want, "{kind}");
    }
    let never = ["too_long:a: b", "rule:seo_description: too vague", "too_short:tags"];
    for key in never {
        let kind: WarningKind = key.parse().unwrap();
        let n = store.review_count(&ReviewFilter { warning: Some(kind), ..filter.clone() }).await.unwrap();
        assert_eq!(n, 0, "{key}");
    }

    // Orders, each ending in the id; the neighbours of every item follow them.
    let [banana, apple, blank, cherry, date, elder, fig] = ids[..] else { panic!() };
    let orders = [
        (ReviewOrder::Oldest, vec![banana, apple, blank, cherry, date, elder, fig]),
        (ReviewOrder::ConfidenceHigh, vec![banana, cherry, date, apple, elder, blank, fig]),
        (ReviewOrder::ConfidenceLow, vec![apple, elder, date, banana, cherry, blank, fig]),
        (ReviewOrder::MostWarnings, vec![date, elder, apple, cherry, fig, banana, blank]),
        // A blank title reads as the record id (`r2`); a name that is not text is passed over.
        (ReviewOrder::Record, vec![apple, banana, cherry, date, elder, fig, blank]),
    ];
    for (order, want) in orders {
        let f = ReviewFilter { order, ..filter.clone() };
        let listed: Vec<i64> = store.review_queue(&f, 100, 0).await.unwrap().iter().map(|i| i.id).collect();
        assert_eq!(listed, want, "{order:?}");
        for (at, id) in want.iter().enumerate() {
            let (prev, next, before) = store.review_neighbours(&f, *id).await.unwrap();
            let expected = (at.checked_sub(1).map(|p| want[p]), want.get(at + 1).copied(), at as i64);
            assert_eq!((prev, next, before), expected, "{order:?}: item {id}");
        }
    }
    // Approved, an item leaves the filter but keeps its place for "next".
    store.approve(date, "reviewer:ann").await.unwrap();
    let f = ReviewFilter { order: ReviewOrder::ConfidenceHigh, ..filter.clone() };
    assert_eq!(store.review_neighbours(&f, date).await.unwrap(), (Some(cherry), Some(apple), 2));
}

on_both_backends! {
    browser_rows_and_keys => rows_show_proposals_and_keys_decide_the_ticked_items;
    browser_sort_and_kinds => sort_and_warning_kinds_in_the_browser;
    api_sort_and_warning => the_api_sorts_and_filters_by_warning_kind;
    store_kinds_and_orders => warning_kinds_and_orders_agree_in_sql;
}
