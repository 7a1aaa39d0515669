//! The simulated model as a copywriter (for `enrichd demo`): answers built from the facts of the
//! product record in the prompt — name, categories, attributes, price, weight, dimensions, images —
//! so a reviewer sees copy like a model's, not test markers. Still deterministic: the same record
//! gets the same copy.

use serde_json::{Map, Value, json};

/// The facts of a product record, as the connector gives them to a model.
struct Facts {
    name: String,
    sku: String,
    category: Option<String>,
    /// Attribute name and its values (`Material`: `stainless steel`).
    attributes: Vec<(String, String)>,
    price: Option<String>,
    weight: Option<String>,
    dimensions: Option<String>,
    image_ids: Vec<i64>,
}

/// The answer to `user` under `schema` written from the record in the prompt, or `None` when the
/// prompt holds no record with a name (then the plain sandbox answer is used).
pub(crate) fn answer(schema: &Value, user: &str) -> Option<Value> {
    let facts = facts(&record_in(user)?)?;
    let props = schema["properties"].as_object()?;
    let mut out = Map::new();
    for (name, sub) in props {
        let value = match name.as_str() {
            "description" => json!(fit(&description(&facts), sub, "</p>")),
            "short_description" => json!(fit(&short_description(&facts), sub, "</p>")),
            "seo_title" | "title" => json!(fit(&seo_title(&facts), sub, "")),
            "seo_description" | "meta_description" => json!(fit(&seo_description(&facts), sub, "")),
            "tags" | "keywords" => json!(tags(&facts, sub)),
            "image_alts" => image_alts(&facts, sub),
            _ => super::answer_for(sub, &facts.name, name),
        };
        out.insert(name.clone(), value);
    }
    Some(Value::Object(out))
}

/// The JSON object between `<record …>` and `</record>`.
pub(super) fn record_in(user: &str) -> Option<Map<String, Value>> {
    let start = user.find("<record ")?;
    let body = &user[start..];
    let body = &body[body.find('\n')? + 1..];
    let end = body.find("</record>")?;
    match serde_json::from_str(&body[..end].replace("<\\/record", "</record")) {
        Ok(Value::Object(fields)) => Some(fields),
        _ => None,
    }
}

fn facts(record: &Map<String, Value>) -> Option<Facts> {
    let text = |k: &str| record.get(k).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    let name = text("name")?.to_owned();
    let category = record.get("categories").and_then(Value::as_array).and_then(|c| {
        c.iter().find_map(|v| v.as_str().or_else(|| v.get("name").and_then(Value::as_str)).map(str::to_owned))
    });
    let attributes = record
        .get("attributes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let name = a.get("name")?.as_str()?.to_owned();
            let values: Vec<&str> = match (a.get("options"), a.get("option")) {
                (Some(Value::Array(options)), _) => options.iter().filter_map(Value::as_str).collect(),
                (_, Some(Value::String(option))) => vec![option.as_str()],
                _ => Vec::new(),
            };
            (!values.is_empty()).then(|| (name, values.join(", ")))
        })
        .collect();
    let dimensions = record.get("dimensions").and_then(|d| {
        let part = |k: &str| d.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
        Some(format!("{} × {} × {} cm", part("length")?, part("width")?, part("height")?))
    });
    let image_ids = record
        .get("images[].alt")
        .or_else(|| record.get("images"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("id").and_then(Value::as_i64))
        .collect();
    Some(Facts {
        name,
        sku: text("sku").unwrap_or_default().to_owned(),
        category,
        attributes,
        price: text("regular_price").or_else(|| text("price")).map(str::to_owned),
        weight: text("weight").map(str::to_owned),
        dimensions,
        image_ids,
    })
}

impl Facts {
    /// "hinges" from the category, else "product".
    fn kind(&self) -> String {
        self.category.as_deref().map(str::to_lowercase).unwrap_or_else(|| "product".into())
    }

    fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn description(f: &Facts) -> String {
    let name = escape(&f.name);
    let mut first = format!("<p>The {name} comes from our {} range", escape(&f.kind()));
    let lower = |v: &str| escape(&v.to_lowercase());
    match (f.attribute("material"), f.attribute("finish")) {
        (Some(m), Some(fin)) => first.push_str(&format!(", made in {} with a {} finish", lower(m), lower(fin))),
        (Some(m), None) => first.push_str(&format!(", made in {}", lower(m))),
        _ => {}
    }
    first.push_str(".</p>");
    let mut facts = Vec::new();
    if let Some(size) = f.attribute("size") {
        facts.push(format!("Size {}.", escape(size)));
    }
    if let Some(price) = &f.price {
        facts.push(format!("Price {}.", escape(price)));
    }
    let second = if facts.is_empty() { String::new() } else { format!("\n<p>{}</p>", facts.join(" ")) };
    let mut specs: Vec<String> =
        f.attributes.iter().map(|(n, v)| format!("<li>{}: {}</li>", escape(n), escape(v))).collect();
    if !f.sku.is_empty() {
        specs.push(format!("<li>SKU: {}</li>", escape(&f.sku)));
    }
    if let Some(w) = &f.weight {
        specs.push(format!("<li>Weight: {} kg</li>", escape(w)));
    }
    if let Some(d) = &f.dimensions {
        specs.push(format!("<li>Dimensions: {}</li>", escape(d)));
    }
    let list = if specs.is_empty() { String::new() } else { format!("\n<ul>{}</ul>", specs.join("")) };
    format!("{first}{second}{list}")
}

fn short_description(f: &Facts) -> String {
    let what = match f.attribute("material") {
        Some(m) => format!("{} in {}", f.kind(), m.to_lowercase()),
        None => f.kind(),
    };
    escape_p(&format!("{}: {what}, ready to ship from stock.", f.name))
}

fn escape_p(text: &str) -> String {
    format!("<p>{}</p>", escape(text))
}

fn seo_title(f: &Facts) -> String {
    match &f.category {
        Some(c) if f.name.chars().count() + c.chars().count() + 3 <= 60 => format!("{} | {c}", f.name),
        _ => f.name.clone(),
    }
}

/// One sentence for search results, kept to 160 characters (the task's check) where the name allows.
fn seo_description(f: &Facts) -> String {
    let mut text = format!("Buy the {} from our {} range", f.name, f.kind());
    if let Some(price) = &f.price {
        text.push_str(&format!(" at {price}"));
    }
    text.push('.');
    if text.chars().count() > 160 {
        let cut: String = text.chars().take(158).collect();
        return format!("{}.", cut.rsplit_once(' ').map_or(cut.as_str(), |(head, _)| head));
    }
    for more in [" Full specifications and fast delivery.", " Easy returns.", " Order online today."] {
        if text.chars().count() + more.chars().count() <= 160 {
            text.push_str(more);
        }
    }
    text
}

fn tags(f: &Facts, schema: &Value) -> Vec<String> {
    let max_items = schema["maxItems"].as_u64().unwrap_or(8).min(8) as usize;
    let max_len = schema["items"]["maxLength"].as_u64().unwrap_or(40) as usize;
    let mut candidates: Vec<String> = f.category.iter().cloned().collect();
    for (_, values) in &f.attributes {
        candidates.extend(values.split(", ").map(str::to_owned));
    }
    let mut out: Vec<String> = Vec::new();
    let add = |out: &mut Vec<String>, tag: &str| {
        let tag = tag.trim().to_lowercase();
        if (2..=max_len).contains(&tag.chars().count()) && !out.contains(&tag) && out.len() < max_items {
            out.push(tag);
        }
    };
    for tag in &candidates {
        add(&mut out, tag);
    }
    // Words of the name only while there are fewer than three tags.
    for word in f.name.split(|c: char| !c.is_alphanumeric()).filter(|w| w.len() > 3) {
        if out.len() < 3 {
            add(&mut out, word);
        }
    }
    out
}

fn image_alts(f: &Facts, schema: &Value) -> Value {
    let max_items = schema["maxItems"].as_u64().unwrap_or(20) as usize;
    let alt_schema = &schema["items"]["properties"]["alt"];
    let alts: Vec<Value> = f
        .image_ids
        .iter()
        .take(max_items)
        .enumerate()
        .map(|(i, id)| {
            let view = if i == 0 { "product photo" } else { "another view" };
            json!({"id": id, "alt": fit(&format!("{}, {view}", f.name), alt_schema, "")})
        })
        .collect();
    Value::Array(alts)
}

/// `text` within the schema's `minLength`/`maxLength`: padded with a plain sentence, or cut at a
/// word and closed with `close` (an HTML paragraph's end) when too long.
fn fit(text: &str, schema: &Value, close: &str) -> String {
    let mut text = text.to_owned();
    let min = schema["minLength"].as_u64().unwrap_or(0) as usize;
    while text.chars().count() < min {
        let extra = "Ask us about trade quantities.";
        text = match text.strip_suffix(close).filter(|_| !close.is_empty()) {
            Some(open) => format!("{open} {extra}{close}"),
            None => format!("{text} {extra}"),
        };
    }
    if let Some(max) = schema["maxLength"].as_u64().map(|m| m as usize)
        && text.chars().count() > max
    {
        let room = max.saturating_sub(close.chars().count() + 1);
        let cut: String = text.chars().take(room).collect();
        let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(head, _)| head).to_owned();
        text = if close.is_empty() { cut } else { format!("{cut}…{close}") };
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_from_the_record() {
        let user = "Write.\n<record entity=\"product\" id=\"7\">\n{\"name\": \"Hinge 100mm steel\", \"categories\": [\"Hinges\"], \"attributes\": [{\"name\": \"Material\", \"options\": [\"steel\"]}], \"regular_price\": \"4.20\", \"images[].alt\": [{\"id\": 9, \"alt\": \"\"}]}\n</record>";
        let schema = json!({"type": "object", "properties": {
            "description": {"type": "string", "minLength": 80},
            "seo_title": {"type": "string", "maxLength": 60},
            "tags": {"type": "array", "items": {"type": "string"}},
            "image_alts": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "integer"}, "alt": {"type": "string"}}}},
        }});
        let a = answer(&schema, user).unwrap();
        let d = a["description"].as_str().unwrap();
        assert!(d.starts_with("<p>The Hinge 100mm steel comes from our hinges range, made in steel"), "{d}");
        assert_eq!(a["seo_title"], "Hinge 100mm steel | Hinges");
        assert_eq!(a["tags"][0], "hinges");
        assert_eq!(a["image_alts"], json!([{"id": 9, "alt": "Hinge 100mm steel, product photo"}]));
    }
}
