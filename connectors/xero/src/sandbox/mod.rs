//! The Xero sandbox: one organisation in memory behind Xero's own paths on one base URL, agreeing
//! with the official examples in `tests/fixtures/xero` (see `tests/fixtures_replay.rs`).
//!
//! What it reproduces, because a connector must cope with it:
//! - identity: `/identity/connect/authorize` (consents at once and redirects with a code),
//!   `/connect/token` with `authorization_code` (the PKCE `code_verifier` checked against the S256
//!   challenge), `refresh_token` (rotation: every refresh returns a new refresh token; the previous
//!   one still works for 30 minutes — Xero's grace for a lost response — and then is
//!   `invalid_grant`), `client_credentials` for the Custom Connection client; errors `400
//!   {"error":"invalid_grant"}` / `{"error":"invalid_client"}`; access tokens last 30 minutes;
//! - `/connections` (the tenant), and on `/api.xro/2.0`: `Invoices` (`where` on `Type`/`Status`,
//!   `IDs`, `Statuses`, `page`/`pageSize` with `pagination`, `If-Modified-Since`), `Invoices/{id}`,
//!   `Invoices/{id}/Attachments` and the download, `POST Invoices` (per-invoice `ValidationErrors`
//!   with `summarizeErrors=false`, a 400 `ValidationException` otherwise, `Idempotency-Key` replays),
//!   `Contacts`, `Accounts`, `TaxRates`, `Currencies`;
//! - the envelope (`Id`, `Status`, `ProviderName`, `DateTimeUTC`), .NET dates `/Date(ms+0000)/`
//!   beside `DateString`, totals computed from lines for `Exclusive`/`Inclusive` amounts;
//! - draft bills from the bills inbox (a PDF attached, nothing else filled in) beside bills without a
//!   document, approved bills and sales invoices; each document is a real PDF with its
//!   [`GroundTruth`];
//! - limits per tenant: calls a minute and a day (`X-MinLimit-Remaining`, `X-DayLimit-Remaining`,
//!   `X-AppMinLimit-Remaining` on every answer; 429 with `Retry-After` and `X-Rate-Limit-Problem:
//!   minute|day|concurrent`), 5 requests in flight;
//! - a bookkeeper editing a bill ([`XeroSandbox::edit_as_bookkeeper`]).
//!
//! The clock is real time plus an offset that tests move with [`XeroSandbox::advance`].

mod http;
mod pdf;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

pub use pdf::{GroundTruth, LAYOUTS, NEW_SUPPLIER, SUPPLIERS, Supplier, TRUTH_KEY, TruthLine, invoice_pdf, truth};

/// The OAuth2 client (authorisation code + PKCE) the sandbox knows.
pub const CLIENT_ID: &str = "SANDBOXCLIENTID00000000000000000";
pub const CLIENT_SECRET: &str = "sandbox-client-secret-0000000000000000000000000";
/// The Custom Connection client (client credentials grant).
pub const CUSTOM_CLIENT_ID: &str = "SANDBOXCUSTOMCONNECTION000000000";
pub const CUSTOM_CLIENT_SECRET: &str = "sandbox-custom-secret-000000000000000000000000";
/// The organisation's `tenantId`.
pub const TENANT_ID: &str = "fe79f7dd-b6d4-4a92-ba7b-538af6289c58";
pub const TENANT_NAME: &str = "Sandbox Trading Ltd";
/// Seconds an access token lives, and the grace of a rotated refresh token.
pub const ACCESS_TOKEN_SECS: i64 = 1800;
pub const GRACE_SECS: i64 = 1800;

/// A line of a bill as Xero keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub id: String,
    pub description: String,
    pub quantity: f64,
    pub unit_amount: f64,
    pub tax_type: String,
    pub tax_amount: f64,
    pub line_amount: f64,
    pub account_code: Option<String>,
}

/// An invoice (a bill when `kind` is `ACCPAY`).
#[derive(Debug, Clone, PartialEq)]
pub struct Bill {
    pub id: String,
    /// `ACCPAY` or `ACCREC`.
    pub kind: String,
    /// `DRAFT`, `AUTHORISED`, ...
    pub status: String,
    pub contact_id: Option<String>,
    pub invoice_number: String,
    pub reference: String,
    pub date: Option<String>,
    pub due_date: Option<String>,
    pub currency: String,
    pub line_amount_types: String,
    pub lines: Vec<Line>,
    pub sub_total: f64,
    pub total_tax: f64,
    pub total: f64,
    /// Milliseconds since the epoch.
    pub updated_ms: i64,
    pub attachment: Option<Attachment>,
    /// What the attached document says.
    pub truth: Option<GroundTruth>,
    /// The bill whose document this one's repeats (the same supplier invoice forwarded twice).
    pub duplicate_of: Option<String>,
    /// Notes in the bill's history (`PUT /Invoices/{id}/History`), oldest first.
    pub history: Vec<String>,
}

/// A file attached to a bill.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub id: String,
    pub file_name: String,
    pub mime_type: String,
    pub bytes: Vec<u8>,
}

/// A contact (supplier).
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub id: String,
    pub name: String,
    pub tax_number: String,
}

/// A write as the sandbox received it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedWrite {
    pub idempotency_key: Option<String>,
    pub summarize_errors: bool,
    pub body: serde_json::Value,
    /// Answered from the idempotency cache, nothing applied.
    pub replayed: bool,
}

/// What the sandbox has been asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests to `/api.xro/2.0` and `/connections` (what the limits count).
    pub api_requests: u64,
    pub token_requests: u64,
    pub refreshes: u64,
    /// Refreshes answered with a refresh token already rotated, within the grace.
    pub grace_refreshes: u64,
    pub invalid_grants: u64,
    pub rate_limited: u64,
    /// `POST Invoices` calls and bills written by them.
    pub writes: u64,
    pub bills_written: u64,
    /// Most requests in flight at once.
    pub max_in_flight: u64,
}

/// Faults and limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub per_minute: u32,
    pub per_day: u32,
    pub concurrent: u32,
    /// Milliseconds each API request takes.
    pub latency_ms: u64,
    /// Refreshes whose answer is lost (a 504 after the token rotated).
    pub lose_refresh_responses: u32,
    /// The next API requests answered `503` (counted down; nothing applied).
    pub fail_next: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { per_minute: 60, per_day: 5000, concurrent: 5, latency_ms: 0, lose_refresh_responses: 0, fail_next: 0 }
    }
}

#[derive(Debug, Default)]
struct RefreshState {
    rotated_at: Option<i64>,
    successor: Option<String>,
    revoked: bool,
}

#[derive(Debug)]
struct AccessState {
    expires_at: i64,
    uses: u64,
    custom: bool,
}

#[derive(Debug, Default)]
struct State {
    bills: Vec<Bill>,
    contacts: Vec<Contact>,
    codes: HashMap<String, String>,
    refresh: HashMap<String, RefreshState>,
    access: HashMap<String, AccessState>,
    counters: Counters,
    limits: Limits,
    offset_secs: i64,
    minute: (i64, u32),
    day: (i64, u32),
    in_flight: u32,
    writes: Vec<ReceivedWrite>,
    /// Bodies of `PUT /Invoices/{id}/History`, oldest first.
    history_writes: Vec<serde_json::Value>,
    idempotent: HashMap<String, serde_json::Value>,
    last_update_ms: i64,
    serial: u64,
}

impl State {
    fn now(&self) -> i64 {
        chrono::Utc::now().timestamp() + self.offset_secs
    }

    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis() + self.offset_secs * 1000
    }

    /// A fresh `UpdatedDateUTC`, strictly later than every earlier one.
    fn stamp(&mut self) -> i64 {
        let t = self.now_ms().max(self.last_update_ms + 1);
        self.last_update_ms = t;
        t
    }

    fn uuid(&mut self, kind: u16) -> String {
        self.serial += 1;
        format!("{:08x}-{kind:04x}-4{:03x}-8000-{:012x}", 0x5a4d_0000u32, self.serial % 0xfff, self.serial)
    }

    fn token(&mut self, prefix: &str) -> String {
        use rand::Rng;
        let n: u128 = rand::rng().random();
        self.serial += 1;
        format!("{prefix}{n:032x}{:x}", self.serial)
    }
}

/// A Xero organisation in memory; clones share it.
#[derive(Clone, Default)]
pub struct XeroSandbox {
    state: Arc<Mutex<State>>,
}

/// The accounts the organisation has (code, name, type).
pub const ACCOUNTS: [(&str, &str, &str); 7] = [
    ("200", "Sales", "REVENUE"),
    ("300", "Purchases", "DIRECTCOSTS"),
    ("400", "Advertising", "EXPENSE"),
    ("429", "General Expenses", "EXPENSE"),
    ("453", "Office Expenses", "EXPENSE"),
    ("489", "Telephone & Internet", "EXPENSE"),
    ("090", "Business Bank Account", "BANK"),
];
/// The tax rates (TaxType, name, percent).
pub const TAX_RATES: [(&str, &str, f64); 5] = [
    ("INPUT2", "20% (VAT on Expenses)", 20.0),
    ("RRINPUT", "5% (VAT on Expenses)", 5.0),
    ("ZERORATEDINPUT", "Zero Rated Expenses", 0.0),
    ("OUTPUT2", "20% (VAT on Income)", 20.0),
    ("NONE", "No VAT", 0.0),
];
/// The organisation's currencies (GBP is the base currency).
pub const CURRENCIES: [&str; 3] = ["GBP", "EUR", "USD"];

/// Starts a sandbox with `bills` bills on `addr`; returns it and the address it listens on.
pub async fn start(addr: SocketAddr, bills: usize) -> std::io::Result<(XeroSandbox, SocketAddr)> {
    let sandbox = XeroSandbox::new(bills, 7);
    let bound = sandbox.start(addr).await?;
    Ok((sandbox, bound))
}

impl XeroSandbox {
    /// An organisation with contacts for the suppliers of [`SUPPLIERS`] but [`NEW_SUPPLIER`] (one
    /// contact spelt differently from its documents, found by its tax number; one without a tax
    /// number, found by name) and `bills` invoices from `seed`: of every ten, seven are inbox DRAFT
    /// bills with a PDF and nothing filled in (the candidates), one a DRAFT bill without a document,
    /// one an AUTHORISED bill with its PDF, lines and account codes (what account suggestions learn
    /// from) and one a DRAFT sales invoice. Among the documents: three layouts, GBP/EUR/USD/NOK (NOK
    /// not enabled in the organisation), tax-inclusive and exclusive amounts, credit notes (every
    /// 9th), two-page PDFs (every 11th), image-only scans (every 13th), and every 20th draft a
    /// duplicate of an approved bill ([`Bill::duplicate_of`]: same supplier and number).
    pub fn new(bills: usize, seed: u64) -> XeroSandbox {
        let mut s = State::default();
        for (n, supplier) in SUPPLIERS.iter().enumerate() {
            if n == NEW_SUPPLIER {
                continue;
            }
            let id = s.uuid(0xc000 + n as u16);
            let name = match supplier.name {
                // The bookkeeper typed it differently; only the tax number matches.
                "Northwind Paper Ltd" => "Northwind Paper Limited".to_owned(),
                other => other.to_owned(),
            };
            // One contact without a tax number: found by name.
            let tax_number = if supplier.name == "Hudson Cloud Inc" {
                String::new()
            } else {
                supplier.tax_number.unwrap_or("").to_owned()
            };
            s.contacts.push(Contact { id, name, tax_number });
        }
        let base = s.now_ms() - 86_400_000;
        for n in 0..bills {
            let t = truth(seed, n);
            let id = s.uuid(0xb111);
            let mut bill = Bill {
                id,
                kind: "ACCPAY".into(),
                status: "DRAFT".into(),
                contact_id: None,
                invoice_number: String::new(),
                reference: String::new(),
                date: None,
                due_date: None,
                currency: "GBP".into(),
                line_amount_types: "Exclusive".into(),
                lines: Vec::new(),
                sub_total: 0.0,
                total_tax: 0.0,
                total: 0.0,
                updated_ms: base + n as i64 * 1000,
                attachment: None,
                truth: None,
                duplicate_of: None,
                history: Vec::new(),
            };
            // Every twentieth inbox draft repeats the document of the approved bill seven before it.
            let t = if n % 20 == 15 {
                bill.duplicate_of = s.bills.get(n - 7).map(|b| b.id.clone());
                truth(seed, n - 7)
            } else {
                t
            };
            let attach = |s: &mut State, bill: &mut Bill, t: &GroundTruth| {
                let aid = s.uuid(0xa77a);
                bill.attachment = Some(Attachment {
                    id: aid,
                    file_name: format!("{}.pdf", t.invoice_number),
                    mime_type: "application/pdf".into(),
                    bytes: invoice_pdf(t),
                });
            };
            match n % 10 {
                7 => {}
                8 => {
                    attach(&mut s, &mut bill, &t);
                    bill.status = "AUTHORISED".into();
                    fill_from_truth(&mut s, &mut bill, &t);
                }
                9 => {
                    attach(&mut s, &mut bill, &t);
                    bill.kind = "ACCREC".into();
                }
                _ => attach(&mut s, &mut bill, &t),
            }
            bill.truth = Some(t);
            s.bills.push(bill);
        }
        s.last_update_ms = base + bills as i64 * 1000;
        XeroSandbox { state: Arc::new(Mutex::new(s)) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves the sandbox on `addr` (port 0 picks one); returns the bound address.
    pub async fn start(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let app = http::router(self.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(bound)
    }

    /// Every invoice as it is now.
    pub fn bills(&self) -> Vec<Bill> {
        self.lock().bills.clone()
    }

    /// One invoice.
    pub fn bill(&self, id: &str) -> Option<Bill> {
        self.lock().bills.iter().find(|b| b.id == id).cloned()
    }

    /// The ids of the DRAFT bills with a document (what the connector must list).
    pub fn candidates(&self) -> Vec<String> {
        self.lock()
            .bills
            .iter()
            .filter(|b| b.kind == "ACCPAY" && b.status == "DRAFT" && b.attachment.is_some())
            .map(|b| b.id.clone())
            .collect()
    }

    /// What bill `id`'s document says, as the invoice task's answer (the JSON its PDF carries as
    /// `EnrichdTruth`).
    pub fn truth(&self, id: &str) -> Option<serde_json::Value> {
        self.printed(id).map(|t| t.answer())
    }

    /// What bill `id`'s document says, with how it was drawn and booked.
    pub fn printed(&self, id: &str) -> Option<GroundTruth> {
        self.bill(id).and_then(|b| b.truth)
    }

    /// What `enrichd sandbox xero` prints: the base URL, then `client id:`, `client secret:` and the
    /// organisation on lines of their own, and the connection to put in the config.
    pub fn banner(&self, addr: SocketAddr) -> String {
        let bills = self.lock().bills.len();
        let candidates = self.candidates().len();
        format!(
            "Xero sandbox ({TENANT_NAME}) with {bills} invoices, {candidates} draft bills with a document, at http://{addr}\n\
             client id: {CLIENT_ID}\n\
             client secret: {CLIENT_SECRET}\n\
             tenant id: {TENANT_ID}\n\
             custom connection client id: {CUSTOM_CLIENT_ID}\n\
             custom connection client secret: {CUSTOM_CLIENT_SECRET}\n\
             \n\
             [connections.books]\n\
             kind = \"xero\"\n\
             base_url = \"http://{addr}\"\n\
             client_id = \"${{XERO_CLIENT_ID}}\"\n\
             client_secret = \"${{XERO_CLIENT_SECRET}}\"\n"
        )
    }

    /// The organisation's contacts.
    pub fn contacts(&self) -> Vec<Contact> {
        self.lock().contacts.clone()
    }

    /// A bookkeeper changes bill `id` in Xero: `edit` runs on it and `UpdatedDateUTC` moves on.
    pub fn edit_as_bookkeeper(&self, id: &str, edit: impl FnOnce(&mut Bill)) -> bool {
        let mut s = self.lock();
        let stamp = s.stamp();
        let Some(bill) = s.bills.iter_mut().find(|b| b.id == id) else { return false };
        edit(bill);
        recompute(bill);
        bill.updated_ms = stamp;
        true
    }

    pub fn counters(&self) -> Counters {
        self.lock().counters.clone()
    }

    /// Every `POST Invoices` received, oldest first.
    pub fn writes(&self) -> Vec<ReceivedWrite> {
        self.lock().writes.clone()
    }

    /// Every `PUT /Invoices/{id}/History` body received, oldest first.
    pub fn history_writes(&self) -> Vec<serde_json::Value> {
        self.lock().history_writes.clone()
    }

    pub fn set_limits(&self, limits: Limits) {
        self.lock().limits = limits;
    }

    pub fn limits(&self) -> Limits {
        self.lock().limits.clone()
    }

    /// Moves the sandbox clock on (token expiry, grace, minute and day windows).
    pub fn advance(&self, secs: i64) {
        self.lock().offset_secs += secs;
    }

    /// Tokens as if a person had just authorised the app (what `enrichd connect` ends with):
    /// `(access_token, refresh_token, expires_in)`.
    pub fn authorise(&self) -> (String, String, i64) {
        let mut s = self.lock();
        mint(&mut s, false)
    }

    /// How many API requests used `access_token`.
    pub fn uses_of(&self, access_token: &str) -> u64 {
        self.lock().access.get(access_token).map_or(0, |a| a.uses)
    }

    /// Whether `refresh_token` would be accepted now (not rotated, or within the grace).
    pub fn refresh_token_alive(&self, refresh_token: &str) -> bool {
        let s = self.lock();
        let now = s.now();
        s.refresh.get(refresh_token).is_some_and(|r| !r.revoked && r.rotated_at.is_none_or(|at| now - at <= GRACE_SECS))
    }
}

/// A new token pair; the access token expires after [`ACCESS_TOKEN_SECS`] on the sandbox clock.
fn mint(s: &mut State, custom: bool) -> (String, String, i64) {
    let access = s.token("sbx_at_");
    let refresh = s.token("sbx_rt_");
    let expires_at = s.now() + ACCESS_TOKEN_SECS;
    s.access.insert(access.clone(), AccessState { expires_at, uses: 0, custom });
    if !custom {
        s.refresh.insert(refresh.clone(), RefreshState::default());
    }
    (access, refresh, ACCESS_TOKEN_SECS)
}

fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn tax_rate(tax_type: &str) -> Option<f64> {
    TAX_RATES.iter().find(|t| t.0 == tax_type).map(|t| t.2 / 100.0)
}

/// Totals from the lines, as Xero computes them.
fn recompute(bill: &mut Bill) {
    let inclusive = bill.line_amount_types == "Inclusive";
    let amounts: f64 = bill.lines.iter().map(|l| l.line_amount).sum();
    bill.total_tax = r2(bill.lines.iter().map(|l| l.tax_amount).sum());
    if inclusive {
        bill.total = r2(amounts);
        bill.sub_total = r2(amounts - bill.total_tax);
    } else {
        bill.sub_total = r2(amounts);
        bill.total = r2(amounts + bill.total_tax);
    }
}

fn fill_from_truth(s: &mut State, bill: &mut Bill, t: &GroundTruth) {
    let tax_number = t.supplier_tax_number.as_deref().unwrap_or("-");
    bill.contact_id =
        s.contacts.iter().find(|c| c.tax_number == tax_number || c.name == t.supplier_name).map(|c| c.id.clone());
    bill.invoice_number = t.invoice_number.clone();
    bill.date = Some(t.issue_date.clone());
    bill.due_date = Some(t.due_date.clone());
    bill.currency = t.currency.clone();
    bill.line_amount_types = if t.amounts_are == "inclusive" { "Inclusive" } else { "Exclusive" }.to_owned();
    bill.lines = t
        .line_items
        .iter()
        .map(|l| Line {
            id: s.uuid(0x11e0),
            description: l.description.clone(),
            quantity: l.quantity,
            unit_amount: l.unit_price,
            tax_type: l.tax_type.clone(),
            tax_amount: l.tax_amount,
            line_amount: l.line_amount,
            account_code: Some(l.account_code.clone()),
        })
        .collect();
    recompute(bill);
}
