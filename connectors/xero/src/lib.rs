//! Xero Accounting API 2.0: the connector for draft supplier bills (`ACCPAY` invoices with PDF
//! attachments), its config, and (feature `sandbox`) an organisation in memory that behaves like Xero,
//! identity endpoints included, for tests, demos and benchmarks.

mod client;
mod config;
#[cfg(feature = "sandbox")]
pub mod sandbox;

pub use client::*;
pub use config::*;
