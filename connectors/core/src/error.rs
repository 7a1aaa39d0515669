use std::time::Duration;

/// A failed platform call, classified: whether trying again can help, and how long the platform asked
/// us to wait. The message names the HTTP status and the platform's error code when there is one and
/// never contains credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConnectorError {
    pub message: String,
    /// Rate limits, 5xx, timeouts and dropped connections are retryable; validation errors, missing
    /// records and authentication failures are not.
    pub retryable: bool,
    pub status: Option<u16>,
    /// The platform's error code (`woocommerce_rest_product_invalid_id`).
    pub code: Option<String>,
    /// The wait the platform asked for (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// The platform was never asked about this record: an earlier call of the same write batch
    /// failed and the connector stopped there. Trying it again costs the record no attempt.
    pub deferred: bool,
}

impl ConnectorError {
    /// An error that trying again can fix.
    pub fn transient(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true, status: None, code: None, retry_after: None, deferred: false }
    }

    /// An error that trying again cannot fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false, status: None, code: None, retry_after: None, deferred: false }
    }

    /// A record of a write batch the connector did not send because `cause`, an earlier call of the
    /// same batch, failed: retryable as the cause is, after the wait it asked for, without costing
    /// the record an attempt.
    pub fn deferred(message: impl Into<String>, cause: &ConnectorError) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            status: cause.status,
            code: cause.code.clone(),
            retry_after: cause.retry_after,
            deferred: true,
        }
    }
}
