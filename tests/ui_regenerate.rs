//! Regenerate with a note, in a real browser (headless Chromium through chromedriver), on SQLite and
//! Postgres: a reviewer opens a proposal waiting for review, asks for "shorter, mention the
//! material", and the page shows the model's new proposal; the prompt the provider sandbox received
//! held the note and the previous answer inside their fences; a failing model leaves the proposal
//! as it was and the page says so; the history shows the replaced proposal and the note; the item
//! waits for review again and the run's tokens and cost grew.

mod common;

use common::browser::{browser, chromedriver, click_and_load, sign_in, text_of, wait_for};
use common::prompts::{revision, user_message};
use common::woo::serve_for_review;
use enrichd::config::{Secret, ServerAuthConfig};
use enrichd::sandbox::provider::Faults;
use enrichd::server::Access;
use enrichd::store::ItemState;
use enrichd_woocommerce::sandbox::WooSandbox;
use fantoccini::Locator;
use serde_json::Value;

const PASSWORD: &str = "correct horse battery staple";
const REVIEWER: &str = "Ada Reviewer";
const NOTE: &str = "shorter, mention the material";

fn products() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/regenerate/products.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn regenerate_with_a_note_in_the_browser(db: &common::TestDb) {
    let Some(driver) = chromedriver().await else { return };
    let auth = ServerAuthConfig { password: Some(Secret(PASSWORD.to_owned().into())), token: None, session_hours: 1 };
    let shop = serve_for_review(db, WooSandbox::with_products(products()), Access::new(Some(&auth))).await;
    let base = &shop.base;
    let waiting = db.store.items(shop.run_id, Some(ItemState::Proposed), 10).await.unwrap();
    let item = waiting.iter().find(|i| i.record_name().as_deref() == Some("Butt hinge 100 mm")).unwrap().clone();
    let old = item.proposal.clone().unwrap();
    let old_description = old.fields["description"].value().as_str().unwrap().to_owned();
    assert!(old_description.contains("Price 4.20."), "the copywriter's first answer: {old_description}");
    let run_before = db.store.run(shop.run_id).await.unwrap();
    shop.w.provider.record_requests(true);

    let client = browser(&driver).await;
    sign_in(&client, base, REVIEWER, PASSWORD).await;

    // The note goes in, the model answers while the page waits, and the item page comes back.
    client.goto(&format!("{base}/items/{}", item.id)).await.unwrap();
    wait_for(&client, "#regenerate-form").await;
    client.find(Locator::Css("#regenerate-note")).await.unwrap().send_keys(NOTE).await.unwrap();
    click_and_load(&client, "#regenerate-button").await;
    let url = client.current_url().await.unwrap();
    assert_eq!(url.path(), format!("/items/{}", item.id), "back on the item page");
    wait_for(&client, "#regenerated").await;
    let notice = text_of(&client, "#regenerated").await;
    assert!(notice.contains(REVIEWER) && notice.contains(NOTE), "{notice}");
    assert_eq!(text_of(&client, "#regenerated-note").await, NOTE);

    // The new proposal is on the page and in the store: shorter, and it mentions the material.
    let now = db.store.item(item.id).await.unwrap();
    assert_eq!(now.state, ItemState::Proposed, "the item waits for review again");
    let new = now.proposal.clone().unwrap();
    let new_description = new.fields["description"].value().as_str().unwrap().to_owned();
    assert_ne!(new_description, old_description);
    assert!(new_description.contains("Material: stainless steel."), "{new_description}");
    assert!(!new_description.contains("Price 4.20."), "shorter: only the first paragraph is left: {new_description}");
    assert!(new_description.len() < old_description.len());
    let page = client.source().await.unwrap();
    assert!(page.contains("Material: stainless steel."), "the page shows the new proposal");
    assert!(!page.contains("Price 4.20."), "and no longer the old one");
    let queued: Vec<i64> =
        db.store.review_queue(&Default::default(), 100, 0).await.unwrap().iter().map(|i| i.id).collect();
    assert!(queued.contains(&item.id), "the item is in the review queue");

    // The prompt held the note and the previous answer, each inside its fence.
    let received = shop.w.provider.received();
    let requests: Vec<&Value> =
        received.iter().filter(|r| r.path.ends_with("/chat/completions")).map(|r| &r.body).collect();
    assert_eq!(requests.len(), 1, "one model request: {received:?}");
    let user = user_message(requests[0]);
    assert!(user.contains("Butt hinge 100 mm"), "the task's prompt and the record come first");
    let (previous, note) = revision(&user);
    assert_eq!(note, NOTE);
    assert_eq!(previous["description"], old_description.as_str(), "the previous answer as it would be written");
    assert!(user.find("</record>").unwrap() < user.find("<previous_answer>").unwrap());

    // The model fails: the page says so, the note stays in the box, the proposal stays as it was.
    shop.w.provider.set_faults(Faults { server_error_rate: 1.0, ..Faults::default() });
    client.find(Locator::Css("#regenerate-note")).await.unwrap().send_keys("warmer tone").await.unwrap();
    click_and_load(&client, "#regenerate-button").await;
    wait_for(&client, "#regenerate-failed").await;
    let failed = text_of(&client, "#regenerate-failed").await;
    assert!(failed.contains("No new proposal") && failed.contains("unchanged"), "{failed}");
    let kept = client.execute("return document.getElementById('regenerate-note').value;", vec![]).await.unwrap();
    assert_eq!(kept, "warmer tone", "the note is kept for another try");
    assert_eq!(db.store.item(item.id).await.unwrap().proposal, now.proposal);
    shop.w.provider.set_faults(Faults::default());

    // The history shows the replaced proposal and the note.
    client.goto(&format!("{base}/items/{}/history", item.id)).await.unwrap();
    wait_for(&client, ".regeneration").await;
    assert_eq!(text_of(&client, ".regeneration-note").await, NOTE);
    let replaced = text_of(&client, ".regeneration-previous").await;
    assert!(replaced.contains("Price 4.20."), "the old proposal: {replaced}");
    let proposed = text_of(&client, ".regeneration-proposed").await;
    assert!(proposed.contains("Material: stainless steel."), "{proposed}");
    let events = db.store.item_events(item.id).await.unwrap();
    let event = events.iter().find(|e| e.kind == "regenerated").expect("a regenerated event");
    assert!(event.actor.contains(REVIEWER), "by the signed-in reviewer: {}", event.actor);
    assert_eq!(event.to_state.as_deref(), Some("proposed"));

    // Tokens and cost counted on the item and the run.
    let run_after = db.store.run(shop.run_id).await.unwrap();
    assert!(run_after.tokens_in > run_before.tokens_in && run_after.tokens_out > run_before.tokens_out);
    assert!(run_after.cost_micros > run_before.cost_micros, "{run_before:?} → {run_after:?}");
    assert!(now.tokens_in > item.tokens_in && now.cost_micros > item.cost_micros);

    client.close().await.unwrap();
    shop.stop.cancel();
}

on_both_backends! {
    browser_regenerate => regenerate_with_a_note_in_the_browser;
}
