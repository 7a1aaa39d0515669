//! Undo: puts back exactly the values a write replaced, through the connector, under the same
//! never-clobber rule as the write-back. The record must still be at the version our write left
//! (`written_version`); a record edited since is a `revert_conflict` and nothing is written. The
//! change is a [`WriteMode::Restore`]: lists become exactly what they were (what our write added is
//! removed), and fields that were absent are deleted where the platform allows it. Like a write, the
//! undo is read back and compared ([`Connector::restored`]): an item is `reverted` only when every
//! field is back; when part of our write is still there (a value the platform cannot restore
//! through the configured credentials, like WooCommerce alt text) it is `partially_reverted`, with
//! what is left and why. A record that already holds the old values (an undo that landed before a
//! crash) is marked `reverted` without writing again. A failed undo leaves the item `written` with a
//! `revert_failed` event, so it can be asked for again.

use std::collections::{BTreeMap, HashMap};

use enrichd_connector::{Change, Connector, Record, Version, WriteMode, WriteResult, WriteSubmission};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::Engine;
use crate::store::{Item, ItemState, StoreError};

/// What an undo did to one item.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RevertOutcome {
    /// The old values are back on the record (read back and compared).
    Reverted,
    /// The undo was written and read back, and part of our write is still on the record: `left`
    /// says which fields and why; `reason` says it in one line.
    PartiallyReverted { reason: String, left: Vec<LeftOver> },
    /// The record changed since our write; nothing was written.
    Conflict { reason: String },
    /// The write back failed; the item stays `written` and can be reverted again.
    Failed { reason: String },
    /// The item cannot be reverted (not written, nothing kept, pipeline not configured).
    NotRevertible { reason: String },
}

/// A field an undo could not put back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeftOver {
    pub field: String,
    /// What the field held before our write (what the undo tried to put back).
    pub previous: Value,
    /// What the record holds now, read back after the undo.
    pub stored: Value,
    /// Why it is not back, in the platform's terms.
    pub reason: String,
}

/// How many undo results ended each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RevertTally {
    pub reverted: usize,
    pub partially_reverted: usize,
    pub conflicts: usize,
    /// Failed, or not revertible.
    pub failed: usize,
}

impl RevertTally {
    /// Items not fully reverted.
    pub fn not_reverted(&self) -> usize {
        self.partially_reverted + self.conflicts + self.failed
    }
}

/// One item's undo.
#[derive(Debug, Clone, Serialize)]
pub struct RevertResult {
    pub item: i64,
    pub external_id: String,
    #[serde(flatten)]
    pub outcome: RevertOutcome,
}

/// A written item with what an undo needs: the values our write replaced and the version it left.
struct Revertible {
    item: Item,
    replaced: Map<String, Value>,
    version: String,
}

/// Reverts items by `actor`, a connector batch at a time per pipeline. Every outcome is recorded
/// on its item; only database failures are errors.
pub async fn revert(engine: &Engine, ids: &[i64], actor: &str) -> Result<Vec<RevertResult>, StoreError> {
    let mut results = Vec::with_capacity(ids.len());
    let mut by_pipeline: BTreeMap<String, Vec<Revertible>> = BTreeMap::new();
    for &id in ids {
        let item = engine.store.item(id).await?;
        let refuse = |reason: String| RevertResult {
            item: id,
            external_id: item.external_id.clone(),
            outcome: RevertOutcome::NotRevertible { reason },
        };
        if item.state != ItemState::Written {
            results.push(refuse(format!("item {id} is {}; only written items can be reverted", item.state)));
            continue;
        }
        let (Some(replaced), Some(version)) = (item.replaced.clone(), item.written_version.clone()) else {
            results.push(refuse(format!(
                "item {id}: the values our write replaced, or the version it left, were not kept; it cannot be reverted safely"
            )));
            continue;
        };
        if !engine.pipelines.contains_key(&item.pipeline) {
            results.push(refuse(if engine.looking_only {
                format!(
                    "item {id}: this daemon only serves the review UI (--ui-only) and holds no shop credentials; undo with `enrichd revert` or a full `enrichd daemon`"
                )
            } else {
                format!("item {id}: pipeline {} is not in the config", item.pipeline)
            }));
            continue;
        }
        by_pipeline.entry(item.pipeline.clone()).or_default().push(Revertible { item, replaced, version });
    }
    for (name, items) in by_pipeline {
        let pipeline = &engine.pipelines[&name];
        for chunk in items.chunks(pipeline.connector.max_write_batch().max(1)) {
            revert_chunk(engine, pipeline.connector.as_ref(), &pipeline.config.entity, chunk, actor, &mut results)
                .await?;
        }
    }
    results.sort_by_key(|r| r.item);
    Ok(results)
}

/// Reverts every written item of run `run_id` by `actor`, but only if `confirmed` is how many are
/// written now (the count a person was shown); otherwise [`StoreError::CountChanged`] and nothing
/// is written.
pub async fn revert_run(
    engine: &Engine,
    run_id: i64,
    actor: &str,
    confirmed: i64,
) -> Result<Vec<RevertResult>, StoreError> {
    engine.store.run(run_id).await?;
    let ids = engine.store.written_ids(run_id).await?;
    if ids.len() as i64 != confirmed {
        return Err(StoreError::CountChanged { matching: ids.len() as i64, confirmed });
    }
    revert(engine, &ids, actor).await
}

/// How many of `results` ended each way.
pub fn tally(results: &[RevertResult]) -> RevertTally {
    let mut t = RevertTally::default();
    for r in results {
        match r.outcome {
            RevertOutcome::Reverted => t.reverted += 1,
            RevertOutcome::PartiallyReverted { .. } => t.partially_reverted += 1,
            RevertOutcome::Conflict { .. } => t.conflicts += 1,
            RevertOutcome::Failed { .. } | RevertOutcome::NotRevertible { .. } => t.failed += 1,
        }
    }
    t
}

/// The fields of `replaced` that `record` does not hold again.
fn left_over(connector: &dyn Connector, replaced: &Map<String, Value>, record: &Record) -> Vec<LeftOver> {
    replaced
        .iter()
        .filter_map(|(field, previous)| {
            let stored = record.fields.get(field);
            (!connector.restored(field, previous, stored)).then(|| LeftOver {
                field: field.clone(),
                previous: previous.clone(),
                stored: stored.cloned().unwrap_or(Value::Null),
                reason: connector.not_restored_reason(field, previous, stored),
            })
        })
        .collect()
}

/// What `record` (read from the platform) holds now in each field of `fields`, kept in the revert's
/// event so the item page can say what the platform held after the revert.
fn holds_now(fields: &Map<String, Value>, record: &Record) -> Map<String, Value> {
    fields.keys().map(|f| (f.clone(), record.fields.get(f).cloned().unwrap_or(Value::Null))).collect()
}

async fn revert_chunk(
    engine: &Engine,
    connector: &dyn Connector,
    entity: &str,
    chunk: &[Revertible],
    actor: &str,
    results: &mut Vec<RevertResult>,
) -> Result<(), StoreError> {
    let store = &engine.store;
    let ids: Vec<String> = chunk.iter().map(|r| r.item.external_id.clone()).collect();
    let current = match connector.fetch(entity, &ids).await {
        Ok(records) => records,
        Err(e) => {
            for Revertible { item, .. } in chunk {
                let reason = format!("record {}: re-reading before the revert failed: {e}", item.external_id);
                results.push(failed(engine, item, actor, reason).await?);
            }
            return Ok(());
        }
    };
    let current: HashMap<&str, &Record> = current.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut to_write: Vec<(&Item, Change)> = Vec::new();
    for Revertible { item, replaced, version } in chunk {
        let Some(record) = current.get(item.external_id.as_str()) else {
            let reason = format!("record {} no longer exists upstream", item.external_id);
            results.push(failed(engine, item, actor, reason).await?);
            continue;
        };
        if left_over(connector, replaced, record).is_empty() {
            let detail = json!({
                "restored": replaced,
                "note": "the record already holds the values our write replaced",
                "now": holds_now(replaced, record),
            });
            store.mark_reverted(item, actor, detail).await?;
            results.push(done(item, RevertOutcome::Reverted));
            continue;
        }
        if record.version.0 != *version {
            let reason = format!(
                "record {} changed upstream since our write (version {version} → {}); nothing was reverted",
                item.external_id, record.version
            );
            let now = holds_now(replaced, record);
            store.mark_revert_conflict(item, actor, Some(&record.version.0), &reason, Some(now)).await?;
            results.push(done(item, RevertOutcome::Conflict { reason }));
            continue;
        }
        let change = Change {
            id: item.external_id.clone(),
            base_version: Version(version.clone()),
            fields: replaced.clone(),
            native: record.native.clone(),
            mode: WriteMode::Restore,
        };
        to_write.push((item, change));
    }
    if to_write.is_empty() {
        return Ok(());
    }
    let changes: Vec<Change> = to_write.iter().map(|(_, c)| c.clone()).collect();
    let outcomes = match connector.write(entity, &changes).await {
        Ok(WriteSubmission::Done(outcomes)) => outcomes,
        Ok(WriteSubmission::Pending(job)) => match super::writeback::poll_until_done(connector, &job).await {
            Ok(outcomes) => outcomes,
            Err(e) => {
                for (item, _) in &to_write {
                    results.push(failed(engine, item, actor, format!("record {}: {e}", item.external_id)).await?);
                }
                return Ok(());
            }
        },
        Err(e) => {
            for (item, _) in &to_write {
                results.push(failed(engine, item, actor, format!("record {}: {e}", item.external_id)).await?);
            }
            return Ok(());
        }
    };
    let mut by_id: HashMap<String, WriteResult> = outcomes.into_iter().map(|o| (o.id, o.result)).collect();
    let mut sent: Vec<(&Item, &Change, Option<Version>)> = Vec::new();
    for (item, change) in &to_write {
        match by_id.remove(&item.external_id) {
            Some(WriteResult::Written { version }) => sent.push((*item, change, version)),
            Some(WriteResult::Conflict { current }) => {
                let reason = format!(
                    "record {}: the platform refused the revert because the record changed; nothing was reverted",
                    item.external_id
                );
                let upstream = current.as_ref().map(|v| v.0.as_str());
                store.mark_revert_conflict(item, actor, upstream, &reason, None).await?;
                results.push(done(item, RevertOutcome::Conflict { reason }));
            }
            Some(WriteResult::Failed(e)) => results.push(failed(engine, item, actor, e.message).await?),
            None => {
                let reason = format!("record {}: the platform reported no outcome for the revert", item.external_id);
                results.push(failed(engine, item, actor, reason).await?);
            }
        }
    }
    read_back(engine, connector, entity, &sent, actor, results).await
}

/// Reads the reverted records back and compares every field with what was put back: `reverted`
/// when all are back, `partially_reverted` (with what is left and why) otherwise.
async fn read_back(
    engine: &Engine,
    connector: &dyn Connector,
    entity: &str,
    sent: &[(&Item, &Change, Option<Version>)],
    actor: &str,
    results: &mut Vec<RevertResult>,
) -> Result<(), StoreError> {
    if sent.is_empty() {
        return Ok(());
    }
    let store = &engine.store;
    let ids: Vec<String> = sent.iter().map(|(item, _, _)| item.external_id.clone()).collect();
    let records = match connector.fetch(entity, &ids).await {
        Ok(records) => records,
        Err(e) => {
            for (item, _, _) in sent {
                let reason = format!(
                    "record {}: the revert was written, but reading the record back to check it failed: {e}; the item \
                     stays written until a revert can be checked",
                    item.external_id
                );
                results.push(failed(engine, item, actor, reason).await?);
            }
            return Ok(());
        }
    };
    let by_id: HashMap<&str, &Record> = records.iter().map(|r| (r.id.as_str(), r)).collect();
    for (item, change, version) in sent {
        let Some(record) = by_id.get(item.external_id.as_str()) else {
            let reason = format!("record {} was gone when read back after the revert", item.external_id);
            results.push(failed(engine, item, actor, reason).await?);
            continue;
        };
        let left = left_over(connector, &change.fields, record);
        let version = version.as_ref().map(|v| v.0.clone()).unwrap_or_else(|| record.version.0.clone());
        if left.is_empty() {
            let detail =
                json!({ "restored": change.fields, "version": version, "now": holds_now(&change.fields, record) });
            store.mark_reverted(item, actor, detail).await?;
            results.push(done(item, RevertOutcome::Reverted));
            continue;
        }
        let restored: Vec<&String> = change.fields.keys().filter(|f| !left.iter().any(|l| &l.field == *f)).collect();
        let reason = format!(
            "record {}: {} of {} field(s) put back; left from our write: {}",
            item.external_id,
            restored.len(),
            change.fields.len(),
            left.iter().map(|l| l.reason.as_str()).collect::<Vec<_>>().join("; ")
        );
        let now = holds_now(&change.fields, record);
        let detail = json!({ "restored": restored, "left": left, "version": version, "reason": reason, "now": now });
        store.mark_partially_reverted(item, actor, &reason, detail).await?;
        results.push(done(item, RevertOutcome::PartiallyReverted { reason, left }));
    }
    Ok(())
}

fn done(item: &Item, outcome: RevertOutcome) -> RevertResult {
    RevertResult { item: item.id, external_id: item.external_id.clone(), outcome }
}

/// Records a failed undo on the item (which stays `written`).
async fn failed(engine: &Engine, item: &Item, actor: &str, reason: String) -> Result<RevertResult, StoreError> {
    engine.store.record_item_event(item, "revert_failed", actor, json!({ "reason": reason })).await?;
    Ok(done(item, RevertOutcome::Failed { reason }))
}
