//! Progress of a run on the terminal, for `enrichd run` and `enrichd status --watch`: bars per phase
//! (enrichment, write-back) with failures, spend and ETA when stdout is a terminal; one plain line
//! every few seconds (and at the end) when it is not, so logs and CI output stay readable.

use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::store::{ItemState, Run, RunCounts, RunStatus};

/// Shows a run's progress as it changes.
pub(super) struct Progress {
    terminal: bool,
    /// The bars while the run moves; gone once it stopped (they stay on screen, finished).
    bars: Option<Bars>,
    last: Option<Instant>,
    last_line: String,
}

struct Bars {
    _multi: MultiProgress,
    enrich: ProgressBar,
    write: ProgressBar,
    summary: ProgressBar,
}

impl Bars {
    fn new() -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let style = ProgressStyle::with_template("{prefix:>9} [{bar:30.cyan/blue}] {pos}/{len} {wide_msg}")
            .expect("valid template")
            .progress_chars("=> ");
        let bar = |prefix: &'static str| {
            let b = multi.add(ProgressBar::new(0));
            b.set_style(style.clone());
            b.set_prefix(prefix);
            b
        };
        let enrich = bar("enriched");
        let write = bar("written");
        let summary = multi.add(ProgressBar::new_spinner());
        summary.set_style(ProgressStyle::with_template("{prefix:>9} {wide_msg}").expect("valid template"));
        summary.set_prefix("run");
        Bars { _multi: multi, enrich, write, summary }
    }
}

impl Progress {
    /// Bars when `terminal`, plain lines otherwise.
    pub(super) fn new(terminal: bool) -> Progress {
        Progress { terminal, bars: terminal.then(Bars::new), last: None, last_line: String::new() }
    }

    /// Shows the run as it is now; `elapsed` is how long it has been watched (for the ETA).
    pub(super) fn show(&mut self, run: &Run, counts: &RunCounts, elapsed: Duration) {
        let moving = matches!(run.status, RunStatus::Discovering | RunStatus::Running);
        if let Some(bars) = &self.bars {
            use ItemState::*;
            let total = counts.total() as u64;
            let not_enriched = counts.sum(&[Discovered, Queued, Enriching, Batched]) as u64;
            bars.enrich.set_length(total);
            bars.enrich.set_position(total - not_enriched.min(total));
            bars.enrich.set_message(format!(
                "· in flight {} · review {} · skipped {} · dead {}",
                counts.sum(&[Enriching, Batched]),
                counts.awaiting_review(),
                counts.get(Skipped),
                counts.get(Dead)
            ));
            let settled = counts.sum(&[Written, Conflict]) as u64;
            let to_write = settled + counts.sum(&[Approved, Writing, WriteFailed]) as u64;
            bars.write.set_length(to_write);
            bars.write.set_position(settled);
            bars.write.set_message(format!(
                "· conflicts {} · failed writes {}",
                counts.get(Conflict),
                counts.get(WriteFailed)
            ));
            bars.summary.set_message(summary_message(run, counts, elapsed));
            if !moving {
                bars.enrich.finish();
                bars.write.finish();
                bars.summary.finish();
                // The bars stay drawn; what is printed next goes below them.
                self.bars = None;
                println!();
            }
            return;
        }
        if self.terminal {
            return;
        }
        let due = self.last.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) || !moving;
        let line = progress_line(run, counts, elapsed);
        if !due || line == self.last_line {
            return;
        }
        println!("{line}");
        self.last = Some(Instant::now());
        self.last_line = line;
    }
}

/// The bars' last line: status, failures, spend and ETA.
fn summary_message(run: &Run, counts: &RunCounts, elapsed: Duration) -> String {
    let reason = run.reason_beyond_state().map(|r| format!(" ({r})")).unwrap_or_default();
    format!(
        "{} {}{reason} · failures {} · {} · {}{}",
        run.id,
        run.plain_state(),
        failures(counts),
        spend(run),
        super::fmt_duration(elapsed),
        eta(run, counts, elapsed)
    )
}

/// The spend in a progress line: `$0.1234`, or `spend unknown` when the model has no price.
fn spend(run: &Run) -> String {
    run.spent_usd().map_or_else(|| "spend unknown".to_owned(), |usd| format!("${usd:.4}"))
}

/// Items that failed for good or are waiting to retry a write.
fn failures(counts: &RunCounts) -> i64 {
    counts.sum(&[ItemState::Dead, ItemState::WriteFailed])
}

fn eta(run: &Run, counts: &RunCounts, elapsed: Duration) -> String {
    let total = counts.total();
    let finished = counts.terminal() + counts.awaiting_review();
    if finished > 0 && finished < total && run.status == RunStatus::Running {
        let per_item = elapsed.as_secs_f64() / finished as f64;
        format!(" · ETA {}", super::fmt_duration(Duration::from_secs_f64(per_item * (total - finished) as f64)))
    } else {
        String::new()
    }
}

/// One plain progress line.
pub(super) fn progress_line(run: &Run, counts: &RunCounts, elapsed: Duration) -> String {
    use ItemState::*;
    let total = counts.total();
    let finished = counts.terminal() + counts.awaiting_review();
    format!(
        "run {} [{}] {finished}/{total} · queued {} · enriching {} · review {} · writing {} · written {} · skipped {} · conflict {} · failed {} · dead {} · {} · {}{}",
        run.id,
        run.plain_state(),
        counts.get(Queued),
        counts.get(Enriching),
        counts.awaiting_review(),
        counts.sum(&[Approved, Writing]),
        counts.get(Written),
        counts.get(Skipped),
        counts.get(Conflict),
        counts.get(WriteFailed),
        counts.get(Dead),
        spend(run),
        super::fmt_duration(elapsed),
        eta(run, counts, elapsed),
    )
}
