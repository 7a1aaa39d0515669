//! The review queue: proposals listed and counted by filter, reviewer actions one at a time or in
//! bulk (each item its own transition and event, with the reviewer's name), the sample gate of
//! `sample_first` runs (stats, release, auto-release), and the outcomes of an undo.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{AssertSqlSafe, Row};

use super::items::{Bind, ITEM_COLUMNS, Move, NewEvent, insert_events};
use super::runs::{RUN_COLUMNS, ReviewPhase};
use super::warning_kind::{KindCount, WarningKind};
use super::{Backend, Item, ItemState, Result, Run, RunStatus, Store, StoreError, now_ms, placeholders};

/// Which items a queue shows. Empty `states` means the items waiting for review (`proposed`,
/// `edited`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReviewFilter {
    pub pipeline: Option<String>,
    pub run_id: Option<i64>,
    pub states: Vec<ItemState>,
    /// `Some(true)`: only proposals a task check warned about; `Some(false)`: only clean ones.
    pub warnings: Option<bool>,
    /// Case-insensitive substring of the record id, the record as pulled, or the proposal.
    pub text: Option<String>,
    /// Only proposals that would write exactly this text to this field.
    pub proposed: Option<ProposedValue>,
    /// Only proposals whose answer's confidence is in this range (proposals without one never match).
    pub confidence: Option<ConfidenceRange>,
    /// Only proposals with at least one warning of this kind.
    pub warning: Option<WarningKind>,
    /// The order items are listed and paged through in.
    pub order: ReviewOrder,
}

/// The order a queue lists its items in. Every order ends with the item id, oldest first, so
/// equal keys keep one order from page to page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReviewOrder {
    /// Oldest first (by item id).
    #[default]
    Oldest,
    /// The model's confidence, highest first; items without one last.
    ConfidenceHigh,
    /// The model's confidence, lowest first; items without one last.
    ConfidenceLow,
    /// Most warnings first.
    MostWarnings,
    /// By the record's name (its `name`, `title` or `subject`, else its id), A to Z.
    Record,
}

impl ReviewOrder {
    /// Every order, the default first.
    pub const ALL: [ReviewOrder; 5] = [
        ReviewOrder::Oldest,
        ReviewOrder::ConfidenceHigh,
        ReviewOrder::ConfidenceLow,
        ReviewOrder::MostWarnings,
        ReviewOrder::Record,
    ];

    /// The `sort` parameter's value: `oldest`, `confidence`, `confidence-asc`, `warnings`, `record`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewOrder::Oldest => "oldest",
            ReviewOrder::ConfidenceHigh => "confidence",
            ReviewOrder::ConfidenceLow => "confidence-asc",
            ReviewOrder::MostWarnings => "warnings",
            ReviewOrder::Record => "record",
        }
    }

    /// The order in words.
    pub fn label(self) -> &'static str {
        match self {
            ReviewOrder::Oldest => "oldest first",
            ReviewOrder::ConfidenceHigh => "confidence, high to low",
            ReviewOrder::ConfidenceLow => "confidence, low to high",
            ReviewOrder::MostWarnings => "most warnings first",
            ReviewOrder::Record => "record name, A to Z",
        }
    }

    /// The `ORDER BY` list over `items`.
    fn order_by(self, backend: Backend) -> String {
        let confidence = confidence_sql(backend);
        match self {
            ReviewOrder::Oldest => "id".to_owned(),
            ReviewOrder::ConfidenceHigh => {
                format!("CASE WHEN {confidence} IS NULL THEN 1 ELSE 0 END, {confidence} DESC, id")
            }
            ReviewOrder::ConfidenceLow => {
                format!("CASE WHEN {confidence} IS NULL THEN 1 ELSE 0 END, {confidence} ASC, id")
            }
            ReviewOrder::MostWarnings => "warnings DESC, id".to_owned(),
            ReviewOrder::Record => {
                // `Item::record_name`: the first of these that is text with something in it. Byte
                // order of the lowercased name on both backends, whatever Postgres's collation.
                let name = |key: &str| match backend {
                    Backend::Sqlite => format!(
                        "CASE WHEN json_type(items.input, '$.{key}') = 'text' \
                         AND TRIM(json_extract(items.input, '$.{key}')) <> '' THEN json_extract(items.input, '$.{key}') END"
                    ),
                    Backend::Postgres => format!(
                        "CASE WHEN jsonb_typeof(items.input::jsonb -> '{key}') = 'string' \
                         AND BTRIM(items.input::jsonb ->> '{key}') <> '' THEN items.input::jsonb ->> '{key}' END"
                    ),
                };
                let collate = match backend {
                    Backend::Sqlite => "",
                    Backend::Postgres => " COLLATE \"C\"",
                };
                format!(
                    "LOWER(COALESCE({}, {}, {}, external_id)){collate}, external_id{collate}, id",
                    name("name"),
                    name("title"),
                    name("subject")
                )
            }
        }
    }
}

impl std::str::FromStr for ReviewOrder {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "" | "oldest" | "id" => Ok(ReviewOrder::Oldest),
            other => ReviewOrder::ALL.into_iter().find(|o| o.as_str() == other).ok_or_else(|| {
                let all: Vec<&str> = ReviewOrder::ALL.iter().map(|o| o.as_str()).collect();
                format!("sort {other:?}: use one of {}", all.join(", "))
            }),
        }
    }
}

/// The proposal's confidence as an SQL number, `NULL` when it has none (or one that is not a number).
fn confidence_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "(CASE WHEN json_type(items.proposal, '$.confidence') IN ('real', 'integer') \
             THEN json_extract(items.proposal, '$.confidence') END)"
        }
        Backend::Postgres => {
            "(CASE WHEN jsonb_typeof(items.proposal::jsonb -> 'confidence') = 'number' \
             THEN CAST(items.proposal::jsonb ->> 'confidence' AS DOUBLE PRECISION) END)"
        }
    }
}

/// A proposed field value to filter on: `FIELD=VALUE` (`custom.Category=billing`). The value is the
/// one the item would write: a reviewer's edit, else the model's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposedValue {
    pub field: String,
    pub value: String,
}

impl std::str::FromStr for ProposedValue {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.split_once('=') {
            Some((field, value)) if !field.trim().is_empty() => {
                Ok(ProposedValue { field: field.trim().to_owned(), value: value.to_owned() })
            }
            _ => Err(format!("{s:?}: expected FIELD=VALUE, e.g. custom.Category=billing")),
        }
    }
}

impl std::fmt::Display for ProposedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.field, self.value)
    }
}

/// A band of confidence, `at_least ≤ c < below`, written `LOW..HIGH` with either end left open:
/// `..0.5`, `0.5..0.8`, `0.8..`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ConfidenceRange {
    pub at_least: Option<f64>,
    pub below: Option<f64>,
}

impl ConfidenceRange {
    /// The bands the review UI offers: below 0.5, 0.5 to 0.8, 0.8 and above.
    pub const BANDS: [ConfidenceRange; 3] = [
        ConfidenceRange { at_least: None, below: Some(0.5) },
        ConfidenceRange { at_least: Some(0.5), below: Some(0.8) },
        ConfidenceRange { at_least: Some(0.8), below: None },
    ];

    /// The band in words: `< 0.5`, `0.5–0.8`, `≥ 0.8`.
    pub fn label(&self) -> String {
        match (self.at_least, self.below) {
            (None, None) => "any".to_owned(),
            (None, Some(b)) => format!("< {b}"),
            (Some(a), None) => format!("≥ {a}"),
            (Some(a), Some(b)) => format!("{a}–{b}"),
        }
    }
}

impl std::str::FromStr for ConfidenceRange {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let usage =
            || format!("{s:?}: expected LOW..HIGH with numbers from 0 to 1, either end open (..0.5, 0.5..0.8, 0.8..)");
        let (low, high) = s.trim().split_once("..").ok_or_else(usage)?;
        let end = |t: &str| -> std::result::Result<Option<f64>, String> {
            let t = t.trim();
            if t.is_empty() {
                return Ok(None);
            }
            match t.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(Some(v)),
                _ => Err(usage()),
            }
        };
        let range = ConfidenceRange { at_least: end(low)?, below: end(high)? };
        match (range.at_least, range.below) {
            (None, None) => Err(usage()),
            (Some(a), Some(b)) if a >= b => Err(format!("{s:?}: the low end must be below the high end")),
            _ => Ok(range),
        }
    }
}

impl std::fmt::Display for ConfidenceRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let end = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        write!(f, "{}..{}", end(self.at_least), end(self.below))
    }
}

/// How many items of a queue would write one value to one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValueCount {
    pub field: String,
    pub value: String,
    pub count: i64,
}

impl ReviewFilter {
    fn states(&self) -> Vec<ItemState> {
        if self.states.is_empty() { vec![ItemState::Proposed, ItemState::Edited] } else { self.states.clone() }
    }

    /// The `WHERE` condition and its values, numbered from `$1`. The proposal is JSON text, read
    /// with each backend's own JSON functions.
    fn condition(&self, backend: Backend) -> (String, Vec<Bind>) {
        let mut binds = Vec::new();
        let mut sql = String::from("1 = 1");
        if let Some(p) = &self.pipeline {
            binds.push(Bind::Text(p.clone()));
            sql.push_str(&format!(" AND pipeline = ${}", binds.len()));
        }
        if let Some(run) = self.run_id {
            binds.push(Bind::I64(run));
            sql.push_str(&format!(" AND run_id = ${}", binds.len()));
        }
        let states = self.states();
        sql.push_str(&format!(" AND state IN ({})", placeholders(binds.len() + 1, states.len())));
        binds.extend(states.iter().map(|s| Bind::Text(s.as_str().into())));
        // The count of task-check warnings is kept beside the proposal when it is made.
        match self.warnings {
            Some(true) => sql.push_str(" AND warnings > 0"),
            Some(false) => sql.push_str(" AND warnings = 0"),
            None => {}
        }
        if let Some(text) = self.text.as_deref().filter(|t| !t.is_empty()) {
            let escaped = text.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            binds.push(Bind::Text(format!("%{escaped}%")));
            let n = binds.len();
            sql.push_str(&format!(
                " AND (LOWER(external_id) LIKE ${n} ESCAPE '\\' OR LOWER(input) LIKE ${n} ESCAPE '\\' \
                 OR LOWER(COALESCE(proposal, '')) LIKE ${n} ESCAPE '\\')"
            ));
        }
        if let Some(p) = &self.proposed {
            binds.push(Bind::Text(p.field.clone()));
            binds.push(Bind::Text(p.value.clone()));
            let (f, v) = (binds.len() - 1, binds.len());
            sql.push_str(&match backend {
                // `->>` gives SQL text for a JSON string only, so numbers and lists never equal the text.
                Backend::Sqlite => format!(
                    " AND EXISTS (SELECT 1 FROM json_each(items.proposal, '$.fields') AS pf WHERE pf.key = ${f} \
                       AND COALESCE(pf.value ->> '$.edited', pf.value ->> '$.proposed') = ${v})"
                ),
                Backend::Postgres => format!(
                    " AND COALESCE(items.proposal::jsonb -> 'fields' -> CAST(${f} AS TEXT) -> 'edited', \
                       items.proposal::jsonb -> 'fields' -> CAST(${f} AS TEXT) -> 'proposed') = to_jsonb(CAST(${v} AS TEXT))"
                ),
            });
        }
        if let Some(range) = &self.confidence {
            let confidence = confidence_sql(backend);
            if let Some(low) = range.at_least {
                binds.push(Bind::F64(low));
                sql.push_str(&format!(" AND {confidence} >= ${}", binds.len()));
            }
            if let Some(high) = range.below {
                binds.push(Bind::F64(high));
                sql.push_str(&format!(" AND {confidence} < ${}", binds.len()));
            }
        }
        if let Some(kind) = &self.warning {
            // The warnings are the proposal's JSON list of texts; their count is kept beside it.
            let (each, column) = match backend {
                Backend::Sqlite => ("json_each(items.proposal, '$.warnings') AS pw", "pw.value"),
                Backend::Postgres => {
                    ("jsonb_array_elements_text(items.proposal::jsonb -> 'warnings') AS pw(w)", "pw.w")
                }
            };
            let matches = kind.sql_matches(backend, column, &mut binds);
            sql.push_str(&format!(" AND warnings > 0 AND EXISTS (SELECT 1 FROM {each} WHERE {matches})"));
        }
        (sql, binds)
    }
}

/// A reviewer's decision on proposals.
#[derive(Debug, Clone, PartialEq)]
pub enum ReviewAction {
    Approve,
    Reject { reason: Option<String> },
}

/// What a bulk action did: the items it moved, and the ones it left with why (another reviewer
/// or the engine moved them first).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BulkOutcome {
    pub done: Vec<i64>,
    pub skipped: Vec<SkippedItem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SkippedItem {
    pub item: i64,
    pub reason: String,
}

/// How a run's sample was judged.
#[derive(Debug, Clone, Serialize)]
pub struct SampleStats {
    pub run_id: i64,
    pub phase: Option<ReviewPhase>,
    pub sample_size: Option<i64>,
    /// Sample items proposed so far.
    pub total: i64,
    /// Sample items no longer waiting for review.
    pub reviewed: i64,
    pub approved: i64,
    pub rejected: i64,
    /// Sample items a reviewer edited (whatever was decided after).
    pub edited: i64,
    /// Shares of the reviewed items (0.0–1.0); `None` before any review.
    pub approve_rate: Option<f64>,
    pub reject_rate: Option<f64>,
    pub edit_rate: Option<f64>,
    /// The auto-release threshold, when the run has one.
    pub auto_release_max_reject_rate: Option<f64>,
    pub released_at: Option<i64>,
    pub released_by: Option<String>,
    /// Whether every sample proposal is reviewed (the sample is made and none waits): what a
    /// release needs, unless it is released anyway with a reason.
    pub sample_reviewed: bool,
    /// Set when the sample was released before it was reviewed: by whom, how far review had got,
    /// and why.
    pub released_unreviewed: Option<UnreviewedRelease>,
}

/// A release of a sample gate before the sample was reviewed, as the audit trail keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnreviewedRelease {
    pub by: String,
    /// Sample proposals reviewed at the release, of `of`.
    pub reviewed: i64,
    pub of: i64,
    pub reason: String,
}

impl std::fmt::Display for UnreviewedRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "released by {} before the sample was reviewed ({} of {}): {}",
            super::plain_actor(&self.by),
            self.reviewed,
            self.of,
            self.reason
        )
    }
}

impl SampleStats {
    /// How many sample proposals there are to review: while the sample is still being made, the
    /// sample's size.
    pub fn to_review(&self) -> i64 {
        match self.phase {
            Some(ReviewPhase::Sampling) => self.total.max(self.sample_size.unwrap_or(0)),
            _ => self.total,
        }
    }
}

/// Checks a reviewer's name for the audit trail: not empty, and not a name the system acts under
/// (`policy:…`), and printable.
pub fn reviewer_name(name: &str) -> std::result::Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("reviewer: required — the name that goes into the audit trail".into());
    }
    if name.starts_with("policy:") {
        return Err(format!("reviewer: {name:?} is reserved for review policies"));
    }
    if name.len() > 200 || name.chars().any(char::is_control) {
        return Err("reviewer: at most 200 printable characters".into());
    }
    Ok(name.to_owned())
}

impl Store {
    /// Items matching `filter`, in its order.
    pub async fn review_queue(&self, filter: &ReviewFilter, limit: i64, offset: i64) -> Result<Vec<Item>> {
        let (cond, mut binds) = filter.condition(self.backend);
        binds.push(Bind::I64(limit));
        binds.push(Bind::I64(offset));
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM items WHERE {cond} ORDER BY {} LIMIT ${} OFFSET ${}",
            filter.order.order_by(self.backend),
            binds.len() - 1,
            binds.len()
        );
        let rows = super::items::bind_all(sqlx::query(AssertSqlSafe(sql)), &binds).fetch_all(&self.pool).await?;
        rows.iter().map(Item::from_row).collect()
    }

    /// How many items match `filter` (what a bulk action over the filter would touch).
    pub async fn review_count(&self, filter: &ReviewFilter) -> Result<i64> {
        let (cond, binds) = filter.condition(self.backend);
        let sql = format!("SELECT COUNT(*) AS n FROM items WHERE {cond}");
        let row = super::items::bind_all(sqlx::query(AssertSqlSafe(sql)), &binds).fetch_one(&self.pool).await?;
        Ok(row.try_get("n")?)
    }

    /// The text values the items matching `filter` would write to each of `fields` (a reviewer's
    /// edit, else the model's), with how many items would write each: by field, most frequent first.
    /// Values that are not text (numbers, lists) are left out.
    pub async fn review_values(&self, filter: &ReviewFilter, fields: &[String]) -> Result<Vec<ValueCount>> {
        if fields.is_empty() {
            return Ok(Vec::new());
        }
        let (cond, mut binds) = filter.condition(self.backend);
        let keys = placeholders(binds.len() + 1, fields.len());
        binds.extend(fields.iter().map(|f| Bind::Text(f.clone())));
        let sql = match self.backend {
            Backend::Sqlite => format!(
                "SELECT field, value, COUNT(*) AS n FROM (SELECT pf.key AS field, \
                   COALESCE(pf.value ->> '$.edited', pf.value ->> '$.proposed') AS value, \
                   json_type(pf.value, CASE WHEN json_type(pf.value, '$.edited') IS NULL THEN '$.proposed' ELSE '$.edited' END) AS kind \
                 FROM (SELECT proposal FROM items WHERE {cond}) AS q, json_each(q.proposal, '$.fields') AS pf \
                 WHERE pf.key IN ({keys})) AS v WHERE kind = 'text' GROUP BY field, value ORDER BY field, n DESC, value"
            ),
            Backend::Postgres => format!(
                "SELECT field, v #>> '{{}}' AS value, COUNT(*) AS n FROM (SELECT pf.key AS field, \
                   COALESCE(pf.value -> 'edited', pf.value -> 'proposed') AS v \
                 FROM (SELECT proposal FROM items WHERE {cond}) AS q, jsonb_each(q.proposal::jsonb -> 'fields') AS pf \
                 WHERE pf.key IN ({keys})) AS w WHERE jsonb_typeof(v) = 'string' \
                 GROUP BY field, v ORDER BY field, n DESC, value"
            ),
        };
        let rows = super::items::bind_all(sqlx::query(AssertSqlSafe(sql)), &binds).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok(ValueCount { field: r.try_get("field")?, value: r.try_get("value")?, count: r.try_get("n")? }))
            .collect()
    }

    /// The ids of every item matching `filter`, oldest first.
    pub async fn review_ids(&self, filter: &ReviewFilter) -> Result<Vec<i64>> {
        let (cond, binds) = filter.condition(self.backend);
        let sql = format!("SELECT id FROM items WHERE {cond} ORDER BY id");
        let rows = super::items::bind_all(sqlx::query(AssertSqlSafe(sql)), &binds).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Applies `action` by `actor` to every item matching `filter`, but only if `confirmed` is how
    /// many match now: whoever confirms a count has seen it, and a filter that meanwhile matches more
    /// (or fewer) items is refused with [`StoreError::CountChanged`] and changes nothing.
    pub async fn bulk_review_matching(
        &self,
        filter: &ReviewFilter,
        action: &ReviewAction,
        actor: &str,
        confirmed: i64,
    ) -> Result<BulkOutcome> {
        let ids = self.review_ids(filter).await?;
        if ids.len() as i64 != confirmed {
            return Err(StoreError::CountChanged { matching: ids.len() as i64, confirmed });
        }
        self.bulk_review(&ids, action, actor).await
    }

    /// The items matching `filter` just before and just after item `id` in the filter's order,
    /// for paging one item at a time; and how many matching items come before it. An item the
    /// filter no longer selects (just approved, say) is placed where its sort key puts it, so
    /// "next" is the item that followed it.
    pub async fn review_neighbours(&self, filter: &ReviewFilter, id: i64) -> Result<(Option<i64>, Option<i64>, i64)> {
        let (cond, mut binds) = filter.condition(self.backend);
        binds.push(Bind::I64(id));
        let n = binds.len();
        let sql = format!(
            "WITH listed AS (SELECT id, ROW_NUMBER() OVER (ORDER BY {order}) AS pos FROM items \
               WHERE ({cond}) OR id = ${n}), \
             here AS (SELECT pos FROM listed WHERE id = ${n}) \
             SELECT (SELECT id FROM listed WHERE pos = (SELECT pos FROM here) - 1) AS prev, \
               (SELECT id FROM listed WHERE pos = (SELECT pos FROM here) + 1) AS next, \
               CAST(COALESCE((SELECT pos FROM here) - 1, 0) AS BIGINT) AS before",
            order = filter.order.order_by(self.backend),
        );
        let row = super::items::bind_all(sqlx::query(AssertSqlSafe(sql)), &binds).fetch_one(&self.pool).await?;
        Ok((row.try_get("prev")?, row.try_get("next")?, row.try_get("before")?))
    }

    /// The kinds of warning the items matching `filter` (its own `warning` aside) carry, each with
    /// how many of those items have at least one of that kind: most frequent first.
    pub async fn review_warning_kinds(&self, filter: &ReviewFilter) -> Result<Vec<KindCount>> {
        let filter = ReviewFilter { warning: None, order: ReviewOrder::Oldest, ..filter.clone() };
        let (cond, binds) = filter.condition(self.backend);
        let sql = match self.backend {
            Backend::Sqlite => format!(
                "SELECT DISTINCT pw.value AS w FROM (SELECT proposal FROM items WHERE {cond} AND warnings > 0) AS q, \
                   json_each(q.proposal, '$.warnings') AS pw"
            ),
            Backend::Postgres => format!(
                "SELECT DISTINCT pw.w AS w FROM (SELECT proposal FROM items WHERE {cond} AND warnings > 0) AS q, \
                   jsonb_array_elements_text(q.proposal::jsonb -> 'warnings') AS pw(w)"
            ),
        };
        let rows = super::items::bind_all(sqlx::query(AssertSqlSafe(sql)), &binds).fetch_all(&self.pool).await?;
        let mut kinds = std::collections::BTreeSet::new();
        for row in &rows {
            let text: String = row.try_get("w")?;
            kinds.insert(WarningKind::of(&text));
        }
        // Counted by the same condition the filter uses, so a count is what choosing it lists.
        let mut out = Vec::with_capacity(kinds.len());
        for kind in kinds {
            let count = self.review_count(&ReviewFilter { warning: Some(kind.clone()), ..filter.clone() }).await?;
            out.push(KindCount { kind: kind.key(), count, warning_kind: kind });
        }
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.kind.cmp(&b.kind)));
        Ok(out)
    }

    /// Applies `action` to each item by `actor`, each its own transition and event. Items no longer
    /// waiting for review are skipped with the reason; only database failures stop the run.
    pub async fn bulk_review(&self, ids: &[i64], action: &ReviewAction, actor: &str) -> Result<BulkOutcome> {
        let mut out = BulkOutcome::default();
        for &id in ids {
            let result = match action {
                ReviewAction::Approve => self.approve(id, actor).await,
                ReviewAction::Reject { reason } => self.reject(id, actor, reason.as_deref()).await,
            };
            match result {
                Ok(_) => out.done.push(id),
                Err(e @ (StoreError::IllegalTransition { .. } | StoreError::NotFound(_) | StoreError::Refused(_))) => {
                    out.skipped.push(SkippedItem { item: id, reason: e.to_string() })
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Items of a run that carry a proposal (at any state after it).
    pub(super) async fn proposed_count(&self, run_id: i64) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM items WHERE run_id = $1 AND proposal IS NOT NULL")
            .bind(run_id)
            .fetch_one(&self.pool)
            .await?)
    }

    /// The run's sample: how many were proposed and how reviewers judged them.
    pub async fn sample_stats(&self, run_id: i64) -> Result<SampleStats> {
        let run = self.run(run_id).await?;
        let row = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS total, \
               CAST(COALESCE(SUM(CASE WHEN state IN ('proposed', 'edited') THEN 0 ELSE 1 END), 0) AS BIGINT) AS reviewed, \
               CAST(COALESCE(SUM(CASE WHEN state = 'rejected' THEN 1 ELSE 0 END), 0) AS BIGINT) AS rejected, \
               CAST(COALESCE(SUM(CASE WHEN EXISTS (SELECT 1 FROM events e WHERE e.item_id = items.id AND e.to_state = 'edited') \
                   THEN 1 ELSE 0 END), 0) AS BIGINT) AS edited \
             FROM items WHERE run_id = $1 AND sample = 1",
        )
        .bind(run_id)
        .fetch_one(&self.pool)
        .await?;
        let (total, reviewed, rejected, edited): (i64, i64, i64, i64) =
            (row.try_get("total")?, row.try_get("reviewed")?, row.try_get("rejected")?, row.try_get("edited")?);
        let approved = reviewed - rejected;
        let rate = |n: i64| (reviewed > 0).then(|| n as f64 / reviewed as f64);
        let released_unreviewed = match run.review_phase {
            Some(ReviewPhase::Released) => self.unreviewed_release(run_id).await?,
            _ => None,
        };
        Ok(SampleStats {
            sample_reviewed: run.review_phase == Some(ReviewPhase::SampleReview) && reviewed >= total,
            released_unreviewed,
            run_id,
            phase: run.review_phase,
            sample_size: run.sample_size,
            total,
            reviewed,
            approved,
            rejected,
            edited,
            approve_rate: rate(approved),
            reject_rate: rate(rejected),
            edit_rate: rate(edited),
            auto_release_max_reject_rate: run.auto_release_max_reject_ppm.map(|p| p as f64 / 1e6),
            released_at: run.released_at,
            released_by: run.released_by,
        })
    }

    /// Moves a run's sample gate from `from` to `to`, with an event. False if it was not at `from`.
    pub(super) async fn set_review_phase(
        &self,
        run_id: i64,
        from: ReviewPhase,
        to: ReviewPhase,
        actor: &str,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let moved = sqlx::query("UPDATE runs SET review_phase = $1 WHERE id = $2 AND review_phase = $3")
            .bind(to.as_str())
            .bind(run_id)
            .bind(from.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if moved == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        let event = NewEvent {
            run_id: Some(run_id),
            item_id: None,
            kind: "review_phase",
            from_state: Some(from.as_str().into()),
            to_state: Some(to.as_str().into()),
            actor: actor.into(),
            detail: None,
        };
        insert_events(&mut tx, &[event], now_ms()).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The reason and progress kept with the release of run `run_id`'s sample, if it was released
    /// before the sample was reviewed.
    async fn unreviewed_release(&self, run_id: i64) -> Result<Option<UnreviewedRelease>> {
        let detail: Option<Option<String>> = sqlx::query_scalar(
            "SELECT detail FROM events WHERE run_id = $1 AND item_id IS NULL AND kind = 'review_phase' \
               AND to_state = 'released' ORDER BY id DESC LIMIT 1",
        )
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(Some(detail)) = detail else { return Ok(None) };
        let detail: Value = serde_json::from_str(&detail)
            .map_err(|e| StoreError::Corrupt(format!("run {run_id}: release event detail: {e}")))?;
        match detail.get("released_unreviewed") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("run {run_id}: release event detail: {e}"))),
        }
    }

    /// Releases a run's sample gate by `actor`: enrichment of the rest of the run resumes, and its
    /// proposals are approved as they arrive. Refused when the run has no closed gate, and — unless
    /// released `anyway` with a reason, which the audit trail keeps with how far review had got —
    /// when the sample is not reviewed yet (being made, or proposals waiting for review).
    pub async fn release_sample(&self, run_id: i64, actor: &str, anyway: Option<&str>) -> Result<Run> {
        let run = self.run(run_id).await?;
        if !matches!(run.review_phase, Some(ReviewPhase::Sampling | ReviewPhase::SampleReview)) {
            return Err(StoreError::Refused(match run.review_phase {
                Some(_) => {
                    format!("run {run_id}: the sample was already released by {}", run.released_by.unwrap_or_default())
                }
                None => {
                    format!("run {run_id}: its pipeline does not review a sample first; there is nothing to release")
                }
            }));
        }
        let stats = self.sample_stats(run_id).await?;
        let unreviewed = match (stats.sample_reviewed, anyway.map(str::trim)) {
            (true, _) => None,
            (false, None) => {
                return Err(StoreError::SampleNotReviewed {
                    run: run_id,
                    reviewed: stats.reviewed,
                    of: stats.to_review(),
                    making: stats.phase == Some(ReviewPhase::Sampling),
                });
            }
            (false, Some("")) => {
                return Err(StoreError::Invalid(format!(
                    "run {run_id}: releasing before the sample is reviewed needs a reason, for the audit trail"
                )));
            }
            (false, Some(reason)) => {
                if reason.chars().count() > 1000 || reason.chars().any(|c| c.is_control() && c != '\n') {
                    return Err(StoreError::Invalid(format!(
                        "run {run_id}: the release reason must be at most 1000 printable characters"
                    )));
                }
                Some(UnreviewedRelease {
                    by: actor.to_owned(),
                    reviewed: stats.reviewed,
                    of: stats.to_review(),
                    reason: reason.to_owned(),
                })
            }
        };
        let mut detail = serde_json::to_value(&stats).expect("serialisable");
        detail["released_unreviewed"] = serde_json::to_value(&unreviewed).expect("serialisable");
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET review_phase = 'released', released_at = $1, released_by = $2, \
               status = CASE WHEN status = 'awaiting_review' THEN 'running' ELSE status END, \
               status_reason = CASE WHEN status = 'awaiting_review' THEN NULL ELSE status_reason END \
             WHERE id = $3 AND review_phase IN ('sampling', 'sample_review') RETURNING {RUN_COLUMNS}"
        )))
        .bind(now)
        .bind(actor)
        .bind(run_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(StoreError::Refused(format!("run {run_id}: the sample was released meanwhile")));
        };
        let released = Run::from_row(&row)?;
        let mut events = vec![NewEvent {
            run_id: Some(run_id),
            item_id: None,
            kind: "review_phase",
            from_state: run.review_phase.map(|p| p.as_str().into()),
            to_state: Some(ReviewPhase::Released.as_str().into()),
            actor: actor.into(),
            detail: Some(detail.to_string()),
        }];
        if run.status == RunStatus::AwaitingReview && released.status == RunStatus::Running {
            events.push(NewEvent {
                run_id: Some(run_id),
                item_id: None,
                kind: "run",
                from_state: Some(RunStatus::AwaitingReview.as_str().into()),
                to_state: Some(RunStatus::Running.as_str().into()),
                actor: actor.into(),
                detail: Some(serde_json::json!({ "reason": "sample released" }).to_string()),
            });
        }
        insert_events(&mut tx, &events, now).await?;
        tx.commit().await?;
        Ok(released)
    }

    /// Releases a held run by itself when its rule allows: every sample item reviewed, and the
    /// share rejected at most the threshold. Returns the run as it now is.
    pub(super) async fn auto_release(&self, run_id: i64, actor: &str) -> Result<Run> {
        let run = self.run(run_id).await?;
        let (Some(ReviewPhase::SampleReview), Some(ppm)) = (run.review_phase, run.auto_release_max_reject_ppm) else {
            return Ok(run);
        };
        let stats = self.sample_stats(run_id).await?;
        if stats.total == 0 || stats.reviewed < stats.total || stats.rejected * 1_000_000 > ppm * stats.reviewed {
            return Ok(run);
        }
        let by = format!("policy:sample_first ({actor})");
        match self.release_sample(run_id, &by, None).await {
            Ok(run) => Ok(run),
            Err(StoreError::Refused(_)) => self.run(run_id).await,
            Err(e) => Err(e),
        }
    }

    /// After a reviewer decided a sample item: the gate may now release itself; if it stays held,
    /// the run's reason says how many sample items are reviewed now.
    pub(super) async fn after_review(&self, item: &Item, actor: &str) -> Result<()> {
        if item.sample {
            self.auto_release(item.run_id, actor).await?;
            self.refresh_sample_reason(item.run_id).await?;
        }
        Ok(())
    }

    /// `written` → `reverted`: the replaced values were written back (or already held) by `actor`.
    pub async fn mark_reverted(&self, item: &Item, actor: &str, detail: Value) -> Result<Item> {
        self.apply(
            item.id,
            Move {
                from: &[ItemState::Written],
                to: ItemState::Reverted,
                owner: None,
                sets: vec![("last_error", Bind::OptText(None))],
                raw_sets: &[],
                guard: None,
                actor,
                detail: Some(detail),
                run_usage: None,
            },
        )
        .await
    }

    /// `written` → `revert_conflict`: the record changed upstream since our write; nothing was written.
    /// `now`: what the record, as re-read, holds in the fields our write set (when it was read).
    pub async fn mark_revert_conflict(
        &self,
        item: &Item,
        actor: &str,
        upstream_version: Option<&str>,
        reason: &str,
        now: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Item> {
        self.apply(
            item.id,
            Move {
                from: &[ItemState::Written],
                to: ItemState::RevertConflict,
                owner: None,
                sets: vec![("last_error", Bind::Text(reason.into()))],
                raw_sets: &[],
                guard: None,
                actor,
                detail: Some(serde_json::json!({
                    "reason": reason, "written_version": item.written_version, "upstream_version": upstream_version,
                    "now": now,
                })),
                run_usage: None,
            },
        )
        .await
    }

    /// Appends an event about an item that changes no state (a failed undo, say).
    pub async fn record_item_event(&self, item: &Item, kind: &'static str, actor: &str, detail: Value) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        let event = NewEvent {
            run_id: Some(item.run_id),
            item_id: Some(item.id),
            kind,
            from_state: None,
            to_state: None,
            actor: actor.into(),
            detail: Some(detail.to_string()),
        };
        insert_events(&mut tx, &[event], now_ms()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Written items of a run, oldest first (what undoing the run covers).
    pub async fn written_ids(&self, run_id: i64) -> Result<Vec<i64>> {
        let rows = sqlx::query("SELECT id FROM items WHERE run_id = $1 AND state = 'written' ORDER BY id")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }
}
