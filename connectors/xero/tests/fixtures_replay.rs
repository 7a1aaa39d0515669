//! The sandbox agrees with Xero's own examples (tests/fixtures/xero, official OpenAPI examples — see
//! its README for provenance), and the connector reads those examples as it reads the sandbox.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use enrichd_connector::ConnectorError;
use enrichd_xero::{Tenant, bill_fields, classify};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/xero/docs_examples").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str::<Value>(&text).unwrap()["body"].clone()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

async fn get(s: &common::Setup, path: &str) -> Value {
    let (access, _, _) = s.sandbox.authorise();
    let response = enrichd_connector::http::client(std::time::Duration::from_secs(10))
        .get(format!("{}{path}", s.base))
        .bearer_auth(access)
        .header("xero-tenant-id", enrichd_xero::sandbox::TENANT_ID)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{path}: {}", response.status());
    response.json().await.unwrap()
}

#[tokio::test]
async fn invoices_have_xeros_envelope_fields_and_date_forms() {
    let s = common::setup(10, true).await;
    let example = fixture("invoices_get_list.json");
    let ours = get(&s, "/api.xro/2.0/Invoices?page=1").await;
    assert_eq!(keys(&example), keys(&ours), "the envelope with pagination");
    assert_eq!(keys(&example["pagination"]), keys(&ours["pagination"]));
    let example_keys: BTreeSet<String> = example["Invoices"].as_array().unwrap().iter().flat_map(keys).collect();
    for invoice in ours["Invoices"].as_array().unwrap() {
        let extra: Vec<_> = keys(invoice).difference(&example_keys).cloned().collect();
        assert!(extra.is_empty(), "fields Xero's examples do not have: {extra:?}");
        assert!(invoice["UpdatedDateUTC"].as_str().unwrap().starts_with("/Date("));
    }
    let filled = ours["Invoices"].as_array().unwrap().iter().find(|i| i["Status"] == "AUTHORISED").unwrap();
    assert!(
        filled["Date"].as_str().unwrap().starts_with("/Date(") && filled["Date"].as_str().unwrap().ends_with("+0000)/")
    );
    assert!(filled["DateString"].as_str().unwrap().ends_with("T00:00:00"));
    let by_id = fixture("invoice_get_by_id.json");
    let line_keys: BTreeSet<String> =
        by_id["Invoices"][0]["LineItems"].as_array().unwrap().iter().flat_map(keys).collect();
    for line in filled["LineItems"].as_array().unwrap() {
        let extra: Vec<_> = keys(line).difference(&line_keys).cloned().collect();
        assert!(extra.is_empty(), "line fields beyond the examples: {extra:?}");
    }
    let attachments = fixture("invoice_attachments_list.json");
    let id = s.sandbox.candidates()[0].clone();
    let ours = get(&s, &format!("/api.xro/2.0/Invoices/{id}/Attachments")).await;
    assert_eq!(keys(&attachments), keys(&ours));
    assert_eq!(keys(&attachments["Attachments"][0]), keys(&ours["Attachments"][0]));
}

#[tokio::test]
async fn connections_match_the_identity_example() {
    let s = common::setup(1, true).await;
    let example = fixture("connections_get.json");
    let ours = get(&s, "/connections").await;
    assert_eq!(keys(&example[0]), keys(&ours[0]));
    let parsed: Vec<Tenant> = serde_json::from_value(example).unwrap();
    assert_eq!(parsed[0].tenant_id, "fe79f7dd-b6d4-4a92-ba7b-538af6289c58");
}

#[test]
fn the_connector_reads_xeros_example_invoices() {
    let example = fixture("invoices_get_list.json");
    let fields = bill_fields(&example["Invoices"][0], &enrichd_xero::Books::default(), None);
    assert_eq!(fields["supplier.name"], "Barney Rubble-83203");
    assert_eq!(fields["invoice_number"], "INV-0001");
    let date = fields["date"].as_str().unwrap();
    assert!(chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok(), "{date}");
}

#[test]
fn validation_exceptions_name_the_message() {
    for name in ["contacts_put_400_validation_exception.json", "accounts_put_400_validation_exception.json"] {
        let body = fixture(name).to_string();
        let e: ConnectorError = classify(StatusCode::BAD_REQUEST, &HeaderMap::new(), &body, "xero: PUT");
        assert_eq!(e.code.as_deref(), Some("ValidationException"), "{name}");
        assert!(!e.retryable);
        let first = fixture(name)["Elements"][0]["ValidationErrors"][0]["Message"].as_str().unwrap().to_owned();
        assert!(e.message.contains(&first), "{name}: {e}");
    }
}
