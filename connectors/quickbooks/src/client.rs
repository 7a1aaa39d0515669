//! The QuickBooks Online (Accounting API v3) connector.
//!
//! - Every call is `/v3/company/{realm}/…?minorversion=75` with a bearer token from a
//!   [`RotatingToken`] (the rotated refresh token is persisted before the access token is used).
//! - Listing is the query language: `SELECT * FROM Bill [WHERE MetaData.LastUpdatedTime > '…']
//!   ORDERBY Id STARTPOSITION n MAXRESULTS m`. Ordered by `Id`, not by the update time, so a bill a
//!   bookkeeper edits mid-listing does not shift the pages under us (QBO returns no total and no
//!   next link: a page shorter than asked is the last). The page's Attachables come from one more
//!   query (`AttachableRef.EntityRef.Type = 'Bill' AND AttachableRef.EntityRef.value IN (…)`).
//! - Fields in the bill vocabulary every accounting connector shares: `supplier.id`/`.name`
//!   (`VendorRef`), `supplier.tax_number` (the vendor's `TaxIdentifier`), `invoice_number`
//!   (`DocNumber`), `date` (`TxnDate`), `due_date`, `currency`, `amounts_are`
//!   (`GlobalTaxCalculation`), `line_items` (`description`, `line_amount` ← `Amount`, `tax_rate` ←
//!   the tax code's purchase percent, `account_code` ← the account's number), `sub_total`,
//!   `total_tax`, `total` (QuickBooks computes them), `payment_note` (`PrivateNote`), `status`
//!   (from the balance). The version is `SyncToken`.
//! - Writes are sparse updates carrying the `SyncToken` read: one bill is `POST /bill`, several are
//!   one `POST /batch` (≤ 30 items, `bId` = position). A stale token (Fault 5010) is
//!   [`WriteResult::Conflict`], never retried. Names (vendor, account, tax code) are resolved to ids
//!   with the company's own lists, read once per connector.
//! - A `Fault` inside an HTTP 200 is an error like any other; both shapes (`Fault.Error[]` and the
//!   401's lower-case `fault.error[]`) are read.
//! - Limits: at most 10 requests in flight and 500 a minute per company; a 429 waits the
//!   `Retry-After` or 60 s.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use enrichd_connector::http::{self, transport_error};
use enrichd_connector::oauth2::{OAuth2Client, RotatingToken, TokenStore};
use enrichd_connector::{
    AttachmentRef, Change, Connector, ConnectorError, Page, PageRequest, Record, RecordLink, Version, WriteOutcome,
    WriteResult, WriteSubmission,
};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};
use tokio::sync::{Mutex, OnceCell, Semaphore};

use crate::Options;
use crate::books::{Books, RecentBills, Vendor, VendorCache, bill_status, normalise_name, normalise_tax_number};
use enrichd_connector::lookup::{BillQuery, LookUp, Organisation};

/// The one entity this connector knows.
pub const BILLS: &str = "bills";
/// QuickBooks' cap on items per `POST /batch`.
pub const MAX_BATCH: usize = 30;
/// Requests in flight per company (Intuit: "cannot make more than 10 concurrent API requests").
pub const MAX_CONCURRENT: usize = 10;
/// Requests per minute per company.
pub const PER_MINUTE: usize = 500;
/// How long a 429 without `Retry-After` waits (Intuit: "wait 60 seconds").
pub const THROTTLE_WAIT: Duration = Duration::from_secs(60);
/// The stale-`SyncToken` fault code.
pub const STALE_OBJECT: &str = "5010";
/// Rows per query page when the engine asks for none; QBO allows up to 1,000.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;
/// Attempts for reads (429, 5xx and transport errors are retried).
const READ_ATTEMPTS: u32 = 3;

/// A QuickBooks `Fault` as an error: the first error's code, message and detail, and the fault type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: String,
    pub code: String,
    pub message: String,
    pub detail: String,
}

impl Fault {
    /// Reads `{"Fault":{"Error":[{"Message","Detail","code"}],"type"}}` or the 401's
    /// `{"fault":{"error":[{"message","detail","code"}],"type"}}`.
    pub fn from_body(body: &Value) -> Option<Fault> {
        let fault = body.get("Fault").or_else(|| body.get("fault"))?;
        let errors = fault.get("Error").or_else(|| fault.get("error"));
        let first = errors.and_then(|e| e.as_array()).and_then(|e| e.first()).cloned().unwrap_or(Value::Null);
        let text = |keys: &[&str]| keys.iter().find_map(|k| first.get(*k)?.as_str()).unwrap_or("").to_owned();
        Some(Fault {
            kind: fault.get("type").and_then(Value::as_str).unwrap_or("").to_owned(),
            code: text(&["code"]),
            message: text(&["Message", "message"]),
            detail: text(&["Detail", "detail"]),
        })
    }

    /// Whether trying again can help: throttling and QuickBooks' own (system) faults.
    fn retryable(&self) -> bool {
        matches!(self.code.as_str(), "429" | "003001" | "ThrottleExceeded")
            || self.kind.eq_ignore_ascii_case("SystemFault")
    }

    fn into_error(self, what: &str, status: u16) -> ConnectorError {
        let mut message = format!("{what}: HTTP {status} QuickBooks fault {}", self.code);
        if !self.kind.is_empty() {
            message.push_str(&format!(" ({})", self.kind));
        }
        message.push_str(&format!(": {}", self.message));
        if !self.detail.is_empty() && self.detail != self.message {
            message.push_str(&format!(": {}", self.detail));
        }
        let retryable = self.retryable() || status == 429 || status >= 500;
        ConnectorError {
            message,
            retryable,
            status: Some(status),
            code: Some(self.code),
            retry_after: None,
            deferred: false,
        }
    }
}

/// Classifies a QuickBooks answer that is not a success (any status, or a 200 carrying a Fault).
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str, what: &str) -> ConnectorError {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let mut err = match Fault::from_body(&parsed) {
        Some(fault) => fault.into_error(what, status.as_u16()),
        None => http::classify(status, headers, body, what),
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        err.retryable = true;
        err.retry_after = Some(http::retry_after(headers).unwrap_or(THROTTLE_WAIT));
    }
    err
}

/// Requests sent in the last window (a minute), so the connector stays under 500 a minute per
/// company. QuickBooks reports no allowance headers, so the core's `gate::Allowance` (fed by them)
/// has nothing to read: the count is kept here, per process.
struct MinuteWindow {
    sent: std::sync::Mutex<VecDeque<Instant>>,
    limit: usize,
    window: Duration,
}

impl MinuteWindow {
    fn new(limit: usize, window: Duration) -> MinuteWindow {
        MinuteWindow { sent: std::sync::Mutex::new(VecDeque::new()), limit, window }
    }

    async fn acquire(&self) {
        loop {
            let wait = {
                let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                while sent.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
                    sent.pop_front();
                }
                if sent.len() < self.limit {
                    sent.push_back(now);
                    return;
                }
                self.window - now.duration_since(sent[0])
            };
            tracing::debug!(wait_ms = wait.as_millis() as u64, "quickbooks: 500 requests this minute; waiting");
            tokio::time::sleep(wait).await;
        }
    }
}

/// The QuickBooks Online connector for one company.
pub struct QuickBooks {
    base_url: String,
    realm_id: Option<String>,
    minor_version: String,
    http: reqwest::Client,
    token: RotatingToken,
    in_flight: Semaphore,
    window: MinuteWindow,
    /// Until when every request waits after a 429 (shared by all requests on the company).
    throttled_until: Mutex<Option<Instant>>,
    /// The company's currencies, tax codes and accounts, read once.
    pub(crate) books: OnceCell<Arc<Books>>,
    pub(crate) vendors: VendorCache,
    /// A vendor's latest bills (id and account ids of their lines), by vendor id.
    pub(crate) suggestions: Mutex<HashMap<String, RecentBills>>,
}

impl QuickBooks {
    /// A connector for the connection `connection`, whose tokens live in `store` (the engine's
    /// encrypted token table).
    pub fn new(connection: &str, options: Options, store: Arc<dyn TokenStore>) -> Result<QuickBooks, ConnectorError> {
        let http = http::builder(options.timeout).build().map_err(|e| {
            ConnectorError::permanent(format!("quickbooks: building the HTTP client failed: {}", e.without_url()))
        })?;
        let client = OAuth2Client {
            token_url: options.token_url.clone(),
            client_id: options.client_id.expose_secret().to_owned(),
            client_secret: options.client_secret.clone(),
        };
        let token = RotatingToken::new(connection, client, http.clone(), store, None);
        Ok(QuickBooks {
            base_url: options.base_url.trim_end_matches('/').to_owned(),
            realm_id: options.realm_id,
            minor_version: options.minor_version.to_string(),
            http,
            token,
            in_flight: Semaphore::new(MAX_CONCURRENT),
            window: MinuteWindow::new(PER_MINUTE, Duration::from_secs(60)),
            throttled_until: Mutex::new(None),
            books: OnceCell::new(),
            vendors: Mutex::new(None),
            suggestions: Mutex::new(HashMap::new()),
        })
    }

    fn company_url(&self, path: &str) -> Result<String, ConnectorError> {
        let realm = self.realm_id.as_deref().ok_or_else(|| {
            ConnectorError::permanent(
                "quickbooks: the connection has no realm_id (company) yet; run `enrichd connect` to authorise it",
            )
        })?;
        Ok(format!("{}/v3/company/{realm}/{path}", self.base_url))
    }

    /// Sends one request (built afresh by `build` for each attempt) and returns its JSON body.
    async fn call<F>(&self, what: &str, build: F) -> Result<Value, ConnectorError>
    where
        F: Fn(&reqwest::Client) -> Result<RequestBuilder, ConnectorError>,
    {
        let response = self.send(what, &build).await?;
        let status = response.status();
        let body: Value = http::json(response, what).await?;
        if let Some(fault) = Fault::from_body(&body) {
            // QuickBooks answers some failures with HTTP 200 and a Fault.
            return Err(fault.into_error(what, status.as_u16()));
        }
        Ok(body)
    }

    /// Sends with the company's limits and auth; a 401 refreshes the token once.
    async fn send<F>(&self, what: &str, build: &F) -> Result<reqwest::Response, ConnectorError>
    where
        F: Fn(&reqwest::Client) -> Result<RequestBuilder, ConnectorError>,
    {
        let mut refreshed = false;
        loop {
            let throttled = *self.throttled_until.lock().await;
            if let Some(until) = throttled {
                tokio::time::sleep_until(until.into()).await;
            }
            let _permit = self.in_flight.acquire().await.expect("the semaphore is never closed");
            self.window.acquire().await;
            let token = self.token.access_token().await?;
            let request = build(&self.http)?
                .query(&[("minorversion", self.minor_version.as_str())])
                .bearer_auth(token.expose_secret())
                .header("accept", "application/json");
            let response = request.send().await.map_err(|e| transport_error(e, what))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let headers = response.headers().clone();
            let body = response.text().await.unwrap_or_default();
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                self.token.invalidate().await;
                refreshed = true;
                continue;
            }
            let mut err = classify(status, &headers, &body, what);
            // Intuit's support asks for the request's trace id.
            if let Some(tid) = headers.get("intuit-tid").and_then(|v| v.to_str().ok()) {
                err.message.push_str(&format!(" (intuit_tid {tid})"));
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                let until = Instant::now() + err.retry_after.unwrap_or(THROTTLE_WAIT);
                let mut t = self.throttled_until.lock().await;
                *t = Some(t.map_or(until, |t| t.max(until)));
            }
            return Err(err);
        }
    }

    /// A read with retries (429 waits its `Retry-After` or 60 s).
    async fn get(&self, path: &str, query: &[(&str, String)], what: &str) -> Result<Value, ConnectorError> {
        let url = self.company_url(path)?;
        http::with_retries(READ_ATTEMPTS, Duration::from_millis(500), || {
            self.call(what, |c| Ok(c.request(Method::GET, &url).query(query)))
        })
        .await
    }

    /// Runs a query and returns the rows of `entity` (empty when QuickBooks returns `{}`).
    pub async fn query(&self, entity: &str, query: &str) -> Result<Vec<Value>, ConnectorError> {
        let what = format!("query {entity}");
        let body = self.get("query", &[("query", query.to_owned())], &what).await?;
        Ok(body["QueryResponse"][entity].as_array().cloned().unwrap_or_default())
    }

    /// The Attachables linked to these bills, by bill id.
    async fn attachments(&self, bill_ids: &[String]) -> Result<HashMap<String, Vec<AttachmentRef>>, ConnectorError> {
        let mut by_bill: HashMap<String, Vec<AttachmentRef>> = HashMap::new();
        for chunk in bill_ids.chunks(100) {
            let ids = chunk.iter().map(|id| format!("'{}'", escape(id))).collect::<Vec<_>>().join(", ");
            let mut start = 1;
            loop {
                let q = format!(
                    "SELECT * FROM Attachable WHERE AttachableRef.EntityRef.Type = 'Bill' AND AttachableRef.EntityRef.value IN ({ids}) STARTPOSITION {start} MAXRESULTS {MAX_PAGE}"
                );
                let rows = self.query("Attachable", &q).await?;
                let n = rows.len();
                for a in rows {
                    let attachment = AttachmentRef {
                        id: a["Id"].as_str().unwrap_or_default().to_owned(),
                        name: a["FileName"].as_str().unwrap_or("attachment").to_owned(),
                        content_type: a["ContentType"].as_str().unwrap_or("application/octet-stream").to_owned(),
                        size: a["Size"].as_f64().map(|s| s as u64),
                        href: format!("download/{}", a["Id"].as_str().unwrap_or_default()),
                    };
                    for r in a["AttachableRef"].as_array().into_iter().flatten() {
                        let e = &r["EntityRef"];
                        let is_bill = e["type"].as_str().is_some_and(|t| t.eq_ignore_ascii_case("Bill"));
                        if let (true, Some(id)) = (is_bill, e["value"].as_str())
                            && chunk.iter().any(|c| c == id)
                        {
                            by_bill.entry(id.to_owned()).or_default().push(attachment.clone());
                        }
                    }
                }
                if n < MAX_PAGE as usize {
                    break;
                }
                start += n;
            }
        }
        Ok(by_bill)
    }

    async fn with_attachments(&self, bills: Vec<Value>) -> Result<Vec<Record>, ConnectorError> {
        let ids: Vec<String> = bills.iter().filter_map(|b| b["Id"].as_str().map(str::to_owned)).collect();
        let mut attachments = if ids.is_empty() { HashMap::new() } else { self.attachments(&ids).await? };
        let books = self.books().await?;
        let vendor_ids: Vec<&str> = bills.iter().filter_map(|b| b["VendorRef"]["value"].as_str()).collect();
        let vendors = self.vendors(&vendor_ids).await?;
        Ok(bills
            .into_iter()
            .map(|bill| {
                let mut record = record(bill, &books, &vendors);
                record.attachments = attachments.remove(&record.id).unwrap_or_default();
                record
            })
            .collect())
    }

    /// Every row of `entity` that `select` (without paging) finds, 1,000 a query.
    pub(crate) async fn query_all(&self, entity: &str, select: &str) -> Result<Vec<Value>, ConnectorError> {
        let mut rows = Vec::new();
        let mut start = 1;
        loop {
            let page = self.query(entity, &format!("{select} STARTPOSITION {start} MAXRESULTS {MAX_PAGE}")).await?;
            let n = page.len();
            rows.extend(page);
            if n < MAX_PAGE as usize {
                return Ok(rows);
            }
            start += n;
        }
    }

    /// The sparse update body for one change, or the reason it cannot be written (naming the field).
    async fn sparse_body(&self, change: &Change, books: &Books) -> Result<Value, String> {
        let mut bill = Map::new();
        bill.insert("Id".into(), json!(change.id));
        bill.insert("SyncToken".into(), json!(change.base_version.0));
        bill.insert("sparse".into(), json!(true));
        let has_id = change.fields.get("supplier.id").is_some_and(|v| !v.is_null());
        for (field, value) in &change.fields {
            let text = || value.as_str().map(|s| json!(s)).ok_or_else(|| format!("{field}: {value} is not text"));
            match field.as_str() {
                "supplier.id" => {
                    let id = value.as_str().ok_or_else(|| format!("supplier.id: {value} is not text"))?;
                    let vendors = self.vendors(&[id]).await.map_err(|e| e.message)?;
                    if !vendors.iter().any(|v| v.id == id) {
                        return Err(format!("supplier.id: no vendor with id {id:?} in this QuickBooks company"));
                    }
                    bill.insert("VendorRef".into(), json!({ "value": id }));
                }
                // A matched supplier goes by id. A name alone is a reviewer's "create a new
                // supplier": the vendor of that name, created first when there is none
                // (QuickBooks does not create vendors from a bill).
                "supplier.name" if has_id => {}
                "supplier.name" => {
                    let name = value.as_str().ok_or_else(|| format!("supplier.name: {value} is not text"))?;
                    let tax_number = change.fields.get("supplier.tax_number").and_then(Value::as_str);
                    let id = self
                        .vendor_named(name, tax_number)
                        .await
                        .map_err(|e| format!("supplier.name: {}", e.message))?;
                    bill.insert("VendorRef".into(), json!({ "value": id }));
                }
                "invoice_number" => {
                    let s = value.as_str().ok_or_else(|| format!("invoice_number: {value} is not text"))?;
                    if s.chars().count() > 21 {
                        return Err(format!("invoice_number: {s:?} is longer than QuickBooks' 21 characters"));
                    }
                    bill.insert("DocNumber".into(), json!(s));
                }
                "date" => {
                    bill.insert("TxnDate".into(), date(value, field)?);
                }
                "due_date" => {
                    bill.insert("DueDate".into(), date(value, field)?);
                }
                "currency" => {
                    bill.insert("CurrencyRef".into(), json!({"value": text()?}));
                }
                "payment_note" => {
                    let s = value.as_str().ok_or_else(|| format!("payment_note: {value} is not text"))?;
                    if s.chars().count() > 4000 {
                        return Err("payment_note: longer than QuickBooks' 4,000 characters".into());
                    }
                    bill.insert("PrivateNote".into(), json!(s));
                }
                "amounts_are" => {
                    let how = match value.as_str().unwrap_or_default() {
                        "exclusive" => "TaxExcluded",
                        "inclusive" => "TaxInclusive",
                        "no_tax" => "NotApplicable",
                        _ => return Err(format!("amounts_are: {value} is not exclusive, inclusive or no_tax")),
                    };
                    bill.insert("GlobalTaxCalculation".into(), json!(how));
                }
                "line_items" => {
                    let items = value.as_array().ok_or_else(|| format!("line_items: {value} is not a list"))?;
                    let mut lines = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        lines.push(expense_line(i, item, books)?);
                    }
                    bill.insert("Line".into(), Value::Array(lines));
                }
                // QuickBooks computes these from the lines; the supplier's tax number is the
                // vendor's. Accepted, not sent; `holds` compares them after the write.
                "sub_total" | "total_tax" | "total" | "supplier.tax_number" => {}
                "status" => return Err("status: QuickBooks bills have no status enrichd may set".into()),
                other => return Err(format!("{other}: not a bill field this connector writes")),
            }
        }
        Ok(Value::Object(bill))
    }

    /// The id of the vendor named `name` (case and spaces aside), created (`POST /vendor`, with the
    /// tax number when known) if the company has none; the vendor list learns it at once.
    async fn vendor_named(&self, name: &str, tax_number: Option<&str>) -> Result<String, ConnectorError> {
        let vendors = self.vendors(&[]).await?;
        if let Some(v) = vendors.iter().find(|v| normalise_name(&v.name) == normalise_name(name)) {
            return Ok(v.id.clone());
        }
        let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
        if name.is_empty() || name.chars().count() > 500 {
            return Err(ConnectorError::permanent(format!("a vendor name must be 1 to 500 characters, got {name:?}")));
        }
        let mut body = json!({ "DisplayName": name });
        if let Some(tax) = tax_number.filter(|t| !t.trim().is_empty()) {
            body["TaxIdentifier"] = json!(tax.trim());
        }
        let url = self.company_url("vendor")?;
        let what = format!("create vendor {name:?}");
        let created = self.call(&what, |c| Ok(c.post(&url).json(&body))).await?;
        let id = created["Vendor"]["Id"]
            .as_str()
            .ok_or_else(|| ConnectorError::permanent(format!("{what}: QuickBooks answered no vendor Id")))?
            .to_owned();
        let mut held = self.vendors.lock().await;
        if let Some((at, list)) = held.as_ref() {
            let mut list = list.as_ref().clone();
            list.push(Vendor { id: id.clone(), name, tax_number: tax_number.map(str::to_owned) });
            *held = Some((*at, Arc::new(list)));
        }
        Ok(id)
    }

    async fn write_one(&self, change: &Change) -> Result<WriteOutcome, ConnectorError> {
        let what = format!("update bill {}", change.id);
        let books = self.books().await?;
        let body = match self.sparse_body(change, &books).await {
            Ok(b) => b,
            Err(reason) => return Ok(failed(&change.id, format!("bill {}: {reason}", change.id))),
        };
        let url = self.company_url("bill")?;
        let result = self.call(&what, |c| Ok(c.post(&url).json(&body))).await;
        Ok(WriteOutcome { id: change.id.clone(), result: outcome(result.map(|b| b["Bill"].clone())) })
    }

    async fn write_batch(&self, changes: &[Change]) -> Result<Vec<WriteOutcome>, ConnectorError> {
        let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; changes.len()];
        let mut items = Vec::new();
        let books = self.books().await?;
        for (i, change) in changes.iter().enumerate() {
            match self.sparse_body(change, &books).await {
                Ok(bill) => items.push(json!({"bId": format!("b{i}"), "operation": "update", "Bill": bill})),
                Err(reason) => outcomes[i] = Some(failed(&change.id, format!("bill {}: {reason}", change.id))),
            }
        }
        if !items.is_empty() {
            let what = format!("batch update of {} bills", items.len());
            let url = self.company_url("batch")?;
            let body = json!({"BatchItemRequest": items});
            let answer = self.call(&what, |c| Ok(c.post(&url).json(&body))).await?;
            let mut by_bid: HashMap<String, Value> = HashMap::new();
            for item in answer["BatchItemResponse"].as_array().into_iter().flatten() {
                if let Some(bid) = item["bId"].as_str() {
                    by_bid.insert(bid.to_owned(), item.clone());
                }
            }
            for (i, change) in changes.iter().enumerate() {
                if outcomes[i].is_some() {
                    continue;
                }
                let result = match by_bid.remove(&format!("b{i}")) {
                    None => WriteResult::Failed(ConnectorError::transient(format!(
                        "bill {}: the batch answer has no item b{i}; re-read the bill before trying again",
                        change.id
                    ))),
                    Some(item) => match Fault::from_body(&item) {
                        Some(fault) => outcome(Err(fault.into_error(&format!("update bill {}", change.id), 200))),
                        None => outcome(Ok(item["Bill"].clone())),
                    },
                };
                outcomes[i] = Some(WriteOutcome { id: change.id.clone(), result });
            }
        }
        Ok(outcomes.into_iter().map(|o| o.expect("every change has an outcome")).collect())
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

fn date(value: &Value, field: &str) -> Result<Value, String> {
    let s = value.as_str().unwrap_or_default();
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|_| json!(s))
        .map_err(|_| format!("{field}: {value} is not a date (YYYY-MM-DD)"))
}

fn failed(id: &str, reason: String) -> WriteOutcome {
    WriteOutcome { id: id.to_owned(), result: WriteResult::Failed(ConnectorError::permanent(reason)) }
}

/// A write's answer as an outcome: 5010 is a conflict, never a retry.
fn outcome(result: Result<Value, ConnectorError>) -> WriteResult {
    match result {
        Ok(bill) => WriteResult::Written { version: bill["SyncToken"].as_str().map(|s| Version(s.to_owned())) },
        Err(e) if e.code.as_deref() == Some(STALE_OBJECT) => WriteResult::Conflict { current: None },
        Err(e) => WriteResult::Failed(e),
    }
}

/// The keys of one line item in the bill vocabulary.
pub const LINE_KEYS: [&str; 7] =
    ["description", "quantity", "unit_price", "tax_rate", "tax_amount", "line_amount", "account_code"];

/// One line item as an `AccountBasedExpenseLineDetail` line. `quantity`, `unit_price` and
/// `tax_amount` are checked and not sent: such lines hold an amount, an account and a tax code, and
/// QuickBooks computes the tax.
fn expense_line(i: usize, item: &Value, books: &Books) -> Result<Value, String> {
    let at = format!("line_items[{i}]");
    let obj = item.as_object().ok_or_else(|| format!("{at}: {item} is not an object"))?;
    if let Some(bad) = obj.keys().find(|k| !LINE_KEYS.contains(&k.as_str())) {
        return Err(format!("{at}.{bad}: not a line item field (fields: {})", LINE_KEYS.join(", ")));
    }
    let number = |key: &str| -> Result<Option<f64>, String> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| format!("{at}.{key}: {v} is not a number")),
        }
    };
    let (quantity, unit_price) = (number("quantity")?, number("unit_price")?);
    number("tax_amount")?;
    let amount = match (number("line_amount")?, quantity, unit_price) {
        (Some(a), _, _) => a,
        (None, Some(q), Some(p)) => round2(q * p),
        _ => return Err(format!("{at}.line_amount: missing (and no quantity and unit_price to compute it)")),
    };
    let account = match obj.get("account_code").filter(|v| !v.is_null()) {
        Some(code) => {
            let code = code.as_str().map(str::to_owned).unwrap_or_else(|| code.to_string());
            books
                .account_id(&code)
                .ok_or_else(|| format!("{at}.account_code: no account {code:?} in this QuickBooks company"))?
                .to_owned()
        }
        None => return Err(format!("{at}.account_code: missing (QuickBooks needs an expense account per line)")),
    };
    let mut detail = json!({"AccountRef": {"value": account}});
    if let Some(rate) = number("tax_rate")? {
        let code = books
            .tax_code_for(rate)
            .ok_or_else(|| format!("{at}.tax_rate: no purchase tax code of {rate}% in this QuickBooks company"))?;
        detail["TaxCodeRef"] = json!({"value": code});
    }
    let mut line = json!({
        "DetailType": "AccountBasedExpenseLineDetail",
        "Amount": amount,
        "AccountBasedExpenseLineDetail": detail,
    });
    if let Some(d) = obj.get("description").filter(|v| !v.is_null()) {
        line["Description"] = json!(d.as_str().ok_or_else(|| format!("{at}.description: {d} is not text"))?);
    }
    Ok(line)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A bill as a record in the bill vocabulary, `SyncToken` as the version. `books` turns tax codes
/// into percents and account ids into codes; `vendors` gives the supplier's tax number.
pub fn record(bill: Value, books: &Books, vendors: &[Vendor]) -> Record {
    let mut fields = Map::new();
    let s = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(|s| json!(s)).unwrap_or(Value::Null);
    let vendor_id = bill["VendorRef"]["value"].as_str();
    fields.insert("supplier.id".into(), s(&bill["VendorRef"]["value"]));
    fields.insert("supplier.name".into(), s(&bill["VendorRef"]["name"]));
    let tax_number = vendor_id.and_then(|id| vendors.iter().find(|v| v.id == id)).and_then(|v| v.tax_number.clone());
    fields.insert("supplier.tax_number".into(), tax_number.map_or(Value::Null, Value::String));
    fields.insert("invoice_number".into(), s(&bill["DocNumber"]));
    fields.insert("date".into(), s(&bill["TxnDate"]));
    fields.insert("due_date".into(), s(&bill["DueDate"]));
    fields.insert("currency".into(), s(&bill["CurrencyRef"]["value"]));
    let amounts_are = match bill["GlobalTaxCalculation"].as_str() {
        Some("TaxExcluded") => json!("exclusive"),
        Some("TaxInclusive") => json!("inclusive"),
        Some("NotApplicable") => json!("no_tax"),
        _ => Value::Null,
    };
    fields.insert("amounts_are".into(), amounts_are);
    fields.insert("payment_note".into(), s(&bill["PrivateNote"]));
    fields.insert("status".into(), json!(bill_status(&bill)));
    let lines: Vec<Value> = bill["Line"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["DetailType"] != "SubTotalLineDetail")
        .map(|l| {
            let item = l.get("ItemBasedExpenseLineDetail");
            let detail = l.get("AccountBasedExpenseLineDetail").or(item).cloned().unwrap_or(Value::Null);
            let account = detail["AccountRef"]["value"]
                .as_str()
                .map(|id| books.account_code(id).unwrap_or_else(|| id.to_owned()));
            let rate = detail["TaxCodeRef"]["value"].as_str().and_then(|c| books.rate_of(c));
            json!({
                "description": s(&l["Description"]),
                "quantity": item.map_or(Value::Null, |d| d["Qty"].clone()),
                "unit_price": item.map_or(Value::Null, |d| d["UnitPrice"].clone()),
                "tax_rate": rate,
                "tax_amount": Value::Null,
                "line_amount": l["Amount"].clone(),
                "account_code": account,
            })
        })
        .collect();
    let sub_total: f64 = lines.iter().filter_map(|l| l["line_amount"].as_f64()).sum();
    let has_lines = !lines.is_empty();
    fields.insert("line_items".into(), if has_lines { Value::Array(lines) } else { Value::Null });
    let inclusive = bill["GlobalTaxCalculation"] == "TaxInclusive";
    let total_tax = bill["TxnTaxDetail"]["TotalTax"].as_f64();
    let sub_total = match (inclusive, total_tax) {
        (true, Some(tax)) => round2(sub_total - tax),
        _ => round2(sub_total),
    };
    fields.insert("sub_total".into(), if has_lines { json!(sub_total) } else { Value::Null });
    fields.insert("total_tax".into(), total_tax.map_or(Value::Null, |t| json!(t)));
    fields.insert("total".into(), bill["TotalAmt"].clone());
    Record {
        id: bill["Id"].as_str().unwrap_or_default().to_owned(),
        version: Version(bill["SyncToken"].as_str().unwrap_or_default().to_owned()),
        fields,
        attachments: Vec::new(),
        native: Some(bill),
    }
}

/// Equal, with numbers compared as numbers to the cent.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() < 0.005,
        _ => a == b,
    }
}

fn unknown_entity(entity: &str) -> ConnectorError {
    ConnectorError::permanent(format!("quickbooks: unknown entity {entity:?}; this connector knows \"{BILLS}\""))
}

#[async_trait]
impl Connector for QuickBooks {
    fn kind(&self) -> &'static str {
        "quickbooks"
    }

    fn record_links(&self, _entity: &str, external_id: &str, _fields: &Value) -> Vec<RecordLink> {
        bill_link(&self.base_url, external_id).into_iter().collect()
    }

    async fn check(&self, entity: &str) -> Result<(), ConnectorError> {
        if entity != BILLS {
            return Err(unknown_entity(entity));
        }
        self.get("query", &[("query", "SELECT COUNT(*) FROM Bill".into())], "count bills").await.map(|_| ())
    }

    async fn list(&self, entity: &str, request: &PageRequest) -> Result<Page, ConnectorError> {
        if entity != BILLS {
            return Err(unknown_entity(entity));
        }
        let start: usize = match request.cursor.as_deref() {
            None => 1,
            Some(c) => c.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                ConnectorError::permanent(format!("quickbooks: listing cursor {c:?} is not a start position"))
            })?,
        };
        let per_page = match request.per_page {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let filter = match &request.modified_after {
            Some(after) => {
                let at = chrono::DateTime::parse_from_rfc3339(after).map_err(|_| {
                    ConnectorError::permanent(format!("quickbooks: modified_after {after:?} is not an RFC 3339 time"))
                })?;
                format!(
                    " WHERE MetaData.LastUpdatedTime > '{}'",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
                )
            }
            None => String::new(),
        };
        let q = format!("SELECT * FROM Bill{filter} ORDERBY Id STARTPOSITION {start} MAXRESULTS {per_page}");
        let bills = self.query("Bill", &q).await?;
        let n = bills.len();
        let records = self.with_attachments(bills).await?;
        let next = (n == per_page as usize).then(|| (start + n).to_string());
        Ok(Page { records, next, total: None, resume: None })
    }

    async fn fetch(&self, entity: &str, ids: &[String]) -> Result<Vec<Record>, ConnectorError> {
        if entity != BILLS {
            return Err(unknown_entity(entity));
        }
        let mut records = Vec::new();
        for chunk in ids.chunks(MAX_PAGE as usize) {
            let list = chunk.iter().map(|id| format!("'{}'", escape(id))).collect::<Vec<_>>().join(", ");
            let q = format!("SELECT * FROM Bill WHERE Id IN ({list}) MAXRESULTS {MAX_PAGE}");
            let bills = self.query("Bill", &q).await?;
            records.extend(self.with_attachments(bills).await?);
        }
        Ok(records)
    }

    async fn fetch_attachment(&self, attachment: &AttachmentRef) -> Result<Bytes, ConnectorError> {
        // `/download/{id}` answers a fresh presigned URL (TempDownloadUri expires after 15 minutes).
        let what = format!("download attachable {}", attachment.id);
        let url = self.company_url(&format!("download/{}", attachment.id))?;
        let link = http::with_retries(READ_ATTEMPTS, Duration::from_millis(500), || async {
            let response = self.send(&what, &|c: &reqwest::Client| Ok(c.get(&url))).await?;
            response.text().await.map_err(|e| transport_error(e, &what))
        })
        .await?;
        let link = link.trim().trim_matches('"').to_owned();
        if !link.starts_with("http") {
            return Err(ConnectorError::permanent(format!("{what}: QuickBooks answered no download link")));
        }
        // The presigned link carries its own signature: no bearer token goes to the file host.
        http::with_retries(READ_ATTEMPTS, Duration::from_millis(500), || async {
            let response = http::send(self.http.get(&link), &what).await?;
            response.bytes().await.map_err(|e| transport_error(e, &what))
        })
        .await
    }

    fn max_write_batch(&self) -> usize {
        MAX_BATCH
    }

    async fn write(&self, entity: &str, changes: &[Change]) -> Result<WriteSubmission, ConnectorError> {
        if entity != BILLS {
            return Err(unknown_entity(entity));
        }
        if changes.len() > MAX_BATCH {
            return Err(ConnectorError::permanent(format!(
                "quickbooks: {} changes in one write; a batch holds at most {MAX_BATCH}",
                changes.len()
            )));
        }
        // The company's lists are read before any bill is judged, so a failed read is the call's
        // error (retryable as such), not every bill's.
        let named: Vec<&str> = changes.iter().filter_map(|c| c.fields.get("supplier.id")?.as_str()).collect();
        if changes.iter().any(|c| c.fields.contains_key("supplier.id") || c.fields.contains_key("supplier.name")) {
            self.vendors(&named).await?;
        }
        let outcomes = match changes {
            [] => Vec::new(),
            [one] => vec![self.write_one(one).await?],
            many => self.write_batch(many).await?,
        };
        Ok(WriteSubmission::Done(outcomes))
    }

    async fn organisation(&self) -> Result<Option<Organisation>, ConnectorError> {
        Ok(Some(self.books().await?.organisation.clone()))
    }

    async fn look_up(&self, entity: &str, bill: &BillQuery) -> Result<Option<LookUp>, ConnectorError> {
        if entity != BILLS {
            return Err(unknown_entity(entity));
        }
        self.look_up_bill(bill).await.map(Some)
    }

    /// Numbers to the cent; a line item holds when its description, amount, account and tax rate
    /// are those written (`quantity`, `unit_price` and `tax_amount` are not kept by an expense
    /// line); a supplier name case and spaces aside; a tax number the vendor does not record is held.
    fn holds(&self, field: &str, written: &Value, stored: Option<&Value>) -> bool {
        match (field, stored) {
            ("line_items", Some(Value::Array(stored))) => {
                let Some(written) = written.as_array() else { return false };
                written.len() == stored.len()
                    && written.iter().zip(stored).all(|(w, s)| {
                        ["description", "line_amount", "account_code", "tax_rate"]
                            .iter()
                            .all(|k| w[*k].is_null() || same_value(&w[*k], &s[*k]))
                    })
            }
            ("supplier.tax_number", None | Some(Value::Null)) => true,
            ("supplier.tax_number", Some(s)) => {
                written.as_str().map(normalise_tax_number) == s.as_str().map(normalise_tax_number)
            }
            ("supplier.name", Some(s)) => written.as_str().map(normalise_name) == s.as_str().map(normalise_name),
            (_, Some(s)) => same_value(written, s),
            (_, None) => false,
        }
    }
}

/// The bill in QuickBooks Online (Intuit's development companies have an app of their own); it
/// opens in the company the person is signed in to. Only a numeric `Id` makes a link.
fn bill_link(api_base: &str, id: &str) -> Option<RecordLink> {
    let id = id.parse::<u64>().ok()?;
    let app = if api_base.contains("sandbox-quickbooks.api.intuit.com") {
        "https://app.sandbox.qbo.intuit.com"
    } else {
        "https://app.qbo.intuit.com"
    };
    RecordLink::new("Bill in QuickBooks", format!("{app}/app/bill?txnId={id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_links_open_the_bill_in_quickbooks() {
        let link = bill_link("https://quickbooks.api.intuit.com", "146").unwrap();
        assert_eq!(link.url, "https://app.qbo.intuit.com/app/bill?txnId=146");
        let sandbox = bill_link("https://sandbox-quickbooks.api.intuit.com", "146").unwrap();
        assert_eq!(sandbox.url, "https://app.sandbox.qbo.intuit.com/app/bill?txnId=146");
        assert!(bill_link("https://quickbooks.api.intuit.com", "146&x").is_none());
    }

    #[tokio::test]
    async fn the_window_holds_requests_past_the_limit_until_the_oldest_leaves_it() {
        let window = MinuteWindow::new(3, Duration::from_millis(300));
        let started = Instant::now();
        for _ in 0..3 {
            window.acquire().await;
        }
        assert!(started.elapsed() < Duration::from_millis(100), "three fit at once");
        window.acquire().await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(290) && waited < Duration::from_millis(600), "{waited:?}");
    }

    #[test]
    fn reads_both_fault_shapes_and_classifies_them() {
        let upper = json!({"Fault": {"Error": [{"Message": "Stale Object Error", "Detail": "Stale Object Error : You and root were working on this at the same time.", "code": "5010", "element": ""}], "type": "ValidationFault"}});
        let fault = Fault::from_body(&upper).unwrap();
        assert_eq!((fault.code.as_str(), fault.kind.as_str()), ("5010", "ValidationFault"));
        assert!(!fault.retryable());
        let lower = json!({"fault": {"error": [{"message": "message=AuthenticationFailed", "detail": "Token expired: x", "code": "3200"}], "type": "AUTHENTICATION"}});
        let fault = Fault::from_body(&lower).unwrap();
        assert_eq!(fault.detail, "Token expired: x");
        assert_eq!(
            outcome(Err(Fault::from_body(&upper).unwrap().into_error("update bill 1", 400))),
            WriteResult::Conflict { current: None }
        );
        let throttled =
            json!({"Fault": {"Error": [{"Message": "ThrottleExceeded", "code": "003001"}], "type": "SERVICE"}});
        assert!(Fault::from_body(&throttled).unwrap().into_error("x", 429).retryable);
    }
}
