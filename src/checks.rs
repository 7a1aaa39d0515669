//! Task rules: checks across an answer's properties, with numbers (`[tasks.<name>.rules.<rule>]`,
//! see [`crate::config::RuleConfig`]). Lines add up to the subtotal, a date is not before another,
//! a currency is ISO 4217 and one the organisation uses, tax rates are the organisation's, a
//! property has a given value, values appear in the document's text layer.
//!
//! Rules read the proposal as it would be written (a reviewer's edits included) and the facts kept
//! with it ([`Findings`]: the organisation's currencies and tax rates, the document's text), so a
//! proposal is checked again after every edit without the platform. A failed rule is a warning on
//! the proposal; a rule that cannot be checked (no value, no text layer, no organisation facts) is
//! recorded as not checked, never as passed.

use std::collections::BTreeMap;

use enrichd_connector::lookup::{LookUp, Organisation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::RuleConfig;

/// The tolerance of a `sum` rule per value added, when the rule sets none.
pub const DEFAULT_TOLERANCE: f64 = 0.01;

/// The most text of a document kept with a proposal for re-checking after edits.
const MAX_KEPT_TEXT: usize = 200_000;

/// An answer property, or a key of each element of a list property (`line_items[].line_amount`).
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    pub property: String,
    pub key: Option<String>,
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}[].{key}", self.property),
            None => f.write_str(&self.property),
        }
    }
}

/// What a rule checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Sum { terms: Vec<Path>, equals: Path, tolerance: f64 },
    NotBefore { date: Path, earliest: Path },
    Currency(Path),
    TaxRate(Path),
    Equals { property: Path, allowed: Vec<Value> },
    InDocument(Vec<Path>),
}

/// A compiled rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub check: Check,
    /// Property → values: the rule applies only when every property has one of its values.
    pub when: Vec<(String, Vec<Value>)>,
}

/// How a rule came out on one proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    Failed,
    /// Nothing to check against (no value, no text layer, no organisation facts).
    NotChecked,
}

/// One rule's result, for the review page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub rule: String,
    pub outcome: Outcome,
    /// What was compared, for a person (`line_items[].line_amount add up to 120.00, subtotal is 120.00`).
    pub message: String,
}

/// The facts rules compare with, kept with the proposal so it can be checked again after an edit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// The organisation's currencies, when the connection lists them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currencies: Option<Vec<String>>,
    /// The organisation's tax rates in percent, when the connection lists them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_rates: Option<Vec<f64>>,
    /// The documents' text layers, joined; `None` when no document has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_text: Option<String>,
}

impl Facts {
    /// The facts of `organisation` and `documents` that `rules` need (nothing else is kept).
    pub fn new(rules: &[Rule], organisation: Option<&Organisation>, documents: &[crate::document::Document]) -> Facts {
        let needs = |f: fn(&Check) -> bool| rules.iter().any(|r| f(&r.check));
        let mut facts = Facts::default();
        if let Some(org) = organisation {
            if needs(|c| matches!(c, Check::Currency(_))) && !org.currencies.is_empty() {
                facts.currencies = Some(org.currencies.clone());
            }
            if needs(|c| matches!(c, Check::TaxRate(_))) && !org.tax_rates.is_empty() {
                facts.tax_rates = Some(org.tax_rates.iter().map(|t| t.rate).collect());
            }
        }
        if needs(|c| matches!(c, Check::InDocument(_))) {
            let texts: Vec<&str> =
                documents.iter().filter_map(|d| d.text.as_deref()).filter(|t| !t.trim().is_empty()).collect();
            if !texts.is_empty() {
                let mut text = texts.join("\n");
                if text.len() > MAX_KEPT_TEXT {
                    let mut end = MAX_KEPT_TEXT;
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    text.truncate(end);
                }
                facts.document_text = Some(text);
            }
        }
        facts
    }

    fn is_empty(&self) -> bool {
        self == &Facts::default()
    }
}

/// What a proposal's rules and look-ups found: shown on the review page, and what its warnings are
/// recomputed from after an edit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Findings {
    /// Each applicable rule's result, in rule-name order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
    /// What the organisation's own data said (matched supplier, duplicates, account code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub look_up: Option<LookUp>,
    /// Why the look-up could not be made; the proposal then waits for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub look_up_error: Option<String>,
    /// Line items (by position, from 0) whose account code was suggested from the supplier's recent
    /// bills rather than read from the document.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suggested_accounts: Vec<usize>,
    /// Answer values rules read that are not fields of the proposal (a property mapped to no field,
    /// a field the record already had, the supplier's name once matched to an existing supplier).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub values: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Facts::is_empty")]
    pub facts: Facts,
}

impl Findings {
    pub fn is_empty(&self) -> bool {
        self == &Findings::default()
    }

    /// The warnings the look-up raises: a supplier not found (creating one is the reviewer's
    /// explicit choice), each duplicate, a look-up that failed.
    pub fn look_up_warnings(&self, supplier_name: Option<&str>) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(error) = &self.look_up_error {
            out.push(format!(
                "look-up: {error}; check the supplier and for duplicates on the platform before approving"
            ));
        }
        if let Some(found) = &self.look_up {
            if found.supplier.is_none()
                && let Some(name) = supplier_name
            {
                out.push(format!("supplier not found: {name:?} (approve to create a new supplier)"));
            }
            for d in &found.duplicates {
                out.push(duplicate_text(d));
            }
        }
        out
    }
}

/// A duplicate bill, for a person: its id, number, status and why.
pub fn duplicate_text(d: &enrichd_connector::lookup::Duplicate) -> String {
    format!(
        "duplicate of bill {}{} ({}): {}",
        d.id,
        d.invoice_number.as_deref().map(|n| format!(" {n}")).unwrap_or_default(),
        d.status,
        d.reason
    )
}

/// Compiles `[rules]` against the answer schema `schema`; errors are `(key inside the task, message)`.
pub fn compile(rules: &BTreeMap<String, RuleConfig>, schema: &Value) -> Result<Vec<Rule>, (String, String)> {
    let mut out = Vec::new();
    for (name, cfg) in rules {
        let at = |key: &str| format!("rules.{name}.{key}");
        let path = |key: &str, text: &str| parse_path(schema, text).map_err(|m| (at(key), m));
        let given: Vec<&str> = [
            ("sum", cfg.sum.is_some()),
            ("date", cfg.date.is_some()),
            ("currency", cfg.currency.is_some()),
            ("tax_rate", cfg.tax_rate.is_some()),
            ("property", cfg.property.is_some()),
            ("in_document", cfg.in_document.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        let kind = match given.as_slice() {
            [one] => *one,
            [] => {
                return Err((
                    format!("rules.{name}"),
                    "say what to check: one of sum, date, currency, tax_rate, property, in_document".into(),
                ));
            }
            many => {
                return Err((
                    format!("rules.{name}"),
                    format!(
                        "one check per rule, this one has {}: split it into rules of their own",
                        many.join(" and ")
                    ),
                ));
            }
        };
        let extra = |key: &str, set: bool, for_kind: &str| -> Result<(), (String, String)> {
            if set && kind != for_kind {
                return Err((at(key), format!("belongs to a {for_kind} rule, and this is a {kind} rule")));
            }
            Ok(())
        };
        extra("equals", cfg.equals.is_some(), "sum")?;
        extra("tolerance", cfg.tolerance.is_some(), "sum")?;
        extra("not_before", cfg.not_before.is_some(), "date")?;
        extra("is", cfg.is.is_some(), "property")?;
        let check = match kind {
            "sum" => {
                let terms = cfg.sum.as_ref().map(|s| s.to_vec()).unwrap_or_default();
                if terms.is_empty() {
                    return Err((at("sum"), "name at least one property to add up".into()));
                }
                let terms = terms
                    .iter()
                    .enumerate()
                    .map(|(i, t)| path(&format!("sum[{i}]"), t))
                    .collect::<Result<Vec<_>, _>>()?;
                let equals = cfg
                    .equals
                    .as_deref()
                    .ok_or_else(|| (at("equals"), "missing: the property the values add up to".to_owned()))?;
                let equals = path("equals", equals)?;
                if equals.key.is_some() {
                    return Err((at("equals"), "must be one property, not a list".into()));
                }
                let tolerance = cfg.tolerance.unwrap_or(DEFAULT_TOLERANCE);
                if !(tolerance.is_finite() && tolerance >= 0.0) {
                    return Err((at("tolerance"), format!("must be 0 or more, got {tolerance}")));
                }
                Check::Sum { terms, equals, tolerance }
            }
            "date" => {
                let date = path("date", cfg.date.as_deref().unwrap_or_default())?;
                let earliest = cfg
                    .not_before
                    .as_deref()
                    .ok_or_else(|| (at("not_before"), "missing: the date this one may not be before".to_owned()))?;
                Check::NotBefore { date, earliest: path("not_before", earliest)? }
            }
            "currency" => Check::Currency(path("currency", cfg.currency.as_deref().unwrap_or_default())?),
            "tax_rate" => Check::TaxRate(path("tax_rate", cfg.tax_rate.as_deref().unwrap_or_default())?),
            "property" => {
                let property = path("property", cfg.property.as_deref().unwrap_or_default())?;
                let allowed = match &cfg.is {
                    Some(Value::Array(values)) if !values.is_empty() => values.clone(),
                    Some(Value::Array(_)) | None => {
                        return Err((at("is"), "missing: the value (or list of values) the property must have".into()));
                    }
                    Some(value) => vec![value.clone()],
                };
                Check::Equals { property, allowed }
            }
            _ => {
                let paths = cfg.in_document.as_ref().map(|s| s.to_vec()).unwrap_or_default();
                if paths.is_empty() {
                    return Err((at("in_document"), "name at least one property".into()));
                }
                let paths = paths
                    .iter()
                    .enumerate()
                    .map(|(i, t)| path(&format!("in_document[{i}]"), t))
                    .collect::<Result<Vec<_>, _>>()?;
                Check::InDocument(paths)
            }
        };
        let mut when = Vec::new();
        for (property, values) in &cfg.when {
            if schema["properties"].get(property).is_none() {
                return Err((
                    format!("rules.{name}.when.{property}"),
                    format!("{property:?} is not a property of output_schema"),
                ));
            }
            let values = match values {
                Value::Array(v) => v.clone(),
                v => vec![v.clone()],
            };
            when.push((property.clone(), values));
        }
        out.push(Rule { name: name.clone(), check, when });
    }
    Ok(out)
}

fn parse_path(schema: &Value, text: &str) -> Result<Path, String> {
    let (property, key) = match text.split_once("[].") {
        Some((p, k)) => (p, Some(k)),
        None => (text, None),
    };
    let Some(prop_schema) = schema["properties"].get(property) else {
        return Err(format!("{property:?} is not a property of output_schema"));
    };
    if let Some(key) = key {
        let is_list = prop_schema["type"] == "array"
            || prop_schema["type"].as_array().is_some_and(|t| t.iter().any(|t| t == "array"));
        if !is_list {
            return Err(format!("{property:?} is not a list, so {text:?} names nothing"));
        }
        if let Some(keys) = prop_schema["items"]["properties"].as_object()
            && !keys.contains_key(key)
        {
            return Err(format!("the elements of {property:?} have no {key:?}"));
        }
    }
    Ok(Path { property: property.to_owned(), key: key.map(str::to_owned) })
}

/// Reads answer properties as the proposal would write them.
pub trait Values {
    /// The value of answer property `property`, if the proposal (or what was kept with it) has one.
    fn get(&self, property: &str) -> Option<&Value>;
}

impl Values for Map<String, Value> {
    fn get(&self, property: &str) -> Option<&Value> {
        Map::get(self, property)
    }
}

/// The values at `path`: one for a property, one per element (with its position) for a list key.
fn values_at<'v>(values: &'v dyn Values, path: &Path) -> Vec<(Option<usize>, &'v Value)> {
    let Some(value) = values.get(&path.property).filter(|v| !v.is_null()) else { return Vec::new() };
    match &path.key {
        None => vec![(None, value)],
        Some(key) => value
            .as_array()
            .map(|items| items.iter().enumerate().filter_map(|(i, item)| item.get(key).map(|v| (Some(i), v))).collect())
            .unwrap_or_default(),
    }
}

fn is_empty_list(values: &dyn Values, path: &Path) -> bool {
    path.key.is_some() && values.get(&path.property).and_then(Value::as_array).is_some_and(Vec::is_empty)
}

/// `12.5` → `12.50`, `3` → `3.00`, `0.125` → `0.125`: money with two decimals, more when given.
pub fn show_number(n: f64) -> String {
    let two = format!("{n:.2}");
    if (two.parse::<f64>().unwrap_or(n) - n).abs() < 1e-9 {
        two
    } else {
        let mut s = format!("{n:.6}");
        while s.ends_with('0') {
            s.pop();
        }
        s
    }
}

fn show_value(v: &Value) -> String {
    match v {
        Value::Number(n) => n.as_f64().map(show_number).unwrap_or_else(|| n.to_string()),
        other => other.to_string(),
    }
}

fn line(at: Option<usize>) -> String {
    at.map(|i| format!("line {}: ", i + 1)).unwrap_or_default()
}

/// Runs `rules` over `values` with `facts`: each applicable rule's result.
pub fn run(rules: &[Rule], values: &dyn Values, facts: &Facts) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for rule in rules {
        let applies = rule
            .when
            .iter()
            .all(|(property, allowed)| values.get(property).is_some_and(|v| allowed.iter().any(|a| same_value(a, v))));
        if !applies {
            continue;
        }
        let (outcome, message) = run_one(&rule.check, values, facts);
        out.push(CheckResult { rule: rule.name.clone(), outcome, message });
    }
    out
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-9,
        _ => a == b,
    }
}

fn run_one(check: &Check, values: &dyn Values, facts: &Facts) -> (Outcome, String) {
    use Outcome::*;
    match check {
        Check::Sum { terms, equals, tolerance } => {
            let mut sum = 0.0;
            let mut added = 0usize;
            for term in terms {
                let found = values_at(values, term);
                if found.is_empty() && !is_empty_list(values, term) {
                    return (NotChecked, format!("no value for {term}"));
                }
                for (at, v) in found {
                    match v.as_f64() {
                        Some(n) => sum += n,
                        None if v.is_null() => {}
                        None => return (Failed, format!("{}{term} is {v}, not a number", line(at))),
                    }
                    added += 1;
                }
            }
            let Some(target) = values_at(values, equals).first().map(|(_, v)| *v) else {
                return (NotChecked, format!("no value for {equals}"));
            };
            let Some(target) = target.as_f64() else {
                return (Failed, format!("{equals} is {target}, not a number"));
            };
            let allowed = tolerance * added.max(1) as f64;
            let names = terms.iter().map(ToString::to_string).collect::<Vec<_>>().join(" + ");
            let text = format!("{names} = {}, {equals} is {}", show_number(sum), show_number(target));
            if (sum - target).abs() <= allowed + 1e-9 {
                (Passed, text)
            } else {
                (
                    Failed,
                    format!(
                        "{text}: off by {} (at most {} allowed)",
                        show_number((sum - target).abs()),
                        show_number(allowed)
                    ),
                )
            }
        }
        Check::NotBefore { date, earliest } => {
            let first = values_at(values, date);
            let second = values_at(values, earliest);
            let (Some((_, a)), Some((_, b))) = (first.first(), second.first()) else {
                return (NotChecked, format!("no value for {}", if first.is_empty() { date } else { earliest }));
            };
            let parse = |v: &Value, path: &Path| {
                v.as_str()
                    .and_then(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
                    .ok_or_else(|| format!("{path} is {v}, not a date (YYYY-MM-DD)"))
            };
            match (parse(a, date), parse(b, earliest)) {
                (Ok(x), Ok(y)) if x >= y => (Passed, format!("{date} {x} is not before {earliest} {y}")),
                (Ok(x), Ok(y)) => (Failed, format!("{date} {x} is before {earliest} {y}")),
                (Err(e), _) | (_, Err(e)) => (Failed, e),
            }
        }
        Check::Currency(path) => {
            let found = values_at(values, path);
            let Some((_, v)) = found.first() else { return (NotChecked, format!("no value for {path}")) };
            let Some(code) = v.as_str().filter(|c| iso_currency::Currency::from_code(c).is_some()) else {
                return (Failed, format!("{path} is {v}, not an ISO 4217 currency code"));
            };
            match &facts.currencies {
                Some(known) if !known.iter().any(|k| k.eq_ignore_ascii_case(code)) => {
                    (Failed, format!("{path} {code} is not a currency the organisation uses ({})", known.join(", ")))
                }
                Some(_) => (Passed, format!("{path} {code} is one the organisation uses")),
                None => (Passed, format!("{path} {code} is an ISO 4217 code (the connection lists no currencies)")),
            }
        }
        Check::TaxRate(path) => {
            let Some(known) = &facts.tax_rates else {
                return (NotChecked, "the connection lists no tax rates".into());
            };
            let shown = || known.iter().map(|r| format!("{}%", show_rate(*r))).collect::<Vec<_>>().join(", ");
            let found = values_at(values, path);
            let mut misses = Vec::new();
            for (at, v) in &found {
                match v.as_f64() {
                    Some(rate) if known.iter().any(|k| (k - rate).abs() < 0.001) => {}
                    Some(rate) => misses.push(format!("{}{path} {}%", line(*at), show_rate(rate))),
                    None if v.is_null() => {}
                    None => misses.push(format!("{}{path} is {v}, not a number", line(*at))),
                }
            }
            if found.is_empty() {
                (NotChecked, format!("no value for {path}"))
            } else if misses.is_empty() {
                (Passed, format!("every {path} is one of the organisation's tax rates"))
            } else {
                (Failed, format!("{}: not one of the organisation's tax rates ({})", misses.join("; "), shown()))
            }
        }
        Check::Equals { property, allowed } => {
            let found = values_at(values, property);
            let Some((_, v)) = found.first() else { return (NotChecked, format!("no value for {property}")) };
            let expected = allowed.iter().map(show_value).collect::<Vec<_>>().join(" or ");
            if allowed.iter().any(|a| same_value(a, v)) {
                (Passed, format!("{property} is {}", show_value(v)))
            } else {
                (Failed, format!("{property} is {}, expected {expected}", show_value(v)))
            }
        }
        Check::InDocument(paths) => {
            let Some(text) = &facts.document_text else {
                return (NotChecked, "the document has no text layer".into());
            };
            let numbers = numbers_in(text);
            let squeezed = squeeze(text);
            let mut misses = Vec::new();
            let mut seen = Vec::new();
            for path in paths {
                for (at, v) in values_at(values, path) {
                    let found = match v {
                        Value::Number(n) => {
                            let n = n.as_f64().unwrap_or(f64::NAN).abs();
                            numbers.iter().any(|c| (c - n).abs() < 0.005)
                        }
                        Value::String(s) if !s.trim().is_empty() => squeezed.contains(&squeeze(s)),
                        _ => continue,
                    };
                    let shown = format!("{}{path} {}", line(at), show_value(v));
                    if found { seen.push(shown) } else { misses.push(shown) }
                }
            }
            if !misses.is_empty() {
                (Failed, format!("not in the document's text: {}", misses.join("; ")))
            } else if seen.is_empty() {
                (NotChecked, "no value to look for".into())
            } else {
                (Passed, format!("in the document's text: {}", seen.join("; ")))
            }
        }
    }
}

fn show_rate(r: f64) -> String {
    let s = show_number(r);
    s.strip_suffix(".00").map(str::to_owned).unwrap_or(s)
}

/// Lower case, without whitespace: how text values are looked for in a document.
fn squeeze(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).flat_map(char::to_lowercase).collect()
}

/// Every number `text` may mean, whatever its format: `1,234.50`, `1.234,50`, `1 234,50`,
/// `1'234.50` and `1234.5` all give 1234.5 (as absolute values; each run of digits read both with
/// `.` and with `,` as the decimal mark, and with spaces as thousands separators or not).
pub fn numbers_in(text: &str) -> Vec<f64> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let sep = |c: char| matches!(c, '.' | ',' | '\'' | ' ' | '\u{a0}' | '\u{202f}');
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i;
        let mut j = i;
        while j < chars.len() && (chars[j].is_ascii_digit() || sep(chars[j])) {
            if chars[j].is_ascii_digit() {
                end = j + 1;
            }
            j += 1;
        }
        let run: String = chars[start..end].iter().collect();
        i = end.max(start + 1);
        let mut pieces = vec![run.clone()];
        pieces.extend(run.split([' ', '\u{a0}', '\u{202f}']).filter(|p| !p.is_empty()).map(str::to_owned));
        for piece in pieces {
            let plain: String = piece.chars().filter(|c| !matches!(c, ' ' | '\u{a0}' | '\u{202f}' | '\'')).collect();
            for (thousands, decimal) in [(',', '.'), ('.', ',')] {
                let number: String =
                    plain.chars().filter(|c| *c != thousands).map(|c| if c == decimal { '.' } else { c }).collect();
                if let Ok(n) = number.parse::<f64>() {
                    out.push(n);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "subtotal": {"type": "number"}, "total_tax": {"type": "number"}, "total": {"type": "number"},
            "issue_date": {"type": "string"}, "due_date": {"type": ["string", "null"]},
            "currency": {"type": "string"}, "document_type": {"type": "string"},
            "amounts_are": {"type": "string"}, "invoice_number": {"type": "string"},
            "line_items": {"type": "array", "items": {"type": "object", "properties": {
                "line_amount": {"type": "number"}, "tax_rate": {"type": "number"}}}}
        }})
    }

    fn rules(toml_text: &str) -> Vec<Rule> {
        let cfg: BTreeMap<String, RuleConfig> = toml::from_str(toml_text).unwrap();
        compile(&cfg, &schema()).unwrap()
    }

    fn answer() -> Map<String, Value> {
        json!({
            "subtotal": 1234.5, "total_tax": 246.9, "total": 1481.4, "issue_date": "2026-03-01",
            "due_date": "2026-03-31", "currency": "EUR", "document_type": "invoice", "amounts_are": "exclusive",
            "invoice_number": "INV-0042",
            "line_items": [{"line_amount": 1000.0, "tax_rate": 20}, {"line_amount": 234.5, "tax_rate": 20}]
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn outcome(results: &[CheckResult], rule: &str) -> (Outcome, String) {
        let r = results.iter().find(|r| r.rule == rule).unwrap_or_else(|| panic!("no result for {rule}: {results:?}"));
        (r.outcome, r.message.clone())
    }

    const INVOICE_RULES: &str = r#"
        lines = { sum = "line_items[].line_amount", equals = "subtotal", when = { amounts_are = ["exclusive", "no_tax"] } }
        totals = { sum = ["subtotal", "total_tax"], equals = "total" }
        due = { date = "due_date", not_before = "issue_date" }
        money = { currency = "currency" }
        rates = { tax_rate = "line_items[].tax_rate" }
        kind = { property = "document_type", is = "invoice" }
        printed = { in_document = ["total", "invoice_number"] }
    "#;

    #[test]
    fn a_bill_that_adds_up_passes_and_one_that_does_not_fails_by_how_much() {
        let rules = rules(INVOICE_RULES);
        let facts = Facts {
            currencies: Some(vec!["EUR".into(), "GBP".into()]),
            tax_rates: Some(vec![0.0, 5.0, 20.0]),
            document_text: Some("Invoice INV-0042\nTotal due: 1.481,40 EUR".into()),
        };
        let results = run(&rules, &answer(), &facts);
        assert!(results.iter().all(|r| r.outcome == Outcome::Passed), "{results:#?}");

        let mut wrong = answer();
        wrong["line_items"][1]["line_amount"] = json!(234.47); // 0.03 off over two lines: allowed 0.02
        wrong["total"] = json!(1481.41); // 0.01 off over two values: allowed
        let results = run(&rules, &wrong, &facts);
        assert_eq!(
            outcome(&results, "lines"),
            (
                Outcome::Failed,
                "line_items[].line_amount = 1234.47, subtotal is 1234.50: off by 0.03 (at most 0.02 allowed)".into()
            )
        );
        assert_eq!(outcome(&results, "totals").0, Outcome::Passed);
        assert_eq!(outcome(&results, "printed"), (Outcome::Failed, "not in the document's text: total 1481.41".into()));
    }

    #[test]
    fn rules_fail_on_dates_currencies_rates_and_values_the_organisation_does_not_have() {
        let rules = rules(INVOICE_RULES);
        let facts =
            Facts { currencies: Some(vec!["GBP".into()]), tax_rates: Some(vec![0.0, 20.0]), document_text: None };
        let mut a = answer();
        a["due_date"] = json!("2026-02-28");
        a["line_items"][1]["tax_rate"] = json!(17.5);
        a["document_type"] = json!("credit_note");
        let results = run(&rules, &a, &facts);
        assert_eq!(
            outcome(&results, "due"),
            (Outcome::Failed, "due_date 2026-02-28 is before issue_date 2026-03-01".into())
        );
        assert_eq!(
            outcome(&results, "money"),
            (Outcome::Failed, "currency EUR is not a currency the organisation uses (GBP)".into())
        );
        assert_eq!(
            outcome(&results, "rates"),
            (
                Outcome::Failed,
                "line 2: line_items[].tax_rate 17.50%: not one of the organisation's tax rates (0%, 20%)".into()
            )
        );
        assert_eq!(
            outcome(&results, "kind"),
            (Outcome::Failed, "document_type is \"credit_note\", expected \"invoice\"".into())
        );
        assert_eq!(outcome(&results, "printed").0, Outcome::NotChecked, "no text layer: not checked, not passed");
        a["currency"] = json!("EURO");
        let results = run(&rules, &a, &Facts::default());
        assert_eq!(outcome(&results, "money").0, Outcome::Failed);
        assert_eq!(outcome(&results, "rates").0, Outcome::NotChecked, "no organisation facts");
        a["currency"] = json!("XYZ");
        assert_eq!(outcome(&run(&rules, &a, &Facts::default()), "money").0, Outcome::Failed, "not an ISO 4217 code");
    }

    #[test]
    fn when_limits_a_rule_and_missing_values_are_not_checked() {
        let rules = rules(INVOICE_RULES);
        let mut a = answer();
        a["amounts_are"] = json!("inclusive");
        a["line_items"][0]["line_amount"] = json!(1200.0);
        let results = run(&rules, &a, &Facts::default());
        assert!(results.iter().all(|r| r.rule != "lines"), "inclusive amounts: the exclusive rule does not apply");
        a["due_date"] = Value::Null;
        assert_eq!(outcome(&run(&rules, &a, &Facts::default()), "due").0, Outcome::NotChecked);
    }

    #[test]
    fn numbers_are_found_in_any_format() {
        for text in ["Total 1,234.50", "Summe 1.234,50 €", "Total: 1234.5", "TOTAL 1 234,50", "CHF 1'234.50"] {
            assert!(numbers_in(text).iter().any(|n| (n - 1234.5).abs() < 1e-9), "{text}: {:?}", numbers_in(text));
        }
        assert!(numbers_in("Qty 2 10.00").contains(&10.0), "a space between numbers does not hide them");
        assert!(!numbers_in("Total 1,243.50").iter().any(|n| (n - 1234.5).abs() < 0.005));
    }

    #[test]
    fn bad_rules_are_refused_naming_the_key() {
        let err = |text: &str| {
            let cfg: BTreeMap<String, RuleConfig> = toml::from_str(text).unwrap();
            compile(&cfg, &schema()).unwrap_err()
        };
        assert_eq!(err("r = { equals = \"total\" }").0, "rules.r");
        assert_eq!(err("r = { sum = \"subtotal\", date = \"due_date\", equals = \"total\" }").0, "rules.r");
        assert_eq!(err("r = { sum = [\"subtotal\", \"tip\"], equals = \"total\" }").0, "rules.r.sum[1]");
        assert_eq!(err("r = { sum = \"subtotal\" }").0, "rules.r.equals");
        assert_eq!(err("r = { sum = \"line_items[].price\", equals = \"total\" }").0, "rules.r.sum[0]");
        assert_eq!(err("r = { sum = \"subtotal\", equals = \"total\", tolerance = -1 }").0, "rules.r.tolerance");
        assert_eq!(err("r = { date = \"due_date\" }").0, "rules.r.not_before");
        assert_eq!(err("r = { currency = \"currency\", tolerance = 1 }").0, "rules.r.tolerance");
        assert_eq!(err("r = { property = \"document_type\" }").0, "rules.r.is");
        assert_eq!(err("r = { currency = \"currency\", when = { kind = \"x\" } }").0, "rules.r.when.kind");
        assert!(toml::from_str::<BTreeMap<String, RuleConfig>>("r = { summ = \"x\" }").is_err(), "unknown keys");
    }
}
