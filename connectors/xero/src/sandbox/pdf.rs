//! The sandbox's supplier invoices: ground truth generated from a seed, and a real text-layer PDF of
//! each (written with `lopdf`, standard Helvetica, so any PDF reader extracts the text) in one of
//! several layouts.

use lopdf::content::{Content, Operation};
use lopdf::{Document, Object, Stream, dictionary};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What the document says, as a bookkeeper would type it into Xero.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundTruth {
    pub supplier: String,
    pub supplier_vat: String,
    pub invoice_number: String,
    /// `YYYY-MM-DD`.
    pub date: String,
    pub due_date: String,
    /// ISO 4217.
    pub currency: String,
    /// `Exclusive` (unit prices before tax) or `Inclusive`.
    pub line_amount_types: String,
    pub lines: Vec<TruthLine>,
    pub sub_total: f64,
    pub total_tax: f64,
    pub total: f64,
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
    pub unit_amount: f64,
    /// The organisation's `TaxType` for the rate printed (`INPUT2` 20 %, `RRINPUT` 5 %, `ZERORATEDINPUT`).
    pub tax_type: String,
    pub tax_rate: f64,
    pub tax_amount: f64,
    pub line_amount: f64,
    /// The account a bookkeeper would code it to.
    pub account_code: String,
}

/// The layouts: a classic table, a compact one with totals first, and a European one (day-first dates).
pub const LAYOUTS: [&str; 3] = ["table", "totals-first", "european"];

/// A supplier: name, VAT number, and what it sells with the account code it is booked to.
pub type Supplier = (&'static str, &'static str, &'static [(&'static str, &'static str)]);

/// The suppliers.
pub const SUPPLIERS: [Supplier; 6] = [
    (
        "Northwind Paper Ltd",
        "GB123456789",
        &[("A4 copier paper, box of 5 reams", "453"), ("Envelopes C5, pack of 500", "453")],
    ),
    (
        "Brightline Telecom plc",
        "GB987654321",
        &[("Business broadband, monthly", "489"), ("Mobile plan, 10 lines", "489")],
    ),
    ("Kestrel Cleaning Services", "GB555010203", &[("Office cleaning, weekly", "429"), ("Window cleaning", "429")]),
    ("Atelier Lumiere SARL", "FR40123456789", &[("Trade show stand design", "400"), ("Printed banners", "400")]),
    ("Hudson Cloud Inc", "US-EIN-12-3456789", &[("Cloud hosting, monthly", "429"), ("Support plan", "429")]),
    ("Greenleaf Coffee Co", "GB444333222", &[("Coffee beans, 1 kg", "429"), ("Milk delivery", "429")]),
];

fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The ground truth of invoice `n` of a sandbox seeded with `seed`.
pub fn truth(seed: u64, n: usize) -> GroundTruth {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(n as u64));
    let (supplier, vat, items) = SUPPLIERS[n % SUPPLIERS.len()];
    let currency = match supplier {
        "Atelier Lumiere SARL" => "EUR",
        "Hudson Cloud Inc" => "USD",
        _ => "GBP",
    };
    let inclusive = n % 3 == 1;
    let (tax_type, rate) = match currency {
        "GBP" if n % 7 == 3 => ("RRINPUT", 0.05),
        "GBP" => ("INPUT2", 0.20),
        _ => ("ZERORATEDINPUT", 0.0),
    };
    let count = 1 + rng.random_range(0..3usize);
    let mut lines = Vec::new();
    for l in 0..count {
        let (description, account) = items[l % items.len()];
        let quantity = f64::from(rng.random_range(1..=12u32));
        let unit_amount = r2(f64::from(rng.random_range(150..=25_000u32)) / 100.0);
        let line_amount = r2(quantity * unit_amount);
        let tax_amount = if inclusive { r2(line_amount * rate / (1.0 + rate)) } else { r2(line_amount * rate) };
        lines.push(TruthLine {
            description: description.to_owned(),
            quantity,
            unit_amount,
            tax_type: tax_type.to_owned(),
            tax_rate: rate * 100.0,
            tax_amount,
            line_amount,
            account_code: account.to_owned(),
        });
    }
    let amounts: f64 = lines.iter().map(|l| l.line_amount).sum();
    let total_tax = r2(lines.iter().map(|l| l.tax_amount).sum());
    let (sub_total, total) =
        if inclusive { (r2(amounts - total_tax), r2(amounts)) } else { (r2(amounts), r2(amounts + total_tax)) };
    let day = 1 + (n % 28) as u32;
    let month = 1 + (n / 28 % 12) as u32;
    let date = chrono::NaiveDate::from_ymd_opt(2026, month, day).expect("a valid day");
    let due = date + chrono::Days::new([14, 30, 45][n % 3]);
    GroundTruth {
        supplier: supplier.to_owned(),
        supplier_vat: vat.to_owned(),
        invoice_number: format!("{}-{:05}", &supplier[..2].to_ascii_uppercase(), 10_000 + n * 7),
        date: date.format("%Y-%m-%d").to_string(),
        due_date: due.format("%Y-%m-%d").to_string(),
        currency: currency.to_owned(),
        line_amount_types: if inclusive { "Inclusive" } else { "Exclusive" }.to_owned(),
        lines,
        sub_total,
        total_tax,
        total,
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
    let basis = if t.line_amount_types == "Inclusive" { "Prices include VAT" } else { "Prices exclude VAT" };
    let mut out = vec![
        (50.0, 18.0, t.supplier.clone()),
        (50.0, 10.0, format!("VAT no. {}", t.supplier_vat)),
        (50.0, 16.0, "INVOICE".to_owned()),
        (50.0, 11.0, format!("Invoice number: {}", t.invoice_number)),
        (50.0, 11.0, format!("Invoice date: {}", show_date(&t.date))),
        (50.0, 11.0, format!("Due date: {}", show_date(&t.due_date))),
        (50.0, 11.0, format!("Currency: {}", t.currency)),
        (50.0, 10.0, "Bill to: Sandbox Trading Ltd, 1 Test Street, London".to_owned()),
    ];
    let totals = vec![
        (330.0, 11.0, format!("Subtotal: {}", money(&t.currency, t.sub_total))),
        (330.0, 11.0, format!("VAT: {}", money(&t.currency, t.total_tax))),
        (330.0, 12.0, format!("Total due: {}", money(&t.currency, t.total))),
    ];
    if t.layout == 1 {
        out.extend(totals.clone());
    }
    out.push((50.0, 10.0, format!("{basis}. Description | Qty | Unit price | VAT % | VAT | Amount")));
    for l in &t.lines {
        out.push((
            50.0,
            10.0,
            format!(
                "{} | {} | {:.2} | {}% | {:.2} | {:.2}",
                l.description, l.quantity, l.unit_amount, l.tax_rate, l.tax_amount, l.line_amount
            ),
        ));
    }
    if t.layout != 1 {
        out.extend(totals);
    }
    out.push((
        50.0,
        9.0,
        format!("Payment within {} days. Bank: 20-00-00 12345678", days_between(&t.date, &t.due_date)),
    ));
    out
}

fn days_between(a: &str, b: &str) -> i64 {
    let p = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("sandbox dates are valid");
    (p(b) - p(a)).num_days()
}

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
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes).expect("writing to memory does not fail");
    bytes
}
