//! `/pipelines`: every configured pipeline on one page — where it reads and writes, its task and
//! model, its schedule with the next tick, its last run, what of it still waits in our database,
//! what its runs cost this month, its evaluations — and, for operators, "Run now" and "Dry run".
//!
//! Everything on the page comes from the config and a few grouped queries over the store; nothing
//! lists the platform on a page view (a 15,000-product catalogue takes minutes to list). "Dry run"
//! lists it on request and its count is kept (`pipeline_state`) and shown until the next one.

use axum::Router;

use super::*;
use crate::engine::PipelineSetup;
use crate::store::{DryRunCount, RunStart, Spend};

/// Candidate records a dry run shows (all are counted).
const DRY_RUN_SHOWN: usize = 10;
/// Runs whose average cost per proposal prices a dry run's candidates.
const COST_RUNS: i64 = 10;

/// The page's routes, merged into the UI's.
pub(super) fn routes() -> Router<Pages> {
    Router::new()
        .route("/pipelines", get(pipelines_page))
        .route("/pipelines/{name}/run", post(run_now))
        .route("/pipelines/{name}/dry-run", post(dry_run))
}

async fn pipelines_page(State(pages): State<Pages>, visitor: Visitor) -> Result<Html<String>, PageError> {
    render(&pages, &visitor, Value::Null).await
}

/// The page, with a dry run's outcome at the top when there is one.
async fn render(pages: &Pages, visitor: &Visitor, dry_run: Value) -> Result<Html<String>, PageError> {
    let store = &pages.store;
    let now = chrono::Utc::now();
    let month_start = month_start(now);
    let (latest, spend, waiting, dry_runs) = (
        store.latest_runs().await?,
        store.spend_since(month_start.timestamp_millis()).await?,
        store.waiting_items().await?,
        store.dry_runs().await?,
    );
    let mut rows = Vec::new();
    for (name, setup) in &pages.engine.setups {
        let evals = store.eval_reports(name, 1).await?;
        let active = store.active_run(name).await?;
        rows.push(pipeline_view(
            name,
            setup,
            now,
            latest.get(name),
            active.as_ref(),
            spend.get(name).copied().unwrap_or_default(),
            waiting.get(name),
            dry_runs.get(name),
            evals.first().map(|e| e.created_at),
        ));
    }
    pages.render(
        "pipelines.html",
        "pipelines",
        visitor,
        json!({
            "pipelines": rows,
            "month": month_start.format("%B %Y").to_string(),
            "can_act": visitor.may(Role::Operator),
            "ui_only": pages.engine.looking_only,
            "dry_run": dry_run,
        }),
    )
}

/// 00:00 UTC on the first of `now`'s month.
fn month_start(now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::Datelike;
    chrono::NaiveDate::from_ymd_opt(now.year(), now.month(), 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(now, |d| d.and_utc())
}

/// "in 4 minutes", "in 3 hours", "in 2 days": how far off a time is, roughly.
fn from_now(ms: i64) -> String {
    let s = (ms / 1000).max(0);
    match s {
        0..60 => "in less than a minute".to_owned(),
        60..7200 => format!("in {} minutes", (s + 59) / 60),
        7200..172_800 => format!("in {} hours", s / 3600),
        _ => format!("in {} days", s / 86_400),
    }
}

#[allow(clippy::too_many_arguments)]
fn pipeline_view(
    name: &str,
    setup: &PipelineSetup,
    now: chrono::DateTime<chrono::Utc>,
    last: Option<&Run>,
    active: Option<&Run>,
    spend: Spend,
    waiting: Option<&BTreeMap<ItemState, i64>>,
    dry_run: Option<&DryRunCount>,
    last_eval: Option<i64>,
) -> Value {
    use ItemState::*;
    let p = &setup.config;
    let schedule = p.schedule.as_deref().map(|cron| {
        let next = crate::scheduler::next_tick(cron, now);
        json!({
            "cron": cron,
            "words": crate::scheduler::in_words(cron),
            "next": next.map(|t| utc(t.timestamp_millis())),
            "next_in": next.map(|t| from_now((t - now).num_milliseconds())),
        })
    });
    let count = |states: &[ItemState]| -> i64 { waiting.map_or(0, |w| states.iter().filter_map(|s| w.get(s)).sum()) };
    json!({
        "name": name,
        "platform": setup.platform,
        "connection": p.connection,
        "entity": p.entity,
        "task": p.task,
        "provider": p.provider,
        "model": p.model,
        "mode": match p.mode { crate::config::Mode::Realtime => "realtime", crate::config::Mode::Batch => "batch" },
        "review": review_words(&p.review),
        "webhook": p.webhook.is_some(),
        "schedule": schedule,
        "last_run": last.map(|r| json!({
            "id": r.id,
            "state": r.plain_state(),
            "reason": r.reason_beyond_state(),
            "status": r.status.as_str(),
            "started": utc(r.created_at),
            "ended": r.finished_at.map(utc),
        })),
        "active": active.map(|r| json!({ "id": r.id, "state": r.plain_state() })),
        "waiting": {
            "model": count(&[Discovered, Queued, Enriching, Batched]),
            "review": count(&[Proposed, Edited]),
            "write": count(&[Approved, Writing, WriteFailed]),
        },
        "dry_run": dry_run.map(|d| json!({
            "candidates": d.candidates,
            "read": d.read,
            "at": utc(d.at),
            "by": crate::store::plain_actor(&d.by),
        })),
        "spend": if spend.runs == 0 { "$0.0000 (no run)".to_owned() } else { spend.text() },
        "spend_runs": spend.runs,
        "last_eval": last_eval.map(utc),
    })
}

/// The review policy as people say it.
fn review_words(review: &crate::config::ReviewConfig) -> String {
    use crate::config::ReviewPolicy;
    match review.policy {
        ReviewPolicy::All => "every proposal reviewed".to_owned(),
        ReviewPolicy::SampleFirst => format!("a sample of {} reviewed first", review.sample.unwrap_or(1)),
        ReviewPolicy::AutoApprove => "auto-approve when the checks pass".to_owned(),
        ReviewPolicy::None => "no review".to_owned(),
    }
}

/// "Run now": a run of the pipeline, made as the scheduler makes one (the daemons' workers take it
/// from the store); refused while the pipeline has a run going.
async fn run_now(
    State(pages): State<Pages>,
    visitor: Visitor,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    visitor.require(Role::Operator, "start a run")?;
    let actor = visitor.actor()?.to_owned();
    let setup = pages
        .engine
        .setups
        .get(&name)
        .ok_or_else(|| PageError::Store(StoreError::NotFound(format!("pipeline {name:?}"))))?;
    let going = |run: &Run| {
        PageError::Store(StoreError::Refused(format!(
            "pipeline {name} already has run #{} going ({}); a new run can start once it has finished",
            run.id,
            run.plain_state()
        )))
    };
    // A run held for its sample review is going too, though only the unique index's statuses make
    // `create_run` refuse by itself.
    if let Some(run) = pages.store.active_run(&name).await? {
        return Err(going(&run));
    }
    let run = match pages.store.create_run(&crate::scheduler::manual_run(&name, &setup.config)).await? {
        RunStart::Created(run) => run,
        RunStart::AlreadyActive(run) => return Err(going(&run)),
        RunStart::TickTaken => unreachable!("manual runs have no tick"),
    };
    pages.store.record_run_request(run.id, &actor).await?;
    tracing::info!(pipeline = %name, run = run.id, %actor, "run started from the pipelines page");
    Ok(Redirect::to(&format!("/runs/{}", run.id)).into_response())
}

/// "Dry run": lists the platform for the pipeline's candidates as a run would, asks no model and
/// writes nothing; shows how many there are, the first of them with the fields they miss, and what
/// enriching them all would cost at the pipeline's recent cost per proposal. The count is kept.
async fn dry_run(
    State(pages): State<Pages>,
    visitor: Visitor,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    visitor.require(Role::Operator, "start a dry run")?;
    let actor = visitor.actor()?.to_owned();
    if !pages.engine.setups.contains_key(&name) {
        return Err(PageError::Store(StoreError::NotFound(format!("pipeline {name:?}"))));
    }
    let Some(pipeline) = pages.engine.pipelines.get(&name).cloned() else {
        // `daemon --ui-only` holds no connection: nothing to list with.
        let outcome = json!({
            "pipeline": name,
            "error": format!(
                "A dry run is not available here: this daemon serves the review UI only (--ui-only) and holds no \
                 platform credentials. `enrichd run {name} --dry-run --list` lists the candidates from a shell \
                 that has the config's secrets."
            ),
        });
        return Ok((StatusCode::SERVICE_UNAVAILABLE, render(&pages, &visitor, outcome).await?).into_response());
    };
    let mut shown = Vec::new();
    let listed = crate::select::list_candidates(
        &*pipeline.connector,
        &pipeline.config,
        &pipeline.base_task,
        None,
        |record, fields| {
            if shown.len() < DRY_RUN_SHOWN {
                shown.push(json!({
                    "id": record.id,
                    "name": crate::select::record_name(record).unwrap_or_default(),
                    "fields": fields,
                }));
            }
        },
    )
    .await;
    let found = match listed {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(pipeline = %name, error = %e, "dry run: listing the platform failed");
            let outcome = json!({ "pipeline": name, "error": format!("Listing the platform failed: {e}") });
            return Ok((StatusCode::BAD_GATEWAY, render(&pages, &visitor, outcome).await?).into_response());
        }
    };
    pages.store.save_dry_run(&name, &actor, found.read as i64, found.candidates as i64).await?;
    let cost = match pages.store.cost_per_proposal(&name, COST_RUNS).await? {
        Some((per, proposals)) => format!(
            "about ${:.4} for all {} ({} per proposal, the average over the last {} proposals of priced runs)",
            per * found.candidates as f64,
            found.candidates,
            format_args!("${per:.5}"),
            proposals
        ),
        None => format!(
            "unknown until a run of {name} with a priced model has made proposals; `enrichd estimate {name}` \
             sends a sample to the model and projects the cost"
        ),
    };
    let outcome = json!({
        "pipeline": name,
        "read": found.read,
        "candidates": found.candidates,
        "nothing_missing": found.read - found.candidates,
        "fields": found.by_field.iter().map(|(f, n)| json!({ "field": f, "n": n })).collect::<Vec<_>>(),
        "records": shown,
        "more": found.candidates as usize > DRY_RUN_SHOWN,
        "cost": cost,
    });
    Ok(render(&pages, &visitor, outcome).await?.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The UI over a UI-only engine on a fresh SQLite file, served on a free loopback port; each
    /// request acts as the role named in its `x-test-role` header (what the access layer would put
    /// there for a signed-in account). Returns the base URL, the store and the directory.
    async fn ui_with_roles() -> (String, Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("enrichd.db").display());
        let text = format!(
            r#"
[database]
url = "{url}"

[connections.shop]
kind = "teststore"
base_url = "http://127.0.0.1:9"
token = "${{NOT_NEEDED_BY_A_UI_ONLY_DAEMON}}"

[providers.sim]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "${{NOT_NEEDED_BY_A_UI_ONLY_DAEMON}}"

[tasks.copy]
prompt = "Product {{{{ record.id }}}}: write its description."
output_schema = {{ type = "object", required = ["description"], properties = {{ description = {{ type = "string" }} }} }}
fields = {{ description = "description" }}

[pipelines.catalogue]
connection = "shop"
entity = "product"
task = "copy"
provider = "sim"
model = "gpt-4o-mini"
select = {{ missing = ["description"] }}
schedule = "30 2 * * *"
"#
        );
        let path = dir.path().join("enrichd.toml");
        std::fs::write(&path, &text).unwrap();
        // Read as `daemon --ui-only` reads it: without the shop's or the model's secrets.
        let config = crate::config::Config::read(&path).unwrap();
        let store = Store::connect(&url, 4).await.unwrap();
        store.migrate().await.unwrap();
        let engine = Arc::new(Engine::build_for_looking(&config, store.clone()));
        let app = super::super::routes(engine, Access::new(None), BTreeMap::new()).layer(axum::middleware::from_fn(
            |mut request: axum::extract::Request, next: axum::middleware::Next| async move {
                let role: Role = request.headers()["x-test-role"].to_str().unwrap().parse().unwrap();
                let name = format!("{role} account");
                request.extensions_mut().insert(Reviewer { actor: format!("reviewer:{name}"), name, role });
                next.run(request).await
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), store, dir)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_now_needs_the_operator_role_and_dry_run_a_connection() {
        let (base, store, _dir) = ui_with_roles().await;
        let client = enrichd_connector::http::builder(std::time::Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let post = |path: &str, role: &str| client.post(format!("{base}{path}")).header("x-test-role", role).send();

        // A reviewer sees the page without the buttons, and is refused with the role it needs.
        let page = client.get(format!("{base}/pipelines")).header("x-test-role", "reviewer").send().await.unwrap();
        let page = page.text().await.unwrap();
        assert!(page.contains("every day at 02:30 UTC"), "{page}");
        assert!(!page.contains("Run now") && !page.contains("dry-run-button"), "{page}");
        let r = post("/pipelines/catalogue/run", "reviewer").await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let refusal = r.text().await.unwrap();
        assert!(refusal.contains("start a run needs the operator role"), "{refusal}");
        let r = post("/pipelines/catalogue/dry-run", "reviewer").await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(store.runs(&[], 10).await.unwrap().is_empty(), "nothing was started");

        // An operator starts one; the run's history names them.
        let page = client.get(format!("{base}/pipelines")).header("x-test-role", "operator").send().await.unwrap();
        assert!(page.text().await.unwrap().contains("Run now"));
        let r = post("/pipelines/catalogue/run", "operator").await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let runs = store.runs(&[], 10).await.unwrap();
        assert_eq!(r.headers()["location"], format!("/runs/{}", runs[0].id).as_str());
        let events = store.run_events(runs[0].id).await.unwrap();
        assert!(events.iter().any(|e| e.kind == "run_requested" && e.actor == "reviewer:operator account"));

        // A UI-only daemon holds no connection: a dry run says so instead of listing anything.
        let r = post("/pipelines/catalogue/dry-run", "operator").await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let page = r.text().await.unwrap();
        assert!(page.contains("id=\"dry-run-error\"") && page.contains("--ui-only"), "{page}");
    }

    #[test]
    fn the_month_starts_on_the_first_at_midnight_utc() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-06T13:07:10Z").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(month_start(now).to_rfc3339(), "2026-12-01T00:00:00+00:00");
    }

    #[test]
    fn times_ahead_read_roughly() {
        assert_eq!(from_now(20_000), "in less than a minute");
        assert_eq!(from_now(4 * 60_000 + 1_000), "in 5 minutes");
        assert_eq!(from_now(5 * 3_600_000), "in 5 hours");
        assert_eq!(from_now(3 * 86_400_000), "in 3 days");
    }
}
