//! WooCommerce (`wc/v3`): the connector.

mod client;

pub use client::*;
