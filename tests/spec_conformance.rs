//! The request bodies our provider clients really send — captured over HTTP by the provider
//! sandbox — validate against the providers' OpenAPI documents in `../shared/specs`: OpenAI Chat
//! Completions (plain and both Azure URL styles), Anthropic Messages (forced tool and
//! `output_config`), Gemini `generateContent` (with and without thinking), and the batch APIs of
//! all three (Gemini's inline and from an uploaded JSONL file).
//! Requests carrying documents (a PDF and a PNG) are checked in each provider's native form too.
//! Negative cases prove the checker can fail and names the offending field.

#[path = "common/openapi.rs"]
mod openapi;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use enrichd::config::Config;
use enrichd::provider::{CompletionRequest, Provider};
use enrichd::sandbox::provider::{ProviderSandbox, Received};
use enrichd::task::Prompt;
use openapi::{
    check_anthropic_batch, check_anthropic_messages, check_gemini_batch, check_gemini_generate,
    check_openai_batch_create, check_openai_chat,
};
use serde_json::{Value, json};

const KEY: &str = "spec-key";

const GEMINI: &str = "kind = \"gemini\"\nbase_url = \"http://{addr}\"";
const GEMINI_MODEL: &str = "gemini-2.5-flash";

/// The sandbox path of Gemini's `models/{model}:{method}`.
fn gemini_path(method: &str) -> String {
    format!("/v1beta/models/{GEMINI_MODEL}:{method}")
}

/// A provider named `p` built from `[providers.p]` lines `config` (with `{addr}` replaced by the
/// sandbox's address), and the recording sandbox it talks to.
async fn provider(config: &str) -> (Provider, ProviderSandbox) {
    let (p, sandbox, _) = provider_at(config).await;
    (p, sandbox)
}

/// Like [`provider`], with the sandbox's address.
async fn provider_at(config: &str) -> (Provider, ProviderSandbox, SocketAddr) {
    let sandbox = ProviderSandbox::new(Some(KEY));
    let addr = sandbox.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    sandbox.record_requests(true);
    // SAFETY: every test sets the same value, before the config that reads it is parsed.
    unsafe { std::env::set_var("SPEC_PROVIDER_KEY", KEY) };
    let text = format!(
        "[providers.p]\n{}\napi_key = \"${{SPEC_PROVIDER_KEY}}\"\n",
        config.replace("{addr}", &addr.to_string())
    );
    let config = Config::parse(Path::new("spec.toml"), &text, None).unwrap();
    (Provider::build("p", &config.providers["p"]), sandbox, addr)
}

/// The lines of the Gemini file `name` (`files/{id}`), as the client uploaded them, read back
/// through the File API's download route. The sandbox does not record uploads: they would come
/// before the batch create in `received()`.
async fn download(addr: SocketAddr, name: &str) -> Vec<Value> {
    let url = format!("http://{addr}/download/v1beta/{name}:download?alt=media");
    let response = enrichd_connector::http::client(Duration::from_secs(10))
        .get(&url)
        .header("x-goog-api-key", KEY)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(response.status().is_success(), "GET {url}: HTTP {}", response.status());
    let text = response.text().await.unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: a line is not JSON ({e}): {l}")))
        .collect()
}

fn schema() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["description", "tags"],
           "properties": {"description": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}}})
}

/// Every option our requests can carry: system and user message, output limit, temperature.
fn full_prompt() -> Prompt {
    Prompt {
        system: Some("Be factual.".into()),
        user: "Product 12: describe it.\n<record>...</record>".into(),
        documents: Vec::new(),
    }
}

/// The least a request carries: no system message, no temperature.
fn bare_prompt() -> Prompt {
    Prompt { system: None, user: "Product 7: describe it.".into(), documents: Vec::new() }
}

fn request<'a>(
    model: &'a str,
    prompt: &'a Prompt,
    schema: &'a Value,
    temperature: Option<f32>,
) -> CompletionRequest<'a> {
    CompletionRequest { model, prompt, schema_name: "product copy", schema, max_output_tokens: 500, temperature }
}

/// Sends one full and one bare request, and returns the bodies received at `path`.
async fn sent(p: &Provider, sandbox: &ProviderSandbox, model: &str, path: &str) -> Vec<Value> {
    let schema = schema();
    let (full, bare) = (full_prompt(), bare_prompt());
    p.complete(&request(model, &full, &schema, Some(0.7))).await.unwrap();
    p.complete(&request(model, &bare, &schema, None)).await.unwrap();
    let bodies = bodies_at(&sandbox.received(), path);
    assert_eq!(bodies.len(), 2, "both requests reached {path}");
    bodies
}

fn bodies_at(received: &[Received], path: &str) -> Vec<Value> {
    received.iter().filter(|r| r.method == "POST" && r.path == path).map(|r| r.body.clone()).collect()
}

/// `check` must fail, and its message must name `field` (a JSON pointer into the body).
fn refused(result: Result<(), String>, field: &str) {
    let message = result.expect_err("the checker accepted a body that breaks the spec");
    assert!(message.contains(&format!("at {field}")), "the failure names {field}: {message}");
}

#[tokio::test]
async fn openai_chat_requests_match_the_spec_in_every_url_style() {
    for (style, config, model) in [
        ("openai", "kind = \"openai\"\nbase_url = \"http://{addr}/v1\"", "gpt-4o-mini"),
        (
            "azure classic",
            "kind = \"openai\"\nbase_url = \"http://{addr}\"\napi_version = \"2024-10-21\"",
            "my-deployment",
        ),
        ("azure v1", "kind = \"openai\"\nbase_url = \"http://{addr}/openai/v1\"\nauth = \"api-key\"", "my-deployment"),
    ] {
        let (p, sandbox) = provider(config).await;
        let bodies = sent(&p, &sandbox, model, "/v1/chat/completions").await;
        let full = &bodies[0];
        assert_eq!(full["response_format"]["type"], "json_schema", "{style}");
        assert_eq!(full["response_format"]["json_schema"]["strict"], true, "{style}");
        assert_eq!(full["messages"][0]["role"], "system", "{style}");
        assert!(full["temperature"].is_number() && full["max_completion_tokens"] == 500, "{style}: {full}");
        for body in &bodies {
            check_openai_chat(body).unwrap_or_else(|e| panic!("{style}: {e}"));
        }
    }
}

#[tokio::test]
async fn anthropic_messages_match_the_spec_in_both_structured_output_styles() {
    for structured in ["tool", "output_config"] {
        let (p, sandbox) = provider(&format!(
            "kind = \"anthropic\"\nbase_url = \"http://{{addr}}\"\nstructured_output = \"{structured}\""
        ))
        .await;
        let bodies = sent(&p, &sandbox, "claude-haiku-4-5", "/v1/messages").await;
        let full = &bodies[0];
        match structured {
            "tool" => assert_eq!(full["tool_choice"]["type"], "tool"),
            _ => assert_eq!(full["output_config"]["format"]["type"], "json_schema"),
        }
        assert!(full["system"].is_string() && full["temperature"].is_number(), "{full}");
        for body in &bodies {
            check_anthropic_messages(body).unwrap_or_else(|e| panic!("{structured}: {e}"));
        }
    }
}

#[tokio::test]
async fn openai_batch_lines_and_the_batch_create_body_match_the_spec() {
    let (p, sandbox) = provider("kind = \"openai\"\nbase_url = \"http://{addr}/v1\"").await;
    let schema = schema();
    let (full, bare) = (full_prompt(), bare_prompt());
    let lines = vec![
        p.batch_line("item-1", &request("gpt-4o-mini", &full, &schema, Some(0.2))),
        p.batch_line("item-2", &request("gpt-4o-mini", &bare, &schema, None)),
    ];
    p.submit_batch("run-1-batch-1", "gpt-4o-mini", &lines).await.unwrap();
    let received = sandbox.received();

    let create = bodies_at(&received, "/v1/batches");
    assert_eq!(create.len(), 1);
    check_openai_batch_create(&create[0]).unwrap();

    // The JSONL file as uploaded: every line a chat request for the batch's endpoint.
    let upload = bodies_at(&received, "/v1/files");
    assert_eq!(upload.len(), 1);
    let uploaded = upload[0]["lines"].as_array().unwrap();
    assert_eq!(uploaded.len(), 2, "every line arrived as JSON");
    for line in uploaded {
        assert_eq!(line["method"], "POST", "{line}");
        assert_eq!(line["url"], create[0]["endpoint"], "a line's url is the batch's endpoint: {line}");
        assert!(line["custom_id"].is_string(), "{line}");
        check_openai_chat(&line["body"]).unwrap_or_else(|e| panic!("line {}: {e}", line["custom_id"]));
    }
}

#[tokio::test]
async fn anthropic_batch_create_body_matches_the_spec_in_both_styles() {
    for structured in ["tool", "output_config"] {
        let (p, sandbox) = provider(&format!(
            "kind = \"anthropic\"\nbase_url = \"http://{{addr}}\"\nstructured_output = \"{structured}\""
        ))
        .await;
        let schema = schema();
        let (full, bare) = (full_prompt(), bare_prompt());
        let lines = vec![
            p.batch_line("item-1", &request("claude-haiku-4-5", &full, &schema, Some(0.2))),
            p.batch_line("item-2", &request("claude-haiku-4-5", &bare, &schema, None)),
        ];
        p.submit_batch("run-1-batch-1", "claude-haiku-4-5", &lines).await.unwrap();
        let bodies = bodies_at(&sandbox.received(), "/v1/messages/batches");
        assert_eq!(bodies.len(), 1, "{structured}");
        assert_eq!(bodies[0]["requests"].as_array().map(Vec::len), Some(2), "{structured}");
        check_anthropic_batch(&bodies[0]).unwrap_or_else(|e| panic!("{structured}: {e}"));
    }
}

#[tokio::test]
async fn gemini_generate_content_requests_match_the_spec_with_and_without_thinking() {
    for thinking in ["", "thinking_budget = 0"] {
        let (p, sandbox) = provider(&format!("{GEMINI}\n{thinking}")).await;
        let bodies = sent(&p, &sandbox, GEMINI_MODEL, &gemini_path("generateContent")).await;
        let (full, bare) = (&bodies[0], &bodies[1]);
        assert_eq!(full["generationConfig"]["responseMimeType"], "application/json", "{thinking}");
        assert!(full["generationConfig"]["responseJsonSchema"].is_object(), "{full}");
        assert!(full["systemInstruction"].is_object() && full["generationConfig"]["temperature"].is_number(), "{full}");
        assert!(bare.get("systemInstruction").is_none(), "{bare}");
        assert!(bare["generationConfig"].get("temperature").is_none(), "{bare}");
        assert_eq!(full["generationConfig"].get("thinkingConfig").is_some(), !thinking.is_empty(), "{full}");
        for body in &bodies {
            check_gemini_generate(body).unwrap_or_else(|e| panic!("{thinking:?}: {e}"));
        }
    }
}

#[tokio::test]
async fn gemini_batches_inline_and_from_an_uploaded_file_match_the_spec() {
    for (route, extra) in [("inline", ""), ("file", "batch_inline_max_bytes = 1")] {
        let (p, sandbox, addr) = provider_at(&format!("{GEMINI}\n{extra}")).await;
        let schema = schema();
        let (full, bare) = (full_prompt(), bare_prompt());
        let lines = vec![
            p.batch_line("item-1", &request(GEMINI_MODEL, &full, &schema, Some(0.2))),
            p.batch_line("item-2", &request(GEMINI_MODEL, &bare, &schema, None)),
        ];
        p.submit_batch("run-1-batch-1", GEMINI_MODEL, &lines).await.unwrap();
        let create = bodies_at(&sandbox.received(), &gemini_path("batchGenerateContent"));
        assert_eq!(create.len(), 1, "{route}");
        check_gemini_batch(&create[0]).unwrap_or_else(|e| panic!("{route}: {e}"));

        let input = &create[0]["batch"]["inputConfig"];
        match route {
            "inline" => {
                let requests = input["requests"]["requests"].as_array().unwrap();
                assert_eq!(requests.len(), 2, "{input}");
                assert!(requests.iter().all(|r| r["metadata"]["key"].is_string()), "{input}");
            }
            _ => {
                // The JSONL file as uploaded, read back over HTTP: every line's `request` is a
                // `GenerateContentRequest` of its own.
                let file = input["fileName"].as_str().unwrap_or_else(|| panic!("no fileName: {input}"));
                let uploaded = download(addr, file).await;
                assert_eq!(uploaded.len(), 2, "every line arrived as JSON");
                for line in &uploaded {
                    assert!(line["key"].is_string(), "{line}");
                    check_gemini_generate(&line["request"]).unwrap_or_else(|e| panic!("line {}: {e}", line["key"]));
                }
            }
        }
    }
}

#[tokio::test]
async fn gemini_bodies_that_break_the_spec_are_refused_by_field() {
    let (p, sandbox) = provider(GEMINI).await;
    let good = sent(&p, &sandbox, GEMINI_MODEL, &gemini_path("generateContent")).await.remove(0);

    let mut bad = good.clone();
    bad["generationConfig"]["maxOutputTokens"] = json!("x");
    refused(check_gemini_generate(&bad), "/generationConfig/maxOutputTokens");

    let mut bad = good.clone();
    bad["contents"][0]["parts"][0]["text"] = json!(42);
    refused(check_gemini_generate(&bad), "/contents/0/parts/0/text");

    let mut bad = good.clone();
    bad.as_object_mut().unwrap().remove("contents");
    refused(check_gemini_generate(&bad), "/ (the body)");

    // The proto spelling of a field is checked under its JSON name, not waved through.
    let mut bad = good.clone();
    bad["generationConfig"]["max_output_tokens"] = bad["generationConfig"]["maxOutputTokens"].take();
    bad["generationConfig"].as_object_mut().unwrap().remove("maxOutputTokens");
    check_gemini_generate(&bad).unwrap();
    bad["generationConfig"]["max_output_tokens"] = json!("x");
    refused(check_gemini_generate(&bad), "/generationConfig/maxOutputTokens");

    // A misspelt top-level field is refused, not silently ignored.
    let mut bad = good.clone();
    bad["generation_configs"] = bad["generationConfig"].take();
    bad.as_object_mut().unwrap().remove("generationConfig");
    let message = check_gemini_generate(&bad).unwrap_err();
    assert!(message.contains("generation_configs"), "{message}");

    let lines = [p.batch_line("item-1", &request(GEMINI_MODEL, &full_prompt(), &schema(), Some(0.2)))];
    p.submit_batch("run-1-batch-1", GEMINI_MODEL, &lines).await.unwrap();
    let mut bad = bodies_at(&sandbox.received(), &gemini_path("batchGenerateContent")).remove(0);
    bad["batch"]["inputConfig"]["requests"]["requests"][0]["request"]["generationConfig"]["temperature"] = json!("hot");
    refused(check_gemini_batch(&bad), "/batch/inputConfig/requests/requests/0/request/generationConfig/temperature");
}

#[tokio::test]
async fn bodies_that_break_the_spec_are_refused_by_field() {
    let (p, sandbox) = provider("kind = \"openai\"\nbase_url = \"http://{addr}/v1\"").await;
    let good = sent(&p, &sandbox, "gpt-4o-mini", "/v1/chat/completions").await.remove(0);
    let mut bad = good.clone();
    bad["max_completion_tokens"] = json!("x");
    refused(check_openai_chat(&bad), "/max_completion_tokens");
    let mut bad = good.clone();
    bad["temperature"] = json!(2.5);
    refused(check_openai_chat(&bad), "/temperature");
    let mut bad = good.clone();
    bad["response_format"]["json_schema"].as_object_mut().unwrap().remove("name");
    refused(check_openai_chat(&bad), "/response_format");
    let mut bad = good.clone();
    bad["max_output_tokens"] = json!(500);
    let message = check_openai_chat(&bad).unwrap_err();
    assert!(message.contains("max_output_tokens"), "an unknown field is named: {message}");
    let mut bad = json!({"input_file_id": "file-1", "endpoint": "/v1/chat/completions", "completion_window": "1h"});
    refused(check_openai_batch_create(&bad), "/completion_window");
    bad["completion_window"] = json!("24h");
    check_openai_batch_create(&bad).unwrap();

    let (p, sandbox) =
        provider("kind = \"anthropic\"\nbase_url = \"http://{addr}\"\nstructured_output = \"output_config\"").await;
    let good = sent(&p, &sandbox, "claude-haiku-4-5", "/v1/messages").await.remove(0);
    let mut bad = good.clone();
    bad["max_tokens"] = json!("x");
    refused(check_anthropic_messages(&bad), "/max_tokens");
    let mut bad = good.clone();
    bad["temperature"] = json!(1.5);
    refused(check_anthropic_messages(&bad), "/temperature");
    let mut bad = good.clone();
    bad["output_config"]["format"]["type"] = json!("json_object");
    refused(check_anthropic_messages(&bad), "/output_config/format/type");
    let bad = json!({"requests": [{"custom_id": "item-1", "params": {"model": "claude-haiku-4-5", "messages": [], "max_tokens": "x"}}]});
    refused(check_anthropic_batch(&bad), "/requests/0/params/max_tokens");
}

/// A prompt carrying a two-page invoice PDF (with a sandbox ground truth) and a PNG receipt.
fn document_prompt() -> Prompt {
    use enrichd::sandbox::provider::documents::text_pdf;
    let truth = json!({"invoice_number": "INV-7", "total": 99.5});
    let page = vec!["Invoice INV-7".to_owned(), "Total 99.50 EUR".to_owned()];
    let pdf = text_pdf(&[page.clone(), page], Some(&truth));
    let png = include_bytes!("fixtures/documents/receipt.png").to_vec();
    let docs = vec![
        enrichd::document::Document {
            name: "INV-7.pdf".into(),
            media_type: "application/pdf".into(),
            bytes: pdf.into(),
            text: Some("Invoice INV-7\nTotal 99.50 EUR".into()),
            pages: Some(2),
        },
        enrichd::document::Document {
            name: "receipt.png".into(),
            media_type: "image/png".into(),
            bytes: png.into(),
            text: None,
            pages: Some(1),
        },
    ];
    Prompt { system: Some("Read the invoice.".into()), user: "Invoice 7: extract it.".into(), documents: docs }
}

fn invoice_schema() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["invoice_number", "total"],
           "properties": {"invoice_number": {"type": "string"}, "total": {"type": "number"}}})
}

#[tokio::test]
async fn documents_go_in_each_providers_native_form_and_match_the_spec() {
    let (prompt, schema) = (document_prompt(), invoice_schema());

    let (p, sandbox) = provider("kind = \"openai\"\nbase_url = \"http://{addr}/v1\"").await;
    let answer = p.complete(&request("gpt-4o-mini", &prompt, &schema, None)).await.unwrap();
    assert_eq!(answer.answer, json!({"invoice_number": "INV-7", "total": 99.5}), "the simulated model read the PDF");
    let body = bodies_at(&sandbox.received(), "/v1/chat/completions").remove(0);
    let parts = body["messages"][1]["content"].as_array().unwrap_or_else(|| panic!("content parts: {body}"));
    assert_eq!(parts[0]["type"], "text");
    assert_eq!(parts[1]["type"], "file");
    assert_eq!(parts[1]["file"]["filename"], "INV-7.pdf");
    assert!(parts[1]["file"]["file_data"].as_str().unwrap().starts_with("data:application/pdf;base64,JVBERi0"));
    assert_eq!(parts[2]["type"], "image_url");
    assert!(parts[2]["image_url"]["url"].as_str().unwrap().starts_with("data:image/png;base64,"));
    check_openai_chat(&body).unwrap();
    let line = p.batch_line("item-1", &request("gpt-4o-mini", &prompt, &schema, None));
    check_openai_chat(&line["body"]).unwrap();
    // The checker reads the parts: a file part without its file fails, naming the message.
    let mut bad = body.clone();
    bad["messages"][1]["content"][1]["file"] = json!(42);
    refused(check_openai_chat(&bad), "/messages/1");

    for structured in ["tool", "output_config"] {
        let (p, sandbox) = provider(&format!(
            "kind = \"anthropic\"\nbase_url = \"http://{{addr}}\"\nstructured_output = \"{structured}\""
        ))
        .await;
        let answer = p.complete(&request("claude-haiku-4-5", &prompt, &schema, None)).await.unwrap();
        assert_eq!(answer.answer, json!({"invoice_number": "INV-7", "total": 99.5}), "{structured}");
        let body = bodies_at(&sandbox.received(), "/v1/messages").remove(0);
        let blocks = body["messages"][0]["content"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "document");
        assert_eq!(blocks[0]["source"]["media_type"], "application/pdf");
        assert_eq!(blocks[0]["source"]["type"], "base64");
        assert_eq!(blocks[1]["type"], "image");
        assert_eq!(blocks[1]["source"]["media_type"], "image/png");
        assert_eq!(blocks[2]["type"], "text", "the text comes after the documents");
        check_anthropic_messages(&body).unwrap_or_else(|e| panic!("{structured}: {e}"));
        let mut bad = body.clone();
        bad["messages"][0]["content"][0]["source"]["media_type"] = json!("text/html");
        refused(check_anthropic_messages(&bad), "/messages/0/content");
        let line = p.batch_line("item-1", &request("claude-haiku-4-5", &prompt, &schema, None));
        check_anthropic_batch(&json!({"requests": [line]})).unwrap();
        // Billed as Anthropic counts: the text plus an image per page, for 3 pages.
        assert!(answer.usage.input > 3 * 1_600, "{:?}", answer.usage);
    }

    let (p, sandbox) = provider(GEMINI).await;
    let answer = p.complete(&request(GEMINI_MODEL, &prompt, &schema, None)).await.unwrap();
    assert_eq!(answer.answer, json!({"invoice_number": "INV-7", "total": 99.5}));
    let body = bodies_at(&sandbox.received(), &gemini_path("generateContent")).remove(0);
    let parts = body["contents"][0]["parts"].as_array().unwrap();
    assert_eq!(parts[0]["inlineData"]["mimeType"], "application/pdf");
    assert_eq!(parts[1]["inlineData"]["mimeType"], "image/png");
    assert!(parts[2]["text"].is_string());
    check_gemini_generate(&body).unwrap();
    let mut bad = body.clone();
    bad["contents"][0]["parts"][0]["inlineData"]["data"] = json!(7);
    refused(check_gemini_generate(&bad), "/contents/0/parts/0/inlineData/data");
    let line = p.batch_line("item-1", &request(GEMINI_MODEL, &prompt, &schema, None));
    check_gemini_generate(&line["request"]).unwrap();
    // Gemini counts 258 tokens a page.
    let text_only = p.complete(&request(GEMINI_MODEL, &bare_prompt(), &schema, None)).await.unwrap();
    assert!(answer.usage.input >= text_only.usage.input + 3 * 258, "{:?} vs {:?}", answer.usage, text_only.usage);
}

#[tokio::test]
async fn gemini_sends_documents_past_the_inline_limit_through_the_file_api() {
    let (p, sandbox) = provider(&format!("{GEMINI}\ninline_max_bytes = 1000")).await;
    let (prompt, schema) = (document_prompt(), invoice_schema());
    let answer = p.complete(&request(GEMINI_MODEL, &prompt, &schema, None)).await.unwrap();
    assert_eq!(answer.answer, json!({"invoice_number": "INV-7", "total": 99.5}), "read through the uploaded file");
    let body = bodies_at(&sandbox.received(), &gemini_path("generateContent")).remove(0);
    let parts = body["contents"][0]["parts"].as_array().unwrap();
    let uri = parts[0]["fileData"]["fileUri"].as_str().unwrap_or_else(|| panic!("fileData: {body}"));
    assert!(uri.contains("/v1beta/files/"), "{uri}");
    assert_eq!(parts[0]["fileData"]["mimeType"], "application/pdf");
    check_gemini_generate(&body).unwrap();
}

#[tokio::test]
async fn malformed_documents_are_refused_with_the_real_apis_error_shape() {
    let schema = invoice_schema();
    let (p, sandbox) = provider("kind = \"anthropic\"\nbase_url = \"http://{addr}\"").await;
    let mut prompt = document_prompt();
    prompt.documents.truncate(1);
    prompt.documents[0].bytes = bytes::Bytes::from_static(b"not a pdf at all");
    let e = p.complete(&request("claude-haiku-4-5", &prompt, &schema, None)).await.unwrap_err();
    assert!(e.message.contains("messages.0.content.0.source"), "{e}");
    assert!(!e.retryable(), "a malformed document is not retried: {e}");
    assert_eq!(sandbox.stats().answered, 0);
}
