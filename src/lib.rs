//! enrichd: finds records missing fields on the platforms a business runs on, fills them with an AI
//! model in batches, tracks every record in SQLite or Postgres, holds results for review and writes
//! approved values back without ever clobbering a newer edit.

pub mod accounts;
pub mod checks;
pub mod cli;
pub mod config;
pub mod demo;
pub mod document;
pub mod engine;
pub mod estimate;
pub mod eval;
pub mod notify;
pub mod oauth;
pub mod provider;
pub mod roles;
pub mod sandbox;
pub mod scheduler;
pub mod select;
pub mod server;
pub mod store;
pub mod task;
pub mod telemetry;
