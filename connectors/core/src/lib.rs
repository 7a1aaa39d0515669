//! What every enrichd platform connector shares: the [`Connector`] trait, the [`Record`] it pulls, the
//! [`Change`] it writes and the [`WriteOutcome`] it reports, error classification, and the HTTP
//! machinery (timeouts, `Retry-After`, backoff, rotating OAuth2 tokens) so no connector writes them again.
//!
//! A connector holds only what is true of its platform. It never decides whether to retry an item or
//! whether a write is allowed: it reports facts (versions, per-item outcomes, error classes) and the
//! engine decides.

pub mod conversation;
mod error;
pub mod gate;
pub mod http;
pub mod lookup;
pub mod oauth2;
mod record;
pub mod retry;
pub mod settings;

pub use error::ConnectorError;
pub use record::{
    AttachmentRef, Change, Page, PageRequest, PendingWrite, Record, Version, WriteMode, WriteOutcome, WriteResult,
    WriteSubmission,
};
pub use settings::{ConfigError, ConnectionSettings};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;

/// A link to a record in the platform's own web pages, for people (see [`Connector::record_links`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecordLink {
    /// What the link opens, in words: "Product page", "Edit in wp-admin", "Ticket in Zendesk".
    pub label: String,
    /// An absolute `https://` (or, for a local site, `http://`) URL.
    pub url: String,
}

impl RecordLink {
    /// A link, when `url` is an absolute http(s) URL (a value read from a record may be anything).
    pub fn new(label: impl Into<String>, url: impl Into<String>) -> Option<RecordLink> {
        let url = url.into();
        let web = url.starts_with("https://") || url.starts_with("http://");
        (web && !url.chars().any(|c| c.is_whitespace() || c.is_control()))
            .then(|| RecordLink { label: label.into(), url })
    }
}

/// One platform's API, as enrichd needs it: list candidate records page by page, fetch records by id
/// (to re-check versions just before writing), fetch attachments on demand, and write changes back.
///
/// The engine holds a connector as `Arc<dyn Connector>`; implementations must be cheap to share.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The platform kind as written in config (`woocommerce`, `zendesk`, `teststore`, ...).
    fn kind(&self) -> &'static str;

    /// Makes the same kind of authenticated call that listing makes, so `enrichd check` proves that
    /// credentials, base URL and permissions work for `entity`.
    async fn check(&self, entity: &str) -> Result<(), ConnectorError>;

    /// One page of candidate records of `entity`. `Page::next` is `None` on the last page.
    async fn list(&self, entity: &str, request: &PageRequest) -> Result<Page, ConnectorError>;

    /// The current state of the given records. Ids the platform no longer knows are simply absent.
    async fn fetch(&self, entity: &str, ids: &[String]) -> Result<Vec<Record>, ConnectorError>;

    /// Completes records read by [`Connector::fetch`] — which reads what a write needs — into what a
    /// listing gives a task: a ticket's conversation and organisation, say. Used for records that
    /// arrive by id (webhooks) rather than by listing. The default leaves them as they are.
    async fn complete(&self, entity: &str, records: &mut [Record]) -> Result<(), ConnectorError> {
        let _ = (entity, records);
        Ok(())
    }

    /// The bytes of an attachment (an invoice PDF), fetched only when a task needs it.
    async fn fetch_attachment(&self, attachment: &AttachmentRef) -> Result<Bytes, ConnectorError> {
        Err(ConnectorError::permanent(format!(
            "{} connector has no attachments (asked for attachment {})",
            self.kind(),
            attachment.id
        )))
    }

    /// Links to record `external_id` of `entity` in the platform's own web pages (the product page
    /// and its edit page in wp-admin, a ticket in the agent view, a bill), for the review UI, from
    /// what the connection's settings and the record as pulled (`fields`) say; no network call.
    /// The default: none.
    fn record_links(&self, entity: &str, external_id: &str, fields: &Value) -> Vec<RecordLink> {
        let _ = (entity, external_id, fields);
        Vec::new()
    }

    /// The most changes one [`Connector::write`] call accepts (WooCommerce 100, QuickBooks 30).
    fn max_write_batch(&self) -> usize;

    /// Writes `changes` (at most [`Connector::max_write_batch`]). Only the fields in each change are
    /// sent. The result is either every item's outcome now, or a [`PendingWrite`] to poll (Zendesk
    /// `job_status`). An `Err` means the call as a whole failed and nothing is known to be applied.
    async fn write(&self, entity: &str, changes: &[Change]) -> Result<WriteSubmission, ConnectorError>;

    /// Whether `stored` (read back after a write) holds `written`, after the platform's own
    /// normalisation: WooCommerce entity-encodes `&` and re-wraps HTML, for instance. The default is
    /// plain equality.
    fn holds(&self, field: &str, written: &Value, stored: Option<&Value>) -> bool {
        let _ = field;
        stored == Some(written)
    }

    /// Whether `stored` (read back after a [`WriteMode::Restore`] change) is exactly `previous` again:
    /// unlike [`Connector::holds`], a list must not hold more than `previous` (what our write added
    /// must be gone), and a null `previous` (the field was absent) is held by an absent or null
    /// field. The default is [`Connector::holds`] with that null rule.
    fn restored(&self, field: &str, previous: &Value, stored: Option<&Value>) -> bool {
        if previous.is_null() {
            return stored.is_none_or(Value::is_null);
        }
        self.holds(field, previous, stored)
    }

    /// Why a field read back after a [`WriteMode::Restore`] change is not `previous` again, and what
    /// is left of the earlier write, in the platform's terms (what it cannot restore and why).
    fn not_restored_reason(&self, field: &str, previous: &Value, stored: Option<&Value>) -> String {
        let _ = previous;
        match stored {
            None => format!("{field} was absent when the record was read back after the revert"),
            Some(v) => format!("{field} still held {v} when the record was read back after the revert"),
        }
    }

    /// Why a field read back after a write did not hold the value written, in the platform's terms.
    fn not_held_reason(&self, field: &str, stored: Option<&Value>) -> String {
        match stored {
            None => format!("{field} was absent when the record was read back after the write"),
            Some(_) => format!("{field} held a different value when the record was read back after the write"),
        }
    }

    /// The values `field` may take on the platform right now (a dropdown custom field's options),
    /// or `None` when the platform does not restrict it. The engine reads them when a run starts and
    /// puts them into the task's JSON Schema as an `enum`, so a model cannot answer a value that
    /// does not exist.
    async fn allowed_values(&self, entity: &str, field: &str) -> Result<Option<Vec<String>>, ConnectorError> {
        let _ = (entity, field);
        Ok(None)
    }

    /// What the organisation uses (currencies, tax rates, accounts), for checks on extracted
    /// documents; `None` when the platform has no such notion (every non-accounting connector).
    async fn organisation(&self) -> Result<Option<lookup::Organisation>, ConnectorError> {
        Ok(None)
    }

    /// Looks a bill read from a document up in the organisation's own data: the supplier it names,
    /// bills it would duplicate (same supplier and invoice number, or same supplier, total and date,
    /// in any status), the account code the supplier's recent bills use. `None` when the platform
    /// has no look-ups for `entity`.
    async fn look_up(&self, entity: &str, bill: &lookup::BillQuery) -> Result<Option<lookup::LookUp>, ConnectorError> {
        let _ = (entity, bill);
        Ok(None)
    }

    /// Polls a write whose outcome arrives later; `Ok(None)` while it is still running.
    async fn poll_write(&self, pending: &PendingWrite) -> Result<Option<Vec<WriteOutcome>>, ConnectorError> {
        Err(ConnectorError::permanent(format!(
            "{} connector does not make asynchronous writes (job {})",
            self.kind(),
            pending.job
        )))
    }
}
