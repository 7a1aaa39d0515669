//! Cron schedules: each scheduled pipeline gets a run per tick. Every daemon sharing a database fires
//! every tick; run creation is idempotent (unique pipeline + tick, and at most one active run per
//! pipeline), so a tick creates exactly one run and a run still going is never started twice.

use std::sync::Arc;

use tokio_cron_scheduler::{Job, JobScheduler};

use crate::store::{NewRun, RunStart, Store};

/// Accepts 5-field cron (minute first) or 6-field (seconds first); returns the 6-field form.
pub fn parse_cron(expr: &str) -> Result<String, String> {
    let fields = expr.split_whitespace().count();
    let six = match fields {
        5 => format!("0 {}", expr.trim()),
        6 => expr.trim().to_owned(),
        n => {
            return Err(format!("{expr:?} has {n} fields; use 5 (minute hour day month weekday) or 6 (seconds first)"));
        }
    };
    check_ranges(expr, &six)?;
    Job::new_async(six.as_str(), |_, _| Box::pin(async {}))
        .map_err(|e| format!("{expr:?} is not a valid cron expression: {e}"))?;
    Ok(six)
}

/// The fields of a six-field cron expression: name and allowed values (weekdays: 0 and 7 are Sunday).
const FIELDS: [(&str, u32, u32); 6] = [
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];

/// Names the field whose number is out of range (the cron library's own error does not say which).
fn check_ranges(expr: &str, six: &str) -> Result<(), String> {
    for (field, (name, low, high)) in six.split_whitespace().zip(FIELDS) {
        for part in field.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((range, step)) => (range, Some(step)),
                None => (part, None),
            };
            if let Some(n) = step.and_then(|s| s.parse::<u32>().ok())
                && !(1..=high).contains(&n)
            {
                return Err(format!("{expr:?}: {name} step {n} is out of range 1-{high}"));
            }
            // `L`, `W`, `#` and names are left to the library.
            for bound in range.split('-').filter_map(|b| b.parse::<u32>().ok()) {
                if !(low..=high).contains(&bound) {
                    return Err(format!("{expr:?}: {name} {bound} is out of range {low}-{high}"));
                }
            }
        }
    }
    Ok(())
}

/// What a pipeline run needs from its config.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub pipeline: String,
    pub cron: String,
    pub max_attempts: i64,
    pub budget_micros: Option<i64>,
    pub sample: Option<crate::store::SampleGate>,
}

/// Creates the run of one tick. `tick_ms` is the tick's time, floored to the second, so daemons
/// firing the same tick agree on it.
pub async fn fire(store: &Store, schedule: &Schedule, tick_ms: i64) {
    let new = NewRun {
        pipeline: schedule.pipeline.clone(),
        scheduled_for: Some(tick_ms - tick_ms.rem_euclid(1000)),
        item_limit: None,
        max_attempts: schedule.max_attempts,
        budget_micros: schedule.budget_micros,
        sample: schedule.sample,
    };
    match store.create_run(&new).await {
        Ok(RunStart::Created(run)) => {
            tracing::info!(pipeline = %schedule.pipeline, run = run.id, "scheduled run created")
        }
        Ok(RunStart::AlreadyActive(run)) => {
            tracing::info!(pipeline = %schedule.pipeline, run = run.id, "tick skipped: the previous run is still going")
        }
        Ok(RunStart::TickTaken) => {
            tracing::debug!(pipeline = %schedule.pipeline, "tick already taken by another daemon")
        }
        Err(e) => {
            tracing::error!(pipeline = %schedule.pipeline, error = %e, "could not create the scheduled run")
        }
    }
}

/// Starts a cron job per schedule. The scheduler stops when dropped or shut down.
pub async fn start(store: Store, schedules: Vec<Schedule>) -> Result<JobScheduler, String> {
    let scheduler = JobScheduler::new().await.map_err(|e| format!("scheduler: {e}"))?;
    for schedule in schedules {
        let schedule = Arc::new(schedule);
        let store = store.clone();
        let cron = schedule.cron.clone();
        let job = Job::new_async(cron.as_str(), move |_, _| {
            let store = store.clone();
            let schedule = schedule.clone();
            Box::pin(async move { fire(&store, &schedule, crate::store::now_ms()).await })
        })
        .map_err(|e| format!("schedule {cron:?}: {e}"))?;
        scheduler.add(job).await.map_err(|e| format!("scheduler: {e}"))?;
    }
    scheduler.start().await.map_err(|e| format!("scheduler: {e}"))?;
    Ok(scheduler)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_five_and_six_fields() {
        assert_eq!(parse_cron("*/15 * * * *").unwrap(), "0 */15 * * * *");
        assert_eq!(parse_cron("30 0 2 * * *").unwrap(), "30 0 2 * * *");
        assert!(parse_cron("* * *").unwrap_err().contains("has 3 fields"));
        assert!(parse_cron("99 * * * *").unwrap_err().contains("minute 99 is out of range 0-59"));
        assert!(parse_cron("0 3 * * 1-9").unwrap_err().contains("day of week 9 is out of range 0-7"));
        assert!(parse_cron("0 3 * * MON-FRI").is_ok());
        assert!(parse_cron("0 3 L * *").is_ok());
        assert!(parse_cron("x * * * *").unwrap_err().contains("not a valid cron"));
    }
}
