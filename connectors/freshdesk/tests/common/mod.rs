//! A plain HTTP client for the sandbox, authenticated with its API key.

use enrichd_freshdesk::sandbox::{API_KEY, FreshdeskSandbox};
use serde_json::Value;

pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    /// Starts `sandbox` on a free loopback port and points a client at it.
    pub async fn start(sandbox: &FreshdeskSandbox) -> Api {
        let addr = sandbox.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        Api {
            base: format!("http://{addr}"),
            http: enrichd_connector::http::client(std::time::Duration::from_secs(10)),
        }
    }

    /// One request (`API_KEY:X` as Basic, `body` as JSON): status, headers, body text.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).basic_auth(API_KEY, Some("X"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }
}
