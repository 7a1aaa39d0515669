//! The Freshdesk (API v2) connector.
//!
//! - Listing is `GET /tickets?updated_since=…&order_by=updated_at&order_type=asc&per_page=…&include=description`
//!   (oldest change first). Freshdesk refuses pages past the 300th, so the `updated_since` window
//!   moves forward on every page: the next request is page 1 from the newest `updated_at` seen,
//!   skipping what was already listed (the cursor carries the last `(updated_at, id)`); only a
//!   page whose tickets all changed in one second pages on inside that second. On the last page
//!   [`Page::resume`] is a cursor from the newest `updated_at` seen, for the next incremental run.
//! - Fields as tasks see them: `subject`, `description` (plain text), `conversation` (the
//!   description and every reply and note with its author's role, visibility and time, newest last,
//!   cut to a character budget that keeps the first and the latest), `status`, `priority`
//!   (readable names: `low` … `urgent`, `open` … `closed`; integers on the wire), `type`, `tags`,
//!   `company` (the company's name, listings only, cached per connector) and each custom field by
//!   its label as `custom.<Label>` (labels from `/ticket_fields`, read once per connector).
//! - The version is `updated_at`. Freshdesk has no concurrency token: the engine re-reads (`fetch`)
//!   and compares versions just before writing.
//! - Writes: `PUT /tickets/{id}` per ticket, or one `POST /tickets/bulk_update` job (polled with
//!   [`Connector::poll_write`]) when every ticket in the call gets the same properties and no note.
//!   `tags` replaces the set on Freshdesk, so a merge sends the ticket's current tags (from
//!   [`Change::native`], else re-read) plus the new ones; [`WriteMode::Restore`] sends exactly the
//!   earlier list. `internal_note` adds a private note (`POST /tickets/{id}/notes`) after the update.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use enrichd_connector::conversation::cut;
pub use enrichd_connector::conversation::fit_conversation;
use enrichd_connector::http::{self, classify, transport_error};
use enrichd_connector::{
    Change, Connector, ConnectorError, Page, PageRequest, PendingWrite, Record, RecordLink, Version, WriteMode,
    WriteOutcome, WriteResult, WriteSubmission,
};
use futures::StreamExt as _;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

use crate::Options;

/// The one entity this connector knows.
pub const TICKETS: &str = "tickets";
/// Freshdesk's cap on `per_page` and on ids per `bulk_update`.
const MAX_BATCH: usize = 100;
/// The last page `GET /tickets` serves.
pub const PAGE_WALL: u32 = 300;
/// Attempts for reads (429 and 5xx are retried, honouring `Retry-After`).
const READ_ATTEMPTS: u32 = 4;
/// Tickets read at once (conversations while listing, tickets while fetching).
const CONCURRENT_READS: usize = 4;
/// Freshdesk's priorities, 1 to 4, as tasks see them.
pub const PRIORITIES: [&str; 4] = ["low", "medium", "high", "urgent"];
/// Freshdesk's built-in statuses, 2 to 5, as tasks see them (custom statuses come from `/ticket_fields`).
const STATUSES: [(u64, &str); 4] = [(2, "open"), (3, "pending"), (4, "resolved"), (5, "closed")];
/// Job-item error codes that say the value itself is wrong (not worth a retry).
const VALIDATION_CODES: [&str; 8] = [
    "invalid_value",
    "invalid_field",
    "datatype_mismatch",
    "missing_field",
    "duplicate_value",
    "readonly_field",
    "inaccessible_field",
    "invalid_json",
];

/// A ticket field as the connector uses it (`GET /ticket_fields`).
#[derive(Debug, Clone)]
pub struct TicketField {
    pub id: u64,
    /// The API name (`cf_category`, `priority`, `ticket_type`).
    pub name: String,
    /// The label agents see ("Category"): a custom field is `custom.<label>` to tasks.
    pub label: String,
    /// `custom_dropdown`, `custom_text`, `default_priority`, ...
    pub kind: String,
    /// Freshdesk's own fields (`default: true`) as against the account's custom fields.
    pub default: bool,
    /// A dropdown's choices as written in `custom_fields` (and `ticket_type`'s types); for
    /// `status`, the agent labels of each status number.
    pub choices: Vec<String>,
    /// For `status`: number → agent label.
    pub statuses: Vec<(u64, String)>,
}

/// The account's API allowance as the last response reported it, for a shared rate gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Credits per minute (`X-RateLimit-Total`).
    pub total: u32,
    /// Credits left in the minute (`X-RateLimit-Remaining`).
    pub remaining: u32,
    /// Credits the last request cost (`X-RateLimit-Used-CurrentRequest`; `include` costs extra).
    pub used_current_request: Option<u32>,
}

impl RateLimit {
    pub fn from_headers(headers: &HeaderMap) -> Option<RateLimit> {
        let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
        let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Some(RateLimit {
            total: clamp(number("x-ratelimit-total")?),
            remaining: clamp(number("x-ratelimit-remaining")?),
            used_current_request: number("x-ratelimit-used-currentrequest").map(clamp),
        })
    }
}

/// Where a listing is: the `updated_since` window, the page in it, and the last ticket listed
/// (skipped when a moved window lists it again). Written `since|page|after_updated_at|after_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListCursor {
    since: String,
    page: u32,
    after: Option<(i64, u64)>,
}

impl ListCursor {
    fn encode(&self) -> String {
        match self.after {
            Some((at, id)) => format!("{}|{}|{at}|{id}", self.since, self.page),
            None => format!("{}|{}||", self.since, self.page),
        }
    }

    fn decode(cursor: &str) -> Option<ListCursor> {
        let mut parts = cursor.split('|');
        let since = parts.next()?.to_owned();
        chrono::DateTime::parse_from_rfc3339(&since).ok()?;
        let page = parts.next()?.parse().ok().filter(|p| *p >= 1)?;
        let after = match (parts.next().unwrap_or(""), parts.next().unwrap_or("")) {
            ("", "") => None,
            (at, id) => Some((at.parse().ok()?, id.parse().ok()?)),
        };
        Some(ListCursor { since, page, after })
    }
}

/// The Freshdesk connector.
pub struct Freshdesk {
    api: String,
    api_key: SecretString,
    http: reqwest::Client,
    conversation_chars: usize,
    list_since: String,
    fields: OnceCell<Vec<TicketField>>,
    companies: Mutex<HashMap<u64, Option<String>>>,
    rate_limit: Mutex<Option<RateLimit>>,
}

/// A change in Freshdesk's terms: the ticket properties and the private note, if any.
#[derive(Debug, Clone, PartialEq)]
struct Prepared {
    id: u64,
    properties: Map<String, Value>,
    note: Option<String>,
}

fn iso(epoch: i64) -> String {
    chrono::DateTime::from_timestamp(epoch, 0).unwrap_or_default().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn epoch(value: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(value).ok().map(|t| t.timestamp())
}

impl Freshdesk {
    pub fn new(options: Options) -> Result<Self, ConnectorError> {
        Ok(Self {
            api: format!("{}/api/v2", options.base_url),
            api_key: options.api_key,
            http: http::client(options.timeout),
            conversation_chars: options.conversation_chars,
            list_since: options.list_since,
            fields: OnceCell::new(),
            companies: Mutex::new(HashMap::new()),
            rate_limit: Mutex::new(None),
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}/{path}", self.api))
            .basic_auth(self.api_key.expose_secret(), Some("X"))
            .header("accept", "application/json")
    }

    /// Sends a request once and reads its JSON body (`Null` for an empty one); errors classified.
    async fn call(&self, request: RequestBuilder, what: &str) -> Result<(Value, HeaderMap), ConnectorError> {
        let response = request.send().await.map_err(|e| transport_error(e, what))?;
        if let Some(limit) = RateLimit::from_headers(response.headers()) {
            *self.rate_limit.lock().unwrap_or_else(|e| e.into_inner()) = Some(limit);
        }
        let status = response.status();
        let headers = response.headers().clone();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(self.error(status, &headers, &body, what));
        }
        let bytes = response.bytes().await.map_err(|e| transport_error(e, what))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok((Value::Null, headers));
        }
        let body = serde_json::from_slice(&bytes).map_err(|e| {
            let mut err = ConnectorError::transient(format!("{what}: response body is not the expected JSON: {e}"));
            err.code = Some("malformed_body".into());
            err
        })?;
        Ok((body, headers))
    }

    /// A GET with retries; the body and the response headers.
    async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
        what: &str,
    ) -> Result<(Value, HeaderMap), ConnectorError> {
        http::with_retries(READ_ATTEMPTS, Duration::from_millis(500), || {
            self.call(self.request(Method::GET, path).query(query), what)
        })
        .await
    }

    /// Classifies a failed response; Freshdesk's validation-error shape
    /// (`{"description":"Validation failed","errors":[{"field","message","code"}]}`) is spelled out
    /// with each field by the name tasks use (`custom.Category`) and its API name.
    fn error(&self, status: reqwest::StatusCode, headers: &HeaderMap, body: &str, what: &str) -> ConnectorError {
        let mut err = classify(status, headers, body, what);
        let Ok(value) = serde_json::from_str::<Value>(body) else { return err };
        let Some(errors) = value["errors"].as_array().filter(|e| !e.is_empty()) else { return err };
        let details: Vec<String> = errors.iter().map(|e| self.describe_item_error(e)).collect();
        let code = errors[0]["code"].as_str().map(str::to_owned);
        err.message = format!(
            "{what}: HTTP {}{}: {}: {}",
            status.as_u16(),
            code.as_deref().map(|c| format!(" {c}")).unwrap_or_default(),
            value["description"].as_str().unwrap_or("Validation failed"),
            details.join("; ")
        );
        err.code = code;
        err
    }

    /// `field (name): message [code]` of one `{"field","message","code"}` error.
    fn describe_item_error(&self, error: &Value) -> String {
        let field = error["field"].as_str().unwrap_or("?");
        let message = error["message"].as_str().unwrap_or("invalid");
        let shown = match self.fields.get().and_then(|f| f.iter().find(|f| f.name == field && !f.default)) {
            Some(def) => format!("custom.{} ({field})", def.label),
            None => field.to_owned(),
        };
        match error["code"].as_str() {
            Some(code) => format!("{shown}: {message} [{code}]"),
            None => format!("{shown}: {message}"),
        }
    }

    /// The allowance the last response reported, if any did.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        *self.rate_limit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The account's ticket fields (read once per connector).
    pub async fn ticket_fields(&self) -> Result<&[TicketField], ConnectorError> {
        let fields = self.fields.get_or_try_init(|| self.read_ticket_fields()).await?;
        Ok(fields)
    }

    /// The account's ticket fields as they are now (`GET /ticket_fields`).
    pub async fn read_ticket_fields(&self) -> Result<Vec<TicketField>, ConnectorError> {
        let (body, _) = self.get("ticket_fields", &[], "freshdesk: GET ticket_fields").await?;
        let strings = |v: &Value| -> Vec<String> {
            v.as_array().map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect()).unwrap_or_default()
        };
        Ok(body
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| {
                let statuses = f["choices"]
                    .as_object()
                    .filter(|_| f["name"] == "status")
                    .map(|c| {
                        c.iter()
                            .filter_map(|(n, labels)| Some((n.parse().ok()?, labels[0].as_str()?.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default();
                Some(TicketField {
                    id: f["id"].as_u64()?,
                    name: f["name"].as_str()?.to_owned(),
                    label: f["label"].as_str()?.to_owned(),
                    kind: f["type"].as_str().unwrap_or("").to_owned(),
                    default: f["default"] == true,
                    choices: strings(&f["choices"]),
                    statuses,
                })
            })
            .collect())
    }

    fn entity(entity: &str) -> Result<(), ConnectorError> {
        if entity == TICKETS {
            Ok(())
        } else {
            Err(ConnectorError::permanent(format!(
                "freshdesk: unknown entity {entity:?}; this connector knows \"tickets\""
            )))
        }
    }

    /// The readable name of a status number.
    fn status_name(&self, number: u64) -> String {
        if let Some((_, name)) = STATUSES.iter().find(|(n, _)| *n == number) {
            return (*name).to_owned();
        }
        self.fields
            .get()
            .and_then(|fields| fields.iter().find(|f| f.name == "status"))
            .and_then(|f| f.statuses.iter().find(|(n, _)| *n == number))
            .map_or_else(|| format!("status {number}"), |(_, label)| label.to_lowercase())
    }

    /// A ticket's conversation as the model sees it: the description (the customer's first
    /// message) and every reply and note with its author's role, visibility and time, oldest first,
    /// cut to the character budget keeping the first and as many of the latest as fit.
    pub async fn conversation(&self, ticket: &Value) -> Result<String, ConnectorError> {
        let id = ticket["id"].as_u64().unwrap_or(0);
        let mut messages = Vec::new();
        let description = ticket["description_text"].as_str().unwrap_or("").trim();
        if !description.is_empty() {
            messages.push(format!("[{} customer, public]\n{description}", ticket["created_at"].as_str().unwrap_or("")));
        }
        let what = format!("freshdesk: GET tickets/{id}/conversations");
        let mut page = 1u32;
        loop {
            let query = [("per_page", MAX_BATCH.to_string()), ("page", page.to_string())];
            let (body, headers) = self.get(&format!("tickets/{id}/conversations"), &query, &what).await?;
            for entry in body.as_array().into_iter().flatten() {
                let role = if entry["incoming"] == true { "customer" } else { "agent" };
                let visibility = if entry["private"] == true { "private note" } else { "public" };
                let text = entry["body_text"].as_str().unwrap_or("").trim();
                messages.push(format!("[{} {role}, {visibility}]\n{text}", entry["created_at"].as_str().unwrap_or("")));
            }
            if !has_next(&headers) {
                break;
            }
            page += 1;
        }
        Ok(fit_conversation(&messages, self.conversation_chars))
    }

    /// The name of company `id` (read once per connector; `None` when Freshdesk does not know it).
    async fn company(&self, id: u64) -> Result<Option<String>, ConnectorError> {
        if let Some(name) = self.companies.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
            return Ok(name.clone());
        }
        let name = match self.get(&format!("companies/{id}"), &[], &format!("freshdesk: GET companies/{id}")).await {
            Ok((body, _)) => body["name"].as_str().map(str::to_owned),
            Err(e) if e.status == Some(404) => None,
            Err(e) => return Err(e),
        };
        self.companies.lock().unwrap_or_else(|e| e.into_inner()).insert(id, name.clone());
        Ok(name)
    }

    /// A ticket as a record; with `listing`, its conversation and company too.
    async fn record(&self, ticket: &Value, listing: bool) -> Result<Record, ConnectorError> {
        let id = ticket["id"].as_u64().map(|id| id.to_string()).ok_or_else(|| {
            ConnectorError::permanent(format!("freshdesk: a ticket without an integer id: {}", snippet(ticket)))
        })?;
        let version = ticket["updated_at"]
            .as_str()
            .map(|v| Version(v.to_owned()))
            .ok_or_else(|| ConnectorError::permanent(format!("freshdesk: ticket {id} has no updated_at")))?;
        let fields_def = self.ticket_fields().await?;
        let mut fields = Map::new();
        fields.insert("subject".into(), ticket["subject"].clone());
        fields.insert("description".into(), ticket["description_text"].clone());
        fields.insert("status".into(), ticket["status"].as_u64().map_or(Value::Null, |s| json!(self.status_name(s))));
        let priority = ticket["priority"].as_u64().and_then(|p| PRIORITIES.get((p as usize).checked_sub(1)?));
        fields.insert("priority".into(), priority.map_or(Value::Null, |p| json!(p)));
        fields.insert("type".into(), ticket["type"].clone());
        fields.insert("tags".into(), if ticket["tags"].is_array() { ticket["tags"].clone() } else { json!([]) });
        for (name, value) in ticket["custom_fields"].as_object().into_iter().flatten() {
            if let Some(def) = fields_def.iter().find(|f| &f.name == name && !f.default) {
                fields.insert(format!("custom.{}", def.label), value.clone());
            }
        }
        if listing {
            let company = match ticket["company_id"].as_u64() {
                Some(company) => self.company(company).await?,
                None => None,
            };
            fields.insert("company".into(), company.map_or(Value::Null, Value::String));
            fields.insert("conversation".into(), Value::String(self.conversation(ticket).await?));
        }
        Ok(Record { id, version, fields, attachments: Vec::new(), native: Some(ticket.clone()) })
    }

    /// A listed ticket as a record, with its conversation and company.
    async fn listed(&self, ticket: Value) -> Result<Record, ConnectorError> {
        self.record(&ticket, true).await
    }

    /// One ticket as it is now (`GET /tickets/{id}`); `None` when Freshdesk does not know it.
    async fn read_ticket(&self, id: String) -> Result<Option<Record>, ConnectorError> {
        let Ok(number) = id.parse::<u64>() else { return Ok(None) };
        let what = format!("freshdesk: GET tickets/{number}");
        match self.get(&format!("tickets/{number}"), &[], &what).await {
            Ok((ticket, _)) => self.record(&ticket, false).await.map(Some),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of `GET /tickets` in the window `cursor` names.
    async fn list_page(&self, cursor: &ListCursor, per_page: u32) -> Result<(Vec<Value>, bool), ConnectorError> {
        let query = [
            ("updated_since", cursor.since.clone()),
            ("order_by", "updated_at".into()),
            ("order_type", "asc".into()),
            ("per_page", per_page.to_string()),
            ("page", cursor.page.to_string()),
            ("include", "description".into()),
        ];
        let what = format!("freshdesk: GET tickets (updated_since {}, page {})", cursor.since, cursor.page);
        let (body, headers) = self.get("tickets", &query, &what).await?;
        let tickets = body.as_array().cloned().ok_or_else(|| {
            ConnectorError::transient(format!("{what}: expected a list of tickets, got {}", snippet(&body)))
        })?;
        Ok((tickets, has_next(&headers)))
    }

    /// The ticket properties and note of one change, in Freshdesk's terms. `current_tags` is the
    /// ticket's tag set now (needed to merge tags, which Freshdesk replaces).
    async fn prepare(&self, change: &Change) -> Result<Prepared, ConnectorError> {
        let id: u64 = change.id.parse().map_err(|_| {
            ConnectorError::permanent(format!("freshdesk: ticket id {:?} is not a Freshdesk ticket id", change.id))
        })?;
        let fields = self.ticket_fields().await?;
        let mut properties = Map::new();
        let mut custom = Map::new();
        let mut note = None;
        let invalid = |field: &str, message: String| {
            let mut err = ConnectorError::permanent(format!("freshdesk: ticket {id}: {field}: {message}"));
            err.code = Some("invalid_value".into());
            err
        };
        for (field, value) in &change.fields {
            match field.as_str() {
                "subject" => {
                    properties.insert("subject".into(), value.clone());
                }
                "type" => {
                    properties.insert("type".into(), value.clone());
                }
                "priority" => {
                    let name = value.as_str().map(|v| v.trim().to_lowercase()).unwrap_or_default();
                    let Some(number) = PRIORITIES.iter().position(|p| *p == name) else {
                        return Err(invalid(
                            "priority",
                            format!("{value} is not a Freshdesk priority (one of {})", PRIORITIES.join(", ")),
                        ));
                    };
                    properties.insert("priority".into(), json!(number + 1));
                }
                "status" => {
                    let name = value.as_str().map(|v| v.trim().to_lowercase()).unwrap_or_default();
                    let custom_statuses = fields.iter().filter(|f| f.name == "status").flat_map(|f| f.statuses.iter());
                    let number =
                        STATUSES.iter().find(|(_, n)| *n == name).map(|(n, _)| *n).or_else(|| {
                            custom_statuses.clone().find(|(_, l)| l.to_lowercase() == name).map(|(n, _)| *n)
                        });
                    let Some(number) = number else {
                        return Err(invalid("status", format!("{value} is not a status of this Freshdesk account")));
                    };
                    properties.insert("status".into(), json!(number));
                }
                "tags" => {
                    let Some(tags) = value.as_array().filter(|t| t.iter().all(Value::is_string)) else {
                        return Err(invalid("tags", format!("must be a list of strings, got {value}")));
                    };
                    let tags = match change.mode {
                        WriteMode::Restore => tags.clone(),
                        WriteMode::Merge => {
                            let mut merged = self.current_tags(change, id).await?;
                            for tag in tags {
                                let tag = tag.as_str().unwrap_or("").trim();
                                let known =
                                    merged.iter().any(|t| t.as_str().is_some_and(|t| t.eq_ignore_ascii_case(tag)));
                                if !tag.is_empty() && !known {
                                    merged.push(json!(tag));
                                }
                            }
                            merged
                        }
                    };
                    properties.insert("tags".into(), Value::Array(tags));
                }
                "internal_note" => {
                    note = value.as_str().map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned);
                }
                name => {
                    let Some(label) = name.strip_prefix("custom.") else {
                        return Err(invalid(
                            name,
                            "cannot be written (writable: subject, priority, status, type, tags, internal_note, custom.<field label>)".into(),
                        ));
                    };
                    let Some(def) = fields.iter().find(|f| !f.default && f.label == label) else {
                        return Err(invalid(name, format!("there is no custom ticket field labelled {label:?}")));
                    };
                    custom.insert(def.name.clone(), value.clone());
                }
            }
        }
        if !custom.is_empty() {
            properties.insert("custom_fields".into(), Value::Object(custom));
        }
        Ok(Prepared { id, properties, note })
    }

    /// The ticket's tags now: from the copy the engine re-read just before this write, else read.
    async fn current_tags(&self, change: &Change, id: u64) -> Result<Vec<Value>, ConnectorError> {
        if let Some(tags) = change.native.as_ref().and_then(|n| n["tags"].as_array()) {
            return Ok(tags.clone());
        }
        let what = format!("freshdesk: GET tickets/{id} (current tags)");
        let (body, _) = self.get(&format!("tickets/{id}"), &[], &what).await?;
        Ok(body["tags"].as_array().cloned().unwrap_or_default())
    }

    /// One ticket written with `PUT /tickets/{id}`, then its private note. Every failure is this
    /// ticket's outcome.
    async fn write_one(&self, prepared: &Prepared) -> WriteResult {
        let id = prepared.id;
        let mut version = None;
        if !prepared.properties.is_empty() {
            let what = format!("freshdesk: PUT tickets/{id}");
            let request = self.request(Method::PUT, &format!("tickets/{id}")).json(&prepared.properties);
            match self.call(request, &what).await {
                Ok((body, _)) => version = body["updated_at"].as_str().map(|v| Version(v.to_owned())),
                Err(e) if e.status == Some(404) => {
                    return WriteResult::Failed(ConnectorError {
                        message: format!("{what}: ticket {id} does not exist (deleted?)"),
                        ..e
                    });
                }
                Err(e) => return WriteResult::Failed(e),
            }
        }
        if let Some(note) = &prepared.note {
            let what = format!("freshdesk: POST tickets/{id}/notes");
            let request = self
                .request(Method::POST, &format!("tickets/{id}/notes"))
                .json(&json!({"body": note, "private": true}));
            if let Err(mut e) = self.call(request, &what).await {
                if !prepared.properties.is_empty() {
                    e.message.push_str(" (the ticket's fields were written; the note was not)");
                }
                return WriteResult::Failed(e);
            }
            // The note moved `updated_at` past the update's version.
            version = None;
        }
        WriteResult::Written { version }
    }
}

/// Whether a response's `Link` header names a next page.
fn has_next(headers: &HeaderMap) -> bool {
    headers.get_all("link").iter().filter_map(|v| v.to_str().ok()).any(|v| v.contains("rel=\"next\""))
}

#[async_trait]
impl Connector for Freshdesk {
    fn kind(&self) -> &'static str {
        "freshdesk"
    }

    /// The ticket in the helpdesk's agent view (`https://acme.freshdesk.com/a/tickets/7`).
    fn record_links(&self, _entity: &str, external_id: &str, _fields: &Value) -> Vec<RecordLink> {
        let Ok(id) = external_id.parse::<u64>() else { return Vec::new() };
        let helpdesk = self.api.strip_suffix("/api/v2").unwrap_or(&self.api);
        RecordLink::new("Ticket in Freshdesk", format!("{helpdesk}/a/tickets/{id}")).into_iter().collect()
    }

    async fn check(&self, entity: &str) -> Result<(), ConnectorError> {
        Self::entity(entity)?;
        let cursor = ListCursor { since: self.list_since.clone(), page: 1, after: None };
        self.list_page(&cursor, 1).await?;
        self.ticket_fields().await?;
        Ok(())
    }

    async fn list(&self, entity: &str, request: &PageRequest) -> Result<Page, ConnectorError> {
        Self::entity(entity)?;
        let cursor = match (&request.cursor, &request.modified_after) {
            (Some(c), _) => ListCursor::decode(c).ok_or_else(|| {
                ConnectorError::permanent(format!("freshdesk: listing cursor {c:?} is not one this connector wrote"))
            })?,
            (None, Some(after)) => {
                let at = epoch(after).ok_or_else(|| {
                    ConnectorError::permanent(format!("freshdesk: modified_after {after:?} is not RFC 3339"))
                })?;
                ListCursor { since: iso(at), page: 1, after: None }
            }
            (None, None) => ListCursor { since: self.list_since.clone(), page: 1, after: None },
        };
        let per_page = match request.per_page {
            0 => MAX_BATCH as u32,
            n => n.min(MAX_BATCH as u32),
        };
        if cursor.page > PAGE_WALL {
            return Err(ConnectorError::permanent(format!(
                "freshdesk: more than {PAGE_WALL} pages of tickets changed at {}; Freshdesk serves no page past {PAGE_WALL}",
                cursor.since
            )));
        }
        let (tickets, more) = self.list_page(&cursor, per_page).await?;
        let position = |t: &Value| Some((epoch(t["updated_at"].as_str()?)?, t["id"].as_u64()?));
        let fresh: Vec<Value> = tickets
            .iter()
            .filter(|t| match (cursor.after, position(t)) {
                (Some(after), Some(at)) => at > after,
                _ => true,
            })
            .cloned()
            .collect();
        let mut records = Vec::with_capacity(fresh.len());
        let mut built = futures::stream::iter(fresh.into_iter().map(|t| self.listed(t))).buffered(CONCURRENT_READS);
        while let Some(record) = built.next().await {
            records.push(record?);
        }
        let last = tickets.iter().filter_map(position).max().max(cursor.after);
        let since = epoch(&cursor.since).unwrap_or(i64::MIN);
        let next = match last {
            None => None,
            _ if !more => None,
            // The window moves to the newest change seen, so every request is page 1 of a fresh
            // window: the page wall is never near, and a ticket changed while the listing runs
            // (moved to the end) does not shift an unseen ticket onto a page already read.
            Some(last) if last.0 > since => Some(ListCursor { since: iso(last.0), page: 1, after: Some(last) }),
            // A whole page changed within one second: page on inside that second.
            Some(last) => Some(ListCursor { page: cursor.page + 1, after: Some(last), ..cursor.clone() }),
        };
        // A later listing starts from the newest change seen; that second is listed again, so a
        // ticket changed later in the same second is not missed.
        let resume = next.is_none().then(|| {
            let since = last.map_or(cursor.since.clone(), |(at, _)| iso(at));
            ListCursor { since, page: 1, after: None }.encode()
        });
        Ok(Page { records, next: next.map(|c| c.encode()), total: None, resume })
    }

    async fn fetch(&self, entity: &str, ids: &[String]) -> Result<Vec<Record>, ConnectorError> {
        Self::entity(entity)?;
        let mut records = Vec::with_capacity(ids.len());
        let mut reads =
            futures::stream::iter(ids.iter().cloned().map(|id| self.read_ticket(id))).buffered(CONCURRENT_READS);
        while let Some(record) = reads.next().await {
            records.extend(record?);
        }
        Ok(records)
    }

    fn max_write_batch(&self) -> usize {
        MAX_BATCH
    }

    async fn allowed_values(&self, entity: &str, field: &str) -> Result<Option<Vec<String>>, ConnectorError> {
        Self::entity(entity)?;
        if field == "priority" {
            return Ok(Some(PRIORITIES.iter().map(|p| (*p).to_owned()).collect()));
        }
        // Fresh fields, not the per-connector cache: a choice added or removed since the daemon
        // started counts from the next run.
        let fields = self.read_ticket_fields().await?;
        Ok(match field {
            "type" => fields.into_iter().find(|f| f.name == "ticket_type").map(|f| f.choices),
            "status" => fields.into_iter().find(|f| f.name == "status").map(|f| {
                let mut names: Vec<String> = STATUSES.iter().map(|(_, n)| (*n).to_owned()).collect();
                for (number, label) in f.statuses {
                    if !STATUSES.iter().any(|(n, _)| *n == number) {
                        names.push(label.to_lowercase());
                    }
                }
                names
            }),
            name => {
                let Some(label) = name.strip_prefix("custom.") else { return Ok(None) };
                fields
                    .into_iter()
                    .find(|f| !f.default && f.label == label && f.kind.contains("dropdown"))
                    .map(|f| f.choices)
            }
        })
    }

    async fn write(&self, entity: &str, changes: &[Change]) -> Result<WriteSubmission, ConnectorError> {
        Self::entity(entity)?;
        if changes.len() > MAX_BATCH {
            return Err(ConnectorError::permanent(format!(
                "freshdesk: {} changes in one write; at most {MAX_BATCH} (bulk_update's cap)",
                changes.len()
            )));
        }
        let mut prepared = Vec::with_capacity(changes.len());
        for change in changes {
            prepared.push(self.prepare(change).await);
        }
        // Identical properties for every ticket and no notes: one asynchronous bulk job.
        let bulk = match prepared.as_slice() {
            [Ok(first), rest @ ..] if !rest.is_empty() && !first.properties.is_empty() => rest
                .iter()
                .all(|p| p.as_ref().is_ok_and(|p| p.properties == first.properties && p.note.is_none()))
                .then_some(first)
                .filter(|first| first.note.is_none()),
            _ => None,
        };
        if let Some(first) = bulk {
            let ids: Vec<u64> = prepared.iter().filter_map(|p| p.as_ref().ok().map(|p| p.id)).collect();
            let body = json!({"bulk_action": {"ids": ids, "properties": first.properties}});
            let request = self.request(Method::POST, "tickets/bulk_update").json(&body);
            let (answer, _) = self.call(request, "freshdesk: POST tickets/bulk_update").await?;
            let job = answer["job_id"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| answer["job_id"].as_u64().map(|n| n.to_string()));
            let job = job.ok_or_else(|| {
                ConnectorError::transient(format!(
                    "freshdesk: bulk_update answered without a job_id: {}",
                    snippet(&answer)
                ))
            })?;
            return Ok(WriteSubmission::Pending(PendingWrite {
                entity: entity.to_owned(),
                job,
                ids: changes.iter().map(|c| c.id.clone()).collect(),
            }));
        }
        let mut outcomes = Vec::with_capacity(changes.len());
        for (change, prepared) in changes.iter().zip(prepared) {
            let result = match prepared {
                Ok(prepared) => self.write_one(&prepared).await,
                Err(e) => WriteResult::Failed(e),
            };
            outcomes.push(WriteOutcome { id: change.id.clone(), result });
        }
        Ok(WriteSubmission::Done(outcomes))
    }

    fn holds(&self, field: &str, written: &Value, stored: Option<&Value>) -> bool {
        if field == "tags" {
            // Tags are merged into the set, compared without case.
            let stored: Vec<String> = stored
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(|t| t.trim().to_lowercase()).collect())
                .unwrap_or_default();
            return written.as_array().is_some_and(|w| {
                w.iter().filter_map(Value::as_str).all(|t| stored.contains(&t.trim().to_lowercase()))
            });
        }
        if field == "priority" || field == "status" {
            let name = |v: &Value| v.as_str().map(|s| s.trim().to_lowercase());
            return stored.and_then(name).is_some_and(|s| Some(s) == name(written));
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
        let what = format!("freshdesk: GET jobs/{}", pending.job);
        let (job, _) = self.get(&format!("jobs/{}", pending.job), &[], &what).await?;
        let status = job["status"].as_str().unwrap_or("").trim().to_uppercase().replace(' ', "_");
        match status.as_str() {
            "QUEUED" | "IN_PROGRESS" => return Ok(None),
            "COMPLETED" | "PARTIAL" => {}
            "FAILED" => {
                return Ok(Some(
                    pending
                        .ids
                        .iter()
                        .map(|id| WriteOutcome {
                            id: id.clone(),
                            result: WriteResult::Failed(ConnectorError::transient(format!(
                                "freshdesk: job {} failed (ticket {id} not known to be written)",
                                pending.job
                            ))),
                        })
                        .collect(),
                ));
            }
            other => {
                return Err(ConnectorError::transient(format!(
                    "freshdesk: job {} has an unknown status {other:?}",
                    pending.job
                )));
            }
        }
        // Labels for error messages.
        self.ticket_fields().await?;
        let data: Vec<&Value> = job["data"].as_array().map(|d| d.iter().collect()).unwrap_or_default();
        Ok(Some(
            pending
                .ids
                .iter()
                .map(|id| {
                    let item =
                        data.iter().find(|d| d["id"].as_u64().map(|n| n.to_string()).as_deref() == Some(id.as_str()));
                    let result = match item {
                        Some(item) if item["success"] == true => WriteResult::Written { version: None },
                        Some(item) => {
                            let errors: Vec<&Value> = item["errors"]
                                .as_array()
                                .map(|e| e.iter().collect())
                                .or_else(|| item.get("error").map(|e| vec![e]))
                                .unwrap_or_default();
                            let details: Vec<String> = errors
                                .iter()
                                .map(|e| {
                                    if e.is_string() {
                                        e.as_str().unwrap_or("").to_owned()
                                    } else {
                                        self.describe_item_error(e)
                                    }
                                })
                                .collect();
                            let code = errors.first().and_then(|e| e["code"].as_str()).map(str::to_owned);
                            let retryable = !code.as_deref().is_some_and(|c| VALIDATION_CODES.contains(&c));
                            let message = format!(
                                "freshdesk: job {}: ticket {id}: {}",
                                pending.job,
                                if details.is_empty() {
                                    "failed without a reason".to_owned()
                                } else {
                                    details.join("; ")
                                }
                            );
                            WriteResult::Failed(ConnectorError {
                                message,
                                retryable,
                                status: None,
                                code,
                                retry_after: None,
                                deferred: false,
                            })
                        }
                        None => WriteResult::Failed(ConnectorError::transient(format!(
                            "freshdesk: job {} completed without a result for ticket {id}",
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
    cut(&value.to_string(), 200)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_links_open_the_ticket_in_the_agent_view() {
        let freshdesk = Freshdesk::new(Options {
            base_url: "https://acme.freshdesk.com".into(),
            api_key: "k".to_owned().into(),
            timeout: Duration::from_secs(5),
            conversation_chars: 6000,
            list_since: crate::config::DEFAULT_LIST_SINCE.into(),
        })
        .unwrap();
        let links = freshdesk.record_links("tickets", "7", &json!({}));
        assert_eq!(links, [RecordLink::new("Ticket in Freshdesk", "https://acme.freshdesk.com/a/tickets/7").unwrap()]);
        assert!(freshdesk.record_links("tickets", "x", &json!({})).is_empty());
    }

    #[test]
    fn a_long_conversation_keeps_the_first_and_the_latest_messages() {
        let messages: Vec<String> = (0..20).map(|i| format!("message {i} {}", "y".repeat(120))).collect();
        let fitted = fit_conversation(&messages, 700);
        assert!(fitted.chars().count() <= 700, "{}", fitted.chars().count());
        assert!(fitted.starts_with("message 0 "));
        assert!(fitted.contains("message 19 "), "the latest message is kept");
        assert!(fitted.contains("left out"));
        assert!(!fitted.contains("message 10 "));
        assert_eq!(fit_conversation(&messages[..2], 6000), format!("{}\n\n{}", messages[0], messages[1]));
    }

    #[test]
    fn list_cursors_round_trip_and_refuse_strangers() {
        let cursor = ListCursor { since: "2026-01-05T09:00:00Z".into(), page: 3, after: Some((1_767_603_600, 42)) };
        assert_eq!(ListCursor::decode(&cursor.encode()), Some(cursor));
        let plain = ListCursor { since: "2026-01-05T09:00:00Z".into(), page: 1, after: None };
        assert_eq!(ListCursor::decode(&plain.encode()), Some(plain));
        assert_eq!(ListCursor::decode("start:12"), None);
        assert_eq!(ListCursor::decode("2026-01-05T09:00:00Z|0||"), None);
    }
}
