#![recursion_limit = "256"]
//! WooCommerce (`wc/v3`): the platform's limits, and (feature `sandbox`) a store in memory that
//! behaves like a real WooCommerce 9.9 site, for tests, demos and benchmarks.

#[cfg(feature = "sandbox")]
pub mod sandbox;

/// The most items (create + update + delete) one `products/batch` request may carry.
pub const MAX_BATCH: usize = 100;
/// The largest `per_page` WordPress accepts.
pub const MAX_PER_PAGE: u64 = 100;
