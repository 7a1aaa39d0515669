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
    let prompt = Prompt {
        system: Some("Be factual.".into()),
        user: "Product 12: describe it.\n<record>...</record>".into(),
        documents: Vec::new(),
    };
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

/// An OpenAI-kind provider over the sandbox; `extra` adds config lines.
async fn openai(extra: &str, base: impl Fn(std::net::SocketAddr) -> String) -> (Provider, ProviderSandbox) {
    let sandbox = ProviderSandbox::new(Some("right-key"));
    let addr = sandbox.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    // SAFETY: test-local variable, set before the config that reads it is parsed.
    unsafe { std::env::set_var("OAI_KEY", "right-key") };
    let text = format!(
        "[providers.oai]\nkind = \"openai\"\nbase_url = \"{}\"\napi_key = \"${{OAI_KEY}}\"\ntimeout_seconds = 0.5\n{extra}\n",
        base(addr)
    );
    let config = Config::parse(Path::new("test.toml"), &text, None).unwrap();
    (Provider::build("oai", &config.providers["oai"]), sandbox)
}

async fn ask_openai(
    p: &Provider,
    model: &str,
) -> Result<enrichd::provider::Completion, enrichd::provider::ProviderError> {
    let prompt = Prompt { system: None, user: "Product 7: describe it.".into(), documents: Vec::new() };
    let schema = schema();
    let request = CompletionRequest {
        model,
        prompt: &prompt,
        schema_name: "copy",
        schema: &schema,
        max_output_tokens: 300,
        temperature: None,
    };
    p.complete(&request).await
}

fn v1(addr: std::net::SocketAddr) -> String {
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn openai_errors_are_classified() {
    let (p, sandbox) = openai("", v1).await;
    let ok = ask_openai(&p, "gpt-4o-mini").await.unwrap();
    assert_eq!(ok.answer["description"], "description for Product 7: describe it.");

    // 429 with retry-after: transient, the wait kept, and the whole credential holds back.
    sandbox.set_faults(Faults { rate_limit_rate: 1.0, ..Default::default() });
    let e = ask_openai(&p, "gpt-4o-mini").await.unwrap_err();
    assert_eq!((e.kind.clone(), e.retry_after), (ProviderErrorKind::Transient, Some(Duration::from_secs(1))));
    assert!(e.message.contains("HTTP 429 rate_limit_exceeded"), "{}", e.message);
    assert_eq!(p.gate().rate_limited(), 1);
    // 429 without retry-after: still transient, the caller's backoff decides.
    sandbox.set_faults(Faults { rate_limit_rate: 1.0, rate_limit_without_retry_after: true, ..Default::default() });
    let started = std::time::Instant::now();
    let e = ask_openai(&p, "gpt-4o-mini").await.unwrap_err();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the gate held the request until the first 429's wait ran out"
    );
    assert_eq!((e.kind.clone(), e.retry_after), (ProviderErrorKind::Transient, None));

    // Out of money is not a rate limit: never retried.
    sandbox.set_faults(Faults { quota_rate: 1.0, ..Default::default() });
    let e = ask_openai(&p, "gpt-4o-mini").await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Permanent, "{}", e.message);
    assert!(e.message.contains("insufficient_quota"), "{}", e.message);

    sandbox.set_faults(Faults { server_error_rate: 1.0, ..Default::default() });
    assert_eq!(ask_openai(&p, "gpt-4o-mini").await.unwrap_err().kind, ProviderErrorKind::Transient);

    // A request that hangs past the timeout (0.5 s) is transient.
    sandbox.set_faults(Faults { timeout_rate: 1.0, hang: Duration::from_secs(3), ..Default::default() });
    let e = ask_openai(&p, "gpt-4o-mini").await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Transient, "{}", e.message);

    for (faults, says) in [
        (Faults { truncated_rate: 1.0, ..Default::default() }, "cut off at max_output_tokens (300)"),
        (Faults { invalid_json_rate: 1.0, ..Default::default() }, "not valid JSON"),
        (Faults { refusal_rate: 1.0, ..Default::default() }, "the model refused"),
    ] {
        sandbox.set_faults(faults);
        let e = ask_openai(&p, "gpt-4o-mini").await.unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::BadAnswer, "{}", e.message);
        assert!(e.message.contains(says), "{}", e.message);
        assert!(e.raw.as_deref().is_some_and(|r| !r.is_empty()), "the raw output is kept: {:?}", e.raw);
    }
}

#[tokio::test]
async fn anthropic_spend_limit_is_permanent_and_refusals_are_bad_answers() {
    let (p, sandbox) = provider("output_config", "right-key").await;
    sandbox.set_faults(Faults { quota_rate: 1.0, ..Default::default() });
    let e = ask(&p).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Permanent, "{}", e.message);
    sandbox.set_faults(Faults { refusal_rate: 1.0, ..Default::default() });
    let e = ask(&p).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::BadAnswer);
    assert!(e.message.contains("refused"), "{}", e.message);
}

#[tokio::test]
async fn azure_openai_in_both_url_styles() {
    // Classic: deployment in the URL, api-version required, key in `api-key`.
    let (p, sandbox) = openai("api_version = \"2024-10-21\"", |a| format!("http://{a}")).await;
    sandbox.record_requests(true);
    let c = ask_openai(&p, "my-deployment").await.unwrap();
    assert_eq!(c.answer["description"], "description for Product 7: describe it.");
    assert_eq!(sandbox.received()[0].body["model"], "my-deployment");
    // v1: the plain OpenAI paths under /openai/v1, key in `api-key`.
    let (p, _sandbox) = openai("auth = \"api-key\"", |a| format!("http://{a}/openai/v1")).await;
    ask_openai(&p, "my-deployment").await.unwrap();
    p.check().await.unwrap();
    // The classic style refuses a bearer key, which proves the header choice matters.
    let (p, _sandbox) = openai("api_version = \"2024-10-21\"\nauth = \"bearer\"", |a| format!("http://{a}")).await;
    let e = ask_openai(&p, "my-deployment").await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Permanent, "{}", e.message);
}

#[tokio::test]
async fn configured_rate_limits_hold_requests_and_learned_ones_come_from_headers() {
    let (p, sandbox) = openai("requests_per_minute = 600", v1).await;
    sandbox.set_rate_limit(Some(enrichd::sandbox::provider::RateLimit { requests_per_second: 10.0 }));
    let started = std::time::Instant::now();
    let asks: Vec<_> = (0..25).map(|_| ask_openai(&p, "gpt-4o-mini")).collect();
    for r in futures::future::join_all(asks).await {
        r.unwrap();
    }
    assert!(started.elapsed() >= Duration::from_millis(1900), "25 requests at 10/s after a burst of 5");
    assert_eq!(sandbox.stats().rate_limited, 0, "the configured limit kept every request under the provider's");

    // Without a configured limit, the first answer's headers teach it.
    let (p, sandbox) = openai("", v1).await;
    sandbox.set_rate_limit(Some(enrichd::sandbox::provider::RateLimit { requests_per_second: 5.0 }));
    assert_eq!(p.gate().requests_per_minute(), None);
    ask_openai(&p, "gpt-4o-mini").await.unwrap();
    assert_eq!(p.gate().requests_per_minute(), Some(300.0));
}
