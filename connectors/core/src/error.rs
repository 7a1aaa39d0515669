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
}

impl ConnectorError {
    /// An error that trying again can fix.
    pub fn transient(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true, status: None, code: None, retry_after: None }
    }

    /// An error that trying again cannot fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false, status: None, code: None, retry_after: None }
    }
}
