//! A model server for tests, benchmarks and demos ("simulated model"). It speaks OpenAI Chat
//! Completions (also under Azure's two URL styles), Anthropic Messages, Gemini `generateContent`,
//! and the three providers' batch APIs. Its answers are deterministic functions of the request: every string property of the
//! requested schema is `"<property> for <subject>"`, where the subject is the first line of the user
//! message (cut to the schema's `maxLength`), so a test can tell which record an answer was produced
//! for. A packed prompt (several `<item id="…">` blocks answered as `{items: [{id, …}]}`) is answered
//! per item, the subject being each block's first line. A regeneration's reviewer note ("shorter",
//! "mention the material") is honoured (`revise`), so a regenerated answer visibly differs.
//!
//! Faults can be injected: latency, 5xx, 429 with the provider's real headers (with or without
//! `retry-after`), out-of-money 429s, requests that hang past the client's timeout, answers cut
//! off mid-JSON, invalid JSON, refusals, packed answers that drop an id, batches that expire with
//! partial results. A request rate can be enforced as a token bucket, reported in the providers'
//! rate-limit headers on every answer, with 429s beyond it. Faults are drawn from a seeded
//! generator after [`ProviderSandbox::set_seed`], so a chaos run can be replayed, and the arrival
//! time of every realtime request is kept for checking a rate limit from the outside.

mod anthropic;
pub mod classify;
mod copy;
pub mod documents;
mod gemini;
mod openai;
mod revise;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::HeaderMap;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

/// Faults injected into model requests (realtime requests, and the lines of batches).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub latency: Duration,
    pub server_error_rate: f64,
    pub rate_limit_rate: f64,
    /// Injected 429s carry no `retry-after` (the client must back off on its own).
    pub rate_limit_without_retry_after: bool,
    /// The wait an injected 429 asks for (1 s when zero). OpenAI's `retry-after-ms` carries it to
    /// the millisecond; `retry-after` rounds it up to whole seconds.
    pub retry_after: Duration,
    /// Share of requests refused with an out-of-money 429 (`insufficient_quota`,
    /// `enforced_spend_limit_reached`, Gemini's used-up daily quota).
    pub quota_rate: f64,
    /// Share of requests that hang for `hang` before answering (so the client's timeout fires).
    pub timeout_rate: f64,
    pub hang: Duration,
    /// Share of answers cut off mid-JSON (`finish_reason: "length"`, `stop_reason: "max_tokens"`).
    pub truncated_rate: f64,
    /// Share of answers that are not JSON at all.
    pub invalid_json_rate: f64,
    /// Share of answers that are refusals.
    pub refusal_rate: f64,
    /// Share of packed answers that leave out one item.
    pub packed_drop_rate: f64,
    /// Status polls a batch takes before it ends (0 and 1 both mean: ended at the first poll).
    pub batch_polls: u32,
    /// A batch expires after answering this many of its lines; the rest come back expired.
    pub batch_expire_after: Option<usize>,
}

/// A request rate the sandbox enforces, like a provider account's limit.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub requests_per_second: f64,
}

/// Request counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Realtime requests received (including refused ones).
    pub requests: u64,
    /// Realtime answers given, plus batch lines answered.
    pub answered: u64,
    /// Injected faults.
    pub faults: u64,
    /// 429s sent because the enforced rate limit was exceeded.
    pub rate_limited: u64,
    /// Batches created.
    pub batches: u64,
    /// Requests received inside batches.
    pub batch_lines: u64,
    /// Realtime requests being handled right now, and the most there ever were at once.
    pub in_flight: u64,
    pub max_in_flight: u64,
}

/// A request as received, for checking what clients send.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: &'static str,
    pub path: String,
    pub body: Value,
}

struct Bucket {
    limit: RateLimit,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn capacity(&self) -> f64 {
        self.limit.requests_per_second.max(1.0)
    }

    fn refill(&mut self) {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.limit.requests_per_second)
            .min(self.capacity());
        self.at = now;
    }

    /// Time until the bucket is full again.
    fn reset(&self) -> Duration {
        Duration::from_secs_f64(((self.capacity() - self.tokens) / self.limit.requests_per_second).max(0.0))
    }
}

/// What the rate-limit headers of an answer report.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateState {
    pub per_minute: u64,
    pub remaining: u64,
    pub reset: Duration,
}

/// A batch as the sandbox keeps it.
pub(crate) struct Batch {
    pub kind: BatchKind,
    /// `(custom_id, request body)` in submission order.
    pub lines: Vec<(String, Value)>,
    pub polls: u32,
    pub created: u64,
    pub metadata: Value,
    pub cancelled: bool,
    /// Set once the batch has ended: `(custom_id, outcome)` in the order results are given (not the
    /// submission order).
    pub results: Option<Vec<(String, LineOutcome)>>,
    pub expired: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchKind {
    OpenAi,
    Anthropic,
    Gemini,
}

/// What happened to one line of a batch.
pub(crate) enum LineOutcome {
    /// The realtime answer body.
    Answered(Value),
    /// A per-request HTTP error: status and error body.
    Failed(u16, Value),
    Expired,
    Cancelled,
}

#[derive(Default)]
struct Inner {
    faults: Faults,
    stats: Stats,
    subjects: Vec<String>,
    bucket: Option<Bucket>,
    record: bool,
    received: Vec<Received>,
    files: BTreeMap<String, Vec<u8>>,
    batches: BTreeMap<String, Batch>,
    next_id: u64,
    /// The fault generator, when seeded.
    rng: Option<StdRng>,
    /// When each realtime request arrived.
    arrivals: Vec<Instant>,
    /// Answer with copy written from the record in the prompt ([`ProviderSandbox::write_copy`]).
    copywriter: bool,
    /// Answer as a classifier with a known error pattern ([`ProviderSandbox::classify`]).
    classifier: Option<Arc<classify::Classifier>>,
    /// Share of the properties read from a document's ground truth that are misread ([`ProviderSandbox::misread`]).
    misread_rate: f64,
    /// Answer properties answered with these values ([`ProviderSandbox::answer_with`]).
    fixed: Map<String, Value>,
    /// Media type of each uploaded file (Gemini's File API).
    file_types: BTreeMap<String, String>,
}

/// A provider sandbox. Cloning shares it.
#[derive(Clone, Default)]
pub struct ProviderSandbox {
    api_key: Option<Arc<str>>,
    inner: Arc<Mutex<Inner>>,
}

impl ProviderSandbox {
    /// `api_key`: when set, requests must carry it (`Authorization: Bearer`, `x-api-key`, `api-key`,
    /// `x-goog-api-key` or Gemini's `?key=`).
    pub fn new(api_key: Option<&str>) -> Self {
        Self { api_key: api_key.map(Into::into), inner: Arc::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From now on, answers a prompt holding a product record with copy built from its facts (name,
    /// category, attributes, price) instead of the deterministic test answers: for demos.
    pub fn write_copy(&self, on: bool) {
        self.lock().copywriter = on;
    }

    /// From now on, answers these properties with these values wherever the answer format asks for
    /// them (every record of a packed request too), whatever else answers the rest: for a test that
    /// needs a particular answer (copy with markup a shop must never run, say). Empty: back to normal.
    pub fn answer_with(&self, properties: Map<String, Value>) {
        self.lock().fixed = properties;
    }

    /// From now on, answers every record in a prompt as `classifier` says (see [`classify`]: clues
    /// read from the record's data, and wrong answers with their own confidence for the records
    /// whose id hashes into a rule's buckets); `None` goes back to the plain answers.
    pub fn classify(&self, classifier: Option<classify::Classifier>) {
        self.lock().classifier = classifier.map(Arc::new);
    }

    /// From now on, misreads this share of the answer properties read from a document's ground
    /// truth (a number off by one, a string missing its last character), drawn from the seeded
    /// generator after [`ProviderSandbox::set_seed`]: extraction accuracy for `enrichd eval` that
    /// is not trivially 100 %. Off (0) by default.
    pub fn misread(&self, rate: f64) {
        self.lock().misread_rate = rate.clamp(0.0, 1.0);
    }

    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// Enforces `limit` from now on (`None` lifts it).
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        self.lock().bucket =
            limit.map(|limit| Bucket { limit, tokens: limit.requests_per_second.max(1.0), at: Instant::now() });
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// Draws faults from a generator seeded with `seed` from now on.
    pub fn set_seed(&self, seed: u64) {
        self.lock().rng = Some(StdRng::seed_from_u64(seed));
    }

    /// A uniform draw in `[0, 1)`: seeded when [`ProviderSandbox::set_seed`] was called.
    fn roll(&self) -> f64 {
        match self.lock().rng.as_mut() {
            Some(rng) => rng.random(),
            None => rand::rng().random(),
        }
    }

    /// When each realtime request arrived (refused ones too), in order.
    pub fn arrivals(&self) -> Vec<Instant> {
        self.lock().arrivals.clone()
    }

    /// The subject (first user-message line, or packed item line) of every answer, in order.
    pub fn subjects(&self) -> Vec<String> {
        self.lock().subjects.clone()
    }

    /// Keep every request body received from now on (see [`ProviderSandbox::received`]).
    pub fn record_requests(&self, on: bool) {
        self.lock().record = on;
    }

    /// The requests received while recording, in order.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    pub fn router(&self) -> Router {
        openai::routes().merge(anthropic::routes()).merge(gemini::routes()).with_state(self.clone())
    }

    /// Serves on `addr` in a background task; returns the bound address.
    pub async fn start(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let router = self.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "provider sandbox stopped");
            }
        });
        Ok(bound)
    }

    /// `Authorization: Bearer KEY` (OpenAI), `x-api-key: KEY` (Anthropic), `api-key: KEY` (Azure).
    pub(crate) fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(key) = &self.api_key else { return true };
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        header("authorization") == Some(&format!("Bearer {key}"))
            || header("x-api-key") == Some(key)
            || header("api-key") == Some(key)
    }

    pub(crate) fn log(&self, method: &'static str, path: &str, body: &Value) {
        let mut inner = self.lock();
        if inner.record {
            inner.received.push(Received { method, path: path.to_owned(), body: body.clone() });
        }
    }

    /// Counts a realtime request, waits the injected latency, enforces the rate limit and picks
    /// the fault to inject, if any.
    pub(crate) async fn begin(&self) -> Begin {
        let flight = InFlight(self.clone());
        let (faults, limited, rate) = {
            let mut inner = self.lock();
            inner.stats.requests += 1;
            inner.arrivals.push(Instant::now());
            inner.stats.in_flight += 1;
            inner.stats.max_in_flight = inner.stats.max_in_flight.max(inner.stats.in_flight);
            let faults = inner.faults.clone();
            let (limited, rate) = match inner.bucket.as_mut() {
                Some(bucket) => {
                    bucket.refill();
                    let limited = bucket.tokens < 1.0;
                    if !limited {
                        bucket.tokens -= 1.0;
                    }
                    let state = RateState {
                        per_minute: (bucket.limit.requests_per_second * 60.0).round() as u64,
                        remaining: bucket.tokens.floor() as u64,
                        reset: if limited {
                            Duration::from_secs_f64((1.0 - bucket.tokens) / bucket.limit.requests_per_second)
                        } else {
                            bucket.reset()
                        },
                    };
                    (limited, Some(state))
                }
                None => (false, None),
            };
            if limited {
                inner.stats.rate_limited += 1;
            }
            (faults, limited, rate)
        };
        if !faults.latency.is_zero() {
            tokio::time::sleep(faults.latency).await;
        }
        let fault = if limited { Some(Fault::RateLimited { retry_after: true }) } else { self.pick_fault(&faults) };
        if let Some(Fault::Hang) = fault {
            tokio::time::sleep(if faults.hang.is_zero() { Duration::from_secs(60) } else { faults.hang }).await;
        }
        Begin { faults, fault, rate, _flight: flight }
    }

    fn pick_fault(&self, faults: &Faults) -> Option<Fault> {
        let mut roll = self.roll();
        let mut pick = None;
        for (rate, fault) in [
            (faults.rate_limit_rate, Fault::RateLimited { retry_after: !faults.rate_limit_without_retry_after }),
            (faults.server_error_rate, Fault::ServerError),
            (faults.quota_rate, Fault::OutOfMoney),
            (faults.timeout_rate, Fault::Hang),
        ] {
            if roll < rate {
                pick = Some(fault);
                break;
            }
            roll -= rate;
        }
        if pick.is_some() {
            self.lock().stats.faults += 1;
        }
        pick
    }

    /// Decides how an answer goes wrong, if it does (and counts it).
    pub(crate) fn spoil(&self, faults: &Faults) -> Spoil {
        let mut roll = self.roll();
        for (rate, spoil) in [
            (faults.truncated_rate, Spoil::Truncated),
            (faults.invalid_json_rate, Spoil::InvalidJson),
            (faults.refusal_rate, Spoil::Refusal),
        ] {
            if roll < rate {
                self.lock().stats.faults += 1;
                return spoil;
            }
            roll -= rate;
        }
        Spoil::None
    }

    /// The answer to `user` under `schema`, with packed-item drops injected; records subjects. For
    /// a request carrying documents, the properties their ground truth holds are answered from it
    /// (per record id in a packed request), some misread when [`ProviderSandbox::misread`] is on.
    pub(crate) fn answer_reading(
        &self,
        faults: &Faults,
        schema: &Value,
        user: &str,
        carried: &[documents::Carried],
    ) -> Value {
        let answer = self.answer_plain(faults, schema, user);
        if carried.is_empty() {
            return answer;
        }
        let (single, by_record) = documents::truths(user, carried);
        if is_packed(schema) {
            let item_schema = &schema["properties"]["items"]["items"];
            let mut answer = answer;
            for item in answer["items"].as_array_mut().into_iter().flatten() {
                let id = item["id"].as_str().unwrap_or_default().to_owned();
                if let Some((_, truth)) = by_record.iter().find(|(owner, _)| *owner == id) {
                    let read = documents::answer_from_truth(item_schema, truth, item.clone());
                    *item = self.misread_some(read, truth);
                }
            }
            return answer;
        }
        match single {
            Some(truth) => {
                let read = documents::answer_from_truth(schema, &truth, answer);
                self.misread_some(read, &truth)
            }
            None => answer,
        }
    }

    /// Misreads each property that came from `truth` with the configured probability.
    fn misread_some(&self, mut answer: Value, truth: &Map<String, Value>) -> Value {
        let rate = self.lock().misread_rate;
        if rate <= 0.0 {
            return answer;
        }
        if let Some(out) = answer.as_object_mut() {
            for (name, value) in out.iter_mut() {
                if truth.contains_key(name) && self.roll() < rate {
                    *value = documents::misread(value);
                }
            }
        }
        answer
    }

    fn answer_plain(&self, faults: &Faults, schema: &Value, user: &str) -> Value {
        let (copywriter, classifier) = {
            let inner = self.lock();
            (inner.copywriter, inner.classifier.clone())
        };
        let written = match classifier {
            Some(c) => Some(c.answer(schema, user)),
            None => copywriter.then(|| copy::answer(schema, user)).flatten(),
        };
        let mut answer = written.unwrap_or_else(|| answer_to(schema, user));
        // A regeneration's note is honoured, so the new answer visibly differs from the first.
        if !is_packed(schema)
            && let Some(note) = revise::note_in(user)
        {
            revise::revise(
                &mut answer,
                schema,
                &note,
                revise::previous_in(user).as_ref(),
                copy::record_in(user).as_ref(),
            );
        }
        let fixed = self.lock().fixed.clone();
        if !fixed.is_empty() {
            let apply = |one: &mut Value| {
                for (name, value) in &fixed {
                    if let Some(slot) = one.get_mut(name) {
                        *slot = value.clone();
                    }
                }
            };
            if is_packed(schema) {
                answer.get_mut("items").and_then(Value::as_array_mut).into_iter().flatten().for_each(apply);
            } else {
                apply(&mut answer);
            }
        }
        if let Some(items) = answer.get_mut("items").and_then(Value::as_array_mut)
            && items.len() > 1
            && self.roll() < faults.packed_drop_rate
        {
            items.pop();
            self.lock().stats.faults += 1;
        }
        let mut inner = self.lock();
        inner.stats.answered += 1;
        match answer.get("items").and_then(Value::as_array) {
            Some(items) if is_packed(schema) => {
                let subjects: Vec<String> = packed_items(user)
                    .into_iter()
                    .filter(|(id, _, _)| items.iter().any(|i| i["id"].as_str() == Some(id)))
                    .map(|(_, s, _)| s)
                    .collect();
                inner.subjects.extend(subjects);
            }
            _ => inner.subjects.push(subject_of(user)),
        }
        answer
    }

    pub(crate) fn new_id(&self, prefix: &str) -> String {
        let mut inner = self.lock();
        inner.next_id += 1;
        format!("{prefix}{:06}", inner.next_id)
    }

    pub(crate) fn put_file(&self, id: &str, bytes: Vec<u8>) {
        self.lock().files.insert(id.to_owned(), bytes);
    }

    pub(crate) fn set_file_type(&self, id: &str, media_type: &str) {
        self.lock().file_types.insert(id.to_owned(), media_type.to_owned());
    }

    pub(crate) fn file_type(&self, id: &str) -> Option<String> {
        self.lock().file_types.get(id).cloned()
    }

    pub(crate) fn file(&self, id: &str) -> Option<Vec<u8>> {
        self.lock().files.get(id).cloned()
    }

    pub(crate) fn add_batch(&self, id: &str, batch: Batch) {
        let mut inner = self.lock();
        inner.stats.batches += 1;
        inner.stats.batch_lines += batch.lines.len() as u64;
        inner.batches.insert(id.to_owned(), batch);
    }

    /// Runs `f` on batch `id`, if there is one.
    pub(crate) fn with_batch<T>(&self, id: &str, f: impl FnOnce(&mut Batch) -> T) -> Option<T> {
        self.lock().batches.get_mut(id).map(f)
    }

    pub(crate) fn batch_ids(&self, kind: BatchKind) -> Vec<String> {
        self.lock().batches.iter().filter(|(_, b)| b.kind == kind).map(|(id, _)| id.clone()).collect()
    }

    /// Counts a status poll of batch `id` and, when it is due to end, works out its results:
    /// every line answered by `answer_line` (up to the expiry point), in an order that is not the
    /// submission order. Returns false when there is no such batch.
    pub(crate) fn advance_batch(&self, id: &str, answer_line: impl Fn(&Self, &Faults, &Value) -> LineOutcome) -> bool {
        let faults = self.lock().faults.clone();
        let due = self.with_batch(id, |b| {
            b.polls += 1;
            b.results.is_none() && (b.cancelled || b.polls >= faults.batch_polls.max(1))
        });
        let Some(due) = due else { return false };
        if !due {
            return true;
        }
        let (lines, cancelled) = self.with_batch(id, |b| (b.lines.clone(), b.cancelled)).unwrap_or_default();
        let keep = if cancelled { 0 } else { faults.batch_expire_after.unwrap_or(usize::MAX) };
        let mut results: Vec<(String, LineOutcome)> = lines
            .iter()
            .enumerate()
            .map(|(i, (custom_id, body))| {
                let outcome = if i < keep {
                    answer_line(self, &faults, body)
                } else if cancelled {
                    LineOutcome::Cancelled
                } else {
                    LineOutcome::Expired
                };
                (custom_id.clone(), outcome)
            })
            .collect();
        // Results come back out of order: odd positions first, then even ones reversed.
        let (mut odd, mut even): (Vec<_>, Vec<_>) = results.drain(..).enumerate().partition(|(i, _)| i % 2 == 1);
        even.reverse();
        results = odd.drain(..).chain(even).map(|(_, r)| r).collect();
        let expired = !cancelled && keep < lines.len();
        self.with_batch(id, |b| {
            b.results = Some(results);
            b.expired = expired;
        });
        true
    }
}

/// What [`ProviderSandbox::begin`] decided.
pub(crate) struct Begin {
    pub faults: Faults,
    pub fault: Option<Fault>,
    pub rate: Option<RateState>,
    /// Counts the request as in flight until the handler is done with it.
    _flight: InFlight,
}

/// One realtime request in flight; counted out when dropped.
pub(crate) struct InFlight(ProviderSandbox);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.stats.in_flight = inner.stats.in_flight.saturating_sub(1);
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    RateLimited { retry_after: bool },
    ServerError,
    OutOfMoney,
    Hang,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spoil {
    None,
    Truncated,
    InvalidJson,
    Refusal,
}

pub(crate) fn subject_of(user: &str) -> String {
    user.lines().next().unwrap_or_default().trim().chars().take(80).collect()
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Roughly what a tokenizer would count.
pub(crate) fn tokens(text: &str) -> u64 {
    text.len().div_ceil(4) as u64
}

/// Whether `schema` asks for a packed answer: `{items: [{id, …}]}`.
fn is_packed(schema: &Value) -> bool {
    schema["properties"]["items"]["type"] == "array"
        && schema["properties"]["items"]["items"]["properties"]["id"].is_object()
}

/// The `<item id="…">` blocks of a packed prompt: each id with its first line and its whole block.
fn packed_items(user: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut rest = user;
    while let Some(at) = rest.find("<item id=\"") {
        rest = &rest[at + "<item id=\"".len()..];
        let Some(end) = rest.find('"') else { break };
        let id = rest[..end].to_owned();
        let body = rest[end..].split_once('\n').map(|(_, b)| b).unwrap_or_default();
        let block = body.split("</item>").next().unwrap_or_default();
        out.push((id, subject_of(body), block.to_owned()));
    }
    out
}

/// The deterministic answer to `user` under `schema`, packed or not.
pub fn answer_to(schema: &Value, user: &str) -> Value {
    if is_packed(schema) {
        let item_schema = &schema["properties"]["items"]["items"];
        let items: Vec<Value> = packed_items(user)
            .into_iter()
            .map(|(id, subject, block)| {
                let mut answer = answer_in(item_schema, &subject, "answer", &subject);
                if answer.get("language").is_some_and(Value::is_string) {
                    answer["language"] = json!(language_of(&block));
                }
                answer["id"] = json!(id);
                answer
            })
            .collect();
        return json!({"items": items});
    }
    answer_in(schema, &subject_of(user), "answer", user)
}

/// A value that satisfies `schema` (the subset of JSON Schema that structured outputs use).
pub fn answer_for(schema: &Value, subject: &str, key: &str) -> Value {
    answer_in(schema, subject, key, "")
}

/// Integer ids that appear as `"id": N` in `text` (the record data of a prompt), in order, once each.
fn ids_in(text: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("\"id\":") {
        let rest = text[at + 5..].trim_start();
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if let Ok(n) = digits.parse::<i64>()
            && !out.contains(&n)
        {
            out.push(n);
        }
    }
    out
}

/// [`answer_for`], reading `prompt` where the answer must refer to the record: a list of objects
/// with an integer `id` (alt text per image id) gets one entry per id the record data holds.
fn answer_in(schema: &Value, subject: &str, key: &str, prompt: &str) -> Value {
    if let Some(first) = schema.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
        return first.clone();
    }
    let ty = match &schema["type"] {
        Value::Array(types) => types.iter().find_map(|t| t.as_str().filter(|t| *t != "null")).unwrap_or("null"),
        t => t.as_str().unwrap_or("string"),
    };
    match ty {
        "object" => {
            let mut out = Map::new();
            if let Some(props) = schema["properties"].as_object() {
                for (name, sub) in props {
                    out.insert(name.clone(), answer_in(sub, subject, name, prompt));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let items = &schema["items"];
            if items["properties"]["id"]["type"] == "integer" {
                let max = schema["maxItems"].as_u64().unwrap_or(u64::MAX) as usize;
                let entries = ids_in(prompt).into_iter().take(max).map(|id| {
                    let mut entry = answer_in(items, &format!("{subject} #{id}"), key, "");
                    entry["id"] = json!(id);
                    entry
                });
                return Value::Array(entries.collect());
            }
            let n = schema["minItems"].as_u64().unwrap_or(1).max(1);
            Value::Array((0..n).map(|_| answer_in(items, subject, key, prompt)).collect())
        }
        "integer" => json!(subject.len() as i64 % 100),
        "number" => match (schema["minimum"].as_f64(), schema["maximum"].as_f64()) {
            // Within the bounds (a confidence between 0 and 1), spread by the subject.
            (min, Some(max)) => {
                let min = min.unwrap_or(0.0);
                json!(min + (subject.len() % 100) as f64 / 100.0 * (max - min))
            }
            _ => json!((subject.len() % 100) as f64 / 10.0),
        },
        "boolean" => json!(true),
        "null" => Value::Null,
        _ if key == "language" => json!(language_of(if prompt.is_empty() { subject } else { prompt })),
        _ => {
            let mut text = format!("{key} for {subject}");
            let min = schema["minLength"].as_u64().unwrap_or(0) as usize;
            while text.chars().count() < min {
                text.push_str(" (sandbox)");
            }
            if let Some(max) = schema["maxLength"].as_u64() {
                text = text.chars().take(max as usize).collect();
            }
            json!(text)
        }
    }
}

/// The language a text is written in, as a BCP 47 tag, by a few telling words (the simulated model's
/// way of reading a ticket).
fn language_of(text: &str) -> &'static str {
    // The record, not the instructions around it.
    let text = text.rsplit_once("<record").map_or(text, |(_, record)| record);
    let lower = text.to_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    if any(&["guten tag", "bitte", "ich ", "nicht", "meine ", "rechnung", "konto"]) {
        "de"
    } else if any(&["bonjour", "merci", "je ", "mon ", "compte", "colis"]) {
        "fr"
    } else if any(&["hola", "gracias", "mi ", "cuenta", "pedido", "¿"]) {
        "es"
    } else if any(&["olá", "obrigad", "minha", "não "]) {
        "pt"
    } else {
        "en"
    }
}

/// Renders `answer` as the model's text, spoiled as decided.
pub(crate) fn spoiled_text(answer: &Value, spoil: Spoil) -> String {
    let text = answer.to_string();
    match spoil {
        Spoil::Truncated => text.chars().take(text.chars().count() / 2).collect(),
        Spoil::InvalidJson => format!("Sure! Here is the JSON you asked for: {text}"),
        Spoil::None | Spoil::Refusal => text,
    }
}

/// Go-style duration, as OpenAI's `x-ratelimit-reset-*` headers carry (`12ms`, `1.5s`, `6m0s`).
pub(crate) fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{}s", (d.as_secs_f64() * 1000.0).round() / 1000.0)
    } else {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_fit_the_schema() {
        let schema = json!({"type": "object", "properties": {
            "title": {"type": "string", "maxLength": 12},
            "body": {"type": "string", "minLength": 40},
            "priority": {"enum": ["low", "high"]},
            "tags": {"type": "array", "items": {"type": "string"}},
        }});
        let a = answer_for(&schema, "Product 9", "answer");
        assert_eq!(a["title"], "title for Pr");
        assert!(a["body"].as_str().unwrap().starts_with("body for Product 9"));
        assert!(a["body"].as_str().unwrap().len() >= 40);
        assert_eq!(a["priority"], "low");
        assert_eq!(a["tags"], json!(["tags for Product 9"]));
    }

    #[test]
    fn packed_prompts_are_answered_per_item() {
        let schema = json!({"type": "object", "properties": {"items": {"type": "array", "items": {
            "type": "object", "properties": {"id": {"type": "string"}, "title": {"type": "string"}}}}}});
        let user =
            "Describe each.\n<item id=\"7\">\nProduct 7: bolt\n</item>\n<item id=\"9\">\nProduct 9: nut\n</item>";
        let a = answer_to(&schema, user);
        assert_eq!(
            a,
            json!({"items": [{"id": "7", "title": "title for Product 7: bolt"}, {"id": "9", "title": "title for Product 9: nut"}]})
        );
    }

    #[test]
    fn documents_are_answered_from_their_truth_and_misread_when_asked() {
        let truth = json!({"invoice_number": "INV-9", "total": 10.0});
        let pdf = documents::text_pdf(&[vec!["Invoice INV-9".into()]], Some(&truth));
        let carried = vec![documents::from_bytes("inv.pdf", "application/pdf", pdf).unwrap()];
        let schema = json!({"type": "object", "properties": {
            "invoice_number": {"type": "string"}, "total": {"type": "number"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1}}});
        let sandbox = ProviderSandbox::new(None);
        let answer = sandbox.answer_reading(&Faults::default(), &schema, "Invoice 9", &carried);
        assert_eq!(answer, json!({"invoice_number": "INV-9", "total": 10.0, "confidence": 0.97}));
        sandbox.set_seed(1);
        sandbox.misread(1.0);
        let answer = sandbox.answer_reading(&Faults::default(), &schema, "Invoice 9", &carried);
        assert_eq!(answer["invoice_number"], "INV-");
        assert_eq!(answer["total"], 11.0);
        assert_eq!(answer["confidence"], 0.97, "a property the document does not hold is not misread");
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_millis(12)), "12ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
    }
}
