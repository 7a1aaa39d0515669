//! Reading the prompts the provider sandbox recorded (`ProviderSandbox::record_requests`).

use serde_json::Value;

/// The user message of a recorded OpenAI Chat Completions request body: its text, or its text
/// parts joined when it carries documents.
pub fn user_message(body: &Value) -> String {
    let message = body["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["role"] == "user"))
        .unwrap_or_else(|| panic!("no user message in {body}"));
    match &message["content"] {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n"),
        other => panic!("unexpected content {other}"),
    }
}

/// What a prompt holds between `<tag>` and `</tag>` (each on a line of its own), exactly once.
pub fn fenced(user: &str, tag: &str) -> String {
    let open = format!("<{tag}>\n");
    let close = format!("\n</{tag}>");
    assert_eq!(user.matches(&open).count(), 1, "one <{tag}> fence in {user}");
    assert_eq!(user.matches(&close).count(), 1, "one </{tag}> in {user}");
    let start = user.find(&open).unwrap() + open.len();
    let end = user.find(&close).unwrap();
    user[start..end].to_owned()
}

/// The previous answer and the reviewer's note a regeneration prompt carries, read back from their
/// fences (both JSON).
pub fn revision(user: &str) -> (Value, String) {
    let answer = serde_json::from_str(&fenced(user, "previous_answer")).expect("the previous answer is JSON");
    let note = serde_json::from_str(&fenced(user, "reviewer_note")).expect("the note is a JSON string");
    (answer, note)
}
