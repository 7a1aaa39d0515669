//! The sandbox as a Xero client meets it over plain HTTP: the authorisation code flow with PKCE,
//! minute limits, summarised validation errors, and the documents it generates.

mod common;

use base64::Engine as _;
use enrichd_connector::Connector;
use enrichd_xero::sandbox::{CLIENT_ID, CLIENT_SECRET, LAYOUTS, Limits, TENANT_ID, XeroSandbox, invoice_pdf, truth};
use enrichd_xero::{BILLS, RATE_LIMIT};
use serde_json::{Value, json};
use sha2::Digest;

async fn authorise_code(base: &str, challenge: &str) -> String {
    let client = enrichd_connector::http::builder(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .get(format!("{base}/identity/connect/authorize"))
        .query(&[
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", "http://127.0.0.1:8765/callback"),
            ("scope", "offline_access accounting.transactions"),
            ("state", "s1"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("http://127.0.0.1:8765/callback?code="), "{location}");
    assert!(location.contains("state=s1"));
    location.split("code=").nth(1).unwrap().split('&').next().unwrap().to_owned()
}

async fn exchange(base: &str, code: &str, verifier: &str) -> (u16, Value) {
    let response = enrichd_connector::http::client(std::time::Duration::from_secs(10))
        .post(format!("{base}/connect/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", "http://127.0.0.1:8765/callback"),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn authorisation_code_with_pkce_checks_the_verifier() {
    let sandbox = XeroSandbox::new(3, 1);
    let base = format!("http://{}", sandbox.start("127.0.0.1:0".parse().unwrap()).await.unwrap());
    let verifier = "a-verifier-of-enough-length-0123456789-abcdefghijkl";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let code = authorise_code(&base, &challenge).await;
    let (status, body) = exchange(&base, &code, "another-verifier-entirely-0123456789-abcdefghijkl").await;
    assert_eq!((status, body), (400, json!({"error": "invalid_grant"})));
    let code = authorise_code(&base, &challenge).await;
    let (status, body) = exchange(&base, &code, verifier).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 1800);
    assert!(body["refresh_token"].is_string());
    let (status, _) = exchange(&base, &code, verifier).await;
    assert_eq!(status, 400, "a code is used once");
    let tenants: Value = enrichd_connector::http::client(std::time::Duration::from_secs(10))
        .get(format!("{base}/connections"))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tenants[0]["tenantId"], TENANT_ID);
}

#[tokio::test]
async fn a_spent_minute_is_a_retryable_429_with_the_wait() {
    let s = common::setup(3, true).await;
    s.sandbox.set_limits(Limits { per_minute: 2, per_day: 100, ..Limits::default() });
    let (access, _, _) = s.sandbox.authorise();
    let client = enrichd_connector::http::client(std::time::Duration::from_secs(10));
    let mut last = None;
    for _ in 0..3 {
        last = Some(
            client
                .get(format!("{}/api.xro/2.0/Invoices", s.base))
                .bearer_auth(&access)
                .header("xero-tenant-id", TENANT_ID)
                .send()
                .await
                .unwrap(),
        );
    }
    let last = last.unwrap();
    assert_eq!(last.status(), 429);
    assert_eq!(last.headers()["x-rate-limit-problem"], "minute");
    let wait: u64 = last.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait));
    assert_eq!(last.headers()["x-minlimit-remaining"], "0");
    let e = enrichd_xero::classify(last.status(), last.headers(), "", "xero: GET Invoices");
    assert_eq!(e.code.as_deref(), Some(RATE_LIMIT));
    assert!(e.retryable);
}

#[tokio::test]
async fn without_summarize_errors_false_one_bad_bill_fails_the_call() {
    let s = common::setup(3, true).await;
    let (access, _, _) = s.sandbox.authorise();
    let ids = s.sandbox.candidates();
    let body = json!({"Invoices": [
        {"InvoiceID": ids[0], "Reference": "ok"},
        {"InvoiceID": ids[1], "LineItems": [{"Description": "x", "Quantity": 1, "UnitAmount": 5, "TaxType": "NOPE"}]}
    ]});
    let response = enrichd_connector::http::client(std::time::Duration::from_secs(10))
        .post(format!("{}/api.xro/2.0/Invoices", s.base))
        .bearer_auth(&access)
        .header("xero-tenant-id", TENANT_ID)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["Type"], "ValidationException");
    assert_eq!(
        answer["Elements"][1]["ValidationErrors"][0]["Message"],
        "The TaxType code 'NOPE' does not exist or cannot be used for this type of transaction."
    );
    assert_eq!(s.sandbox.bill(&ids[0]).unwrap().reference, "", "nothing applied");
}

#[test]
fn duplicates_repeat_an_approved_bills_document() {
    let sandbox = XeroSandbox::new(40, 7);
    let duplicates: Vec<_> = sandbox.bills().into_iter().filter(|b| b.duplicate_of.is_some()).collect();
    assert_eq!(duplicates.len(), 2);
    for d in duplicates {
        let original = sandbox.bill(d.duplicate_of.as_ref().unwrap()).unwrap();
        assert_eq!(original.status, "AUTHORISED");
        assert_eq!(original.invoice_number, d.truth.as_ref().unwrap().invoice_number);
        assert!(original.contact_id.is_some(), "the approved bill has its supplier");
        assert!(sandbox.candidates().contains(&d.id), "the duplicate is a candidate the engine must flag");
    }
}

#[test]
fn documents_vary_and_add_up() {
    let truths: Vec<_> = (0..60).map(|n| truth(7, n)).collect();
    let currencies: std::collections::BTreeSet<_> = truths.iter().map(|t| t.currency.clone()).collect();
    assert_eq!(currencies.len(), 4, "{currencies:?}");
    assert!(truths.iter().any(|t| t.amounts_are == "inclusive"));
    assert!(truths.iter().any(|t| t.amounts_are == "exclusive"));
    assert!(truths.iter().any(|t| t.document_type == "credit_note"));
    assert!(truths.iter().any(|t| t.supplier_tax_number.is_none()));
    assert_eq!(truths.iter().map(|t| t.layout).collect::<std::collections::BTreeSet<_>>().len(), LAYOUTS.len());
    for t in &truths {
        let tax: f64 = t.line_items.iter().map(|l| l.tax_amount).sum();
        assert!((t.subtotal + t.total_tax - t.total).abs() < 0.005, "{t:?}");
        assert!((tax - t.total_tax).abs() < 0.005);
        assert!(t.due_date >= t.issue_date);
        let pdf = invoice_pdf(t);
        let doc = lopdf::Document::load_mem(&pdf).unwrap();
        let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
        let text = doc.extract_text(&pages).unwrap();
        if t.scanned {
            assert_eq!(pages.len(), 1);
            assert!(text.trim().is_empty(), "a scan has no text layer: {text:?}");
        } else {
            assert_eq!(pages.len(), t.pages);
            assert!(text.contains(&t.supplier_name) && text.contains(&format!("{:.2}", t.total)), "{text}");
            assert_eq!(text.contains("CREDIT NOTE"), t.document_type == "credit_note", "{text}");
        }
    }
    assert!(truths.iter().any(|t| t.scanned) && truths.iter().any(|t| t.pages == 2));
}

/// Requests per 100 bills: pulling them (pages + one attachment list each), re-reading them before
/// the write, and writing them.
#[tokio::test]
async fn requests_per_hundred_bills() {
    let s = common::setup(142, true).await;
    let mut cursor = None;
    let mut records = Vec::new();
    loop {
        let request = enrichd_connector::PageRequest { cursor: cursor.clone(), per_page: 100, modified_after: None };
        let page = s.xero.list(BILLS, &request).await.unwrap();
        records.extend(page.records);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(records.len(), 100);
    let pulled = s.sandbox.counters().api_requests;
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let current = s.xero.fetch(BILLS, &ids).await.unwrap();
    let reread = s.sandbox.counters().api_requests - pulled;
    let changes: Vec<_> = current
        .iter()
        .map(|r| enrichd_connector::Change {
            id: r.id.clone(),
            base_version: r.version.clone(),
            fields: serde_json::Map::from_iter([("reference".to_owned(), json!("extracted"))]),
            native: r.native.clone(),
            mode: Default::default(),
        })
        .collect();
    for chunk in changes.chunks(s.xero.max_write_batch()) {
        s.xero.write(BILLS, chunk).await.unwrap();
    }
    let written = s.sandbox.counters().api_requests - pulled - reread;
    println!("xero requests per 100 bills: pull {pulled}, re-read {reread}, write {written}");
    // Pull: 2 pages, 100 attachment lists, the organisation's settings once (Organisation,
    // Currencies, TaxRates, Accounts) and the contacts once.
    assert_eq!((pulled, reread, written), (107, 3, 2));
    assert_eq!(s.sandbox.counters().bills_written, 100);
}

#[test]
fn the_banner_puts_each_credential_on_a_line_of_its_own() {
    let sandbox = XeroSandbox::new(10, 7);
    let banner = sandbox.banner("127.0.0.1:8080".parse().unwrap());
    assert!(banner.lines().next().unwrap().ends_with("at http://127.0.0.1:8080"), "{banner}");
    for line in [
        format!("client id: {}", enrichd_xero::sandbox::CLIENT_ID),
        format!("client secret: {}", enrichd_xero::sandbox::CLIENT_SECRET),
        format!("tenant id: {}", enrichd_xero::sandbox::TENANT_ID),
    ] {
        assert!(banner.lines().any(|l| l == line), "{line:?} missing from {banner}");
    }
}
