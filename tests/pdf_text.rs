//! The local PDF text layer (for servers without document input, and the checks that look for a
//! total in the document) on PDFs from different generators, made at test time: LibreOffice
//! Writer, groff's gropdf, a Rust writer, and an image-only scan. The key values must come out, the
//! text must be squeezed, and a scan must be told apart from a text PDF (no text layer), never read
//! as an empty success. LibreOffice and groff are installed by `.ci/run`; without them (outside
//! CI) their cases are skipped with a note.

use std::process::Command;

use enrichd::document::{self, PDF};
use enrichd::sandbox::provider::documents::{scanned_pdf, text_pdf};

fn have(tool: &str) -> bool {
    let found =
        Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{tool} is required in CI (.ci/run installs it)");
        eprintln!("skipping: {tool} is not installed");
    }
    found
}

/// The invoice every generator sets, with non-ASCII a supplier's name has.
const LINES: [&str; 5] = [
    "Rechnung / Invoice INV-2026-0815",
    "Lieferant: Müller & Söhne GmbH, Straße 5",
    "Office supplies, fluffy towels",
    "Zwischensumme 1,000.00 EUR",
    "Gesamtbetrag / Total 1,190.00 EUR",
];

fn assert_reads_the_invoice(generator: &str, bytes: &[u8], pages: u32) {
    let layer = document::text_layer(bytes).unwrap_or_else(|e| panic!("{generator}: {e}"));
    assert_eq!(layer.pages, pages, "{generator}");
    let text = layer.text.unwrap_or_else(|| panic!("{generator}: a text PDF was taken for a scan"));
    for needle in ["INV-2026-0815", "1,190.00", "Müller", "Söhne", "Straße", "fluffy"] {
        assert!(text.contains(needle), "{generator}: {needle:?} missing from the text layer:\n{text}");
    }
    assert!(!text.contains("  "), "{generator}: runs of spaces are squeezed:\n{text}");
    assert!(!text.contains('\u{FFFD}'), "{generator}: no undecodable characters:\n{text}");
}

#[test]
fn libreoffice_writer() {
    if !have("soffice") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("invoice.txt");
    std::fs::write(&source, LINES.join("\n")).unwrap();
    let out = Command::new("soffice")
        .args(["--headless", "--norestore", "--infilter=Text (encoded):UTF8,LF,,,"])
        .args(["--convert-to", "pdf:writer_pdf_Export", "--outdir"])
        .arg(dir.path())
        .arg(&source)
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let pdf = dir.path().join("invoice.pdf");
    assert!(pdf.exists(), "soffice made no PDF: {}", String::from_utf8_lossy(&out.stderr));
    assert_reads_the_invoice("LibreOffice", &std::fs::read(pdf).unwrap(), 1);
}

#[test]
fn groff_gropdf() {
    if !have("gropdf") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Two pages, non-embedded Times, UTF-8 input through preconv (-k).
    let mut source = String::from(".nf\n");
    source.push_str(&LINES.join("\n"));
    source.push_str("\n.bp\nPage two: terms of payment, 30 days.\n");
    let path = dir.path().join("invoice.roff");
    std::fs::write(&path, source).unwrap();
    let out = Command::new("groff").args(["-k", "-Tpdf"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "groff: {}", String::from_utf8_lossy(&out.stderr));
    assert_reads_the_invoice("groff", &out.stdout, 2);
}

#[test]
fn rust_writer() {
    let page: Vec<String> = LINES.iter().map(|l| l.to_string()).collect();
    assert_reads_the_invoice("Rust writer", &text_pdf(&[page], None), 1);
}

#[test]
fn an_image_only_scan_has_no_text_layer() {
    let layer = document::text_layer(&scanned_pdf(2, None)).unwrap();
    assert_eq!((layer.pages, layer.text), (2, None));
}

#[tokio::test]
async fn reading_a_fetched_file_checks_what_it_is() {
    let page: Vec<String> = LINES.iter().map(|l| l.to_string()).collect();
    let doc = document::read("INV.pdf", PDF, text_pdf(&[page], None).into()).await.unwrap();
    assert_eq!(doc.pages, Some(1));
    assert!(doc.text.as_deref().unwrap().contains("INV-2026-0815"));
    let e = document::read("INV.pdf", PDF, bytes::Bytes::from_static(b"<html>not a pdf</html>")).await.unwrap_err();
    assert!(e.to_string().starts_with("document INV.pdf: the file is not a application/pdf"), "{e}");
    // Truncated and junk PDFs are errors, never a panic or a hang.
    let whole = text_pdf(&[vec!["x".into()]], None);
    for broken in [&whole[..whole.len() / 2], b"%PDF-1.7\n%%EOF".as_slice(), b"%PDF-1.4\n1 0 obj << /Type /Catalog >>"]
    {
        match document::read("broken.pdf", PDF, bytes::Bytes::copy_from_slice(broken)).await {
            Err(e) => assert!(e.to_string().starts_with("document broken.pdf: "), "{e}"),
            Ok(doc) => assert_eq!(doc.text, None, "a broken file yields no text: {doc:?}"),
        }
    }
}
