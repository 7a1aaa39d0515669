//! The QuickBooks Online sandbox: one company in memory behind the Accounting API v3 paths enrichd
//! uses (`/v3/company/{realm}/…`) and Intuit's OAuth2 token endpoint, on one base URL, agreeing with
//! the recorded responses in `tests/fixtures/quickbooks` (see `tests/fixtures_replay.rs`).
//!
//! What it reproduces, because a connector must cope with it:
//! - an authorisation page that approves at once and redirects with `code`, `state` and `realmId`
//!   (codes single-use, PKCE `S256` checked when a challenge was sent);
//! - bearer tokens, refused with the 401's lower-case `fault.error[]` shape; a token endpoint with
//!   `authorization_code` and rotating `refresh_token` grants (a used refresh token is `invalid_grant`);
//! - the query language (`SELECT * | COUNT(*) FROM … WHERE a = 'x' AND b IN (…) AND c > '…'
//!   ORDERBY … STARTPOSITION n MAXRESULTS n`; no `OR`; `{"QueryResponse":{}}` when nothing matches;
//!   `maxResults` = rows returned, no total, no next link; parser errors as 400 Fault 4000/4001);
//! - bills with `SyncToken` (a string that increments), sparse updates checked against it (a stale
//!   one is a 400 `ValidationFault` 5010), `POST /batch` (≤ 30 items, per-`bId` entity or `Fault`);
//! - Attachables linked to bills whose files are real PDFs generated here ([`pdf`]), each bill with
//!   its ground truth ([`Truth`]), downloaded through `/download/{id}` (a presigned link as text);
//! - a bookkeeper editing a bill ([`QuickBooksSandbox::edit_as_bookkeeper`]);
//! - 429 throttling (with or without `Retry-After`), Faults inside HTTP 200, more than 10
//!   concurrent requests refused, and counters of everything ([`Stats`]).

mod http;
pub mod pdf;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

pub use pdf::{Layout, TRUTH_KEY};

/// The app's OAuth2 client id.
pub const CLIENT_ID: &str = "ABsandboxClientId0000000000000000000000000000000000";
/// The app's OAuth2 client secret.
pub const CLIENT_SECRET: &str = "sandbox_client_secret_0000000000000000";
/// The company's realm id.
pub const REALM_ID: &str = "9130347596823412";
/// An access token the sandbox always accepts (printed by `enrichd sandbox quickbooks`).
pub const ACCESS_TOKEN: &str = "sandbox_access_token_ready_0000000000000000";
/// The first refresh token of the chain (it rotates on every refresh).
pub const REFRESH_TOKEN: &str = "sandbox_refresh_token_0000000000000000";
/// The authorisation code the token endpoint exchanges (as if the user had approved the app).
pub const AUTH_CODE: &str = "sandbox_authorization_code";
/// The authorisation page's path (it approves at once, as if the user had clicked "Connect").
pub const AUTHORIZE_PATH: &str = crate::AUTHORIZE_PATH;
/// The token endpoint's path.
pub const TOKEN_PATH: &str = crate::TOKEN_PATH;
/// The minor version the sandbox expects on every API call.
pub const MINOR_VERSION: &str = "75";

/// One line of a bill as printed on its document.
#[derive(Debug, Clone, PartialEq)]
pub struct TruthLine {
    pub description: String,
    pub quantity: u32,
    pub unit_price: f64,
    /// The line's amount as printed (quantity × unit price; tax included when the document's
    /// amounts are).
    pub amount: f64,
    /// This line's tax, as printed.
    pub tax: f64,
    /// The account a bookkeeper books it to (by name; not printed).
    pub account: String,
}

/// What a bill's document says: the answers an extraction should give. [`Truth::answer`] is the
/// same in the invoice task's answer shape, as the PDF carries it (`EnrichdTruth`).
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    pub bill_id: String,
    pub vendor: String,
    /// The vendor's tax number as printed; `None` when the document prints none.
    pub vendor_tax_number: Option<String>,
    pub vendor_address: String,
    /// Bank details as printed.
    pub payment_details: String,
    /// `exclusive` or `inclusive` (of tax).
    pub amounts_are: String,
    pub doc_number: String,
    pub txn_date: String,
    pub due_date: String,
    pub currency: String,
    pub lines: Vec<TruthLine>,
    pub tax_rate_percent: f64,
    pub subtotal: f64,
    pub tax: f64,
    pub total: f64,
    pub credit_note: bool,
    pub layout: Layout,
    pub pages: u32,
    /// Whether the PDF has a text layer (a [`Layout::Scan`] has none: only a picture of the page).
    pub text_layer: bool,
    /// The bill whose document this one repeats (the supplier sent the same invoice twice).
    pub duplicate_of: Option<String>,
}

impl Truth {
    /// The invoice task's answer a perfect reader gives for this document (`account_code` null,
    /// no `confidence`).
    pub fn answer(&self) -> Value {
        json!({
            "supplier_name": self.vendor,
            "supplier_tax_number": self.vendor_tax_number,
            "supplier_address": self.vendor_address,
            "invoice_number": self.doc_number,
            "issue_date": self.txn_date,
            "due_date": self.due_date,
            "currency": self.currency,
            "amounts_are": self.amounts_are,
            "line_items": self.lines.iter().map(|l| json!({
                "description": l.description, "quantity": l.quantity, "unit_price": l.unit_price,
                "tax_rate": self.tax_rate_percent, "tax_amount": l.tax, "line_amount": l.amount,
                "account_code": null,
            })).collect::<Vec<_>>(),
            "subtotal": self.subtotal,
            "total_tax": self.tax,
            "total": self.total,
            "payment_details": self.payment_details,
            "document_type": if self.credit_note { "credit_note" } else { "invoice" },
        })
    }
}

/// Faults injected into API requests.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// The next this many API requests are answered 429 (`ThrottleExceeded`).
    pub throttled_requests: u32,
    /// The `Retry-After` seconds of those 429s; none sent when `None` (as QuickBooks usually does).
    pub retry_after_secs: Option<u64>,
    /// The next this many API requests are answered HTTP 200 with a `Fault` body (SystemFault 10000).
    pub faults_in_200: u32,
    /// Requests per minute before 429s; `None` (the default) does not enforce Intuit's 500.
    pub per_minute: Option<u32>,
    /// Milliseconds every API request takes (to see concurrency).
    pub latency_ms: u64,
    /// Share of bills (0.0..=1.0), drawn from the sandbox's seeded generator, that a bookkeeper
    /// edits right after a query returned them (each bill at most once), so a write based on that
    /// read carries a stale `SyncToken`: a bookkeeper working while a run is under way.
    pub bookkeeper_edit_rate: f64,
}

/// Request counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// API requests (under `/v3`), whatever their answer.
    pub requests: u64,
    /// API requests without `minorversion=75`.
    pub without_minor_version: u64,
    pub queries: u64,
    pub bill_updates: u64,
    pub batches: u64,
    pub batch_items: u64,
    pub downloads: u64,
    pub files: u64,
    pub token_requests: u64,
    pub invalid_grants: u64,
    pub unauthorized: u64,
    pub throttled: u64,
    pub stale: u64,
    /// The most API requests in flight at once.
    pub max_in_flight: u64,
}

/// A request as the sandbox received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub method: String,
    /// The path without the query.
    pub path: String,
    pub query: String,
    /// The bearer token used (empty when none).
    pub token: String,
    pub body: Value,
}

pub(crate) struct State {
    pub bills: BTreeMap<u64, Value>,
    pub vendors: Vec<Value>,
    pub accounts: Vec<Value>,
    pub tax_codes: Vec<Value>,
    pub tax_rates: Vec<Value>,
    pub preferences: Value,
    pub company_currencies: Vec<Value>,
    pub attachables: BTreeMap<u64, Value>,
    pub files: HashMap<u64, Vec<u8>>,
    pub truth: BTreeMap<u64, Truth>,
    pub access_tokens: HashSet<String>,
    pub refresh_tokens: HashSet<String>,
    pub refused_writes: HashSet<u64>,
    /// Authorisation codes issued and not yet exchanged: code → (redirect_uri, PKCE S256 challenge).
    pub codes: HashMap<String, (String, Option<String>)>,
    pub faults: Faults,
    pub stats: Stats,
    pub received: Vec<Received>,
    pub in_flight: u64,
    pub minute: (std::time::Instant, u32),
    /// The company's clock (epoch seconds); every change moves it on.
    pub now: i64,
    pub issued: u64,
    pub rng: ChaCha8Rng,
    /// Bills the bookkeeper edited through [`Faults::bookkeeper_edit_rate`], in order.
    pub edited: Vec<String>,
}

/// The company's clock start: 2026-01-05T09:00:00-08:00.
pub const START: i64 = 1_767_632_400;

/// Local time with the company's offset, as QuickBooks writes `MetaData` times.
pub(crate) fn local_time(epoch: i64) -> String {
    let offset = chrono::FixedOffset::west_opt(8 * 3600).expect("valid offset");
    chrono::DateTime::from_timestamp(epoch, 0).expect("in range").with_timezone(&offset).to_rfc3339()
}

/// A company in memory; cheap to clone (shared state).
#[derive(Clone)]
pub struct QuickBooksSandbox {
    state: Arc<Mutex<State>>,
}

pub(crate) const VENDORS: [&str; 8] = [
    "Brightline Office Supply",
    "Northwind Paper Co.",
    "Harbor Freight & Logistics",
    "Kestrel IT Services Ltd",
    "Lumen Electric Utility",
    "Maple Street Catering",
    "Orbit Cloud Hosting GmbH",
    "Redwood Legal LLP",
];
/// Each vendor's tax number as its documents print it, and whether the company recorded it on the
/// vendor (`TaxIdentifier`); Maple Street prints none.
const VENDOR_TAX_NUMBERS: [(Option<&str>, bool); 8] = [
    (Some("12-3456789"), true),
    (Some("GB 123 4567 89"), true),
    (Some("98-7654321"), true),
    (Some("GB 987 6543 21"), true),
    (Some("45-6789012"), false),
    (None, false),
    (Some("DE 811 907 980"), true),
    (Some("GB 555 0102 03"), true),
];
const VENDOR_ADDRESSES: [&str; 8] = [
    "120 Market Street, San Francisco, CA 94105",
    "4 Mill Lane, Leeds LS1 4AB, UK",
    "88 Dock Road, Oakland, CA 94607",
    "Unit 3, Kestrel Court, Reading RG1 1AA, UK",
    "PO Box 4410, Sacramento, CA 95812",
    "17 Maple Street, Portland, OR 97205",
    "Rechenzentrum 5, 10115 Berlin, Germany",
    "9 Chancery Lane, London WC2A 1LS, UK",
];
/// A supplier whose documents arrive before the company has a vendor for it: its bills carry
/// the placeholder vendor [`PLACEHOLDER_VENDOR`] until a person sets the real one.
pub const NEW_SUPPLIER: &str = "Fjord Design AS";
pub const PLACEHOLDER_VENDOR: &str = "Supplier to be confirmed";
pub(crate) const ACCOUNTS: [&str; 6] = [
    "Office Expenses",
    "Shipping and Delivery",
    "Utilities",
    "Computer and Internet",
    "Meals",
    "Legal & Professional Fees",
];
/// Account numbers (`AcctNum`) of [`ACCOUNTS`], then of the uncategorised account.
pub const ACCOUNT_NUMBERS: [&str; 7] = ["6100", "6110", "6120", "6130", "6140", "6150", "6999"];
pub const UNCATEGORIZED: &str = "Uncategorized Expense";
/// The company's currencies: the home currency first (multi-currency is on).
pub const CURRENCIES: [&str; 4] = ["USD", "EUR", "GBP", "CAD"];
/// The purchase tax codes: Id, name, percent.
pub const TAX_CODES: [(&str, &str, f64); 4] =
    [("2", "20.0% S", 20.0), ("3", "10.0% T", 10.0), ("4", "5.0% R", 5.0), ("5", "0.0% Z", 0.0)];
const ITEMS: [&str; 10] = [
    "A4 copier paper, 5 reams",
    "Toner cartridge TN-2420",
    "Pallet freight, zone 3",
    "Managed backup, monthly",
    "Electricity, December",
    "Team lunch, 12 people",
    "Cloud VM hours",
    "Contract review",
    "Desk chairs",
    "Courier, same day",
];

impl QuickBooksSandbox {
    /// A company with `bills` generated bills (about a quarter already complete), seeded.
    pub fn new(bills: u64, seed: u64) -> QuickBooksSandbox {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut vendors: Vec<Value> = VENDORS
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut v = json!({"Id": (56 + i).to_string(), "DisplayName": n, "SyncToken": "0", "Active": true, "domain": "QBO", "sparse": false, "Balance": 0});
                if let (Some(tax), true) = VENDOR_TAX_NUMBERS[i] {
                    v["TaxIdentifier"] = json!(tax);
                }
                v
            })
            .collect();
        vendors.push(json!({"Id": "99", "DisplayName": PLACEHOLDER_VENDOR, "SyncToken": "0", "Active": true, "domain": "QBO", "sparse": false, "Balance": 0}));
        let mut accounts: Vec<Value> = ACCOUNTS
            .iter()
            .chain([UNCATEGORIZED].iter())
            .enumerate()
            .map(|(i, n)| json!({"Id": (7 + i).to_string(), "Name": n, "AcctNum": ACCOUNT_NUMBERS[i], "AccountType": "Expense", "Active": true, "SyncToken": "0", "domain": "QBO", "sparse": false}))
            .collect();
        accounts.push(json!({"Id": "33", "Name": "Accounts Payable (A/P)", "AccountType": "Accounts Payable", "Active": true, "SyncToken": "0", "domain": "QBO", "sparse": false}));
        let tax_rates: Vec<Value> = TAX_CODES
            .iter()
            .map(|(id, name, rate)| json!({"Id": format!("1{id}"), "Name": format!("{name} purchases"), "RateValue": rate, "Active": true, "SyncToken": "0", "domain": "QBO", "sparse": false}))
            .collect();
        let mut tax_codes: Vec<Value> = TAX_CODES
            .iter()
            .map(|(id, name, _)| json!({
                "Id": id, "Name": name, "Description": name, "Taxable": true, "Active": true, "Hidden": false,
                "SyncToken": "0", "domain": "QBO", "sparse": false,
                "PurchaseTaxRateList": {"TaxRateDetail": [{"TaxRateRef": {"value": format!("1{id}"), "name": format!("{name} purchases")}, "TaxTypeApplicable": "TaxOnAmount", "TaxOrder": 0}]},
                "SalesTaxRateList": {"TaxRateDetail": []},
            }))
            .collect();
        tax_codes.push(json!({"Id": "6", "Name": "NON", "Description": "Not taxable", "Taxable": false, "Active": true, "Hidden": false, "SyncToken": "0", "domain": "QBO", "sparse": false, "PurchaseTaxRateList": {"TaxRateDetail": []}, "SalesTaxRateList": {"TaxRateDetail": []}}));
        let preferences = json!({
            "Id": "1", "SyncToken": "0", "domain": "QBO", "sparse": false,
            "CurrencyPrefs": {"MultiCurrencyEnabled": true, "HomeCurrency": {"value": CURRENCIES[0]}},
        });
        let company_currencies: Vec<Value> = CURRENCIES[1..]
            .iter()
            .enumerate()
            .map(|(i, c)| json!({"Id": (i + 1).to_string(), "Code": c, "Name": c, "Active": true, "SyncToken": "0", "domain": "QBO", "sparse": false}))
            .collect();
        let mut state = State {
            bills: BTreeMap::new(),
            vendors,
            accounts,
            tax_codes,
            tax_rates,
            preferences,
            company_currencies,
            attachables: BTreeMap::new(),
            files: HashMap::new(),
            truth: BTreeMap::new(),
            access_tokens: [ACCESS_TOKEN.to_owned()].into_iter().collect(),
            refresh_tokens: [REFRESH_TOKEN.to_owned()].into_iter().collect(),
            refused_writes: HashSet::new(),
            codes: HashMap::new(),
            faults: Faults::default(),
            stats: Stats::default(),
            received: Vec::new(),
            in_flight: 0,
            minute: (std::time::Instant::now(), 0),
            now: START,
            issued: 0,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x00b0_0c4e),
            edited: Vec::new(),
        };
        let layouts = [Layout::Classic, Layout::Modern, Layout::Compact];
        let mut previous: Option<(usize, Truth)> = None;
        for i in 0..bills {
            let id = 145 + i;
            let mut vendor_index = rng.random_range(0..VENDORS.len());
            let currency = CURRENCIES[rng.random_range(0..CURRENCIES.len())];
            let day = rng.random_range(0..60);
            let txn = chrono::NaiveDate::from_ymd_opt(2025, 11, 1).expect("valid") + chrono::Days::new(day);
            let due = txn + chrono::Days::new([14, 30, 45][rng.random_range(0..3)]);
            let n_lines = rng.random_range(1..=6);
            let mut lines: Vec<TruthLine> = (0..n_lines)
                .map(|_| {
                    let quantity = rng.random_range(1..=12);
                    let unit_price = f64::from(rng.random_range(250..=48_000)) / 100.0;
                    TruthLine {
                        description: ITEMS[rng.random_range(0..ITEMS.len())].to_owned(),
                        quantity,
                        unit_price,
                        amount: round2(f64::from(quantity) * unit_price),
                        tax: 0.0,
                        account: ACCOUNTS[vendor_index % ACCOUNTS.len()].to_owned(),
                    }
                })
                .collect();
            let tax_rate_percent = [0.0, 5.0, 10.0, 20.0][rng.random_range(0..4)];
            // Every fifth document prints amounts including tax.
            let inclusive = i % 5 == 2;
            for l in &mut lines {
                l.tax = if inclusive {
                    round2(l.amount * tax_rate_percent / (100.0 + tax_rate_percent))
                } else {
                    round2(l.amount * tax_rate_percent / 100.0)
                };
            }
            let amounts = round2(lines.iter().map(|l| l.amount).sum());
            let tax = round2(lines.iter().map(|l| l.tax).sum());
            let (subtotal, total) =
                if inclusive { (round2(amounts - tax), amounts) } else { (amounts, round2(amounts + tax)) };
            let credit_note = i % 9 == 4;
            // Every seventeenth document is from a supplier the company has no vendor for yet.
            let stranger = i % 17 == 8;
            let layout = if i % 11 == 10 { Layout::Scan } else { layouts[(i % 3) as usize] };
            let doc_number = if credit_note { format!("CN-{}", 3000 + i) } else { format!("INV-{}", 20_000 + i * 7) };
            let (vendor, vendor_tax_number, vendor_address) = if stranger {
                (
                    NEW_SUPPLIER.to_owned(),
                    Some("NO 999 888 777 MVA".to_owned()),
                    "Storgata 5, 0155 Oslo, Norway".to_owned(),
                )
            } else {
                (
                    VENDORS[vendor_index].to_owned(),
                    VENDOR_TAX_NUMBERS[vendor_index].0.map(str::to_owned),
                    VENDOR_ADDRESSES[vendor_index].to_owned(),
                )
            };
            let mut truth = Truth {
                bill_id: id.to_string(),
                payment_details: format!(
                    "Pay to account {:08} (routing 0210000{:02})",
                    40_000_000 + vendor_index * 1_234_567,
                    vendor_index
                ),
                vendor,
                vendor_tax_number,
                vendor_address,
                amounts_are: if inclusive { "inclusive" } else { "exclusive" }.to_owned(),
                doc_number,
                txn_date: txn.to_string(),
                due_date: due.to_string(),
                currency: currency.to_owned(),
                lines,
                tax_rate_percent,
                subtotal,
                tax,
                total,
                credit_note,
                layout,
                pages: 1,
                text_layer: layout != Layout::Scan,
                duplicate_of: None,
            };
            if let Some((index, earlier)) = previous.as_ref().filter(|_| i % 13 == 12) {
                // The same invoice again, from the same supplier.
                vendor_index = *index;
                truth = Truth {
                    bill_id: id.to_string(),
                    duplicate_of: Some(earlier.bill_id.clone()),
                    layout,
                    text_layer: layout != Layout::Scan,
                    ..earlier.clone()
                };
            }
            let vendor_ref = if truth.vendor == NEW_SUPPLIER { VENDORS.len() } else { vendor_index };
            let vendor = state.vendors[vendor_ref]["DisplayName"].as_str().unwrap_or_default().to_owned();
            let currency = truth.currency.clone();
            let pdf = pdf::render(&truth);
            truth.pages = pdf.pages;
            let complete = i % 4 == 3 && vendor_ref < VENDORS.len();
            let created = START - 86_400 * 30 + i as i64 * 60;
            let vendor_ref = &state.vendors[vendor_ref];
            let mut bill = json!({
                "Id": id.to_string(),
                "SyncToken": "0",
                "domain": "QBO",
                "sparse": false,
                "VendorRef": {"value": vendor_ref["Id"], "name": vendor},
                "APAccountRef": {"value": "33", "name": "Accounts Payable (A/P)"},
                "TxnDate": truth.txn_date,
                "CurrencyRef": {"value": currency},
                "TotalAmt": truth.total,
                "Balance": truth.total,
                "MetaData": {"CreateTime": local_time(created), "LastUpdatedTime": local_time(created)},
            });
            if complete {
                let code = TAX_CODES.iter().find(|t| t.2 == truth.tax_rate_percent).map_or("6", |t| t.0);
                bill["DocNumber"] = json!(truth.doc_number);
                bill["DueDate"] = json!(truth.due_date);
                bill["PrivateNote"] = json!(truth.payment_details);
                bill["GlobalTaxCalculation"] =
                    json!(if truth.amounts_are == "inclusive" { "TaxInclusive" } else { "TaxExcluded" });
                bill["TxnTaxDetail"] = json!({"TotalTax": truth.tax});
                // Some complete bills are paid already: a duplicate of one is found whatever its state.
                if i % 8 == 3 {
                    bill["Balance"] = json!(0);
                }
                bill["Line"] = Value::Array(
                    truth
                        .lines
                        .iter()
                        .enumerate()
                        .map(|(n, l)| expense_line(n, &l.description, l.amount, &state.accounts, &l.account, code))
                        .collect(),
                );
            } else {
                // What a forwarded document leaves: the vendor, the date, one uncategorised line.
                bill["Line"] = json!([expense_line(0, "", truth.total, &state.accounts, UNCATEGORIZED, "6")]);
            }
            state.bills.insert(id, bill);
            let attachable_id = 5_000_000_000_000_500_000 + i;
            let file_name = format!("{}.pdf", truth.doc_number);
            state.attachables.insert(
                attachable_id,
                json!({
                    "Id": attachable_id.to_string(),
                    "SyncToken": "0",
                    "domain": "QBO",
                    "sparse": false,
                    "FileName": file_name,
                    "ContentType": "application/pdf",
                    "Size": pdf.bytes.len(),
                    "AttachableRef": [{"EntityRef": {"type": "Bill", "value": id.to_string()}, "IncludeOnSend": false}],
                    "MetaData": {"CreateTime": local_time(created), "LastUpdatedTime": local_time(created)},
                }),
            );
            state.files.insert(attachable_id, pdf.bytes);
            previous = Some((vendor_index, truth.clone()));
            state.truth.insert(id, truth);
        }
        QuickBooksSandbox { state: Arc::new(Mutex::new(state)) }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves the company on `addr` (port 0 picks one) and returns the address bound.
    pub async fn start(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let router = http::router(self.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "quickbooks sandbox stopped");
            }
        });
        Ok(bound)
    }

    /// What `enrichd sandbox quickbooks` prints: the base URL, then the credentials each on a line
    /// of its own (`client id:`, `client secret:`, `realm:`, `access token:`), and the config to use.
    pub fn banner(&self, addr: SocketAddr) -> String {
        let bills = self.lock().bills.len();
        format!(
            "QuickBooks Online sandbox with {bills} bills at http://{addr}\n\
             client id: {CLIENT_ID}\n\
             client secret: {CLIENT_SECRET}\n\
             realm: {REALM_ID}\n\
             access token: {ACCESS_TOKEN}\n\
             refresh token: {REFRESH_TOKEN}\n\
             \n\
             [connections.books]\n\
             kind = \"quickbooks\"\n\
             base_url = \"http://{addr}\"\n\
             realm_id = \"{REALM_ID}\"\n\
             client_id = \"${{QBO_CLIENT_ID}}\"\n\
             client_secret = \"${{QBO_CLIENT_SECRET}}\"\n"
        )
    }

    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// Every API and token request received, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// A bill as the API shows it.
    pub fn bill(&self, id: &str) -> Option<Value> {
        self.lock().bills.get(&id.parse().ok()?).cloned()
    }

    /// The ids of every bill.
    pub fn bill_ids(&self) -> Vec<String> {
        self.lock().bills.keys().map(u64::to_string).collect()
    }

    /// What a bill's document says, as the invoice task's answer (the JSON its PDF carries as
    /// `EnrichdTruth`).
    pub fn truth(&self, id: &str) -> Option<Value> {
        self.printed(id).map(|t| t.answer())
    }

    /// What a bill's document says, with how it was drawn and booked.
    pub fn printed(&self, id: &str) -> Option<Truth> {
        self.lock().truth.get(&id.parse().ok()?).cloned()
    }

    /// The company's vendors as the API shows them.
    pub fn vendors(&self) -> Vec<Value> {
        self.lock().vendors.clone()
    }

    /// A bill's attached PDF, as stored.
    pub fn document(&self, bill_id: &str) -> Option<Vec<u8>> {
        let state = self.lock();
        let (id, _) = state.attachables.iter().find(|(_, a)| a["AttachableRef"][0]["EntityRef"]["value"] == bill_id)?;
        state.files.get(id).cloned()
    }

    /// The supplier's document of bill `id` is `truth` instead (its PDF drawn again, carrying it):
    /// a document that prints other figures, such as totals that do not add up. Returns false for
    /// a bill without a document.
    pub fn replace_document(&self, id: &str, mut truth: Truth) -> bool {
        let mut state = self.lock();
        let Ok(n) = id.parse::<u64>() else { return false };
        let Some(attachable) =
            state.attachables.iter().find(|(_, a)| a["AttachableRef"][0]["EntityRef"]["value"] == id).map(|(k, _)| *k)
        else {
            return false;
        };
        let pdf = pdf::render(&truth);
        truth.pages = pdf.pages;
        if let Some(a) = state.attachables.get_mut(&attachable) {
            a["Size"] = json!(pdf.bytes.len());
        }
        state.files.insert(attachable, pdf.bytes);
        state.truth.insert(n, truth);
        true
    }

    /// A bookkeeper edits the bill in QuickBooks: a private note, and the `SyncToken` and
    /// `LastUpdatedTime` move on. Returns the new `SyncToken`.
    pub fn edit_as_bookkeeper(&self, id: &str, note: &str) -> Option<String> {
        let mut state = self.lock();
        state.now += 1;
        let now = state.now;
        let bill = state.bills.get_mut(&id.parse().ok()?)?;
        bill["PrivateNote"] = json!(note);
        Some(bump(bill, now))
    }

    /// The bills edited through [`Faults::bookkeeper_edit_rate`], in the order they were edited.
    pub fn edited_by_bookkeeper(&self) -> Vec<String> {
        self.lock().edited.clone()
    }

    /// Updates of this bill fail with a business-validation Fault (6000), as a closed period would.
    pub fn refuse_writes_of(&self, id: &str) {
        if let Ok(id) = id.parse() {
            self.lock().refused_writes.insert(id);
        }
    }

    /// Whether a refresh token is still valid (not yet rotated away).
    pub fn refresh_token_valid(&self, token: &str) -> bool {
        self.lock().refresh_tokens.contains(token)
    }
}

/// Moves a changed entity's `SyncToken` and `LastUpdatedTime` on; returns the new token.
pub(crate) fn bump(entity: &mut Value, now: i64) -> String {
    let next = entity["SyncToken"].as_str().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) + 1;
    entity["SyncToken"] = json!(next.to_string());
    entity["MetaData"]["LastUpdatedTime"] = json!(local_time(now));
    next.to_string()
}

pub(crate) fn expense_line(
    n: usize,
    description: &str,
    amount: f64,
    accounts: &[Value],
    account: &str,
    tax_code: &str,
) -> Value {
    let account = accounts.iter().find(|a| a["Name"] == account).cloned().unwrap_or(Value::Null);
    let mut line = json!({
        "Id": (n + 1).to_string(),
        "LineNum": n + 1,
        "Amount": amount,
        "DetailType": "AccountBasedExpenseLineDetail",
        "AccountBasedExpenseLineDetail": {
            "AccountRef": {"value": account["Id"], "name": account["Name"]},
            "BillableStatus": "NotBillable",
            "TaxCodeRef": {"value": tax_code}
        }
    });
    if !description.is_empty() {
        line["Description"] = json!(description);
    }
    line
}

/// The purchase percent of tax code `id` (the sum of its purchase rates), `None` for an unknown code.
pub(crate) fn purchase_rate(tax_codes: &[Value], tax_rates: &[Value], id: &str) -> Option<f64> {
    let code = tax_codes.iter().find(|c| c["Id"] == id)?;
    Some(
        code["PurchaseTaxRateList"]["TaxRateDetail"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| tax_rates.iter().find(|r| r["Id"] == d["TaxRateRef"]["value"]))
            .filter_map(|r| r["RateValue"].as_f64())
            .sum(),
    )
}

pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
