//! The sandbox itself, driven over HTTP: the OAuth2 flow (authorise, PKCE, rotation,
//! `invalid_grant`), QuickBooks' refusals (batches over 30, full updates, unknown properties, the
//! per-minute limit), and ground truth that adds up.

mod common;

use std::collections::HashSet;

use common::start;
use enrichd_quickbooks::sandbox::{
    ACCESS_TOKEN, AUTHORIZE_PATH, CLIENT_ID, CLIENT_SECRET, Faults, QuickBooksSandbox, REALM_ID, TOKEN_PATH,
};
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    enrichd_connector::http::builder(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn token(http: &reqwest::Client, base: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let r = http
        .post(format!("{base}{TOKEN_PATH}"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn authorise_exchange_with_pkce_then_rotate_until_invalid_grant() {
    let sandbox = QuickBooksSandbox::new(1, 1);
    let base = start(&sandbox).await;
    let http = client();
    // base64url(SHA-256(verifier)), computed independently (Python hashlib).
    let verifier = "dBjftJeZ4CVP-mJ92K9ZIuVpaQYQW5q4JHlHPgk1ABc";
    let challenge = "nss2sf_Nj4-iHFnRfh6qagd1Nnjp_8PpC15wa9j7DuM";
    let redirect = "http://127.0.0.1:9/callback";
    let r = http
        .get(format!("{base}{AUTHORIZE_PATH}"))
        .query(&[
            ("client_id", CLIENT_ID),
            ("redirect_uri", redirect),
            ("response_type", "code"),
            ("scope", "com.intuit.quickbooks.accounting"),
            ("state", "xyz"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    let location = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let params: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(params["state"], "xyz");
    assert_eq!(params["realmId"], REALM_ID);
    let code = params["code"].clone();
    let exchange = [("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", redirect)];
    let (status, body) = token(&http, &base, &[exchange.as_slice(), &[("code_verifier", "wrong")]].concat()).await;
    assert_eq!((status, body), (400, json!({"error": "invalid_grant"})), "a wrong verifier spends the code");

    let r = http
        .get(format!("{base}{AUTHORIZE_PATH}"))
        .query(&[
            ("client_id", CLIENT_ID),
            ("redirect_uri", redirect),
            ("response_type", "code"),
            ("scope", "com.intuit.quickbooks.accounting"),
            ("state", "s"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    let location = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let code = location.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", redirect),
        ("code_verifier", verifier),
    ];
    let (status, first) = token(&http, &base, &exchange).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["token_type"], "bearer");
    assert_eq!(first["expires_in"], 3600);
    assert_eq!(token(&http, &base, &exchange).await.0, 400, "a code is single-use");

    let access = first["access_token"].as_str().unwrap();
    let r = http
        .get(format!("{base}/v3/company/{REALM_ID}/bill/145?minorversion=75"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let refresh = first["refresh_token"].as_str().unwrap();
    let (status, second) = token(&http, &base, &[("grant_type", "refresh_token"), ("refresh_token", refresh)]).await;
    assert_eq!(status, 200);
    assert_ne!(second["refresh_token"], first["refresh_token"], "rotated");
    let (status, body) = token(&http, &base, &[("grant_type", "refresh_token"), ("refresh_token", refresh)]).await;
    assert_eq!((status, body), (400, json!({"error": "invalid_grant"})), "the old refresh token is spent");
    let r = http
        .post(format!("{base}{TOKEN_PATH}"))
        .basic_auth(CLIENT_ID, Some("wrong"))
        .form(&[("grant_type", "refresh_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(sandbox.stats().invalid_grants, 3);
}

async fn post(http: &reqwest::Client, base: &str, path: &str, body: Value) -> (u16, Value) {
    let r = http
        .post(format!("{base}/v3/company/{REALM_ID}/{path}?minorversion=75"))
        .bearer_auth(ACCESS_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn refuses_what_quickbooks_refuses() {
    let sandbox = QuickBooksSandbox::new(2, 1);
    let base = start(&sandbox).await;
    let http = client();
    let items: Vec<Value> = (0..31).map(|i| json!({"bId": format!("b{i}"), "Query": "select * from Bill"})).collect();
    let (status, body) = post(&http, &base, "batch", json!({"BatchItemRequest": items})).await;
    assert_eq!(status, 400);
    assert!(body["Fault"]["Error"][0]["Detail"].as_str().unwrap().contains("at most 30"));
    let (status, body) = post(&http, &base, "bill", json!({"Id": "145", "SyncToken": "0", "DocNumber": "A"})).await;
    assert_eq!(status, 400, "a full update would blank the bill: {body}");
    let (status, body) =
        post(&http, &base, "bill", json!({"Id": "145", "SyncToken": "0", "sparse": true, "BadJson": 1})).await;
    assert_eq!((status, body["Fault"]["Error"][0]["code"].clone()), (400, json!("2010")));
    let (status, body) =
        post(&http, &base, "bill", json!({"Id": "145", "SyncToken": "7", "sparse": true, "DocNumber": "A"})).await;
    assert_eq!((status, body["Fault"]["Error"][0]["code"].clone()), (400, json!("5010")));
    assert_eq!(sandbox.bill("145").unwrap()["SyncToken"], "0");

    sandbox.set_faults(Faults { per_minute: Some(2), retry_after_secs: Some(60), ..Default::default() });
    let get =
        || http.get(format!("{base}/v3/company/{REALM_ID}/bill/145?minorversion=75")).bearer_auth(ACCESS_TOKEN).send();
    assert_eq!(get().await.unwrap().status().as_u16(), 200);
    assert_eq!(get().await.unwrap().status().as_u16(), 200);
    let r = get().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "60");
}

#[test]
fn ground_truth_adds_up_and_covers_the_cases() {
    let sandbox = QuickBooksSandbox::new(60, 3);
    let banner = sandbox.banner("127.0.0.1:8080".parse().unwrap());
    for line in [
        format!("client id: {CLIENT_ID}"),
        format!("client secret: {CLIENT_SECRET}"),
        format!("realm: {REALM_ID}"),
        format!("access token: {ACCESS_TOKEN}"),
    ] {
        assert!(banner.lines().any(|l| l == line), "{banner}");
    }
    assert!(banner.starts_with("QuickBooks Online sandbox with 60 bills at http://127.0.0.1:8080\n"));
    let mut currencies = HashSet::new();
    let (mut credit_notes, mut multi_page, mut complete, mut scans, mut duplicates) = (0, 0, 0, 0, 0);
    for id in sandbox.bill_ids() {
        let t = sandbox.printed(&id).unwrap();
        let sum: f64 = t.lines.iter().map(|l| l.amount).sum();
        let net = if t.amounts_are == "inclusive" { sum - t.tax } else { sum };
        assert!((net - t.subtotal).abs() < 0.005, "bill {id}: lines {sum} vs subtotal {}", t.subtotal);
        assert!((t.subtotal + t.tax - t.total).abs() < 0.005, "bill {id}");
        let tax: f64 = t.lines.iter().map(|l| l.tax).sum();
        assert!((tax - t.tax).abs() < 0.005, "bill {id}: the lines' tax adds up");
        for l in &t.lines {
            assert!((f64::from(l.quantity) * l.unit_price - l.amount).abs() < 0.005, "bill {id}");
        }
        assert!(t.due_date >= t.txn_date);
        let bill = sandbox.bill(&id).unwrap();
        assert_eq!(bill["TotalAmt"].as_f64(), Some(t.total), "bill {id}: the bill's total is the document's");
        complete += usize::from(bill.get("DocNumber").is_some());
        currencies.insert(t.currency);
        credit_notes += usize::from(t.credit_note);
        multi_page += usize::from(t.pages > 1);
        let pdf = sandbox.document(&id).unwrap();
        assert!(pdf.starts_with(b"%PDF-"));
        let doc = lopdf::Document::load_mem(&pdf).unwrap();
        let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
        let text = doc.extract_text(&pages).unwrap_or_default();
        assert_eq!(text.contains(&t.doc_number), t.text_layer, "bill {id}: {text:?}");
        scans += usize::from(!t.text_layer);
        if let Some(earlier) = &t.duplicate_of {
            duplicates += 1;
            let first = sandbox.printed(earlier).unwrap();
            assert_eq!((&first.vendor, &first.doc_number, first.total), (&t.vendor, &t.doc_number, t.total));
            assert_eq!(sandbox.bill(earlier).unwrap()["VendorRef"], bill["VendorRef"], "bill {id}: same supplier");
        }
    }
    assert_eq!((scans, duplicates), (5, 4), "image-only scans and repeated invoices");
    assert!(currencies.len() >= 3, "{currencies:?}");
    assert!(
        credit_notes >= 5 && multi_page >= 3 && (10..=20).contains(&complete),
        "{credit_notes} {multi_page} {complete}"
    );
}
