//! QuickBooks Online (Accounting API v3): the connector, its config, the look-ups against the
//! company's own data, and (feature `sandbox`) a company in memory that behaves like QuickBooks, for
//! tests, demos and benchmarks.

mod books;
mod client;
mod config;
#[cfg(feature = "sandbox")]
pub mod sandbox;

pub use books::{Books, RECENT_BILLS, VENDORS_TTL, Vendor, bill_status, normalise_name, normalise_tax_number};
pub use client::*;
pub use config::*;
