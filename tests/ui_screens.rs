//! Screenshots of the review UI as a person sees it, in headless Chromium at 1400×1000: the item
//! page, the queue, a run page and the pipelines page, over a realistic state — a WooCommerce
//! sandbox catalogue whose run holds a sample waiting for review (proposals with HTML copy and
//! tags, written by the provider sandbox from each product's facts) and one item already written.
//!
//! The PNGs go to `target/screenshots/{item,queue,run,pipelines}.png` (under `CARGO_TARGET_DIR`
//! when set) as test artefacts; the README shows two of them. Each file is checked to be a PNG of
//! the window's size, so a broken page or a browser that did not draw fails the test. At 1280 px
//! and 800 px (a tablet) the pipelines, runs, run and history pages must not scroll sideways.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::browser::{browser, chromedriver, click, click_and_load, wait_for};
use common::woo::{catalogue_waiting_for_review, serve_ui, work_until_idle};
use enrichd::config::{Secret, ServerAuthConfig};
use enrichd::server::Access;
use enrichd::store::{ItemState, ReviewPhase};
use fantoccini::Locator;

const WIDTH: u32 = 1400;
const HEIGHT: u32 = 1000;
const PASSWORD: &str = "screenshots only";

/// Where the screenshots go: `$CARGO_TARGET_DIR/screenshots`, else `target/screenshots` in the crate.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("screenshots")
}

/// The width and height a PNG's header declares; panics when `bytes` is not a PNG.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR", "a PNG starts with its IHDR chunk");
    let number = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (number(16), number(20))
}

/// Saves what the browser shows as `NAME.png` and checks the file is a PNG of the viewport's size,
/// `width` pixels wide.
async fn shoot(client: &fantoccini::Client, name: &str, width: u32) {
    // Fonts and layout settle before the picture is taken.
    client.execute("return document.fonts ? document.fonts.ready.then(() => true) : true;", vec![]).await.unwrap();
    let png = client.screenshot().await.unwrap();
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, &png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    let written = std::fs::read(&path).unwrap();
    let viewport = client
        .execute(
            "return [window.innerWidth * window.devicePixelRatio, window.innerHeight * window.devicePixelRatio];",
            vec![],
        )
        .await
        .unwrap();
    let expected = (viewport[0].as_f64().unwrap() as u32, viewport[1].as_f64().unwrap() as u32);
    assert_eq!(png_size(&written), expected, "{} is a screenshot of the whole window", path.display());
    assert_eq!(expected.0, width, "the window is {width} pixels wide");
    eprintln!("screenshot: {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots_of_the_review_ui() {
    let Some(driver) = chromedriver().await else { return };
    let db = common::sqlite().await;
    let review = r#"policy = "sample_first", sample = 6"#;
    let (w, run, _) = catalogue_waiting_for_review(&db, 48, 3, review, r#"schedule = "0 */6 * * *""#).await;
    assert_eq!(db.store.run(run.id).await.unwrap().review_phase, Some(ReviewPhase::SampleReview));
    // One sample proposal approved and written, so the run shows a write.
    let sample = db.store.items(run.id, Some(ItemState::Proposed), 100).await.unwrap();
    assert_eq!(sample.len(), 6, "the sample waits for review");
    db.store.approve(sample[0].id, "reviewer:Ada Reviewer").await.unwrap();
    work_until_idle(&w.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(db.store.item(sample[0].id).await.unwrap().state, ItemState::Written);

    let auth = ServerAuthConfig { password: Some(Secret(PASSWORD.to_owned().into())), token: None, session_hours: 1 };
    let (base, stop) = serve_ui(&w, Access::new(Some(&auth))).await;
    std::fs::create_dir_all(screenshot_dir()).unwrap();

    let client = browser(&driver).await;
    client.set_window_size(WIDTH, HEIGHT).await.unwrap();
    // The window's outer size includes what little frame headless Chromium has: make the page itself
    // 1400 wide and as tall as it can be.
    let inner = client.execute("return [window.innerWidth, window.innerHeight];", vec![]).await.unwrap();
    let (iw, ih) = (inner[0].as_u64().unwrap() as u32, inner[1].as_u64().unwrap() as u32);
    if (iw, ih) != (WIDTH, HEIGHT) {
        client.set_window_size(2 * WIDTH - iw, 2 * HEIGHT - ih).await.unwrap();
    }

    client.goto(&format!("{base}/login")).await.unwrap();
    client.find(Locator::Css("input[name=name]")).await.unwrap().send_keys("Ada Reviewer").await.unwrap();
    client.find(Locator::Css("input[name=password]")).await.unwrap().send_keys(PASSWORD).await.unwrap();
    click(&client, "form.login button").await;
    wait_for(&client, "main h1").await;

    // The item page of a sample proposal with HTML copy and tags.
    let item = &sample[1];
    let proposal = db.store.item(item.id).await.unwrap().proposal.unwrap();
    assert!(proposal.fields.contains_key("description") && proposal.fields.contains_key("tags"), "{proposal:?}");
    client.goto(&format!("{base}/items/{}?run={}", item.id, run.id)).await.unwrap();
    wait_for(&client, "#record-name").await;
    shoot(&client, "item", WIDTH).await;

    client.goto(&format!("{base}/queue?run={}", run.id)).await.unwrap();
    wait_for(&client, "table.queue").await;
    shoot(&client, "queue", WIDTH).await;

    client.goto(&format!("{base}/runs/{}", run.id)).await.unwrap();
    wait_for(&client, "#sample-gate").await;
    shoot(&client, "run", WIDTH).await;

    // The pipelines page with a dry run's outcome: the candidates left in the shop.
    client.goto(&format!("{base}/pipelines")).await.unwrap();
    wait_for(&client, "article[data-pipeline=catalogue]").await;
    click_and_load(&client, "article[data-pipeline=catalogue] .dry-run-button").await;
    wait_for(&client, "#dry-run-count").await;
    shoot(&client, "pipelines", WIDTH).await;

    // At 1280 px and on a tablet (800 px) the pages this layout owns fit the window: the nav wraps,
    // wide tables scroll inside their own box, the page never scrolls sideways.
    let history = format!("{base}/items/{}/history", sample[0].id);
    for width in [1280, 800] {
        client.set_window_size(width, HEIGHT).await.unwrap();
        let inner = client.execute("return window.innerWidth;", vec![]).await.unwrap().as_u64().unwrap() as u32;
        client.set_window_size(2 * width - inner, HEIGHT).await.unwrap();
        for (name, url) in [
            ("pipelines", format!("{base}/pipelines")),
            ("runs", format!("{base}/runs")),
            ("run", format!("{base}/runs/{}", run.id)),
            ("history", history.clone()),
        ] {
            client.goto(&url).await.unwrap();
            wait_for(&client, "main h1").await;
            if width == 800 && matches!(name, "run" | "runs") {
                shoot(&client, &format!("{name}-tablet"), width).await;
            }
            let overflow = client
                .execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth;", vec![])
                .await
                .unwrap();
            assert_eq!(overflow.as_i64(), Some(0), "{url} at {width} px scrolls sideways by {overflow} px");
        }
    }

    client.close().await.unwrap();
    stop.cancel();
    db.cleanup().await;
}
