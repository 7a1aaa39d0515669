//! What the item page shows beside the word diff, built from the item, its task and its events:
//! HTML fields rendered as the shop shows them (sanitised: record text and model answers are
//! untrusted), field labels people read, character counts against the task's bounds, list fields
//! as chips, the record as pulled as a table of facts, the record's links and thumbnail, and who
//! reverted a write and what the platform held afterwards.
//!
//! Everything here returns template values; the templates escape text, and the only markup they
//! insert unescaped is what [`rendered`] returns.

use serde_json::{Map, Value, json};

use crate::config::FieldCheck;
use crate::store::EventRecord;
use crate::task::Task;

/// Text facts longer than this many characters are folded (first words shown, the rest on open).
const FOLD_CHARS: usize = 240;

/// `html` cleaned for display: the allow-list model answers are held to ([`crate::task::clean_html`]:
/// paragraphs, lists, emphasis, headings, tables, links with `rel="noopener noreferrer"`), so no
/// script, event handler, `javascript:` link, style or image of a record or a proposal reaches the
/// page. The value at pull time never went through it, so it is cleaned here too.
pub(super) fn rendered(html: &str) -> String {
    crate::task::clean_html(html)
}

/// A record field's name for people: `seo_description` → "Seo description", `images[].alt` →
/// "Images alt", `custom.Category` → "Category"; a few abbreviations keep their capitals.
pub(super) fn humanised(field: &str) -> String {
    let field = field.strip_prefix("custom.").unwrap_or(field);
    let words: Vec<String> = field
        .split(|c: char| c == '_' || c == '.' || c == '[' || c == ']' || c == '-' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .map(|w| match w.to_ascii_lowercase().as_str() {
            "sku" | "seo" | "id" | "url" | "vat" | "gst" | "abn" => w.to_ascii_uppercase(),
            _ => w.to_owned(),
        })
        .collect();
    let joined = words.join(" ");
    let mut chars = joined.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => field.to_owned(),
    }
}

/// The label of record field `field`: the task's (`[labels]`), else the name humanised.
pub(super) fn label(task: Option<&Task>, field: &str) -> String {
    task.and_then(|t| t.label_of(field)).map_or_else(|| humanised(field), str::to_owned)
}

/// The size of `value` against `check`, for a count beside the field: visible characters of text
/// (as a customer sees them: tags and entities do not count), items of a list. `out` when a bound is
/// missed; `None` for values that have no size (numbers, nothing).
pub(super) fn count(value: &Value, check: Option<&FieldCheck>) -> Option<Value> {
    let (size, unit, min, max) = match value {
        Value::String(s) if !s.is_empty() => (
            crate::select::visible_chars(s),
            "characters",
            check.and_then(|c| c.min_chars),
            check.and_then(|c| c.max_chars),
        ),
        Value::Array(a) => (a.len(), "items", check.and_then(|c| c.min_items), check.and_then(|c| c.max_items)),
        _ => return None,
    };
    let unit = if size == 1 { unit.trim_end_matches('s') } else { unit };
    let bounds = match (min, max) {
        (Some(min), Some(max)) => Some(format!("{min}–{max}")),
        (Some(min), None) => Some(format!("at least {min}")),
        (None, Some(max)) => Some(format!("at most {max}")),
        (None, None) => None,
    };
    let below = min.is_some_and(|m| size < m);
    let above = max.is_some_and(|m| size > m);
    let text = match &bounds {
        Some(b) => format!("{size} {unit} ({b})"),
        None => format!("{size} {unit}"),
    };
    let why = if below {
        Some(format!("{} too few", min.unwrap_or(0) - size))
    } else if above {
        Some(format!("{} too many", size - max.unwrap_or(0)))
    } else {
        None
    };
    Some(json!({ "text": text, "out": below || above, "why": why }))
}

/// The items of a list of plain values (tags, categories) as text; `None` for anything else.
fn words(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::Null => Some(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// A list field's proposal as chips: what the record held is `kept` (our writes merge lists: the
/// WooCommerce, Zendesk, Freshdesk and Help Scout connectors add tags and never drop one), what the
/// proposal adds is `added` (compared without case, as the platforms do). `None` unless both sides
/// are lists of plain values.
pub(super) fn chips(before: &Value, value: &Value) -> Option<Vec<Value>> {
    let (before, after) = (words(before)?, words(value)?);
    if after.is_empty() && before.is_empty() {
        return None;
    }
    let known: Vec<String> = before.iter().map(|w| w.to_lowercase()).collect();
    let mut out: Vec<Value> = before.iter().map(|w| json!({ "text": w, "mark": "kept" })).collect();
    let mut added: Vec<String> = Vec::new();
    for w in after {
        let lower = w.to_lowercase();
        if !known.contains(&lower) && !added.contains(&lower) {
            out.push(json!({ "text": w, "mark": "added" }));
            added.push(lower);
        }
    }
    Some(out)
}

/// A restore of a list field as chips: what our write added and the revert takes away is
/// `removed`, what goes back or stays is `kept`. `None` unless both sides are lists of plain values.
pub(super) fn restore_chips(now: &Value, back: &Value) -> Option<Vec<Value>> {
    let (now, back) = (words(now)?, words(back)?);
    let kept: Vec<String> = back.iter().map(|w| w.to_lowercase()).collect();
    let mut out: Vec<Value> = back.iter().map(|w| json!({ "text": w, "mark": "kept" })).collect();
    out.extend(
        now.iter().filter(|w| !kept.contains(&w.to_lowercase())).map(|w| json!({ "text": w, "mark": "removed" })),
    );
    Some(out)
}

/// What the page says under a list field's chips, for the fields our writes merge.
pub(super) fn merge_note(field: &str) -> Option<String> {
    matches!(field, "tags" | "categories")
        .then(|| format!("Existing {field} stay: approving adds the new ones and removes none."))
}

/// One fact of the record as pulled, for the facts table: its label and raw name, and the value as
/// `kind` says to show it: `empty`, `text` (short), `long` (folded), `html` (rendered, sanitised),
/// `chips` (a list of plain values), `table` (a list of flat objects), `pairs` (a flat object) or
/// `json`.
pub(super) fn fact(task: Option<&Task>, name: &str, value: &Value, html: bool) -> Value {
    let mut out = json!({ "name": name, "label": label(task, name) });
    let shown = match value {
        Value::Null => json!({ "kind": "empty" }),
        Value::String(s) if s.trim().is_empty() => json!({ "kind": "empty" }),
        Value::String(s) if html => {
            json!({ "kind": "html", "html": rendered(s), "source": s, "fold": s.chars().count() > FOLD_CHARS })
        }
        Value::String(s) if s.chars().count() > FOLD_CHARS || s.lines().count() > 3 => {
            let head: String = s.chars().take(120).collect();
            json!({ "kind": "long", "head": format!("{}…", head.trim_end()), "text": s })
        }
        Value::String(s) => json!({ "kind": "text", "text": s }),
        Value::Number(_) | Value::Bool(_) => json!({ "kind": "text", "text": value.to_string() }),
        Value::Array(a) if a.is_empty() => json!({ "kind": "empty" }),
        Value::Object(o) if o.is_empty() => json!({ "kind": "empty" }),
        Value::Array(a) if named_values(a).is_some() => {
            let pairs: Vec<Value> =
                named_values(a).unwrap_or_default().into_iter().map(|(k, v)| json!({ "key": k, "value": v })).collect();
            json!({ "kind": "pairs", "pairs": pairs })
        }
        Value::Array(_) => match (words(value), super::pages::rows_table(value)) {
            (Some(items), _) => json!({ "kind": "chips", "items": items }),
            (None, Some(table)) => json!({ "kind": "table", "table": table }),
            (None, None) => json!({ "kind": "json", "text": pretty(value) }),
        },
        Value::Object(o) if o.values().all(|v| !v.is_object() && !v.is_array()) => {
            let pairs: Vec<Value> = o
                .iter()
                .map(|(k, v)| json!({ "key": humanised(k), "value": v.as_str().map_or_else(|| v.to_string(), str::to_owned) }))
                .collect();
            json!({ "kind": "pairs", "pairs": pairs })
        }
        Value::Object(_) => json!({ "kind": "json", "text": pretty(value) }),
    };
    if let (Some(out), Some(shown)) = (out.as_object_mut(), shown.as_object()) {
        out.extend(shown.clone());
    }
    out
}

/// A list of named values as (name, value) pairs: WooCommerce `attributes` (`{name, options: [..]}`,
/// read "Material: Stainless steel, Brass") and `meta_data` (`{key, value}`). `None` unless every
/// element has a text `name` or `key` and a value that is text, a number or a list of those.
fn named_values(list: &[Value]) -> Option<Vec<(String, String)>> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        _ => None,
    };
    list.iter()
        .map(|element| {
            let o = element.as_object()?;
            let name = ["name", "key"].iter().find_map(|k| o.get(*k).and_then(Value::as_str))?;
            let value = ["options", "option", "value", "values"].iter().find_map(|k| o.get(*k))?;
            let text = match value {
                Value::Array(items) => items.iter().map(scalar).collect::<Option<Vec<_>>>()?.join(", "),
                other => scalar(other)?,
            };
            Some((name.to_owned(), text))
        })
        .collect()
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("JSON values serialise")
}

/// The record's picture for the page's header: the first image's `src` (WooCommerce's `images`),
/// when it is an `https://` address (the page's CSP allows images from `'self'` and `https:` only).
pub(super) fn thumbnail(input: &Map<String, Value>) -> Option<String> {
    let src = input.get("images")?.as_array()?.first()?.get("src")?.as_str()?;
    (src.starts_with("https://") && !src.chars().any(|c| c.is_whitespace() || c.is_control())).then(|| src.to_owned())
}

/// Who undid the item's write, when, how it ended and what the platform held afterwards (the
/// revert's read-back, kept in its event): for items that are `reverted`, `partially_reverted` or
/// `revert_conflict`. `None` for other items.
pub(super) fn reverted(
    events: &[EventRecord],
    task: Option<&Task>,
    html: &dyn Fn(&str) -> bool,
    when: &dyn Fn(i64) -> String,
) -> Option<Value> {
    let event = events
        .iter()
        .rev()
        .find(|e| matches!(e.to_state.as_deref(), Some("reverted" | "partially_reverted" | "revert_conflict")))?;
    let state = event.to_state.as_deref().unwrap_or_default();
    let detail = event.detail.clone().unwrap_or(Value::Null);
    let outcome = match state {
        "reverted" => "Reverted: the values our write replaced are back on the platform.",
        "partially_reverted" => "Partially reverted: part of our write is still on the platform.",
        _ => "Not reverted: the record was edited on the platform since our write, so nothing was written.",
    };
    let now: Vec<Value> = detail
        .get("now")
        .and_then(Value::as_object)
        .map(|now| {
            now.iter()
                .map(|(field, value)| {
                    let mut shown = fact(task, field, value, html(field.as_str()));
                    shown["field"] = json!(field);
                    shown
                })
                .collect()
        })
        .unwrap_or_default();
    Some(json!({
        "state": state,
        "outcome": outcome,
        "actor": event.actor,
        "at": when(event.at),
        "at_iso": chrono::DateTime::from_timestamp_millis(event.at).map(|t| t.to_rfc3339()).unwrap_or_default(),
        "reason": detail.get("reason").and_then(Value::as_str),
        "now": now,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_read_as_words() {
        assert_eq!(humanised("seo_description"), "SEO description");
        assert_eq!(humanised("images[].alt"), "Images alt");
        assert_eq!(humanised("custom.Category"), "Category");
        assert_eq!(humanised("regular_price"), "Regular price");
        assert_eq!(humanised("sku"), "SKU");
        assert_eq!(humanised("meta._supplier_ref"), "Meta supplier ref");
    }

    #[test]
    fn counts_are_visible_characters_against_the_bounds() {
        let check = FieldCheck { min_chars: Some(10), max_chars: Some(20), ..Default::default() };
        let ok = count(&json!("<p>Twelve chars</p>"), Some(&check)).unwrap();
        assert_eq!(ok["text"], "12 characters (10–20)");
        assert_eq!(ok["out"], false);
        let long = count(&json!("x".repeat(25)), Some(&check)).unwrap();
        assert_eq!((long["out"].clone(), long["why"].clone()), (json!(true), json!("5 too many")));
        let tags = FieldCheck { min_items: Some(3), ..Default::default() };
        let few = count(&json!(["a"]), Some(&tags)).unwrap();
        assert_eq!((few["text"].clone(), few["out"].clone()), (json!("1 item (at least 3)"), json!(true)));
        assert_eq!(count(&json!(4), None), None);
    }

    #[test]
    fn list_fields_are_chips_marked_kept_and_added() {
        let marks = |c: Vec<Value>| -> Vec<(String, String)> {
            c.iter().map(|c| (c["text"].as_str().unwrap().into(), c["mark"].as_str().unwrap().into())).collect()
        };
        let c = chips(&json!(["Bolts", "m8"]), &json!(["bolts", "zinc", "M8", "Zinc"])).unwrap();
        assert_eq!(
            marks(c),
            [("Bolts".into(), "kept".into()), ("m8".into(), "kept".into()), ("zinc".into(), "added".into())]
        );
        assert!(chips(&json!("text"), &json!(["a"])).is_none());
        let r = restore_chips(&json!(["bolts", "zinc"]), &json!(["bolts"])).unwrap();
        assert_eq!(marks(r), [("bolts".into(), "kept".into()), ("zinc".into(), "removed".into())]);
    }

    #[test]
    fn rendered_html_keeps_structure_and_drops_script() {
        let html = rendered(
            "<ul><li>One</li></ul><strong>Two</strong><script>window.x=1</script>\
             <img src=x onerror=alert(1)><a href=\"javascript:alert(2)\">three</a>",
        );
        assert!(html.contains("<ul><li>One</li></ul><strong>Two</strong>"), "{html}");
        for gone in ["script", "img", "onerror", "javascript:", "window.x"] {
            assert!(!html.contains(gone), "{gone} in {html}");
        }
    }

    #[test]
    fn facts_are_shown_by_kind() {
        assert_eq!(fact(None, "sku", &json!("B-1"), false)["kind"], "text");
        assert_eq!(fact(None, "tags", &json!(["a", "b"]), false)["kind"], "chips");
        assert_eq!(fact(None, "images", &json!([{"id": 1, "src": "https://x/y.jpg"}]), false)["kind"], "table");
        assert_eq!(fact(None, "dimensions", &json!({"length": "1"}), false)["kind"], "pairs");
        assert_eq!(fact(None, "description", &json!(""), true)["kind"], "empty");
        let html = fact(None, "description", &json!("<p>Hi<script>x()</script></p>"), true);
        assert_eq!((html["kind"].clone(), html["html"].clone()), (json!("html"), json!("<p>Hi</p>")));
        assert_eq!(fact(None, "notes", &json!("x".repeat(300)), false)["kind"], "long");
        let attributes = json!([
            {"id": 1, "name": "Material", "position": 0, "visible": true, "options": ["Steel", "Brass"]},
            {"id": 2, "name": "Size", "options": ["6x80mm"]}
        ]);
        let shown = fact(None, "attributes", &attributes, false);
        assert_eq!(shown["kind"], "pairs");
        assert_eq!(shown["pairs"][0], json!({"key": "Material", "value": "Steel, Brass"}));
        let meta = fact(None, "meta_data", &json!([{"id": 7, "key": "_yoast_wpseo_title", "value": "T"}]), false);
        assert_eq!(meta["pairs"][0], json!({"key": "_yoast_wpseo_title", "value": "T"}));
        // A value that is itself an object keeps the JSON view.
        assert_eq!(fact(None, "meta_data", &json!([{"key": "k", "value": {"a": 1}}]), false)["kind"], "json");
    }

    #[test]
    fn only_https_thumbnails() {
        let input = |src: &str| json!({"images": [{"id": 1, "src": src}]}).as_object().unwrap().clone();
        assert_eq!(thumbnail(&input("https://shop.example/a.jpg")).as_deref(), Some("https://shop.example/a.jpg"));
        assert_eq!(thumbnail(&input("http://shop.example/a.jpg")), None);
        assert_eq!(thumbnail(&input("javascript:alert(1)")), None);
    }
}
