//! Request bodies checked against the providers' own OpenAPI documents in `../shared/specs`
//! (OpenAI, Anthropic, Gemini), so a field we misname or mistype fails a test before it fails in
//! production.
//!
//! The documents are read as data, turned into plain JSON Schema 2020-12 (they mix in OpenAPI 3.0
//! spellings: `nullable`, boolean `exclusiveMinimum`, `$recursiveRef`), and only the components a
//! request body reaches are copied into one root document, so every `#/components/...` reference
//! resolves locally and nothing is fetched. Unknown top-level fields are refused even where a
//! schema leaves `additionalProperties` open: the real APIs answer 400 to them.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::{Map, Value, json};

/// One provider's OpenAPI document, normalised to JSON Schema 2020-12.
pub struct Spec {
    name: &'static str,
    doc: Value,
}

fn specs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/specs")
}

fn read(file: &str) -> String {
    let path = specs_dir().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read the spec {}: {e}", path.display()))
}

/// `openai-openapi.yaml` (OpenAPI 3.1 with 3.0 leftovers).
pub fn openai() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let doc: YamlJson = serde_yaml_ng::from_str(&read("openai-openapi.yaml"))
            .unwrap_or_else(|e| panic!("openai-openapi.yaml is not valid YAML: {e}"));
        Spec::new("openai-openapi.yaml", doc.0)
    })
}

/// `anthropic-openapi.json` (OpenAPI 3.1), with the GA structured-output field it predates.
pub fn anthropic() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let mut doc: Value = serde_json::from_str(&read("anthropic-openapi.json"))
            .unwrap_or_else(|e| panic!("anthropic-openapi.json is not valid JSON: {e}"));
        // The stored spec (Dec 2025) has structured outputs only as the beta `output_format`
        // (`BetaCreateMessageParams`); they are GA since as `output_config.format`
        // (shared/research/ai_providers.md lines 123, 127–128: "newer docs add ... `output_config`",
        // `output_config: {"format": {"type": "json_schema", "schema": {...}}}`). The GA object is
        // the beta `OutputConfig` (`effort`) plus `format`, which is the beta `JsonOutputFormat`.
        let schemas = &mut doc["components"]["schemas"];
        let mut output_config = schemas["BetaOutputConfig"].clone();
        output_config["properties"]["format"] = json!({"$ref": "#/components/schemas/BetaJsonOutputFormat"});
        schemas["CreateMessageParams"]["properties"]["output_config"] = output_config;
        Spec::new("anthropic-openapi.json", doc)
    })
}

/// `gemini-generativelanguage-v1beta-openapi.json` (OpenAPI 3.0.3, converted from Google's
/// discovery document).
pub fn gemini() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let mut doc: Value = serde_json::from_str(&read("gemini-generativelanguage-v1beta-openapi.json"))
            .unwrap_or_else(|e| panic!("gemini-generativelanguage-v1beta-openapi.json is not valid JSON: {e}"));
        // The converter turned "Required. The name of the `Model`" into `required: [model]`, but the
        // model travels in the URL (`/v1beta/models/{model}:…`): the documented requests carry no
        // `model` in the body — shared/research/ai_providers.md line 175 (inline batch
        // `{"batch":{"display_name":…,"input_config":…}}`) and line 176 (each request
        // `{"contents":[…],"generation_config":{…}}`).
        let schemas = &mut doc["components"]["schemas"];
        for name in ["GenerateContentRequest", "GenerateContentBatch"] {
            if let Some(required) = schemas[name]["required"].as_array_mut() {
                required.retain(|r| r != "model");
            }
        }
        Spec::new("gemini-generativelanguage-v1beta-openapi.json", doc)
    })
}

impl Spec {
    fn new(name: &'static str, mut doc: Value) -> Spec {
        if let Some(components) = doc.get_mut("components").and_then(Value::as_object_mut) {
            for (kind, entries) in components.iter_mut() {
                let Some(entries) = entries.as_object_mut() else { continue };
                for (entry, value) in entries.iter_mut() {
                    let pointer = format!("#/components/{kind}/{entry}");
                    if kind == "schemas" {
                        normalize(value, &pointer);
                    } else {
                        // Request bodies, parameters, responses: schemas sit under `schema`.
                        normalize_nested(value, &pointer);
                    }
                }
            }
        }
        Spec { name, doc }
    }

    /// The JSON request-body schema of `method path` (`path` as the spec writes it, e.g.
    /// `/chat/completions`).
    fn request_schema(&self, method: &str, path: &str) -> Result<Value, String> {
        let operation = self
            .doc
            .get("paths")
            .and_then(|p| p.get(path))
            .and_then(|p| p.get(method.to_ascii_lowercase()))
            .ok_or_else(|| format!("{}: no operation {method} {path}", self.name))?;
        let mut body = operation
            .get("requestBody")
            .ok_or_else(|| format!("{}: {method} {path} takes no request body", self.name))?;
        while let Some(reference) = body.get("$ref").and_then(Value::as_str) {
            body = self.pointer(reference)?;
        }
        body.pointer("/content/application~1json/schema")
            .cloned()
            .ok_or_else(|| format!("{}: {method} {path} has no application/json body schema", self.name))
    }

    fn pointer(&self, reference: &str) -> Result<&Value, String> {
        reference
            .strip_prefix('#')
            .and_then(|p| self.doc.pointer(p))
            .ok_or_else(|| format!("{}: unresolvable reference {reference}", self.name))
    }

    /// A root document for `schema` that holds every component it reaches, with unknown top-level
    /// fields refused.
    fn root(&self, schema: Value) -> Result<Value, String> {
        let mut seen = BTreeSet::new();
        let mut pending = Vec::new();
        collect_refs(&schema, &mut pending);
        let mut root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "allOf": [schema],
            "unevaluatedProperties": false,
        });
        while let Some(reference) = pending.pop() {
            if !seen.insert(reference.clone()) {
                continue;
            }
            // A `$ref` string inside an example is data, not a reference: one that resolves
            // nowhere is left to the validator, which fails on it only if a schema uses it.
            let Ok(target) = self.pointer(&reference) else { continue };
            collect_refs(target, &mut pending);
            place(&mut root, &reference[1..], target.clone());
        }
        Ok(root)
    }

    /// Validates `body` as the request body of `method path`. The error lists every violation,
    /// each with the JSON pointer of the offending place in the body.
    pub fn check(&self, method: &str, path: &str, body: &Value) -> Result<(), String> {
        let schema = self.request_schema(method, path)?;
        self.check_against(&format!("{method} {path}"), schema, body)
    }

    fn check_against(&self, what: &str, schema: Value, body: &Value) -> Result<(), String> {
        let root = self.root(schema)?;
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
            .map_err(|e| format!("{}: the schema of {what} does not compile: {e}", self.name))?;
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| {
                let at = e.instance_path().to_string();
                format!("at {}: {e}", if at.is_empty() { "/ (the body)" } else { at.as_str() })
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("{what} does not match {}:\n  {}\nbody: {body}", self.name, errors.join("\n  ")))
        }
    }

    /// The `properties`, `items` and `allOf`/`$ref` parts of `schema`, flattened, for walking a body.
    fn parts<'a>(&'a self, schema: &'a Value, out: &mut Vec<&'a Value>) {
        if out.len() > 64 {
            return;
        }
        out.push(schema);
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str)
            && let Ok(target) = self.pointer(reference)
        {
            self.parts(target, out);
        }
        for part in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
            self.parts(part, out);
        }
    }

    /// Renames `snake_case` fields to the `lowerCamelCase` names the schema declares, where the
    /// schema declares them: proto3 JSON parsers (Gemini) accept both spellings, and Google's own
    /// examples use the snake ones (shared/research/ai_providers.md lines 175–176). Free-form parts
    /// (a JSON Schema in `responseJsonSchema`, `metadata`) declare no properties and are left alone.
    fn camel_case_fields(&self, body: &mut Value, schema: &Value) {
        let mut parts = Vec::new();
        self.parts(schema, &mut parts);
        match body {
            Value::Object(map) => {
                let declared: Map<String, Value> = parts
                    .iter()
                    .filter_map(|p| p.get("properties").and_then(Value::as_object))
                    .flat_map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())))
                    .collect();
                let fields: Vec<(String, Value)> = std::mem::take(map).into_iter().collect();
                for (key, mut value) in fields {
                    let camel = lower_camel(&key);
                    let name = if !declared.contains_key(&key) && declared.contains_key(&camel) { camel } else { key };
                    if let Some(property) = declared.get(&name) {
                        self.camel_case_fields(&mut value, property);
                    }
                    map.insert(name, value);
                }
            }
            Value::Array(items) => {
                if let Some(item) = parts.iter().find_map(|p| p.get("items")).cloned() {
                    for value in items {
                        self.camel_case_fields(value, &item);
                    }
                }
            }
            _ => {}
        }
    }

    /// Like [`Spec::check`], after renaming proto field names to their JSON names (Gemini).
    fn check_proto_json(&self, method: &str, path: &str, body: &Value) -> Result<(), String> {
        let schema = self.request_schema(method, path)?;
        let mut body = body.clone();
        self.camel_case_fields(&mut body, &schema);
        self.check_against(&format!("{method} {path}"), schema, &body)
    }
}

/// OpenAI `POST /chat/completions` (also the body of every chat line in a batch file).
pub fn check_openai_chat(body: &Value) -> Result<(), String> {
    openai().check("POST", "/chat/completions", body)
}

/// OpenAI `POST /batches`.
pub fn check_openai_batch_create(body: &Value) -> Result<(), String> {
    openai().check("POST", "/batches", body)
}

/// Anthropic `POST /v1/messages`.
pub fn check_anthropic_messages(body: &Value) -> Result<(), String> {
    anthropic().check("POST", "/v1/messages", body)
}

/// Anthropic `POST /v1/messages/batches`.
pub fn check_anthropic_batch(body: &Value) -> Result<(), String> {
    anthropic().check("POST", "/v1/messages/batches", body)
}

/// Gemini `POST /v1beta/models/{model}:generateContent`.
pub fn check_gemini_generate(body: &Value) -> Result<(), String> {
    gemini().check_proto_json("POST", "/v1beta/models/{model}:generateContent", body)
}

/// Gemini `POST /v1beta/models/{model}:batchGenerateContent`.
pub fn check_gemini_batch(body: &Value) -> Result<(), String> {
    gemini().check_proto_json("POST", "/v1beta/models/{model}:batchGenerateContent", body)
}

/// A YAML document read as JSON. Unlike `serde_json::Value` it takes integers beyond 64 bits (the
/// OpenAI spec bounds `seed` by ±9223372036854776000, i64's range rounded up), as the nearest float.
struct YamlJson(Value);

impl<'de> serde::Deserialize<'de> for YamlJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(YamlJsonVisitor).map(YamlJson)
    }
}

struct YamlJsonVisitor;

impl<'de> serde::de::Visitor<'de> for YamlJsonVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value that JSON can hold")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(i64::try_from(v).map(Value::from).unwrap_or_else(|_| Value::from(v as f64)))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
        Ok(u64::try_from(v).map(Value::from).unwrap_or_else(|_| Value::from(v as f64)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(YamlJson(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some((key, YamlJson(value))) = map.next_entry::<String, YamlJson>()? {
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// `display_name` → `displayName`.
fn lower_camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' && !out.is_empty() {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Every local `$ref` below `schema` (examples included: harmless extra components).
fn collect_refs(schema: &Value, out: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(r)) if r.starts_with("#/") => out.push(r.clone()),
                    _ => collect_refs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Puts `value` at JSON pointer `pointer` inside `root`, creating objects on the way.
fn place(root: &mut Value, pointer: &str, value: Value) {
    let mut at = root;
    let tokens: Vec<String> =
        pointer.trim_start_matches('/').split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect();
    for token in &tokens[..tokens.len() - 1] {
        at = at
            .as_object_mut()
            .expect("a component path runs through objects")
            .entry(token.clone())
            .or_insert(json!({}));
    }
    at[tokens[tokens.len() - 1].as_str()] = value;
}

/// Keywords whose value is one schema.
const ONE_SCHEMA: &[&str] = &[
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
    "additionalItems",
];
/// Keywords whose value is a list of schemas.
const SCHEMA_LIST: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose value maps names to schemas.
const SCHEMA_MAP: &[&str] = &["properties", "patternProperties", "$defs", "definitions", "dependentSchemas"];

/// Rewrites the OpenAPI 3.0 spellings in `schema` (the component at `pointer`) as JSON Schema
/// 2020-12, in place.
fn normalize(schema: &mut Value, pointer: &str) {
    let Value::Object(map) = schema else { return };
    for bound in ["Minimum", "Maximum"] {
        let exclusive = format!("exclusive{bound}");
        if let Some(Value::Bool(on)) = map.get(&exclusive).cloned() {
            // 3.0: `exclusiveMinimum: true` qualifies `minimum`; 2020-12 holds the number itself.
            map.remove(&exclusive);
            if on && let Some(limit) = map.remove(&bound.to_ascii_lowercase()) {
                map.insert(exclusive, limit);
            }
        }
    }
    if map.remove("$recursiveAnchor").is_some() {
        replace_recursive_refs(schema, pointer);
    }
    let Value::Object(map) = schema else { return };
    for (key, value) in map.iter_mut() {
        let key = key.as_str();
        if ONE_SCHEMA.contains(&key) {
            if let Value::Array(list) = value {
                list.iter_mut().for_each(|s| normalize(s, pointer));
            } else {
                normalize(value, pointer);
            }
        } else if SCHEMA_LIST.contains(&key) {
            value.as_array_mut().into_iter().flatten().for_each(|s| normalize(s, pointer));
        } else if SCHEMA_MAP.contains(&key) {
            value.as_object_mut().into_iter().flat_map(|m| m.values_mut()).for_each(|s| normalize(s, pointer));
        }
    }
    // Last, so the wrapped schema is already normalised.
    match map.remove("nullable") {
        Some(Value::Bool(true)) => make_nullable(schema),
        Some(Value::Bool(false)) | None => {}
        Some(other) => {
            // Not the keyword (e.g. a non-boolean value): keep it as it was.
            map.insert("nullable".into(), other);
        }
    }
}

/// Normalises the schemas inside a request body, parameter or response (under `schema` keys).
fn normalize_nested(value: &mut Value, pointer: &str) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "schema" {
                    normalize(child, pointer);
                } else {
                    normalize_nested(child, pointer);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| normalize_nested(v, pointer)),
        _ => {}
    }
}

/// 3.0 `nullable: true`: null is allowed too.
fn make_nullable(schema: &mut Value) {
    let Value::Object(map) = schema else { return };
    match map.get_mut("type") {
        Some(Value::String(t)) => {
            let t = t.clone();
            map.insert("type".into(), json!([t, "null"]));
        }
        Some(Value::Array(types)) => {
            if !types.contains(&json!("null")) {
                types.push(json!("null"));
            }
        }
        _ => {
            let inner = std::mem::take(map);
            *schema = json!({"anyOf": [Value::Object(inner), {"type": "null"}]});
            return;
        }
    }
    if let Some(Value::Array(values)) = map.get_mut("enum")
        && !values.contains(&Value::Null)
    {
        values.push(Value::Null);
    }
}

/// 2019-09 `$recursiveRef: "#"` inside a component that sets `$recursiveAnchor` means the component
/// itself.
fn replace_recursive_refs(value: &mut Value, pointer: &str) {
    match value {
        Value::Object(map) => {
            if map.remove("$recursiveRef").is_some() {
                map.insert("$ref".into(), json!(pointer));
            }
            map.values_mut().for_each(|v| replace_recursive_refs(v, pointer));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| replace_recursive_refs(v, pointer)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_3_0_spellings_become_2020_12() {
        let mut s = json!({"type": "object", "properties": {
            "a": {"type": "integer", "nullable": true, "minimum": 0, "exclusiveMinimum": true},
            "b": {"$ref": "#/components/schemas/X", "nullable": true},
            "c": {"type": "string", "enum": ["x"], "nullable": true},
            "nullable": {"type": "boolean"}
        }});
        normalize(&mut s, "#/components/schemas/T");
        assert_eq!(s["properties"]["a"], json!({"type": ["integer", "null"], "exclusiveMinimum": 0}));
        assert_eq!(s["properties"]["b"], json!({"anyOf": [{"$ref": "#/components/schemas/X"}, {"type": "null"}]}));
        assert_eq!(s["properties"]["c"]["enum"], json!(["x", null]));
        assert_eq!(s["properties"]["nullable"], json!({"type": "boolean"}), "a property named nullable stays");
        assert_eq!(lower_camel("response_json_schema"), "responseJsonSchema");
        assert_eq!(lower_camel("_responseJsonSchema"), "_responseJsonSchema");
    }
}
