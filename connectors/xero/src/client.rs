//! The Xero Accounting API connector, entity `bills`.
//!
//! - Every Accounting call carries `xero-tenant-id` and a bearer token: a rotating OAuth2 token
//!   ([`enrichd_connector::oauth2::RotatingToken`]: the new refresh token is saved through the
//!   [`TokenStore`] before the access token is used), or for a Custom Connection a client
//!   credentials token kept in memory. A 401 drops the token and the call is made once more.
//! - Candidates are invoices `Type=="ACCPAY" AND Status=="DRAFT"` with `HasAttachments`, paged with
//!   `page` (the cursor is the page number), `If-Modified-Since` from [`PageRequest::modified_after`].
//!   Each candidate's attachments are listed (`/Invoices/{id}/Attachments`) into
//!   [`Record::attachments`] and downloaded on demand by [`Connector::fetch_attachment`].
//! - The version is `UpdatedDateUTC` (Xero has no concurrency token): [`Connector::fetch`] re-reads
//!   bills by `IDs=` so the engine compares it just before writing. `fetch` does not list attachments.
//! - Writes are `POST /Invoices?summarizeErrors=false` with several bills per call; each bill's
//!   `ValidationErrors` is that bill's outcome. Every write carries an `Idempotency-Key` derived from
//!   the body, so a write sent again after a lost response is applied once. A bill is only ever left
//!   in DRAFT: no `Status` is sent, a change naming any other status is refused, and so is a change
//!   to a bill no longer in DRAFT (a person approved it in Xero).
//! - Limits: at most 5 requests in flight per connector, `X-MinLimit-Remaining` feeds an
//!   [`Allowance`] (60 a minute); a 429 whose `X-Rate-Limit-Problem` is `day` is a non-retryable
//!   error with code [`DAY_LIMIT`] carrying the seconds to the reset in `retry_after`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use enrichd_connector::gate::Allowance;
use enrichd_connector::http::{self, transport_error};
use enrichd_connector::lookup::{BillQuery, LookUp, Organisation};
use enrichd_connector::oauth2::{OAuth2Client, RotatingToken, TokenStore};
use enrichd_connector::{
    AttachmentRef, Change, Connector, ConnectorError, Page, PageRequest, Record, RecordLink, Version, WriteOutcome,
    WriteResult, WriteSubmission,
};
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::Options;
use crate::books::{Books, ContactCache, ContactInfo, normalise_name, normalise_tax_number};

/// The one entity this connector knows: supplier bills (`ACCPAY` invoices).
pub const BILLS: &str = "bills";
/// The [`ConnectorError::code`] of a 429 for the day's allowance: do not retry before `retry_after`.
pub const DAY_LIMIT: &str = "day_limit";
/// The code of a 429 for the minute or concurrency allowance (retryable after `retry_after`).
pub const RATE_LIMIT: &str = "rate_limit";
/// Xero's limits per tenant: calls a minute, calls in flight.
pub const MINUTE_LIMIT: u32 = 60;
pub const CONCURRENT_LIMIT: usize = 5;
/// Invoices per page with line items, and bills per write call.
pub const PAGE_SIZE: u32 = 100;
const WRITE_BATCH: usize = 50;
/// Ids per `IDs=` re-read (keeps the URL short).
const FETCH_BATCH: usize = 40;
const READ_ATTEMPTS: u32 = 4;
/// The fields a change may name, in the bill vocabulary every accounting connector shares.
/// `payment_note` becomes a history note on the bill (`PUT /Invoices/{id}/History`).
pub const WRITABLE: [&str; 10] = [
    "supplier.id",
    "supplier.name",
    "invoice_number",
    "reference",
    "date",
    "due_date",
    "currency",
    "amounts_are",
    "line_items",
    "payment_note",
];
/// Accepted in a change and not sent: Xero computes the totals from the lines, and a supplier's tax
/// number belongs to the contact, not to the bill. [`Connector::holds`] compares them after a write.
const NOT_SENT: [&str; 4] = ["sub_total", "total_tax", "total", "supplier.tax_number"];
/// The keys of one line item.
pub const LINE_KEYS: [&str; 7] =
    ["description", "quantity", "unit_price", "tax_rate", "tax_amount", "line_amount", "account_code"];

/// What the last response reported of the tenant's allowances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// `X-MinLimit-Remaining`.
    pub minute_remaining: Option<u32>,
    /// `X-DayLimit-Remaining`.
    pub day_remaining: Option<u32>,
    /// `X-AppMinLimit-Remaining` (the app's allowance over all tenants).
    pub app_minute_remaining: Option<u32>,
}

/// One organisation the app is connected to (`GET /connections`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    pub id: String,
    pub tenant_id: String,
    pub tenant_name: Option<String>,
    pub tenant_type: String,
}

enum Auth {
    /// Authorisation code connections: rotating refresh tokens, persisted first.
    Rotating(RotatingToken),
    /// Custom Connections: a client credentials token, asked for again when it expires.
    ClientCredentials {
        token_url: String,
        client_id: SecretString,
        client_secret: SecretString,
        held: tokio::sync::Mutex<Option<(SecretString, i64)>>,
    },
}

/// The Xero connector for one connection (one tenant).
pub struct Xero {
    base: String,
    tenant_id: Option<String>,
    connection: String,
    auth: Auth,
    http: reqwest::Client,
    in_flight: Semaphore,
    allowance: Allowance,
    limits: Mutex<Limits>,
    /// The organisation's currencies, tax rates and accounts, read once.
    pub(crate) books: tokio::sync::OnceCell<Arc<Books>>,
    pub(crate) contacts: ContactCache,
    /// A supplier's latest bills (only their lines' account codes), by contact id.
    pub(crate) suggestions: tokio::sync::Mutex<HashMap<String, Arc<Vec<Value>>>>,
}

/// Classifies a Xero error response: the `X-Rate-Limit-Problem` of a 429 (a `day` problem is not
/// retryable and has code [`DAY_LIMIT`]), `ValidationException` bodies with their messages, and the
/// identity shapes `{"Title","Detail"}` and `{"error"}`.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str, what: &str) -> ConnectorError {
    let mut err = http::classify(status, headers, body, what);
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if let Some(kind) = parsed["Type"].as_str().filter(|_| parsed.get("ErrorNumber").is_some()) {
        let messages = validation_messages_of_elements(&parsed);
        let message = parsed["Message"].as_str().unwrap_or("");
        err.message = format!("{what}: HTTP {} {kind}: {message}", status.as_u16());
        if !messages.is_empty() {
            err.message.push_str(&format!(" ({})", messages.join("; ")));
        }
        err.code = Some(kind.to_owned());
    } else if let Some(title) = parsed["Title"].as_str() {
        let detail = parsed["Detail"].as_str().unwrap_or("");
        err.message = format!("{what}: HTTP {} {title}: {detail}", status.as_u16());
        err.code = Some(title.to_owned());
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        let problem = headers.get("x-rate-limit-problem").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        err.message =
            format!("{what}: HTTP 429 Xero {} limit reached", if problem.is_empty() { "rate" } else { &problem });
        if problem.eq_ignore_ascii_case("day") {
            err.retryable = false;
            err.code = Some(DAY_LIMIT.into());
            let secs = err.retry_after.map_or(0, |d| d.as_secs());
            err.message.push_str(&format!(": the tenant's 5,000 calls a day are used up; resets in {secs} s"));
        } else {
            err.code = Some(RATE_LIMIT.into());
        }
    }
    err
}

fn validation_messages_of_elements(parsed: &Value) -> Vec<String> {
    parsed["Elements"].as_array().into_iter().flatten().flat_map(validation_messages).collect()
}

fn validation_messages(element: &Value) -> Vec<String> {
    element["ValidationErrors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["Message"].as_str().map(str::to_owned))
        .collect()
}

impl Xero {
    /// A connector for the connection named `connection`; `store` keeps its OAuth2 tokens (unused
    /// by a Custom Connection).
    pub fn new(options: Options, connection: &str, store: Arc<dyn TokenStore>) -> Result<Xero, ConnectorError> {
        let http = http::builder(options.timeout).build().map_err(|e| {
            ConnectorError::permanent(format!("xero: building the HTTP client failed: {}", e.without_url()))
        })?;
        let auth = if options.custom_connection {
            Auth::ClientCredentials {
                token_url: options.token_url,
                client_id: options.client_id,
                client_secret: options.client_secret,
                held: tokio::sync::Mutex::new(None),
            }
        } else {
            let client = OAuth2Client {
                token_url: options.token_url,
                client_id: options.client_id.expose_secret().to_owned(),
                client_secret: options.client_secret,
            };
            Auth::Rotating(RotatingToken::new(connection, client, http.clone(), store, None))
        };
        Ok(Xero {
            base: options.base_url.trim_end_matches('/').to_owned(),
            tenant_id: options.tenant_id,
            connection: connection.to_owned(),
            auth,
            http,
            in_flight: Semaphore::new(CONCURRENT_LIMIT),
            allowance: Allowance::new(),
            limits: Mutex::new(Limits::default()),
            books: tokio::sync::OnceCell::new(),
            contacts: tokio::sync::Mutex::new(None),
            suggestions: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// What the last response reported of the tenant's allowances.
    pub fn limits(&self) -> Limits {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn access_token(&self) -> Result<SecretString, ConnectorError> {
        match &self.auth {
            Auth::Rotating(token) => token.access_token().await,
            Auth::ClientCredentials { token_url, client_id, client_secret, held } => {
                let mut held = held.lock().await;
                if let Some((token, expires_at)) = held.as_ref()
                    && *expires_at - 60 > now()
                {
                    return Ok(token.clone());
                }
                let what = format!("xero connection {}: client credentials token", self.connection);
                let request = self
                    .http
                    .post(token_url)
                    .basic_auth(client_id.expose_secret(), Some(client_secret.expose_secret()))
                    .form(&[("grant_type", "client_credentials")]);
                let response = http::send(request, &what).await.map_err(|e| token_error(e, &self.connection))?;
                #[derive(Deserialize)]
                struct Granted {
                    access_token: String,
                    expires_in: Option<i64>,
                }
                let granted: Granted = http::json(response, &what).await?;
                let token = SecretString::from(granted.access_token);
                *held = Some((token.clone(), now() + granted.expires_in.unwrap_or(1800)));
                Ok(token)
            }
        }
    }

    async fn invalidate(&self) {
        match &self.auth {
            Auth::Rotating(token) => token.invalidate().await,
            Auth::ClientCredentials { held, .. } => *held.lock().await = None,
        }
    }

    fn tenant(&self) -> Result<Option<&str>, ConnectorError> {
        match (&self.tenant_id, &self.auth) {
            (Some(t), _) => Ok(Some(t)),
            (None, Auth::ClientCredentials { .. }) => Ok(None),
            (None, Auth::Rotating(_)) => Err(ConnectorError::permanent(format!(
                "xero connection {}: no organisation chosen (tenant_id); run `enrichd connect {}`",
                self.connection, self.connection
            ))),
        }
    }

    fn observe(&self, headers: &HeaderMap) {
        let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u32>().ok();
        let seen = Limits {
            minute_remaining: number("x-minlimit-remaining"),
            day_remaining: number("x-daylimit-remaining"),
            app_minute_remaining: number("x-appminlimit-remaining"),
        };
        if let Some(remaining) = seen.minute_remaining {
            self.allowance.observe(MINUTE_LIMIT, remaining, None);
        }
        if seen != Limits::default() {
            *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = seen;
        }
    }

    /// Sends one request to `url` with the bearer token (and the tenant header for the Accounting
    /// API), within the concurrency and minute allowances; a 401 refreshes the token once.
    async fn send(
        &self,
        build: impl Fn() -> RequestBuilder,
        with_tenant: bool,
        what: &str,
    ) -> Result<Response, ConnectorError> {
        let tenant = if with_tenant { self.tenant()? } else { None };
        let _permit = self.in_flight.acquire().await.expect("the semaphore is never closed");
        for attempt in 0..2 {
            self.allowance.acquire().await;
            let token = self.access_token().await?;
            let mut request = build().bearer_auth(token.expose_secret()).header("accept", "application/json");
            if let Some(tenant) = tenant {
                request = request.header("xero-tenant-id", tenant);
            }
            let response = request.send().await.map_err(|e| transport_error(e, what))?;
            self.observe(response.headers());
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                self.invalidate().await;
                continue;
            }
            if !status.is_success() {
                let headers = response.headers().clone();
                let body = response.text().await.unwrap_or_default();
                return Err(classify(status, &headers, &body, what));
            }
            return Ok(response);
        }
        unreachable!("the loop returns on its second pass")
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api.xro/2.0/{path}", self.base)
    }

    /// A GET of the Accounting API with retries, as JSON.
    pub(crate) async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
        modified_since: Option<&str>,
        what: &str,
    ) -> Result<Value, ConnectorError> {
        let url = self.api(path);
        http::with_retries(READ_ATTEMPTS, Duration::from_millis(500), || async {
            let build = || {
                let r = self.http.get(&url).query(query);
                match modified_since {
                    Some(since) => r.header("if-modified-since", since),
                    None => r,
                }
            };
            let response = self.send(build, true, what).await?;
            http::json::<Value>(response, what).await
        })
        .await
    }

    /// The organisations this connection's tokens reach (`GET /connections`), for `enrichd connect`.
    pub async fn tenants(&self) -> Result<Vec<Tenant>, ConnectorError> {
        let url = format!("{}/connections", self.base);
        let what = "xero: GET connections";
        let response = self.send(|| self.http.get(&url), false, what).await?;
        http::json(response, what).await
    }

    /// A list of the organisation's settings (`Contacts`, `Accounts`, `TaxRates`), as Xero returns them.
    pub async fn settings_list(&self, collection: &str) -> Result<Vec<Value>, ConnectorError> {
        if !["Contacts", "Accounts", "TaxRates", "Currencies"].contains(&collection) {
            return Err(ConnectorError::permanent(format!("xero: {collection:?} is not a list this connector reads")));
        }
        let body = self.get(collection, &[], None, &format!("xero: GET {collection}")).await?;
        Ok(body[collection].as_array().cloned().unwrap_or_default())
    }

    async fn attachments(&self, invoice_id: &str) -> Result<Vec<AttachmentRef>, ConnectorError> {
        let path = format!("Invoices/{invoice_id}/Attachments");
        let body = self.get(&path, &[], None, &format!("xero: GET Invoices/{invoice_id}/Attachments")).await?;
        Ok(body["Attachments"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| {
                let name = a["FileName"].as_str()?.to_owned();
                Some(AttachmentRef {
                    id: a["AttachmentID"].as_str()?.to_owned(),
                    href: format!("Invoices/{invoice_id}/Attachments/{}", encode_segment(&name)),
                    name,
                    content_type: a["MimeType"].as_str().unwrap_or("application/octet-stream").to_owned(),
                    size: a["ContentLength"].as_u64(),
                })
            })
            .collect())
    }

    /// Adds `note` to bill `id`'s history (`PUT /Invoices/{id}/History`), with an `Idempotency-Key`
    /// of the bill, its version and the note, so a resent write adds it once.
    async fn add_note(&self, id: &str, note: &str, version: &Version) -> Result<(), ConnectorError> {
        let body = json!({ "HistoryRecords": [{ "Details": note }] });
        let key = idempotency_key(&json!({ "InvoiceID": id, "History": body }), &[version]);
        let url = self.api(&format!("Invoices/{id}/History"));
        let what = format!("xero: PUT Invoices/{id}/History");
        let build = || self.http.put(&url).header("idempotency-key", key.as_str()).json(&body);
        let response = self.send(build, true, &what).await?;
        let answer: Value = http::json(response, &what).await?;
        let messages: Vec<String> =
            answer["HistoryRecords"].as_array().into_iter().flatten().flat_map(validation_messages).collect();
        if messages.is_empty() {
            Ok(())
        } else {
            Err(ConnectorError {
                code: Some("ValidationError".into()),
                ..ConnectorError::permanent(format!("{what}: validation: {}", messages.join("; ")))
            })
        }
    }

    fn entity(entity: &str) -> Result<(), ConnectorError> {
        if entity == BILLS {
            Ok(())
        } else {
            Err(ConnectorError::permanent(format!("xero: unknown entity {entity:?}; this connector knows \"bills\"")))
        }
    }
}

/// The contact ids the invoices name.
fn contact_ids(invoices: &[Value]) -> Vec<&str> {
    invoices.iter().filter_map(|i| i["Contact"]["ContactID"].as_str()).collect()
}

fn token_error(mut e: ConnectorError, connection: &str) -> ConnectorError {
    if e.code.as_deref() == Some("invalid_client") || e.code.as_deref() == Some("invalid_grant") {
        e.retryable = false;
        e.message = format!("xero connection {connection}: {}", e.message);
    }
    e
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `2019-03-07` from a Xero date: `DateString` (`2019-03-07T00:00:00`) or `/Date(1551916800000+0000)/`.
pub fn xero_date(string: &Value, ms: &Value) -> Value {
    if let Some(s) = string.as_str().filter(|s| s.len() >= 10) {
        return Value::String(s[..10].to_owned());
    }
    ms.as_str()
        .and_then(ms_date)
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or(Value::Null, |d| Value::String(d.format("%Y-%m-%d").to_string()))
}

/// The milliseconds of a .NET JSON date `/Date(1573755038314+0000)/`.
pub fn ms_date(s: &str) -> Option<i64> {
    let inner = s.strip_prefix("/Date(")?.strip_suffix(")/")?;
    let end = inner[1..].find(['+', '-']).map_or(inner.len(), |i| i + 1);
    inner[..end].parse().ok()
}

/// The bill vocabulary's `amounts_are` (`exclusive`, `inclusive`, `no_tax`) of Xero's `LineAmountTypes`.
pub fn amounts_are(line_amount_types: &str) -> Option<&'static str> {
    match line_amount_types {
        "Exclusive" => Some("exclusive"),
        "Inclusive" => Some("inclusive"),
        "NoTax" => Some("no_tax"),
        _ => None,
    }
}

fn line_amount_types(amounts_are: &str) -> Option<&'static str> {
    match amounts_are {
        "exclusive" => Some("Exclusive"),
        "inclusive" => Some("Inclusive"),
        "no_tax" => Some("NoTax"),
        _ => None,
    }
}

/// A bill's fields in the bill vocabulary (`supplier.name`, `invoice_number`, `line_items`, ...).
/// `books` turns a line's `TaxType` into its percent; `tax_number` is the contact's, when known.
pub fn bill_fields(invoice: &Value, books: &Books, tax_number: Option<&str>) -> Map<String, Value> {
    let mut fields = Map::new();
    let text = |v: &Value| match v.as_str() {
        Some("") | None => Value::Null,
        Some(s) => Value::String(s.to_owned()),
    };
    fields.insert("supplier.name".into(), text(&invoice["Contact"]["Name"]));
    fields.insert("supplier.id".into(), text(&invoice["Contact"]["ContactID"]));
    fields.insert("supplier.tax_number".into(), tax_number.map_or(Value::Null, |t| Value::String(t.to_owned())));
    fields.insert("invoice_number".into(), text(&invoice["InvoiceNumber"]));
    fields.insert("reference".into(), text(&invoice["Reference"]));
    fields.insert("date".into(), xero_date(&invoice["DateString"], &invoice["Date"]));
    fields.insert("due_date".into(), xero_date(&invoice["DueDateString"], &invoice["DueDate"]));
    fields.insert("currency".into(), text(&invoice["CurrencyCode"]));
    fields.insert(
        "amounts_are".into(),
        invoice["LineAmountTypes"].as_str().and_then(amounts_are).map_or(Value::Null, |a| json!(a)),
    );
    fields.insert("status".into(), text(&invoice["Status"]));
    let lines: Vec<Value> = invoice["LineItems"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            let rate = l["TaxType"].as_str().and_then(|t| books.rate_of(t)).map_or(Value::Null, |r| json!(r));
            json!({
                "description": l["Description"], "quantity": l["Quantity"], "unit_price": l["UnitAmount"],
                "tax_rate": rate, "tax_amount": l["TaxAmount"], "line_amount": l["LineAmount"],
                "account_code": l["AccountCode"],
            })
        })
        .collect();
    fields.insert("line_items".into(), if lines.is_empty() { Value::Null } else { Value::Array(lines) });
    let has_lines = !fields["line_items"].is_null();
    for (field, key) in [("sub_total", "SubTotal"), ("total_tax", "TotalTax"), ("total", "Total")] {
        // An inbox draft without lines has totals of 0: that is "missing", not a value.
        fields.insert(field.into(), if has_lines { invoice[key].clone() } else { Value::Null });
    }
    fields
}

fn record(invoice: &Value, books: &Books, contacts: &[ContactInfo]) -> Result<Record, ConnectorError> {
    let id = invoice["InvoiceID"]
        .as_str()
        .ok_or_else(|| ConnectorError::permanent("xero: an invoice without an InvoiceID".to_string()))?
        .to_owned();
    let version = invoice["UpdatedDateUTC"]
        .as_str()
        .map(|v| Version(v.to_owned()))
        .ok_or_else(|| ConnectorError::permanent(format!("xero: bill {id} has no UpdatedDateUTC")))?;
    let contact_id = invoice["Contact"]["ContactID"].as_str();
    let tax_number = contact_id
        .and_then(|cid| contacts.iter().find(|c| c.id.eq_ignore_ascii_case(cid)))
        .and_then(|c| c.tax_number.as_deref());
    Ok(Record {
        id,
        version,
        fields: bill_fields(invoice, books, tax_number),
        attachments: Vec::new(),
        native: Some(invoice.clone()),
    })
}

/// The invoice body of one change, in Xero's terms: a line's `tax_rate` becomes the organisation's
/// `TaxType` with that percent and its `account_code` must be one of the organisation's accounts
/// (from `books`). An error names the bill and the field. `payment_note` is checked here and sent
/// apart, as a history note ([`payment_note`]).
pub fn invoice_update(change: &Change, books: &Books) -> Result<Value, ConnectorError> {
    let id = &change.id;
    let refuse = |message: String| ConnectorError {
        code: Some("refused".into()),
        ..ConnectorError::permanent(format!("xero: bill {id}: {message}"))
    };
    if !crate::config::is_uuid(id) {
        return Err(refuse("the id is not a Xero InvoiceID (a UUID)".into()));
    }
    if let Some(native) = &change.native {
        let status = native["Status"].as_str().unwrap_or("");
        if status != "DRAFT" {
            return Err(refuse(format!(
                "the bill is {status} in Xero now; enrichd only fills in DRAFT bills and never changes one a person approved"
            )));
        }
        if native["Type"].as_str().is_some_and(|t| t != "ACCPAY") {
            return Err(refuse(format!("the invoice is {} (not a bill, ACCPAY)", native["Type"])));
        }
    }
    let mut invoice = Map::new();
    invoice.insert("InvoiceID".into(), json!(id));
    let string = |field: &str, v: &Value| -> Result<Value, ConnectorError> {
        match v {
            Value::String(s) => Ok(Value::String(s.clone())),
            other => Err(refuse(format!("{field} must be a string, got {other}"))),
        }
    };
    for (field, value) in &change.fields {
        match field.as_str() {
            "status" => {
                if value.as_str() != Some("DRAFT") {
                    return Err(refuse(format!(
                        "status {value} refused: enrichd leaves bills in DRAFT (a person approves them in Xero)"
                    )));
                }
            }
            "supplier.name" => {
                let contact = invoice.entry("Contact").or_insert_with(|| json!({}));
                // A matched supplier's id wins: Xero would otherwise match or create by name.
                if contact.get("ContactID").is_none() {
                    contact["Name"] = string(field, value)?;
                }
            }
            "supplier.id" => {
                let s = string(field, value)?;
                if !crate::config::is_uuid(s.as_str().unwrap_or("")) {
                    return Err(refuse(format!("supplier.id {s} is not a Xero ContactID (a UUID)")));
                }
                invoice.insert("Contact".into(), json!({ "ContactID": s }));
            }
            "invoice_number" => {
                invoice.insert("InvoiceNumber".into(), string(field, value)?);
            }
            "reference" => {
                invoice.insert("Reference".into(), string(field, value)?);
            }
            "date" | "due_date" => {
                let s = string(field, value)?;
                let text = s.as_str().unwrap_or("");
                if chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_err() {
                    return Err(refuse(format!("{field} {text:?} is not a date (YYYY-MM-DD)")));
                }
                invoice.insert(if field == "date" { "Date" } else { "DueDate" }.into(), s);
            }
            "currency" => {
                let s = string(field, value)?;
                let code = s.as_str().unwrap_or("");
                if code.len() != 3 || !code.chars().all(|c| c.is_ascii_uppercase()) {
                    return Err(refuse(format!("currency {code:?} is not an ISO 4217 code")));
                }
                invoice.insert("CurrencyCode".into(), s);
            }
            "amounts_are" => {
                let s = string(field, value)?;
                let types = line_amount_types(s.as_str().unwrap_or(""))
                    .ok_or_else(|| refuse(format!("amounts_are {s} is not exclusive, inclusive or no_tax")))?;
                invoice.insert("LineAmountTypes".into(), json!(types));
            }
            "line_items" => {
                let lines =
                    value.as_array().ok_or_else(|| refuse(format!("line_items must be a list, got {value}")))?;
                let mut out = Vec::new();
                for (n, line) in lines.iter().enumerate() {
                    let mut item = Map::new();
                    let Some(obj) = line.as_object() else {
                        return Err(refuse(format!("line_items[{n}] must be an object")));
                    };
                    for (key, v) in obj {
                        if v.is_null() {
                            continue;
                        }
                        let number = || {
                            v.as_f64()
                                .map(|_| v.clone())
                                .ok_or_else(|| refuse(format!("line_items[{n}].{key} must be a number, got {v}")))
                        };
                        match key.as_str() {
                            "description" => {
                                item.insert("Description".into(), string(&format!("line_items[{n}].description"), v)?);
                            }
                            "quantity" => {
                                item.insert("Quantity".into(), number()?);
                            }
                            "unit_price" => {
                                item.insert("UnitAmount".into(), number()?);
                            }
                            "tax_amount" => {
                                item.insert("TaxAmount".into(), number()?);
                            }
                            "line_amount" => {
                                item.insert("LineAmount".into(), number()?);
                            }
                            "tax_rate" => {
                                let rate = number()?.as_f64().unwrap_or_default();
                                let tax_type = books.tax_type_for(rate).ok_or_else(|| {
                                    refuse(format!(
                                        "line_items[{n}].tax_rate: no tax rate of {rate}% for bills in this organisation"
                                    ))
                                })?;
                                item.insert("TaxType".into(), json!(tax_type));
                            }
                            "account_code" => {
                                let code = string(&format!("line_items[{n}].account_code"), v)?;
                                if !books.has_account(code.as_str().unwrap_or("")) {
                                    return Err(refuse(format!(
                                        "line_items[{n}].account_code: no account {code} in this organisation"
                                    )));
                                }
                                item.insert("AccountCode".into(), code);
                            }
                            other => {
                                return Err(refuse(format!(
                                    "line_items[{n}].{other} is not a line item field (fields: {})",
                                    LINE_KEYS.join(", ")
                                )));
                            }
                        }
                    }
                    out.push(Value::Object(item));
                }
                invoice.insert("LineItems".into(), Value::Array(out));
            }
            "payment_note" => {
                string(field, value)?;
            }
            f if NOT_SENT.contains(&f) => {}
            other => {
                return Err(refuse(format!(
                    "field {other:?} cannot be written (writable: {}; Xero computes sub_total, total_tax, total)",
                    WRITABLE.join(", ")
                )));
            }
        }
    }
    Ok(Value::Object(invoice))
}

/// The history note a change adds to its bill (its `payment_note`), if any.
pub fn payment_note(change: &Change) -> Option<&str> {
    change.fields.get("payment_note").and_then(Value::as_str).map(str::trim).filter(|n| !n.is_empty())
}

/// The `Idempotency-Key` of a write: the same bills, at the same versions, with the same values get
/// the same key, so a write sent again after a lost response is not applied twice. The versions are
/// part of it so that writing the same values again later (after an undo, say) is a new write and
/// not a replay of the old answer. Xero allows 128 characters.
pub fn idempotency_key(body: &Value, versions: &[&Version]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(body.to_string().as_bytes());
    for v in versions {
        hasher.update(b"\n");
        hasher.update(v.0.as_bytes());
    }
    let digest = hasher.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("enrichd-{hex}")
}

#[async_trait]
impl Connector for Xero {
    fn kind(&self) -> &'static str {
        "xero"
    }

    fn record_links(&self, _entity: &str, external_id: &str, _fields: &Value) -> Vec<RecordLink> {
        bill_link(external_id).into_iter().collect()
    }

    async fn check(&self, entity: &str) -> Result<(), ConnectorError> {
        Self::entity(entity)?;
        let query = [
            ("where", r#"Type=="ACCPAY" AND Status=="DRAFT""#.to_owned()),
            ("page", "1".into()),
            ("pageSize", "1".into()),
        ];
        self.get("Invoices", &query, None, "xero: GET Invoices (check)").await.map(|_| ())
    }

    async fn list(&self, entity: &str, request: &PageRequest) -> Result<Page, ConnectorError> {
        Self::entity(entity)?;
        let page: u32 =
            match request.cursor.as_deref() {
                None => 1,
                Some(c) => c.parse().ok().filter(|p| *p >= 1).ok_or_else(|| {
                    ConnectorError::permanent(format!("xero: listing cursor {c:?} is not a page number"))
                })?,
            };
        let size = if request.per_page == 0 { PAGE_SIZE } else { request.per_page.min(PAGE_SIZE) };
        let query = [
            ("where", r#"Type=="ACCPAY" AND Status=="DRAFT""#.to_owned()),
            ("page", page.to_string()),
            ("pageSize", size.to_string()),
        ];
        let what = format!("xero: GET Invoices page {page}");
        let body = self.get("Invoices", &query, request.modified_after.as_deref(), &what).await?;
        let invoices = body["Invoices"].as_array().cloned().unwrap_or_default();
        let books = self.books().await?;
        let contacts = self.contacts(&contact_ids(&invoices)).await?;
        let mut records = Vec::new();
        for invoice in &invoices {
            // `where` already asks for these; checked again because a bill is only ever a candidate
            // while it is a DRAFT bill with a document.
            if invoice["Type"] != "ACCPAY" || invoice["Status"] != "DRAFT" || invoice["HasAttachments"] != true {
                continue;
            }
            let mut record = record(invoice, &books, &contacts)?;
            record.attachments = self.attachments(&record.id).await?;
            if !record.attachments.is_empty() {
                records.push(record);
            }
        }
        let page_count = body["pagination"]["pageCount"].as_u64();
        let more = match page_count {
            Some(count) => u64::from(page) < count,
            None => invoices.len() as u32 >= size,
        };
        let total = body["pagination"]["itemCount"].as_u64();
        Ok(Page { records, next: more.then(|| (page + 1).to_string()), total, resume: None })
    }

    async fn fetch(&self, entity: &str, ids: &[String]) -> Result<Vec<Record>, ConnectorError> {
        Self::entity(entity)?;
        let mut records = Vec::new();
        for chunk in ids.chunks(FETCH_BATCH) {
            if let Some(bad) = chunk.iter().find(|id| !crate::config::is_uuid(id)) {
                return Err(ConnectorError::permanent(format!(
                    "xero: bill id {bad:?} is not a Xero InvoiceID (a UUID)"
                )));
            }
            let query = [("IDs", chunk.join(","))];
            let body = self.get("Invoices", &query, None, "xero: GET Invoices by IDs").await?;
            let invoices = body["Invoices"].as_array().cloned().unwrap_or_default();
            let books = self.books().await?;
            let contacts = self.contacts(&contact_ids(&invoices)).await?;
            for invoice in &invoices {
                records.push(record(invoice, &books, &contacts)?);
            }
        }
        Ok(records)
    }

    async fn fetch_attachment(&self, attachment: &AttachmentRef) -> Result<Bytes, ConnectorError> {
        let href = attachment.href.trim_start_matches('/');
        let url = match href.strip_prefix(&format!("{}/api.xro/2.0/", self.base)) {
            Some(rest) => self.api(rest),
            None if href.starts_with("http") => href.to_owned(),
            None => self.api(href),
        };
        let what = format!("xero: GET attachment {} ({})", attachment.id, attachment.name);
        http::with_retries(READ_ATTEMPTS, Duration::from_millis(500), || async {
            let build = || self.http.get(&url).header("contentType", attachment.content_type.as_str());
            let response = self.send(build, true, &what).await?;
            response.bytes().await.map_err(|e| transport_error(e, &what))
        })
        .await
    }

    fn max_write_batch(&self) -> usize {
        WRITE_BATCH
    }

    async fn write(&self, entity: &str, changes: &[Change]) -> Result<WriteSubmission, ConnectorError> {
        Self::entity(entity)?;
        let mut outcomes = Vec::new();
        let mut sent = Vec::new();
        let mut versions = Vec::new();
        let mut bodies = Vec::new();
        let books = self.books().await?;
        for change in changes {
            match invoice_update(change, &books) {
                Ok(body) => {
                    sent.push(change.id.clone());
                    versions.push(&change.base_version);
                    bodies.push(body);
                }
                Err(e) => outcomes.push(WriteOutcome { id: change.id.clone(), result: WriteResult::Failed(e) }),
            }
        }
        if bodies.is_empty() {
            return Ok(WriteSubmission::Done(outcomes));
        }
        let body = json!({ "Invoices": bodies });
        let key = idempotency_key(&body, &versions);
        let url = self.api("Invoices");
        let what = format!("xero: POST Invoices ({} bills)", sent.len());
        let build = || {
            self.http
                .post(&url)
                .query(&[("summarizeErrors", "false")])
                .header("idempotency-key", key.as_str())
                .json(&body)
        };
        let answer: Value = match self.send(build, true, &what).await {
            Ok(response) => http::json(response, &what).await?,
            // Xero may still summarise: a 400 ValidationException lists the failing elements.
            Err(e) if e.status == Some(400) && e.code.as_deref() == Some("ValidationException") => {
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let returned = answer["Invoices"].as_array().cloned().unwrap_or_default();
        for (n, id) in sent.iter().enumerate() {
            let element = returned.iter().find(|i| i["InvoiceID"].as_str() == Some(id)).or_else(|| returned.get(n));
            let result = match element {
                None => WriteResult::Failed(ConnectorError::transient(format!(
                    "xero: bill {id}: missing from the POST Invoices answer"
                ))),
                Some(el) => {
                    let messages = validation_messages(el);
                    if el["StatusAttributeString"] == "ERROR" || el["HasErrors"] == true || !messages.is_empty() {
                        WriteResult::Failed(ConnectorError {
                            code: Some("ValidationError".into()),
                            ..ConnectorError::permanent(format!(
                                "xero: bill {id}: validation: {}",
                                if messages.is_empty() { "rejected".to_owned() } else { messages.join("; ") }
                            ))
                        })
                    } else {
                        WriteResult::Written { version: el["UpdatedDateUTC"].as_str().map(|v| Version(v.to_owned())) }
                    }
                }
            };
            // The payment note is part of the bill's write: a history note once the bill took
            // the fields. If the note fails, the bill's outcome says so (the fields stay written).
            let change = changes.iter().find(|c| &c.id == id).expect("sent ids come from the changes");
            let result = match (result, payment_note(change)) {
                (WriteResult::Written { version }, Some(note)) => {
                    match self.add_note(id, note, &change.base_version).await {
                        Ok(()) => WriteResult::Written { version },
                        Err(e) => WriteResult::Failed(ConnectorError {
                            message: format!(
                                "xero: bill {id}: the fields were written but the payment note was not added: {}",
                                e.message
                            ),
                            ..e
                        }),
                    }
                }
                (result, _) => result,
            };
            outcomes.push(WriteOutcome { id: id.clone(), result });
        }
        Ok(WriteSubmission::Done(outcomes))
    }

    async fn organisation(&self) -> Result<Option<Organisation>, ConnectorError> {
        Ok(Some(self.books().await?.organisation.clone()))
    }

    async fn look_up(&self, entity: &str, bill: &BillQuery) -> Result<Option<LookUp>, ConnectorError> {
        Self::entity(entity)?;
        self.look_up_bill(bill).await.map(Some)
    }

    /// Numbers as numbers; a supplier name as Xero's contact spells it (case and spaces aside); a
    /// tax number the contact does not record (a new supplier) is held, one it records must match;
    /// `payment_note` is a history note, which bills do not carry when read: its write is
    /// confirmed by `PUT History`'s answer, so it is held.
    fn holds(&self, field: &str, written: &Value, stored: Option<&Value>) -> bool {
        match (field, stored) {
            ("payment_note", _) => true,
            ("supplier.tax_number", None | Some(Value::Null)) => true,
            ("supplier.tax_number", Some(s)) => {
                written.as_str().map(normalise_tax_number) == s.as_str().map(normalise_tax_number)
            }
            ("supplier.name", Some(s)) => written.as_str().map(normalise_name) == s.as_str().map(normalise_name),
            ("line_items", Some(Value::Array(stored))) => {
                let Some(written) = written.as_array() else { return false };
                written.len() == stored.len()
                    && written.iter().zip(stored).all(|(w, s)| {
                        w.as_object()
                            .is_some_and(|w| w.iter().all(|(k, v)| v.is_null() || same_value(v, &s[k.as_str()])))
                    })
            }
            (_, Some(s)) => same_value(written, s),
            (_, None) => false,
        }
    }
}

/// Equal, with numbers compared as numbers (Xero answers `40.0` for `40`).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-9,
        _ => a == b,
    }
}

/// The bill's edit page in Xero's web app; Xero opens it in the organisation the person has
/// chosen there. Only an `InvoiceID` (a GUID) makes a link.
fn bill_link(id: &str) -> Option<RecordLink> {
    let guid = id.len() == 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    guid.then(|| {
        RecordLink::new("Bill in Xero", format!("https://go.xero.com/AccountsPayable/Edit.aspx?InvoiceID={id}"))
    })
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_links_open_the_bill_in_xero() {
        let link = bill_link("0b1a2c3d-4e5f-6789-abcd-ef0123456789").unwrap();
        assert_eq!(
            link.url,
            "https://go.xero.com/AccountsPayable/Edit.aspx?InvoiceID=0b1a2c3d-4e5f-6789-abcd-ef0123456789"
        );
        assert!(bill_link("1&x=<y>").is_none());
    }

    #[test]
    fn reads_xero_dates() {
        assert_eq!(ms_date("/Date(1551916800000+0000)/"), Some(1_551_916_800_000));
        assert_eq!(ms_date("/Date(1573755038314)/"), Some(1_573_755_038_314));
        assert_eq!(xero_date(&Value::Null, &json!("/Date(1551916800000+0000)/")), json!("2019-03-07"));
        assert_eq!(xero_date(&json!("2019-03-11T00:00:00"), &Value::Null), json!("2019-03-11"));
    }

    #[test]
    fn a_change_never_moves_a_bill_out_of_draft() {
        let id = "8b1e3d2c-0000-4000-8000-000000000001";
        let mut fields = Map::new();
        fields.insert("status".into(), json!("AUTHORISED"));
        let change =
            Change { id: id.into(), base_version: Version("v".into()), fields, native: None, mode: Default::default() };
        let e = invoice_update(&change, &Books::default()).unwrap_err();
        assert!(e.message.contains(id) && e.message.contains("DRAFT"), "{e}");
        let mut fields = Map::new();
        fields.insert("invoice_number".into(), json!("INV-1"));
        let change = Change {
            id: id.into(),
            base_version: Version("v".into()),
            fields,
            native: Some(json!({"Status": "AUTHORISED", "Type": "ACCPAY"})),
            mode: Default::default(),
        };
        assert!(invoice_update(&change, &Books::default()).unwrap_err().message.contains("AUTHORISED"));
    }
}
