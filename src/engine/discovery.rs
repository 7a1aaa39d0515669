//! Discovery: pulls a run's candidate records page by page under the run's discovery lease,
//! recording each page and the cursor after it in one transaction, so a restarted daemon resumes
//! where the last page ended.

use std::collections::HashMap;
use std::sync::Arc;

use enrichd_connector::{PageRequest, Record};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{Engine, Pipeline, pause};
use crate::select::wanted_fields;
use crate::store::{ItemState, NewItem, PriorItem, Run, RunStatus};

pub(super) async fn discovery_loop(
    engine: Arc<Engine>,
    pipeline: Arc<Pipeline>,
    only_run: Option<i64>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let runs = match only_run {
            Some(id) => engine.store.run(id).await.map(|r| vec![r]),
            None => engine.store.runs(&[RunStatus::Discovering], 100).await,
        };
        match runs {
            Ok(runs) => {
                for run in
                    runs.into_iter().filter(|r| r.pipeline == pipeline.name && r.status == RunStatus::Discovering)
                {
                    match engine.store.claim_discovery(run.id, &engine.owner, engine.lease()).await {
                        Ok(Some(run)) => discover(&engine, &pipeline, run, &stop).await,
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(run = run.id, error = %e, "claiming discovery failed")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing runs to discover failed"),
        }
        if !pause(&stop, engine.poll()).await {
            break;
        }
    }
}

/// `ms` (Unix milliseconds) as RFC 3339 UTC with a `Z`, whole seconds.
fn rfc3339_utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The hash of a record's input: equal hashes mean the model would see the same thing.
pub fn input_hash(record: &Record) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_string(&record.fields).unwrap_or_default());
    hex::encode(h.finalize())
}

async fn discover(engine: &Engine, pipeline: &Pipeline, run: Run, stop: &CancellationToken) {
    let store = &engine.store;
    let entity = &pipeline.config.entity;
    let mut cursor = run.discovery_cursor.clone();
    let mut candidates = match store.counts(run.id).await {
        Ok(c) => c.total() - c.get(ItemState::Skipped),
        Err(e) => return tracing::warn!(run = run.id, error = %e, "reading run counts failed"),
    };
    let mut failures = 0u32;
    // A model without a price: the run's spend is unknown from the start, not $0 until its first call.
    let unpriced =
        pipeline.provider.cost_micros(&pipeline.config.model, crate::provider::TokenUsage::default()).is_none();
    if unpriced
        && !run.cost_unknown
        && let Err(e) = store.mark_cost_unknown(run.id).await
    {
        return tracing::warn!(run = run.id, error = %e, "marking the run's spend unknown failed");
    }
    // The values the platform allows for the task's fields (a dropdown's options), read as the run
    // starts: the model is asked to choose among them. A platform that cannot say fails the run's
    // discovery like a failed listing would, rather than letting the model invent values.
    if run.discovery_cursor.is_none() {
        let mut tries = 0u32;
        loop {
            match pipeline.refresh_allowed(store).await {
                Ok(allowed) => {
                    if !allowed.is_empty() {
                        tracing::info!(run = run.id, fields = ?allowed.keys().collect::<Vec<_>>(), "read the values the platform allows");
                    }
                    break;
                }
                Err(reason) => {
                    tries += 1;
                    if tries >= pipeline.config.max_attempts {
                        tracing::error!(run = run.id, "{reason}");
                        let _ = store
                            .set_run_status(
                                run.id,
                                &[RunStatus::Discovering],
                                RunStatus::Failed,
                                Some(&reason),
                                &engine.owner,
                            )
                            .await;
                        return;
                    }
                    tracing::warn!(run = run.id, "{reason}; retrying");
                    let wait = enrichd_connector::retry::backoff(
                        tries,
                        engine.retry_policy().base,
                        engine.retry_policy().max,
                        None,
                    );
                    if !pause(stop, wait).await {
                        return;
                    }
                }
            }
        }
    }
    // A webhook run fetches the records its webhooks named instead of listing (engine::hooks).
    if run.trigger_kind == "webhook" {
        return super::hooks::discover(engine, pipeline, run, stop).await;
    }
    // Incremental pipelines read only what changed since the pipeline's previous listing: from the
    // platform's change feed where it has one (Zendesk's export cursor, kept per pipeline, not per
    // run), else records modified since that listing began (a minute earlier, for clocks that
    // disagree). Fixed per run, so a resumed discovery asks the same.
    let state = match store.pipeline_state(&pipeline.name).await {
        Ok(state) => state,
        Err(e) => return tracing::warn!(run = run.id, error = %e, "reading the pipeline's state failed"),
    };
    let mut modified_after = None;
    if pipeline.config.incremental {
        match (&cursor, &state.feed_cursor) {
            (None, Some(feed)) => cursor = Some(feed.clone()),
            (Some(_), _) => {}
            (None, None) => {
                let since = match state.listed_since {
                    Some(since) => Some(since),
                    None => match store.previous_done_run_start(&pipeline.name, run.id).await {
                        Ok(since) => since,
                        Err(e) => return tracing::warn!(run = run.id, error = %e, "reading the previous run failed"),
                    },
                };
                modified_after = since.map(|ms| rfc3339_utc(ms - 60_000));
            }
        }
    }
    // A pipeline's first run has no earlier items to compare records with: skip the look-up per
    // page. (It is also the run during which the table grows from empty, when Postgres's statistics
    // lag and that look-up was measured scanning the whole pipeline's items, 33 ms a page at 50,000.)
    let mut others = match store.other_runs_exist(&pipeline.name, run.id).await {
        Ok(others) => others,
        Err(e) => return tracing::warn!(run = run.id, error = %e, "reading the pipeline's runs failed"),
    };
    tracing::info!(run = run.id, pipeline = %pipeline.name, resume_at = ?cursor, ?modified_after, "discovering");
    loop {
        if stop.is_cancelled() {
            return;
        }
        let request = PageRequest {
            cursor: cursor.clone(),
            per_page: pipeline.config.page_size,
            modified_after: modified_after.clone(),
        };
        let page = match pipeline.connector.list(entity, &request).await {
            Ok(page) => page,
            Err(e) => {
                // A used-up daily allowance or a connection to authorise again: pause, do not fail.
                if let Some(pause) = super::pauses::platform_pause(&e, &pipeline.config.connection) {
                    super::pauses::pause_run(engine, pipeline, run.id, &pause).await;
                    return;
                }
                failures += 1;
                if !e.retryable || failures >= pipeline.config.max_attempts {
                    let reason = format!("discovery failed on connection {}: {e}", pipeline.config.connection);
                    tracing::error!(run = run.id, "{reason}");
                    let _ = store
                        .set_run_status(
                            run.id,
                            &[RunStatus::Discovering],
                            RunStatus::Failed,
                            Some(&reason),
                            &engine.owner,
                        )
                        .await;
                    return;
                }
                let wait = enrichd_connector::retry::backoff(
                    failures,
                    engine.retry_policy().base,
                    engine.retry_policy().max,
                    e.retry_after,
                );
                tracing::warn!(run = run.id, error = %e, wait_s = wait.as_secs_f64(), "listing failed; retrying");
                if !pause(stop, wait).await {
                    return;
                }
                continue;
            }
        };
        failures = 0;
        let ids: Vec<String> = page.records.iter().map(|r| r.id.clone()).collect();
        // A webhook run may have started since (it stands beside this one): from then on compare.
        if !others {
            others = store.other_runs_exist(&pipeline.name, run.id).await.unwrap_or(true);
        }
        let prior =
            match if others { store.prior_items(&pipeline.name, entity, &ids, run.id).await } else { Ok(Vec::new()) } {
                Ok(p) => p,
                Err(e) => {
                    return tracing::warn!(run = run.id, error = %e, "reading earlier items failed");
                }
            };
        let mut by_record: HashMap<&str, Vec<&PriorItem>> = HashMap::new();
        for p in &prior {
            by_record.entry(p.external_id.as_str()).or_default().push(p);
        }
        let mut items = Vec::with_capacity(page.records.len());
        let mut limit_reached = false;
        for record in &page.records {
            if run.item_limit.is_some_and(|limit| candidates >= limit) {
                limit_reached = true;
                break;
            }
            let hash = input_hash(record);
            let wanted = wanted_fields(&pipeline.config.select, pipeline.task().fields.values(), record);
            let skip = if wanted.is_empty() {
                Some("nothing is missing".to_owned())
            } else {
                reuse_reason(
                    by_record.get(record.id.as_str()).map(Vec::as_slice).unwrap_or(&[]),
                    &hash,
                    &pipeline.task().version,
                )
            };
            if skip.is_none() {
                candidates += 1;
            }
            items.push(NewItem {
                entity: entity.clone(),
                external_id: record.id.clone(),
                record_version: record.version.0.clone(),
                input: serde_json::to_string(&record.fields).unwrap_or_default(),
                input_hash: hash,
                skip,
                attachments: record.attachments.clone(),
            });
        }
        let next = if limit_reached { cursor.clone() } else { page.next.clone() };
        if let Err(e) = store
            .add_discovered(run.id, &pipeline.name, &pipeline.task().version, &engine.owner, &items, next.as_deref())
            .await
        {
            return tracing::warn!(run = run.id, error = %e, "recording a discovered page failed; another worker may hold discovery");
        }
        if page.next.is_none()
            && !limit_reached
            && let Err(e) = store.save_listing_position(&pipeline.name, page.resume.as_deref(), run.created_at).await
        {
            return tracing::warn!(run = run.id, error = %e, "keeping where the next listing starts failed");
        }
        if page.next.is_none() && !limit_reached && candidates == 0 && pipeline.config.incremental {
            // Nothing new on a scheduled or webhook tick: no run is left behind to clutter the runs page.
            match store.discard_empty_run(run.id, &engine.owner).await {
                Ok(true) => {
                    tracing::debug!(run = run.id, pipeline = %pipeline.name, "nothing new to fill; the run was discarded");
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(run = run.id, error = %e, "discarding an empty run failed"),
            }
        }
        if limit_reached || page.next.is_none() {
            let reason = if limit_reached {
                format!("item limit of {} reached", run.item_limit.unwrap_or(0))
            } else {
                "all pages read".into()
            };
            let _ = store
                .set_run_status(run.id, &[RunStatus::Discovering], RunStatus::Running, Some(&reason), &engine.owner)
                .await;
            tracing::info!(run = run.id, candidates, "discovery finished: {reason}");
            return;
        }
        cursor = page.next;
    }
}

/// Why a candidate record is not enriched again: an earlier run still has it in progress, or the
/// same input was already answered under the same task version.
pub(super) fn reuse_reason(prior: &[&PriorItem], hash: &str, task_version: &str) -> Option<String> {
    if let Some(p) = prior.iter().find(|p| !p.state.is_finished()) {
        return Some(format!("already in progress in run {} (item {}, {})", p.run_id, p.id, p.state));
    }
    let answered = [ItemState::Written, ItemState::Rejected];
    prior
        .iter()
        .rev()
        .find(|p| p.input_hash == hash && p.task_version == task_version && answered.contains(&p.state))
        .map(|p| {
            format!(
                "identical input already enriched with this task version in run {} (item {}, {})",
                p.run_id, p.id, p.state
            )
        })
}
