//! An item's documents: the attachment list its record came with, and the bytes of each attachment
//! once fetched (with the text layer extracted from a PDF), so an attachment is fetched from the
//! platform once per item whatever happens after (retries, batch resubmission, the review page).

use bytes::Bytes;
use enrichd_connector::AttachmentRef;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Result, Store, StoreError, now_ms};
use crate::document::Document;

/// A fetched attachment as stored: which attachment it was, and the document.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDocument {
    pub attachment_id: String,
    pub document: Document,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
}

impl Store {
    /// The attachments item `item_id`'s record was listed with, in the connector's order.
    pub async fn attachments_of(&self, item_id: i64) -> Result<Vec<AttachmentRef>> {
        let row = sqlx::query("SELECT attachments FROM items WHERE id = $1")
            .bind(item_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("item {item_id}")))?;
        let text: Option<String> = row.try_get("attachments")?;
        match text {
            None => Ok(Vec::new()),
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("item {item_id}: attachments: {e}"))),
        }
    }

    /// The documents fetched for item `item_id`, in the record's attachment order. The review page
    /// serves these; the engine sends them again on a retry without fetching.
    pub async fn documents_of(&self, item_id: i64) -> Result<Vec<StoredDocument>> {
        let rows = sqlx::query(
            "SELECT attachment_id, name, media_type, bytes, sha256, text, pages FROM item_documents \
             WHERE item_id = $1 ORDER BY position, attachment_id",
        )
        .bind(item_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let bytes: Vec<u8> = row.try_get("bytes")?;
                let pages: Option<i64> = row.try_get("pages")?;
                Ok(StoredDocument {
                    attachment_id: row.try_get("attachment_id")?,
                    sha256: row.try_get("sha256")?,
                    document: Document {
                        name: row.try_get("name")?,
                        media_type: row.try_get("media_type")?,
                        bytes: Bytes::from(bytes),
                        text: row.try_get("text")?,
                        pages: pages.map(|p| p.clamp(0, u32::MAX as i64) as u32),
                    },
                })
            })
            .collect()
    }

    /// Keeps `document`, fetched for item `item_id` from attachment `attachment_id` (the
    /// `position`th of the record's list). A document already kept for that attachment stays as it
    /// was (two workers that fetched it at once store it once).
    pub async fn save_document(
        &self,
        item_id: i64,
        attachment_id: &str,
        position: usize,
        document: &Document,
    ) -> Result<()> {
        let sha256 = hex::encode(Sha256::digest(&document.bytes));
        sqlx::query(
            "INSERT INTO item_documents (item_id, attachment_id, position, name, media_type, bytes, sha256, text, pages, fetched_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (item_id, attachment_id) DO NOTHING",
        )
        .bind(item_id)
        .bind(attachment_id)
        .bind(position as i64)
        .bind(document.name.as_str())
        .bind(document.media_type.as_str())
        .bind(document.bytes.to_vec())
        .bind(sha256)
        .bind(document.text.as_deref())
        .bind(document.pages.map(i64::from))
        .bind(now_ms())
        .execute(&self.writer)
        .await?;
        Ok(())
    }
}
