//! The Zendesk sandbox: an account in memory behind the Support API v2 paths enrichd uses, agreeing
//! with the recorded responses in `tests/fixtures/zendesk` (see `tests/fixtures_replay.rs`).
//!
//! What it reproduces, because a connector must cope with it:
//! - API-token Basic auth (`{email}/token:{token}`) and OAuth bearer tokens, `401 {"error":"Couldn't
//!   authenticate you"}` otherwise; a read-only bearer token whose writes are a 403 in the JSON:API
//!   `errors[]` shape (the other error shape, `{"error","description","details"}`, is everywhere else);
//! - tickets with `custom_fields`/`fields`, requesters in organisations (`organizations/show_many`), a "Category" dropdown (`tagger`) whose value is also a tag,
//!   and `updated_at` bumped by every change, each strictly later than the last (whole seconds);
//! - the incremental cursor export (`after_cursor`, `end_of_stream`, changes of the last minute held
//!   back, `start_time` at least a minute in the past, 10 requests per minute);
//! - Search (`type:ticket status<solved -tags:x custom_field_N:none ...`): 100 per page at most,
//!   1,000 results at most (page 11 at 100 per page is a 422), and an index that lags: a ticket is
//!   seen as it was [`ZendeskSandbox::set_search_lag`] seconds ago;
//! - `update_many` in its batch form answered with a queued `job_status`, polled through `queued` →
//!   `working` → `completed` with per-ticket `results` (a value that is no longer a field option
//!   fails that ticket only, and so does a ticket sent with `safe_update` whose `updated_stamp` is
//!   stale by then: `UpdateConflict`), the changes applied when the job completes, at most
//!   [`Faults::job_cap`] jobs unfinished at once;
//! - agents editing tickets while a run is under way ([`Faults::agent_edit_rate`]);
//! - single updates with `safe_update` + `updated_stamp` (409 on a stale stamp), `additional_tags` and
//!   `remove_tags` merging tags, `tags` replacing them, `comment` adding a public reply or private note;
//! - rate-limit headers on every response (`X-Rate-Limit`, `X-Rate-Limit-Remaining`,
//!   `ratelimit-limit`/`-remaining`/`-reset`), and injected 429s with `Retry-After` and a plain-text body
//!   and 503s, counted ([`Faults::rate_limited_requests`]) or as a seeded mix ([`Faults::rate_limit_rate`]).
//!
//! The sandbox clock is virtual (epoch seconds): tests move it with [`ZendeskSandbox::advance`].

mod generate;
mod http;
mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};

pub use generate::{AGENT_IDS, CATEGORIES, ORGANIZATIONS, sample, sentiment};
pub use webhook::{Delivery, sign as sign_webhook};

/// The e-mail address of the API user.
pub const EMAIL: &str = "admin@sandbox.example";
/// The API token every sandbox accepts.
pub const API_TOKEN: &str = "sandbox_api_token_0000000000000000000000";
/// An OAuth access token with read and write scope.
pub const OAUTH_TOKEN: &str = "sandbox_oauth_token_read_write_000000000";
/// An OAuth access token with read scope only.
pub const READ_ONLY_OAUTH_TOKEN: &str = "sandbox_oauth_token_read_only_0000000000";
/// The id of the "Category" dropdown custom field.
pub const CATEGORY_FIELD_ID: u64 = 360_011_759_674;
/// The id of the "Summary" text custom field.
pub const SUMMARY_FIELD_ID: u64 = 360_011_759_675;
/// The id of the "Sentiment" dropdown (`positive`, `neutral`, `negative`).
pub const SENTIMENT_FIELD_ID: u64 = 360_011_759_676;
/// The id of the "Language" text field (a BCP 47 tag).
pub const LANGUAGE_FIELD_ID: u64 = 360_011_759_677;
/// The Sentiment dropdown's option values.
pub const SENTIMENTS: [&str; 3] = ["positive", "neutral", "negative"];
/// The sandbox clock's start: 2026-01-05T09:00:00Z.
pub const START: i64 = 1_767_603_600;

/// A ticket as the sandbox keeps it (times in epoch seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Ticket {
    pub id: u64,
    pub created_at: i64,
    pub updated_at: i64,
    pub subject: String,
    pub description: String,
    pub priority: Option<String>,
    /// `type` (`question`, `incident`, `problem`, `task`).
    pub kind: Option<String>,
    pub status: String,
    pub requester_id: u64,
    pub organization_id: Option<u64>,
    pub assignee_id: Option<u64>,
    pub tags: Vec<String>,
    /// Custom field values by field id.
    pub custom: BTreeMap<u64, Value>,
}

/// One message of a ticket's conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Comment {
    pub id: u64,
    pub author_id: u64,
    pub body: String,
    pub public: bool,
    pub created_at: i64,
}

/// Who a user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    EndUser,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::EndUser => "end-user",
            Role::Agent => "agent",
        }
    }
}

/// A user (requester or agent).
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: u64,
    pub name: String,
    pub role: Role,
    pub organization_id: Option<u64>,
}

/// Faults injected into API requests.
#[derive(Debug, Clone)]
pub struct Faults {
    /// The next this many requests are answered 429 with `Retry-After` and a plain-text body.
    pub rate_limited_requests: u32,
    /// The `Retry-After` seconds of those 429s.
    pub retry_after_secs: u64,
    /// The next this many requests are answered 503.
    pub server_errors: u32,
    /// Share of requests (0.0..=1.0), drawn from the sandbox's seeded generator, answered 429 with
    /// `Retry-After` and a plain-text body.
    pub rate_limit_rate: f64,
    /// Share of requests (0.0..=1.0), drawn the same way, answered 503.
    pub server_error_rate: f64,
    /// Share of tickets (0.0..=1.0), drawn from the seeded generator, that an agent edits right
    /// after `show_many` returned them (priority `urgent`, tag `agent_edited`), so a write based on
    /// that read is stale: agents editing tickets while a run is under way.
    pub agent_edit_rate: f64,
    /// The account's API allowance per window, reported in the rate-limit headers: 2,500 a minute
    /// unless set, as an account with Zendesk's High Volume API add-on (Professional plans have 700,
    /// Team 200; set it to see enrichd pace itself).
    pub requests_per_window: u32,
    /// The window's length in (real) seconds (60, as Zendesk's).
    pub window_secs: u64,
    /// Whether requests past the allowance are refused with 429 (as Zendesk does); off by default so
    /// tests that measure enrichd's own speed are not paced by the account.
    pub enforce_allowance: bool,
    /// Incremental export requests allowed per (real) minute; `None` lifts the limit.
    pub incremental_per_minute: Option<u32>,
    /// How many jobs may be queued or working at once (Zendesk's job limit).
    pub job_cap: usize,
    /// Share of a job's tickets (0.0..=1.0), drawn from the seeded generator, that fail inside the
    /// job (`TicketUpdateFailed`) while the rest of the job succeeds.
    pub job_item_failure_rate: f64,
    /// How many polls a job answers `queued`, then `working`, before it completes.
    pub job_queued_polls: u32,
    pub job_working_polls: u32,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rate_limited_requests: 0,
            retry_after_secs: 1,
            server_errors: 0,
            rate_limit_rate: 0.0,
            server_error_rate: 0.0,
            agent_edit_rate: 0.0,
            requests_per_window: 2500,
            window_secs: 60,
            enforce_allowance: false,
            incremental_per_minute: Some(10),
            job_cap: 30,
            job_item_failure_rate: 0.0,
            job_queued_polls: 1,
            job_working_polls: 1,
        }
    }
}

/// Request counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub show_many: u64,
    pub incremental: u64,
    pub search: u64,
    pub update_many: u64,
    pub job_polls: u64,
    pub single_updates: u64,
    pub unauthorized: u64,
    pub rate_limited: u64,
}

/// A write request as the sandbox received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub method: String,
    /// The path without the query (`/api/v2/tickets/update_many.json`).
    pub path: String,
    /// The JSON body (`Null` when it did not parse).
    pub body: Value,
}

/// A submitted `update_many` job.
#[derive(Debug, Clone)]
struct Job {
    id: String,
    updates: Vec<Value>,
    polls: u32,
    results: Option<Vec<Value>>,
    completed_at: Option<i64>,
}

pub(crate) struct State {
    now: i64,
    tickets: BTreeMap<u64, Ticket>,
    comments: BTreeMap<u64, Vec<Comment>>,
    users: BTreeMap<u64, User>,
    fields: Vec<Value>,
    next_comment_id: u64,
    next_ticket_id: u64,
    jobs: HashMap<String, Job>,
    job_order: Vec<String>,
    /// How many times each ticket was part of a submitted job.
    submissions: HashMap<u64, u32>,
    search_lag: i64,
    /// The search index: each ticket as it was when last indexed.
    index: BTreeMap<u64, Ticket>,
    faults: Faults,
    stats: Stats,
    incremental_calls: Vec<std::time::Instant>,
    /// The write requests received (`PUT`s), in order.
    received: Vec<Received>,
    window: (std::time::Instant, u32),
    job_seq: u64,
    /// Draws the fault mix (seeded by the sandbox's seed).
    rng: rand_chacha::ChaCha8Rng,
    /// Tickets agents edited by [`Faults::agent_edit_rate`], in order.
    agent_edited: Vec<u64>,
    /// Where ticket-created events go ([`ZendeskSandbox::set_webhook`]), and what was delivered.
    webhook: Option<webhook::Webhook>,
    deliveries: Vec<Delivery>,
}

/// A Zendesk account in memory. Clones share the account.
#[derive(Clone)]
pub struct ZendeskSandbox {
    state: Arc<Mutex<State>>,
}

impl ZendeskSandbox {
    /// `count` generated tickets (seeded), about 40% of them already triaged by agents.
    pub fn new(count: u64, seed: u64) -> Self {
        Self::with_triaged_share(count, seed, 0.4)
    }

    /// Like [`ZendeskSandbox::new`], with the share of tickets agents already triaged.
    pub fn with_triaged_share(count: u64, seed: u64, triaged_share: f64) -> Self {
        let generated = generate::tickets(count, seed, START, triaged_share);
        let state = State {
            now: START,
            index: generated.tickets.clone(),
            tickets: generated.tickets,
            comments: generated.comments,
            users: generated.users,
            fields: ticket_fields(),
            next_comment_id: generated.next_comment_id,
            next_ticket_id: count + 1,
            jobs: HashMap::new(),
            job_order: Vec::new(),
            submissions: HashMap::new(),
            search_lag: 180,
            faults: Faults::default(),
            stats: Stats::default(),
            incremental_calls: Vec::new(),
            received: Vec::new(),
            window: (std::time::Instant::now(), 0),
            job_seq: 0,
            rng: rand::SeedableRng::seed_from_u64(seed ^ 0x5eed_fa17),
            agent_edited: Vec::new(),
            webhook: None,
            deliveries: Vec::new(),
        };
        Self { state: Arc::new(Mutex::new(state)) }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The router serving the API paths.
    pub fn router(&self) -> axum::Router {
        http::router(self.clone())
    }

    /// Serves the API on `addr` until the process ends; returns the bound address.
    pub async fn start(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let router = self.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "zendesk sandbox stopped");
            }
        });
        Ok(bound)
    }

    /// The sandbox clock (epoch seconds).
    pub fn now(&self) -> i64 {
        self.lock().now
    }

    /// Moves the sandbox clock forward.
    pub fn advance(&self, seconds: i64) {
        self.lock().now += seconds.max(0);
    }

    /// How many seconds Search lags behind changes (180 unless set).
    pub fn set_search_lag(&self, seconds: i64) {
        self.lock().search_lag = seconds.max(0);
    }

    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// A ticket as the API shows it.
    pub fn ticket(&self, id: u64) -> Option<Value> {
        let state = self.lock();
        state.tickets.get(&id).map(|t| render_ticket(t, &state.fields, "http://sandbox"))
    }

    /// The ids of all tickets.
    pub fn ticket_ids(&self) -> Vec<u64> {
        self.lock().tickets.keys().copied().collect()
    }

    /// A ticket's conversation, oldest first.
    pub fn comments(&self, id: u64) -> Vec<Comment> {
        self.lock().comments.get(&id).cloned().unwrap_or_default()
    }

    /// Every write request received so far (`PUT`), authenticated or not, in order.
    pub fn received_writes(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// The tickets agents edited through [`Faults::agent_edit_rate`], in order.
    pub fn agent_edited(&self) -> Vec<u64> {
        self.lock().agent_edited.clone()
    }

    /// How many submitted jobs included ticket `id`.
    pub fn submissions(&self, id: u64) -> u32 {
        self.lock().submissions.get(&id).copied().unwrap_or(0)
    }

    /// An agent changes a ticket in the Zendesk UI (the body is a ticket update, as in the API).
    pub fn edit_as_agent(&self, id: u64, update: Value) -> Result<(), String> {
        let mut state = self.lock();
        state.apply(id, &update, AGENT_IDS[1]).map_err(|(_, details)| details)
    }

    /// A new ticket from an end user, created now; returns its id.
    pub fn create_ticket(&self, subject: &str, body: &str) -> u64 {
        let mut state = self.lock();
        let id = state.next_ticket_id;
        state.next_ticket_id += 1;
        let now = state.now;
        let requester = 362_000_000_000 + id;
        state.users.insert(
            requester,
            User { id: requester, name: format!("Customer {id}"), role: Role::EndUser, organization_id: None },
        );
        let mut custom = BTreeMap::new();
        for id in [CATEGORY_FIELD_ID, SUMMARY_FIELD_ID, SENTIMENT_FIELD_ID, LANGUAGE_FIELD_ID] {
            custom.insert(id, Value::Null);
        }
        state.tickets.insert(
            id,
            Ticket {
                id,
                created_at: now,
                updated_at: now,
                subject: subject.to_owned(),
                description: body.to_owned(),
                priority: None,
                kind: None,
                status: "new".into(),
                requester_id: requester,
                organization_id: None,
                assignee_id: None,
                tags: Vec::new(),
                custom,
            },
        );
        let comment_id = state.next_comment_id;
        state.next_comment_id += 1;
        state.comments.insert(
            id,
            vec![Comment {
                id: comment_id,
                author_id: requester,
                body: body.to_owned(),
                public: true,
                created_at: now,
            }],
        );
        let hook = state.webhook.clone();
        drop(state);
        if let Some(hook) = hook {
            webhook::deliver(self, hook, id, subject);
        }
        id
    }

    /// Subscribes a webhook to ticket creation: from now on every [`ZendeskSandbox::create_ticket`]
    /// POSTs a signed `zen:event-type:ticket.created` event to `url` (in the background; see
    /// [`ZendeskSandbox::deliveries`]).
    pub fn set_webhook(&self, url: &str, secret: &str) {
        self.lock().webhook = Some(webhook::Webhook { url: url.to_owned(), secret: secret.to_owned() });
    }

    /// The webhook deliveries made so far, in the order they were answered.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.lock().deliveries.clone()
    }

    /// An admin deletes a dropdown option (by its tag value) from the Category field.
    pub fn delete_category_option(&self, value: &str) {
        let mut state = self.lock();
        for field in &mut state.fields {
            if field["id"] == CATEGORY_FIELD_ID
                && let Some(options) = field["custom_field_options"].as_array_mut()
            {
                options.retain(|o| o["value"] != value);
            }
        }
    }
}

impl State {
    /// The next change stamp: now, and strictly after the ticket's last change.
    fn stamp(&mut self, previous: i64) -> i64 {
        let stamp = self.now.max(previous + 1);
        self.now = stamp;
        stamp
    }

    fn field(&self, id: u64) -> Option<&Value> {
        self.fields.iter().find(|f| f["id"] == id)
    }

    /// Applies a ticket update body (the object inside `{"ticket":…}`) as `author`. On failure nothing
    /// changes and the error is `(code, details)`.
    fn apply(&mut self, id: u64, update: &Value, author: u64) -> Result<(), (&'static str, String)> {
        let Some(current) = self.tickets.get(&id).cloned() else {
            return Err(("RecordNotFound", format!("ticket {id} not found")));
        };
        let mut ticket = current.clone();
        let text = |key: &str| update.get(key).and_then(Value::as_str).map(str::to_owned);
        let invalid = |field: &str, value: &Value| ("RecordInvalid", format!("{field}: {value} is not a valid value"));
        if let Some(v) = update.get("priority") {
            match v.as_str() {
                Some(p) if ["low", "normal", "high", "urgent"].contains(&p) => ticket.priority = Some(p.into()),
                None if v.is_null() => ticket.priority = None,
                _ => return Err(invalid("priority", v)),
            }
        }
        if let Some(v) = update.get("type") {
            match v.as_str() {
                Some(p) if ["question", "incident", "problem", "task"].contains(&p) => ticket.kind = Some(p.into()),
                None if v.is_null() => ticket.kind = None,
                _ => return Err(invalid("type", v)),
            }
        }
        if let Some(v) = update.get("status") {
            match v.as_str() {
                Some(p) if ["new", "open", "pending", "hold", "solved", "closed"].contains(&p) => {
                    ticket.status = p.into()
                }
                _ => return Err(invalid("status", v)),
            }
        }
        if let Some(subject) = text("subject") {
            ticket.subject = subject;
        }
        let tag_list = |key: &str| -> Result<Option<Vec<String>>, (&'static str, String)> {
            match update.get(key) {
                None => Ok(None),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|t| t.as_str().map(|s| s.trim().to_lowercase()).ok_or_else(|| invalid(key, t)))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Some(Value::String(s)) => Ok(Some(s.split_whitespace().map(str::to_lowercase).collect())),
                Some(other) => Err(invalid(key, other)),
            }
        };
        if let Some(tags) = tag_list("tags")? {
            ticket.tags = tags;
        }
        if let Some(add) = tag_list("additional_tags")? {
            ticket.tags.extend(add);
        }
        if let Some(remove) = tag_list("remove_tags")? {
            ticket.tags.retain(|t| !remove.contains(t));
        }
        let custom = update.get("custom_fields").or_else(|| update.get("fields"));
        if let Some(custom) = custom {
            let Some(entries) = custom.as_array() else { return Err(invalid("custom_fields", custom)) };
            for entry in entries {
                let Some(field_id) = entry["id"].as_u64() else { return Err(invalid("custom_fields", entry)) };
                let Some(field) = self.field(field_id) else {
                    return Err(("RecordInvalid", format!("custom field {field_id} does not exist")));
                };
                let value = entry.get("value").cloned().unwrap_or(Value::Null);
                if field["type"] == "tagger" {
                    let options: Vec<&str> = field["custom_field_options"]
                        .as_array()
                        .map(|o| o.iter().filter_map(|o| o["value"].as_str()).collect())
                        .unwrap_or_default();
                    if !value.is_null() && !value.as_str().is_some_and(|v| options.contains(&v)) {
                        return Err((
                            "RecordInvalid",
                            format!(
                                "{}: {value} is not one of the field's options",
                                field["title"].as_str().unwrap_or("field")
                            ),
                        ));
                    }
                    // A dropdown's value is also a tag on the ticket.
                    ticket.tags.retain(|t| !options.contains(&t.as_str()));
                    if let Some(v) = value.as_str() {
                        ticket.tags.push(v.to_owned());
                    }
                } else if !(value.is_null() || value.is_string()) {
                    return Err(invalid(field["title"].as_str().unwrap_or("field"), &value));
                }
                ticket.custom.insert(field_id, value);
            }
        }
        ticket.tags.sort();
        ticket.tags.dedup();
        let comment = update.get("comment").filter(|c| !c.is_null());
        if ticket == current && comment.is_none() {
            return Ok(());
        }
        ticket.updated_at = self.stamp(current.updated_at);
        if let Some(comment) = comment {
            let body = comment["body"].as_str().or(comment["html_body"].as_str()).unwrap_or("").to_owned();
            if body.trim().is_empty() {
                return Err(("RecordInvalid", "comment: body is empty".into()));
            }
            let public = comment["public"].as_bool().unwrap_or(true);
            let comment_id = self.next_comment_id;
            self.next_comment_id += 1;
            let created_at = ticket.updated_at;
            self.comments.entry(id).or_default().push(Comment {
                id: comment_id,
                author_id: author,
                body,
                public,
                created_at,
            });
        }
        self.tickets.insert(id, ticket);
        Ok(())
    }
}

/// The account's ticket fields: the system fields, the "Category" dropdown and a "Summary" text field.
fn ticket_fields() -> Vec<Value> {
    let field = |id: u64, kind: &str, title: &str, removable: bool| {
        json!({
            "url": format!("https://sandbox.zendesk.com/api/v2/ticket_fields/{id}.json"),
            "id": id, "type": kind, "title": title, "raw_title": title, "description": "", "raw_description": "",
            "position": 0, "active": true, "required": false, "collapsed_for_agents": false,
            "regexp_for_validation": null, "title_in_portal": title, "raw_title_in_portal": title,
            "visible_in_portal": false, "editable_in_portal": false, "required_in_portal": false, "tag": null,
            "created_at": "2025-11-03T10:00:00Z", "updated_at": "2025-11-03T10:00:00Z", "removable": removable,
            "agent_description": null
        })
    };
    let mut fields = vec![
        field(360_000_000_001, "subject", "Subject", false),
        field(360_000_000_002, "description", "Description", false),
        field(360_000_000_003, "status", "Status", false),
        field(360_000_000_004, "tickettype", "Type", false),
        field(360_000_000_005, "priority", "Priority", false),
        field(360_000_000_006, "group", "Group", false),
        field(360_000_000_007, "assignee", "Assignee", false),
    ];
    let mut category = field(CATEGORY_FIELD_ID, "tagger", "Category", true);
    category["custom_field_options"] = CATEGORIES
        .iter()
        .enumerate()
        .map(|(i, (name, value))| {
            json!({"id": 360_013_088_000u64 + i as u64, "name": name, "raw_name": name, "value": value, "default": false})
        })
        .collect();
    fields.push(category);
    fields.push(field(SUMMARY_FIELD_ID, "text", "Summary", true));
    let mut sentiment = field(SENTIMENT_FIELD_ID, "tagger", "Sentiment", true);
    sentiment["custom_field_options"] = SENTIMENTS
        .iter()
        .enumerate()
        .map(|(i, value)| {
            let mut name = value.to_string();
            name[..1].make_ascii_uppercase();
            json!({"id": 360_013_089_000u64 + i as u64, "name": name, "raw_name": name, "value": value, "default": false})
        })
        .collect();
    fields.push(sentiment);
    fields.push(field(LANGUAGE_FIELD_ID, "text", "Language", true));
    fields
}

pub(crate) fn iso(epoch: i64) -> String {
    chrono::DateTime::from_timestamp(epoch, 0).unwrap_or_default().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A ticket as the API shows it (the key set and order of `GET /tickets/{id}.json`).
pub(crate) fn render_ticket(t: &Ticket, fields: &[Value], base: &str) -> Value {
    let custom: Vec<Value> = fields
        .iter()
        .filter(|f| f["removable"] == true)
        .filter_map(|f| f["id"].as_u64())
        .map(|id| json!({"id": id, "value": t.custom.get(&id).cloned().unwrap_or(Value::Null)}))
        .collect();
    json!({
        "url": format!("{base}/api/v2/tickets/{}.json", t.id),
        "id": t.id,
        "external_id": null,
        "via": {"channel": "email", "source": {"from": {}, "to": {}, "rel": null}},
        "created_at": iso(t.created_at),
        "updated_at": iso(t.updated_at),
        "type": t.kind,
        "subject": t.subject,
        "raw_subject": t.subject,
        "description": t.description,
        "priority": t.priority,
        "status": t.status,
        "recipient": null,
        "requester_id": t.requester_id,
        "submitter_id": t.requester_id,
        "assignee_id": t.assignee_id,
        "organization_id": t.organization_id,
        "group_id": null,
        "collaborator_ids": [],
        "follower_ids": [],
        "email_cc_ids": [],
        "forum_topic_id": null,
        "problem_id": null,
        "has_incidents": false,
        "is_public": true,
        "due_at": null,
        "tags": t.tags,
        "custom_fields": custom,
        "satisfaction_rating": null,
        "sharing_agreement_ids": [],
        "custom_status_id": 6_130_830_355_738u64,
        "fields": custom,
        "followup_ids": [],
        "ticket_form_id": 6_130_830_344_474u64,
        "brand_id": 6_130_830_354_842u64,
        "allow_channelback": false,
        "allow_attachments": true,
        "from_messaging_channel": false
    })
}
