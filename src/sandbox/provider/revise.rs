//! The simulated model honouring a reviewer's note when a proposal is regenerated (the prompt of
//! `crate::task::Task::render_revision`), so a regeneration visibly differs from the first answer.
//! Deterministic, like every sandbox answer: the same answer and note give the same revision. Like a
//! model, it revises the answer it was shown (a reviewer's edit included) where that has the text:
//!
//! - "shorter" (or "short", "brief", "concise"): each text keeps its first paragraph (HTML), else its
//!   sentences (or clauses) within two thirds of its length — never below the schema's `minLength`;
//! - "mention X" (clauses split at commas, semicolons and "and"): each text that is prose (ends a
//!   sentence or a paragraph; not a title) gets a sentence about X — the record's attribute of that
//!   name when it has one ("Material: stainless steel."), else "X: not stated in the record." —
//!   where the schema's `maxLength` leaves room.

use serde_json::{Map, Value};

/// The reviewer's note in a regeneration prompt (the JSON string in its `<reviewer_note>` fence).
pub(crate) fn note_in(user: &str) -> Option<String> {
    let start = user.find("<reviewer_note>\n")? + "<reviewer_note>\n".len();
    let line = user[start..].lines().next()?;
    serde_json::from_str(line).ok()
}

/// The previous answer in a regeneration prompt (the JSON object in its `<previous_answer>` fence).
pub(crate) fn previous_in(user: &str) -> Option<Map<String, Value>> {
    let start = user.find("<previous_answer>\n")? + "<previous_answer>\n".len();
    let end = start + user[start..].find("\n</previous_answer>")?;
    match serde_json::from_str(&user[start..end]) {
        Ok(Value::Object(previous)) => Some(previous),
        _ => None,
    }
}

/// Revises `answer` (to `schema`) as `note` asks, starting from the `previous` answer's text where
/// it has some, and reading facts from `record` when there is one.
pub(crate) fn revise(
    answer: &mut Value,
    schema: &Value,
    note: &str,
    previous: Option<&Map<String, Value>>,
    record: Option<&Map<String, Value>>,
) {
    let note = note.to_lowercase();
    let shorter =
        note.split(|c: char| !c.is_alphanumeric()).any(|w| ["shorter", "short", "brief", "concise"].contains(&w));
    let mentions: Vec<String> = note
        .split([',', ';', '.', '\n'])
        .flat_map(|clause| clause.split(" and "))
        .filter_map(|clause| clause.trim().strip_prefix("mention "))
        .map(|what| what.trim().trim_start_matches("the ").trim().to_owned())
        .filter(|what| !what.is_empty())
        .collect();
    let Some(properties) = schema["properties"].as_object() else { return };
    let Some(out) = answer.as_object_mut() else { return };
    for (name, sub) in properties {
        if sub.get("enum").is_some() || name == "language" {
            continue;
        }
        let Some(Value::String(text)) = out.get_mut(name) else { continue };
        if let Some(Value::String(before)) = previous.and_then(|p| p.get(name)) {
            text.clone_from(before);
        }
        let min = sub["minLength"].as_u64().unwrap_or(0) as usize;
        let max = sub["maxLength"].as_u64().map_or(usize::MAX, |m| m as usize);
        if shorter {
            let short = shorten(text);
            if short.chars().count() >= min {
                *text = short;
            }
        }
        if !is_prose(text) {
            continue;
        }
        for what in &mentions {
            let sentence = mention(what, record);
            let longer = append(text, &sentence);
            if longer.chars().count() <= max {
                *text = longer;
            }
        }
    }
}

/// The first paragraph of HTML text; one paragraph or plain text cut after its last sentence (else
/// clause) within two thirds of its length; the text itself when it has no such place.
fn shorten(text: &str) -> String {
    if let Some(end) = text.find("</p>")
        && end + 4 < text.trim_end().len()
    {
        return text[..end + 4].to_owned();
    }
    if let Some(inner) = text.trim().strip_prefix("<p>").and_then(|t| t.strip_suffix("</p>")) {
        return format!("<p>{}</p>", shorten_prose(inner));
    }
    shorten_prose(text)
}

fn shorten_prose(text: &str) -> String {
    let limit = text.len() * 2 / 3;
    for separator in [". ", ", "] {
        if let Some(at) = text.match_indices(separator).map(|(i, _)| i).filter(|i| *i > 0 && *i <= limit).last() {
            return format!("{}.", &text[..at]);
        }
    }
    text.to_owned()
}

/// Whether `text` reads as prose a sentence can be added to (not a title or a code).
fn is_prose(text: &str) -> bool {
    let text = text.trim_end();
    text.ends_with(['.', '!', '?']) || text.ends_with("</p>") || text.ends_with("</ul>")
}

/// "Material: stainless steel." from the record's attribute named `what`, else a sentence saying the
/// record does not state it.
fn mention(what: &str, record: Option<&Map<String, Value>>) -> String {
    let label = {
        let mut chars = what.chars();
        chars.next().map(|c| c.to_uppercase().chain(chars).collect::<String>()).unwrap_or_default()
    };
    let singular = what.strip_suffix('s').unwrap_or(what);
    let value = record.and_then(|r| r.get("attributes")).and_then(Value::as_array).and_then(|attributes| {
        attributes.iter().find_map(|a| {
            let name = a.get("name")?.as_str()?.to_lowercase();
            if name != what && name != singular {
                return None;
            }
            let values: Vec<&str> = match (a.get("options"), a.get("option")) {
                (Some(Value::Array(options)), _) => options.iter().filter_map(Value::as_str).collect(),
                (_, Some(Value::String(option))) => vec![option.as_str()],
                _ => Vec::new(),
            };
            (!values.is_empty()).then(|| values.join(", ").to_lowercase())
        })
    });
    match value {
        Some(v) => format!("{label}: {v}."),
        None => format!("{label}: not stated in the record."),
    }
}

/// `text` with `sentence` added: as a paragraph of its own after HTML, else after a space.
fn append(text: &str, sentence: &str) -> String {
    let trimmed = text.trim_end();
    if trimmed.ends_with("</p>") || trimmed.ends_with("</ul>") {
        let escaped = sentence.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        format!("{trimmed}\n<p>{escaped}</p>")
    } else {
        format!("{trimmed} {sentence}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_note_makes_the_answer_shorter_and_mentions_what_it_asks_for() {
        let schema = json!({"type": "object", "properties": {
            "description": {"type": "string", "minLength": 20},
            "seo_title": {"type": "string", "maxLength": 30},
            "priority": {"enum": ["low", "high"]},
        }});
        let record = json!({"attributes": [{"name": "Material", "options": ["Stainless steel"]}]});
        let mut answer = json!({
            "description": "<p>The hinge comes from our range.</p>\n<p>Price 4.20.</p>\n<ul><li>SKU: H-1</li></ul>",
            "seo_title": "Hinge 100mm | Hinges",
            "priority": "low",
        });
        revise(&mut answer, &schema, "Shorter, and mention the material", None, record.as_object());
        assert_eq!(answer["description"], "<p>The hinge comes from our range.</p>\n<p>Material: stainless steel.</p>");
        assert_eq!(answer["seo_title"], "Hinge 100mm | Hinges", "a title: no sentence to cut or to add");
        let mut short =
            json!({"description": "<p>Hinge 100 mm: hinges in stainless steel, ready to ship from stock.</p>"});
        revise(&mut short, &schema, "shorter", None, None);
        assert_eq!(short["description"], "<p>Hinge 100 mm: hinges in stainless steel.</p>", "cut at a clause");
        let mut sentences = json!({"description": "Buy the hinge at 4.20. Full specifications. Easy returns."});
        revise(&mut sentences, &schema, "brief", None, None);
        assert_eq!(sentences["description"], "Buy the hinge at 4.20.");
        assert_eq!(answer["priority"], "low");
        let mut plain = json!({"description": "description for Product 7: write its description."});
        let edited = json!({"description": "<p>Edited by a reviewer, long enough.</p>"});
        revise(&mut plain, &schema, "mention the colour", edited.as_object(), None);
        assert_eq!(
            plain["description"], "<p>Edited by a reviewer, long enough.</p>\n<p>Colour: not stated in the record.</p>",
            "the answer shown is the one revised"
        );
    }

    #[test]
    fn the_note_is_read_from_its_fence() {
        let user = "Write.\n<previous_answer>\n{}\n</previous_answer>\n<reviewer_note>\n\"shorter <\\/reviewer_note>\"\n</reviewer_note>";
        assert_eq!(note_in(user).as_deref(), Some("shorter </reviewer_note>"));
        assert_eq!(note_in("Write."), None);
        let previous = previous_in(user).unwrap();
        assert!(previous.is_empty());
    }
}
