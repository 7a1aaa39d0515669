//! The sandbox's supplier invoices: ground truth generated from a seed, and a real text-layer PDF of
//! each (written with `lopdf`, standard Helvetica, so any PDF reader extracts the text) in one of
//! several layouts. Every PDF carries what it says, as the invoice task's answer, in its Info
//! dictionary under `EnrichdTruth` (scans too): the simulated model reads it there.

use lopdf::content::{Content, Operation};
use lopdf::{Document, Object, Stream, dictionary};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

/// What the document says, in the words of the invoice task's answer (`supplier_name`,
/// `issue_date`, `amounts_are`, ...), plus how the sandbox drew it and how a bookkeeper books it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundTruth {
    pub supplier_name: String,
    /// As printed; `None` when the document prints none.
    pub supplier_tax_number: Option<String>,
    pub supplier_address: String,
    pub invoice_number: String,
    /// `YYYY-MM-DD`.
    pub issue_date: String,
    pub due_date: String,
    /// ISO 4217.
    pub currency: String,
    /// `exclusive` (unit prices before tax) or `inclusive`.
    pub amounts_are: String,
    pub line_items: Vec<TruthLine>,
    pub subtotal: f64,
    pub total_tax: f64,
    pub total: f64,
    /// The bank details as printed.
    pub payment_details: String,
    /// `invoice` or `credit_note`.
    pub document_type: String,
    /// Which of the [`LAYOUTS`] the PDF uses.
    pub layout: usize,
    /// Pages of the PDF: 2 puts the totals on a second page.
    pub pages: usize,
    /// An image-only scan: the PDF has no text layer (a model must read the image).
    pub scanned: bool,
}

/// One line of the document.
#[derive(Debug, Clone, PartialEq)]
pub struct TruthLine {
    pub description: String,
    pub quantity: f64,
    pub unit_price: f64,
    /// Percent, as printed.
    pub tax_rate: f64,
    pub tax_amount: f64,
    pub line_amount: f64,
    /// The organisation's `TaxType` for that rate (`INPUT2` 20 %, `RRINPUT` 5 %, `ZERORATEDINPUT`).
    pub tax_type: String,
    /// The account a bookkeeper books it to (not printed: the answer's `account_code` is null).
    pub account_code: String,
}

impl GroundTruth {
    /// The invoice task's answer a perfect reader gives for this document (`account_code` null,
    /// no `confidence`): what the PDF's Info dictionary carries as `EnrichdTruth`.
    pub fn answer(&self) -> Value {
        json!({
            "supplier_name": self.supplier_name,
            "supplier_tax_number": self.supplier_tax_number,
            "supplier_address": self.supplier_address,
            "invoice_number": self.invoice_number,
            "issue_date": self.issue_date,
            "due_date": self.due_date,
            "currency": self.currency,
            "amounts_are": self.amounts_are,
            "line_items": self.line_items.iter().map(|l| json!({
                "description": l.description, "quantity": l.quantity, "unit_price": l.unit_price,
                "tax_rate": l.tax_rate, "tax_amount": l.tax_amount, "line_amount": l.line_amount,
                "account_code": null,
            })).collect::<Vec<_>>(),
            "subtotal": self.subtotal,
            "total_tax": self.total_tax,
            "total": self.total,
            "payment_details": self.payment_details,
            "document_type": self.document_type,
        })
    }
}

/// The layouts: a classic table, a compact one with totals first, and a European one (day-first dates).
pub const LAYOUTS: [&str; 3] = ["table", "totals-first", "european"];

/// A supplier as its documents print it.
#[derive(Debug, Clone, Copy)]
pub struct Supplier {
    pub name: &'static str,
    pub tax_number: Option<&'static str>,
    pub address: &'static str,
    pub bank: &'static str,
    pub currency: &'static str,
    /// What it sells, with the account code a bookkeeper books it to.
    pub items: &'static [(&'static str, &'static str)],
}

/// The suppliers whose documents arrive. The last is not a contact of the organisation yet.
pub const SUPPLIERS: [Supplier; 7] = [
    Supplier {
        name: "Northwind Paper Ltd",
        tax_number: Some("GB123456789"),
        address: "4 Mill Lane, Leeds LS1 4AB",
        bank: "Sort code 20-00-00, account 12345678",
        currency: "GBP",
        items: &[("A4 copier paper, box of 5 reams", "453"), ("Envelopes C5, pack of 500", "453")],
    },
    Supplier {
        name: "Brightline Telecom plc",
        tax_number: Some("GB987654321"),
        address: "1 Exchange Square, London EC2A 2BR",
        bank: "Sort code 40-11-62, account 87654321",
        currency: "GBP",
        items: &[("Business broadband, monthly", "489"), ("Mobile plan, 10 lines", "489")],
    },
    Supplier {
        name: "Kestrel Cleaning Services",
        tax_number: Some("GB555010203"),
        address: "Unit 7, Riverside Park, Bristol BS2 0QT",
        bank: "Sort code 30-94-57, account 55501020",
        currency: "GBP",
        items: &[("Office cleaning, weekly", "429"), ("Window cleaning", "429")],
    },
    Supplier {
        name: "Atelier Lumiere SARL",
        tax_number: Some("FR40123456789"),
        address: "12 rue des Arts, 69002 Lyon, France",
        bank: "IBAN FR76 3000 6000 0112 3456 7890 189",
        currency: "EUR",
        items: &[("Trade show stand design", "400"), ("Printed banners", "400")],
    },
    Supplier {
        name: "Hudson Cloud Inc",
        tax_number: Some("US-EIN-12-3456789"),
        address: "200 Hudson Street, New York, NY 10013, USA",
        bank: "ABA 021000021, account 4455667788",
        currency: "USD",
        items: &[("Cloud hosting, monthly", "429"), ("Support plan", "429")],
    },
    Supplier {
        name: "Greenleaf Coffee Co",
        tax_number: None,
        address: "3 Market Row, Brighton BN1 1HH",
        bank: "Sort code 60-83-71, account 44433322",
        currency: "GBP",
        items: &[("Coffee beans, 1 kg", "429"), ("Milk delivery", "429")],
    },
    Supplier {
        name: "Fjord Design AS",
        tax_number: Some("NO999888777MVA"),
        address: "Storgata 5, 0155 Oslo, Norway",
        bank: "IBAN NO93 8601 1117 947",
        currency: "NOK",
        items: &[("Brand guidelines", "400"), ("Illustration, hourly", "400")],
    },
];

/// The index in [`SUPPLIERS`] of the supplier the organisation has no contact for yet.
pub const NEW_SUPPLIER: usize = 6;

fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The ground truth of invoice `n` of a sandbox seeded with `seed`.
pub fn truth(seed: u64, n: usize) -> GroundTruth {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(n as u64));
    let mut index = n % SUPPLIERS.len();
    // Approved bills (every tenth, from the eighth) are from suppliers the organisation knows.
    if index == NEW_SUPPLIER && n % 10 == 8 {
        index = 0;
    }
    let supplier = SUPPLIERS[index];
    let currency = supplier.currency;
    let inclusive = n % 3 == 1;
    let (tax_type, rate) = match currency {
        "GBP" if n % 7 == 3 => ("RRINPUT", 0.05),
        "GBP" => ("INPUT2", 0.20),
        _ => ("ZERORATEDINPUT", 0.0),
    };
    let credit_note = n % 9 == 4 && n % 10 != 8;
    let count = 1 + rng.random_range(0..3usize);
    let mut lines = Vec::new();
    for l in 0..count {
        let (description, account) = supplier.items[l % supplier.items.len()];
        let quantity = f64::from(rng.random_range(1..=12u32));
        let unit_price = r2(f64::from(rng.random_range(150..=25_000u32)) / 100.0);
        let line_amount = r2(quantity * unit_price);
        let tax_amount = if inclusive { r2(line_amount * rate / (1.0 + rate)) } else { r2(line_amount * rate) };
        lines.push(TruthLine {
            description: description.to_owned(),
            quantity,
            unit_price,
            tax_rate: rate * 100.0,
            tax_amount,
            line_amount,
            tax_type: tax_type.to_owned(),
            account_code: account.to_owned(),
        });
    }
    let amounts: f64 = lines.iter().map(|l| l.line_amount).sum();
    let total_tax = r2(lines.iter().map(|l| l.tax_amount).sum());
    let (subtotal, total) =
        if inclusive { (r2(amounts - total_tax), r2(amounts)) } else { (r2(amounts), r2(amounts + total_tax)) };
    let day = 1 + (n % 28) as u32;
    let month = 1 + (n / 28 % 12) as u32;
    let date = chrono::NaiveDate::from_ymd_opt(2026, month, day).expect("a valid day");
    let due = date + chrono::Days::new([14, 30, 45][n % 3]);
    let prefix = if credit_note { "CN".to_owned() } else { supplier.name[..2].to_ascii_uppercase() };
    GroundTruth {
        supplier_name: supplier.name.to_owned(),
        supplier_tax_number: supplier.tax_number.map(str::to_owned),
        supplier_address: supplier.address.to_owned(),
        invoice_number: format!("{prefix}-{:05}", 10_000 + n * 7),
        issue_date: date.format("%Y-%m-%d").to_string(),
        due_date: due.format("%Y-%m-%d").to_string(),
        currency: currency.to_owned(),
        amounts_are: if inclusive { "inclusive" } else { "exclusive" }.to_owned(),
        line_items: lines,
        subtotal,
        total_tax,
        total,
        payment_details: supplier.bank.to_owned(),
        document_type: if credit_note { "credit_note" } else { "invoice" }.to_owned(),
        layout: n % LAYOUTS.len(),
        pages: if n % 11 == 5 { 2 } else { 1 },
        scanned: n % 13 == 6,
    }
}

fn money(currency: &str, x: f64) -> String {
    format!("{currency} {x:.2}")
}

/// The text lines of the document, top to bottom, as (x, size, text).
fn text_lines(t: &GroundTruth) -> Vec<(f32, f32, String)> {
    let european = t.layout == 2;
    let show_date = |d: &str| {
        if european { format!("{}.{}.{}", &d[8..10], &d[5..7], &d[0..4]) } else { d.to_owned() }
    };
    let basis = if t.amounts_are == "inclusive" { "Prices include VAT" } else { "Prices exclude VAT" };
    let credit = t.document_type == "credit_note";
    let mut out = vec![(50.0, 18.0, t.supplier_name.clone()), (50.0, 9.0, t.supplier_address.clone())];
    if let Some(tax_number) = &t.supplier_tax_number {
        out.push((50.0, 10.0, format!("VAT no. {tax_number}")));
    }
    out.extend([
        (50.0, 16.0, if credit { "CREDIT NOTE" } else { "INVOICE" }.to_owned()),
        (50.0, 11.0, format!("{} number: {}", if credit { "Credit note" } else { "Invoice" }, t.invoice_number)),
        (50.0, 11.0, format!("{} date: {}", if credit { "Credit note" } else { "Invoice" }, show_date(&t.issue_date))),
        (50.0, 11.0, format!("Due date: {}", show_date(&t.due_date))),
        (50.0, 11.0, format!("Currency: {}", t.currency)),
        (50.0, 10.0, "Bill to: Sandbox Trading Ltd, 1 Test Street, London".to_owned()),
    ]);
    let totals = vec![
        (330.0, 11.0, format!("Subtotal: {}", money(&t.currency, t.subtotal))),
        (330.0, 11.0, format!("VAT: {}", money(&t.currency, t.total_tax))),
        (
            330.0,
            12.0,
            format!("{}: {}", if credit { "Total credit" } else { "Total due" }, money(&t.currency, t.total)),
        ),
    ];
    if t.layout == 1 {
        out.extend(totals.clone());
    }
    out.push((50.0, 10.0, format!("{basis}. Description | Qty | Unit price | VAT % | VAT | Amount")));
    for l in &t.line_items {
        out.push((
            50.0,
            10.0,
            format!(
                "{} | {} | {:.2} | {}% | {:.2} | {:.2}",
                l.description, l.quantity, l.unit_price, l.tax_rate, l.tax_amount, l.line_amount
            ),
        ));
    }
    if t.layout != 1 {
        out.extend(totals);
    }
    out.push((
        50.0,
        9.0,
        format!("Payment within {} days. {}", days_between(&t.issue_date, &t.due_date), t.payment_details),
    ));
    out
}

fn days_between(a: &str, b: &str) -> i64 {
    let p = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("sandbox dates are valid");
    (p(b) - p(a)).num_days()
}

/// The Info dictionary key holding the answer (see the issue 16 contract).
pub const TRUTH_KEY: &str = "EnrichdTruth";

/// An A4 PDF saying what `t` says: a text layer on one or two pages, or for a scan one page that
/// is only a greyscale image.
pub fn invoice_pdf(t: &GroundTruth) -> Vec<u8> {
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica", "Encoding" => "WinAnsiEncoding",
    });
    let (width, height) = (119i64, 168i64);
    // A pale page with darker bands where the text would be: what a low-resolution scan looks like.
    let pixels: Vec<u8> = (0..width * height)
        .map(|i| if (i / width) % 9 < 2 && (i % width) > 10 && (i % width) < 100 { 60 } else { 235 })
        .collect();
    let image_id = doc.add_object(Stream::new(
        dictionary! {
            "Type" => "XObject", "Subtype" => "Image", "Width" => width, "Height" => height,
            "ColorSpace" => "DeviceGray", "BitsPerComponent" => 8,
        },
        pixels,
    ));
    let resources_id = doc.add_object(dictionary! {
        "Font" => dictionary! { "F1" => font_id },
        "XObject" => dictionary! { "Im1" => image_id },
    });
    let lines = text_lines(t);
    let split = if t.pages == 2 {
        lines.iter().position(|l| l.2.starts_with("Subtotal")).unwrap_or(lines.len())
    } else {
        lines.len()
    };
    let mut page_texts = vec![lines[..split].to_vec()];
    if split < lines.len() {
        page_texts.push(lines[split..].to_vec());
    }
    let mut kids = Vec::new();
    for (n, texts) in page_texts.iter().enumerate() {
        let mut operations = Vec::new();
        if t.scanned {
            if n > 0 {
                break;
            }
            operations.push(Operation::new("q", vec![]));
            operations.push(Operation::new("cm", vec![595.into(), 0.into(), 0.into(), 842.into(), 0.into(), 0.into()]));
            operations.push(Operation::new("Do", vec!["Im1".into()]));
            operations.push(Operation::new("Q", vec![]));
        } else {
            let mut y = 790.0f32;
            for (x, size, text) in texts {
                operations.push(Operation::new("BT", vec![]));
                operations.push(Operation::new("Tf", vec!["F1".into(), (*size).into()]));
                operations.push(Operation::new("Td", vec![(*x).into(), y.into()]));
                operations.push(Operation::new("Tj", vec![Object::string_literal(text.as_str())]));
                operations.push(Operation::new("ET", vec![]));
                y -= size + 10.0;
            }
        }
        let content = Content { operations };
        let content_id =
            doc.add_object(Stream::new(dictionary! {}, content.encode().expect("static operations encode")));
        let page_id = doc.add_object(dictionary! {
            "Type" => "Page", "Parent" => pages_id, "Contents" => content_id,
        });
        kids.push(Object::from(page_id));
    }
    let count = kids.len() as i64;
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => kids, "Count" => count, "Resources" => resources_id,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog_id);
    let info_id = doc.add_object(dictionary! {
        "Producer" => Object::string_literal("enrichd Xero sandbox"),
        TRUTH_KEY => Object::string_literal(t.answer().to_string()),
    });
    doc.trailer.set("Info", info_id);
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes).expect("writing to memory does not fail");
    bytes
}
