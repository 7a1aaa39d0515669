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
        if field_missing(field, record.field(field)) && !wanted.contains(field) {
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
        if !selected && field_missing(field, record.field(field)) && !wanted.contains(field) {
            wanted.push(field.clone());
        }
    }
    wanted
}

/// Whether a record field needs filling. A per-element field (its name has `[]`, like
/// `images[].alt`) holds a list of `{id, <value>}` entries, one per element: it is missing when any
/// element's value is blank (a product without images misses no alt text). Any other field: see
/// [`is_missing`].
pub fn field_missing(field: &str, value: Option<&Value>) -> bool {
    if field.contains("[]") {
        return value.and_then(Value::as_array).is_some_and(|elements| elements.iter().any(element_blank));
    }
    is_missing(value)
}

/// An element entry of a per-element field whose value (every key but `id`) is blank.
fn element_blank(element: &Value) -> bool {
    element.as_object().is_some_and(|o| o.iter().filter(|(k, _)| *k != "id").all(|(_, v)| is_missing(Some(v))))
}

fn element_id(element: &Value) -> Option<String> {
    match element.get("id")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The part of a proposed per-element value that may be written: entries for elements the record
/// has and whose value is blank, with a value given. Text a person wrote on other elements stays.
/// `None` when nothing is left.
pub fn fillable_elements(current: Option<&Value>, proposed: &Value) -> Option<Value> {
    let current = current.and_then(Value::as_array)?;
    let blank: Vec<String> = current.iter().filter(|e| element_blank(e)).filter_map(element_id).collect();
    let mut seen = Vec::new();
    let keep: Vec<Value> = proposed
        .as_array()?
        .iter()
        .filter(|e| !element_blank(e))
        .filter(|e| {
            element_id(e).is_some_and(|id| {
                let fresh = blank.contains(&id) && !seen.contains(&id);
                seen.push(id);
                fresh
            })
        })
        .cloned()
        .collect();
    (!keep.is_empty()).then_some(Value::Array(keep))
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
    visible_chars(s)
}

/// Characters of `s` outside HTML tags, surrounding whitespace not counted.
pub fn visible_chars(s: &str) -> usize {
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
            native: None,
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
    fn per_element_fields_miss_when_any_element_is_blank_and_fill_only_those() {
        let alts = json!([{"id": 5, "alt": "Front view"}, {"id": 6, "alt": ""}]);
        assert!(field_missing("images[].alt", Some(&alts)));
        assert!(!field_missing("images[].alt", Some(&json!([{"id": 5, "alt": "Front"}]))));
        assert!(!field_missing("images[].alt", Some(&json!([]))), "no images, no alt text missing");
        let proposed = json!([{"id": 5, "alt": "Other"}, {"id": 6, "alt": "Side view"}, {"id": 99, "alt": "Not ours"}]);
        assert_eq!(fillable_elements(Some(&alts), &proposed), Some(json!([{"id": 6, "alt": "Side view"}])));
        assert_eq!(fillable_elements(Some(&alts), &json!([{"id": 6, "alt": " "}])), None);
    }

    #[test]
    fn counts_visible_characters() {
        assert_eq!(text_len(Some(&json!("<p>abc</p>"))), 3);
        assert_eq!(text_len(Some(&json!("héllo"))), 5);
        assert_eq!(text_len(None), 0);
    }
}
