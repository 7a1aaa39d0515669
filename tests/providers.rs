//! Provider clients over real HTTP against the provider sandbox: Anthropic in both structured-output
//! styles (forced tool, `output_config`), usage and cost, and the error classes (rate limit with
//! `retry-after`, overload, truncation, bad key).

use std::path::Path;
use std::time::Duration;

use enrichd::config::{Config, ProviderConfig};
use enrichd::provider::{CompletionRequest, Provider, ProviderErrorKind};
use enrichd::sandbox::provider::{Faults, ProviderSandbox, answer_for};
use enrichd::task::Prompt;
use serde_json::json;

async fn provider(structured: &str, key: &str) -> (Provider, ProviderSandbox) {
    let sandbox = ProviderSandbox::new(Some("right-key"));
    let addr = sandbox.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    // SAFETY: test-local variable, set before the config that reads it is parsed.
    unsafe { std::env::set_var(format!("ANT_KEY_{structured}"), key) };
    let text = format!(
        r#"
[providers.claude]
kind = "anthropic"
base_url = "http://{addr}"
api_key = "${{ANT_KEY_{structured}}}"
structured_output = "{structured}"
prices."claude-haiku-4-5" = {{ input = 1.0, output = 5.0, cached_input = 0.1 }}
"#
    );
    let config = Config::parse(Path::new("test.toml"), &text, None).unwrap();
    let ProviderConfig::Anthropic(_) = &config.providers["claude"] else { panic!("wrong kind") };
    (Provider::build("claude", &config.providers["claude"]), sandbox)
}

fn schema() -> serde_json::Value {
    json!({"type": "object", "additionalProperties": false, "required": ["description", "tags"],
           "properties": {"description": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}}})
}

async fn ask(p: &Provider) -> Result<enrichd::provider::Completion, enrichd::provider::ProviderError> {
    let prompt =
        Prompt { system: Some("Be factual.".into()), user: "Product 12: describe it.\n<record>...</record>".into() };
    let schema = schema();
    let request = CompletionRequest {
        model: "claude-haiku-4-5",
        prompt: &prompt,
        schema_name: "product copy",
        schema: &schema,
        max_output_tokens: 500,
        temperature: Some(0.3),
    };
    p.complete(&request).await
}

#[tokio::test]
async fn anthropic_answers_in_the_schema_both_ways_with_usage_and_cost() {
    for structured in ["tool", "output_config"] {
        let (p, sandbox) = provider(structured, "right-key").await;
        p.check().await.unwrap();
        let c = ask(&p).await.unwrap();
        assert_eq!(c.answer, answer_for(&schema(), "Product 12: describe it.", "answer"), "{structured}");
        assert_eq!(c.answer["description"], "description for Product 12: describe it.");
        assert!(c.usage.input > 0 && c.usage.output > 0);
        let cost = p.cost_micros("claude-haiku-4-5", c.usage).unwrap();
        assert_eq!(cost, c.usage.input + 5 * c.usage.output, "{structured}: $1/M in, $5/M out");
        assert_eq!(sandbox.stats().answered, 1);
    }
}

#[tokio::test]
async fn anthropic_errors_are_classified() {
    let (p, sandbox) = provider("tool", "right-key").await;
    sandbox.set_faults(Faults { rate_limit_rate: 1.0, ..Default::default() });
    let e = ask(&p).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Transient);
    assert_eq!(e.retry_after, Some(Duration::from_secs(1)));
    assert!(e.message.contains("HTTP 429 rate_limit_error"), "{}", e.message);

    sandbox.set_faults(Faults { server_error_rate: 1.0, ..Default::default() });
    let e = ask(&p).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Transient);
    assert!(e.message.contains("HTTP 529 overloaded_error"), "{}", e.message);

    for structured in ["tool", "output_config"] {
        let (p, sandbox) = provider(structured, "right-key").await;
        sandbox.set_faults(Faults { truncated_rate: 1.0, ..Default::default() });
        let e = ask(&p).await.unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::BadAnswer, "{structured}");
        assert!(e.message.contains("cut off at max_output_tokens (500)"), "{}", e.message);
        assert!(e.raw.as_deref().is_some_and(|r| r.starts_with("{\"description\"")), "raw output kept: {:?}", e.raw);
        assert!(e.usage.output > 0, "a truncated answer is still billed");
    }

    let (p, _sandbox) = provider("tool", "wrong-key-987").await;
    let e = ask(&p).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Permanent);
    assert!(e.message.contains("HTTP 401 authentication_error"), "{}", e.message);
    assert!(!e.message.contains("wrong-key-987"));
}
