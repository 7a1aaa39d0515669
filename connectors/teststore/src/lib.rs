//! `teststore`: a small JSON record store reached over HTTP, and its sandbox server.
//!
//! It exists so that enrichd's engine, crash tests and benchmarks exercise the same paths a real
//! platform does — paginated listing, re-reads by id, batch writes with per-item errors and a 413 over
//! the batch limit, versions bumped by every write, bearer auth, 429/5xx faults — before the real
//! connectors land, and beside them afterwards as the cheapest platform to run against.
//!
//! The API (`/api/{entity}`):
//! - `GET ?page=P&per_page=N` (N ≤ 100) → `[{"id","version","fields"}]` ordered by id, with
//!   `X-Total` and `X-Total-Pages`; a page past the end is `200 []`.
//! - `GET ?ids=1,2,3` → those records (unknown ids are left out).
//! - `POST /batch` with `{"update":[{"id","fields"}]}` (≤ 100, else 413 and nothing applied) →
//!   `{"update":[{"id","version"} | {"id","error":{"code","message","status"}}]}` in request order.
//! - `GET /organisation` → the organisation's currencies, tax rates and accounts (404: none set).
//! - `POST /api/{entity}/look_up` with a bill query (`record_id`, `supplier_name`,
//!   `supplier_tax_number`, `invoice_number`, `total`, `date`) → the matched supplier (from the
//!   `suppliers` records' `name` and `tax_number`: tax number first, then name), the `{entity}`
//!   records it would duplicate (same supplier and invoice number, or same supplier, total and
//!   date, in any `status`), and the account code the supplier's bills' line items use most
//!   (404: look-ups not enabled).

mod connector;
#[cfg(feature = "sandbox")]
pub mod sandbox;

pub use connector::TestStore;

/// The most updates one batch request may carry.
pub const MAX_BATCH: usize = 100;
/// The largest page size the store serves.
pub const MAX_PER_PAGE: u32 = 100;
