//! Documents a prompt carries beside its text: a record's attachments (an invoice PDF, a scanned
//! receipt) fetched through [`enrichd_connector::Connector::fetch_attachment`] once per item.

use bytes::Bytes;

/// One document as the model will see it.
#[derive(Clone, PartialEq)]
pub struct Document {
    /// The file name on the platform (`INV-0042.pdf`).
    pub name: String,
    /// `application/pdf`, `image/png` or `image/jpeg`.
    pub media_type: String,
    pub bytes: Bytes,
    /// The PDF's text layer extracted locally, when it has one; `None` for images and image-only PDFs.
    pub text: Option<String>,
    /// Pages of a PDF (1 for an image).
    pub pages: Option<u32>,
}

impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Document")
            .field("name", &self.name)
            .field("media_type", &self.media_type)
            .field("bytes", &self.bytes.len())
            .field("pages", &self.pages)
            .field("text", &self.text.as_ref().map(String::len))
            .finish()
    }
}

/// The media types a task may read.
pub const PDF: &str = "application/pdf";
pub const PNG: &str = "image/png";
pub const JPEG: &str = "image/jpeg";
pub const MEDIA_TYPES: [&str; 3] = [PDF, PNG, JPEG];

/// How long extracting one PDF's text layer may take before the document is refused.
const EXTRACT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Below this many letters and digits a PDF is taken to have no usable text layer (an image-only
/// scan, outlined text).
const MIN_TEXT_CHARS: usize = 20;

impl Document {
    /// Whether this is a PDF.
    pub fn is_pdf(&self) -> bool {
        self.media_type == PDF
    }

    /// Whether this is an image (PNG or JPEG).
    pub fn is_image(&self) -> bool {
        self.media_type.starts_with("image/")
    }

    /// Pages as counted for limits and tokens: a PDF's pages, 1 for an image.
    pub fn page_count(&self) -> u32 {
        self.pages.unwrap_or(1).max(1)
    }
}

/// The media type of an attachment a task can read, from its declared content type or, when that
/// is missing or generic (`application/octet-stream`), its file name; `None` for anything else.
pub fn media_type(content_type: &str, name: &str) -> Option<&'static str> {
    let declared = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match declared.as_str() {
        "application/pdf" | "application/x-pdf" => return Some(PDF),
        "image/png" => return Some(PNG),
        "image/jpeg" | "image/jpg" | "image/pjpeg" => return Some(JPEG),
        "" | "application/octet-stream" | "binary/octet-stream" => {}
        _ => return None,
    }
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".pdf") {
        Some(PDF)
    } else if lower.ends_with(".png") {
        Some(PNG)
    } else if lower.ends_with(".jpg") || lower.ends_with(".jpeg") {
        Some(JPEG)
    } else {
        None
    }
}

/// Why a fetched attachment cannot be used (always permanent for the item).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("document {name}: {reason}")]
pub struct Unreadable {
    pub name: String,
    pub reason: String,
}

/// Builds the [`Document`] for fetched bytes: for a PDF, its page count and text layer (extracted
/// locally with `pdf-extract`, behind `catch_unwind` and a timeout, so a hostile file can neither
/// crash nor hang the daemon; `text` is `None` when the PDF has no usable text layer). The bytes
/// must look like what `media_type` says.
pub async fn read(name: &str, media_type: &'static str, bytes: Bytes) -> Result<Document, Unreadable> {
    let unreadable = |reason: String| Unreadable { name: name.to_owned(), reason };
    let looks_right = match media_type {
        // Readers accept a header within the first KiB (some generators put junk before it).
        PDF => bytes[..bytes.len().min(1024)].windows(5).any(|w| w == b"%PDF-"),
        PNG => bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        JPEG => bytes.starts_with(&[0xFF, 0xD8, 0xFF]),
        _ => false,
    };
    if !looks_right {
        return Err(unreadable(format!("the file is not a {media_type} (its first bytes say otherwise)")));
    }
    if media_type != PDF {
        return Ok(Document {
            name: name.to_owned(),
            media_type: media_type.to_owned(),
            bytes,
            text: None,
            pages: Some(1),
        });
    }
    let work = bytes.clone();
    let handle = tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| text_layer(&work)))
    });
    // A thread cannot be killed: on a timeout the extraction is abandoned (it finishes or not on
    // its blocking thread) and the document refused.
    let layer = match tokio::time::timeout(EXTRACT_TIMEOUT, handle).await {
        Err(_) => {
            return Err(unreadable(format!("reading its text layer took longer than {}s", EXTRACT_TIMEOUT.as_secs())));
        }
        Ok(Err(e)) => return Err(unreadable(format!("reading its text layer failed: {e}"))),
        Ok(Ok(Err(_))) => return Err(unreadable("the PDF reader gave up on it (a malformed file)".into())),
        Ok(Ok(Ok(layer))) => layer.map_err(unreadable)?,
    };
    Ok(Document {
        name: name.to_owned(),
        media_type: PDF.to_owned(),
        bytes,
        text: layer.text,
        pages: Some(layer.pages),
    })
}

/// What the local reader found in a PDF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextLayer {
    pub pages: u32,
    /// Whitespace-squeezed text of all pages, `None` when there is no usable text layer.
    pub text: Option<String>,
}

/// Reads a PDF's page count and text layer. Too few letters and digits, or too many undecodable
/// characters (U+FFFD, private use, controls), mean no usable text layer: every extractor returns
/// "success" with empty or garbled text for a scan, so the result is judged here rather than
/// trusted. (Counting fonts per page is not used: lopdf misses fonts inherited from an inline
/// `Resources` on the page tree, which gropdf writes.)
pub fn text_layer(bytes: &[u8]) -> Result<TextLayer, String> {
    let doc = pdf_extract::Document::load_mem(bytes).map_err(|e| format!("not a readable PDF: {e}"))?;
    let pages = doc.get_pages().len() as u32;
    if pages == 0 {
        return Err("the PDF has no pages".into());
    }
    let Ok(by_page) = pdf_extract::extract_text_from_mem_by_pages(bytes) else {
        return Ok(TextLayer { pages, text: None });
    };
    let text = by_page.iter().map(|p| squeeze(p)).filter(|p| !p.is_empty()).collect::<Vec<_>>().join("\n\n");
    Ok(TextLayer { pages, text: usable(&text).then_some(text) })
}

/// Whether extracted text reads as text: enough letters and digits, few undecodable characters.
fn usable(text: &str) -> bool {
    let visible: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
    let alnum = visible.iter().filter(|c| c.is_alphanumeric()).count();
    let bad = visible
        .iter()
        .filter(|c| **c == '\u{FFFD}' || ('\u{E000}'..='\u{F8FF}').contains(*c) || c.is_control())
        .count();
    alnum >= MIN_TEXT_CHARS && bad * 20 <= visible.len() && alnum * 2 >= visible.len()
}

/// Runs of spaces and tabs become one space, lines are trimmed, and no more than one blank line
/// is kept in a row (layout padding costs tokens and says nothing).
fn squeeze(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        out.push_str(&line);
    }
    out
}

/// The string value of `key` in a PDF's document Info dictionary (UTF-16 with a byte-order mark or
/// plain bytes), if the file has one. The sandbox's simulated model reads its ground truth this way.
pub fn info_string(bytes: &[u8], key: &str) -> Option<String> {
    let doc = pdf_extract::Document::load_mem(bytes).ok()?;
    let info = doc.trailer.get(b"Info").ok()?;
    let dict = match info {
        pdf_extract::Object::Reference(id) => doc.get_dictionary(*id).ok()?,
        pdf_extract::Object::Dictionary(d) => d,
        _ => return None,
    };
    let raw = match dict.get(key.as_bytes()).ok()? {
        pdf_extract::Object::String(raw, _) => raw.clone(),
        _ => return None,
    };
    if let Some(utf16) = raw.strip_prefix(&[0xFE, 0xFF]) {
        let units: Vec<u16> = utf16.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])).collect();
        return String::from_utf16(&units).ok();
    }
    Some(String::from_utf8(raw.clone()).unwrap_or_else(|_| raw.iter().map(|b| *b as char).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_come_from_the_content_type_or_the_name() {
        assert_eq!(media_type("application/pdf", "x"), Some(PDF));
        assert_eq!(media_type("image/jpg", "x"), Some(JPEG));
        assert_eq!(media_type("application/octet-stream", "Scan.PDF"), Some(PDF));
        assert_eq!(media_type("", "photo.jpeg"), Some(JPEG));
        assert_eq!(media_type("application/vnd.ms-excel", "sheet.pdf"), None);
        assert_eq!(media_type("", "notes.txt"), None);
    }

    #[test]
    fn squeezing_keeps_words_and_one_blank_line() {
        assert_eq!(squeeze("  Total   due:\t\t 12.00  \n\n\n\nInvoice  INV-1 "), "Total due: 12.00\n\nInvoice INV-1");
    }

    #[test]
    fn garbled_or_sparse_text_is_not_a_text_layer() {
        assert!(usable("Invoice INV-0042 total 1,234.56 EUR due 2026-01-31"));
        assert!(!usable("1 2"));
        assert!(!usable(&"\u{FFFD}".repeat(40)));
        assert!(!usable(&format!("{}{}", "Invoice number 42 ".repeat(2), "\u{E001}".repeat(30))));
    }
}
