//! A webhook receiver on a loopback port, for notification tests: it checks each delivery's
//! signature the way a receiver is told to in `docs/notifications.md` (its own HMAC-SHA256 over
//! `timestamp.body`, not enrichd's code), keeps what arrived, and can answer the first requests
//! with a server error to make enrichd retry.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// One request that reached the receiver.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: serde_json::Value,
    /// The signature matched the shared secret and the timestamp was within five minutes.
    pub signature_valid: bool,
    /// What the receiver answered.
    pub answered: u16,
    /// `X-Enrichd-Delivery`.
    pub delivery: String,
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    /// Requests still to answer with 500.
    fail_next: usize,
}

/// The receiver; cheap to clone.
#[derive(Clone)]
pub struct Receiver {
    secret: Arc<String>,
    inner: Arc<Mutex<Inner>>,
    pub addr: SocketAddr,
}

impl Receiver {
    /// Starts a receiver that verifies signatures with `secret`, answering the first `fail_first`
    /// requests with 500.
    pub async fn start(secret: &str, fail_first: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = Receiver {
            secret: Arc::new(secret.to_owned()),
            inner: Arc::new(Mutex::new(Inner { received: Vec::new(), fail_next: fail_first })),
            addr,
        };
        let app = Router::new().route("/{*path}", post(receive)).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    /// The URL to configure; its path stands for a secret (as Slack's URLs carry one).
    pub fn url(&self, path_secret: &str) -> String {
        format!("http://{}/hooks/{path_secret}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// The requests that carried `event`.
    pub fn of(&self, event: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.body["event"] == event).collect()
    }

    /// Waits (up to `within`) until at least `n` notifications of `event` arrived, then `settle`
    /// longer, so that one sent twice would be here too; returns every one of `event`.
    pub async fn settled(
        &self,
        event: &str,
        n: usize,
        within: std::time::Duration,
        settle: std::time::Duration,
    ) -> Vec<Received> {
        self.wait_for(within, event, |got| got.iter().filter(|r| r.body["event"] == event).count() >= n).await;
        tokio::time::sleep(settle).await;
        self.of(event)
    }

    /// Waits until `done` holds for what arrived, or panics after `within` with what did.
    pub async fn wait_for(&self, within: std::time::Duration, what: &str, done: impl Fn(&[Received]) -> bool) {
        let start = std::time::Instant::now();
        loop {
            let got = self.received();
            if done(&got) {
                return;
            }
            assert!(start.elapsed() < within, "no {what} within {within:?}; received: {got:#?}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let timestamp = header("x-enrichd-timestamp");
    let signature = header("x-enrichd-signature");
    let fresh = timestamp.parse::<i64>().is_ok_and(|t| (t - chrono::Utc::now().timestamp()).abs() <= 300);
    let mut mac = Hmac::<Sha256>::new_from_slice(r.secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&body);
    let valid = fresh
        && signature
            .strip_prefix("sha256=")
            .and_then(|h| hex::decode(h).ok())
            .is_some_and(|sig| mac.verify_slice(&sig).is_ok());
    let mut inner = r.inner.lock().unwrap();
    let status = if inner.fail_next > 0 {
        inner.fail_next -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else if valid {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    inner.received.push(Received {
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        signature_valid: valid,
        answered: status.as_u16(),
        delivery: header("x-enrichd-delivery"),
    });
    status
}
