//! Supplier bills as real PDF files (text layer, Helvetica), written with `lopdf`, in a few layouts
//! so an extraction cannot rely on one position: [`Layout::Classic`] (a table, totals on a second
//! page when the bill has more than four lines), [`Layout::Modern`] (a header block on the right,
//! different labels), [`Layout::Compact`] (one `label: value` per line) and [`Layout::Scan`] (a
//! picture of a page and no text layer, as a scanner makes). Credit notes say so. Every PDF carries
//! its answer in the Info dictionary under `EnrichdTruth`, scans too.

use lopdf::content::{Content, Operation};
use lopdf::{Document, Object, Stream, dictionary};

use super::Truth;

/// How a bill's document is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Classic,
    Modern,
    Compact,
    /// An image-only scan: a picture of a page, no text layer.
    Scan,
}

/// A rendered document.
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub pages: u32,
}

struct Page {
    lines: Vec<(f32, f32, f32, String)>,
}

impl Page {
    fn new() -> Page {
        Page { lines: Vec::new() }
    }
    fn text(&mut self, x: f32, y: f32, size: f32, text: impl Into<String>) {
        self.lines.push((x, y, size, text.into()));
    }
}

fn money(x: f64) -> String {
    format!("{x:.2}")
}

/// The Info dictionary key holding the document's answer (see the issue 16 contract).
pub const TRUTH_KEY: &str = "EnrichdTruth";

/// Renders a bill's document from its ground truth.
pub fn render(t: &Truth) -> Rendered {
    let title = if t.credit_note { "CREDIT NOTE" } else { "INVOICE" };
    let tax_id = t.vendor_tax_number.as_ref().map(|n| format!("Tax ID: {n}"));
    let basis = if t.amounts_are == "inclusive" { "Amounts include tax" } else { "Amounts exclude tax" };
    let mut pages = vec![Page::new()];
    match t.layout {
        Layout::Classic => {
            let p = &mut pages[0];
            p.text(50.0, 780.0, 18.0, t.vendor.clone());
            p.text(50.0, 766.0, 8.0, t.vendor_address.clone());
            if let Some(tax_id) = &tax_id {
                p.text(50.0, 755.0, 8.0, tax_id.clone());
            }
            p.text(50.0, 100.0, 8.0, t.payment_details.clone());
            p.text(50.0, 675.0, 8.0, basis);
            p.text(400.0, 780.0, 18.0, title);
            p.text(50.0, 740.0, 10.0, format!("Invoice number: {}", t.doc_number));
            p.text(50.0, 725.0, 10.0, format!("Invoice date: {}", t.txn_date));
            p.text(50.0, 710.0, 10.0, format!("Due date: {}", t.due_date));
            p.text(50.0, 695.0, 10.0, format!("Currency: {}", t.currency));
            p.text(50.0, 660.0, 10.0, "Description");
            p.text(300.0, 660.0, 10.0, "Qty");
            p.text(350.0, 660.0, 10.0, "Unit price");
            p.text(450.0, 660.0, 10.0, "Amount");
            let mut y = 640.0;
            for l in &t.lines {
                p.text(50.0, y, 10.0, l.description.clone());
                p.text(300.0, y, 10.0, l.quantity.to_string());
                p.text(350.0, y, 10.0, money(l.unit_price));
                p.text(450.0, y, 10.0, money(l.amount));
                y -= 18.0;
            }
            if t.lines.len() > 4 {
                pages[0].text(50.0, 60.0, 8.0, "Continued on page 2");
                pages.push(Page::new());
                y = 760.0;
            }
            let p = pages.last_mut().expect("one page at least");
            p.text(350.0, y - 20.0, 10.0, format!("Subtotal {}", money(t.subtotal)));
            p.text(350.0, y - 38.0, 10.0, format!("Tax {}% {}", t.tax_rate_percent, money(t.tax)));
            p.text(350.0, y - 56.0, 12.0, format!("Total {} {}", t.currency, money(t.total)));
        }
        Layout::Modern => {
            let p = &mut pages[0];
            p.text(50.0, 790.0, 22.0, title);
            p.text(330.0, 790.0, 11.0, t.vendor.clone());
            p.text(330.0, 770.0, 9.0, format!("Document no. {}", t.doc_number));
            p.text(330.0, 756.0, 9.0, format!("Issued {}", t.txn_date));
            p.text(330.0, 742.0, 9.0, format!("Payable by {}", t.due_date));
            p.text(330.0, 728.0, 8.0, t.vendor_address.clone());
            if let Some(tax_id) = &tax_id {
                p.text(330.0, 716.0, 8.0, tax_id.clone());
            }
            p.text(50.0, 700.0, 8.0, basis);
            p.text(50.0, 60.0, 8.0, t.payment_details.clone());
            let mut y = 680.0;
            for (i, l) in t.lines.iter().enumerate() {
                p.text(
                    50.0,
                    y,
                    9.0,
                    format!("{}. {} ({} x {})", i + 1, l.description, l.quantity, money(l.unit_price)),
                );
                p.text(470.0, y, 9.0, money(l.amount));
                y -= 16.0;
            }
            p.text(330.0, y - 20.0, 9.0, format!("Net {}", money(t.subtotal)));
            p.text(330.0, y - 34.0, 9.0, format!("VAT {}%: {}", t.tax_rate_percent, money(t.tax)));
            p.text(330.0, y - 52.0, 11.0, format!("Amount due: {} {}", money(t.total), t.currency));
        }
        Layout::Compact => {
            let p = &mut pages[0];
            let mut y = 800.0;
            let mut line = |p: &mut Page, s: String| {
                p.text(40.0, y, 10.0, s);
                y -= 14.0;
            };
            line(p, format!("{title} from {}", t.vendor));
            line(p, t.vendor_address.clone());
            if let Some(tax_id) = &tax_id {
                line(p, tax_id.clone());
            }
            line(p, basis.to_owned());
            line(p, format!("Number: {}", t.doc_number));
            line(p, format!("Date: {}", t.txn_date));
            line(p, format!("Due: {}", t.due_date));
            for l in &t.lines {
                line(p, format!("- {}: {} @ {} = {}", l.description, l.quantity, money(l.unit_price), money(l.amount)));
            }
            line(p, format!("Subtotal: {}", money(t.subtotal)));
            line(p, format!("Tax ({}%): {}", t.tax_rate_percent, money(t.tax)));
            line(p, format!("Total: {} {}", money(t.total), t.currency));
            line(p, t.payment_details.clone());
        }
        Layout::Scan => return Rendered { bytes: scan(t), pages: 1 },
    }
    let count = pages.len() as u32;
    Rendered { bytes: write(&pages, t), pages: count }
}

/// Puts the document's answer into its Info dictionary, scans included.
fn embed_truth(doc: &mut Document, t: &Truth) {
    let info_id = doc.add_object(dictionary! {
        "Producer" => Object::string_literal("enrichd QuickBooks sandbox"),
        TRUTH_KEY => Object::string_literal(t.answer().to_string()),
    });
    doc.trailer.set("Info", info_id);
}

fn write(pages: &[Page], t: &Truth) -> Vec<u8> {
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font",
        "Subtype" => "Type1",
        "BaseFont" => "Helvetica",
        "Encoding" => "WinAnsiEncoding",
    });
    let resources_id = doc.add_object(dictionary! {
        "Font" => dictionary! { "F1" => font_id },
    });
    let mut kids = Vec::new();
    for page in pages {
        let mut operations = Vec::new();
        for (x, y, size, text) in &page.lines {
            operations.push(Operation::new("BT", vec![]));
            operations.push(Operation::new("Tf", vec!["F1".into(), (*size).into()]));
            operations.push(Operation::new("Td", vec![(*x).into(), (*y).into()]));
            operations.push(Operation::new("Tj", vec![Object::string_literal(text.as_str())]));
            operations.push(Operation::new("ET", vec![]));
        }
        let content = Content { operations };
        let content_id = doc.add_object(Stream::new(dictionary! {}, content.encode().expect("content encodes")));
        let page_id = doc.add_object(dictionary! {
            "Type" => "Page",
            "Parent" => pages_id,
            "Contents" => content_id,
        });
        kids.push(page_id.into());
    }
    let count = kids.len() as i64;
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => kids,
            "Count" => count,
            "Resources" => resources_id,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog_id = doc.add_object(dictionary! {
        "Type" => "Catalog",
        "Pages" => pages_id,
    });
    doc.trailer.set("Root", catalog_id);
    embed_truth(&mut doc, t);
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes).expect("writing a PDF to memory cannot fail");
    bytes
}

/// A grey picture of a page: dark bars where a scanner would see lines of text, and no text layer.
fn scan(t: &Truth) -> Vec<u8> {
    let (w, h) = (300usize, 424usize);
    let mut pixels = vec![235u8; w * h];
    let rows = 6 + t.lines.len() * 2;
    for r in 0..rows {
        let y0 = 30 + r * 16;
        let len = 60 + (r * 37 + t.doc_number.len() * 11) % 180;
        for y in y0..(y0 + 7).min(h) {
            for x in 24..(24 + len).min(w) {
                pixels[y * w + x] = 40 + ((x * 7 + y * 3) % 30) as u8;
            }
        }
    }
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let image = Stream::new(
        dictionary! {
            "Type" => "XObject",
            "Subtype" => "Image",
            "Width" => w as i64,
            "Height" => h as i64,
            "ColorSpace" => "DeviceGray",
            "BitsPerComponent" => 8,
        },
        pixels,
    );
    let image_id = doc.add_object(image);
    let resources_id = doc.add_object(dictionary! { "XObject" => dictionary! { "Im1" => image_id } });
    let content = Content {
        operations: vec![
            Operation::new("q", vec![]),
            Operation::new("cm", vec![595.into(), 0.into(), 0.into(), 842.into(), 0.into(), 0.into()]),
            Operation::new("Do", vec!["Im1".into()]),
            Operation::new("Q", vec![]),
        ],
    };
    let content_id = doc.add_object(Stream::new(dictionary! {}, content.encode().expect("content encodes")));
    let page_id = doc.add_object(dictionary! { "Type" => "Page", "Parent" => pages_id, "Contents" => content_id });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => vec![page_id.into()],
            "Count" => 1,
            "Resources" => resources_id,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog_id);
    embed_truth(&mut doc, t);
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes).expect("writing a PDF to memory cannot fail");
    bytes
}
