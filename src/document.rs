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
