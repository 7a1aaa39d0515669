//! The sandbox on a free loopback port, and a plain HTTP client holding one of its tokens.

#![allow(dead_code)]

use enrichd_helpscout::sandbox::{CLIENT_ID, CLIENT_SECRET, HelpScoutSandbox};
use serde_json::{Value, json};

pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub token: String,
}

impl Api {
    /// Starts `sandbox` and obtains a token with the sandbox's app credentials.
    pub async fn start(sandbox: &HelpScoutSandbox) -> Api {
        let addr = sandbox.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let base = format!("http://{addr}");
        let http = enrichd_connector::http::client(std::time::Duration::from_secs(10));
        let body: Value = http
            .post(format!("{base}/v2/oauth2/token"))
            .json(&json!({"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = body["access_token"].as_str().unwrap().to_owned();
        Api { base, http, token }
    }

    /// One request with the bearer token (`body` as JSON): status, headers, body text.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }
}
