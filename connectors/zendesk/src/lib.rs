//! Zendesk Support (API v2): the connector, its config, and (feature `sandbox`) an account in memory
//! that behaves like Zendesk, for tests, demos and benchmarks.

mod client;
mod config;
#[cfg(feature = "sandbox")]
pub mod sandbox;

pub use client::*;
pub use config::*;
