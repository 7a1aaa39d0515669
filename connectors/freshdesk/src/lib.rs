//! Freshdesk (API v2): the connector, its config, and (feature `sandbox`) an account in memory that
//! behaves like Freshdesk, for tests, demos and benchmarks.

mod client;
mod config;
#[cfg(feature = "sandbox")]
pub mod sandbox;

pub use client::*;
pub use config::*;
