//! Which fields of a record need filling, by a pipeline's selector; and which records of a
//! platform a pipeline would enrich now ([`list_candidates`]).

use std::collections::BTreeMap;

use enrichd_connector::{Connector, PageRequest, Record};
use serde_json::Value;

use crate::config::{PipelineConfig, Selector};
use crate::task::Task;

/// What listing a pipeline's records found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Candidates {
    /// Records read from the platform.
    pub read: u64,
    /// Records with at least one field to fill.
    pub candidates: u64,
    /// Field → candidates that miss it.
    pub by_field: BTreeMap<String, u64>,
}

/// Lists the pipeline's entity on `connector` page by page, as a run's discovery does, and hands
/// each candidate (a record with fields to fill) to `each` with those fields, in listing order; stops
/// once `limit` candidates were found, when given. Only reads: nothing is stored, asked of a model
/// or written. `enrichd run --dry-run`, `enrichd estimate` and the pipelines page's "Dry run" share it.
pub async fn list_candidates(
    connector: &dyn Connector,
    pipeline: &PipelineConfig,
    task: &Task,
    limit: Option<u64>,
    mut each: impl FnMut(&Record, &[String]),
) -> Result<Candidates, String> {
    let mut found = Candidates::default();
    let mut cursor = None;
    loop {
        let request = PageRequest { cursor: cursor.clone(), per_page: pipeline.page_size, modified_after: None };
        let page = connector
            .list(&pipeline.entity, &request)
            .await
            .map_err(|e| format!("connections.{}: {e}", pipeline.connection))?;
        for record in &page.records {
            if limit.is_some_and(|l| found.candidates >= l) {
                return Ok(found);
            }
            found.read += 1;
            let wanted = wanted_fields(&pipeline.select, task.fields.values(), record);
            if !wanted.is_empty() {
                found.candidates += 1;
                for field in &wanted {
                    *found.by_field.entry(field.clone()).or_default() += 1;
                }
                each(record, &wanted);
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(found),
        }
    }
}

/// A record's name for people: its `name`, `title` or `subject`, when it has one that is not blank.
pub fn record_name(record: &Record) -> Option<String> {
    ["name", "title", "subject"]
        .iter()
        .find_map(|k| record.fields.get(*k).and_then(Value::as_str).filter(|s| !s.trim().is_empty()))
        .map(str::to_owned)
}

/// The record fields to fill: selector fields that are missing or too short. With
/// `fill_all_missing`, also every other field the task fills that is missing, when the record is a
/// candidate at all. Fields with content that the selector accepts are never proposed, so nothing a
/// human wrote is overwritten.
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
    for field in &selector.add {
        if !wanted.contains(field) {
            wanted.push(field.clone());
        }
    }
    if !selector.fill_all_missing {
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

/// Absent, null, text a customer would see as empty (blank, or only tags, entities like `&nbsp;`
/// and whitespace: `<p>&nbsp;</p>`), or an empty list or object.
pub fn is_missing(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => visible_chars(s) == 0,
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(_) => false,
    }
}

/// Visible characters of a text field (see [`visible_chars`]).
fn text_len(value: Option<&Value>) -> usize {
    let Some(Value::String(s)) = value else {
        return if is_missing(value) { 0 } else { usize::MAX };
    };
    visible_chars(s)
}

/// The characters of `s` a customer sees: HTML tags, comments and the content of `script` and
/// `style` elements dropped, entities decoded (`&amp;` is one character, `&nbsp;` a space), runs of
/// whitespace counted as one and surrounding whitespace not at all.
pub fn visible_chars(s: &str) -> usize {
    let mut count = 0;
    // Whitespace seen since the last visible character; counted once, when more text follows.
    let mut pending_space = false;
    let mut push = |c: char, count: &mut usize| {
        if c.is_whitespace() || matches!(c, '\u{200b}' | '\u{feff}') {
            pending_space = *count > 0;
        } else {
            *count += 1 + usize::from(pending_space);
            pending_space = false;
        }
    };
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if c == '<'
            && let Some(after) = skip_markup(rest)
        {
            rest = after;
            continue;
        }
        if c == '&'
            && let Some((decoded, len)) = entity(rest)
        {
            push(decoded, &mut count);
            rest = &rest[len..];
            continue;
        }
        push(c, &mut count);
        rest = &rest[c.len_utf8()..];
    }
    count
}

/// The text of `s` a customer reads, read as [`visible_chars`] reads it (tags, comments, scripts
/// and styles dropped, entities decoded, whitespace runs as one space), except that block elements
/// (paragraphs, list items, line breaks, headings) separate their text with a space so words of
/// two paragraphs do not run together.
pub fn visible_text(s: &str) -> String {
    const BLOCKS: [&str; 17] =
        ["p", "br", "li", "ul", "ol", "div", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "td", "th", "blockquote", "hr"];
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    let mut push = |c: char, out: &mut String| {
        if c.is_whitespace() || matches!(c, '\u{200b}' | '\u{feff}') {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    };
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if c == '<'
            && let Some(after) = skip_markup(rest)
        {
            let tag = &rest[..rest.len() - after.len()];
            let name: String = tag
                .trim_start_matches(['<', '/'])
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect::<String>()
                .to_ascii_lowercase();
            if BLOCKS.contains(&name.as_str()) {
                push(' ', &mut out);
            }
            rest = after;
            continue;
        }
        if c == '&'
            && let Some((decoded, len)) = entity(rest)
        {
            // A named entity this reader does not know stays as written.
            if decoded == '\u{fffd}' && !rest[1..].starts_with('#') {
                rest[..len].chars().for_each(|c| push(c, &mut out));
            } else {
                push(decoded, &mut out);
            }
            rest = &rest[len..];
            continue;
        }
        push(c, &mut out);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// `rest` after the markup it starts with: a comment, a `script`/`style` element with its content,
/// or one tag. `None` when the `<` starts no tag (`a < b`): it is text.
fn skip_markup(rest: &str) -> Option<&str> {
    if let Some(after) = rest.strip_prefix("<!--") {
        return Some(after.find("-->").map_or("", |end| &after[end + 3..]));
    }
    let starts_tag = rest[1..].chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '/' || c == '!');
    if !starts_tag {
        return None;
    }
    let lower: String = rest.chars().take(8).collect::<String>().to_ascii_lowercase();
    for element in ["script", "style"] {
        if lower.strip_prefix('<').is_some_and(|l| l.starts_with(element)) {
            let close = format!("</{element}");
            let rest_lower = rest.to_ascii_lowercase();
            return Some(match rest_lower.find(&close) {
                Some(at) => rest[at..].find('>').map_or("", |end| &rest[at + end + 1..]),
                None => "",
            });
        }
    }
    Some(rest.find('>').map_or("", |end| &rest[end + 1..]))
}

/// The character an entity at the start of `rest` stands for, and the entity's length. Named
/// entities not listed here still stand for one visible character.
fn entity(rest: &str) -> Option<(char, usize)> {
    let end = rest[1..].find(';').filter(|&e| (1..=32).contains(&e))? + 1;
    let name = &rest[1..end];
    let decoded = if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        char::from_u32(code).unwrap_or('\u{fffd}')
    } else if name.chars().all(|c| c.is_ascii_alphanumeric()) {
        match name {
            "nbsp" | "ensp" | "emsp" | "thinsp" => ' ',
            "zwsp" | "zwnj" | "zwj" => '\u{200b}',
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => '\u{fffd}',
        }
    } else {
        return None;
    };
    Some((decoded, end + 1))
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
            fill_all_missing: true,
            add: Vec::new(),
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
    fn reads_the_visible_text() {
        let html = "<p>Zinc-plated <b>steel</b> hinge.</p><ul><li>Size: 75&nbsp;mm</li><li>A &amp; B &unknown;</li></ul>\
                    <script>alert(1)</script><!-- note --><p>Rust&#x2d;free</p>";
        assert_eq!(visible_text(html), "Zinc-plated steel hinge. Size: 75 mm A & B &unknown; Rust-free");
        assert_eq!(visible_text("a < b and  c"), "a < b and c");
        assert_eq!(visible_text("  "), "");
    }

    #[test]
    fn counts_visible_characters() {
        assert_eq!(text_len(Some(&json!("<p>abc</p>"))), 3);
        assert_eq!(text_len(Some(&json!("héllo"))), 5);
        assert_eq!(text_len(None), 0);
        assert_eq!(visible_chars("<p>&nbsp;</p>\n<p> </p>"), 0);
        assert_eq!(visible_text("<p>&nbsp;</p>\n<p> </p>"), "");
        assert_eq!(visible_chars("<p>Fish &amp; chips</p>\n\n<p>now</p>"), 16);
        assert_eq!(visible_chars("a &lt; b &#8211; c&hellip;"), 10);
        assert_eq!(visible_chars("<!-- note --><style>p{}</style><script>x()</script>ok"), 2);
        assert_eq!(visible_chars("1 < 2"), 5);
        assert!(is_missing(Some(&json!("<p>&nbsp;</p>"))));
        assert!(is_missing(Some(&json!("<div>\n  <br/>  </div>"))));
    }
}
