//! Look-ups against the organisation's own data, for tasks that extract documents into records
//! (supplier bills): the currencies, tax rates and accounts it uses, the existing supplier a document
//! names, bills that would be duplicated, and the account code a supplier's recent bills use.
//! Connectors of accounting platforms implement them; the engine turns the answers into checks and
//! findings on a proposal. Every other connector keeps the defaults (`None`: nothing to look up).

use serde::{Deserialize, Serialize};

/// What the organisation uses, read when a run starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Organisation {
    /// ISO 4217 codes the organisation may bill in (its base currency first).
    pub currencies: Vec<String>,
    pub tax_rates: Vec<TaxRate>,
    pub accounts: Vec<Account>,
}

/// One tax rate of the organisation (Xero `TaxType`, QuickBooks `TaxCode`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaxRate {
    /// The platform's code (`INPUT2`, `7`).
    pub code: String,
    pub name: String,
    /// Percent (20.0 for 20 %).
    pub rate: f64,
}

/// One account of the chart of accounts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub code: String,
    pub name: String,
}

/// What a document says about a bill, as the model read it: what [`BillQuery`] looks up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BillQuery {
    /// The record the proposal is for (never its own duplicate).
    pub record_id: String,
    pub supplier_name: Option<String>,
    pub supplier_tax_number: Option<String>,
    pub invoice_number: Option<String>,
    pub total: Option<f64>,
    /// Issue date, `YYYY-MM-DD`.
    pub date: Option<String>,
}

/// What the organisation's data says about a [`BillQuery`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LookUp {
    /// The existing contact/vendor the document names; `None`: no match (creating one is a
    /// reviewer's explicit choice, never automatic).
    pub supplier: Option<SupplierMatch>,
    /// Bills in any status that this one would duplicate. A proposal with one is never written.
    pub duplicates: Vec<Duplicate>,
    /// The account code the supplier's recent bills use most, when there are any.
    pub account_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupplierMatch {
    /// The platform's contact/vendor id.
    pub id: String,
    pub name: String,
    /// `tax_number` or `name`: how it was matched (tax number first).
    pub matched_by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Duplicate {
    /// The other bill's id on the platform.
    pub id: String,
    pub invoice_number: Option<String>,
    pub status: String,
    /// Why it is a duplicate, for a person: `same supplier and invoice number INV-0042`.
    pub reason: String,
}
