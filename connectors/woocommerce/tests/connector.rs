//! The WooCommerce connector driven through the front door: real HTTP(S) against the sandbox store,
//! which behaves like the captured WooCommerce 9.9 site (see `tests/fixtures_replay.rs`).

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use enrichd_connector::{
    Change, Connector, ConnectorError, PageRequest, Record, WriteMode, WriteOutcome, WriteResult, WriteSubmission,
};
use enrichd_woocommerce::sandbox::{
    CONSUMER_KEY, CONSUMER_SECRET, Faults, READ_ONLY_CONSUMER_KEY, READ_ONLY_CONSUMER_SECRET, WooSandbox,
    generate_catalogue,
};
use enrichd_woocommerce::{Auth, Options, Seo, WooCommerce};
use serde_json::{Value, json};

/// A sandbox store served over HTTPS (Basic and query-string keys) and plain HTTP (OAuth 1.0a).
struct Shop {
    sandbox: WooSandbox,
    https: SocketAddr,
    http: SocketAddr,
}

impl Shop {
    async fn start(sandbox: WooSandbox) -> Shop {
        let local = SocketAddr::from(([127, 0, 0, 1], 0));
        let https = sandbox.start_https(local).await.unwrap();
        let http = sandbox.start(local).await.unwrap();
        Shop { sandbox, https, http }
    }

    fn options(&self, auth: Auth, seo: Seo) -> Options {
        let base_url = match auth {
            Auth::OAuth1 => format!("http://{}", self.http),
            _ => format!("https://127.0.0.1:{}", self.https.port()),
        };
        Options {
            base_url,
            consumer_key: CONSUMER_KEY.into(),
            consumer_secret: CONSUMER_SECRET.into(),
            auth,
            seo,
            timeout: Duration::from_secs(10),
            ca_cert_pem: Some(self.sandbox.certificate_pem()),
            status: None,
        }
    }

    fn connector(&self, auth: Auth, seo: Seo) -> WooCommerce {
        WooCommerce::new(self.options(auth, seo)).unwrap()
    }

    /// `DELETE products/{id}` as someone else would send it (to the trash, or for good).
    async fn delete(&self, id: u64, force: bool) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .tls_certs_merge([reqwest::Certificate::from_pem(self.sandbox.certificate_pem().as_bytes()).unwrap()])
            .no_proxy()
            .build()
            .unwrap();
        let url = format!("https://127.0.0.1:{}/wp-json/wc/v3/products/{id}?force={force}", self.https.port());
        let response = client.delete(url).basic_auth(CONSUMER_KEY, Some(CONSUMER_SECRET)).send().await.unwrap();
        assert_eq!(response.status(), 200, "deleting product {id}");
    }
}

/// Every record of `entity`, page by page.
async fn list_all(woo: &WooCommerce, entity: &str, per_page: u32, modified_after: Option<String>) -> Vec<Record> {
    let mut request = PageRequest { cursor: None, per_page, modified_after };
    let mut records = Vec::new();
    for _ in 0..1000 {
        let page = woo.list(entity, &request).await.unwrap();
        records.extend(page.records);
        match page.next {
            Some(next) => request.cursor = Some(next),
            None => return records,
        }
    }
    panic!("listing {entity} never ended");
}

async fn fetch_one(woo: &WooCommerce, entity: &str, id: &str) -> Record {
    let mut found = woo.fetch(entity, &[id.to_owned()]).await.unwrap();
    assert_eq!(found.len(), 1, "fetching {entity} {id}");
    found.remove(0)
}

/// A change to `record` as the engine builds it: based on the record as re-read.
fn change(record: &Record, fields: Value) -> Change {
    Change {
        id: record.id.clone(),
        base_version: record.version.clone(),
        fields: fields.as_object().unwrap().clone(),
        native: record.native.clone(),
        mode: WriteMode::Merge,
    }
}

async fn write(woo: &WooCommerce, entity: &str, changes: &[Change]) -> Vec<WriteOutcome> {
    match woo.write(entity, changes).await.unwrap() {
        WriteSubmission::Done(outcomes) => outcomes,
        WriteSubmission::Pending(p) => panic!("WooCommerce writes are synchronous, got {p:?}"),
    }
}

fn written(outcome: &WriteOutcome) -> bool {
    matches!(outcome.result, WriteResult::Written { version: Some(_) })
}

fn ids(records: &[Record]) -> BTreeSet<String> {
    records.iter().map(|r| r.id.clone()).collect()
}

/// A store whose products were all created within the same second (ties on `date_created`).
fn tied_catalogue(n: usize, seed: u64) -> WooSandbox {
    let sandbox = WooSandbox::new();
    sandbox.set_time(chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap().and_hms_opt(2, 0, 0).unwrap());
    for body in generate_catalogue(n, seed, 0.4) {
        sandbox.seed_product(&body).unwrap();
    }
    sandbox
}

fn assert_clean(message: &str) {
    for secret in [
        CONSUMER_KEY,
        CONSUMER_SECRET,
        READ_ONLY_CONSUMER_KEY,
        READ_ONLY_CONSUMER_SECRET,
        "consumer_key",
        "consumer_secret",
        "oauth_signature",
        "oauth_nonce",
        "://",
    ] {
        assert!(!message.contains(secret), "{secret:?} in error message {message:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Authentication

#[tokio::test]
async fn every_auth_mode_reads_and_writes() {
    let shop = Shop::start(WooSandbox::with_products(generate_catalogue(40, 1, 0.5))).await;
    for auth in [Auth::Basic, Auth::Query, Auth::OAuth1, Auth::Auto] {
        let woo = shop.connector(auth, Seo::Auto);
        woo.check("product").await.unwrap_or_else(|e| panic!("{auth:?}: {e}"));
        let records = list_all(&woo, "product", 100, None).await;
        assert_eq!(records.len(), 40, "{auth:?}");
        let target = &records[(auth as usize) * 3];
        let text = format!("<p>Written with {auth:?} auth &amp; checked.</p>");
        let outcomes = write(&woo, "product", &[change(target, json!({"short_description": text}))]).await;
        assert!(written(&outcomes[0]), "{auth:?}: {outcomes:?}");
        let back = fetch_one(&woo, "product", &target.id).await;
        assert!(woo.holds("short_description", &json!(text), back.field("short_description")), "{auth:?}");
    }
    assert_eq!(shop.sandbox.stats().unauthorized, 0);
}

/// Our OAuth 1.0a signer against the sandbox's own verifier, over many requests whose query values
/// need encoding: commas (`include=1,2,3`), colons (`modified_after`), `_fields` lists.
#[tokio::test]
async fn oauth1_signatures_verify_over_many_requests() {
    let shop = Shop::start(WooSandbox::with_products(generate_catalogue(60, 2, 0.5))).await;
    let woo = shop.connector(Auth::OAuth1, Seo::Auto);
    for per_page in [7, 10, 25] {
        assert_eq!(list_all(&woo, "product", per_page, None).await.len(), 60, "per_page {per_page}");
    }
    let all: Vec<String> = shop.sandbox.product_ids().iter().map(u64::to_string).collect();
    for window in all.chunks(9) {
        let found = woo.fetch("product", window).await.unwrap();
        assert_eq!(ids(&found), window.iter().cloned().collect(), "include={}", window.join(","));
    }
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    assert_eq!(list_all(&woo, "product", 50, Some(since)).await.len(), 60);
    let records = list_all(&woo, "product", 100, None).await;
    let changes: Vec<Change> = records
        .iter()
        .take(5)
        .map(|r| change(r, json!({"description": "<p>Signed, sealed & delivered.</p>"})))
        .collect();
    assert!(write(&woo, "product", &changes).await.iter().all(written));
    let stats = shop.sandbox.stats();
    assert_eq!(stats.unauthorized, 0, "every signature verified: {stats:?}");
    assert!(stats.list > 20, "{stats:?}");
}

#[tokio::test]
async fn basic_or_query_keys_over_plain_http_are_refused_up_front() {
    let shop = Shop::start(WooSandbox::new()).await;
    for auth in [Auth::Basic, Auth::Query] {
        let mut options = shop.options(auth, Seo::None);
        options.base_url = format!("http://{}", shop.http);
        let Err(e) = WooCommerce::new(options) else { panic!("{auth:?} over http:// was accepted") };
        assert!(!e.retryable);
        assert!(e.message.contains("OAuth 1.0a") && e.message.contains("https://"), "{}", e.message);
        assert!(!e.message.contains(CONSUMER_SECRET));
    }
    let mut options = shop.options(Auth::Auto, Seo::None);
    options.base_url = format!("http://{}", shop.http);
    let woo = WooCommerce::new(options).unwrap();
    woo.check("product").await.expect("auto picks OAuth 1.0a over plain HTTP");
}

#[tokio::test]
async fn a_wrong_secret_is_permanent_and_named_without_credentials() {
    let shop = Shop::start(WooSandbox::with_products(generate_catalogue(3, 3, 0.5))).await;
    let wrong = "cs_wrong_secret_0000000000000000000000000000";
    for auth in [Auth::Basic, Auth::Query, Auth::OAuth1] {
        let mut options = shop.options(auth, Seo::None);
        options.consumer_secret = wrong.into();
        let woo = WooCommerce::new(options).unwrap();
        let e = woo.list("product", &PageRequest { per_page: 10, ..Default::default() }).await.unwrap_err();
        assert!(!e.retryable, "{auth:?}: {e:?}");
        assert_eq!(e.status, Some(401), "{auth:?}");
        assert_eq!(e.code.as_deref(), Some("woocommerce_rest_authentication_error"), "{auth:?}");
        assert!(e.message.contains("woocommerce_rest_authentication_error"), "{}", e.message);
        assert!(!e.message.contains(wrong), "{}", e.message);
        assert_clean(&e.message);
    }
}

#[tokio::test]
async fn a_read_only_key_reads_but_its_write_fails_the_call() {
    let shop = Shop::start(WooSandbox::with_products(generate_catalogue(5, 4, 0.5))).await;
    for auth in [Auth::Basic, Auth::OAuth1] {
        let mut options = shop.options(auth, Seo::None);
        options.consumer_key = READ_ONLY_CONSUMER_KEY.into();
        options.consumer_secret = READ_ONLY_CONSUMER_SECRET.into();
        let woo = WooCommerce::new(options).unwrap();
        let records = list_all(&woo, "product", 10, None).await;
        assert_eq!(records.len(), 5);
        let e = woo
            .write("product", &[change(&records[0], json!({"description": "x"}))])
            .await
            .expect_err("a read-only key cannot write");
        assert!(!e.retryable, "{e:?}");
        assert_eq!(e.status, Some(401));
        assert!(e.message.contains("does not have write permissions"), "{}", e.message);
        assert_clean(&e.message);
    }
    assert!(shop.sandbox.writes().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Listing

/// Finding 1: products sharing creation seconds. Paging by id covers each exactly once; trashed
/// products are left out; a page past the end is empty and ends the listing.
#[tokio::test]
async fn listing_covers_a_tied_catalogue_exactly_once() {
    let shop = Shop::start(tied_catalogue(250, 11)).await;
    shop.delete(shop.sandbox.product_ids()[17], false).await;
    let expected: BTreeSet<String> = shop
        .sandbox
        .product_ids()
        .into_iter()
        .filter(|id| shop.sandbox.product(*id).unwrap()["status"] != "trash")
        .map(|id| id.to_string())
        .collect();
    assert_eq!(expected.len(), 249);
    let woo = shop.connector(Auth::Basic, Seo::Auto);

    let mut request = PageRequest { cursor: None, per_page: 100, modified_after: None };
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = woo.list("product", &request).await.unwrap();
        pages += 1;
        assert_eq!(page.total, Some(249), "X-WP-Total counts every listed product");
        seen.extend(page.records.iter().map(|r| r.id.clone()));
        match page.next {
            Some(next) => request.cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 249, "no product twice");
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), expected);

    let past_end = PageRequest { cursor: Some("4".into()), per_page: 100, modified_after: None };
    let past = woo.list("product", &past_end).await.unwrap();
    assert!(past.records.is_empty() && past.next.is_none());
    assert_eq!(past.total, Some(249));
    let bad = PageRequest { cursor: Some("x".into()), per_page: 100, modified_after: None };
    assert!(!woo.list("product", &bad).await.unwrap_err().retryable);
}

/// Finding 5: `modified_after` is a GMT instant; the site is in Europe/Berlin, so reading it as
/// local time would return every product.
#[tokio::test]
async fn modified_after_returns_only_later_edits() {
    let shop = Shop::start(tied_catalogue(120, 12)).await;
    let woo = shop.connector(Auth::Basic, Seo::Auto);
    assert_eq!(list_all(&woo, "product", 100, None).await.len(), 120);
    let all = shop.sandbox.product_ids();
    shop.sandbox.advance(Duration::from_secs(600));
    let since = shop.sandbox.now();
    shop.sandbox.advance(Duration::from_secs(1800));
    let edited = [all[3], all[50], all[119]];
    for id in edited {
        shop.sandbox.edit_as_human(id, json!({"short_description": "<p>Edited in wp-admin.</p>"})).unwrap();
    }
    let after = since.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let changed = list_all(&woo, "product", 100, Some(after)).await;
    assert_eq!(ids(&changed), edited.iter().map(u64::to_string).collect());
    for record in &changed {
        assert!(woo.holds(
            "short_description",
            &json!("<p>Edited in wp-admin.</p>"),
            record.field("short_description")
        ));
    }
    let local =
        PageRequest { per_page: 10, modified_after: Some("2026-11-22T03:00:00+01:00".into()), ..Default::default() };
    assert!(
        !woo.list("product", &local).await.unwrap_err().retryable,
        "an offset other than UTC is refused, not misread"
    );
}

// ---------------------------------------------------------------------------------------------
// Variations

fn variable(name: &str, sizes: &[&str]) -> Value {
    json!({
        "name": name,
        "type": "variable",
        "attributes": [{"name": "Size", "position": 0, "visible": true, "variation": true, "options": sizes}],
        "variations": sizes
            .iter()
            .map(|s| json!({"sku": format!("{name}-{s}"), "regular_price": "10.00", "attributes": [{"name": "Size", "option": s}]}))
            .collect::<Vec<_>>(),
    })
}

#[tokio::test]
async fn variations_are_listed_fetched_and_written() {
    let mut bodies = generate_catalogue(4, 5, 0.5);
    bodies.insert(1, variable("Hoodie", &["S", "M"]));
    bodies.push(variable("Glove", &["S", "M", "L"]));
    bodies.push(variable("Boot", &["38", "39", "40", "41", "42"]));
    let shop = Shop::start(WooSandbox::with_products(bodies)).await;
    let parents: Vec<u64> = shop
        .sandbox
        .product_ids()
        .into_iter()
        .filter(|id| shop.sandbox.product(*id).unwrap()["type"] == "variable")
        .collect();
    assert_eq!(parents.len(), 3);
    let expected: BTreeSet<String> = parents
        .iter()
        .flat_map(|p| {
            let variations = shop.sandbox.product(*p).unwrap()["variations"].as_array().unwrap().clone();
            variations.into_iter().map(move |v| format!("{p}/{}", v.as_u64().unwrap()))
        })
        .collect();
    assert_eq!(expected.len(), 10);

    for auth in [Auth::Basic, Auth::OAuth1] {
        let woo = shop.connector(auth, Seo::Auto);
        for per_page in [2, 100] {
            let listed = list_all(&woo, "variation", per_page, None).await;
            assert_eq!(listed.len(), 10, "{auth:?} per_page {per_page}");
            assert_eq!(ids(&listed), expected, "{auth:?} per_page {per_page}");
            for r in &listed {
                let parent = r.id.split('/').next().unwrap().parse::<u64>().unwrap();
                assert_eq!(r.field("parent_id"), Some(&json!(parent)));
            }
        }
    }

    let woo = shop.connector(Auth::Basic, Seo::Auto);
    let mut asked: Vec<String> = expected.iter().step_by(2).cloned().collect();
    asked.push(format!("{}/999999", parents[0]));
    asked.push("999999/1".into());
    asked.push("not-a-variation".into());
    let fetched = woo.fetch("variation", &asked).await.unwrap();
    assert_eq!(ids(&fetched), expected.iter().step_by(2).cloned().collect());

    let target = fetched.iter().find(|r| r.id.starts_with(&format!("{}/", parents[1]))).unwrap().clone();
    let parent_before = shop.sandbox.product(parents[1]).unwrap()["date_modified_gmt"].clone();
    let ghost = Change { id: format!("{}/999999", parents[1]), ..change(&target, json!({"description": "x"})) };
    let text = "<p>Knitted cuffs & a fleece lining.</p>";
    let outcomes = write(&woo, "variation", &[change(&target, json!({"description": text})), ghost]).await;
    assert_eq!(outcomes.len(), 2);
    assert_eq!(outcomes[0].id, target.id);
    let WriteResult::Written { version: Some(version) } = &outcomes[0].result else { panic!("{outcomes:?}") };
    let WriteResult::Failed(e) = &outcomes[1].result else { panic!("{outcomes:?}") };
    assert!(!e.retryable && e.status == Some(400), "{e:?}");
    let variation_id: u64 = target.id.split('/').nth(1).unwrap().parse().unwrap();
    let stored = shop.sandbox.product_raw(variation_id).unwrap();
    assert_eq!(stored["description"], "<p>Knitted cuffs &amp; a fleece lining.</p>");
    assert_eq!(version.0, stored["date_modified_gmt"].as_str().unwrap());
    let back = fetch_one(&woo, "variation", &target.id).await;
    assert!(woo.holds("description", &json!(text), back.field("description")));
    assert_eq!(&back.version, version);
    let parent_after = shop.sandbox.product(parents[1]).unwrap()["date_modified_gmt"].clone();
    assert!(parent_after.as_str() > parent_before.as_str(), "finding 4: the parent is bumped too");

    // A rate limit is about the call, not the item: nothing more is sent, and it is retryable.
    shop.sandbox.set_faults(Faults { rate_limit_rate: 1.0, retry_after_secs: 3, ..Faults::default() });
    shop.sandbox.reset_inspection();
    let two: Vec<Change> = fetched.iter().take(2).map(|r| change(r, json!({"description": "y"}))).collect();
    let e = woo.write("variation", &two).await.unwrap_err();
    assert!(e.retryable && e.status == Some(429) && e.retry_after == Some(Duration::from_secs(3)), "{e:?}");
    assert_eq!(shop.sandbox.stats().rejected_by_faults, 1);
    assert!(shop.sandbox.writes().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Fetch

#[tokio::test]
async fn fetch_returns_exactly_the_ids_asked_for() {
    let shop = Shop::start(tied_catalogue(250, 13)).await;
    let all = shop.sandbox.product_ids();
    shop.delete(all[120], false).await;
    let woo = shop.connector(Auth::Basic, Seo::None);

    let mut asked: Vec<String> = all.iter().rev().map(u64::to_string).collect();
    asked.extend(["999999".to_owned(), "abc".to_owned(), String::new()]);
    let stats_before = shop.sandbox.stats();
    let found = woo.fetch("product", &asked).await.unwrap();
    assert_eq!(found.len(), 250, "every known product once, unknown ids skipped");
    assert_eq!(ids(&found), all.iter().map(u64::to_string).collect());
    let trashed = found.iter().find(|r| r.id == all[120].to_string()).unwrap();
    assert_eq!(trashed.field("status"), Some(&json!("trash")), "a trashed product is still seen");
    let requests = shop.sandbox.stats().list - stats_before.list;
    assert_eq!(requests, 4, "three chunks of at most 100, and one for the trash");

    let few = vec![all[3].to_string(), all[200].to_string(), all[7].to_string()];
    assert_eq!(ids(&woo.fetch("product", &few).await.unwrap()), few.iter().cloned().collect());
    assert!(woo.fetch("product", &["999998".to_owned()]).await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Writes

#[tokio::test]
async fn written_text_holds_despite_wordpress_normalisation() {
    let shop = Shop::start(WooSandbox::with_products(generate_catalogue(6, 6, 1.0))).await;
    let woo = shop.connector(Auth::Basic, Seo::Auto);
    let records = list_all(&woo, "product", 10, None).await;
    let fields = json!({
        "name": "Mug & Coaster Set",
        "description": "<p>Strong & light.</p><ul><li>Zinc plated</li><li>M8 × 40</li></ul>",
        "short_description": "Plain text & a \"quote\".",
    });
    let outcomes = write(&woo, "product", &[change(&records[2], fields.clone())]).await;
    assert!(written(&outcomes[0]), "{outcomes:?}");
    let raw = shop.sandbox.product_raw(records[2].id.parse().unwrap()).unwrap();
    assert_eq!(raw["name"], "Mug &amp; Coaster Set", "WordPress stored its own form");
    let back = fetch_one(&woo, "product", &records[2].id).await;
    assert_ne!(back.field("description"), fields.get("description"), "and serves it re-wrapped");
    for (field, value) in fields.as_object().unwrap() {
        assert!(woo.holds(field, value, back.field(field)), "{field}: {:?}", back.field(field));
    }
    assert_eq!(back.field("name"), Some(&json!("Mug & Coaster Set")), "names are decoded");
    let WriteResult::Written { version } = &outcomes[0].result else { unreachable!() };
    assert_eq!(version.as_ref(), Some(&back.version));
    assert!(!woo.holds("description", &json!("<p>Something else.</p>"), back.field("description")));
}

#[tokio::test]
async fn tags_are_merged_by_name_never_duplicated() {
    let mut body = generate_catalogue(1, 7, 0.0).remove(0);
    body["tags"] = json!([{"name": "cotton"}, {"name": "sale"}]);
    let shop = Shop::start(WooSandbox::with_products([body])).await;
    let woo = shop.connector(Auth::Basic, Seo::Auto);
    let record = list_all(&woo, "product", 10, None).await.remove(0);
    let tags = json!(["Cotton", "summer", "summer", "Winter wear"]);
    assert!(written(&write(&woo, "product", &[change(&record, json!({"tags": tags}))]).await[0]));
    let back = fetch_one(&woo, "product", &record.id).await;
    let mut names: Vec<String> =
        back.field("tags").unwrap().as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect();
    names.sort();
    assert_eq!(names, ["Winter wear", "cotton", "sale", "summer"]);
    assert!(woo.holds("tags", &tags, back.field("tags")));

    // Written again from the new state: nothing changes, nothing is duplicated.
    assert!(written(&write(&woo, "product", &[change(&back, json!({"tags": tags}))]).await[0]));
    let again = fetch_one(&woo, "product", &record.id).await;
    assert_eq!(again.field("tags").unwrap().as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn alt_text_fills_only_the_given_images() {
    let mut body = generate_catalogue(1, 8, 0.0).remove(0);
    body["images"] = json!([
        {"src": "https://images.example.com/front.jpg", "alt": "Front"},
        {"src": "https://images.example.com/side.jpg"},
        {"src": "https://images.example.com/back.jpg"},
    ]);
    let mut other = generate_catalogue(2, 9, 0.0).remove(1);
    other["images"] = json!([{"src": "https://images.example.com/other.jpg", "alt": "Other"}]);
    let shop = Shop::start(WooSandbox::with_products([body, other])).await;
    let woo = shop.connector(Auth::Basic, Seo::Auto);
    let records = list_all(&woo, "product", 10, None).await;
    let (record, other) = (&records[0], &records[1]);
    let image_ids: Vec<u64> =
        record.field("images[].alt").unwrap().as_array().unwrap().iter().map(|i| i["id"].as_u64().unwrap()).collect();
    assert_eq!(image_ids.len(), 3);
    let other_image = other.field("images[].alt").unwrap()[0]["id"].as_u64().unwrap();

    let alt = json!([{"id": image_ids[1], "alt": "Side view & clip"}]);
    let stray = json!([{"id": image_ids[0], "alt": "Not ours"}]);
    let outcomes = write(
        &woo,
        "product",
        &[change(record, json!({"images[].alt": alt})), change(other, json!({"images[].alt": stray}))],
    )
    .await;
    let outcome = |id: &str| outcomes.iter().find(|o| o.id == id).unwrap_or_else(|| panic!("{id}: {outcomes:?}"));
    assert!(written(outcome(&record.id)), "{outcomes:?}");
    let WriteResult::Failed(e) = &outcome(&other.id).result else { panic!("{outcomes:?}") };
    assert!(!e.retryable && e.message.contains(&format!("image {}", image_ids[0])), "{}", e.message);

    let back = fetch_one(&woo, "product", &record.id).await;
    assert!(woo.holds("images[].alt", &alt, back.field("images[].alt")));
    let stored = shop.sandbox.product_raw(record.id.parse().unwrap()).unwrap();
    let images = stored["images"].as_array().unwrap();
    assert_eq!(images.iter().map(|i| i["id"].as_u64().unwrap()).collect::<Vec<_>>(), image_ids, "none lost");
    assert_eq!(images[0]["alt"], "Front");
    assert_eq!(images[2]["alt"], "");
    let other_stored = shop.sandbox.product(other.id.parse().unwrap()).unwrap();
    assert_eq!(other_stored["images"][0]["id"], other_image);
    assert_eq!(other_stored["images"][0]["alt"], "Other", "another product's image is untouched");
}

#[tokio::test]
async fn seo_fields_go_to_the_detected_or_configured_plugin_keys() {
    let mut yoast = generate_catalogue(3, 10, 0.0);
    yoast[1]["meta_data"] = json!([{"key": "_yoast_wpseo_focuskw", "value": "bolt"}]);
    for i in [0, 2] {
        yoast[i]["meta_data"] = json!([{"key": "_supplier_ref", "value": "X"}]);
    }
    let shop = Shop::start(WooSandbox::with_products(yoast)).await;
    let woo = shop.connector(Auth::Basic, Seo::Auto);
    assert_eq!(woo.seo().await.unwrap(), Seo::Yoast);
    let records = list_all(&woo, "product", 10, None).await;
    assert_eq!(records[0].field("seo_title"), Some(&json!("")), "an unset SEO field reads as empty");
    let fields = json!({"seo_title": "Hex Bolt M8 | Trade", "seo_description": "Zinc plated & strong."});
    assert!(written(&write(&woo, "product", &[change(&records[0], fields.clone())]).await[0]));
    let raw = shop.sandbox.product(records[0].id.parse().unwrap()).unwrap();
    let meta =
        |key: &str| raw["meta_data"].as_array().unwrap().iter().find(|m| m["key"] == key).map(|m| m["value"].clone());
    assert_eq!(meta("_yoast_wpseo_title"), Some(json!("Hex Bolt M8 | Trade")));
    assert_eq!(meta("_yoast_wpseo_metadesc"), Some(json!("Zinc plated & strong.")));
    assert_eq!(meta("_supplier_ref"), Some(json!("X")), "other meta is left alone");
    let back = fetch_one(&woo, "product", &records[0].id).await;
    for (field, value) in fields.as_object().unwrap() {
        assert!(woo.holds(field, value, back.field(field)), "{field}");
    }

    let mut bodies = generate_catalogue(2, 14, 0.0);
    for p in &mut bodies {
        p["meta_data"] = json!([{"key": "_supplier_ref", "value": "Y"}]);
    }
    let plain = Shop::start(WooSandbox::with_products(bodies)).await;
    let none = plain.connector(Auth::Basic, Seo::Auto);
    assert_eq!(none.seo().await.unwrap(), Seo::None);
    let record = list_all(&none, "product", 10, None).await.remove(0);
    assert_eq!(record.field("seo_title"), None);
    let outcome = &write(&none, "product", &[change(&record, json!({"seo_title": "T"}))]).await[0];
    assert!(matches!(&outcome.result, WriteResult::Failed(e) if e.message.contains("`seo`")), "{outcome:?}");
    let rank_math = plain.connector(Auth::Basic, Seo::RankMath);
    let record = list_all(&rank_math, "product", 10, None).await.remove(0);
    assert!(written(&write(&rank_math, "product", &[change(&record, fields.clone())]).await[0]));
    let raw = plain.sandbox.product(record.id.parse().unwrap()).unwrap();
    let keys: HashSet<&str> = raw["meta_data"].as_array().unwrap().iter().map(|m| m["key"].as_str().unwrap()).collect();
    assert!(keys.contains("rank_math_title") && keys.contains("rank_math_description"), "{keys:?}");
    assert!(!keys.contains("_yoast_wpseo_title"));
    let back = fetch_one(&rank_math, "product", &record.id).await;
    assert_eq!(back.field("seo_title"), Some(&json!("Hex Bolt M8 | Trade")));
}

/// Finding 6: a bad item in a batch fails alone; the batch is still a 200.
#[tokio::test]
async fn a_product_deleted_before_the_write_fails_alone() {
    let shop = Shop::start(WooSandbox::with_products(generate_catalogue(5, 15, 1.0))).await;
    let woo = shop.connector(Auth::Basic, Seo::Auto);
    let records = list_all(&woo, "product", 10, None).await;
    shop.delete(records[2].id.parse().unwrap(), true).await;
    let changes: Vec<Change> =
        records.iter().map(|r| change(r, json!({"description": format!("<p>About {}.</p>", r.id)}))).collect();
    let outcomes = write(&woo, "product", &changes).await;
    assert_eq!(
        outcomes.iter().map(|o| o.id.clone()).collect::<Vec<_>>(),
        ids(&records).into_iter().collect::<Vec<_>>()
    );
    for (i, outcome) in outcomes.iter().enumerate() {
        if i == 2 {
            let WriteResult::Failed(e) = &outcome.result else { panic!("{outcome:?}") };
            assert!(!e.retryable);
            assert_eq!(e.code.as_deref(), Some("woocommerce_rest_product_invalid_id"));
            assert!(e.message.contains(&records[2].id), "{}", e.message);
        } else {
            assert!(written(outcome), "{outcome:?}");
        }
    }
    assert_eq!(shop.sandbox.stats().batch, 1);
}

#[tokio::test]
async fn one_hundred_fifty_changes_go_in_two_batches() {
    let shop = Shop::start(tied_catalogue(150, 16)).await;
    let woo = shop.connector(Auth::Basic, Seo::Auto);
    let records = list_all(&woo, "product", 100, None).await;
    assert_eq!(records.len(), 150);
    let changes: Vec<Change> =
        records.iter().map(|r| change(r, json!({"short_description": format!("<p>Item {}.</p>", r.id)}))).collect();
    let outcomes = write(&woo, "product", &changes).await;
    assert_eq!(outcomes.len(), 150);
    assert!(outcomes.iter().all(written), "no 413: {:?}", outcomes.iter().find(|o| !written(o)));
    assert_eq!(shop.sandbox.stats().batch, 2);
    let back = woo.fetch("product", &records.iter().map(|r| r.id.clone()).collect::<Vec<_>>()).await.unwrap();
    for r in &back {
        assert!(woo.holds("short_description", &json!(format!("<p>Item {}.</p>", r.id)), r.field("short_description")));
    }
}

#[tokio::test]
async fn a_dropped_meta_key_does_not_hold_and_says_why() {
    let mut bodies = generate_catalogue(2, 17, 0.0);
    bodies[0]["meta_data"] = json!([{"key": "_yoast_wpseo_title", "value": "Old"}]);
    let shop = Shop::start(WooSandbox::with_products(bodies)).await;
    shop.sandbox.set_faults(Faults {
        dropped_meta_keys: HashSet::from(["_yoast_wpseo_metadesc".to_owned(), "_protected_note".to_owned()]),
        ..Faults::default()
    });
    let woo = shop.connector(Auth::Basic, Seo::Auto);
    let record = list_all(&woo, "product", 10, None).await.remove(1);
    let fields = json!({"seo_title": "New", "seo_description": "Dropped", "meta._protected_note": "Dropped too"});
    assert!(written(&write(&woo, "product", &[change(&record, fields.clone())]).await[0]), "the store says 200");
    let back = fetch_one(&woo, "product", &record.id).await;
    assert!(woo.holds("seo_title", &fields["seo_title"], back.field("seo_title")));
    for field in ["seo_description", "meta._protected_note"] {
        let stored = back.fields.get(field);
        assert!(!woo.holds(field, &fields[field], stored), "{field}: {stored:?}");
        let reason = woo.not_held_reason(field, stored);
        assert!(reason.contains(field) && reason.contains("did not store the meta value"), "{reason}");
    }
}

// ---------------------------------------------------------------------------------------------
// Faults

#[tokio::test]
async fn reads_retry_through_faults_and_writes_report_them() {
    let shop = Shop::start(tied_catalogue(250, 18)).await;
    let woo = shop.connector(Auth::Basic, Seo::Auto);
    let records = list_all(&woo, "product", 100, None).await;
    shop.sandbox.set_faults(Faults {
        server_error_rate: 0.15,
        rate_limit_rate: 0.15,
        retry_after_secs: 1,
        ..Faults::default()
    });
    let faulty = shop.connector(Auth::Basic, Seo::Auto);
    let listed = list_all(&faulty, "product", 100, None).await;
    assert_eq!(ids(&listed), ids(&records), "listing succeeds through 30% faults");
    let fetched = faulty.fetch("product", &records.iter().map(|r| r.id.clone()).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(fetched.len(), 250);

    for (rate_limit_rate, server_error_rate, status) in [(1.0, 0.0, 429), (0.0, 1.0, 503)] {
        shop.sandbox.set_faults(Faults {
            rate_limit_rate,
            server_error_rate,
            retry_after_secs: 7,
            ..Faults::default()
        });
        shop.sandbox.reset_inspection();
        let woo = shop.connector(Auth::Basic, Seo::Yoast);
        let e = woo.write("product", &[change(&records[0], json!({"description": "x"}))]).await.unwrap_err();
        assert!(e.retryable, "{e:?}");
        assert_eq!(e.status, Some(status));
        if status == 429 {
            assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        }
        assert_eq!(shop.sandbox.stats().rejected_by_faults, 1, "a write is sent once, never retried inside");
        // Over 100 changes: each batch fails on its own, retryably, and nothing is applied.
        shop.sandbox.reset_inspection();
        let changes: Vec<Change> = records.iter().take(150).map(|r| change(r, json!({"description": "x"}))).collect();
        let outcomes = write(&woo, "product", &changes).await;
        assert_eq!(outcomes.len(), 150);
        assert!(outcomes.iter().all(|o| matches!(&o.result, WriteResult::Failed(e) if e.retryable)));
        assert_eq!(shop.sandbox.stats().rejected_by_faults, 2);
        assert!(shop.sandbox.writes().is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Security

/// Query-string keys and OAuth signatures travel in URLs, and WooCommerce echoes them in `Link`:
/// no error message may carry a URL or a credential.
#[tokio::test]
async fn no_error_message_carries_a_url_or_a_credential() {
    let shop = Shop::start(WooSandbox::with_products(generate_catalogue(5, 19, 0.5))).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut messages: Vec<String> = Vec::new();
    let mut collect = |e: ConnectorError| messages.push(e.message);
    for auth in [Auth::Query, Auth::OAuth1] {
        let woo = shop.connector(auth, Seo::Yoast);
        let records = list_all(&woo, "product", 10, None).await;

        let mut options = shop.options(auth, Seo::Yoast);
        options.consumer_secret = "cs_wrong".into();
        collect(WooCommerce::new(options).unwrap().list("product", &PageRequest::default()).await.unwrap_err());

        let mut options = shop.options(auth, Seo::Yoast);
        options.base_url = match auth {
            Auth::OAuth1 => format!("http://{closed}"),
            _ => format!("https://{closed}"),
        };
        options.timeout = Duration::from_secs(2);
        let unreachable = WooCommerce::new(options).unwrap();
        collect(unreachable.write("product", &[change(&records[0], json!({"description": "x"}))]).await.unwrap_err());

        let bad_cursor = PageRequest { cursor: Some("0".into()), ..Default::default() };
        collect(woo.list("product", &bad_cursor).await.unwrap_err());

        shop.sandbox.set_faults(Faults { latency: Duration::from_millis(1500), ..Faults::default() });
        let mut options = shop.options(auth, Seo::Yoast);
        options.timeout = Duration::from_millis(300);
        let slow = WooCommerce::new(options).unwrap();
        let e = slow.write("product", &[change(&records[0], json!({"description": "x"}))]).await.unwrap_err();
        assert!(e.retryable && e.code.as_deref() == Some("timeout"), "{e:?}");
        collect(e);
        shop.sandbox.set_faults(Faults::default());

        let ghost = Change { id: "999999".into(), ..change(&records[1], json!({"description": "x"})) };
        let outcomes = write(&woo, "product", &[ghost]).await;
        let WriteResult::Failed(e) = &outcomes[0].result else { panic!("{outcomes:?}") };
        collect(e.clone());

        shop.sandbox.set_faults(Faults { rate_limit_rate: 1.0, retry_after_secs: 1, ..Faults::default() });
        collect(woo.write("product", &[change(&records[2], json!({"description": "x"}))]).await.unwrap_err());
        shop.sandbox.set_faults(Faults::default());
    }
    assert_eq!(messages.len(), 12);
    for message in &messages {
        assert!(message.starts_with("woocommerce"), "{message}");
        assert_clean(message);
    }
}
