//! The request bodies the Zendesk connector really sends, captured over HTTP by the sandbox, validate
//! against the Zendesk Support OpenAPI document (`shared/specs/zendesk/zendesk-support-oas.yaml`):
//! the single update (`PUT /api/v2/tickets/{ticket_id}`, schema `TicketUpdateRequest`) and each
//! ticket of an `update_many` batch (the OAS gives that body no schema; its description says "an
//! array of up to 100 ticket objects", so each is checked as a `TicketUpdateInput` plus its `id`).
//! Unknown fields are refused (`unevaluatedProperties: false`) at the body and inside `ticket`.
//! A negative case proves the checker fails and names the offending field.
//!
//! Amendments to the document (the one place that says so):
//! - `additional_tags` and `remove_tags` (arrays of tag strings) are added to `TicketUpdateInput`. The
//!   OAS leaves them out, but Zendesk documents them for ticket updates ("Tag helpers:
//!   `additional_tags` / `remove_tags` in update bodies (add/remove without overwriting)",
//!   shared/research/platform_apis.md section 2.2).
//! - `TicketUpdateInput.custom_fields` items are `{id, value}` as in the same document's
//!   `TicketObject.custom_fields`: the OAS points them at `CustomFieldObject`, the ticket *field
//!   definition* (which requires `key`, `type`, `title`), while every recorded ticket carries
//!   `[{"id", "value"}]` (tests/fixtures/zendesk README finding 10). Values may be a string, a list
//!   (multiselect), a boolean (checkbox) or null, as the recorded values show.

use std::path::PathBuf;
use std::sync::OnceLock;

use enrichd_connector::{Change, Connector, Version, WriteMode};
use enrichd_zendesk::sandbox::{API_TOKEN, EMAIL, ZendeskSandbox};
use enrichd_zendesk::{Zendesk, ZendeskConfig};
use serde_json::{Value, json};

/// The spec, found in a `shared/specs` directory beside one of the crate's ancestors.
fn spec_path() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join("shared/specs/zendesk/zendesk-support-oas.yaml"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no shared/specs/zendesk/zendesk-support-oas.yaml above {}", manifest.display()))
}

/// `components.schemas` of the document, normalised from OpenAPI 3.0 to JSON Schema 2020-12, amended.
fn schemas() -> &'static Value {
    static SCHEMAS: OnceLock<Value> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let text = std::fs::read_to_string(spec_path()).unwrap();
        let doc: Value = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("the Zendesk OAS is not YAML: {e}"));
        let mut schemas = doc["components"]["schemas"].clone();
        normalize(&mut schemas);
        let tags = json!({"type": "array", "items": {"type": "string"}});
        let input = &mut schemas["TicketUpdateInput"]["properties"];
        assert!(input.is_object(), "the OAS has TicketUpdateInput");
        input["additional_tags"] = tags.clone();
        input["remove_tags"] = tags;
        input["custom_fields"]["items"] = json!({
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "value": {"type": ["string", "array", "boolean", "number", "null"], "items": {"type": "string"}}
            },
            "required": ["id"],
            "additionalProperties": false
        });
        schemas
    })
}

/// OpenAPI 3.0 `nullable: true` becomes a JSON Schema null alternative.
fn normalize(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.remove("nullable") == Some(Value::Bool(true)) {
                match map.get("type").cloned() {
                    Some(Value::String(t)) => {
                        map.insert("type".into(), json!([t, "null"]));
                    }
                    _ => {
                        let inner = Value::Object(std::mem::take(map));
                        map.insert("anyOf".into(), json!([inner, {"type": "null"}]));
                    }
                }
            }
            for v in map.values_mut() {
                normalize(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}

/// Validates `body` against `schema` (which may `$ref` `#/components/schemas/...`), refusing unknown
/// fields at the top; every violation is listed with its JSON pointer.
fn check(what: &str, schema: Value, body: &Value) -> Result<(), String> {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": {"schemas": schemas()},
        "allOf": [schema],
        "unevaluatedProperties": false
    });
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&root)
        .map_err(|e| format!("{what}: the schema does not compile: {e}"))?;
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| {
            format!(
                "at {}: {e}",
                if e.instance_path().to_string().is_empty() { "/".into() } else { e.instance_path().to_string() }
            )
        })
        .collect();
    if errors.is_empty() { Ok(()) } else { Err(format!("{what}:\n  {}\nbody: {body}", errors.join("\n  "))) }
}

fn check_single_update(body: &Value) -> Result<(), String> {
    check("PUT /api/v2/tickets/{ticket_id}", json!({"$ref": "#/components/schemas/TicketUpdateRequest"}), body)?;
    check(
        "PUT /api/v2/tickets/{ticket_id} .ticket",
        json!({"$ref": "#/components/schemas/TicketUpdateInput"}),
        &body["ticket"],
    )
}

fn check_batch_ticket(ticket: &Value) -> Result<(), String> {
    let schema = json!({
        "allOf": [{"$ref": "#/components/schemas/TicketUpdateInput"}],
        "properties": {"id": {"type": "integer"}},
        "required": ["id"]
    });
    check("PUT /api/v2/tickets/update_many .tickets[]", schema, ticket)
}

fn change(id: u64, version: &str, fields: Value) -> Change {
    let Value::Object(fields) = fields else { panic!("fields must be an object") };
    Change { id: id.to_string(), base_version: Version(version.into()), fields, native: None, mode: WriteMode::Merge }
}

#[tokio::test]
async fn the_connectors_write_bodies_match_the_zendesk_openapi() {
    let sandbox = ZendeskSandbox::with_triaged_share(5, 3, 0.0);
    let addr = sandbox.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let config: ZendeskConfig =
        serde_json::from_value(json!({"base_url": format!("http://{addr}"), "email": EMAIL, "api_token": API_TOKEN}))
            .unwrap();
    let zendesk = Zendesk::new(config.validate("connections.support").unwrap()).unwrap();
    let records = zendesk.fetch("tickets", &["1".into(), "2".into(), "3".into()]).await.unwrap();
    let fields = json!({
        "custom.Category": "billing", "priority": "high", "type": "question", "tags": ["ai_triaged"],
        "internal_note": "AI triage: billing question"
    });
    zendesk.write("tickets", &[change(1, &records[0].version.0, fields.clone())]).await.unwrap();
    let mut restore = change(3, &records[2].version.0, json!({"tags": ["es"]}));
    restore.mode = WriteMode::Restore;
    let submission = zendesk.write("tickets", &[change(2, &records[1].version.0, fields), restore]).await.unwrap();
    let enrichd_connector::WriteSubmission::Pending(pending) = submission else { panic!("a batch is a job") };

    let received = sandbox.received_writes();
    assert_eq!(received.len(), 2, "one single update and one batch: {received:?}");
    assert_eq!(received[0].path, "/api/v2/tickets/1.json");
    check_single_update(&received[0].body).unwrap();
    assert_eq!(received[0].body["ticket"]["safe_update"], true);
    assert_eq!(received[1].path, "/api/v2/tickets/update_many.json");
    let tickets = received[1].body["tickets"].as_array().unwrap();
    assert_eq!(tickets.len(), 2);
    for ticket in tickets {
        check_batch_ticket(ticket).unwrap();
    }
    assert_eq!(tickets[0]["additional_tags"], json!(["ai_triaged"]), "merged tags are added, never replaced");
    assert_eq!(tickets[1]["tags"], json!(["es"]), "a restore puts back the exact set");
    let outcomes = loop {
        if let Some(done) = zendesk.poll_write(&pending).await.unwrap() {
            break done;
        }
    };
    assert!(
        outcomes.iter().all(|o| matches!(o.result, enrichd_connector::WriteResult::Written { .. })),
        "{outcomes:?}"
    );
    let restored = zendesk.fetch("tickets", &["3".into()]).await.unwrap().remove(0);
    assert!(zendesk.restored("tags", &json!(["es"]), restored.field("tags")), "{:?}", restored.field("tags"));
}

#[test]
fn bodies_that_break_the_spec_are_refused_by_field() {
    let err = check_single_update(&json!({"ticket": {"priority": 3}})).unwrap_err();
    assert!(err.contains("/priority"), "{err}");
    let err = check_single_update(&json!({"ticket": {"subject": "x", "tagz": ["a"]}})).unwrap_err();
    assert!(err.contains("tagz"), "{err}");
    let err = check_batch_ticket(&json!({"priority": "high"})).unwrap_err();
    assert!(err.contains("id"), "{err}");
    let err = check_batch_ticket(&json!({"id": 1, "custom_fields": "billing"})).unwrap_err();
    assert!(err.contains("/custom_fields"), "{err}");
    check_batch_ticket(&json!({"id": 1, "custom_fields": [{"id": 5, "value": "billing"}], "additional_tags": ["a"]}))
        .unwrap();
}
