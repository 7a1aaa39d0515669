//! The Freshdesk sandbox: a helpdesk in memory behind the API v2 paths enrichd uses, agreeing with
//! the v2-shaped sample bodies in `tests/fixtures/freshdesk` (see `tests/fixtures_replay.rs`).
//!
//! What it reproduces, because a connector must cope with it:
//! - API-key Basic auth (`key:X`), `401 {"code":"invalid_credentials",…}` otherwise;
//! - tickets with integer `priority` (1 Low … 4 Urgent) and `status` (2 Open … 5 Closed), a `type`
//!   from the account's ticket types, flat `tags`, `custom_fields` as an object keyed by field name
//!   (`cf_category`, a dropdown whose `choices` are its labels), `company_id`, and `updated_at`
//!   bumped by every change, each strictly later than the last (whole seconds);
//! - `GET /tickets` with `updated_since` (inclusive), `order_by`/`order_type`, `per_page` ≤ 100,
//!   `include=description` (without it a listed ticket has no description), the default window of
//!   the last 30 days without `updated_since`, the `Link: <…>; rel="next"` header, and the page wall:
//!   a page past [`FreshdeskSandbox::set_page_wall`] (300 by default) is the documented 400;
//! - conversations (`incoming` for the customer's messages, `private` for notes; the ticket's first
//!   message is its description, not a conversation), paged like the list;
//! - `PUT /tickets/{id}` (`tags` replaces the set; a dropdown value that is not a choice, an unknown
//!   field, a wrong type are the validation-error shape `{"description":"Validation failed",
//!   "errors":[{"field","message","code"}]}`), `POST /tickets/{id}/notes`;
//! - `POST /tickets/bulk_update` answered `202 {"job_id"}`, the job (`GET /jobs/{id}`) going
//!   `QUEUED` → `IN_PROGRESS` → `COMPLETED` over polls, its `data` a per-ticket `success`/`error`
//!   list (a value that is no longer a choice fails that ticket; [`Faults::bulk_failure_rate`] fails a
//!   seeded share), the changes applied when the job completes;
//! - agents editing tickets between pull and write ([`FreshdeskSandbox::edit_as_agent`],
//!   [`Faults::agent_edit_rate`] just before a ticket's first read by id);
//! - `X-RateLimit-Total`/`-Remaining`/`-Used-CurrentRequest` on every response, injected 429s with
//!   `Retry-After`, 503s, malformed bodies and latency, counted or as a seeded mix.
//!
//! The sandbox clock is virtual (epoch seconds): tests move it with [`FreshdeskSandbox::advance`].
//! Not recorded anywhere we could find, so taken from Freshdesk's documentation and third-party
//! clients and flagged as such: the job body's exact keys and status spellings, the 404 body
//! (empty) and the 429 body (plain text).

mod generate;
mod http;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value, json};

pub use generate::{AGENT_IDS, CATEGORIES, COMPANIES, SENTIMENTS, TICKET_TYPES};

/// The API key every sandbox accepts (Basic auth `API_KEY:X`).
pub const API_KEY: &str = "sandboxfreshdeskapikey00";
/// The sandbox account's domain, as in `https://enrichd-sandbox.freshdesk.com` (used in the URLs
/// it renders; connect with `base_url` to wherever it is served).
pub const DOMAIN: &str = "enrichd-sandbox";
/// The name of the "Category" dropdown custom field (its label is "Category").
pub const CATEGORY_FIELD: &str = "cf_category";
/// The name of the "Summary" text custom field.
pub const SUMMARY_FIELD: &str = "cf_summary";
/// The name of the "Sentiment" dropdown custom field (choices [`SENTIMENTS`]).
pub const SENTIMENT_FIELD: &str = "cf_sentiment";
/// The name of the "Language" text custom field (a BCP 47 tag such as `de`).
pub const LANGUAGE_FIELD: &str = "cf_language";
/// The sandbox clock's start: 2026-01-05T09:00:00Z.
pub const START: i64 = 1_767_603_600;
/// Freshdesk's page wall: `GET /tickets` refuses pages past this.
pub const PAGE_WALL: u32 = 300;

/// A ticket as the sandbox keeps it (times in epoch seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Ticket {
    pub id: u64,
    pub created_at: i64,
    pub updated_at: i64,
    pub subject: String,
    /// The first message, as plain text (`description_text`).
    pub description: String,
    /// 1 Low, 2 Medium, 3 High, 4 Urgent.
    pub priority: u8,
    /// 2 Open, 3 Pending, 4 Resolved, 5 Closed.
    pub status: u8,
    /// `type` (one of [`TICKET_TYPES`]).
    pub kind: Option<String>,
    pub requester_id: u64,
    pub company_id: Option<u64>,
    pub responder_id: Option<u64>,
    pub tags: Vec<String>,
    /// Custom field values by field name (`cf_category`).
    pub custom: BTreeMap<String, Value>,
}

/// One entry of a ticket's conversation (a reply, a customer's message or a note).
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub id: u64,
    pub user_id: u64,
    pub body_text: String,
    /// From the customer.
    pub incoming: bool,
    /// A private note.
    pub private: bool,
    pub created_at: i64,
}

/// Faults injected into API requests.
#[derive(Debug, Clone)]
pub struct Faults {
    /// The next this many requests are answered 429 with `Retry-After`.
    pub rate_limited_requests: u32,
    /// The `Retry-After` seconds of those 429s.
    pub retry_after_secs: u64,
    /// The next this many requests are answered 503.
    pub server_errors: u32,
    /// The next this many requests are answered 200 with a truncated JSON body.
    pub malformed_bodies: u32,
    /// Share of requests (0.0..=1.0), drawn from the sandbox's seeded generator, answered 429.
    pub rate_limit_rate: f64,
    /// Share of requests, drawn the same way, answered 503.
    pub server_error_rate: f64,
    /// Milliseconds every request waits before it is answered.
    pub latency_ms: u64,
    /// Share of tickets that an agent edits (priority Urgent, tag `agent_edited`) after they were
    /// listed and just before the first `GET /tickets/{id}` of each is answered: agents at work
    /// between enrichd's pull and its re-read before writing, which that re-read must catch.
    pub agent_edit_rate: f64,
    /// Share of tickets in a bulk job that fail (seeded), as an account's automations or locks do.
    pub bulk_failure_rate: f64,
    /// How many polls a job answers `QUEUED`, then `IN_PROGRESS`, before it completes.
    pub job_queued_polls: u32,
    pub job_in_progress_polls: u32,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rate_limited_requests: 0,
            retry_after_secs: 1,
            server_errors: 0,
            malformed_bodies: 0,
            rate_limit_rate: 0.0,
            server_error_rate: 0.0,
            latency_ms: 0,
            agent_edit_rate: 0.0,
            bulk_failure_rate: 0.0,
            job_queued_polls: 1,
            job_in_progress_polls: 1,
        }
    }
}

/// Request counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub list_pages: u64,
    pub ticket_reads: u64,
    pub conversation_reads: u64,
    pub field_reads: u64,
    pub single_updates: u64,
    pub bulk_updates: u64,
    pub job_polls: u64,
    pub notes: u64,
    pub unauthorized: u64,
    pub rate_limited: u64,
    /// Requests refused at the page wall.
    pub page_wall_hits: u64,
}

/// A write request as the sandbox received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub method: String,
    /// The path without the query (`/api/v2/tickets/bulk_update`).
    pub path: String,
    /// The JSON body (`Null` when it did not parse).
    pub body: Value,
}

/// A submitted bulk update.
#[derive(Debug, Clone)]
struct Job {
    id: String,
    ids: Vec<u64>,
    properties: Value,
    polls: u32,
    created_at: i64,
    results: Option<Vec<Value>>,
    completed_at: Option<i64>,
}

/// A validation failure: (field, message, code).
pub(crate) type Invalid = (String, String, &'static str);

pub(crate) struct State {
    now: i64,
    tickets: BTreeMap<u64, Ticket>,
    conversations: BTreeMap<u64, Vec<Conversation>>,
    fields: Vec<Value>,
    next_conversation_id: u64,
    next_ticket_id: u64,
    jobs: HashMap<String, Job>,
    submissions: HashMap<u64, u32>,
    page_wall: u32,
    faults: Faults,
    stats: Stats,
    received: Vec<Received>,
    window: (std::time::Instant, u32),
    job_seq: u64,
    rng: rand_chacha::ChaCha8Rng,
    agent_edited: Vec<u64>,
    /// Tickets read by id at least once (the agent-edit fault strikes before the first read).
    read_by_id: std::collections::HashSet<u64>,
}

/// A Freshdesk helpdesk in memory. Clones share the account.
#[derive(Clone)]
pub struct FreshdeskSandbox {
    state: Arc<Mutex<State>>,
}

impl FreshdeskSandbox {
    /// `count` generated tickets (seeded), about 40% of them already triaged by agents.
    pub fn new(count: u64, seed: u64) -> Self {
        Self::with_triaged_share(count, seed, 0.4)
    }

    /// Like [`FreshdeskSandbox::new`], with the share of tickets agents already triaged.
    pub fn with_triaged_share(count: u64, seed: u64, triaged_share: f64) -> Self {
        let generated = generate::tickets(count, seed, START, triaged_share);
        let state = State {
            now: START,
            tickets: generated.tickets,
            conversations: generated.conversations,
            fields: ticket_fields(),
            next_conversation_id: generated.next_conversation_id,
            next_ticket_id: count + 1,
            jobs: HashMap::new(),
            submissions: HashMap::new(),
            page_wall: PAGE_WALL,
            faults: Faults::default(),
            stats: Stats::default(),
            received: Vec::new(),
            window: (std::time::Instant::now(), 0),
            job_seq: 0,
            rng: rand::SeedableRng::seed_from_u64(seed ^ 0xf4e5_d35c),
            agent_edited: Vec::new(),
            read_by_id: std::collections::HashSet::new(),
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
                tracing::error!(error = %e, "freshdesk sandbox stopped");
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

    /// The last page `GET /tickets` serves (Freshdesk: 300); tests lower it to reach it quickly.
    pub fn set_page_wall(&self, pages: u32) {
        self.lock().page_wall = pages.max(1);
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

    /// A ticket as `GET /tickets/{id}` shows it.
    pub fn ticket(&self, id: u64) -> Option<Value> {
        let state = self.lock();
        state.tickets.get(&id).map(|t| render_ticket(t, true))
    }

    /// The ids of all tickets.
    pub fn ticket_ids(&self) -> Vec<u64> {
        self.lock().tickets.keys().copied().collect()
    }

    /// A ticket's conversation (replies and notes, not the description), oldest first.
    pub fn conversations(&self, id: u64) -> Vec<Conversation> {
        self.lock().conversations.get(&id).cloned().unwrap_or_default()
    }

    /// Every write request received so far (`PUT`, `POST`), authenticated or not, in order.
    pub fn received_writes(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// The tickets agents edited through [`Faults::agent_edit_rate`], in order.
    pub fn agent_edited(&self) -> Vec<u64> {
        self.lock().agent_edited.clone()
    }

    /// How many writes (`PUT /tickets/{id}`, or a bulk job naming it) ticket `id` was part of.
    pub fn submissions(&self, id: u64) -> u32 {
        self.lock().submissions.get(&id).copied().unwrap_or(0)
    }

    /// An agent changes a ticket in the Freshdesk UI (the body is an API ticket update:
    /// `{"priority": 4, "tags": [...], "custom_fields": {"cf_category": "Billing"}}`).
    pub fn edit_as_agent(&self, id: u64, update: Value) -> Result<(), String> {
        let mut state = self.lock();
        state
            .apply(id, &update)
            .map_err(|errors| errors.iter().map(|(f, m, _)| format!("{f}: {m}")).collect::<Vec<_>>().join("; "))
    }

    /// A new ticket from a customer, created now; returns its id.
    pub fn create_ticket(&self, subject: &str, body: &str) -> u64 {
        let mut state = self.lock();
        let id = state.next_ticket_id;
        state.next_ticket_id += 1;
        let now = state.now;
        let mut custom = BTreeMap::new();
        for field in [CATEGORY_FIELD, SENTIMENT_FIELD, LANGUAGE_FIELD, SUMMARY_FIELD] {
            custom.insert(field.to_owned(), Value::Null);
        }
        let ticket = Ticket {
            id,
            created_at: now,
            updated_at: now,
            subject: subject.to_owned(),
            description: body.to_owned(),
            priority: 1,
            status: 2,
            kind: None,
            requester_id: generate::requester_of(id),
            company_id: None,
            responder_id: None,
            tags: Vec::new(),
            custom,
        };
        state.tickets.insert(id, ticket);
        state.conversations.insert(id, Vec::new());
        id
    }

    /// An admin deletes a choice from the Category dropdown.
    pub fn delete_category_choice(&self, choice: &str) {
        let mut state = self.lock();
        for field in &mut state.fields {
            if field["name"] == CATEGORY_FIELD
                && let Some(choices) = field["choices"].as_array_mut()
            {
                choices.retain(|c| c != choice);
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

    fn field(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|f| f["name"] == name)
    }

    /// The choices of a dropdown field, as strings.
    fn choices(&self, name: &str) -> Vec<String> {
        self.field(name)
            .and_then(|f| f["choices"].as_array())
            .map(|c| c.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Applies an API ticket update body. On failure nothing changes and every invalid field is
    /// reported, as Freshdesk's validation errors are.
    fn apply(&mut self, id: u64, update: &Value) -> Result<(), Vec<Invalid>> {
        let Some(current) = self.tickets.get(&id).cloned() else {
            return Err(vec![("id".into(), "There is no ticket with this id".into(), "invalid_value")]);
        };
        let Some(update) = update.as_object() else {
            return Err(vec![("ticket".into(), "The request body must be a JSON object".into(), "invalid_json")]);
        };
        let mut ticket = current.clone();
        let mut errors: Vec<Invalid> = Vec::new();
        let one_of = |values: &[String]| format!("It should be one of these values: '{}'", values.join(","));
        for (key, value) in update {
            match key.as_str() {
                "priority" => match value.as_u64().filter(|p| (1..=4).contains(p)) {
                    Some(p) => ticket.priority = p as u8,
                    None => {
                        errors.push((key.clone(), one_of(&["1", "2", "3", "4"].map(String::from)), "invalid_value"))
                    }
                },
                "status" => match value.as_u64().filter(|s| (2..=5).contains(s)) {
                    Some(s) => ticket.status = s as u8,
                    None => {
                        errors.push((key.clone(), one_of(&["2", "3", "4", "5"].map(String::from)), "invalid_value"))
                    }
                },
                "type" => {
                    let choices = self.choices("ticket_type");
                    match value {
                        Value::Null => ticket.kind = None,
                        Value::String(s) if choices.contains(s) => ticket.kind = Some(s.clone()),
                        _ => errors.push((key.clone(), one_of(&choices), "invalid_value")),
                    }
                }
                "subject" => match value.as_str() {
                    Some(s) if !s.trim().is_empty() => ticket.subject = s.to_owned(),
                    _ => errors.push((key.clone(), "It should be a/an String".into(), "datatype_mismatch")),
                },
                "tags" => match value.as_array() {
                    Some(tags) if tags.iter().all(Value::is_string) => {
                        ticket.tags = tags.iter().filter_map(Value::as_str).map(str::to_owned).collect();
                        ticket.tags.dedup();
                    }
                    _ => errors.push((key.clone(), "It should be a/an Array".into(), "datatype_mismatch")),
                },
                "custom_fields" => {
                    let Some(custom) = value.as_object() else {
                        errors.push((key.clone(), "It should be a/an key/value pair".into(), "datatype_mismatch"));
                        continue;
                    };
                    for (name, value) in custom {
                        let Some(field) = self.field(name).filter(|f| f["default"] == false) else {
                            errors.push((name.clone(), "Unexpected/invalid field in request".into(), "invalid_field"));
                            continue;
                        };
                        if field["type"] == "custom_dropdown" {
                            let choices = self.choices(name);
                            if !(value.is_null() || value.as_str().is_some_and(|v| choices.iter().any(|c| c == v))) {
                                errors.push((name.clone(), one_of(&choices), "invalid_value"));
                                continue;
                            }
                        } else if !(value.is_null() || value.is_string()) {
                            errors.push((name.clone(), "It should be a/an String".into(), "datatype_mismatch"));
                            continue;
                        }
                        ticket.custom.insert(name.clone(), value.clone());
                    }
                }
                other => errors.push((other.to_owned(), "Unexpected/invalid field in request".into(), "invalid_field")),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if ticket == current {
            return Ok(());
        }
        ticket.updated_at = self.stamp(current.updated_at);
        self.tickets.insert(id, ticket);
        Ok(())
    }

    /// Adds a note to a ticket as `user_id`; the ticket's `updated_at` moves too.
    fn add_note(&mut self, id: u64, body: &str, private: bool, user_id: u64) -> Option<Conversation> {
        let updated = self.tickets.get(&id)?.updated_at;
        let stamp = self.stamp(updated);
        if let Some(ticket) = self.tickets.get_mut(&id) {
            ticket.updated_at = stamp;
        }
        let note = Conversation {
            id: self.next_conversation_id,
            user_id,
            body_text: body.to_owned(),
            incoming: false,
            private,
            created_at: stamp,
        };
        self.next_conversation_id += 1;
        self.conversations.entry(id).or_default().push(note.clone());
        Some(note)
    }
}

/// The account's ticket fields: the default fields enrichd reads (with Freshdesk's choice shapes:
/// priority and status as label → number maps, ticket types as a list), the "Category" and
/// "Sentiment" dropdowns and the "Summary" and "Language" text fields (custom fields an admin adds
/// for triage: Freshdesk has none of them built in).
fn ticket_fields() -> Vec<Value> {
    let field = |id: u64, name: &str, label: &str, kind: &str, default: bool, position: u64| {
        json!({
            "id": id, "name": name, "label": label, "description": if default { format!("Ticket {}", label.to_lowercase()) } else { String::new() },
            "position": position, "required_for_closure": false, "required_for_agents": false, "type": kind,
            "default": default, "customers_can_edit": false, "label_for_customers": label,
            "required_for_customers": false, "displayed_to_customers": false,
            "created_at": "2025-11-03T10:00:00Z", "updated_at": "2025-11-03T10:00:00Z"
        })
    };
    let mut ticket_type = field(80_000_100_003, "ticket_type", "Type", "default_ticket_type", true, 3);
    ticket_type["choices"] = json!(TICKET_TYPES);
    let mut status = field(80_000_100_004, "status", "Status", "default_status", true, 4);
    status["choices"] = json!({
        "2": ["Open", "Being Processed"], "3": ["Pending", "Awaiting your Reply"],
        "4": ["Resolved", "This ticket has been Resolved"], "5": ["Closed", "This ticket has been Closed"]
    });
    let mut priority = field(80_000_100_005, "priority", "Priority", "default_priority", true, 5);
    priority["choices"] = json!({"Low": 1, "Medium": 2, "High": 3, "Urgent": 4});
    let mut category = field(80_000_100_010, CATEGORY_FIELD, "Category", "custom_dropdown", false, 10);
    category["choices"] = json!(CATEGORIES);
    let mut sentiment = field(80_000_100_012, SENTIMENT_FIELD, "Sentiment", "custom_dropdown", false, 12);
    sentiment["choices"] = json!(SENTIMENTS);
    vec![
        field(80_000_100_001, "requester", "Search a requester", "default_requester", true, 1),
        field(80_000_100_002, "subject", "Subject", "default_subject", true, 2),
        ticket_type,
        status,
        priority,
        field(80_000_100_006, "description", "Description", "default_description", true, 6),
        category,
        field(80_000_100_011, SUMMARY_FIELD, "Summary", "custom_text", false, 11),
        sentiment,
        field(80_000_100_013, LANGUAGE_FIELD, "Language", "custom_text", false, 13),
    ]
}

pub(crate) fn iso(epoch: i64) -> String {
    chrono::DateTime::from_timestamp(epoch, 0).unwrap_or_default().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn html(text: &str) -> String {
    format!("<div>{}</div>", text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;"))
}

/// A ticket as the API shows it (the key set of `GET /tickets/{id}`, body_only/ticket_1.json without
/// the `include`d `stats` and `requester` and without the edited-in `priority_name`). A listed ticket
/// has no `attachments`, and no description unless `include=description`.
pub(crate) fn render_ticket(t: &Ticket, full: bool) -> Value {
    let custom: Map<String, Value> = t.custom.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut value = json!({
        "cc_emails": [], "fwd_emails": [], "reply_cc_emails": [], "email_config_id": null,
        "fr_escalated": false, "group_id": null, "priority": t.priority, "requester_id": t.requester_id,
        "responder_id": t.responder_id, "source": 1, "spam": false, "status": t.status,
        "subject": t.subject, "type": t.kind, "company_id": t.company_id, "id": t.id,
        "to_emails": null, "product_id": null,
        "created_at": iso(t.created_at), "updated_at": iso(t.updated_at),
        "due_by": iso(t.created_at + 3 * 86_400), "fr_due_by": iso(t.created_at + 86_400),
        "is_escalated": false, "custom_fields": custom, "tags": t.tags,
    });
    if full {
        value["description_text"] = json!(t.description);
        value["description"] = json!(html(&t.description));
        value["attachments"] = json!([]);
    }
    value
}

/// A conversation entry as the API shows it (body_only/conversations.json).
pub(crate) fn render_conversation(ticket_id: u64, c: &Conversation) -> Value {
    json!({
        "body": html(&c.body_text), "body_text": c.body_text, "id": c.id, "incoming": c.incoming,
        "private": c.private, "user_id": c.user_id, "support_email": null,
        "source": if c.private { 2 } else { 0 }, "ticket_id": ticket_id,
        "to_emails": [], "from_email": null, "cc_emails": null, "bcc_emails": null,
        "created_at": iso(c.created_at), "updated_at": iso(c.created_at), "attachments": []
    })
}
