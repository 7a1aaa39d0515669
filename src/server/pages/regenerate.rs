//! "Regenerate with a note" on the item page: the form (`<section id="regenerate">` in
//! `item.html`), its route `POST /items/{id}/regenerate`, and what the item page and the history
//! page show of a regeneration. The model is asked while the request waits (see
//! [`crate::engine::regenerate`]); the reviewer lands back on the item page, which shows the new
//! proposal, or why there is none, from the item's last event — so reloading the page never asks
//! the model again.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{PageError, Pages, QueueFilter, Visitor, item_url, text_of, utc};
use crate::engine::{MAX_NOTE_CHARS, RegenerateError};
use crate::roles::Role;
use crate::store::{EventRecord, Item, Proposal, StoreError};

#[derive(Deserialize)]
pub(super) struct RegenerateForm {
    #[serde(default)]
    note: String,
}

/// Asks the model again with the reviewer's note, then shows the item page again. A model that
/// failed leaves the proposal as it was and the page says why (from the `regenerate_failed`
/// event); a regeneration that is not allowed now is refused with a page saying why.
pub(super) async fn regenerate(
    State(pages): State<Pages>,
    visitor: Visitor,
    Path(id): Path<i64>,
    Query(filter): Query<QueueFilter>,
    Form(form): Form<RegenerateForm>,
) -> Result<Response, PageError> {
    visitor.require(Role::Reviewer, "regenerate a proposal")?;
    let actor = visitor.actor()?;
    match crate::engine::regenerate(&pages.engine, id, &form.note, actor).await {
        Ok(_) | Err(RegenerateError::Model(_)) => {}
        Err(RegenerateError::Store(e)) => return Err(PageError::Store(e)),
        Err(RegenerateError::Invalid(m)) => return Err(PageError::Store(StoreError::Invalid(m))),
        Err(RegenerateError::Refused(m) | RegenerateError::Unavailable(m)) => {
            return Err(PageError::Store(StoreError::Refused(m)));
        }
    }
    let mut response = Redirect::to(&format!("{}#regenerate", item_url(id, &filter.query()))).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// What the item page's regenerate section shows: whether the visitor may regenerate, why this
/// daemon cannot (UI only), and the item's latest regeneration when it is the item's last event.
pub(super) async fn section(pages: &Pages, visitor: &Visitor, item: &Item) -> Result<Value, PageError> {
    let events = pages.store.item_events(item.id).await?;
    let last = events.last().filter(|e| e.kind == "regenerated" || e.kind == "regenerate_failed");
    let last = last.map(|e| {
        let detail = e.detail.clone().unwrap_or(Value::Null);
        let ok = e.kind == "regenerated";
        json!({
            "ok": ok,
            "actor": e.actor,
            "at": utc(e.at),
            "note": detail["note"].as_str().unwrap_or_default(),
            "error": detail["error"].as_str(),
            "usage": usage_text(&detail),
        })
    });
    // A failed note stays in the box, so trying again is one click.
    let note = last.as_ref().filter(|l| l["ok"] == false).map(|l| l["note"].clone()).unwrap_or(json!(""));
    let can = item.state.awaits_review() && item.proposal.is_some() && visitor.may(Role::Reviewer);
    // Why the form is not offered, said before anyone types a note.
    let unavailable = if pages.engine.looking_only {
        Some(
            "This daemon serves the review UI only (--ui-only) and holds no model credentials: regenerate \
             from a daemon that runs pipelines, or with `enrichd review regenerate`."
                .to_owned(),
        )
    } else if can {
        let run = pages.store.run(item.run_id).await?;
        run.budget_reached().then(|| {
            format!("Run #{} has spent its budget ({}): a regeneration would spend more.", run.id, run.spent_text())
        })
    } else {
        None
    };
    Ok(json!({
        "can": can,
        "unavailable": unavailable,
        "max_chars": MAX_NOTE_CHARS,
        "last": last,
        "note": note,
    }))
}

/// "1,234 tokens in, 210 out, $0.0003" from an event's detail.
fn usage_text(detail: &Value) -> String {
    let n = |k: &str| detail[k].as_i64().unwrap_or(0);
    format!("{} tokens in, {} out, ${:.4}", n("tokens_in"), n("tokens_out"), n("cost_micros") as f64 / 1e6)
}

/// What the history page shows of a regeneration event besides its raw detail: the note, the
/// proposal it replaced (as it would have been written, a reviewer's edit included) and the new
/// values. `None` for other events.
pub(super) fn history_view(event: &EventRecord) -> Option<Value> {
    if event.kind != "regenerated" && event.kind != "regenerate_failed" {
        return None;
    }
    let detail = event.detail.as_ref()?;
    let rows = |values: Option<serde_json::Map<String, Value>>| -> Vec<Value> {
        values
            .into_iter()
            .flatten()
            .map(|(field, value)| json!({ "field": field, "value": text_of(&value).0 }))
            .collect()
    };
    let previous = serde_json::from_value::<Proposal>(detail["previous"].clone()).ok().map(|p| p.values());
    Some(json!({
        "note": detail["note"].as_str().unwrap_or_default(),
        "error": detail["error"].as_str(),
        "previous": rows(previous),
        "proposed": rows(detail["proposed"].as_object().cloned()),
        "usage": usage_text(detail),
    }))
}
