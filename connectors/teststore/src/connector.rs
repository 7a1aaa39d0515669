use std::time::Duration;

use async_trait::async_trait;
use enrichd_connector::lookup::{BillQuery, LookUp, Organisation};
use enrichd_connector::{
    AttachmentRef, Change, Connector, ConnectorError, Page, PageRequest, Record, Version, WriteOutcome, WriteResult,
    WriteSubmission, http,
};
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{MAX_BATCH, MAX_PER_PAGE};

/// The `teststore` connector.
pub struct TestStore {
    base_url: String,
    token: SecretString,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct WireRecord {
    id: String,
    version: String,
    fields: Map<String, Value>,
    #[serde(default)]
    attachments: Vec<AttachmentRef>,
}

#[derive(Deserialize)]
struct BatchResponse {
    update: Vec<BatchItem>,
}

#[derive(Deserialize)]
struct BatchItem {
    id: String,
    version: Option<String>,
    error: Option<BatchError>,
}

#[derive(Deserialize)]
struct BatchError {
    code: String,
    message: String,
    status: u16,
}

impl TestStore {
    /// A connector for the store at `base_url` (without `/api`), authenticating with `token`.
    pub fn new(base_url: &str, token: SecretString, timeout: Duration) -> Self {
        Self { base_url: base_url.trim_end_matches('/').to_owned(), token, http: http::client(timeout) }
    }

    fn url(&self, entity: &str) -> String {
        format!("{}/api/{entity}", self.base_url)
    }

    async fn get_records(
        &self,
        entity: &str,
        query: &[(&str, String)],
        what: &str,
    ) -> Result<(Vec<Record>, HeaderMap), ConnectorError> {
        http::with_retries(4, Duration::from_millis(200), || async {
            let request = self.http.get(self.url(entity)).bearer_auth(self.token.expose_secret()).query(query);
            let response = http::send(request, what).await?;
            let headers = response.headers().clone();
            let records: Vec<WireRecord> = http::json(response, what).await?;
            Ok((records.into_iter().map(into_record).collect(), headers))
        })
        .await
    }
}

fn into_record(wire: WireRecord) -> Record {
    Record {
        id: wire.id,
        version: Version(wire.version),
        fields: wire.fields,
        attachments: wire.attachments,
        native: None,
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.parse().ok()
}

#[async_trait]
impl Connector for TestStore {
    fn kind(&self) -> &'static str {
        "teststore"
    }

    async fn check(&self, entity: &str) -> Result<(), ConnectorError> {
        let what = format!("teststore: list {entity}");
        self.get_records(entity, &[("page", "1".into()), ("per_page", "1".into())], &what).await.map(|_| ())
    }

    async fn list(&self, entity: &str, request: &PageRequest) -> Result<Page, ConnectorError> {
        let page: u64 = match &request.cursor {
            None => 1,
            Some(c) => c.parse().map_err(|_| ConnectorError::permanent(format!("teststore: bad page cursor {c:?}")))?,
        };
        let per_page = request.per_page.clamp(1, MAX_PER_PAGE);
        let what = format!("teststore: list {entity} page {page}");
        let (records, headers) =
            self.get_records(entity, &[("page", page.to_string()), ("per_page", per_page.to_string())], &what).await?;
        let pages = header_u64(&headers, "X-Total-Pages");
        let last = records.is_empty() || pages.is_some_and(|p| page >= p);
        Ok(Page {
            records,
            next: (!last).then(|| (page + 1).to_string()),
            total: header_u64(&headers, "X-Total"),
            resume: None,
        })
    }

    async fn fetch(&self, entity: &str, ids: &[String]) -> Result<Vec<Record>, ConnectorError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_PER_PAGE as usize) {
            let what = format!("teststore: fetch {} {entity} records", chunk.len());
            let (records, _) = self.get_records(entity, &[("ids", chunk.join(","))], &what).await?;
            out.extend(records);
        }
        Ok(out)
    }

    async fn fetch_attachment(&self, attachment: &AttachmentRef) -> Result<bytes::Bytes, ConnectorError> {
        let what = format!("teststore: attachment {} ({})", attachment.name, attachment.id);
        let url = if attachment.href.starts_with("http") {
            attachment.href.clone()
        } else {
            format!("{}{}", self.base_url, attachment.href)
        };
        let response = http::send(self.http.get(url).bearer_auth(self.token.expose_secret()), &what).await?;
        response.bytes().await.map_err(|e| ConnectorError::transient(format!("{what}: reading the body: {e}")))
    }

    fn max_write_batch(&self) -> usize {
        MAX_BATCH
    }

    async fn organisation(&self) -> Result<Option<Organisation>, ConnectorError> {
        let what = "teststore: read the organisation";
        http::with_retries(4, Duration::from_millis(200), || async {
            let request =
                self.http.get(format!("{}/organisation", self.base_url)).bearer_auth(self.token.expose_secret());
            match http::send(request, what).await {
                Ok(response) => http::json(response, what).await.map(Some),
                Err(e) if e.status == Some(404) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn look_up(&self, entity: &str, bill: &BillQuery) -> Result<Option<LookUp>, ConnectorError> {
        let what = format!("teststore: look up {entity} record {}", bill.record_id);
        http::with_retries(4, Duration::from_millis(200), || async {
            let request = self
                .http
                .post(format!("{}/look_up", self.url(entity)))
                .bearer_auth(self.token.expose_secret())
                .json(bill);
            match http::send(request, &what).await {
                Ok(response) => http::json(response, &what).await.map(Some),
                Err(e) if e.status == Some(404) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn write(&self, entity: &str, changes: &[Change]) -> Result<WriteSubmission, ConnectorError> {
        let what = format!("teststore: batch update of {} {entity} records", changes.len());
        let body = json!({
            "update": changes.iter().map(|c| json!({"id": c.id, "fields": c.fields})).collect::<Vec<_>>()
        });
        let request =
            self.http.post(format!("{}/batch", self.url(entity))).bearer_auth(self.token.expose_secret()).json(&body);
        let response = http::send(request, &what).await?;
        let batch: BatchResponse = http::json(response, &what).await?;
        if batch.update.len() != changes.len() {
            return Err(ConnectorError::transient(format!(
                "{what}: answered {} outcomes for {} changes",
                batch.update.len(),
                changes.len()
            )));
        }
        let outcomes = batch
            .update
            .into_iter()
            .map(|item| {
                let result = match (item.error, item.version) {
                    (Some(e), _) => WriteResult::Failed(ConnectorError {
                        message: format!("teststore: record {}: HTTP {} {}: {}", item.id, e.status, e.code, e.message),
                        retryable: e.status == 429 || e.status >= 500,
                        status: Some(e.status),
                        code: Some(e.code),
                        retry_after: None,
                        deferred: false,
                    }),
                    (None, version) => WriteResult::Written { version: version.map(Version) },
                };
                WriteOutcome { id: item.id, result }
            })
            .collect();
        Ok(WriteSubmission::Done(outcomes))
    }
}
