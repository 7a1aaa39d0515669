//! The simulated model as a classifier with a known error pattern, for testing `enrichd eval`.
//!
//! With a [`Classifier`] set ([`super::ProviderSandbox::classify`]), every record in a prompt (the
//! fenced `<record entity=… id="…">` block; in a packed prompt, one per `<item>` block) is answered
//! like this, and only like this:
//!
//! 1. Every property of the answer schema first gets the plain sandbox answer (see
//!    [`super::answer_for`]: an enum's first value, `"<property> for <subject>"` for strings, …).
//! 2. **Clues** — for each property in [`Classifier::clues`], the value of the first clue whose
//!    needle occurs in the record's data (the JSON between the record tags, as sent). A model that
//!    reads the SKU prefix, say. No clue found: the plain answer stays.
//! 3. **Error rules** — the first rule of [`Classifier::rules`] whose buckets hold the record's id
//!    applies: each property it names is answered with the rule's (wrong) value instead, and the
//!    confidence property gets the rule's confidence. A record no rule holds gets
//!    [`Classifier::confidence`].
//!
//! A record's bucket is [`bucket`]: the 64-bit FNV-1a hash of the id's UTF-8 bytes, modulo the
//! rule's `modulus`. So a test knows, from the records' ids and fields alone, exactly what the model
//! will answer for each record.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// A classification answer key with a deterministic error pattern (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct Classifier {
    /// Answer property → `(needle, value)` clues, tried in order against the record's data.
    pub clues: BTreeMap<String, Vec<(String, Value)>>,
    /// The answer property that carries the confidence (e.g. `confidence`); none when empty.
    pub confidence_property: String,
    /// The confidence of answers no rule holds.
    pub confidence: f64,
    /// Tried in order; the first whose buckets hold the record's id applies.
    pub rules: Vec<ErrorRule>,
}

/// Answers for the records whose id falls in one of `buckets` (of `modulus`).
#[derive(Debug, Clone, Default)]
pub struct ErrorRule {
    pub modulus: u64,
    pub buckets: Vec<u64>,
    /// Answer property → the value given instead of the clue's (properties not named keep it).
    pub answers: BTreeMap<String, Value>,
    pub confidence: f64,
}

/// The bucket of record `id` among `modulus`: FNV-1a (64-bit) of the id's bytes, modulo `modulus`.
pub fn bucket(id: &str, modulus: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash % modulus.max(1)
}

impl Classifier {
    /// The answer for one record: `data` is the record's JSON as sent, `id` its id.
    fn answer_record(&self, schema: &Value, subject: &str, id: &str, data: &str) -> Value {
        let mut answer = super::answer_for(schema, subject, "answer");
        let Some(map) = answer.as_object_mut() else { return answer };
        for (property, clues) in &self.clues {
            if let Some((_, value)) = clues.iter().find(|(needle, _)| data.contains(needle.as_str())) {
                map.insert(property.clone(), value.clone());
            }
        }
        let rule = self.rules.iter().find(|r| r.buckets.contains(&bucket(id, r.modulus)));
        if let Some(rule) = rule {
            for (property, value) in &rule.answers {
                map.insert(property.clone(), value.clone());
            }
        }
        if !self.confidence_property.is_empty() {
            map.insert(self.confidence_property.clone(), json!(rule.map_or(self.confidence, |r| r.confidence)));
        }
        answer
    }

    /// The answer to a whole prompt under `schema`: packed (`{items: [{id, …}]}`) or not.
    pub(crate) fn answer(&self, schema: &Value, user: &str) -> Value {
        if super::is_packed(schema) {
            let item_schema = &schema["properties"]["items"]["items"];
            let items: Vec<Value> = item_blocks(user)
                .into_iter()
                .map(|(id, block)| {
                    let (_, data) = record_block(block).unwrap_or((id.clone(), ""));
                    let mut answer = self.answer_record(item_schema, &super::subject_of(block), &id, data);
                    answer["id"] = json!(id);
                    answer
                })
                .collect();
            return json!({ "items": items });
        }
        let (id, data) = record_block(user).unwrap_or_default();
        self.answer_record(schema, &super::subject_of(user), &id, data)
    }
}

/// The `<item id="…">` blocks of a packed prompt: each id with the text of its block.
fn item_blocks(user: &str) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    let mut rest = user;
    while let Some(at) = rest.find("<item id=\"") {
        rest = &rest[at + "<item id=\"".len()..];
        let Some(end) = rest.find('"') else { break };
        let id = rest[..end].to_owned();
        let body = rest[end..].split_once('\n').map(|(_, b)| b).unwrap_or_default();
        let block = body.find("\n</item>").map_or(body, |e| &body[..e]);
        out.push((id, block));
    }
    out
}

/// The id attribute and the data of the first `<record …>` block in `text`.
fn record_block(text: &str) -> Option<(String, &str)> {
    let start = text.find("<record ")?;
    let head_end = start + text[start..].find('>')?;
    let head = &text[start..head_end];
    let id = head.split("id=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or_default().to_owned();
    let body = &text[head_end + 1..];
    let end = body.find("</record>").unwrap_or(body.len());
    Some((id, &body[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classifier() -> Classifier {
        Classifier {
            clues: [(
                "category".to_owned(),
                vec![("\"FAS-".to_owned(), json!("Fasteners")), ("\"HT-".to_owned(), json!("Hand Tools"))],
            )]
            .into(),
            confidence_property: "confidence".into(),
            confidence: 0.9,
            rules: vec![ErrorRule {
                modulus: 4,
                buckets: vec![bucket("12", 4)],
                answers: [("category".to_owned(), json!("Electrical"))].into(),
                confidence: 0.55,
            }],
        }
    }

    fn prompt(id: &str, sku: &str) -> String {
        format!(
            "Classify product {id}.\n\nnotice\n<record entity=\"product\" id=\"{id}\">\n{{\"sku\": \"{sku}\"}}\n</record>"
        )
    }

    #[test]
    fn fnv1a_buckets_are_the_published_hash() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(bucket("a", u64::MAX), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(bucket("", 1), 0);
    }

    #[test]
    fn clues_answer_and_rules_spoil_by_bucket() {
        let schema = json!({"type": "object", "properties": {
            "category": {"enum": ["Electrical", "Fasteners", "Hand Tools"]}, "confidence": {"type": "number"}}});
        let c = classifier();
        let ids: Vec<String> = (10..40).map(|i| i.to_string()).collect();
        for id in &ids {
            let a = c.answer(&schema, &prompt(id, "FAS-X-1"));
            if bucket(id, 4) == bucket("12", 4) {
                assert_eq!(a, json!({"category": "Electrical", "confidence": 0.55}), "{id}");
            } else {
                assert_eq!(a, json!({"category": "Fasteners", "confidence": 0.9}), "{id}");
            }
        }
        let a = c.answer(&schema, &prompt("13", "ZZZ"));
        assert_eq!(a["category"], "Electrical", "no clue: the enum's first value");
    }

    #[test]
    fn packed_prompts_are_answered_per_record() {
        let item = json!({"type": "object", "properties": {"id": {"type": "string"}, "category": {"type": "string"}, "confidence": {"type": "number"}}});
        let schema = json!({"type": "object", "properties": {"items": {"type": "array", "items": item}}});
        let user = format!(
            "2 records follow.\n\n<item id=\"11\">\n{}\n</item>\n\n<item id=\"12\">\n{}\n</item>\n",
            prompt("11", "HT-A-1"),
            prompt("12", "FAS-B-2")
        );
        let a = classifier().answer(&schema, &user);
        assert_eq!(
            a,
            json!({"items": [
                {"id": "11", "category": "Hand Tools", "confidence": 0.9},
                {"id": "12", "category": "Electrical", "confidence": 0.55}]})
        );
    }
}
