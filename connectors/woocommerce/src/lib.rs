#![recursion_limit = "256"]
//! WooCommerce (`wc/v3`): the connector, and (feature `sandbox`) a store in memory that behaves like
//! a real WooCommerce 9.9 site, for tests, demos and benchmarks.

mod client;
#[cfg(feature = "sandbox")]
pub mod sandbox;

pub use client::*;
