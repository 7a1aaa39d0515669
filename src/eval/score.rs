//! Scoring one field: values normalised into classes, accuracy, per-class precision and recall, the
//! confusion matrix and the confidence threshold table. Pure functions over the outcomes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The class label of a prediction that gave no value (null, empty, or the property missing).
pub const NO_ANSWER: &str = "(no answer)";

/// The class of `value`: its normalised key (what comparisons use) and how it is shown. `None`
/// when the value is empty.
///
/// Text is trimmed, runs of whitespace become one space and case is ignored (`"Billing "` and
/// `"billing"` are one class; it shows as first seen). A list is a set: its elements normalised
/// the same way, duplicates and empty ones dropped, in sorted order, joined with `" | "` — so
/// `["B", "a"]` and `["a", "b", "a"]` are the same class. Numbers and booleans compare as written.
pub fn class_of(value: &Value) -> Option<(String, String)> {
    match value {
        Value::Null => None,
        Value::String(s) => {
            let shown = s.split_whitespace().collect::<Vec<_>>().join(" ");
            (!shown.is_empty()).then(|| (shown.to_lowercase(), shown))
        }
        Value::Array(items) => {
            let mut set: BTreeMap<String, String> = BTreeMap::new();
            for item in items {
                if let Some((key, shown)) = class_of(item) {
                    set.entry(key).or_insert(shown);
                }
            }
            if set.is_empty() {
                return None;
            }
            let key = set.keys().cloned().collect::<Vec<_>>().join(" | ");
            let shown = set.values().cloned().collect::<Vec<_>>().join(" | ");
            Some((key, shown))
        }
        Value::Object(o) if o.is_empty() => None,
        other => Some((other.to_string().to_lowercase(), other.to_string())),
    }
}

/// One scored record: its true class, what the model answered (null: no value), and the answer's
/// confidence when it gave a number.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub truth: Value,
    pub predicted: Value,
    pub confidence: Option<f64>,
}

/// A class's row: how many records truly are it, how many the model put in it, how many of those
/// were right; precision = correct / predicted, recall = correct / truth (`null` when the
/// denominator is 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    pub class: String,
    pub truth: u64,
    pub predicted: u64,
    pub correct: u64,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
}

/// Rows are true classes, columns predicted ones, both in the order of `labels`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confusion {
    pub labels: Vec<String>,
    pub matrix: Vec<Vec<u64>>,
}

/// What `min_confidence = threshold` would have done: the answers it approves (confidence ≥
/// threshold), their share of all scored answers, and how many of them were right.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdRow {
    pub threshold: f64,
    pub approved: u64,
    pub share: f64,
    pub correct: u64,
    pub accuracy: Option<f64>,
}

/// A field's scores over its outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub scored: u64,
    pub correct: u64,
    pub accuracy: Option<f64>,
    pub classes: Vec<ClassScore>,
    pub confusion: Confusion,
    pub thresholds: Vec<ThresholdRow>,
}

fn ratio(n: u64, of: u64) -> Option<f64> {
    (of > 0).then(|| n as f64 / of as f64)
}

/// The fixed thresholds (0.50, 0.55, … 0.95) and every distinct confidence the answers gave
/// (between 0 and 1), ascending.
pub fn thresholds(confidences: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut cuts: Vec<f64> = (0..10).map(|i| (50 + 5 * i) as f64 / 100.0).collect();
    cuts.extend(confidences.filter(|c| (0.0..=1.0).contains(c)));
    cuts.sort_by(f64::total_cmp);
    cuts.dedup();
    cuts
}

/// Scores `outcomes` (records whose truth is not empty).
pub fn score(outcomes: &[Outcome]) -> Scores {
    // Key → shown label, for every class seen as a truth or a prediction.
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    let mut rows: Vec<(String, String, bool, Option<f64>)> = Vec::new();
    for o in outcomes {
        let Some((truth, truth_shown)) = class_of(&o.truth) else { continue };
        shown.entry(truth.clone()).or_insert(truth_shown);
        let predicted = match class_of(&o.predicted) {
            Some((key, label)) => {
                shown.entry(key.clone()).or_insert(label);
                key
            }
            None => {
                shown.entry(NO_ANSWER.to_lowercase()).or_insert(NO_ANSWER.to_owned());
                NO_ANSWER.to_lowercase()
            }
        };
        let right = predicted == truth;
        rows.push((truth, predicted, right, o.confidence));
    }
    // Classes in label order, "(no answer)" last.
    let mut keys: Vec<String> = shown.keys().filter(|k| **k != NO_ANSWER.to_lowercase()).cloned().collect();
    keys.sort_by(|a, b| shown[a].cmp(&shown[b]).then(a.cmp(b)));
    if shown.contains_key(&NO_ANSWER.to_lowercase()) {
        keys.push(NO_ANSWER.to_lowercase());
    }
    let index: BTreeMap<&String, usize> = keys.iter().enumerate().map(|(i, k)| (k, i)).collect();
    let mut matrix = vec![vec![0u64; keys.len()]; keys.len()];
    for (truth, predicted, _, _) in &rows {
        matrix[index[truth]][index[predicted]] += 1;
    }
    let classes = keys
        .iter()
        .enumerate()
        .filter(|(_, k)| **k != NO_ANSWER.to_lowercase())
        .map(|(i, k)| {
            let truth: u64 = matrix[i].iter().sum();
            let predicted: u64 = matrix.iter().map(|row| row[i]).sum();
            let correct = matrix[i][i];
            ClassScore {
                class: shown[k].clone(),
                truth,
                predicted,
                correct,
                precision: ratio(correct, predicted),
                recall: ratio(correct, truth),
            }
        })
        .collect();
    let judged: Vec<(bool, Option<f64>)> = rows.iter().map(|r| (r.2, r.3)).collect();
    let (scored, correct, thresholds) = tally(&judged);
    Scores {
        scored,
        correct,
        accuracy: ratio(correct, scored),
        classes,
        confusion: Confusion { labels: keys.iter().map(|k| shown[k].clone()).collect(), matrix },
        thresholds,
    }
}

/// How many answers were judged, how many were right, and the threshold table over them.
fn tally(judged: &[(bool, Option<f64>)]) -> (u64, u64, Vec<ThresholdRow>) {
    let scored = judged.len() as u64;
    let correct = judged.iter().filter(|r| r.0).count() as u64;
    let cuts = thresholds(judged.iter().filter_map(|r| r.1));
    let rows = cuts
        .into_iter()
        .map(|t| {
            let approved: Vec<bool> = judged.iter().filter(|r| r.1.is_some_and(|c| c >= t)).map(|r| r.0).collect();
            let n = approved.len() as u64;
            let right = approved.iter().filter(|r| **r).count() as u64;
            ThresholdRow {
                threshold: t,
                approved: n,
                share: ratio(n, scored).unwrap_or(0.0),
                correct: right,
                accuracy: ratio(right, n),
            }
        })
        .collect();
    (scored, correct, rows)
}

/// How one extracted value is compared with the person's (`[eval] compare = "exact"`).
#[derive(Debug, Clone, PartialEq)]
pub enum Exact {
    /// Numbers within the tolerance.
    Number(f64),
    /// Dates exactly (`2026-03-01`), text trimmed.
    Date,
    /// Text trimmed, with case and runs of whitespace ignored.
    Text,
    /// A list of values as a set (see [`class_of`]).
    Set,
    /// A list of objects position by position: each key compared as given.
    Lines(Vec<(String, Exact)>),
}

impl Exact {
    /// The name reports show (`compared as number`).
    pub fn name(&self) -> &'static str {
        match self {
            Exact::Number(_) => "number",
            Exact::Date => "date",
            Exact::Text => "text",
            Exact::Set => "set",
            Exact::Lines(_) => "lines by position",
        }
    }

    /// Whether `predicted` is the same value as `truth`.
    pub fn same(&self, truth: &Value, predicted: &Value) -> bool {
        match self {
            Exact::Number(tolerance) => match (truth.as_f64(), predicted.as_f64()) {
                (Some(a), Some(b)) => (a - b).abs() <= tolerance + 1e-9,
                _ => false,
            },
            Exact::Date => match (truth.as_str(), predicted.as_str()) {
                (Some(a), Some(b)) => a.trim() == b.trim(),
                _ => false,
            },
            Exact::Text | Exact::Set => match (class_of(truth), class_of(predicted)) {
                (Some(a), Some(b)) => a.0 == b.0,
                _ => false,
            },
            Exact::Lines(keys) => {
                let (Some(t), Some(p)) = (truth.as_array(), predicted.as_array()) else { return false };
                t.len() == p.len() && t.iter().zip(p).all(|(t, p)| line_right(keys, t, Some(p)).0)
            }
        }
    }
}

/// Whether line `predicted` matches line `truth` on every key the truth has a value for, and each
/// key's verdict (`None`: the truth has no value for it, not scored).
fn line_right(keys: &[(String, Exact)], truth: &Value, predicted: Option<&Value>) -> (bool, Vec<Option<bool>>) {
    let verdicts: Vec<Option<bool>> = keys
        .iter()
        .map(|(key, how)| {
            let t = truth.get(key).filter(|v| !v.is_null())?;
            let p = predicted.and_then(|p| p.get(key)).unwrap_or(&Value::Null);
            Some(how.same(t, p))
        })
        .collect();
    (predicted.is_some() && verdicts.iter().all(|v| v.unwrap_or(true)), verdicts)
}

/// Per line-item key: how many values were scored and how many were right.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineKeyScore {
    pub key: String,
    pub scored: u64,
    pub correct: u64,
    pub accuracy: Option<f64>,
}

/// A list of lines compared position by position: over the scored records, how often the model
/// read as many lines as the person entered, how many of the person's lines it got entirely right,
/// and each key's accuracy (a line the model left out counts as wrong on every key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineScores {
    pub records: u64,
    pub count_right: u64,
    pub lines: u64,
    pub lines_right: u64,
    pub keys: Vec<LineKeyScore>,
}

/// Scores `outcomes` value by value as `how` compares them: accuracy and the threshold table (no
/// classes: extracted values are not classes). For [`Exact::Lines`], also the per-line scores.
pub fn score_exact(outcomes: &[Outcome], how: &Exact) -> (Scores, Option<LineScores>) {
    let mut judged = Vec::new();
    let mut lines = match how {
        Exact::Lines(keys) => Some((
            LineScores { records: 0, count_right: 0, lines: 0, lines_right: 0, keys: Vec::new() },
            vec![(0u64, 0u64); keys.len()],
        )),
        _ => None,
    };
    for o in outcomes {
        if class_of(&o.truth).is_none() {
            continue;
        }
        judged.push((how.same(&o.truth, &o.predicted), o.confidence));
        if let (Exact::Lines(keys), Some((totals, per_key))) = (how, lines.as_mut()) {
            let truth = o.truth.as_array().map(Vec::as_slice).unwrap_or_default();
            let predicted = o.predicted.as_array().map(Vec::as_slice).unwrap_or_default();
            totals.records += 1;
            totals.count_right += u64::from(truth.len() == predicted.len());
            for (i, line) in truth.iter().enumerate() {
                let (right, verdicts) = line_right(keys, line, predicted.get(i));
                totals.lines += 1;
                totals.lines_right += u64::from(right);
                for (k, verdict) in verdicts.into_iter().enumerate() {
                    if let Some(ok) = verdict {
                        per_key[k].0 += 1;
                        per_key[k].1 += u64::from(ok);
                    }
                }
            }
        }
    }
    let (scored, correct, thresholds) = tally(&judged);
    let scores = Scores {
        scored,
        correct,
        accuracy: ratio(correct, scored),
        classes: Vec::new(),
        confusion: Confusion { labels: Vec::new(), matrix: Vec::new() },
        thresholds,
    };
    let lines = match (how, lines) {
        (Exact::Lines(keys), Some((mut totals, per_key))) => {
            totals.keys = keys
                .iter()
                .zip(per_key)
                .map(|((key, _), (scored, correct))| LineKeyScore {
                    key: key.clone(),
                    scored,
                    correct,
                    accuracy: ratio(correct, scored),
                })
                .collect();
            Some(totals)
        }
        _ => None,
    };
    (scores, lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn o(truth: Value, predicted: Value, confidence: f64) -> Outcome {
        Outcome { truth, predicted, confidence: Some(confidence) }
    }

    #[test]
    fn normalises_text_case_and_sets() {
        assert_eq!(class_of(&json!("  Billing\n issue ")), Some(("billing issue".into(), "Billing issue".into())));
        assert_eq!(class_of(&json!(["b", "A", "a", ""])).unwrap().0, "a | b");
        assert_eq!(class_of(&json!(["b", "A"])), class_of(&json!(["a", "B", "b"])).map(|(k, _)| (k, "A | b".into())));
        assert_eq!(class_of(&json!("  ")), None);
        assert_eq!(class_of(&json!([])), None);
        assert_eq!(class_of(&json!(true)).unwrap().0, "true");
    }

    #[test]
    fn extracted_values_are_compared_by_kind() {
        assert!(Exact::Number(0.01).same(&json!(1234.5), &json!(1234.509)));
        assert!(!Exact::Number(0.01).same(&json!(1234.5), &json!(1234.52)));
        assert!(!Exact::Number(0.01).same(&json!(10), &json!("10")), "text is not a number");
        assert!(Exact::Date.same(&json!("2026-03-01"), &json!(" 2026-03-01")));
        assert!(!Exact::Date.same(&json!("2026-03-01"), &json!("2026-3-1")));
        assert!(Exact::Text.same(&json!("Acme  Supplies Ltd "), &json!("acme supplies ltd")));
        assert!(!Exact::Text.same(&json!("INV-0042"), &json!("INV-0024")));
        assert!(!Exact::Text.same(&json!("INV-0042"), &Value::Null));
    }

    #[test]
    fn line_items_are_scored_by_position_by_hand() {
        let how = Exact::Lines(vec![
            ("description".into(), Exact::Text),
            ("line_amount".into(), Exact::Number(0.01)),
            ("account_code".into(), Exact::Text),
        ]);
        let line = |d: &str, a: f64, c: Value| json!({"description": d, "line_amount": a, "account_code": c});
        let outcomes = vec![
            // Record 1: both lines right (the truth has no account code on line 2: not scored).
            Outcome {
                truth: json!([line("Bolts", 10.0, json!("400")), line("Nuts", 5.0, Value::Null)]),
                predicted: json!([line("bolts", 10.004, json!("400")), line("Nuts", 5.0, json!("429"))]),
                confidence: Some(0.9),
            },
            // Record 2: line 2's amount wrong; line 3 left out.
            Outcome {
                truth: json!([
                    line("A", 1.0, json!("400")),
                    line("B", 2.0, json!("400")),
                    line("C", 3.0, json!("400"))
                ]),
                predicted: json!([line("A", 1.0, json!("400")), line("B", 2.5, json!("400"))]),
                confidence: Some(0.6),
            },
            // Record 3: one line more than the person entered; the first is right.
            Outcome {
                truth: json!([line("X", 7.0, json!("310"))]),
                predicted: json!([line("X", 7.0, json!("310")), line("Y", 1.0, Value::Null)]),
                confidence: None,
            },
        ];
        let (scores, lines) = score_exact(&outcomes, &how);
        assert_eq!((scores.scored, scores.correct), (3, 1), "only record 1 is entirely right");
        let lines = lines.unwrap();
        assert_eq!((lines.records, lines.count_right, lines.lines, lines.lines_right), (3, 1, 6, 4));
        // description: 6 scored (all truth lines), right on 1,2 (r1), A, B (r2), X (r3) = 5.
        // line_amount: 6 scored, right on 10, 5, 1, 7 = 4. account_code: 5 scored (r1 line 2 has
        // none), right on 400 (r1), 400, 400 (r2), 310 (r3) = 4.
        let by_key: Vec<(&str, u64, u64)> = lines.keys.iter().map(|k| (k.key.as_str(), k.scored, k.correct)).collect();
        assert_eq!(by_key, [("description", 6, 5), ("line_amount", 6, 4), ("account_code", 5, 4)]);
        let at = |t: f64| scores.thresholds.iter().find(|r| r.threshold == t).unwrap().clone();
        assert_eq!((at(0.6).approved, at(0.6).correct), (2, 1));
    }

    #[test]
    fn scores_a_small_confusion() {
        // truth a,a,a,b,b ; predicted a,a,b,b,(none)
        let outcomes = vec![
            o(json!("a"), json!("A"), 0.9),
            o(json!("a"), json!("a"), 0.8),
            o(json!("a"), json!("b"), 0.6),
            o(json!("b"), json!("b"), 0.9),
            o(json!("b"), Value::Null, 0.4),
        ];
        let s = score(&outcomes);
        assert_eq!((s.scored, s.correct, s.accuracy), (5, 3, Some(0.6)));
        assert_eq!(s.confusion.labels, ["a", "b", NO_ANSWER]);
        assert_eq!(s.confusion.matrix, vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 0]]);
        assert_eq!(
            s.classes[0],
            ClassScore {
                class: "a".into(),
                truth: 3,
                predicted: 2,
                correct: 2,
                precision: Some(1.0),
                recall: Some(2.0 / 3.0)
            }
        );
        assert_eq!(s.classes[1].precision, Some(0.5));
        let cuts: Vec<f64> = s.thresholds.iter().map(|t| t.threshold).collect();
        assert_eq!(cuts, [0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]);
        let at = |t: f64| s.thresholds.iter().find(|r| r.threshold == t).unwrap().clone();
        assert_eq!(at(0.6), ThresholdRow { threshold: 0.6, approved: 4, share: 0.8, correct: 3, accuracy: Some(0.75) });
        assert_eq!(
            at(0.85),
            ThresholdRow { threshold: 0.85, approved: 2, share: 0.4, correct: 2, accuracy: Some(1.0) }
        );
        assert_eq!(at(0.95).accuracy, None);
    }
}
