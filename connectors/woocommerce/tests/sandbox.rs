//! The sandbox's behaviour beyond the captures, driven over HTTP(S): OAuth 1.0a over plain HTTP,
//! the unstable date order, faults, the concurrent-edit hook, and the seeds.

use std::collections::HashSet;
use std::net::SocketAddr;

use enrichd_woocommerce::sandbox::{
    self as woo, CONSUMER_KEY, CONSUMER_SECRET, Faults, OAuthSignatureMethod, WooSandbox, Writer,
};
use serde_json::{Value, json};

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn client(sandbox: &WooSandbox) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .tls_certs_merge([reqwest::Certificate::from_pem(sandbox.certificate_pem().as_bytes()).unwrap()])
        .no_proxy()
        .build()
        .unwrap()
}

/// A one-legged OAuth 1.0a query for `GET {url}` (the sandbox's own signer; the connector's tests
/// sign with their client crate).
fn signed_query(url: &str, nonce: &str, timestamp: i64, secret: &str) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = vec![
        ("per_page".into(), "5".into()),
        ("oauth_consumer_key".into(), CONSUMER_KEY.into()),
        ("oauth_nonce".into(), nonce.into()),
        ("oauth_signature_method".into(), "HMAC-SHA1".into()),
        ("oauth_timestamp".into(), timestamp.to_string()),
    ];
    let base = woo::oauth_base_string("GET", url, &params);
    params.push(("oauth_signature".into(), woo::oauth_sign(OAuthSignatureMethod::HmacSha1, &base, secret, "")));
    params
}

#[tokio::test]
async fn plain_http_accepts_only_verified_oauth_signatures() {
    let sandbox = WooSandbox::with_products(woo::generate_catalogue(12, 3, 0.5));
    let addr = sandbox.start(local()).await.unwrap();
    let http = client(&sandbox);
    let url = format!("http://{addr}/wp-json/wc/v3/products");
    let now = chrono::Utc::now().timestamp();
    let get = |query: Vec<(String, String)>| http.get(&url).query(&query).send();

    let ok = get(signed_query(&url, "nonce-1", now, CONSUMER_SECRET)).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<Vec<Value>>().await.unwrap().len(), 5);

    let replay = get(signed_query(&url, "nonce-1", now, CONSUMER_SECRET)).await.unwrap();
    assert_eq!(replay.status(), 401);
    assert_eq!(replay.json::<Value>().await.unwrap()["message"], "Invalid nonce - nonce has already been used.");

    let forged = get(signed_query(&url, "nonce-2", now, "cs_wrong")).await.unwrap();
    assert_eq!(
        forged.json::<Value>().await.unwrap()["message"],
        "Invalid signature - provided signature does not match."
    );

    let stale = get(signed_query(&url, "nonce-3", now - 16 * 60, CONSUMER_SECRET)).await.unwrap();
    assert_eq!(stale.json::<Value>().await.unwrap()["message"], "Invalid timestamp.");

    let basic = http.get(&url).basic_auth(CONSUMER_KEY, Some(CONSUMER_SECRET)).send().await.unwrap();
    assert_eq!(basic.status(), 401, "Basic credentials are ignored over plain HTTP");
    assert_eq!(basic.json::<Value>().await.unwrap()["code"], "woocommerce_rest_cannot_view");
}

/// Finding 1: paging through the default date order skips and repeats products that share
/// `date_created` seconds, while `orderby=id` covers each exactly once.
#[tokio::test]
async fn paging_by_date_skips_and_repeats_but_paging_by_id_does_not() {
    let sandbox = WooSandbox::with_products(woo::generate_catalogue(60, 9, 0.3));
    sandbox.set_time(chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap().and_hms_opt(2, 0, 0).unwrap());
    let addr = sandbox.start_https(local()).await.unwrap();
    let http = client(&sandbox);
    let published = sandbox.product_ids().len();
    let collect = |orderby: &'static str| {
        let http = http.clone();
        async move {
            let mut seen = Vec::new();
            for page in 1..=10 {
                let url = format!(
                    "https://127.0.0.1:{}/wp-json/wc/v3/products?per_page=10&page={page}&orderby={orderby}&order=asc&status=any",
                    addr.port()
                );
                let items: Vec<Value> = http
                    .get(url)
                    .basic_auth(CONSUMER_KEY, Some(CONSUMER_SECRET))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                seen.extend(items.iter().map(|p| p["id"].as_u64().unwrap()));
            }
            seen
        }
    };
    let by_id = collect("id").await;
    let distinct: HashSet<u64> = by_id.iter().copied().collect();
    assert_eq!(by_id.len(), distinct.len());
    let drafts = published - distinct.len();
    assert!(drafts < published / 5, "only drafts are missing from status=any: {drafts}");
    let by_date = collect("date").await;
    let distinct_by_date: HashSet<u64> = by_date.iter().copied().collect();
    assert_eq!(by_date.len(), by_id.len());
    assert!(distinct_by_date.len() < by_date.len(), "the date order repeated some products and skipped others");
}

#[tokio::test]
async fn a_human_edit_lands_between_the_reread_and_the_write() {
    let sandbox = WooSandbox::fixture_store();
    let addr = sandbox.start_https(local()).await.unwrap();
    let http = client(&sandbox);
    let product = format!("https://127.0.0.1:{}/wp-json/wc/v3/products/51", addr.port());
    sandbox.edit_before_next_write_after_reads(1, 51, json!({"description": "<p>Written by a person.</p>"}));

    let read: Value =
        http.get(&product).basic_auth(CONSUMER_KEY, Some(CONSUMER_SECRET)).send().await.unwrap().json().await.unwrap();
    assert!(sandbox.edit_pending());
    let written: Value = http
        .put(&product)
        .basic_auth(CONSUMER_KEY, Some(CONSUMER_SECRET))
        .json(&json!({"short_description": "From the model."}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!sandbox.edit_pending());
    let writes = sandbox.writes();
    assert_eq!(writes.iter().map(|w| w.by).collect::<Vec<_>>(), [Writer::Human, Writer::Api]);
    assert!(
        writes[0].at
            > chrono::NaiveDateTime::parse_from_str(read["date_modified_gmt"].as_str().unwrap(), "%Y-%m-%dT%H:%M:%S")
                .unwrap()
    );
    assert!(writes[1].at > writes[0].at, "each write is strictly later, even within one second");
    assert_eq!(written["description"], "<p>Written by a person.</p>");
    assert_eq!(sandbox.stats().put, 1);
}

#[tokio::test]
async fn faults_drop_protected_meta_and_rate_limit() {
    let sandbox = WooSandbox::fixture_store();
    let addr = sandbox.start_https(local()).await.unwrap();
    let http = client(&sandbox);
    let url = format!("https://127.0.0.1:{}/wp-json/wc/v3/products/47", addr.port());
    sandbox.set_faults(Faults {
        dropped_meta_keys: HashSet::from(["_yoast_wpseo_metadesc".to_owned()]),
        ..Faults::default()
    });
    let body =
        json!({"meta_data": [{"key": "_yoast_wpseo_metadesc", "value": "new"}, {"key": "custom_gtin", "value": "1"}]});
    let response = http.put(&url).basic_auth(CONSUMER_KEY, Some(CONSUMER_SECRET)).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200, "the store accepts the write");
    let stored = sandbox.product(47).unwrap();
    let meta =
        |key: &str| stored["meta_data"].as_array().unwrap().iter().find(|m| m["key"] == key).unwrap()["value"].clone();
    assert_eq!(meta("_yoast_wpseo_metadesc"), "A dishwasher-safe 350 ml ceramic mug for everyday coffee.");
    assert_eq!(meta("custom_gtin"), "1");

    sandbox.set_faults(Faults { rate_limit_rate: 1.0, retry_after_secs: 7, ..Faults::default() });
    let limited = http.get(&url).basic_auth(CONSUMER_KEY, Some(CONSUMER_SECRET)).send().await.unwrap();
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "7");
    assert_eq!(sandbox.stats().rejected_by_faults, 1);
}

#[test]
fn the_fixture_store_seed_matches_the_captured_end_state() {
    let sandbox = WooSandbox::fixture_store();
    let ids = sandbox.product_ids();
    assert_eq!(ids, (43..=74).collect::<Vec<_>>());
    assert_eq!(sandbox.product(74).unwrap()["status"], "trash");
    assert_eq!(sandbox.product(59).unwrap()["status"], "draft");
    assert_eq!(sandbox.product(44).unwrap()["variations"], json!([45, 46]));
    assert_eq!(sandbox.product(46).unwrap()["regular_price"], "55.00");
    let mug = sandbox.product(47).unwrap();
    assert_eq!(mug["meta_data"][0]["value"], "Ceramic Coffee Mug (350 ml) | Woo Fixture Shop");
    assert_eq!(sandbox.product(60).unwrap()["name"], "Mug &amp; Coaster Set");
    assert_eq!(
        sandbox.product(43).unwrap()["description"],
        "<p>A soft, breathable <strong>100% cotton</strong> t-shirt.</p>\n<ul>\n<li>Machine washable</li>\n<li>Pre-shrunk</li>\n</ul>\n"
    );
    assert_eq!(
        sandbox.product_raw(43).unwrap()["description"],
        "<p>A soft, breathable <strong>100% cotton</strong> t-shirt.</p>\n<ul><li>Machine washable</li><li>Pre-shrunk</li></ul>"
    );
}
