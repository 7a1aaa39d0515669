//! The item page in a real browser (headless Chromium), on SQLite and Postgres: a WooCommerce
//! product whose description at pull time and whose proposal both carry markup a shop must never
//! run (`<script>`, `<img onerror>`, a `javascript:` link) beside real structure (`<ul><li>`,
//! `<strong>`). The page renders both as the shop shows them — cleaned HTML as elements — and none
//! of the script runs; the source toggle shows the markup with the word diff; fields carry the
//! task's labels and character counts against its bounds; tags are chips marked kept and added; the
//! record as pulled is a table of facts with the raw JSON behind a toggle; the header has the
//! product's thumbnail and links to the product page and its wp-admin edit page. After the write
//! is reverted (partly: the shop keeps alt text), the page says who reverted it, when, and what the
//! shop holds now. Served by `daemon --ui-only` (no connectors), the page has no links and no error.

mod common;

use std::time::Duration;

use common::browser::{browser, chromedriver, click, sign_in, text_of, wait_for};
use common::harness::start_run;
use common::woo::{woo_selecting, work_until_idle};
use enrichd::config::{Config, Secret, ServerAuthConfig};
use enrichd::server::{Access, Site, serve};
use enrichd::store::{ItemState, RunStatus};
use enrichd_woocommerce::sandbox::WooSandbox;
use fantoccini::Locator;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "item page password";
const REVIEWER: &str = "Ida Itempage";

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/ui/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Runs `script` in the page and returns its value.
async fn js(client: &fantoccini::Client, script: &str) -> Value {
    client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("{script}: {e}"))
}

async fn displayed(client: &fantoccini::Client, css: &str) -> bool {
    client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).is_displayed().await.unwrap()
}

/// The texts of the elements `css` selects, in order.
async fn texts(client: &fantoccini::Client, css: &str) -> Vec<String> {
    let script = "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent.trim());";
    let found = client.execute(script, vec![Value::from(css)]).await.unwrap();
    serde_json::from_value(found).unwrap()
}

/// None of the page's script came from the record or the proposal: the globals their script, image
/// handler and link would set are unset, no alert is open, and the page's only script is ours.
async fn nothing_ran(client: &fantoccini::Client, base: &str) {
    assert!(client.get_alert_text().await.is_err(), "an alert is open");
    let set = js(
        client,
        "return ['__pulled', '__pulled_img', '__pulled_link', '__proposed', '__proposed_img', '__proposed_link']\
         .filter(name => window[name] !== undefined);",
    )
    .await;
    assert_eq!(set, json!([]), "script from the record or the proposal ran");
    let scripts = js(client, "return Array.from(document.scripts).map(s => s.src || s.textContent);").await;
    assert_eq!(scripts, json!([format!("{base}/assets/review.js")]), "only our own script");
    let handlers = js(
        client,
        "return Array.from(document.querySelectorAll('*')).filter(e => Array.from(e.attributes)\
         .some(a => a.name.startsWith('on'))).length;",
    )
    .await;
    assert_eq!(handlers, 0, "no element carries an event handler");
    let links = js(client, "return document.querySelectorAll('a[href^=\"javascript:\" i]').length;").await;
    assert_eq!(links, 0, "no javascript: link");
}

async fn the_item_page_renders_previews_and_facts_and_runs_no_script(db: &common::TestDb) {
    let Some(driver) = chromedriver().await else { return };
    let products: Vec<Value> = serde_json::from_value(fixture("item_page_products.json")).unwrap();
    // A description with a few words is too short (so it is proposed); tags are always proposed.
    let select = r#"{ min_length = { description = 400 }, add = ["tags"], fill_all_missing = true }"#;
    let w = woo_selecting(db, WooSandbox::with_products(products), "all", select).await;
    let answer = fixture("item_page_answer.json");
    w.provider.answer_with(answer.as_object().unwrap().clone());
    let run = start_run(&w.engine).await;
    let run = work_until_idle(&w.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::AwaitingReview, "{run:?}");
    let item = db.store.items(run.id, Some(ItemState::Proposed), 10).await.unwrap().remove(0);
    let proposal = item.proposal.clone().unwrap();
    let proposed = proposal.fields["description"].proposed.as_str().unwrap().to_owned();
    assert!(!proposed.contains("script") && proposed.contains("<ul><li>"), "cleaned as answers are: {proposed}");

    let config = Config::load(&w.config).unwrap();
    let auth = ServerAuthConfig { password: Some(Secret(PASSWORD.to_owned().into())), token: None, session_hours: 1 };
    let site = Site { access: Access::new(Some(&auth)), ..Site::from_config(&config) };
    let stop = CancellationToken::new();
    let (addr, _server) = serve(w.engine.clone(), site, "127.0.0.1:0", stop.clone()).await.unwrap();
    let base = format!("http://{addr}");
    let client = browser(&driver).await;
    sign_in(&client, &base, REVIEWER, PASSWORD).await;
    client.goto(&format!("{base}/items/{}", item.id)).await.unwrap();
    wait_for(&client, "#field-description .preview").await;
    nothing_ran(&client, &base).await;

    // The proposal as the shop will show it: elements, not markup; and beside it the value at pull
    // time, cleaned the same way.
    for preview in ["#field-description .preview", "#field-description .preview-before"] {
        let shape = js(
            &client,
            &format!(
                "const p = document.querySelector('{preview}'); return {{ items: p.querySelectorAll('ul > li').length, \
                 strong: p.querySelectorAll('strong').length, script: p.querySelectorAll('script, img').length, \
                 links: Array.from(p.querySelectorAll('a')).map(a => a.getAttribute('href')) }};"
            ),
        )
        .await;
        assert!(shape["items"].as_u64().unwrap() >= 1, "{preview}: {shape}");
        assert_eq!(shape["strong"], 1, "{preview}: {shape}");
        assert_eq!(shape["script"], 0, "{preview}: {shape}");
        assert_eq!(shape["links"], json!([null]), "the javascript: href is gone: {preview}: {shape}");
    }
    assert_eq!(texts(&client, "#field-description .preview li").await, ["Zinc plated steel", "M8 thread, 40 mm long"]);
    assert!(!text_of(&client, "#field-description .preview").await.contains('<'), "no markup shown as text");

    // The source toggle: closed at first, then the markup with the word diff; the value at pull
    // time shows its script as text.
    assert!(!displayed(&client, "#field-description pre.proposed").await);
    click(&client, "#field-description details.source summary").await;
    assert!(displayed(&client, "#field-description pre.proposed").await);
    let source = text_of(&client, "#field-description pre.proposed").await;
    assert!(source.contains("<ul><li>Zinc plated steel</li>"), "{source}");
    assert!(!texts(&client, "#field-description pre.proposed ins").await.is_empty(), "the diff marks what is new");
    let before = text_of(&client, "#field-description pre.before").await;
    assert!(before.contains("<script>window.__pulled = 1"), "{before}");
    nothing_ran(&client, &base).await;

    // Labels from the task, the raw key beside them; counts against the task's bounds.
    assert_eq!(text_of(&client, "#field-seo_description .label").await, "Meta description");
    assert_eq!(text_of(&client, "#field-seo_description code.key").await, "seo_description");
    assert_eq!(text_of(&client, "#field-short_description .label").await, "Short description");
    assert_eq!(text_of(&client, "[id='field-images[].alt'] .label").await, "Image alt text");
    let meta = answer["seo_description"].as_str().unwrap().chars().count();
    assert!(meta < 120, "the fixture's meta description is below the task's bound");
    let count = text_of(&client, "#field-seo_description .count").await;
    assert!(count.starts_with(&format!("{meta} characters (120–160)")), "{count}");
    let out = js(&client, "return document.querySelector('#field-seo_description .count').classList.contains('out');");
    assert_eq!(out.await, true, "a count outside the bounds is marked");
    let title = js(&client, "return document.querySelector('#field-seo_title .count').classList.contains('out');");
    assert_eq!(title.await, false, "{}", text_of(&client, "#field-seo_title .count").await);

    // Tags as chips: what the product had is kept, the rest is added, and the page says so.
    assert_eq!(texts(&client, "#field-tags .chip-kept").await, ["hardware (kept)"]);
    assert_eq!(texts(&client, "#field-tags .chip-added").await, ["bolts (added)", "zinc plated (added)"]);
    assert!(text_of(&client, "#field-tags .merge-note").await.starts_with("Existing tags stay"));

    // The record as pulled: facts with labels, lists as chips, HTML rendered; the raw JSON behind a
    // toggle.
    assert_eq!(text_of(&client, "#record tr[data-field=sku] td").await, "UI-ITEM-1");
    assert!(text_of(&client, "#record tr[data-field=sku] th").await.starts_with("SKU"));
    assert_eq!(texts(&client, "#record tr[data-field=categories] .chip").await, ["Bolts"]);
    let pulled = js(
        &client,
        "const d = document.querySelector('#record tr[data-field=description] .rendered'); \
         return [d.querySelectorAll('ul > li').length, d.querySelectorAll('script, img').length];",
    )
    .await;
    assert_eq!(pulled, json!([1, 0]));
    assert!(!displayed(&client, "#raw-json pre").await, "the raw JSON is folded away");
    click(&client, "#raw-json summary").await;
    assert!(displayed(&client, "#raw-json pre").await);
    assert!(text_of(&client, "#raw-json pre").await.contains("\"sku\": \"UI-ITEM-1\""));

    // The header: the product's picture and its links on the shop, opening in a new tab.
    let src = js(&client, "return document.querySelector('#record-thumbnail').getAttribute('src');").await;
    assert_eq!(src, "https://cdn.example.com/uploads/hex-bolt-m8.jpg");
    let links = js(
        &client,
        "return Array.from(document.querySelectorAll('#record-links a')).map(a => [a.textContent, \
         a.getAttribute('href'), a.getAttribute('target'), a.getAttribute('rel')]);",
    )
    .await;
    let permalink = item.input_fields().unwrap()["permalink"].as_str().unwrap().to_owned();
    let shop = permalink.split("/product/").next().unwrap().to_owned();
    assert!(shop.starts_with("https://127.0.0.1:"), "{permalink}");
    let edit = format!("{shop}/wp-admin/post.php?post={}&action=edit", item.external_id);
    assert_eq!(
        links,
        json!([
            ["Product page", permalink, "_blank", "noopener noreferrer"],
            ["Edit in wp-admin", edit, "_blank", "noopener noreferrer"],
        ])
    );
    assert_eq!(text_of(&client, "#item-state").await, "waiting for review");

    // The layout: on a wide screen the record sits beside the proposal and the two previews of a
    // field side by side; at 1280 px still two columns; on a tablet one column. Never a sideways
    // scroll. Screenshots of each are kept under target/screenshots/.
    for (width, columns) in [(1400, true), (1280, true), (800, false)] {
        client.set_window_size(width, 1000).await.unwrap();
        js(&client, "window.scrollTo(0, 0);").await;
        let shot = client.screenshot().await.unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let backend = if db.url.starts_with("postgres") { "postgres" } else { "sqlite" };
        std::fs::write(dir.join(format!("item-page-{width}-{backend}.png")), shot).unwrap();
        let layout = js(
            &client,
            "const r = s => document.querySelector(s).getBoundingClientRect(); \
             const p = r('.proposal-col'), c = r('.record-col'), b = r('#field-description .side-before'), \
             a = r('#field-description .side-proposed'); \
             return { beside: c.left >= p.right, below: c.top >= p.bottom, previews_beside: a.left >= b.right, \
                      overflow: document.documentElement.scrollWidth > document.documentElement.clientWidth, \
                      viewport: window.innerWidth, \
                      previews: getComputedStyle(document.querySelector('#field-description .previews')).gridTemplateColumns };",
        )
        .await;
        assert_eq!(layout["overflow"], false, "{width} px: {layout}");
        assert_eq!(layout["beside"], columns, "{width} px: {layout}");
        assert_eq!(layout["below"], !columns, "{width} px: {layout}");
        assert_eq!(layout["previews_beside"], true, "{width} px: {layout}");
    }
    client.set_window_size(1280, 1024).await.unwrap();

    // Written, then reverted: the page says who reverted it and when, and what the shop holds now.
    db.store.approve(item.id, &format!("reviewer:{REVIEWER}")).await.unwrap();
    let run = work_until_idle(&w.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(db.store.item(item.id).await.unwrap().state, ItemState::Written, "{run:?}");
    // WooCommerce cannot clear alt text through the products API, so the revert is partial.
    let results = enrichd::engine::revert(&w.engine, &[item.id], &format!("reviewer:{REVIEWER}")).await.unwrap();
    assert_eq!(db.store.item(item.id).await.unwrap().state, ItemState::PartiallyReverted, "{results:?}");
    client.goto(&format!("{base}/items/{}", item.id)).await.unwrap();
    wait_for(&client, "#reverted").await;
    let said = text_of(&client, "#reverted-by").await;
    assert!(said.starts_with("Partially reverted: part of our write is still on the platform."), "{said}");
    assert!(said.contains(&format!("By reviewer:{REVIEWER} at ")), "{said}");
    let at = js(&client, "return document.querySelector('#reverted-by time').getAttribute('datetime');").await;
    let at = chrono::DateTime::parse_from_rfc3339(at.as_str().unwrap()).unwrap();
    assert!((chrono::Utc::now() - at.to_utc()).num_seconds().abs() < 120, "reverted just now: {at}");
    // The shop holds the old description again: shown rendered and cleaned, its script inert.
    let now = js(
        &client,
        "const d = document.querySelector('#platform-now tr[data-field=description] .rendered'); \
         return [d.querySelectorAll('strong').length, d.querySelectorAll('script, img').length];",
    )
    .await;
    assert_eq!(now, json!([1, 0]));
    assert_eq!(texts(&client, "#platform-now tr[data-field=tags] .chip").await, ["hardware"]);
    // What is left of our write is there too: the alt text the shop kept.
    let alt = &db.store.item(item.id).await.unwrap().proposal.unwrap().fields["images[].alt"].proposed[0]["alt"];
    let left = text_of(&client, "#platform-now tr[data-field='images[].alt']").await;
    assert!(left.contains(alt.as_str().unwrap()), "{left}");
    assert_eq!(text_of(&client, "#item-state").await, "partly reverted");
    nothing_ran(&client, &base).await;

    // `daemon --ui-only` builds no connectors: the page has no links, and no error.
    let looking = std::sync::Arc::new(enrichd::engine::Engine::build_for_looking(&config, db.store.clone()));
    let site = Site { access: Access::new(Some(&auth)), ..Site::from_config(&config) };
    let (addr, _looking_server) = serve(looking, site, "127.0.0.1:0", stop.clone()).await.unwrap();
    let ui_only = format!("http://{addr}");
    sign_in(&client, &ui_only, REVIEWER, PASSWORD).await;
    client.goto(&format!("{ui_only}/items/{}", item.id)).await.unwrap();
    wait_for(&client, "#reverted").await;
    assert_eq!(js(&client, "return document.querySelectorAll('#record-links').length;").await, 0);
    assert_eq!(text_of(&client, "#field-seo_description .label").await, "Meta description", "tasks are known");
    client.close().await.unwrap();
    stop.cancel();
}

on_both_backends! {
    item_page => the_item_page_renders_previews_and_facts_and_runs_no_script;
}
