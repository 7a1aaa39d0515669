//! The request bodies the Xero connector really sends, captured by the sandbox, validate against the
//! Xero Accounting OpenAPI document (`shared/specs/xero/xero_accounting.yaml`): `POST /Invoices`
//! (schema `Invoices`), each invoice an `Invoice`, each line a `LineItem`, the contact a `Contact`,
//! unknown fields refused (`unevaluatedProperties: false`). No amendments were needed. A negative
//! case proves the checker fails and names the offending field.

use std::path::PathBuf;
use std::sync::OnceLock;

use enrichd_connector::{Change, Connector, PageRequest, WriteMode};
use serde_json::{Map, Value, json};

mod common;

fn spec_path() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join("shared/specs/xero/xero_accounting.yaml"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no shared/specs/xero/xero_accounting.yaml above {}", manifest.display()))
}

fn schemas() -> &'static Value {
    static SCHEMAS: OnceLock<Value> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let text = std::fs::read_to_string(spec_path()).unwrap();
        let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
        let mut schemas = doc["components"]["schemas"].clone();
        normalize(&mut schemas);
        schemas
    })
}

/// OpenAPI 3.0 `nullable: true` becomes a JSON Schema null alternative.
fn normalize(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.remove("nullable") == Some(Value::Bool(true))
                && let Some(Value::String(t)) = map.get("type").cloned()
            {
                map.insert("type".into(), json!([t, "null"]));
            }
            for v in map.values_mut() {
                normalize(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}

fn check(what: &str, schema: &str, body: &Value) -> Result<(), String> {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": {"schemas": schemas()},
        "allOf": [{"$ref": format!("#/components/schemas/{schema}")}],
        "unevaluatedProperties": false
    });
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&root)
        .map_err(|e| format!("{what}: the schema does not compile: {e}"))?;
    let errors: Vec<String> = validator.iter_errors(body).map(|e| format!("at {}: {e}", e.instance_path())).collect();
    if errors.is_empty() { Ok(()) } else { Err(format!("{what}:\n  {}\nbody: {body}", errors.join("\n  "))) }
}

fn check_write(body: &Value) -> Result<(), String> {
    check("POST /Invoices", "Invoices", body)?;
    for (n, invoice) in body["Invoices"].as_array().into_iter().flatten().enumerate() {
        check(&format!("POST /Invoices .Invoices[{n}]"), "Invoice", invoice)?;
        if let Some(contact) = invoice.get("Contact") {
            check(&format!("POST /Invoices .Invoices[{n}].Contact"), "Contact", contact)?;
        }
        for (l, line) in invoice["LineItems"].as_array().into_iter().flatten().enumerate() {
            check(&format!("POST /Invoices .Invoices[{n}].LineItems[{l}]"), "LineItem", line)?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_connectors_write_bodies_match_the_xero_openapi() {
    let s = common::setup(12, true).await;
    let page = s.xero.list("bills", &PageRequest { per_page: 100, ..Default::default() }).await.unwrap();
    let changes: Vec<Change> = page.records[..3]
        .iter()
        .map(|r| {
            let t = s.sandbox.printed(&r.id).unwrap();
            let mut fields = Map::new();
            fields.insert("supplier.name".into(), json!(t.supplier_name));
            fields.insert("invoice_number".into(), json!(t.invoice_number));
            fields.insert("reference".into(), json!("from the PDF"));
            fields.insert("date".into(), json!(t.issue_date));
            fields.insert("due_date".into(), json!(t.due_date));
            fields.insert("currency".into(), json!(t.currency));
            fields.insert("amounts_are".into(), json!(t.amounts_are));
            fields.insert("payment_note".into(), json!(t.payment_details));
            fields.insert("sub_total".into(), json!(t.subtotal));
            let lines: Vec<Value> = t
                .line_items
                .iter()
                .map(|l| {
                    json!({"description": l.description, "quantity": l.quantity,
                "unit_price": l.unit_price, "tax_rate": l.tax_rate, "tax_amount": l.tax_amount,
                "line_amount": l.line_amount, "account_code": l.account_code})
                })
                .collect();
            fields.insert("line_items".into(), Value::Array(lines));
            Change {
                id: r.id.clone(),
                base_version: r.version.clone(),
                fields,
                native: r.native.clone(),
                mode: WriteMode::Merge,
            }
        })
        .collect();
    s.xero.write("bills", &changes).await.unwrap();
    let written = s.sandbox.writes();
    assert_eq!(written.len(), 1);
    check_write(&written[0].body).unwrap();
    // Each bill's payment note went as a history note whose body is a `HistoryRecords`.
    let notes = s.sandbox.history_writes();
    assert_eq!(notes.len(), 3);
    for note in &notes {
        check("PUT /Invoices/{id}/History", "HistoryRecords", note).unwrap();
        for (n, record) in note["HistoryRecords"].as_array().unwrap().iter().enumerate() {
            check(&format!("PUT History .HistoryRecords[{n}]"), "HistoryRecord", record).unwrap();
        }
    }
}

#[test]
fn bodies_that_break_the_spec_are_refused_by_field() {
    let err = check_write(&json!({"Invoices": [{"InvoiceID": "x", "LineItems": [{"Quantity": "two"}]}]})).unwrap_err();
    assert!(err.contains("/Quantity"), "{err}");
    let err = check_write(&json!({"Invoices": [{"InvoiceNumbr": "INV-1"}]})).unwrap_err();
    assert!(err.contains("InvoiceNumbr"), "{err}");
    let err = check_write(&json!({"Invoices": [{"Status": "PAIDUP"}]})).unwrap_err();
    assert!(err.contains("/Status"), "{err}");
}
