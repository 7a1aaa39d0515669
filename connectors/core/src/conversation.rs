//! Helpdesk conversations as a model sees them: every message, newest last, cut to a character
//! budget that keeps the first message (what the customer asked) and the latest ones (where it
//! stands now). Shared by the helpdesk connectors.

/// Fits messages into `budget` characters: the first message always (cut if it alone is too long),
/// then as many of the latest as fit, with a marker where messages were left out.
pub fn fit_conversation(messages: &[String], budget: usize) -> String {
    let total: usize = messages.iter().map(|m| m.chars().count() + 2).sum();
    if total <= budget || messages.len() <= 1 {
        let joined = messages.join("\n\n");
        return cut(&joined, budget);
    }
    let first = cut(&messages[0], budget / 2);
    let mut used = first.chars().count() + 2;
    let mut latest = Vec::new();
    for message in messages[1..].iter().rev() {
        let len = message.chars().count() + 2;
        if used + len + 40 > budget {
            break;
        }
        used += len;
        latest.push(message.as_str());
    }
    latest.reverse();
    let omitted = messages.len() - 1 - latest.len();
    let mut out = first;
    if omitted > 0 {
        out.push_str(&format!("\n\n[… {omitted} message(s) left out …]"));
    }
    for message in latest {
        out.push_str("\n\n");
        out.push_str(message);
    }
    out
}

/// `text` cut to `budget` characters, an ellipsis marking the cut.
pub fn cut(text: &str, budget: usize) -> String {
    match text.char_indices().nth(budget.saturating_sub(1)) {
        Some((at, _)) if text.chars().count() > budget => format!("{}…", &text[..at]),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_conversation_keeps_the_first_and_the_latest_messages() {
        let messages: Vec<String> = (0..20).map(|i| format!("message {i} {}", "x".repeat(100))).collect();
        let fitted = fit_conversation(&messages, 600);
        assert!(fitted.chars().count() <= 600, "{}", fitted.chars().count());
        assert!(fitted.starts_with("message 0 "));
        assert!(fitted.contains("message 19 "), "the latest message is kept");
        assert!(fitted.contains("left out"));
        assert!(!fitted.contains("message 5 "));
        let short = fit_conversation(&messages[..2], 6000);
        assert_eq!(short, format!("{}\n\n{}", messages[0], messages[1]));
    }
}
