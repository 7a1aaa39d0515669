//! Look-ups applied by the engine: a new proposal is checked against the organisation's own data
//! on the platform before it is stored. The task's rules get the organisation's facts (read when
//! the run started) and the documents' text; the connector is asked about the bill the answer
//! describes ([`enrichd_connector::Connector::look_up`]) and what it says goes onto the proposal:
//!
//! - a matched supplier → the proposal sets the task's `supplier_id` field to it, instead of
//!   writing the supplier's name (the bill points at the existing supplier); no match → a warning,
//!   so creating a supplier is a reviewer's explicit choice;
//! - duplicates → the proposal is held ([`crate::store::Proposal::held`]): never approved, never
//!   written;
//! - the account code the supplier's recent bills use → filled into line items without one,
//!   marked as suggested.
//!
//! Everything found is kept in the proposal's findings for the review page.

use enrichd_connector::lookup::{BillQuery, LookUp};
use serde_json::{Value, json};

use super::Pipeline;
use super::enrich::Prepared;
use crate::checks::{Facts, duplicate_text};
use crate::config::LookUpConfig;
use crate::store::{FieldChange, Proposal};
use crate::task::Task;

/// Whether proposals of `task` need [`check`] at all.
pub(super) fn needed(task: &Task) -> bool {
    !task.rules.is_empty() || task.look_up.is_some()
}

/// Checks a new `proposal` for `prepared` against the organisation: facts for the rules, the
/// look-up, then the rules and warnings again. A look-up that fails leaves a warning (the proposal
/// waits for a person, who can check the platform), never a guess.
pub(super) async fn check(pipeline: &Pipeline, prepared: &Prepared, proposal: &mut Proposal) {
    let task = pipeline.task();
    let organisation = pipeline.organisation();
    proposal.findings.facts = Facts::new(&task.rules, organisation.as_deref(), &prepared.documents);
    if let Some(cfg) = &task.look_up {
        let text = |property: &Option<String>| {
            property
                .as_deref()
                .and_then(|p| task.value_of(proposal, p))
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let query = BillQuery {
            record_id: prepared.record.id.clone(),
            supplier_name: text(&cfg.supplier_name),
            supplier_tax_number: text(&cfg.supplier_tax_number),
            invoice_number: text(&cfg.invoice_number),
            total: cfg.total.as_deref().and_then(|p| task.value_of(proposal, p)).and_then(Value::as_f64),
            date: text(&cfg.date),
        };
        match pipeline.connector.look_up(&pipeline.config.entity, &query).await {
            Ok(Some(found)) => apply(&task, cfg, prepared, proposal, found),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(pipeline = %pipeline.name, record = %prepared.record.id, error = %e, "look-up failed; the proposal waits for a person");
                proposal.findings.look_up_error = Some(e.to_string());
            }
        }
    }
    task.recheck(proposal);
}

/// Puts what the look-up `found` onto `proposal` (see the module doc).
fn apply(task: &Task, cfg: &LookUpConfig, prepared: &Prepared, proposal: &mut Proposal, found: LookUp) {
    if let (Some(supplier), Some(id_field)) = (&found.supplier, &cfg.supplier_id) {
        let before = prepared.record.fields.get(id_field).cloned().unwrap_or(Value::Null);
        // A supplier a person already set on the record stays.
        if crate::select::is_missing(Some(&before)) {
            for property in [&cfg.supplier_name, &cfg.supplier_tax_number].into_iter().flatten() {
                let Some(field) = task.fields.get(property) else { continue };
                if let Some(change) = proposal.fields.remove(field) {
                    proposal.findings.values.insert(property.clone(), change.value().clone());
                }
            }
            proposal
                .fields
                .insert(id_field.clone(), FieldChange { before, proposed: json!(supplier.id), edited: None });
        }
    }
    if !found.duplicates.is_empty() {
        let held: Vec<String> = found.duplicates.iter().map(duplicate_text).collect();
        proposal.held = Some(held.join("; "));
    }
    if let (Some(code), Some(lines)) = (&found.account_code, &cfg.line_items)
        && let Some(change) = task.fields.get(lines).and_then(|f| proposal.fields.get_mut(f))
        && let Some(items) = change.proposed.as_array_mut()
    {
        for (i, item) in items.iter_mut().enumerate() {
            let Some(item) = item.as_object_mut() else { continue };
            if item.get(&cfg.account_code).is_none_or(|v| crate::select::is_missing(Some(v))) {
                item.insert(cfg.account_code.clone(), json!(code));
                proposal.findings.suggested_accounts.push(i);
            }
        }
    }
    proposal.findings.look_up = Some(found);
}
