//! Which fields of a record need filling, by a pipeline's selector.

use enrichd_connector::Record;
use serde_json::Value;

use crate::config::Selector;

/// The record fields to fill: selector fields that are missing or too short; and, when the record
/// is a candidate at all, any other field the task fills that is empty. Fields with content that
/// the selector accepts are never proposed, so nothing a human wrote is overwritten.
pub fn wanted_fields<'a>(
    selector: &Selector,
    task_fields: impl Iterator<Item = &'a String>,
    record: &Record,
) -> Vec<String> {
    let mut wanted: Vec<String> = Vec::new();
    for field in &selector.missing {
        if is_missing(record.field(field)) && !wanted.contains(field) {
            wanted.push(field.clone());
        }
    }
    for (field, min) in &selector.min_length {
        if text_len(record.field(field)) < *min && !wanted.contains(field) {
            wanted.push(field.clone());
        }
    }
    if wanted.is_empty() {
        return wanted;
    }
    for field in task_fields {
        let selected = selector.missing.contains(field) || selector.min_length.contains_key(field);
        if !selected && is_missing(record.field(field)) && !wanted.contains(field) {
            wanted.push(field.clone());
        }
    }
    wanted
}

/// Absent, null, blank text, or an empty list or object.
pub fn is_missing(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(_) => false,
    }
}

/// Visible characters of a text field, HTML tags not counted.
fn text_len(value: Option<&Value>) -> usize {
    let Some(Value::String(s)) = value else {
        return if is_missing(value) { 0 } else { usize::MAX };
    };
    let visible: String = {
        let mut out = String::new();
        let mut in_tag = false;
        for c in s.chars() {
            match c {
                '<' => in_tag = true,
                '>' if in_tag => in_tag = false,
                _ if !in_tag => out.push(c),
                _ => {}
            }
        }
        out
    };
    visible.trim().chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use enrichd_connector::Version;
    use serde_json::json;

    fn record(fields: Value) -> Record {
        Record {
            id: "1".into(),
            version: Version("v".into()),
            fields: fields.as_object().unwrap().clone(),
            attachments: vec![],
        }
    }

    fn selector(missing: &[&str], min: &[(&str, usize)]) -> Selector {
        Selector {
            missing: missing.iter().map(|s| s.to_string()).collect(),
            min_length: min.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn finds_missing_and_short_fields() {
        let task: Vec<String> = vec!["description".into(), "short_description".into(), "tags".into()];
        let s = selector(&["description"], &[("short_description", 20)]);
        let r = record(json!({"description": "  ", "short_description": "<p>Tiny</p>", "tags": []}));
        assert_eq!(wanted_fields(&s, task.iter(), &r), ["description", "short_description", "tags"]);
        let r = record(
            json!({"description": "<p>Has text</p>", "short_description": "<p>A long enough short text</p>", "tags": []}),
        );
        assert!(
            wanted_fields(&s, task.iter(), &r).is_empty(),
            "nothing selected is missing: skip, even though tags are empty"
        );
        let r =
            record(json!({"description": null, "short_description": "<b>A long enough short text</b>", "tags": ["x"]}));
        assert_eq!(wanted_fields(&s, task.iter(), &r), ["description"], "fields with content are never proposed");
    }

    #[test]
    fn counts_visible_characters() {
        assert_eq!(text_len(Some(&json!("<p>abc</p>"))), 3);
        assert_eq!(text_len(Some(&json!("héllo"))), 5);
        assert_eq!(text_len(None), 0);
    }
}
