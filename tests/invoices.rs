//! Supplier bills end to end over real HTTP, on SQLite and Postgres: the Xero and QuickBooks Online
//! sandboxes (300 bills each, their documents real PDFs carrying what they say), the shipped
//! `invoice_extract` task, the simulated model reading each document in its native form, and
//! `review.policy = "auto_approve"`.
//!
//! Per platform: exactly the draft bills with a document and nothing read yet are extracted,
//! checked and — when every check passes — written onto the drafts, with the document's own values;
//! nothing is ever approved or paid; a duplicate of a bill already entered is held and never
//! written; a document whose numbers do not add up, a credit note and an unknown supplier wait for a
//! person; image-only scans are read like any other document; and a bill a bookkeeper edits
//! between the pull and the write ends `conflict` with the bookkeeper's edit intact.
//!
//! `figures` (behind `ENRICHD_INVOICE_FIGURES=1`) prints the README's numbers.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::harness::{start_named, work_named};
use common::{PROVIDER_KEY, ProviderSandbox, TestDb};
use enrichd::checks::Outcome;
use enrichd::config::Config;
use enrichd::engine::Engine;
use enrichd::store::{Item, ItemState, Run, RunStatus};
use enrichd_quickbooks::sandbox::{self as qs, Layout, QuickBooksSandbox};
use enrichd_xero::sandbox::{self as xs, XeroSandbox};
use serde_json::{Value, json};

const PIPELINE: &str = "bills";
const BILLS: usize = 300;
const SEED: u64 = 16;
/// Fields a bill arriving from a document already holds, filled by the platform rather than read
/// from the document: a Xero inbox draft has the organisation's base currency and `Exclusive`
/// amounts; a QuickBooks bill made from a forwarded document has a vendor (a placeholder "Supplier
/// to be confirmed" when QuickBooks had none), the date, the currency, one uncategorised line for
/// the total. Without `supplier.name` here the look-up would match the placeholder vendor instead
/// of the supplier the document names. The pipeline proposes them for every candidate
/// (`select.add`), so the document's values replace the defaults.
const PREFILLED: [&str; 8] =
    ["supplier.name", "date", "currency", "amounts_are", "line_items", "sub_total", "total_tax", "total"];

on_both_backends! {
    xero_bills => xero_bills;
    quickbooks_bills => quickbooks_bills;
}

/// One of the two sandboxes.
#[derive(Clone)]
enum Books {
    Xero(XeroSandbox),
    QuickBooks(QuickBooksSandbox),
}

impl Books {
    /// An organisation (company) of `bills` bills, serving on a free port; returns its base URL.
    async fn start(platform: &str, bills: usize) -> (Books, String) {
        match platform {
            "xero" => {
                let org = XeroSandbox::new(bills, SEED);
                // Xero allows 60 calls a minute per tenant: a 300-bill cycle (~850 calls: listing,
                // an attachment list per bill, look-ups, re-reads, writes, history notes) would
                // take about 14 minutes at that pace. The sandbox's limit is raised so the test
                // runs in seconds; the pacing itself is tested in `connectors/xero`. Five calls
                // in flight, Xero's concurrency limit, stay enforced.
                org.set_limits(xs::Limits { per_minute: 1_000_000, per_day: 1_000_000, ..xs::Limits::default() });
                let addr = org.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
                (Books::Xero(org), format!("http://{addr}"))
            }
            _ => {
                let company = QuickBooksSandbox::new(bills as u64, SEED);
                let addr = company.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
                (Books::QuickBooks(company), format!("http://{addr}"))
            }
        }
    }

    /// The connection's lines of `enrichd.toml`; secrets as files in `dir`.
    fn connection(&self, dir: &Path, base: &str) -> String {
        let secret = |name: &str, value: &str| {
            let path = dir.join(name);
            std::fs::write(&path, value).unwrap();
            format!("file:{}", path.display())
        };
        match self {
            // A Custom Connection: client credentials, no `enrichd connect`.
            Books::Xero(_) => format!(
                "kind = \"xero\"\nbase_url = \"{base}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\ntenant_id = \"{}\"\ncustom_connection = true\ntimeout_secs = 10",
                secret("xero_id", xs::CUSTOM_CLIENT_ID),
                secret("xero_secret", xs::CUSTOM_CLIENT_SECRET),
                xs::TENANT_ID,
            ),
            // The sandbox's ready access token (what `enrichd sandbox quickbooks` prints).
            Books::QuickBooks(_) => format!(
                "kind = \"quickbooks\"\nbase_url = \"{base}\"\nrealm_id = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\naccess_token = \"{}\"\ntimeout_secs = 10",
                qs::REALM_ID,
                secret("qbo_id", qs::CLIENT_ID),
                secret("qbo_secret", qs::CLIENT_SECRET),
                secret("qbo_token", qs::ACCESS_TOKEN),
            ),
        }
    }

    /// Every bill as the platform shows it now, by id.
    fn snapshot(&self) -> BTreeMap<String, Value> {
        match self {
            Books::Xero(org) => org.bills().into_iter().map(|b| (b.id.clone(), xero_json(&b))).collect(),
            Books::QuickBooks(c) => c.bill_ids().into_iter().map(|id| (id.clone(), c.bill(&id).unwrap())).collect(),
        }
    }

    /// The bills enrichd must take: draft bills with a document and no invoice number yet.
    fn candidates(&self) -> BTreeSet<String> {
        match self {
            Books::Xero(org) => org
                .candidates()
                .into_iter()
                .filter(|id| org.bill(id).is_some_and(|b| b.invoice_number.is_empty()))
                .collect(),
            Books::QuickBooks(c) => c
                .bill_ids()
                .into_iter()
                .filter(|id| c.bill(id).is_some_and(|b| b.get("DocNumber").is_none()) && c.document(id).is_some())
                .collect(),
        }
    }

    /// What bill `id`'s document says (the invoice task's answer).
    fn truth(&self, id: &str) -> Value {
        match self {
            Books::Xero(org) => org.truth(id).unwrap(),
            Books::QuickBooks(c) => c.truth(id).unwrap(),
        }
    }

    /// Whether the supplier on bill `id`'s document is one the organisation has.
    fn known_supplier(&self, id: &str) -> bool {
        let name = self.truth(id)["supplier_name"].as_str().unwrap().to_owned();
        match self {
            Books::Xero(_) => name != xs::SUPPLIERS[xs::NEW_SUPPLIER].name,
            Books::QuickBooks(_) => name != qs::NEW_SUPPLIER,
        }
    }

    /// The bill whose document bill `id`'s repeats.
    fn duplicate_of(&self, id: &str) -> Option<String> {
        match self {
            Books::Xero(org) => org.bill(id).unwrap().duplicate_of,
            Books::QuickBooks(c) => c.printed(id).unwrap().duplicate_of,
        }
    }

    fn scanned(&self, id: &str) -> bool {
        match self {
            Books::Xero(org) => org.printed(id).unwrap().scanned,
            Books::QuickBooks(c) => c.printed(id).unwrap().layout == Layout::Scan,
        }
    }

    /// Makes bill `id`'s document print a total 10.00 above what its lines and tax add up to (a
    /// supplier's arithmetic mistake): the document is drawn again, carrying the new figures.
    fn misprint_total(&self, id: &str) {
        match self {
            Books::Xero(org) => {
                let mut t = org.printed(id).unwrap();
                t.total = ((t.total + 10.0) * 100.0).round() / 100.0;
                let pdf = xs::invoice_pdf(&t);
                assert!(org.edit_as_bookkeeper(id, move |b| {
                    b.attachment.as_mut().unwrap().bytes = pdf;
                    b.truth = Some(t);
                }));
            }
            Books::QuickBooks(c) => {
                let mut t = c.printed(id).unwrap();
                t.total = ((t.total + 10.0) * 100.0).round() / 100.0;
                assert!(c.replace_document(id, t));
            }
        }
    }

    /// A bookkeeper changes bill `id` in the accounting system while its proposal waits.
    fn edit_as_bookkeeper(&self, id: &str) {
        match self {
            Books::Xero(org) => {
                let number = format!("BK-{id}");
                assert!(org.edit_as_bookkeeper(id, move |b| {
                    b.invoice_number = number;
                    b.reference = "typed in by the bookkeeper".into();
                }));
            }
            Books::QuickBooks(c) => {
                c.edit_as_bookkeeper(id, "typed in by the bookkeeper").unwrap();
            }
        }
    }

    /// Asserts the bookkeeper's edit of bill `id` is what the platform holds, and nothing of ours.
    fn assert_bookkeepers_edit(&self, id: &str) {
        let bill = self.snapshot().remove(id).unwrap();
        match self {
            Books::Xero(_) => {
                assert_eq!(bill["invoice_number"], json!(format!("BK-{id}")), "bill {id}: {bill}");
                assert_eq!(bill["reference"], "typed in by the bookkeeper");
                assert_eq!(bill["lines"], json!([]), "bill {id}: nothing of ours was written: {bill}");
                assert_eq!(bill["history"], json!([]), "bill {id}: no payment note either");
            }
            Books::QuickBooks(_) => {
                assert_eq!(bill["PrivateNote"], "typed in by the bookkeeper", "bill {id}: {bill}");
                assert!(bill.get("DocNumber").is_none(), "bill {id}: nothing of ours was written: {bill}");
            }
        }
    }

    /// Asserts nothing was approved or paid: a Xero bill keeps its `Status` (and type); a
    /// QuickBooks bill — which has no draft status — stays as paid or unpaid as it was.
    fn assert_status_kept(&self, before: &Value, after: &Value) {
        match self {
            Books::Xero(_) => {
                assert_eq!((&before["status"], &before["kind"]), (&after["status"], &after["kind"]), "{after}");
            }
            Books::QuickBooks(_) => {
                let open = |b: &Value| b["Balance"] == b["TotalAmt"];
                let paid = |b: &Value| b["Balance"] == json!(0) && b["TotalAmt"] != json!(0);
                assert_eq!((open(before), paid(before)), (open(after), paid(after)), "{before}\n{after}");
            }
        }
    }

    /// Asserts bill `id` on the platform holds what its document says (`truth`).
    fn assert_written_as_printed(&self, id: &str, truth: &Value) {
        let bill = self.snapshot().remove(id).unwrap();
        let t = truth;
        match self {
            Books::Xero(org) => {
                assert_eq!(bill["status"], "DRAFT", "bill {id}");
                assert_eq!(bill["invoice_number"], t["invoice_number"], "bill {id}");
                assert_eq!(bill["date"], t["issue_date"], "bill {id}");
                assert_eq!(bill["due_date"], t["due_date"], "bill {id}");
                assert_eq!(bill["currency"], t["currency"], "bill {id}");
                let types = if t["amounts_are"] == "inclusive" { "Inclusive" } else { "Exclusive" };
                assert_eq!(bill["line_amount_types"], types, "bill {id}");
                for key in ["sub_total", "total_tax", "total"] {
                    let printed = match key {
                        "sub_total" => &t["subtotal"],
                        other => &t[other],
                    };
                    assert_money(&bill[key], printed, &format!("bill {id} {key}"));
                }
                let lines = bill["lines"].as_array().unwrap();
                let printed = t["line_items"].as_array().unwrap();
                assert_eq!(lines.len(), printed.len(), "bill {id}: {bill}");
                let supplier = xs::SUPPLIERS.iter().find(|s| t["supplier_name"] == s.name).unwrap();
                for (n, (line, p)) in lines.iter().zip(printed).enumerate() {
                    let at = format!("bill {id} line {n}");
                    assert_eq!(line["description"], p["description"], "{at}");
                    assert_money(&line["quantity"], &p["quantity"], &at);
                    assert_money(&line["unit_amount"], &p["unit_price"], &at);
                    assert_money(&line["line_amount"], &p["line_amount"], &at);
                    assert_money(&line["tax_amount"], &p["tax_amount"], &at);
                    let rate = xs::TAX_RATES.iter().find(|r| line["tax_type"] == r.0).unwrap().2;
                    assert_money(&json!(rate), &p["tax_rate"], &at);
                    // Not printed: suggested from the supplier's approved bills.
                    let code = line["account_code"].as_str().unwrap_or_else(|| panic!("{at}: no account code"));
                    assert!(supplier.items.iter().any(|(_, c)| *c == code), "{at}: account {code}");
                }
                let contact_id = bill["contact_id"].as_str().unwrap_or_else(|| panic!("bill {id}: no contact"));
                let contact = org.contacts().into_iter().find(|c| c.id == contact_id).unwrap();
                let alnum = |s: &str| s.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_uppercase();
                let by_tax = t["supplier_tax_number"].as_str().is_some_and(|n| alnum(n) == alnum(&contact.tax_number));
                assert!(by_tax || t["supplier_name"] == contact.name.as_str(), "bill {id}: contact {contact:?}");
                let note = t["payment_details"].as_str().unwrap();
                assert!(
                    bill["history"].as_array().unwrap().iter().any(|h| h.as_str().unwrap().contains(note)),
                    "bill {id}: the payment details are a history note: {}",
                    bill["history"]
                );
            }
            Books::QuickBooks(c) => {
                assert_eq!(bill["DocNumber"], t["invoice_number"], "bill {id}");
                assert_eq!(bill["TxnDate"], t["issue_date"], "bill {id}");
                assert_eq!(bill["DueDate"], t["due_date"], "bill {id}");
                assert_eq!(bill["CurrencyRef"]["value"], t["currency"], "bill {id}");
                let how = if t["amounts_are"] == "inclusive" { "TaxInclusive" } else { "TaxExcluded" };
                assert_eq!(bill["GlobalTaxCalculation"], how, "bill {id}");
                assert_money(&bill["TotalAmt"], &t["total"], &format!("bill {id} TotalAmt"));
                assert_money(&bill["TxnTaxDetail"]["TotalTax"], &t["total_tax"], &format!("bill {id} TotalTax"));
                assert_eq!(bill["PrivateNote"], t["payment_details"], "bill {id}");
                let vendor = c.vendors().into_iter().find(|v| v["Id"] == bill["VendorRef"]["value"]).unwrap();
                assert_eq!(vendor["DisplayName"], t["supplier_name"], "bill {id}");
                let lines = bill["Line"].as_array().unwrap();
                let printed = t["line_items"].as_array().unwrap();
                assert_eq!(lines.len(), printed.len(), "bill {id}: {bill}");
                for (n, (line, p)) in lines.iter().zip(printed).enumerate() {
                    let at = format!("bill {id} line {n}");
                    assert_eq!(line["Description"], p["description"], "{at}");
                    assert_money(&line["Amount"], &p["line_amount"], &at);
                    let detail = &line["AccountBasedExpenseLineDetail"];
                    let code = detail["TaxCodeRef"]["value"].as_str().unwrap();
                    let rate = qs::TAX_CODES.iter().find(|tc| tc.0 == code).map(|tc| tc.2);
                    assert_eq!(rate, p["tax_rate"].as_f64(), "{at}: tax code {code}");
                    assert!(detail["AccountRef"]["value"].is_string(), "{at}: an account");
                }
            }
        }
    }

    /// An expense account's code of the organisation.
    fn an_expense_account(&self) -> &'static str {
        match self {
            Books::Xero(_) => "429",
            Books::QuickBooks(_) => qs::ACCOUNT_NUMBERS[0],
        }
    }

    /// Requests the platform has answered.
    fn requests(&self) -> u64 {
        match self {
            Books::Xero(org) => org.counters().api_requests,
            Books::QuickBooks(c) => c.stats().requests,
        }
    }
}

fn assert_money(got: &Value, want: &Value, at: &str) {
    let (g, w) = (got.as_f64(), want.as_f64());
    assert!(
        g.zip(w).is_some_and(|(g, w)| (g - w).abs() < 0.005),
        "{at}: {got} on the platform, {want} on the document"
    );
}

/// A Xero bill as JSON, for snapshots and comparisons.
fn xero_json(b: &xs::Bill) -> Value {
    json!({
        "kind": b.kind, "status": b.status, "contact_id": b.contact_id, "invoice_number": b.invoice_number,
        "reference": b.reference, "date": b.date, "due_date": b.due_date, "currency": b.currency,
        "line_amount_types": b.line_amount_types,
        "lines": b.lines.iter().map(|l| json!({
            "description": l.description, "quantity": l.quantity, "unit_amount": l.unit_amount,
            "tax_type": l.tax_type, "tax_amount": l.tax_amount, "line_amount": l.line_amount,
            "account_code": l.account_code,
        })).collect::<Vec<_>>(),
        "sub_total": b.sub_total, "total_tax": b.total_tax, "total": b.total, "updated_ms": b.updated_ms,
        "history": b.history,
    })
}

struct Setup {
    books: Books,
    provider: ProviderSandbox,
    engine: Arc<Engine>,
    _dir: tempfile::TempDir,
}

/// The shipped task, pipeline `bills` over `books` at `base`, the provider sandbox as `kind`.
fn write_config(dir: &Path, db_url: &str, connection: &str, provider: (&str, &str, &str), policy: &str) -> Config {
    let (kind, url, model) = provider;
    std::fs::create_dir(dir.join("tasks")).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/tasks/invoice_extract.toml"),
        dir.join("tasks/invoice_extract.toml"),
    )
    .unwrap();
    let secret = |name: &str, value: &str| {
        let path = dir.join(name);
        std::fs::write(&path, value).unwrap();
        format!("file:{}", path.display())
    };
    let text = format!(
        r#"
[database]
url = "{db_url}"
max_connections = 8
secret_key = "{key}"

[daemon]
lease_seconds = 10
shutdown_grace_seconds = 5
poll_interval_ms = 20
retry_base_ms = 50
retry_max_seconds = 1

[connections.books]
{connection}

[providers.sim]
kind = "{kind}"
base_url = "{url}"
api_key = "{api_key}"
timeout_seconds = 10

[pipelines.{PIPELINE}]
connection = "books"
entity = "bills"
task = "invoice_extract"
provider = "sim"
model = "{model}"
concurrency = 8
max_attempts = 3
select = {{ missing = ["invoice_number"], fill_all_missing = true, add = [{ADD}] }}
review = {{ policy = "{policy}" }}
write_linger_ms = 0
"#,
        key = secret("secret_key", "a long random key for the test vault"),
        ADD = PREFILLED.iter().map(|f| format!("\"{f}\"")).collect::<Vec<_>>().join(", "),
        api_key = secret("provider_key", PROVIDER_KEY),
    );
    let path = dir.join("enrichd.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path).unwrap()
}

/// The provider sandbox as each provider kind sees it: (kind, base URL, model).
fn provider_as(kind: &str, addr: &str) -> (String, String, String) {
    match kind {
        "anthropic" => (kind.into(), format!("http://{addr}"), "claude-sonnet-4-5".into()),
        "gemini" => (kind.into(), format!("http://{addr}"), "gemini-2.5-flash".into()),
        _ => ("openai".into(), format!("http://{addr}/v1"), "gpt-4o-mini".into()),
    }
}

async fn setup(db: &TestDb, platform: &str, bills: usize, provider_kind: &str, policy: &str) -> Setup {
    let (books, base) = Books::start(platform, bills).await;
    let provider = ProviderSandbox::new(Some(PROVIDER_KEY));
    let paddr = provider.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let connection = books.connection(dir.path(), &base);
    let (kind, url, model) = provider_as(provider_kind, &paddr.to_string());
    let config = write_config(dir.path(), &db.url, &connection, (&kind, &url, &model), policy);
    let engine = Arc::new(Engine::build(&config, db.store.clone()));
    Setup { books, provider, engine, _dir: dir }
}

async fn work(s: &Setup, run: i64) -> Run {
    work_named(&s.engine, PIPELINE, run, Duration::from_secs(240), true).await
}

fn warnings(item: &Item) -> Vec<String> {
    item.proposal.as_ref().map(|p| p.warnings.clone()).unwrap_or_default()
}

fn held(item: &Item) -> Option<String> {
    item.proposal.as_ref().and_then(|p| p.held.clone())
}

fn check_outcome(item: &Item, rule: &str) -> Option<Outcome> {
    item.proposal.as_ref()?.findings.checks.iter().find(|c| c.rule == rule).map(|c| c.outcome)
}

async fn xero_bills(db: &TestDb) {
    bills_end_to_end(db, "xero").await;
}

async fn quickbooks_bills(db: &TestDb) {
    bills_end_to_end(db, "quickbooks").await;
}

/// 300 bills of `platform` through the shipped task under `auto_approve`, then a reviewer and a
/// bookkeeper at work.
async fn bills_end_to_end(db: &TestDb, platform: &str) {
    let s = setup(db, platform, BILLS, "openai", "auto_approve").await;
    let books = &s.books;
    let candidates = books.candidates();
    assert!(candidates.len() >= 150, "{platform}: {} candidates", candidates.len());

    // Every fifteenth clean candidate's document prints a total its lines and tax do not add up to.
    let clean_invoice = |id: &String| {
        books.truth(id)["document_type"] == "invoice" && books.known_supplier(id) && books.duplicate_of(id).is_none()
    };
    let misprinted: BTreeSet<String> = candidates.iter().filter(|id| clean_invoice(id)).step_by(15).cloned().collect();
    for id in &misprinted {
        books.misprint_total(id);
    }
    let before = books.snapshot();
    // On QuickBooks the first copy of a repeated invoice can be a candidate too, the second one
    // entered already (or also a candidate): it is the other's duplicate.
    let repeated: BTreeSet<String> = before.keys().filter_map(|id| books.duplicate_of(id)).collect();

    let started = Instant::now();
    let run = start_named(&s.engine, PIPELINE).await;
    let run = work(&s, run.id).await;
    let elapsed = started.elapsed();
    println!(
        "{platform}: {} candidates of {BILLS} bills extracted, checked and the clean ones written in {elapsed:.1?}, {} {platform} requests",
        candidates.len(),
        books.requests()
    );
    assert_eq!(run.status, RunStatus::AwaitingReview, "{:?}", run.status_reason);
    let store = &s.engine.store;
    let items = store.items(run.id, None, 5000).await.unwrap();
    let taken: BTreeSet<String> =
        items.iter().filter(|i| i.state != ItemState::Skipped).map(|i| i.external_id.clone()).collect();
    assert_eq!(taken, candidates, "{platform}: exactly the drafts with a document and nothing read yet");
    assert_eq!(s.provider.stats().answered, candidates.len() as u64, "one model call per candidate");

    let after = books.snapshot();
    let (mut written, mut scans_written, mut credit_notes, mut duplicates) = (0, 0, 0, 0);
    for item in items.iter().filter(|i| i.state != ItemState::Skipped) {
        let id = &item.external_id;
        let truth = books.truth(id);
        let (was, now) = (&before[id], &after[id]);
        books.assert_status_kept(was, now);
        // The model read every document, scans included, exactly as printed.
        let proposal = item.proposal.as_ref().unwrap_or_else(|| panic!("bill {id} has no proposal: {item:?}"));
        assert_eq!(proposal.values()["invoice_number"], truth["invoice_number"], "bill {id}");
        assert_eq!(proposal.values()["total"], truth["total"], "bill {id}");
        let text_rule = check_outcome(item, "printed_on_the_document");
        if books.scanned(id) {
            assert_eq!(text_rule, Some(Outcome::NotChecked), "bill {id}: a scan has no text layer to compare");
        } else {
            assert_eq!(text_rule, Some(Outcome::Passed), "bill {id}: {:?}", warnings(item));
        }

        if misprinted.contains(id) {
            assert_eq!(item.state, ItemState::Proposed, "bill {id} does not add up: it waits for a person");
            let w = warnings(item);
            assert!(
                w.iter().any(|w| w.starts_with("totals_add_up:") && w.contains("off by 10.00")),
                "bill {id}: {w:?}"
            );
        } else if books.duplicate_of(id).is_some() {
            duplicates += 1;
            assert_eq!(item.state, ItemState::Proposed, "bill {id} repeats another: never written");
            if books.known_supplier(id) {
                let reason = held(item).unwrap_or_else(|| panic!("bill {id} is not held: {:?}", warnings(item)));
                assert!(reason.starts_with("duplicate of bill"), "bill {id}: {reason}");
            }
        } else if truth["document_type"] == "credit_note" {
            credit_notes += 1;
            assert_eq!(item.state, ItemState::Proposed, "credit note {id} waits for a person");
            assert!(warnings(item).iter().any(|w| w.starts_with("is_an_invoice:")), "{:?}", warnings(item));
        } else if !books.known_supplier(id) {
            assert_eq!(
                item.state,
                ItemState::Proposed,
                "bill {id}: an unknown supplier waits: {:?} {:?}",
                item.last_error,
                item.proposal
            );
            assert!(warnings(item).iter().any(|w| w.starts_with("supplier not found:")), "{:?}", warnings(item));
        } else if repeated.contains(id) && held(item).is_some() {
            // The first copy of a repeated invoice, flagged against the second.
            assert_eq!(item.state, ItemState::Proposed);
        } else {
            assert_eq!(item.state, ItemState::Written, "bill {id}: {:?} {:?}", warnings(item), item.last_error);
        }

        match item.state {
            ItemState::Written => {
                written += 1;
                assert!(warnings(item).is_empty() && held(item).is_none(), "bill {id}");
                books.assert_written_as_printed(id, &truth);
                scans_written += usize::from(books.scanned(id));
            }
            ItemState::Proposed => {
                assert!(!warnings(item).is_empty() || held(item).is_some(), "bill {id} waits for no reason");
                assert_eq!(was, now, "bill {id} waits: nothing of it was written");
            }
            other => panic!("bill {id} ended {other}: {:?}", item.last_error),
        }
    }
    // The bills nobody should touch are untouched.
    for (id, was) in &before {
        if !candidates.contains(id) {
            assert_eq!(was, &after[id], "bill {id} is not a candidate");
        }
    }
    println!(
        "{platform}: {written} written ({scans_written} scans), {} misprinted waiting, {credit_notes} credit notes, {duplicates} duplicates",
        misprinted.len()
    );
    assert!(written >= 100 && scans_written > 0 && credit_notes > 0 && duplicates > 0, "{platform}");
    assert_never_approved_or_paid(books);

    // A reviewer picks an expense account for the lines of three bills from an unknown supplier
    // (nothing to suggest one from) and approves them; a bookkeeper has edited each of them in the
    // accounting system meanwhile. The write finds the bill changed since the pull: conflict.
    let waiting: Vec<&Item> = items
        .iter()
        .filter(|i| {
            i.state == ItemState::Proposed
                && held(i).is_none()
                && !books.known_supplier(&i.external_id)
                && books.truth(&i.external_id)["document_type"] == "invoice"
        })
        .take(3)
        .collect();
    assert_eq!(waiting.len(), 3, "{platform}: bills from an unknown supplier wait");
    let task = s.engine.pipelines[PIPELINE].task();
    for item in &waiting {
        books.edit_as_bookkeeper(&item.external_id);
        let mut lines = item.proposal.as_ref().unwrap().values()["line_items"].clone();
        for line in lines.as_array_mut().unwrap() {
            line["account_code"] = json!(books.an_expense_account());
        }
        store.edit(item.id, "reviewer:ann", &task, "line_items", lines).await.unwrap();
        store.approve(item.id, "reviewer:ann").await.unwrap();
    }
    let run = work(&s, run.id).await;
    for item in &waiting {
        let now = store.item(item.id).await.unwrap();
        assert_eq!(now.state, ItemState::Conflict, "bill {}: {:?}", item.external_id, now.last_error);
        books.assert_bookkeepers_edit(&item.external_id);
    }
    // Duplicates cannot be approved; the misprinted bills still wait.
    for item in items.iter().filter(|i| held(i).is_some()) {
        assert!(store.approve(item.id, "reviewer:ann").await.is_err(), "bill {}", item.external_id);
    }
    let counts = store.counts(run.id).await.unwrap();
    assert_eq!(counts.get(ItemState::Written), written as i64, "{counts:?}");
    assert_never_approved_or_paid(books);
}

/// Nothing enrichd sent could approve, authorise or pay a bill.
fn assert_never_approved_or_paid(books: &Books) {
    match books {
        Books::Xero(org) => {
            for write in org.writes() {
                for invoice in write.body["Invoices"].as_array().into_iter().flatten() {
                    let status = invoice.get("Status").and_then(Value::as_str).unwrap_or("DRAFT");
                    assert_eq!(status, "DRAFT", "{invoice}");
                }
            }
        }
        Books::QuickBooks(c) => {
            for r in c.received().iter().filter(|r| r.method == "POST") {
                let entity = r.path.rsplit('/').next().unwrap();
                assert!(["bill", "batch", "vendor", "bearer"].contains(&entity), "{} {}", r.method, r.path);
                let text = r.body.to_string();
                assert!(!text.contains("BillPayment") && !text.contains("\"Payment\""), "{text}");
            }
        }
    }
}

/// Figures for the README (printed; run with `ENRICHD_INVOICE_FIGURES=1` and `--no-capture`):
/// bills written per second at zero model latency and platform requests per 100 bills written, per
/// platform (300 bills, `review.policy = "none"`: every clean bill written); and per provider kind
/// the document bytes per page and the input tokens per page the provider sandbox bills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures() {
    if std::env::var("ENRICHD_INVOICE_FIGURES").as_deref() != Ok("1") {
        return;
    }
    for platform in ["xero", "quickbooks"] {
        let db = common::sqlite().await;
        let s = setup(&db, platform, BILLS, "openai", "none").await;
        let candidates = s.books.candidates().len();
        let started = Instant::now();
        let run = start_named(&s.engine, PIPELINE).await;
        let run = work(&s, run.id).await;
        let elapsed = started.elapsed().as_secs_f64();
        let counts = db.store.counts(run.id).await.unwrap();
        let written = counts.get(ItemState::Written);
        assert!(written > 100, "{counts:?}");
        println!(
            "invoice figures, {platform}: {BILLS} bills, {candidates} candidates, {written} written in {elapsed:.1} s: {:.1} bills written/s, {:.0} {platform} requests per 100 written, {:.0} input tokens per bill (OpenAI)",
            written as f64 / elapsed,
            s.books.requests() as f64 * 100.0 / written as f64,
            run.tokens_in as f64 / candidates as f64,
        );
        db.cleanup().await;
    }
    // Per provider: the same 60 Xero bills' documents, each read once; what the sandbox billed.
    for kind in ["anthropic", "openai", "gemini"] {
        let db = common::sqlite().await;
        let s = setup(&db, "xero", 60, kind, "all").await;
        let Books::Xero(org) = &s.books else { unreachable!() };
        let candidates = org.candidates();
        let (mut bytes, mut pages, mut document_tokens) = (0usize, 0u64, 0u64);
        let provider_kind = match kind {
            "anthropic" => enrichd::provider::documents::Kind::Anthropic,
            "gemini" => enrichd::provider::documents::Kind::Gemini,
            _ => enrichd::provider::documents::Kind::OpenAi,
        };
        for id in &candidates {
            let attachment = org.bill(id).unwrap().attachment.unwrap();
            let layer = enrichd::document::text_layer(&attachment.bytes).unwrap();
            let document = enrichd::document::Document {
                name: attachment.file_name.clone(),
                media_type: attachment.mime_type.clone(),
                bytes: attachment.bytes.clone().into(),
                text: layer.text,
                pages: Some(layer.pages),
            };
            bytes += attachment.bytes.len();
            pages += u64::from(layer.pages);
            document_tokens += enrichd::provider::documents::tokens(provider_kind, &document);
        }
        let run = start_named(&s.engine, PIPELINE).await;
        let run = work(&s, run.id).await;
        let counts = db.store.counts(run.id).await.unwrap();
        assert_eq!(counts.get(ItemState::Proposed), candidates.len() as i64, "{counts:?}");
        println!(
            "document figures, {kind}: {} documents, {pages} pages, {:.0} bytes per page, {:.0} document tokens per page, {:.0} input tokens billed per bill (prompt and document)",
            candidates.len(),
            bytes as f64 / pages as f64,
            document_tokens as f64 / pages as f64,
            run.tokens_in as f64 / candidates.len() as f64,
        );
        db.cleanup().await;
    }
}
