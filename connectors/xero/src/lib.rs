//! Xero Accounting API 2.0: the connector for draft supplier bills (`ACCPAY` invoices with PDF
//! attachments), its config, the look-ups against the organisation's own data, and (feature
//! `sandbox`) an organisation in memory that behaves like Xero, identity endpoints included, for
//! tests, demos and benchmarks.

mod books;
mod client;
mod config;
#[cfg(feature = "sandbox")]
pub mod sandbox;

pub use books::{Books, CONTACTS_TTL, RECENT_BILLS, normalise_name, normalise_tax_number};
pub use client::*;
pub use config::*;
