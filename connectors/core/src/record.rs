use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ConnectorError;

/// The platform's own change marker for a record: WooCommerce `date_modified_gmt`, Zendesk
/// `updated_stamp`, QuickBooks `SyncToken`. Opaque: only ever compared for equality.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(pub String);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A file attached to a record (an invoice PDF), described but not downloaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRef {
    pub id: String,
    pub name: String,
    pub content_type: String,
    pub size: Option<u64>,
    /// Where the connector fetches it from; may be relative to the connection's base URL.
    pub href: String,
}

/// One platform object as pulled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The external id, as a string whatever the platform uses.
    pub id: String,
    pub version: Version,
    /// Field values by the names tasks and selectors use (`description`, `meta._yoast_wpseo_title`, ...).
    pub fields: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentRef>,
    /// The platform's own object, for the connector's use at write time (term ids, image ids). Never
    /// stored and never shown to a model.
    #[serde(skip)]
    pub native: Option<Value>,
}

impl Record {
    /// A field's value, `None` when absent or JSON null.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.get(name).filter(|v| !v.is_null())
    }
}

/// Where a listing continues. Connectors put whatever they need in `cursor` (a page number, a
/// platform cursor); the engine stores it so discovery resumes after a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    pub cursor: Option<String>,
    pub per_page: u32,
    /// Only records modified after this instant (RFC 3339, UTC), for incremental pulls.
    pub modified_after: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub records: Vec<Record>,
    /// The cursor of the next page; `None` when this was the last one.
    pub next: Option<String>,
    /// The platform's total count when it reports one (`X-WP-Total`).
    pub total: Option<u64>,
    /// On the last page (`next` is `None`) of a platform with a change feed (Zendesk's incremental
    /// export): the cursor a later listing starts from to see only what changed since. The engine
    /// keeps it per pipeline, so a restarted daemon or the next scheduled run misses nothing.
    pub resume: Option<String>,
}

/// What to write to one record: only these fields, and only if the record is still at `base_version`
/// (the engine checks; platforms with optimistic concurrency such as QuickBooks check too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub id: String,
    pub base_version: Version,
    pub fields: Map<String, Value>,
    /// The platform's own object as re-read just before this write ([`Record::native`]). Connectors
    /// whose platform replaces lists wholesale (WooCommerce `tags`, `images`) merge the change into
    /// it instead of truncating what is there.
    #[serde(skip)]
    pub native: Option<Value>,
    /// Whether the values fill what is missing ([`WriteMode::Merge`], every enrichment write) or put
    /// back exactly what an earlier write replaced ([`WriteMode::Restore`], undo).
    #[serde(default)]
    pub mode: WriteMode,
}

/// How a [`Change`]'s values meet what the record holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Add to the record: a list value is merged with the record's list (nothing already there is
    /// removed), text and meta values are set.
    #[default]
    Merge,
    /// Put back exactly these values, the ones an earlier write replaced: a list becomes exactly the
    /// given list (what the earlier write added is removed), and a JSON null means the field was
    /// absent, so it is deleted where the platform allows (a meta entry, say).
    Restore,
}

/// How one change ended.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteResult {
    /// Applied; the record's new version when the platform returned it.
    Written { version: Option<Version> },
    /// The platform itself refused because the record changed (QuickBooks stale `SyncToken`).
    Conflict { current: Option<Version> },
    /// Not applied, with the platform's reason and whether trying again can help.
    Failed(ConnectorError),
}

/// One change's outcome, by record id.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    pub id: String,
    pub result: WriteResult,
}

/// A write whose outcome arrives later: the job to poll and the records it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingWrite {
    pub entity: String,
    pub job: String,
    pub ids: Vec<String>,
}

/// The answer to [`crate::Connector::write`].
#[derive(Debug, Clone, PartialEq)]
pub enum WriteSubmission {
    Done(Vec<WriteOutcome>),
    Pending(PendingWrite),
}
