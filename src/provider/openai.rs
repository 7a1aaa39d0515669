//! OpenAI Chat Completions, and every server that speaks it (Ollama, vLLM, llama.cpp, OpenRouter).
//! Structured output goes out as `response_format: {type: "json_schema", strict: true}`.

use std::collections::BTreeMap;
use std::time::Duration;

use enrichd_connector::http;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Completion, CompletionRequest, ProviderError, ProviderErrorKind, TokenUsage, call_json, schema_name};
use crate::config::{OpenAiProvider, PriceConfig};

pub struct OpenAi {
    name: String,
    base_url: String,
    api_key: Option<SecretString>,
    http: reqwest::Client,
    pub(super) prices: BTreeMap<String, PriceConfig>,
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    content: Option<String>,
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: i64,
    completion_tokens: i64,
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    cached_tokens: Option<i64>,
}

impl OpenAi {
    pub fn new(name: &str, config: &OpenAiProvider) -> Self {
        Self {
            name: name.to_owned(),
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            api_key: config.api_key.as_ref().map(|s| s.0.clone()),
            http: http::client(Duration::from_secs_f64(config.timeout_seconds)),
            prices: config.prices.clone(),
        }
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => request.bearer_auth(key.expose_secret()),
            None => request,
        }
    }

    pub async fn check(&self) -> Result<(), ProviderError> {
        let what = format!("provider {}: list models", self.name);
        let _: Value = call_json(self.authorized(self.http.get(format!("{}/models", self.base_url))), &what).await?;
        Ok(())
    }

    pub async fn complete(&self, request: &CompletionRequest<'_>) -> Result<Completion, ProviderError> {
        let what = format!("provider {}: chat completion with {}", self.name, request.model);
        let mut messages = Vec::new();
        if let Some(system) = &request.prompt.system {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": request.prompt.user}));
        let mut body = json!({
            "model": request.model,
            "messages": messages,
            "max_completion_tokens": request.max_output_tokens,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": schema_name(request.schema_name), "strict": true, "schema": request.schema},
            },
        });
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        let post = self.authorized(self.http.post(format!("{}/chat/completions", self.base_url))).json(&body);
        let chat: ChatResponse = call_json(post, &what).await?;
        let usage = chat
            .usage
            .map(|u| TokenUsage {
                input: u.prompt_tokens,
                cached_input: u.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0),
                output: u.completion_tokens,
            })
            .unwrap_or_default();
        let bad = |message: String, raw: Option<String>| ProviderError {
            kind: ProviderErrorKind::BadAnswer,
            message,
            retry_after: None,
            raw,
            usage,
        };
        let Some(choice) = chat.choices.into_iter().next() else {
            return Err(bad(format!("{what}: the response has no choices"), None));
        };
        if let Some(refusal) = choice.message.refusal.filter(|r| !r.is_empty()) {
            return Err(bad(format!("{what}: the model refused: {refusal}"), Some(refusal)));
        }
        let raw = choice.message.content.unwrap_or_default();
        if choice.finish_reason.as_deref() == Some("length") {
            return Err(bad(
                format!("{what}: the answer was cut off at max_output_tokens ({})", request.max_output_tokens),
                Some(raw),
            ));
        }
        match serde_json::from_str::<Value>(&raw) {
            Ok(answer) => Ok(Completion { answer, raw, usage }),
            Err(e) => Err(bad(format!("{what}: the answer is not valid JSON: {e}"), Some(raw))),
        }
    }
}
