//! QuickBooks Online (Accounting API v3): the connector, its config, and (feature `sandbox`) a
//! company in memory that behaves like QuickBooks, for tests, demos and benchmarks.

mod client;
mod config;
#[cfg(feature = "sandbox")]
pub mod sandbox;

pub use client::*;
pub use config::*;
