//! A helpdesk conversation as the review UI shows it: the `conversation` field the helpdesk
//! connectors pull (Zendesk, Freshdesk, Help Scout) is text blocks joined by blank lines, newest last,
//! each opened by a header line naming its time and author, e.g.
//!
//! ```text
//! [2026-01-05T10:00:00Z end-user, public]
//! My card was charged twice.
//!
//! [… 3 message(s) left out …]
//!
//! [2026-01-05T10:30:00Z agent, private note]
//! Escalating to billing.
//! ```
//!
//! Headers: Zendesk `[TIME ROLE, public|private note]` (ROLE a user role: end-user, agent, admin),
//! Freshdesk `[TIME customer|agent, public|private note]`, Help Scout `[TIME customer]`,
//! `[TIME agent reply]`, `[TIME agent note, private]`. A header counts only at the start of the text
//! or after a blank line, and only with a time that parses; anything else is message text. Text is
//! returned as text: the templates escape it.

use serde::Serialize;

/// One block of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// `customer`, `agent`, or the role as the platform named it when it is neither.
    pub author: String,
    /// The author's role as the header gave it (`end-user`, `agent reply`…).
    pub role: String,
    /// A private (internal) note rather than a message the customer sees.
    pub private: bool,
    /// The time as written in the header (RFC 3339).
    pub at: String,
    /// The time for people: `2026-01-05 10:00 UTC`.
    pub at_text: String,
    pub text: String,
    /// A marker that messages were left out here (`text` says how many); no author or time.
    pub gap: bool,
}

/// The messages of `conversation`, oldest first, or `None` when it does not open with a message
/// header (it is not in the connectors' format, and is shown as plain text instead).
pub fn parse(conversation: &str) -> Option<Vec<Message>> {
    let mut messages: Vec<Message> = Vec::new();
    let mut previous_blank = true;
    for line in conversation.lines() {
        let starts_block = previous_blank;
        previous_blank = line.trim().is_empty();
        if starts_block {
            if let Some(gap) = gap_marker(line) {
                messages.push(Message {
                    author: String::new(),
                    role: String::new(),
                    private: false,
                    at: String::new(),
                    at_text: String::new(),
                    text: gap,
                    gap: true,
                });
                continue;
            }
            if let Some(message) = header(line) {
                messages.push(message);
                continue;
            }
        }
        let last = messages.last_mut()?;
        if last.gap && line.trim().is_empty() {
            continue;
        }
        if last.gap {
            // Text after a marker without a header of its own: not the connectors' format.
            return None;
        }
        if !last.text.is_empty() || !line.trim().is_empty() {
            last.text.push_str(line);
            last.text.push('\n');
        }
    }
    for m in &mut messages {
        m.text = m.text.trim_end().to_owned();
    }
    (!messages.is_empty() && messages.iter().any(|m| !m.gap)).then_some(messages)
}

/// `[… N message(s) left out …]` → its text without the brackets.
fn gap_marker(line: &str) -> Option<String> {
    let inner = line.trim().strip_prefix('[')?.strip_suffix(']')?;
    inner.contains("left out").then(|| inner.trim_matches(|c: char| c == '…' || c.is_whitespace()).to_owned())
}

/// A header line `[TIME DESCRIPTION]` → an empty message of that author and time.
fn header(line: &str) -> Option<Message> {
    let inner = line.trim_end().strip_prefix('[')?.strip_suffix(']')?;
    let (at, description) = inner.split_once(' ')?;
    let time = chrono::DateTime::parse_from_rfc3339(at).ok()?;
    let description = description.trim();
    if description.is_empty() || description.contains(['[', ']']) {
        return None;
    }
    let (role, visibility) = match description.split_once(',') {
        Some((role, visibility)) => (role.trim(), visibility.trim()),
        None => (description, ""),
    };
    let lower = role.to_lowercase();
    let author = if lower == "end-user" || lower.starts_with("customer") || lower == "end user" {
        "customer"
    } else if lower.starts_with("agent") || lower == "admin" {
        "agent"
    } else {
        role
    };
    Some(Message {
        author: author.to_owned(),
        role: role.to_owned(),
        private: visibility.contains("private") || lower.contains("note"),
        at: at.to_owned(),
        at_text: time.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M UTC").to_string(),
        text: String::new(),
        gap: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zendesk_blocks_with_roles_times_and_a_gap() {
        let text = "[2026-01-05T10:00:00Z end-user, public]\nMy card was charged twice.\n\nSecond paragraph.\n\n\
                    [… 3 message(s) left out …]\n\n[2026-01-05T10:30:00Z agent, private note]\nEscalating.";
        let m = parse(text).unwrap();
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!((m[0].author.as_str(), m[0].role.as_str(), m[0].private), ("customer", "end-user", false));
        assert_eq!(m[0].text, "My card was charged twice.\n\nSecond paragraph.");
        assert_eq!(m[0].at_text, "2026-01-05 10:00 UTC");
        assert!(m[1].gap);
        assert_eq!(m[1].text, "3 message(s) left out");
        assert_eq!((m[2].author.as_str(), m[2].private, m[2].text.as_str()), ("agent", true, "Escalating."));
    }

    #[test]
    fn freshdesk_and_help_scout_headers() {
        let fd = parse("[2026-01-05T10:00:00Z customer, public]\nHi\n\n[2026-01-05T11:00:00Z agent, public]\nHello")
            .unwrap();
        assert_eq!(fd.iter().map(|m| m.author.as_str()).collect::<Vec<_>>(), ["customer", "agent"]);
        let hs = parse(
            "[2026-01-05T10:00:00Z customer]\nHi\n\n[2026-01-05T11:00:00Z agent reply]\nHello\n\n\
             [2026-01-05T12:00:00Z agent note, private]\nNote",
        )
        .unwrap();
        let who: Vec<(&str, bool)> = hs.iter().map(|m| (m.author.as_str(), m.private)).collect();
        assert_eq!(who, [("customer", false), ("agent", false), ("agent", true)]);
    }

    #[test]
    fn a_header_inside_a_message_or_without_a_time_is_text() {
        let m = parse("[2026-01-05T10:00:00Z end-user, public]\nline\n[2026-01-05T10:01:00Z agent, public]\nforged")
            .unwrap();
        assert_eq!(m.len(), 1, "a header line needs a blank line before it");
        assert!(m[0].text.contains("forged"));
        assert!(parse("just some text\n\n[2026-01-05T10:00:00Z agent, public]\nx").is_none());
        assert!(parse("[yesterday agent, public]\nx").is_none());
        assert!(parse("").is_none());
    }
}
