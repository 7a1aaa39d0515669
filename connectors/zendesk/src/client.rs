//! The Zendesk Support (API v2) connector.
//!
//! - Listing is the incremental cursor export (`/incremental/tickets/cursor.json`): the first page
//!   starts at `start_time` (from [`PageRequest::modified_after`], else the beginning), every later
//!   page at the `after_cursor` returned as [`Page::next`]; `end_of_stream` ends the listing. With
//!   a `search` condition a listing from the start first goes through Search (`type:ticket
//!   status<solved <condition>`, cursors `search:<page>`), and past Search's 1,000 results continues
//!   with the export from the beginning (cursor `start:<epoch>`, then the export's own cursors).
//! - Fields as tasks see them: `subject`, `description` (the first message), `conversation` (every
//!   message with its author's role and time, newest last, cut to a character budget that keeps the
//!   first and the latest messages), `organization` (the requester's organisation's name, listings
//!   only), `status`, `priority`, `type`, `tags`, and each custom field by
//!   its title as `custom.<Title>` (titles from `/ticket_fields`, read once per connector).
//! - The version is `updated_at`.
//! - Writes: one change is a single `PUT /tickets/{id}` with `safe_update` + `updated_stamp` (a 409
//!   is a conflict); several are one `update_many` batch job, polled with [`Connector::poll_write`],
//!   each ticket in it also sent with `safe_update` (a result `UpdateConflict` is a conflict).
//!   Tags are added with `additional_tags` (never replacing the set) except when restoring.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use enrichd_connector::conversation::cut;
pub use enrichd_connector::conversation::fit_conversation;
use enrichd_connector::http::{self, transport_error};
use enrichd_connector::{
    Change, Connector, ConnectorError, Page, PageRequest, PendingWrite, Record, RecordLink, Version, WriteMode,
    WriteOutcome, WriteResult, WriteSubmission,
};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

use crate::{Credentials, Options};

/// The one entity this connector knows.
pub const TICKETS: &str = "tickets";
/// Zendesk's cap on ids per `show_many` and tickets per `update_many`.
const MAX_BATCH: usize = 100;
/// Attempts for reads (429 and 5xx are retried, honouring `Retry-After`).
const READ_ATTEMPTS: u32 = 4;

/// A custom field as the connector uses it.
#[derive(Debug, Clone)]
pub struct CustomField {
    pub id: u64,
    pub title: String,
    /// `tagger` (dropdown), `text`, `multiselect`, ...
    pub kind: String,
    /// The option values (tags) of a dropdown, as written in `custom_fields`.
    pub options: Vec<String>,
}

/// The Zendesk connector.
pub struct Zendesk {
    api: String,
    credentials: Credentials,
    http: reqwest::Client,
    conversation_chars: usize,
    search: Option<String>,
    fields: OnceCell<Vec<CustomField>>,
    rate_limit: std::sync::Mutex<Option<RateLimit>>,
    /// The account's allowance as responses report it; every request waits for it.
    allowance: enrichd_connector::gate::Allowance,
}

/// The account's API allowance as the last response reported it, for a shared rate gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per minute (`X-Rate-Limit` or `ratelimit-limit`).
    pub limit: u32,
    /// Requests left in the window (`X-Rate-Limit-Remaining` or `ratelimit-remaining`).
    pub remaining: u32,
    /// Seconds until the window resets (`ratelimit-reset`, or the 2023 spelling `rate-limit-reset`).
    pub reset_secs: Option<u64>,
}

impl RateLimit {
    /// Reads both spellings Zendesk has used (`x-rate-limit*`, `ratelimit-*`, `rate-limit-*`).
    pub fn from_headers(headers: &HeaderMap) -> Option<RateLimit> {
        let number =
            |names: &[&str]| names.iter().find_map(|n| headers.get(*n)?.to_str().ok()?.trim().parse::<u64>().ok());
        let limit = number(&["x-rate-limit", "ratelimit-limit", "rate-limit"])?;
        let remaining = number(&["x-rate-limit-remaining", "ratelimit-remaining", "rate-limit-remaining"])?;
        Some(RateLimit {
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset_secs: number(&["ratelimit-reset", "rate-limit-reset"]),
        })
    }
}

/// Search's cap on results per query (page 11 at 100 per page is a 422).
pub const SEARCH_CAP: u32 = 1000;
const SEARCH_PER_PAGE: u32 = 100;
/// Listing cursors that are not the export's own `after_cursor` (which is base64, without `:`).
const SEARCH_CURSOR: &str = "search:";
const START_CURSOR: &str = "start:";
/// Seconds Search may lag behind the tickets (Zendesk documents "a few minutes").
const SEARCH_LAG_MARGIN: i64 = 600;
/// Zendesk's built-in ticket priorities and types (the values its API accepts).
const PRIORITIES: [&str; 4] = ["low", "normal", "high", "urgent"];
const TYPES: [&str; 4] = ["problem", "incident", "question", "task"];

/// One page of Search results.
#[derive(Debug, Clone)]
pub struct SearchPage {
    pub records: Vec<Record>,
    /// Matching tickets in all (Search counts past its cap).
    pub count: u64,
    /// The next page, while it is within Search's 1,000 results.
    pub next_page: Option<u32>,
    /// More tickets match than Search will return: the rest must come from the incremental export.
    pub capped: bool,
}

/// The Zendesk error shapes, `{"error","description","details"}` and JSON:API `{"errors":[…]}`,
/// classified by status (429 and 5xx retryable with `Retry-After`; 401, 403, 404, 409, 422 not).
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str, what: &str) -> ConnectorError {
    let mut err = http::classify(status, headers, body, what);
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if let Some(first) = parsed["errors"].as_array().and_then(|e| e.first()) {
        let code = first["code"].as_str().or(first["title"].as_str()).map(str::to_owned);
        let detail = first["detail"].as_str().or(first["title"].as_str()).unwrap_or("");
        err.message = format!("{what}: HTTP {} {}: {detail}", status.as_u16(), code.as_deref().unwrap_or(""));
        err.code = code;
    } else if let Some(details) = parsed.get("details").filter(|d| !d.is_null()) {
        err.message.push_str(&format!(" ({details})"));
    }
    err
}

impl Zendesk {
    pub fn new(options: Options) -> Result<Zendesk, ConnectorError> {
        let http = http::builder(options.timeout).build().map_err(|e| {
            ConnectorError::permanent(format!("zendesk: building the HTTP client failed: {}", e.without_url()))
        })?;
        Ok(Zendesk {
            api: format!("{}/api/v2", options.base_url.trim_end_matches('/')),
            credentials: options.credentials,
            http,
            conversation_chars: options.conversation_chars,
            search: options.search,
            fields: OnceCell::new(),
            rate_limit: std::sync::Mutex::new(None),
            allowance: enrichd_connector::gate::Allowance::new(),
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}/{path}", self.api));
        match &self.credentials {
            Credentials::ApiToken { email, token } => {
                let raw = format!("{email}/token:{}", token.expose_secret());
                let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
                request.header("authorization", format!("Basic {encoded}"))
            }
            Credentials::OAuth { token } => request.bearer_auth(token.expose_secret()),
        }
    }

    /// Sends a request once and reads its JSON body; errors classified.
    async fn call(&self, request: RequestBuilder, what: &str) -> Result<Value, ConnectorError> {
        self.allowance.acquire().await;
        let response = request.send().await.map_err(|e| transport_error(e, what))?;
        if let Some(limit) = RateLimit::from_headers(response.headers()) {
            *self.rate_limit.lock().unwrap_or_else(|e| e.into_inner()) = Some(limit);
            self.allowance.observe(limit.limit, limit.remaining, limit.reset_secs.map(Duration::from_secs));
        }
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let body = response.text().await.unwrap_or_default();
            return Err(classify(status, &headers, &body, what));
        }
        http::json(response, what).await
    }

    /// A GET with retries.
    async fn get(&self, path: &str, query: &[(&str, String)], what: &str) -> Result<Value, ConnectorError> {
        http::with_retries(READ_ATTEMPTS, Duration::from_millis(500), || {
            self.call(self.request(Method::GET, path).query(query), what)
        })
        .await
    }

    /// The allowance the last response reported, if any did.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        *self.rate_limit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The account's custom ticket fields (read once per connector).
    pub async fn custom_fields(&self) -> Result<&[CustomField], ConnectorError> {
        let fields = self.fields.get_or_try_init(|| self.read_custom_fields()).await?;
        Ok(fields)
    }

    /// The account's custom ticket fields as they are now (`GET /ticket_fields`).
    pub async fn read_custom_fields(&self) -> Result<Vec<CustomField>, ConnectorError> {
        let body = self.get("ticket_fields.json", &[], "zendesk: GET ticket_fields").await?;
        let fields = body["ticket_fields"].as_array().cloned().unwrap_or_default();
        Ok::<_, ConnectorError>(
            fields
                .iter()
                .filter(|f| f["removable"] == true)
                .filter_map(|f| {
                    Some(CustomField {
                        id: f["id"].as_u64()?,
                        title: f["title"].as_str()?.to_owned(),
                        kind: f["type"].as_str().unwrap_or("").to_owned(),
                        options: f["custom_field_options"]
                            .as_array()
                            .map(|o| o.iter().filter_map(|o| o["value"].as_str().map(str::to_owned)).collect())
                            .unwrap_or_default(),
                    })
                })
                .collect(),
        )
    }

    /// Page `page` (from 1) of unsolved tickets matching `condition`, 100 per page, oldest first.
    /// Search stops at 1,000 results: past them `capped` is set and no page is asked for beyond.
    pub async fn search(&self, condition: &str, page: u32) -> Result<SearchPage, ConnectorError> {
        let last_page = SEARCH_CAP / SEARCH_PER_PAGE;
        if page == 0 || page > last_page {
            return Err(ConnectorError::permanent(format!(
                "zendesk: Search page {page} does not exist (Search returns pages 1 to {last_page} of 100)"
            )));
        }
        let query = [
            ("query", format!("type:ticket status<solved {condition}").trim().to_owned()),
            ("sort_by", "created_at".into()),
            ("sort_order", "asc".into()),
            ("per_page", SEARCH_PER_PAGE.to_string()),
            ("page", page.to_string()),
        ];
        let body = self.get("search.json", &query, &format!("zendesk: GET search page {page}")).await?;
        let mut records = Vec::new();
        for result in body["results"].as_array().into_iter().flatten() {
            if result["result_type"] == "ticket" {
                records.push(self.record(result, true).await?);
            }
        }
        self.add_organizations(&mut records).await?;
        let count = body["count"].as_u64().unwrap_or(0);
        let more = !body["next_page"].is_null();
        let capped = count > u64::from(SEARCH_CAP);
        let next_page = (more && page < last_page).then_some(page + 1);
        Ok(SearchPage { records, count, next_page, capped })
    }

    /// Adds `organization` (the requester's organisation's name) to records that have an
    /// `organization_id`, with one `organizations/show_many` call per 100 organisations.
    async fn add_organizations(&self, records: &mut [Record]) -> Result<(), ConnectorError> {
        let mut ids: Vec<u64> = records.iter().filter_map(|r| r.fields.get("organization_id")?.as_u64()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut names = HashMap::new();
        for chunk in ids.chunks(MAX_BATCH) {
            let list = chunk.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            let body = self
                .get("organizations/show_many.json", &[("ids", list)], "zendesk: GET organizations/show_many")
                .await?;
            for org in body["organizations"].as_array().into_iter().flatten() {
                if let (Some(id), Some(name)) = (org["id"].as_u64(), org["name"].as_str()) {
                    names.insert(id, name.to_owned());
                }
            }
        }
        for record in records {
            let name = record.fields.get("organization_id").and_then(Value::as_u64).and_then(|id| names.get(&id));
            record.fields.insert("organization".into(), name.map_or(Value::Null, |n| Value::String(n.clone())));
        }
        Ok(())
    }

    /// One page of the incremental export, from `start_time` or an `after_cursor`.
    async fn export(&self, per_page: u32, position: (&str, String)) -> Result<Page, ConnectorError> {
        let query = [("per_page", per_page.clamp(1, 1000).to_string()), position];
        let body =
            self.get("incremental/tickets/cursor.json", &query, "zendesk: GET incremental/tickets/cursor").await?;
        let mut records = Vec::new();
        for ticket in body["tickets"].as_array().into_iter().flatten() {
            records.push(self.record(ticket, true).await?);
        }
        self.add_organizations(&mut records).await?;
        let cursor = body["after_cursor"].as_str().map(str::to_owned);
        let (next, resume) = if body["end_of_stream"] == true { (None, cursor) } else { (cursor, None) };
        Ok(Page { records, next, total: None, resume })
    }

    /// A ticket's conversation as the model sees it: one block per message, oldest first, with the
    /// author's role, visibility and time, cut to the character budget keeping the first message
    /// and as many of the latest as fit.
    pub async fn conversation(&self, ticket_id: &str) -> Result<String, ConnectorError> {
        let what = format!("zendesk: GET tickets/{ticket_id}/comments");
        let body =
            self.get(&format!("tickets/{ticket_id}/comments.json"), &[("include", "users".into())], &what).await?;
        let roles: HashMap<u64, String> = body["users"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| Some((u["id"].as_u64()?, u["role"].as_str()?.to_owned())))
            .collect();
        let messages: Vec<String> = body["comments"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let role = c["author_id"].as_u64().and_then(|id| roles.get(&id)).map_or("unknown", String::as_str);
                let visibility = if c["public"] == false { "private note" } else { "public" };
                let text = c["plain_body"].as_str().or(c["body"].as_str()).unwrap_or("").trim();
                format!("[{} {role}, {visibility}]\n{text}", c["created_at"].as_str().unwrap_or(""))
            })
            .collect();
        Ok(fit_conversation(&messages, self.conversation_chars))
    }

    async fn record(&self, ticket: &Value, with_conversation: bool) -> Result<Record, ConnectorError> {
        let id = ticket["id"].as_u64().map(|id| id.to_string()).ok_or_else(|| {
            ConnectorError::permanent(format!("zendesk: a ticket without an integer id: {}", snippet(ticket)))
        })?;
        let version = ticket["updated_at"]
            .as_str()
            .map(|v| Version(v.to_owned()))
            .ok_or_else(|| ConnectorError::permanent(format!("zendesk: ticket {id} has no updated_at")))?;
        let mut fields = Map::new();
        for key in ["subject", "description", "status", "priority", "type", "tags", "organization_id"] {
            fields.insert(key.to_owned(), ticket[key].clone());
        }
        let custom = self.custom_fields().await?;
        for entry in ticket["custom_fields"].as_array().into_iter().flatten() {
            if let Some(field) = custom.iter().find(|f| Some(f.id) == entry["id"].as_u64()) {
                fields.insert(format!("custom.{}", field.title), entry["value"].clone());
            }
        }
        if with_conversation {
            fields.insert("conversation".into(), Value::String(self.conversation(&id).await?));
        }
        Ok(Record { id, version, fields, attachments: Vec::new(), native: Some(ticket.clone()) })
    }

    fn entity(entity: &str) -> Result<(), ConnectorError> {
        if entity == TICKETS {
            Ok(())
        } else {
            Err(ConnectorError::permanent(format!(
                "zendesk: unknown entity {entity:?}; this connector knows \"tickets\""
            )))
        }
    }

    /// The ticket body of one change, in Zendesk's terms.
    async fn ticket_update(&self, change: &Change) -> Result<Map<String, Value>, ConnectorError> {
        let id: u64 = change.id.parse().map_err(|_| {
            ConnectorError::permanent(format!("zendesk: ticket id {:?} is not a Zendesk ticket id", change.id))
        })?;
        let mut update = Map::new();
        update.insert("id".into(), json!(id));
        let mut custom_fields = Vec::new();
        for (field, value) in &change.fields {
            match field.as_str() {
                "subject" | "priority" | "type" | "status" => {
                    update.insert(field.clone(), value.clone());
                }
                "tags" => {
                    if !value.is_array() {
                        return Err(ConnectorError::permanent(format!(
                            "zendesk: ticket {id}: tags must be a list of strings, got {value}"
                        )));
                    }
                    let key = if change.mode == WriteMode::Restore { "tags" } else { "additional_tags" };
                    update.insert(key.into(), value.clone());
                }
                "internal_note" => {
                    if let Some(text) = value.as_str().filter(|t| !t.trim().is_empty()) {
                        update.insert("comment".into(), json!({"body": text, "public": false}));
                    }
                }
                name => {
                    let Some(title) = name.strip_prefix("custom.") else {
                        return Err(ConnectorError::permanent(format!(
                            "zendesk: ticket {id}: field {name:?} cannot be written (writable: subject, priority, type, status, tags, internal_note, custom.<field title>)"
                        )));
                    };
                    let custom = self.custom_fields().await?;
                    let Some(def) = custom.iter().find(|f| f.title == title) else {
                        return Err(ConnectorError::permanent(format!(
                            "zendesk: ticket {id}: there is no custom ticket field titled {title:?}"
                        )));
                    };
                    custom_fields.push(json!({"id": def.id, "value": value}));
                }
            }
        }
        if !custom_fields.is_empty() {
            update.insert("custom_fields".into(), Value::Array(custom_fields));
        }
        Ok(update)
    }

    /// One ticket written with `safe_update`: a 409 means it changed since `base_version`.
    async fn write_one(&self, change: &Change) -> Result<WriteOutcome, ConnectorError> {
        let mut update = self.ticket_update(change).await?;
        update.remove("id");
        update.insert("safe_update".into(), json!(true));
        update.insert("updated_stamp".into(), json!(change.base_version.0));
        let what = format!("zendesk: PUT tickets/{}", change.id);
        let request =
            self.request(Method::PUT, &format!("tickets/{}.json", change.id)).json(&json!({"ticket": update}));
        let result = match self.call(request, &what).await {
            Ok(body) => {
                WriteResult::Written { version: body["ticket"]["updated_at"].as_str().map(|v| Version(v.to_owned())) }
            }
            Err(e) if e.status == Some(409) => WriteResult::Conflict { current: None },
            Err(e) if e.status.is_some_and(|s| s == 422 || s == 404) => WriteResult::Failed(e),
            Err(e) => return Err(e),
        };
        Ok(WriteOutcome { id: change.id.clone(), result })
    }
}

#[async_trait]
impl Connector for Zendesk {
    fn kind(&self) -> &'static str {
        "zendesk"
    }

    /// The ticket in the agent workspace of the account (`https://acme.zendesk.com/agent/tickets/7`).
    fn record_links(&self, _entity: &str, external_id: &str, _fields: &Value) -> Vec<RecordLink> {
        let Ok(id) = external_id.parse::<u64>() else { return Vec::new() };
        let account = self.api.strip_suffix("/api/v2").unwrap_or(&self.api);
        RecordLink::new("Ticket in Zendesk", format!("{account}/agent/tickets/{id}")).into_iter().collect()
    }

    async fn check(&self, entity: &str) -> Result<(), ConnectorError> {
        Self::entity(entity)?;
        let query = [("start_time", "0".to_owned()), ("per_page", "1".to_owned())];
        self.get("incremental/tickets/cursor.json", &query, "zendesk: GET incremental/tickets/cursor (check)").await?;
        self.custom_fields().await?;
        Ok(())
    }

    async fn list(&self, entity: &str, request: &PageRequest) -> Result<Page, ConnectorError> {
        Self::entity(entity)?;
        let start = match &request.modified_after {
            Some(after) => chrono::DateTime::parse_from_rfc3339(after)
                .map_err(|e| {
                    ConnectorError::permanent(format!("zendesk: modified_after {after:?} is not RFC 3339: {e}"))
                })?
                .timestamp()
                .max(0)
                // Zendesk refuses a start_time within the last minute.
                .min(chrono::Utc::now().timestamp() - 61),
            None => 0,
        };
        let search_page = match request.cursor.as_deref() {
            None => self.search.as_ref().map(|_| 1),
            Some(c) => match c.strip_prefix(SEARCH_CURSOR) {
                Some(page) => Some(page.parse::<u32>().map_err(|_| {
                    ConnectorError::permanent(format!("zendesk: listing cursor {c:?} is not a Search page"))
                })?),
                None => None,
            },
        };
        if let (Some(page), Some(condition)) = (search_page, &self.search) {
            let found = self.search(condition, page).await?;
            // Past Search's cap the listing goes on with the export, from the beginning: it sees
            // every ticket, so none is missed (the engine's selection skips those already filled).
            let next = match (found.next_page, found.capped) {
                (Some(next), _) => Some(format!("{SEARCH_CURSOR}{next}")),
                (None, true) => Some(format!("{START_CURSOR}{start}")),
                (None, false) => None,
            };
            // Search lags a few minutes behind: a later listing re-reads the export from before
            // this Search began, so a ticket Search did not see yet is not missed.
            let resume =
                next.is_none().then(|| format!("{START_CURSOR}{}", chrono::Utc::now().timestamp() - SEARCH_LAG_MARGIN));
            return Ok(Page { records: found.records, next, total: Some(found.count), resume });
        }
        let position = match request.cursor.as_deref() {
            Some(c) => match c.strip_prefix(START_CURSOR) {
                Some(at) => ("start_time", at.to_owned()),
                None if c.starts_with(SEARCH_CURSOR) => {
                    return Err(ConnectorError::permanent(format!(
                        "zendesk: listing cursor {c:?} is a Search page but the connection has no `search` condition"
                    )));
                }
                None => ("cursor", c.to_owned()),
            },
            None => ("start_time", start.to_string()),
        };
        self.export(request.per_page, position).await
    }

    async fn fetch(&self, entity: &str, ids: &[String]) -> Result<Vec<Record>, ConnectorError> {
        Self::entity(entity)?;
        let mut records = Vec::new();
        for chunk in ids.chunks(MAX_BATCH) {
            let body = self
                .get("tickets/show_many.json", &[("ids", chunk.join(","))], "zendesk: GET tickets/show_many")
                .await?;
            for ticket in body["tickets"].as_array().into_iter().flatten() {
                records.push(self.record(ticket, false).await?);
            }
        }
        Ok(records)
    }

    async fn complete(&self, entity: &str, records: &mut [Record]) -> Result<(), ConnectorError> {
        Self::entity(entity)?;
        for record in records.iter_mut() {
            if !record.fields.contains_key("conversation") {
                let conversation = self.conversation(&record.id).await?;
                record.fields.insert("conversation".into(), Value::String(conversation));
            }
        }
        let missing: Vec<usize> =
            (0..records.len()).filter(|i| !records[*i].fields.contains_key("organization")).collect();
        if !missing.is_empty() {
            self.add_organizations(records).await?;
        }
        Ok(())
    }

    fn max_write_batch(&self) -> usize {
        MAX_BATCH
    }

    async fn allowed_values(&self, entity: &str, field: &str) -> Result<Option<Vec<String>>, ConnectorError> {
        Self::entity(entity)?;
        let fixed = |values: &[&str]| Some(values.iter().map(|v| (*v).to_owned()).collect());
        match field {
            "priority" => Ok(fixed(&PRIORITIES)),
            "type" => Ok(fixed(&TYPES)),
            name => {
                let Some(title) = name.strip_prefix("custom.") else { return Ok(None) };
                // Fresh options, not the per-connector cache: an option added or removed since
                // the daemon started counts from the next run.
                let fields = self.read_custom_fields().await?;
                Ok(fields.into_iter().find(|f| f.title == title && !f.options.is_empty()).map(|f| f.options))
            }
        }
    }

    async fn write(&self, entity: &str, changes: &[Change]) -> Result<WriteSubmission, ConnectorError> {
        Self::entity(entity)?;
        if changes.len() > MAX_BATCH {
            return Err(ConnectorError::permanent(format!(
                "zendesk: {} changes in one write; update_many takes at most {MAX_BATCH}",
                changes.len()
            )));
        }
        if let [change] = changes {
            return Ok(WriteSubmission::Done(vec![self.write_one(change).await?]));
        }
        let mut tickets = Vec::with_capacity(changes.len());
        for change in changes {
            // Each ticket is a safe update too: one an agent changed after `base_version` fails
            // with `UpdateConflict` when the job runs instead of being overwritten.
            let mut update = self.ticket_update(change).await?;
            update.insert("safe_update".into(), json!(true));
            update.insert("updated_stamp".into(), json!(change.base_version.0));
            tickets.push(Value::Object(update));
        }
        let request = self.request(Method::PUT, "tickets/update_many.json").json(&json!({"tickets": tickets}));
        let body = self.call(request, "zendesk: PUT tickets/update_many").await?;
        let job = body["job_status"]["id"].as_str().ok_or_else(|| {
            ConnectorError::transient(format!("zendesk: update_many answered without a job id: {}", snippet(&body)))
        })?;
        Ok(WriteSubmission::Pending(PendingWrite {
            entity: entity.to_owned(),
            job: job.to_owned(),
            ids: changes.iter().map(|c| c.id.clone()).collect(),
        }))
    }

    fn holds(&self, field: &str, written: &Value, stored: Option<&Value>) -> bool {
        if field == "tags" {
            // Tags are added, not replaced (and Zendesk lower-cases them).
            let stored: Vec<String> = stored
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_lowercase).collect())
                .unwrap_or_default();
            return written.as_array().is_some_and(|w| {
                w.iter().filter_map(Value::as_str).all(|t| stored.contains(&t.trim().to_lowercase()))
            });
        }
        stored == Some(written)
    }

    fn restored(&self, field: &str, previous: &Value, stored: Option<&Value>) -> bool {
        if field == "tags" {
            // A restore puts back exactly the earlier set: nothing our write added may remain.
            let set = |v: Option<&Value>| {
                let mut tags: Vec<String> = v
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).map(|t| t.trim().to_lowercase()).collect())
                    .unwrap_or_default();
                tags.sort();
                tags.dedup();
                tags
            };
            return set(Some(previous)) == set(stored);
        }
        if previous.is_null() {
            return stored.is_none_or(Value::is_null);
        }
        self.holds(field, previous, stored)
    }

    async fn poll_write(&self, pending: &PendingWrite) -> Result<Option<Vec<WriteOutcome>>, ConnectorError> {
        let what = format!("zendesk: GET job_statuses/{}", pending.job);
        let body = self.get(&format!("job_statuses/{}.json", pending.job), &[], &what).await?;
        let job = &body["job_status"];
        match job["status"].as_str() {
            Some("queued" | "working") => return Ok(None),
            Some("completed") => {}
            Some("failed" | "killed") => {
                let message = job["message"].as_str().unwrap_or("no message");
                return Ok(Some(
                    pending
                        .ids
                        .iter()
                        .map(|id| WriteOutcome {
                            id: id.clone(),
                            result: WriteResult::Failed(ConnectorError::transient(format!(
                                "zendesk: job {} {}: {message} (ticket {id} not known to be written)",
                                pending.job,
                                job["status"].as_str().unwrap_or("")
                            ))),
                        })
                        .collect(),
                ));
            }
            other => {
                return Err(ConnectorError::transient(format!(
                    "zendesk: job {} has an unknown status {other:?}",
                    pending.job
                )));
            }
        }
        let results: Vec<&Value> = job["results"].as_array().map(|r| r.iter().collect()).unwrap_or_default();
        Ok(Some(
            pending
                .ids
                .iter()
                .map(|id| {
                    let result =
                        results.iter().find(|r| r["id"].as_u64().map(|n| n.to_string()).as_deref() == Some(id));
                    let result = match result {
                        Some(r) if r["success"] == true || r["status"] == "Updated" => {
                            WriteResult::Written { version: None }
                        }
                        Some(r) if r["error"] == "UpdateConflict" => WriteResult::Conflict { current: None },
                        Some(r) => {
                            let code = r["error"].as_str().map(str::to_owned);
                            let details = r["details"].as_str().map_or_else(|| r["details"].to_string(), str::to_owned);
                            let mut err = ConnectorError::permanent(format!(
                                "zendesk: job {}: ticket {id}: {} {details}",
                                pending.job,
                                code.as_deref().unwrap_or("failed")
                            ));
                            err.code = code;
                            WriteResult::Failed(err)
                        }
                        None => WriteResult::Failed(ConnectorError::transient(format!(
                            "zendesk: job {} completed without a result for ticket {id}",
                            pending.job
                        ))),
                    };
                    WriteOutcome { id: id.clone(), result }
                })
                .collect(),
        ))
    }
}

fn snippet(value: &Value) -> String {
    let text = value.to_string();
    cut(&text, 200)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_links_open_the_ticket_in_the_agent_workspace() {
        let zendesk = Zendesk::new(Options {
            base_url: "https://acme.zendesk.com".into(),
            credentials: Credentials::OAuth { token: "t".to_owned().into() },
            timeout: Duration::from_secs(5),
            conversation_chars: 6000,
            search: None,
        })
        .unwrap();
        let links = zendesk.record_links("tickets", "7", &json!({}));
        assert_eq!(links, [RecordLink::new("Ticket in Zendesk", "https://acme.zendesk.com/agent/tickets/7").unwrap()]);
        assert!(zendesk.record_links("tickets", "7/../x", &json!({})).is_empty(), "only numeric ticket ids");
    }

    #[test]
    fn a_long_conversation_keeps_the_first_and_the_latest_messages() {
        let messages: Vec<String> = (0..20).map(|i| format!("message {i} {}", "x".repeat(100))).collect();
        let fitted = fit_conversation(&messages, 600);
        assert!(fitted.chars().count() <= 600, "{}", fitted.chars().count());
        assert!(fitted.starts_with("message 0 "));
        assert!(fitted.contains("message 19 "), "the latest message is kept");
        assert!(fitted.contains("left out"));
        assert!(!fitted.contains("message 5 "));
        let short = fit_conversation(&messages[..2], 6000);
        assert_eq!(short, format!("{}\n\n{}", messages[0], messages[1]));
    }
}
