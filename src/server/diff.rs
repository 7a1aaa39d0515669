//! A word-level diff between the value seen at pull time and the proposed one, for the review page.

use serde::Serialize;

/// One run of text on one side of the diff: `same`, `del` (only before) or `ins` (only after).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Segment {
    pub op: &'static str,
    pub text: String,
}

/// Above this many tokens on a side the diff is not computed (it is quadratic): the whole before is
/// shown as removed and the whole after as added.
const MAX_TOKENS: usize = 3000;

/// The two sides of the diff of `before` → `after`: segments for the before column (`same`/`del`)
/// and for the after column (`same`/`ins`).
pub fn sides(before: &str, after: &str) -> (Vec<Segment>, Vec<Segment>) {
    let (a, b) = (tokens(before), tokens(after));
    if a.len() > MAX_TOKENS || b.len() > MAX_TOKENS {
        return (whole("del", before), whole("ins", after));
    }
    // Longest common subsequence table, from the end.
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[at(i, j)] =
                if a[i] == b[j] { lcs[at(i + 1, j + 1)] + 1 } else { lcs[at(i + 1, j)].max(lcs[at(i, j + 1)]) };
        }
    }
    let (mut left, mut right) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            push(&mut left, "same", a[i]);
            push(&mut right, "same", b[j]);
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[at(i, j + 1)] >= lcs[at(i + 1, j)]) {
            push(&mut right, "ins", b[j]);
            j += 1;
        } else {
            push(&mut left, "del", a[i]);
            i += 1;
        }
    }
    (left, right)
}

fn whole(op: &'static str, text: &str) -> Vec<Segment> {
    if text.is_empty() { Vec::new() } else { vec![Segment { op, text: text.to_owned() }] }
}

fn push(out: &mut Vec<Segment>, op: &'static str, text: &str) {
    match out.last_mut() {
        Some(last) if last.op == op => last.text.push_str(text),
        _ => out.push(Segment { op, text: text.to_owned() }),
    }
}

/// Words and the whitespace between them, as separate tokens, so joining them gives the text back.
fn tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_space = None;
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        if in_space.is_some_and(|s| s != space) {
            out.push(&text[start..i]);
            start = i;
        }
        in_space = Some(space);
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(segments: &[Segment]) -> String {
        segments.iter().map(|s| s.text.as_str()).collect()
    }

    #[test]
    fn sides_rebuild_both_texts() {
        let (l, r) = sides("a quick brown fox", "a slow brown dog jumps");
        assert_eq!(join(&l), "a quick brown fox");
        assert_eq!(join(&r), "a slow brown dog jumps");
        assert!(l.iter().any(|s| s.op == "del" && s.text.contains("quick")));
        assert!(r.iter().any(|s| s.op == "ins" && s.text.contains("slow")));
        assert!(r.iter().any(|s| s.op == "same" && s.text.contains("brown")));
    }

    #[test]
    fn empty_before_is_all_inserted() {
        let (l, r) = sides("", "<p>New text</p>");
        assert!(l.is_empty());
        assert_eq!(r, vec![Segment { op: "ins", text: "<p>New text</p>".into() }]);
    }

    #[test]
    fn huge_values_fall_back_to_whole() {
        let big = "w ".repeat(MAX_TOKENS);
        let (l, r) = sides(&big, "x");
        assert_eq!(l.len(), 1);
        assert_eq!(r[0].op, "ins");
    }
}
