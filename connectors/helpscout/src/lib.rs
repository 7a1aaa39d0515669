//! Help Scout (Mailbox API 2.0): the connector, its config, OAuth2 client-credentials tokens, and
//! (feature `sandbox`) an account in memory that behaves like Help Scout, for tests, demos and
//! benchmarks.

mod client;
mod config;
#[cfg(feature = "sandbox")]
pub mod sandbox;
mod token;

pub use client::*;
pub use config::*;
pub use token::{ClientCredentials, TOKEN_PATH};
