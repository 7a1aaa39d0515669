//! The Help Scout sandbox: an account in memory behind the Mailbox API 2.0 paths enrichd uses,
//! agreeing with the recorded responses in `tests/fixtures/helpscout` (see `tests/fixtures_replay.rs`).
//!
//! What it reproduces, because a connector must cope with it:
//! - OAuth2 client credentials at `POST /v2/oauth2/token` (JSON or form body, [`CLIENT_ID`] and
//!   [`CLIENT_SECRET`]): `{"token_type":"bearer","access_token","expires_in"}`, no refresh token;
//!   tokens that expire ([`HelpScoutSandbox::set_token_lifetime`], or all at once with
//!   [`HelpScoutSandbox::expire_tokens`]) and a 401 for an unknown or expired one;
//! - HAL lists (`_embedded`, `_links` with `next` when there is a next page, `page {size, totalElements,
//!   totalPages, number}`, 1-based, 50 per page), `mailbox`, `status`, `modifiedSince`, `sortField`
//!   (`createdAt`, `modifiedAt`), `sortOrder`, `embed=threads`;
//! - conversations with threads (customer messages, agent replies, private notes, newest first as
//!   Help Scout lists them), tags as `{id, color, tag}` objects, "Category" and "Sentiment"
//!   dropdowns and "Summary" and "Language" text fields per mailbox (`GET /v2/mailboxes/{id}/fields`, options with ids), and
//!   `customFields` entries `{id, name, value, text}` (a dropdown's value is its option id);
//! - `userUpdatedAt` moved by a PATCH and a new note but not by `PUT …/tags` (as recorded) nor by
//!   `PUT …/fields` (not recorded; the cautious reading);
//! - `PUT …/tags` replacing the whole set, `PUT …/fields` setting the fields it is given and
//!   clearing the others (not recorded: the cautious reading), a dropdown value that is not an
//!   option refused with the documented error shape (`_embedded.errors[]` with `path`, `message`,
//!   `rejectedValue`), `POST …/notes` → 201 (without the `Location`/`Resource-Id` a new
//!   conversation's 201 has, as recorded), writes answered with an empty body;
//! - rate limits: `X-RateLimit-Limit-Minute`/`X-RateLimit-Remaining-Minute` on every API response
//!   (not on the token call), writes counting two, a 429 with `X-RateLimit-Retry-After` when the
//!   minute's allowance is spent, and injected 429s and 503s ([`Faults`]);
//! - per-conversation refusals of `PUT …/fields` ([`Faults::field_write_refusal_rate`]);
//! - agents editing conversations while a run is under way ([`Faults::agent_edit_rate`],
//!   [`HelpScoutSandbox::edit_as_agent`]).
//!
//! The sandbox clock is virtual (epoch seconds, also in the `Date` header): tests move it with
//! [`HelpScoutSandbox::advance`]. Token lifetimes are real time.

mod generate;
mod http;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use generate::{CATEGORIES, SENTIMENTS};

/// The App ID the sandbox accepts.
pub const CLIENT_ID: &str = "sandbox_app_id_000000000000000000";
/// The App Secret the sandbox accepts.
pub const CLIENT_SECRET: &str = "sandbox_app_secret_0000000000000000";
/// The generated mailbox.
pub const MAILBOX_ID: u64 = 100_001;
/// A second, empty mailbox with the same fields.
pub const OTHER_MAILBOX_ID: u64 = 100_002;
/// The "Category" dropdown custom field.
pub const CATEGORY_FIELD_ID: u64 = 8_801;
/// The "Summary" single-line custom field.
pub const SUMMARY_FIELD_ID: u64 = 8_802;
/// The "Sentiment" dropdown custom field (options [`SENTIMENTS`]).
pub const SENTIMENT_FIELD_ID: u64 = 8_803;
/// The "Language" single-line custom field (a BCP 47 tag).
pub const LANGUAGE_FIELD_ID: u64 = 8_804;
/// The agents (users); the API user is the first.
pub const AGENT_IDS: [u64; 3] = [300_001, 300_002, 300_003];
/// The sandbox clock's start: 2026-01-05T09:00:00Z.
pub const START: i64 = 1_767_603_600;

/// A conversation as the sandbox keeps it (times in epoch seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub id: u64,
    pub number: u64,
    pub mailbox: u64,
    pub subject: String,
    /// `active`, `pending`, `closed`, `spam`.
    pub status: String,
    pub created_at: i64,
    /// What the API shows as `userUpdatedAt`.
    pub user_updated_at: i64,
    /// What `modifiedSince` and `sortField=modifiedAt` use: every change moves it.
    pub modified_at: i64,
    pub customer: u64,
    /// The agent the conversation is assigned to.
    pub assignee: Option<u64>,
    pub tags: Vec<String>,
    /// Custom field values by field id (a dropdown holds its option id).
    pub custom: BTreeMap<u64, String>,
}

/// One thread of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Thread {
    pub id: u64,
    /// `customer`, `message` (an agent's reply), `note`.
    pub kind: String,
    pub body: String,
    pub created_at: i64,
    /// A user (agent) id, or the customer's id for `customer` threads.
    pub author: u64,
}

/// Faults injected into API requests (not the token endpoint).
#[derive(Debug, Clone)]
pub struct Faults {
    /// The next this many requests are answered 429 with `X-RateLimit-Retry-After`.
    pub rate_limited_requests: u32,
    /// The seconds those 429s ask to wait.
    pub retry_after_secs: u64,
    /// The next this many requests are answered 503.
    pub server_errors: u32,
    /// Share of requests (0.0..=1.0, seeded) answered 429.
    pub rate_limit_rate: f64,
    /// Share of requests (seeded) answered 503.
    pub server_error_rate: f64,
    /// Share of `GET /v2/conversations/{id}` reads (seeded) after which an agent picks the
    /// conversation up: their edit (a tag `agent_edited`, status `pending`) lands before the next
    /// read of it, so a write based on the first read is stale.
    pub agent_edit_rate: f64,
    /// Request units per (real) minute; a write costs two.
    pub per_minute: u32,
    /// Share of `PUT …/fields` requests (seeded) refused with a 400 validation error: that
    /// conversation's write fails for good and nothing of it is stored (the refused ids are in
    /// [`HelpScoutSandbox::refused_writes`]).
    pub field_write_refusal_rate: f64,
    /// The next this many `PUT …/tags` requests are answered 503 (after a conversation's
    /// `PUT …/fields` landed: a write left half done).
    pub tag_write_server_errors: u32,
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
            per_minute: 400,
            field_write_refusal_rate: 0.0,
            tag_write_server_errors: 0,
        }
    }
}

/// Request counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub tokens_issued: u64,
    pub unauthorized: u64,
    pub rate_limited: u64,
    pub list_pages: u64,
    pub conversation_reads: u64,
    pub tag_writes: u64,
    pub field_writes: u64,
    pub notes: u64,
    pub patches: u64,
}

/// A write request as the sandbox received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// The JSON body (`Null` when it did not parse).
    pub body: Value,
}

pub(crate) struct State {
    now: i64,
    conversations: BTreeMap<u64, Conversation>,
    threads: BTreeMap<u64, Vec<Thread>>,
    /// Per field id: (name, type, options (id, label)).
    fields: Vec<generate::FieldDef>,
    /// Tag name → tag id (Help Scout keeps tags account-wide).
    tag_ids: BTreeMap<String, u64>,
    next_conversation: u64,
    next_thread: u64,
    tokens: HashMap<String, Instant>,
    token_lifetime: Duration,
    faults: Faults,
    stats: Stats,
    received: Vec<Received>,
    window: (Instant, u32),
    rng: rand_chacha::ChaCha8Rng,
    agent_edited: Vec<u64>,
    /// Conversations whose `PUT …/fields` was refused by [`Faults::field_write_refusal_rate`].
    refused: Vec<u64>,
    /// Conversations an agent picked up, whose edit lands before their next read.
    agent_pending: std::collections::HashSet<u64>,
}

/// A Help Scout account in memory. Clones share the account.
#[derive(Clone)]
pub struct HelpScoutSandbox {
    state: Arc<Mutex<State>>,
}

impl HelpScoutSandbox {
    /// `count` generated conversations (seeded) in [`MAILBOX_ID`], about 40% already triaged by agents.
    pub fn new(count: u64, seed: u64) -> Self {
        Self::with_triaged_share(count, seed, 0.4)
    }

    /// Like [`HelpScoutSandbox::new`], with the share of conversations agents already triaged.
    pub fn with_triaged_share(count: u64, seed: u64, triaged_share: f64) -> Self {
        let generated = generate::conversations(count, seed, START, triaged_share);
        let mut state = State {
            now: START,
            conversations: generated.conversations,
            threads: generated.threads,
            fields: generate::fields(),
            tag_ids: BTreeMap::new(),
            next_conversation: generated.next_conversation,
            next_thread: generated.next_thread,
            tokens: HashMap::new(),
            token_lifetime: Duration::from_secs(7200),
            faults: Faults::default(),
            stats: Stats::default(),
            received: Vec::new(),
            window: (Instant::now(), 0),
            rng: rand::SeedableRng::seed_from_u64(seed ^ 0x5eed_fa17),
            agent_edited: Vec::new(),
            refused: Vec::new(),
            agent_pending: Default::default(),
        };
        let tags: Vec<String> = state.conversations.values().flat_map(|c| c.tags.clone()).collect();
        for tag in tags {
            state.tag_id(&tag);
        }
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
                tracing::error!(error = %e, "helpscout sandbox stopped");
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

    /// How long tokens issued from now on live (real time; 7,200 s unless set, as recorded).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.lock().token_lifetime = lifetime;
    }

    /// Every token issued so far expires now: the next call with one is a 401.
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for expiry in self.lock().tokens.values_mut() {
            *expiry = now;
        }
    }

    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// A conversation as `GET /v2/conversations/{id}` shows it.
    pub fn conversation(&self, id: u64) -> Option<Value> {
        let state = self.lock();
        state.conversations.get(&id).map(|c| state.render(c, "http://sandbox", false))
    }

    /// The ids of all conversations.
    pub fn conversation_ids(&self) -> Vec<u64> {
        self.lock().conversations.keys().copied().collect()
    }

    /// A conversation's threads, oldest first.
    pub fn threads(&self, id: u64) -> Vec<Thread> {
        self.lock().threads.get(&id).cloned().unwrap_or_default()
    }

    /// When a conversation last changed (what `modifiedSince` and `sortField=modifiedAt` use).
    pub fn modified_at(&self, id: u64) -> Option<i64> {
        self.lock().conversations.get(&id).map(|c| c.modified_at)
    }

    /// A conversation's tag names.
    pub fn tags(&self, id: u64) -> Vec<String> {
        self.lock().conversations.get(&id).map(|c| c.tags.clone()).unwrap_or_default()
    }

    /// Every access token issued so far, in order (a test looks for them where they must not be).
    pub fn issued_tokens(&self) -> Vec<String> {
        let state = self.lock();
        let mut tokens: Vec<(&String, &Instant)> = state.tokens.iter().collect();
        tokens.sort_by_key(|(token, _)| token[token.len() - 16..].to_owned());
        tokens.into_iter().map(|(t, _)| t.clone()).collect()
    }

    /// The conversations whose `PUT …/fields` was refused by [`Faults::field_write_refusal_rate`].
    pub fn refused_writes(&self) -> Vec<u64> {
        self.lock().refused.clone()
    }

    /// A custom field's value as an agent reads it (a dropdown's label), if set.
    pub fn field_text(&self, id: u64, field: u64) -> Option<String> {
        let state = self.lock();
        let value = state.conversations.get(&id)?.custom.get(&field)?.clone();
        match state.fields.iter().find(|f| f.0 == field) {
            Some(def) if def.2 == "DROPDOWN" => state.option_label(field, &value),
            _ => Some(value),
        }
    }

    /// A conversation's Category label, if set.
    pub fn category(&self, id: u64) -> Option<String> {
        let state = self.lock();
        let option = state.conversations.get(&id)?.custom.get(&CATEGORY_FIELD_ID)?.clone();
        state.option_label(CATEGORY_FIELD_ID, &option)
    }

    /// Every write request received so far, in order.
    pub fn received_writes(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// The conversations agents edited through [`Faults::agent_edit_rate`], in order.
    pub fn agent_edited(&self) -> Vec<u64> {
        self.lock().agent_edited.clone()
    }

    /// An agent changes a conversation in Help Scout: `{"tags":[…]}` (added), `{"category": label}`,
    /// `{"status": s}`, `{"note": text}`.
    pub fn edit_as_agent(&self, id: u64, edit: Value) -> Result<(), String> {
        self.lock().agent_edit(id, &edit)
    }

    /// A new conversation from a customer in [`MAILBOX_ID`], created now; returns its id.
    pub fn create_conversation(&self, subject: &str, body: &str) -> u64 {
        self.lock().create(MAILBOX_ID, subject, body)
    }

    /// An admin deletes a Category option (by its label).
    pub fn delete_category_option(&self, label: &str) {
        let mut state = self.lock();
        for field in &mut state.fields {
            if field.0 == CATEGORY_FIELD_ID {
                field.3.retain(|(_, l)| l != label);
            }
        }
    }
}

impl State {
    /// The next change stamp: now, and strictly after the conversation's last change.
    fn stamp(&mut self, previous: i64) -> i64 {
        let stamp = self.now.max(previous + 1);
        self.now = stamp;
        stamp
    }

    fn option_label(&self, field: u64, option: &str) -> Option<String> {
        let (_, _, _, options) = self.fields.iter().find(|f| f.0 == field)?;
        options.iter().find(|(id, _)| id.to_string() == option).map(|(_, l)| l.clone())
    }

    fn tag_id(&mut self, tag: &str) -> u64 {
        let next = 2_313_459 + self.tag_ids.len() as u64;
        *self.tag_ids.entry(tag.to_owned()).or_insert(next)
    }

    fn create(&mut self, mailbox: u64, subject: &str, body: &str) -> u64 {
        let id = self.next_conversation;
        self.next_conversation += 1;
        let now = self.stamp(self.now);
        let customer = 200_000 + id % 1000;
        self.conversations.insert(
            id,
            Conversation {
                id,
                number: id - 800_000_000,
                mailbox,
                subject: subject.to_owned(),
                status: "active".into(),
                created_at: now,
                user_updated_at: now,
                modified_at: now,
                customer,
                assignee: None,
                tags: Vec::new(),
                custom: BTreeMap::new(),
            },
        );
        let thread = self.next_thread;
        self.next_thread += 1;
        self.threads.insert(
            id,
            vec![Thread {
                id: thread,
                kind: "customer".into(),
                body: body.to_owned(),
                created_at: now,
                author: customer,
            }],
        );
        id
    }

    fn agent_edit(&mut self, id: u64, edit: &Value) -> Result<(), String> {
        let Some(mut c) = self.conversations.get(&id).cloned() else { return Err(format!("no conversation {id}")) };
        let mut user_visible = false;
        if let Some(tags) = edit["tags"].as_array() {
            for t in tags.iter().filter_map(Value::as_str) {
                if !c.tags.iter().any(|x| x == t) {
                    c.tags.push(t.to_owned());
                }
            }
        }
        if let Some(label) = edit["category"].as_str() {
            let option = self
                .fields
                .iter()
                .find(|f| f.0 == CATEGORY_FIELD_ID)
                .and_then(|f| f.3.iter().find(|(_, l)| l == label))
                .map(|(id, _)| id.to_string())
                .ok_or_else(|| format!("{label:?} is not a Category option"))?;
            c.custom.insert(CATEGORY_FIELD_ID, option);
        }
        if let Some(status) = edit["status"].as_str() {
            c.status = status.to_owned();
            user_visible = true;
        }
        let stamp = self.stamp(c.modified_at);
        c.modified_at = stamp;
        if let Some(note) = edit["note"].as_str() {
            let thread = self.next_thread;
            self.next_thread += 1;
            self.threads.entry(id).or_default().push(Thread {
                id: thread,
                kind: "note".into(),
                body: note.to_owned(),
                created_at: stamp,
                author: AGENT_IDS[1],
            });
            user_visible = true;
        }
        if user_visible {
            c.user_updated_at = stamp;
        }
        self.conversations.insert(id, c);
        Ok(())
    }

    /// A conversation as the API shows it (the key set of `conversation_get.json`), with
    /// its threads under `_embedded` when `embed` is set.
    fn render(&self, c: &Conversation, base: &str, embed: bool) -> Value {
        let person = |id: u64, kind: &str| {
            json!({"id": id, "type": kind, "first": format!("First{id}"), "last": format!("Last{id}"),
                "photoUrl": "https://secure.gravatar.com/avatar/00000000000000000000000000000000",
                "email": format!("person{id}@example.com")})
        };
        let threads = self.threads.get(&c.id).map(Vec::as_slice).unwrap_or(&[]);
        let preview = threads.first().map(|t| t.body.chars().take(200).collect::<String>()).unwrap_or_default();
        let tags: Vec<Value> = c
            .tags
            .iter()
            .map(|t| json!({"id": self.tag_ids.get(t).copied().unwrap_or(0), "color": "#A5B2BD", "tag": t}))
            .collect();
        let custom: Vec<Value> = c
            .custom
            .iter()
            .filter_map(|(id, value)| {
                let (_, name, kind, _) = self.fields.iter().find(|f| f.0 == *id)?;
                let text =
                    if kind == "DROPDOWN" { self.option_label(*id, value).unwrap_or_default() } else { value.clone() };
                Some(json!({"id": id, "name": name, "value": value, "text": text}))
            })
            .collect();
        let mut v = json!({
            "id": c.id,
            "number": c.number,
            "threads": threads.len(),
            "type": "email",
            "folderId": 1_675_979,
            "status": c.status,
            "state": "published",
            "subject": c.subject,
            "preview": preview,
            "mailboxId": c.mailbox,
            "createdBy": person(c.customer, "customer"),
            "createdAt": iso(c.created_at),
            "closedBy": 0,
            "userUpdatedAt": iso(c.user_updated_at),
            "customerWaitingSince": {"time": iso(c.created_at), "friendly": "Just now"},
            "source": {"type": "email", "via": "customer"},
            "tags": tags,
            "cc": [],
            "bcc": [],
            "primaryCustomer": person(c.customer, "customer"),
            "customFields": custom,
            "_links": {
                "closedBy": {"href": format!("{base}/v2/users/0")},
                "createdByCustomer": {"href": format!("{base}/v2/customers/{}", c.customer)},
                "mailbox": {"href": format!("{base}/v2/mailboxes/{}", c.mailbox)},
                "primaryCustomer": {"href": format!("{base}/v2/customers/{}", c.customer)},
                "self": {"href": format!("{base}/v2/conversations/{}", c.id)},
                "threads": {"href": format!("{base}/v2/conversations/{}/threads/", c.id)},
                "web": {"href": format!("https://secure.helpscout.net/conversation/{}/{}", c.id, c.number)}
            }
        });
        let closed = c.status == "closed";
        if let Some(agent) = c.assignee {
            let mut user = person(agent, "user");
            user["email"] = json!(format!("agent{agent}@example.com"));
            v["_links"]["assignee"] = json!({"href": format!("{base}/v2/users/{agent}")});
            if closed {
                v["closedBy"] = json!(agent);
                v["_links"]["closedBy"] = json!({"href": format!("{base}/v2/users/{agent}")});
            }
            v["assignee"] = user;
        }
        if closed {
            v["closedAt"] = json!(iso(c.user_updated_at));
        }
        if embed {
            v["_embedded"] =
                json!({"threads": threads.iter().rev().map(|t| render_thread(t, c, base)).collect::<Vec<_>>()});
        }
        v
    }
}

/// A thread as the API shows it (the key set of `threads_list.json`).
pub(crate) fn render_thread(t: &Thread, c: &Conversation, base: &str) -> Value {
    let customer = json!({"id": c.customer, "first": format!("First{}", c.customer), "last": format!("Last{}", c.customer),
        "photoUrl": "https://secure.gravatar.com/avatar/00000000000000000000000000000000",
        "email": format!("person{}@example.com", c.customer)});
    let by_customer = t.kind == "customer";
    let created_by = if by_customer {
        let mut p = customer.clone();
        p["type"] = json!("customer");
        p
    } else {
        json!({"id": t.author, "type": "user", "first": format!("Agent{}", t.author), "last": "Sandbox",
            "email": format!("agent{}@example.com", t.author)})
    };
    let author_link = if by_customer {
        json!({"createdByCustomer": {"href": format!("{base}/v2/customers/{}", t.author)}})
    } else {
        json!({"createdByUser": {"href": format!("{base}/v2/users/{}", t.author)}})
    };
    let mut links = json!({"assignedTo": {"href": format!("{base}/v2/users/{}", AGENT_IDS[0])},
        "customer": {"href": format!("{base}/v2/customers/{}", c.customer)}});
    for (k, v) in author_link.as_object().into_iter().flatten() {
        links[k] = v.clone();
    }
    json!({
        "id": t.id,
        "type": t.kind,
        "status": "active",
        "state": "published",
        "action": {"type": "default"},
        "body": t.body,
        "source": {"type": if by_customer { "email" } else { "web" }, "via": if by_customer { "customer" } else { "user" }},
        "customer": customer,
        "createdBy": created_by,
        "assignedTo": {"id": AGENT_IDS[0], "first": "Agent", "last": "One", "email": "agent1@example.com"},
        "to": [],
        "cc": [],
        "bcc": [],
        "createdAt": iso(t.created_at),
        "_embedded": {"attachments": []},
        "_links": links
    })
}

pub(crate) fn iso(epoch: i64) -> String {
    chrono::DateTime::from_timestamp(epoch, 0).unwrap_or_default().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
