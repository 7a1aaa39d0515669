//! The Help Scout (Mailbox API 2.0) connector.
//!
//! - Auth: OAuth2 client credentials ([`ClientCredentials`]): a new token when the current one is
//!   about to expire, and once more when a call is answered 401 (the token expired mid-run); the
//!   refused call is then repeated once.
//! - Listing: `GET /v2/conversations?mailbox=…&status=…&modifiedSince=…&sortField=createdAt&
//!   sortOrder=asc&embed=threads&page=N`, HAL paging (`page.number`/`page.totalPages`, 50 per page:
//!   [`PageRequest::per_page`] cannot change it). Oldest created first, because page numbers are
//!   positions: a conversation changed while the listing runs (by our own writes, which start
//!   before discovery ends) keeps its position, where ordered by `modifiedAt` it would move to the
//!   end and push the one after it onto a page already read, out of the listing. New conversations
//!   join at the end. The cursor carries the page, the `modifiedSince` of the listing and when it
//!   started (the server's `Date`); the last page's [`Page::resume`] is a cursor that lists what
//!   changed since five minutes before that start.
//! - Fields as tasks see them: `subject`, `description` (the first customer message, else the
//!   preview), `preview`, `conversation` (threads: customer messages, agent replies and private
//!   notes with their author and time, newest last, cut to a character budget that keeps the first
//!   and the latest; listings only), `status`, `mailbox`, `tags` (names), and each mailbox custom
//!   field by its name as `custom.<Name>` (a dropdown by its option's label; absent ones as null).
//! - The version: `userUpdatedAt` plus a digest of status, subject, tags and custom fields. Help
//!   Scout moves `userUpdatedAt` on a subject change but not on a tag change
//!   (`tests/fixtures/helpscout/conversation_get_with_tags.json`), so the date alone would miss an
//!   agent's tags. Help Scout has no conditional update: each change re-reads the conversation just
//!   before writing and is a conflict if it moved since `base_version`.
//! - Writes, one conversation after another: `PATCH` (subject, status), custom fields through
//!   `PUT …/fields` (labels → option ids; the mailbox's fields are read fresh for every write, so an
//!   option deleted meanwhile fails that conversation alone, before anything is sent), tags through
//!   `PUT …/tags` with the current set merged in (the endpoint replaces the set; [`WriteMode::Restore`]
//!   sets exactly the given list), and an internal note (`POST …/notes`) when a change carries
//!   `internal_note`. Answers are 204/201 without a body. Writes count double against the
//!   account's per-minute limit ([`Usage::units`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use enrichd_connector::conversation::{cut, fit_conversation};
use enrichd_connector::http::{self, transport_error};
use enrichd_connector::oauth2::TokenStore;
use enrichd_connector::{
    Change, Connector, ConnectorError, Page, PageRequest, Record, RecordLink, Version, WriteMode, WriteOutcome,
    WriteResult, WriteSubmission,
};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

use crate::{ClientCredentials, Options};

/// The one entity this connector knows.
pub const CONVERSATIONS: &str = "conversations";
/// Attempts for reads (429 and 5xx are retried, honouring `X-RateLimit-Retry-After`).
const READ_ATTEMPTS: u32 = 4;
/// Changes per [`Connector::write`]: Help Scout has no batch update, each is several calls.
const MAX_WRITE_BATCH: usize = 25;
/// How far before a listing started the next listing (from [`Page::resume`]) looks back.
const RESUME_MARGIN_SECS: i64 = 300;
/// The statuses a conversation can be set to.
const WRITABLE_STATUSES: [&str; 3] = ["active", "pending", "closed"];

/// A mailbox custom field as the connector uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomField {
    pub id: u64,
    pub mailbox: u64,
    pub name: String,
    /// `DROPDOWN`, `SINGLE_LINE`, `MULTI_LINE`, `NUMBER`, `DATE`.
    pub kind: String,
    /// A dropdown's options: (option id, label).
    pub options: Vec<(u64, String)>,
}

/// The account's API allowance as the last response reported it, for a shared rate gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Request units per minute (`X-RateLimit-Limit-Minute`); a write costs two.
    pub limit: u32,
    /// Units left in the current minute (`X-RateLimit-Remaining-Minute`).
    pub remaining: u32,
}

impl RateLimit {
    pub fn from_headers(headers: &HeaderMap) -> Option<RateLimit> {
        let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u32>().ok();
        Some(RateLimit {
            limit: number("x-ratelimit-limit-minute")?,
            remaining: number("x-ratelimit-remaining-minute")?,
        })
    }
}

/// Requests this connector sent, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// GETs.
    pub reads: u64,
    /// POST, PUT, PATCH and DELETE requests.
    pub writes: u64,
}

impl Usage {
    /// What they cost against Help Scout's per-minute limit: a write counts as two requests.
    pub fn units(&self) -> u64 {
        self.reads + 2 * self.writes
    }
}

/// The Help Scout connector.
pub struct HelpScout {
    api: String,
    http: reqwest::Client,
    token: ClientCredentials,
    mailboxes: Vec<u64>,
    status: String,
    conversation_chars: usize,
    fields: OnceCell<Vec<CustomField>>,
    rate_limit: Mutex<Option<RateLimit>>,
    usage: Mutex<Usage>,
}

/// Where a listing is: its page, its `modifiedSince`, and when its first page was read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ListCursor {
    page: u32,
    since: Option<String>,
    started: Option<String>,
}

impl ListCursor {
    fn parse(cursor: &str) -> Result<ListCursor, ConnectorError> {
        let bad = || ConnectorError::permanent(format!("helpscout: listing cursor {cursor:?} is not this connector's"));
        let mut out = ListCursor::default();
        for part in cursor.split(';') {
            let (key, value) = part.split_once('=').ok_or_else(bad)?;
            match key {
                "page" => out.page = value.parse().map_err(|_| bad())?,
                "since" => out.since = Some(rfc3339(value).map_err(|_| bad())?),
                "started" => out.started = Some(rfc3339(value).map_err(|_| bad())?),
                _ => return Err(bad()),
            }
        }
        if out.page == 0 {
            return Err(bad());
        }
        Ok(out)
    }

    fn render(&self) -> String {
        let mut out = format!("page={}", self.page);
        if let Some(since) = &self.since {
            out.push_str(&format!(";since={since}"));
        }
        if let Some(started) = &self.started {
            out.push_str(&format!(";started={started}"));
        }
        out
    }
}

/// An instant as Help Scout writes it (`2019-06-02T13:47:21Z`).
fn rfc3339(value: &str) -> Result<String, chrono::ParseError> {
    let at = chrono::DateTime::parse_from_rfc3339(value)?;
    Ok(at.with_timezone(&chrono::Utc).format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

impl HelpScout {
    /// A connector for the connection named `connection` (the name keys its tokens in `store`).
    /// Tokens are loaded from `store` at the first call when still valid, and every new one is
    /// saved to it; without a store they live in memory only.
    pub fn new(
        connection: &str,
        options: Options,
        store: Option<Arc<dyn TokenStore>>,
    ) -> Result<HelpScout, ConnectorError> {
        let http = http::client(options.timeout);
        let token = ClientCredentials::new(
            connection,
            &options.base_url,
            options.client_id.clone(),
            options.client_secret.clone(),
            http.clone(),
            store,
        );
        Ok(HelpScout {
            api: format!("{}/v2", options.base_url),
            http,
            token,
            mailboxes: options.mailboxes,
            status: options.status,
            conversation_chars: options.conversation_chars,
            fields: OnceCell::new(),
            rate_limit: Mutex::new(None),
            usage: Mutex::new(Usage::default()),
        })
    }

    /// The allowance the last response reported, if any did.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        *self.rate_limit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The requests sent so far.
    pub fn usage(&self) -> Usage {
        *self.usage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many access tokens were requested from Help Scout (for tests and metrics).
    pub fn tokens_requested(&self) -> u64 {
        self.token.tokens_requested()
    }

    /// Sends one request with the current token; a 401 gets one new token and one repeat.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        what: &str,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), ConnectorError> {
        let mut token = self.token.access_token().await?;
        let mut renewed = false;
        loop {
            let mut request =
                self.http.request(method.clone(), format!("{}{path}", self.api)).bearer_auth(token.expose_secret());
            if !query.is_empty() {
                request = request.query(query);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(|e| transport_error(e, what))?;
            {
                let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
                if method == Method::GET { usage.reads += 1 } else { usage.writes += 1 }
            }
            if let Some(limit) = RateLimit::from_headers(response.headers()) {
                *self.rate_limit.lock().unwrap_or_else(|e| e.into_inner()) = Some(limit);
            }
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !renewed {
                tracing::debug!(what, "access token refused; requesting a new one");
                token = self.token.after_refusal(&token).await?;
                renewed = true;
                continue;
            }
            let headers = response.headers().clone();
            let bytes = response.bytes().await.map_err(|e| transport_error(e, what))?.to_vec();
            if !status.is_success() {
                return Err(classify(status, &headers, &bytes, what));
            }
            return Ok((status, headers, bytes));
        }
    }

    /// A GET with retries; the JSON body and the response headers.
    async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
        what: &str,
    ) -> Result<(Value, HeaderMap), ConnectorError> {
        http::with_retries(READ_ATTEMPTS, Duration::from_millis(500), || async {
            let (_, headers, bytes) = self.send(Method::GET, path, query, None, what).await?;
            Ok((parse(&bytes, what)?, headers))
        })
        .await
    }

    /// The custom fields of the configured mailboxes, read once per connector (names for records).
    pub async fn custom_fields(&self) -> Result<&[CustomField], ConnectorError> {
        Ok(self.fields.get_or_try_init(|| self.read_custom_fields()).await?)
    }

    /// The configured mailboxes' custom fields as they are now (`GET /v2/mailboxes/{id}/fields`).
    pub async fn read_custom_fields(&self) -> Result<Vec<CustomField>, ConnectorError> {
        let mut out = Vec::new();
        for mailbox in &self.mailboxes {
            let mut page = 1u32;
            loop {
                let what = format!("helpscout: GET mailboxes/{mailbox}/fields page {page}");
                let (body, _) =
                    self.get(&format!("/mailboxes/{mailbox}/fields"), &[("page", page.to_string())], &what).await?;
                for f in body["_embedded"]["fields"].as_array().into_iter().flatten() {
                    let (Some(id), Some(name)) = (f["id"].as_u64(), f["name"].as_str()) else { continue };
                    let options = f["options"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|o| Some((o["id"].as_u64()?, o["label"].as_str()?.to_owned())))
                        .collect();
                    out.push(CustomField {
                        id,
                        mailbox: *mailbox,
                        name: name.to_owned(),
                        kind: f["type"].as_str().unwrap_or("").to_owned(),
                        options,
                    });
                }
                if page >= body["page"]["totalPages"].as_u64().unwrap_or(1) as u32 {
                    break;
                }
                page += 1;
            }
        }
        Ok(out)
    }

    fn entity(entity: &str) -> Result<(), ConnectorError> {
        if entity == CONVERSATIONS {
            Ok(())
        } else {
            Err(ConnectorError::permanent(format!(
                "helpscout: unknown entity {entity:?}; this connector knows \"conversations\""
            )))
        }
    }

    /// A conversation as a record; `conversation` is filled when its threads are embedded.
    async fn record(&self, conversation: &Value) -> Result<Record, ConnectorError> {
        let id = conversation["id"].as_u64().map(|id| id.to_string()).ok_or_else(|| {
            ConnectorError::permanent(format!(
                "helpscout: a conversation without an integer id: {}",
                snippet(conversation)
            ))
        })?;
        let version = version(conversation)
            .ok_or_else(|| ConnectorError::permanent(format!("helpscout: conversation {id} has no userUpdatedAt")))?;
        let mut fields = Map::new();
        for key in ["subject", "status", "preview"] {
            fields.insert(key.to_owned(), conversation[key].clone());
        }
        fields.insert("mailbox".into(), conversation["mailboxId"].clone());
        fields.insert("tags".into(), Value::Array(tag_names(conversation).into_iter().map(Value::String).collect()));
        let mailbox = conversation["mailboxId"].as_u64();
        for field in self.custom_fields().await?.iter().filter(|f| Some(f.mailbox) == mailbox) {
            fields.insert(format!("custom.{}", field.name), Value::Null);
        }
        for entry in conversation["customFields"].as_array().into_iter().flatten() {
            let Some(name) = entry["name"].as_str() else { continue };
            let text = entry["text"].as_str().or(entry["value"].as_str()).filter(|t| !t.is_empty());
            fields.insert(format!("custom.{name}"), text.map_or(Value::Null, |t| Value::String(t.to_owned())));
        }
        let threads = conversation["_embedded"]["threads"].as_array();
        let mut description = conversation["preview"].clone();
        if let Some(threads) = threads {
            let mut threads: Vec<&Value> = threads.iter().collect();
            threads.sort_by(|a, b| {
                (a["createdAt"].as_str(), a["id"].as_u64()).cmp(&(b["createdAt"].as_str(), b["id"].as_u64()))
            });
            if let Some(first) = threads.iter().find(|t| t["type"] == "customer") {
                description = Value::String(plain_text(first["body"].as_str().unwrap_or("")));
            }
            let messages: Vec<String> = threads
                .iter()
                .filter_map(|t| {
                    let role = match t["type"].as_str()? {
                        "customer" => "customer",
                        "message" => "agent reply",
                        "note" => "agent note, private",
                        "chat" | "phone" => {
                            if t["createdBy"]["type"] == "customer" {
                                "customer"
                            } else {
                                "agent reply"
                            }
                        }
                        _ => return None,
                    };
                    let text = plain_text(t["body"].as_str().unwrap_or(""));
                    Some(format!("[{} {role}]\n{text}", t["createdAt"].as_str().unwrap_or("")))
                })
                .collect();
            fields.insert("conversation".into(), Value::String(fit_conversation(&messages, self.conversation_chars)));
        }
        fields.insert("description".into(), description);
        Ok(Record { id, version, fields, attachments: Vec::new(), native: Some(conversation.clone()) })
    }

    /// One conversation as it is now, `None` when Help Scout does not know it.
    async fn conversation(&self, id: &str) -> Result<Option<Value>, ConnectorError> {
        let what = format!("helpscout: GET conversations/{id}");
        match self.get(&format!("/conversations/{id}"), &[], &what).await {
            Ok((body, _)) => Ok(Some(body)),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes one change; `Err` only for errors that may pass (rate limit, 5xx, transport).
    async fn write_one(&self, change: &Change, fields: &[CustomField]) -> Result<WriteResult, ConnectorError> {
        let id = &change.id;
        let failed = |message: String| Ok(WriteResult::Failed(ConnectorError::permanent(message)));
        if id.parse::<u64>().is_err() {
            return failed(format!("helpscout: conversation id {id:?} is not a Help Scout conversation id"));
        }
        let Some(current) = self.conversation(id).await? else {
            return failed(format!("helpscout: conversation {id} no longer exists"));
        };
        let now = version(&current);
        if now.as_ref() != Some(&change.base_version) {
            return Ok(WriteResult::Conflict { current: now });
        }
        let mailbox = current["mailboxId"].as_u64().unwrap_or(0);
        // Everything is checked before anything is sent, so a refused value leaves the conversation as it was.
        let mut patches = Vec::new();
        let mut tags = None;
        let mut custom = BTreeMap::new();
        let mut note = None;
        for (field, value) in &change.fields {
            match field.as_str() {
                "subject" => match value.as_str().map(str::trim).filter(|s| !s.is_empty()) {
                    Some(s) => patches.push(json!({"op": "replace", "path": "/subject", "value": s})),
                    None => {
                        return failed(format!(
                            "helpscout: conversation {id}: subject must be a non-empty string, got {value}"
                        ));
                    }
                },
                "status" => match value.as_str().filter(|s| WRITABLE_STATUSES.contains(s)) {
                    Some(s) => patches.push(json!({"op": "replace", "path": "/status", "value": s})),
                    None => {
                        return failed(format!(
                            "helpscout: conversation {id}: status {value} is not one of {}",
                            WRITABLE_STATUSES.join(", ")
                        ));
                    }
                },
                "tags" => {
                    let Some(new) =
                        value.as_array().and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
                    else {
                        return failed(format!(
                            "helpscout: conversation {id}: tags must be a list of strings, got {value}"
                        ));
                    };
                    let mut set: Vec<String> =
                        if change.mode == WriteMode::Restore { Vec::new() } else { tag_names(&current) };
                    for tag in new.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
                        if !set.iter().any(|s| s.eq_ignore_ascii_case(tag)) {
                            set.push(tag.to_owned());
                        }
                    }
                    tags = Some(set);
                }
                "internal_note" => {
                    if let Some(text) = value.as_str().filter(|t| !t.trim().is_empty()) {
                        note = Some(text.to_owned());
                    }
                }
                name => {
                    let Some(title) = name.strip_prefix("custom.") else {
                        return failed(format!(
                            "helpscout: conversation {id}: field {name:?} cannot be written (writable: subject, status, tags, internal_note, custom.<field name>)"
                        ));
                    };
                    let Some(def) = fields.iter().find(|f| f.mailbox == mailbox && f.name == title) else {
                        return failed(format!(
                            "helpscout: conversation {id}: mailbox {mailbox} has no custom field named {title:?}"
                        ));
                    };
                    let wire = match (value, def.kind.as_str()) {
                        (Value::Null, _) => Value::String(String::new()),
                        (Value::String(label), "DROPDOWN") => match def.options.iter().find(|(_, l)| l == label) {
                            Some((option, _)) => Value::String(option.to_string()),
                            None => {
                                let labels: Vec<&str> = def.options.iter().map(|(_, l)| l.as_str()).collect();
                                let mut e = ConnectorError::permanent(format!(
                                    "helpscout: conversation {id}: {label:?} is not an option of the dropdown field {title:?} (deleted?); its options now: {}",
                                    labels.join(", ")
                                ));
                                e.code = Some("option_not_found".into());
                                return Ok(WriteResult::Failed(e));
                            }
                        },
                        (Value::String(s), _) => Value::String(s.clone()),
                        (Value::Number(n), _) => Value::String(n.to_string()),
                        (other, _) => {
                            return failed(format!(
                                "helpscout: conversation {id}: custom field {title:?} cannot hold {other}"
                            ));
                        }
                    };
                    custom.insert(def.id, wire);
                }
            }
        }
        for patch in &patches {
            let what = format!("helpscout: PATCH conversations/{id} {}", patch["path"].as_str().unwrap_or(""));
            if let Some(result) = self.write_call(Method::PATCH, &format!("/conversations/{id}"), patch, &what).await? {
                return Ok(result);
            }
        }
        if !custom.is_empty() {
            // Every field is sent, the current values with ours over them: the call sets the set it is given.
            let mut values: BTreeMap<u64, Value> = current["customFields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| Some((f["id"].as_u64()?, f["value"].clone())))
                .collect();
            values.extend(custom);
            let list: Vec<Value> = values.into_iter().map(|(id, value)| json!({"id": id, "value": value})).collect();
            let what = format!("helpscout: PUT conversations/{id}/fields");
            let body = json!({"fields": list});
            if let Some(result) =
                self.write_call(Method::PUT, &format!("/conversations/{id}/fields"), &body, &what).await?
            {
                return Ok(result);
            }
        }
        if let Some(tags) = tags {
            let what = format!("helpscout: PUT conversations/{id}/tags");
            let body = json!({"tags": tags});
            if let Some(result) =
                self.write_call(Method::PUT, &format!("/conversations/{id}/tags"), &body, &what).await?
            {
                return Ok(result);
            }
        }
        if let Some(text) = note {
            let what = format!("helpscout: POST conversations/{id}/notes");
            let body = json!({"text": text});
            if let Some(result) =
                self.write_call(Method::POST, &format!("/conversations/{id}/notes"), &body, &what).await?
            {
                return Ok(result);
            }
        }
        Ok(WriteResult::Written { version: None })
    }

    /// One write call: `None` when it was applied (204/201), `Some(Failed)` when Help Scout refused
    /// the value (4xx), `Err` when trying again may pass.
    async fn write_call(
        &self,
        method: Method,
        path: &str,
        body: &Value,
        what: &str,
    ) -> Result<Option<WriteResult>, ConnectorError> {
        match self.send(method, path, &[], Some(body), what).await {
            Ok(_) => Ok(None),
            Err(e) if e.retryable => Err(e),
            Err(e) => Ok(Some(WriteResult::Failed(e))),
        }
    }
}

#[async_trait]
impl Connector for HelpScout {
    fn kind(&self) -> &'static str {
        "helpscout"
    }

    fn record_links(&self, _entity: &str, external_id: &str, _fields: &Value) -> Vec<RecordLink> {
        conversation_link(external_id).into_iter().collect()
    }

    async fn check(&self, entity: &str) -> Result<(), ConnectorError> {
        Self::entity(entity)?;
        let query = [
            ("mailbox", self.mailboxes.iter().map(u64::to_string).collect::<Vec<_>>().join(",")),
            ("status", self.status.clone()),
            ("page", "1".into()),
        ];
        self.get("/conversations", &query, "helpscout: GET conversations (check)").await?;
        self.custom_fields().await?;
        Ok(())
    }

    async fn list(&self, entity: &str, request: &PageRequest) -> Result<Page, ConnectorError> {
        Self::entity(entity)?;
        let cursor = match request.cursor.as_deref() {
            Some(c) => ListCursor::parse(c)?,
            None => {
                let since = match &request.modified_after {
                    Some(after) => Some(rfc3339(after).map_err(|e| {
                        ConnectorError::permanent(format!("helpscout: modified_after {after:?} is not RFC 3339: {e}"))
                    })?),
                    None => None,
                };
                ListCursor { page: 1, since, started: None }
            }
        };
        let mut query = vec![
            ("mailbox", self.mailboxes.iter().map(u64::to_string).collect::<Vec<_>>().join(",")),
            ("status", self.status.clone()),
            // Not modifiedAt: see the module's doc (a change during the listing would shift the pages).
            ("sortField", "createdAt".into()),
            ("sortOrder", "asc".into()),
            ("embed", "threads".into()),
            ("page", cursor.page.to_string()),
        ];
        if let Some(since) = &cursor.since {
            query.push(("modifiedSince", since.clone()));
        }
        let what = format!("helpscout: GET conversations page {}", cursor.page);
        let (body, headers) = self.get("/conversations", &query, &what).await?;
        let mut records = Vec::new();
        for conversation in body["_embedded"]["conversations"].as_array().into_iter().flatten() {
            records.push(self.record(conversation).await?);
        }
        // When this listing began, by the server's clock: what changes from then on is for the next one.
        let started = cursor.started.clone().unwrap_or_else(|| {
            headers
                .get("date")
                .and_then(|d| d.to_str().ok())
                .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
                .map(|d| d.with_timezone(&chrono::Utc))
                .unwrap_or_else(chrono::Utc::now)
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        });
        let number = body["page"]["number"].as_u64().unwrap_or(u64::from(cursor.page));
        let pages = body["page"]["totalPages"].as_u64().unwrap_or(0);
        let more = number < pages || body["_links"]["next"].is_object();
        let (next, resume) = if more && !records.is_empty() {
            let next = ListCursor { page: number as u32 + 1, since: cursor.since.clone(), started: Some(started) };
            (Some(next.render()), None)
        } else {
            let since = chrono::DateTime::parse_from_rfc3339(&started)
                .map(|s| s.with_timezone(&chrono::Utc) - chrono::Duration::seconds(RESUME_MARGIN_SECS))
                .unwrap_or_else(|_| chrono::Utc::now())
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            (None, Some(ListCursor { page: 1, since: Some(since), started: None }.render()))
        };
        Ok(Page { records, next, total: body["page"]["totalElements"].as_u64(), resume })
    }

    async fn fetch(&self, entity: &str, ids: &[String]) -> Result<Vec<Record>, ConnectorError> {
        Self::entity(entity)?;
        let mut records = Vec::new();
        for id in ids {
            if id.parse::<u64>().is_err() {
                continue;
            }
            if let Some(conversation) = self.conversation(id).await? {
                records.push(self.record(&conversation).await?);
            }
        }
        Ok(records)
    }

    fn max_write_batch(&self) -> usize {
        MAX_WRITE_BATCH
    }

    async fn allowed_values(&self, entity: &str, field: &str) -> Result<Option<Vec<String>>, ConnectorError> {
        Self::entity(entity)?;
        if field == "status" {
            return Ok(Some(WRITABLE_STATUSES.iter().map(|s| (*s).to_owned()).collect()));
        }
        let Some(name) = field.strip_prefix("custom.") else { return Ok(None) };
        // Fresh, not the per-connector cache: an option added or removed since the daemon started counts.
        let fields = self.read_custom_fields().await?;
        let mut allowed: Option<Vec<String>> = None;
        for f in fields.iter().filter(|f| f.name == name && f.kind == "DROPDOWN") {
            let labels: Vec<String> = f.options.iter().map(|(_, l)| l.clone()).collect();
            // With several mailboxes, only labels every one of them has can be written anywhere.
            allowed = Some(match allowed {
                None => labels,
                Some(before) => before.into_iter().filter(|l| labels.contains(l)).collect(),
            });
        }
        Ok(allowed)
    }

    async fn write(&self, entity: &str, changes: &[Change]) -> Result<WriteSubmission, ConnectorError> {
        Self::entity(entity)?;
        if changes.len() > MAX_WRITE_BATCH {
            return Err(ConnectorError::permanent(format!(
                "helpscout: {} changes in one write; at most {MAX_WRITE_BATCH}",
                changes.len()
            )));
        }
        let needs_fields = changes.iter().any(|c| c.fields.keys().any(|k| k.starts_with("custom.")));
        let fields = if needs_fields { self.read_custom_fields().await? } else { Vec::new() };
        let mut outcomes = Vec::with_capacity(changes.len());
        let mut halted: Option<ConnectorError> = None;
        for change in changes {
            let result = match &halted {
                // Rate-limited or unreachable: the rest waits for the engine's retry instead of
                // hammering Help Scout.
                Some(cause) => WriteResult::Failed(ConnectorError::deferred(
                    format!(
                        "helpscout: conversation {} not written: an earlier write in the batch failed ({})",
                        change.id, cause.message
                    ),
                    cause,
                )),
                None => match self.write_one(change, &fields).await {
                    Ok(result) => result,
                    Err(e) => {
                        halted = Some(e.clone());
                        WriteResult::Failed(e)
                    }
                },
            };
            outcomes.push(WriteOutcome { id: change.id.clone(), result });
        }
        Ok(WriteSubmission::Done(outcomes))
    }

    fn holds(&self, field: &str, written: &Value, stored: Option<&Value>) -> bool {
        if field == "tags" {
            let stored = lower_set(stored);
            return written.as_array().is_some_and(|w| {
                w.iter().filter_map(Value::as_str).all(|t| stored.contains(&t.trim().to_lowercase()))
            });
        }
        if field == "internal_note" {
            return true;
        }
        stored == Some(written)
    }

    fn restored(&self, field: &str, previous: &Value, stored: Option<&Value>) -> bool {
        if field == "tags" {
            return lower_set(Some(previous)) == lower_set(stored);
        }
        if previous.is_null() {
            return stored.is_none_or(Value::is_null);
        }
        self.holds(field, previous, stored)
    }
}

fn lower_set(value: Option<&Value>) -> Vec<String> {
    let mut tags: Vec<String> = value
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(|t| t.trim().to_lowercase()).collect())
        .unwrap_or_default();
    tags.sort();
    tags.dedup();
    tags
}

/// A conversation's tag names (on read, tags are `{id, color, tag}` objects).
fn tag_names(conversation: &Value) -> Vec<String> {
    conversation["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["tag"].as_str().or(t.as_str()).map(str::to_owned))
        .collect()
}

/// `userUpdatedAt` and a digest of what an agent may change without moving it.
pub fn version(conversation: &Value) -> Option<Version> {
    let updated = conversation["userUpdatedAt"].as_str()?;
    let mut tags = lower_set(Some(&Value::Array(tag_names(conversation).into_iter().map(Value::String).collect())));
    tags.sort();
    let mut custom: Vec<(u64, String)> = conversation["customFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| {
            Some((f["id"].as_u64()?, f["value"].as_str().map_or_else(|| f["value"].to_string(), str::to_owned)))
        })
        .collect();
    custom.sort();
    let canonical = json!([conversation["status"], conversation["subject"], tags, custom]).to_string();
    Some(Version(format!("{updated}#{:016x}", fnv1a(canonical.as_bytes()))))
}

/// FNV-1a, 64 bits: stable across Rust releases (a stored version must compare equal after an upgrade).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// A thread's HTML body as plain text.
fn plain_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('>') else {
            rest = &rest[open..];
            break;
        };
        let tag = rest[open + 1..open + close].trim_start_matches('/').to_ascii_lowercase();
        if ["br", "p", "div", "li", "tr"].iter().any(|t| tag.starts_with(t)) {
            out.push('\n');
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    let decoded = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    let lines: Vec<&str> = decoded.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines.join("\n")
}

fn parse(bytes: &[u8], what: &str) -> Result<Value, ConnectorError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let mut err = ConnectorError::transient(format!("{what}: response body is not the expected JSON: {e}"));
        err.code = Some("malformed_body".into());
        err
    })
}

/// Classifies a refused call, naming Help Scout's error shape: `{"logRef","message","_embedded":
/// {"errors":[{"path","message","rejectedValue"}]}}` (and an OAuth `{"error","error_description"}`).
/// The wait comes from `X-RateLimit-Retry-After`, else `Retry-After`.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8], what: &str) -> ConnectorError {
    let text = String::from_utf8_lossy(body);
    let mut e = http::classify(status, headers, &text, what);
    if let Ok(value) = serde_json::from_str::<Value>(&text) {
        let mut message = format!("{what}: HTTP {}", status.as_u16());
        if let Some(m) = value["message"].as_str() {
            message.push_str(&format!(": {m}"));
        }
        if let Some(error) = value["error"].as_str() {
            message.push_str(&format!(": {error}"));
            if let Some(d) = value["error_description"].as_str() {
                message.push_str(&format!(" ({d})"));
            }
            e.code = Some(error.to_owned());
        }
        let errors: Vec<&Value> =
            value["_embedded"]["errors"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
        if !errors.is_empty() {
            let details: Vec<String> = errors
                .iter()
                .map(|err| {
                    let mut d = format!(
                        "{}: {}",
                        err["path"].as_str().unwrap_or("?"),
                        err["message"].as_str().unwrap_or("invalid")
                    );
                    if !err["rejectedValue"].is_null() {
                        d.push_str(&format!(" (rejected {})", cut(&err["rejectedValue"].to_string(), 80)));
                    }
                    d
                })
                .collect();
            message.push_str(&format!(" [{}]", details.join("; ")));
            e.code = errors[0]["_links"]["about"]["href"]
                .as_str()
                .and_then(|h| h.rsplit_once('#'))
                .map(|(_, code)| code.to_owned())
                .or(e.code.take());
        }
        if let Some(log) = value["logRef"].as_str() {
            message.push_str(&format!(" (logRef {log})"));
        }
        e.message = message;
    }
    if let Some(secs) =
        headers.get("x-ratelimit-retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok())
    {
        e.retry_after = Some(Duration::from_secs(secs));
    }
    e
}

fn snippet(value: &Value) -> String {
    cut(&value.to_string(), 200)
}

/// The conversation in Help Scout's web app (one address for every account).
fn conversation_link(id: &str) -> Option<RecordLink> {
    let id = id.parse::<u64>().ok()?;
    RecordLink::new("Conversation in Help Scout", format!("https://secure.helpscout.net/conversation/{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_links_open_the_conversation_in_the_web_app() {
        let link = conversation_link("123456").unwrap();
        assert_eq!(link.url, "https://secure.helpscout.net/conversation/123456");
        assert_eq!(link.label, "Conversation in Help Scout");
        assert!(conversation_link("12?x=1").is_none());
    }

    #[test]
    fn html_bodies_become_plain_text() {
        assert_eq!(plain_text("Sounds good!<br />"), "Sounds good!");
        assert_eq!(plain_text("<p>a &amp; b</p><p>c&nbsp;d</p>"), "a & b\nc d");
    }

    #[test]
    fn a_tag_change_moves_the_version_though_user_updated_at_stays() {
        let before = json!({"userUpdatedAt": "2019-06-01T00:17:06Z", "status": "closed", "subject": "s",
            "tags": [{"id": 1, "color": "#fff", "tag": "vip"}], "customFields": []});
        let mut after = before.clone();
        after["tags"] = json!([{"id": 1, "color": "#fff", "tag": "vip"}, {"id": 2, "color": "#fff", "tag": "pro"}]);
        assert_ne!(version(&before), version(&after));
        assert!(version(&before).unwrap().0.starts_with("2019-06-01T00:17:06Z#"));
        assert_eq!(version(&before), version(&before.clone()));
    }

    #[test]
    fn listing_cursors_round_trip() {
        let c = ListCursor {
            page: 3,
            since: Some("2026-01-05T09:00:00Z".into()),
            started: Some("2026-01-05T10:00:00Z".into()),
        };
        assert_eq!(ListCursor::parse(&c.render()).unwrap(), c);
        assert!(ListCursor::parse("search:2").unwrap_err().message.contains("not this connector's"));
    }
}
