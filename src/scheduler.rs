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

/// The cron parser the scheduler runs schedules with (through tokio-cron-scheduler): six fields,
/// seconds first.
fn cron_of(six: &str) -> Option<croner::Cron> {
    croner::parser::CronParser::builder().seconds(croner::parser::Seconds::Required).build().parse(six).ok()
}

/// When schedule `expr` (5 or 6 fields, UTC) fires next after `after`; `None` when it does not parse
/// or never fires again.
pub fn next_tick(expr: &str, after: chrono::DateTime<chrono::Utc>) -> Option<chrono::DateTime<chrono::Utc>> {
    cron_of(&parse_cron(expr).ok()?)?.find_next_occurrence(&after, false).ok()
}

/// Schedule `expr` in words: the common shapes as people say them ("every 15 minutes", "every day
/// at 02:30 UTC", "Monday to Friday at 09:00 UTC"), anything else as the cron library describes it.
pub fn in_words(expr: &str) -> String {
    let Ok(six) = parse_cron(expr) else { return format!("{expr} (not a valid schedule)") };
    let f: Vec<&str> = six.split_whitespace().collect();
    let number = |s: &str| s.parse::<u32>().ok();
    let every = |s: &str| s.strip_prefix("*/").and_then(number);
    let (sec, min, hour, dom, month, dow) = (f[0], f[1], f[2], f[3], f[4], f[5]);
    let any_day = dom == "*" && month == "*" && dow == "*";
    let plural = |n: u32, unit: &str| if n == 1 { format!("every {unit}") } else { format!("every {n} {unit}s") };
    if sec == "0" && any_day && hour == "*" {
        if min == "*" {
            return "every minute".into();
        }
        if let Some(n) = every(min) {
            return plural(n, "minute");
        }
        if let Some(m) = number(min) {
            return format!("every hour at :{m:02}");
        }
    }
    if sec == "0"
        && any_day
        && let (Some(m), Some(n)) = (number(min), every(hour))
    {
        return format!("{} at :{m:02}", plural(n, "hour"));
    }
    if let (Some(0), Some(m), Some(h)) = (number(sec), number(min), number(hour)) {
        let at = format!("at {h:02}:{m:02} UTC");
        let days = match (dom, month, dow) {
            ("*", "*", "*") => Some("every day".to_owned()),
            ("*", "*", "1-5" | "MON-FRI" | "mon-fri") => Some("Monday to Friday".to_owned()),
            ("*", "*", "0,6" | "6,0" | "SAT,SUN" | "sat,sun") => Some("Saturdays and Sundays".to_owned()),
            ("*", "*", d) => weekday(d).map(|d| format!("every {d}")),
            (d, "*", "*") => number(d).map(|d| format!("on day {d} of every month")),
            _ => None,
        };
        if let Some(days) = days {
            return format!("{days} {at}");
        }
    }
    match cron_of(&six) {
        Some(cron) => {
            let said = cron.describe();
            let said = said.trim_end_matches('.');
            let mut chars = said.chars();
            let said = match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => String::new(),
            };
            format!("{said} (UTC)")
        }
        None => expr.to_owned(),
    }
}

fn weekday(field: &str) -> Option<&'static str> {
    const DAYS: [(&str, &str); 7] = [
        ("SUN", "Sunday"),
        ("MON", "Monday"),
        ("TUE", "Tuesday"),
        ("WED", "Wednesday"),
        ("THU", "Thursday"),
        ("FRI", "Friday"),
        ("SAT", "Saturday"),
    ];
    match field.parse::<usize>() {
        Ok(n) => DAYS.get(n % 7).map(|d| d.1),
        Err(_) => DAYS.iter().find(|d| d.0.eq_ignore_ascii_case(field)).map(|d| d.1),
    }
}

/// USD as the store keeps money: millionths.
pub fn usd_to_micros(usd: f64) -> i64 {
    (usd * 1_000_000.0).round() as i64
}

/// A run of `pipeline` started by hand (`enrichd run`, "Run now" on the pipelines page): what a
/// scheduled run of it is, without a tick.
pub fn manual_run(pipeline: &str, config: &crate::config::PipelineConfig) -> NewRun {
    NewRun {
        pipeline: pipeline.to_owned(),
        scheduled_for: None,
        item_limit: None,
        max_attempts: config.max_attempts as i64,
        budget_micros: config.budget_usd.map(usd_to_micros),
        sample: config.review.sample_gate(),
    }
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

    #[test]
    fn schedules_read_as_people_say_them() {
        assert_eq!(in_words("*/15 * * * *"), "every 15 minutes");
        assert_eq!(in_words("* * * * *"), "every minute");
        assert_eq!(in_words("0 * * * *"), "every hour at :00");
        assert_eq!(in_words("5 */6 * * *"), "every 6 hours at :05");
        assert_eq!(in_words("30 2 * * *"), "every day at 02:30 UTC");
        assert_eq!(in_words("0 9 * * 1-5"), "Monday to Friday at 09:00 UTC");
        assert_eq!(in_words("0 9 * * MON"), "every Monday at 09:00 UTC");
        assert_eq!(in_words("0 3 1 * *"), "on day 1 of every month at 03:00 UTC");
        assert_eq!(in_words("0 12 1,15 * *"), "at 12:00, on day 1 and 15 (UTC)");
    }

    #[test]
    fn the_next_tick_follows_the_schedule_in_utc() {
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&chrono::Utc);
        assert_eq!(next_tick("*/15 * * * *", at("2026-12-06T13:07:10Z")), Some(at("2026-12-06T13:15:00Z")));
        assert_eq!(next_tick("30 2 * * *", at("2026-12-06T13:07:10Z")), Some(at("2026-12-07T02:30:00Z")));
        assert_eq!(next_tick("0 9 * * 1-5", at("2026-12-05T10:00:00Z")), Some(at("2026-12-07T09:00:00Z")));
        assert_eq!(next_tick("nonsense", at("2026-12-05T10:00:00Z")), None);
    }
}
