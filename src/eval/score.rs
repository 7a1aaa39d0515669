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
    let scored = rows.len() as u64;
    let correct = rows.iter().filter(|r| r.2).count() as u64;
    let cuts = thresholds(rows.iter().filter_map(|r| r.3));
    let thresholds = cuts
        .into_iter()
        .map(|t| {
            let approved: Vec<bool> = rows.iter().filter(|r| r.3.is_some_and(|c| c >= t)).map(|r| r.2).collect();
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
    Scores {
        scored,
        correct,
        accuracy: ratio(correct, scored),
        classes,
        confusion: Confusion { labels: keys.iter().map(|k| shown[k].clone()).collect(), matrix },
        thresholds,
    }
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
