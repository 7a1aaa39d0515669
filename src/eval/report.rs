//! The evaluation report as text for a terminal.

use std::fmt::Write;

use super::{EvalReport, FieldReport};

/// `0.8421` → `84.2%`; `None` → `-`.
pub fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{:.1}%", v * 100.0))
}

impl EvalReport {
    /// The report as plain text: the counts, then per field its accuracy, classes, confusion
    /// matrix and threshold table.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let id = self.id.map(|id| format!(" (report {id})")).unwrap_or_default();
        let _ = writeln!(out, "eval of pipeline {}{id}: task {}, model {}", self.pipeline, self.task, self.model);
        let _ = writeln!(
            out,
            "  records read {}; {} have the evaluated fields filled by a person; {} sampled, in {} request(s)",
            self.records_read, self.records_found, self.sampled, self.requests
        );
        let _ = write!(out, "  answered {}, failed {}", self.answered, self.failed);
        if self.not_sent > 0 {
            let _ = write!(out, ", not sent {} (budget ${:.4} reached)", self.not_sent, self.budget_usd.unwrap_or(0.0));
        }
        let cost = self.cost_usd.map_or_else(|| "unknown (no price for this model)".to_owned(), |c| format!("${c:.4}"));
        let _ = writeln!(out, "; tokens {} in + {} out; cost {cost}", self.tokens_in, self.tokens_out);
        for p in &self.problems {
            let _ = writeln!(out, "  problem: {p}");
        }
        let _ = writeln!(out, "  nothing was written to the platform");
        for field in &self.fields {
            out.push('\n');
            field.write_text(&mut out, self.confidence_field.as_deref());
        }
        out
    }
}

impl FieldReport {
    fn write_text(&self, out: &mut String, confidence: Option<&str>) {
        let Some(s) = self.scores.as_ref().filter(|_| self.evaluated) else {
            let _ = writeln!(
                out,
                "field {} (answer property {}): not evaluated: {}",
                self.field,
                self.property,
                self.reason.as_deref().unwrap_or("")
            );
            return;
        };
        let _ = writeln!(
            out,
            "field {} (answer property {}, compared as {}): {} filled in the sample, {} scored, {} without an answer",
            self.field,
            self.property,
            self.compared_as.as_deref().unwrap_or("value"),
            self.items,
            s.scored,
            self.failed
        );
        let _ = writeln!(out, "  accuracy {} ({} of {} right)", percent(s.accuracy), s.correct, s.scored);
        if let Some(l) = &self.lines {
            let _ = writeln!(
                out,
                "  line count right in {} of {} records; {} of {} lines entirely right",
                l.count_right, l.records, l.lines_right, l.lines
            );
            let _ = writeln!(out, "  {:<20}  {:>6}  {:>7}  {:>8}", "line key", "scored", "correct", "accuracy");
            for k in &l.keys {
                let _ = writeln!(
                    out,
                    "  {:<20}  {:>6}  {:>7}  {:>8}",
                    cut(&k.key, 20),
                    k.scored,
                    k.correct,
                    percent(k.accuracy)
                );
            }
        }
        if s.confusion.labels.is_empty() {
            // Compared value by value (an extraction): there are no classes to show.
            self.write_thresholds(out, s, confidence);
            return;
        }
        let width = s.classes.iter().map(|c| c.class.chars().count()).max().unwrap_or(5).clamp(5, 40);
        let _ = writeln!(
            out,
            "  {:<width$}  {:>6}  {:>9}  {:>7}  {:>9}  {:>7}",
            "class", "truth", "predicted", "correct", "precision", "recall"
        );
        for c in &s.classes {
            let _ = writeln!(
                out,
                "  {:<width$}  {:>6}  {:>9}  {:>7}  {:>9}  {:>7}",
                cut(&c.class, width),
                c.truth,
                c.predicted,
                c.correct,
                percent(c.precision),
                percent(c.recall)
            );
        }
        let labels = &s.confusion.labels;
        let _ = writeln!(out, "  confusion matrix (rows: the person's value, columns: the model's answer):");
        let lw = labels.iter().map(|l| l.chars().count()).max().unwrap_or(5).clamp(5, 40) + 5;
        let _ = write!(out, "  {:<lw$}", "");
        for i in 0..labels.len() {
            let _ = write!(out, " {:>5}", format!("[{}]", i + 1));
        }
        out.push('\n');
        for (i, (label, row)) in labels.iter().zip(&s.confusion.matrix).enumerate() {
            let _ = write!(out, "  {:<lw$}", format!("[{}] {}", i + 1, cut(label, lw - 5)));
            for n in row {
                let _ = write!(out, " {n:>5}");
            }
            out.push('\n');
        }
        self.write_thresholds(out, s, confidence);
    }

    fn write_thresholds(&self, out: &mut String, s: &super::score::Scores, confidence: Option<&str>) {
        match confidence {
            None => {
                let _ = writeln!(
                    out,
                    "  no threshold table: the task's answer has no confidence (set review.confidence_field)"
                );
            }
            Some(c) => {
                let _ = writeln!(
                    out,
                    "  threshold table ({c} >= min_confidence is auto-approved; answers without one never are):"
                );
                let _ =
                    writeln!(out, "  {:>14}  {:>8}  {:>7}  {:>8}", "min_confidence", "approved", "share", "accuracy");
                for t in &s.thresholds {
                    let _ = writeln!(
                        out,
                        "  {:>14}  {:>8}  {:>7}  {:>8}",
                        format!("{}", t.threshold),
                        t.approved,
                        percent(Some(t.share)),
                        percent(t.accuracy)
                    );
                }
            }
        }
    }
}

fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(width.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}
