//! What the connector knows of the company's own data: its currencies, purchase tax codes and
//! accounts ([`Books`], read once per connector), its vendors (read again after [`VENDORS_TTL`]),
//! and the look-ups the engine makes for a bill read from a document.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use enrichd_connector::ConnectorError;
use enrichd_connector::lookup::{Account, BillQuery, Duplicate, LookUp, Organisation, SupplierMatch, TaxRate};
use serde_json::Value;

use crate::QuickBooks;

/// How long the vendor list is trusted before it is read again.
pub const VENDORS_TTL: Duration = Duration::from_secs(300);
/// How many of a vendor's latest bills the account suggestion looks at.
pub const RECENT_BILLS: u32 = 100;
/// QuickBooks' default account for what nobody categorised: never suggested.
const UNCATEGORIZED: &str = "uncategorized";

/// One account: its id, name and number (`AcctNum`, optional in QuickBooks).
#[derive(Debug, Clone, PartialEq)]
struct AccountInfo {
    id: String,
    name: String,
    number: Option<String>,
}

impl AccountInfo {
    /// The code the bill vocabulary uses: the account number, or the id when it has none.
    fn code(&self) -> String {
        self.number.clone().unwrap_or_else(|| self.id.clone())
    }
}

/// The company's settings as the connector uses them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Books {
    /// What [`enrichd_connector::Connector::organisation`] answers.
    pub organisation: Organisation,
    accounts: Vec<AccountInfo>,
    /// Tax code id → purchase percent (codes without purchase rates have none).
    rates: HashMap<String, f64>,
}

impl Books {
    /// Builds from the `Preferences`, `CompanyCurrency`, `TaxCode`, `TaxRate` and `Account` rows.
    pub fn from_rows(
        preferences: Option<&Value>,
        company_currencies: &[Value],
        tax_codes: &[Value],
        tax_rates: &[Value],
        accounts: &[Value],
    ) -> Books {
        let mut currencies = Vec::new();
        let prefs = preferences.map(|p| &p["CurrencyPrefs"]);
        if let Some(home) = prefs.and_then(|c| c["HomeCurrency"]["value"].as_str()) {
            currencies.push(home.to_owned());
        }
        if prefs.is_some_and(|c| c["MultiCurrencyEnabled"] == true) {
            for c in company_currencies.iter().filter(|c| c["Active"] != false) {
                if let Some(code) = c["Code"].as_str()
                    && !currencies.iter().any(|k| k == code)
                {
                    currencies.push(code.to_owned());
                }
            }
        }
        let rate_values: HashMap<&str, f64> =
            tax_rates.iter().filter_map(|r| Some((r["Id"].as_str()?, r["RateValue"].as_f64()?))).collect();
        let mut rates = HashMap::new();
        let mut tax = Vec::new();
        for code in tax_codes.iter().filter(|c| c["Active"] != false) {
            let Some(id) = code["Id"].as_str() else { continue };
            let details: Vec<&Value> =
                code["PurchaseTaxRateList"]["TaxRateDetail"].as_array().into_iter().flatten().collect();
            if details.is_empty() {
                continue;
            }
            let rate: f64 = details
                .iter()
                .filter_map(|d| d["TaxRateRef"]["value"].as_str())
                .filter_map(|r| rate_values.get(r))
                .sum();
            rates.insert(id.to_owned(), rate);
            tax.push(TaxRate { code: id.to_owned(), name: code["Name"].as_str().unwrap_or(id).to_owned(), rate });
        }
        let accounts: Vec<AccountInfo> = accounts
            .iter()
            .filter(|a| a["Active"] != false)
            .filter_map(|a| {
                Some(AccountInfo {
                    id: a["Id"].as_str()?.to_owned(),
                    name: a["Name"].as_str().unwrap_or("").to_owned(),
                    number: a["AcctNum"].as_str().filter(|n| !n.is_empty()).map(str::to_owned),
                })
            })
            .collect();
        let listed = accounts.iter().map(|a| Account { code: a.code(), name: a.name.clone() }).collect();
        Books { organisation: Organisation { currencies, tax_rates: tax, accounts: listed }, accounts, rates }
    }

    /// The purchase percent of a tax code (by id).
    pub fn rate_of(&self, tax_code: &str) -> Option<f64> {
        self.rates.get(tax_code).copied()
    }

    /// The tax code a line with this percent uses: the first purchase code with it.
    pub fn tax_code_for(&self, percent: f64) -> Option<&str> {
        self.organisation.tax_rates.iter().find(|t| (t.rate - percent).abs() < 1e-6).map(|t| t.code.as_str())
    }

    /// The account id of an account code: its number, else its id, else its name.
    pub fn account_id(&self, code: &str) -> Option<&str> {
        let code = code.trim();
        self.accounts
            .iter()
            .find(|a| a.number.as_deref() == Some(code))
            .or_else(|| self.accounts.iter().find(|a| a.id == code))
            .or_else(|| self.accounts.iter().find(|a| a.name.eq_ignore_ascii_case(code)))
            .map(|a| a.id.as_str())
    }

    /// The code of the account with this id (for reading lines).
    pub fn account_code(&self, id: &str) -> Option<String> {
        self.accounts.iter().find(|a| a.id == id).map(AccountInfo::code)
    }

    fn is_uncategorised(&self, id: &str) -> bool {
        self.accounts.iter().any(|a| a.id == id && a.name.to_lowercase().starts_with(UNCATEGORIZED))
    }
}

/// One vendor as the look-ups need it.
#[derive(Debug, Clone, PartialEq)]
pub struct Vendor {
    pub id: String,
    pub name: String,
    pub tax_number: Option<String>,
}

/// A vendor's latest bills as the account suggestion keeps them: (bill id, account ids of its lines).
pub(crate) type RecentBills = Arc<Vec<(String, Vec<String>)>>;

pub(crate) type VendorCache = tokio::sync::Mutex<Option<(Instant, Arc<Vec<Vendor>>)>>;

/// A tax number as compared: letters and digits only, upper case (`GB 123 4567 89` = `gb123456789`).
pub fn normalise_tax_number(s: &str) -> String {
    s.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_uppercase()).collect()
}

/// A name as compared: case and runs of white space ignored.
pub fn normalise_name(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// The vendor a document names: by tax number first, then by name.
pub(crate) fn match_vendor<'a>(
    vendors: &'a [Vendor],
    name: Option<&str>,
    tax_number: Option<&str>,
) -> Option<(&'a Vendor, &'static str)> {
    if let Some(wanted) = tax_number.map(normalise_tax_number).filter(|t| !t.is_empty())
        && let Some(v) =
            vendors.iter().find(|v| v.tax_number.as_deref().map(normalise_tax_number).as_deref() == Some(&*wanted))
    {
        return Some((v, "tax_number"));
    }
    let wanted = name.map(normalise_name).filter(|n| !n.is_empty())?;
    vendors.iter().find(|v| normalise_name(&v.name) == wanted).map(|v| (v, "name"))
}

/// A bill's status in words: QuickBooks bills have none, only a balance.
pub fn bill_status(bill: &Value) -> &'static str {
    let balance = bill["Balance"].as_f64().unwrap_or(0.0);
    let total = bill["TotalAmt"].as_f64().unwrap_or(0.0);
    if total > 0.0 && balance.abs() < 0.005 {
        "PAID"
    } else if balance < total - 0.005 {
        "PARTLY_PAID"
    } else {
        "OPEN"
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

impl QuickBooks {
    /// The company's currencies (home first, then the active company currencies when
    /// multi-currency is on), purchase tax codes and accounts: five queries, once per connector.
    pub async fn books(&self) -> Result<Arc<Books>, ConnectorError> {
        self.books
            .get_or_try_init(|| async {
                let preferences = self.query("Preferences", "SELECT * FROM Preferences").await?;
                let multi = preferences.first().is_some_and(|p| p["CurrencyPrefs"]["MultiCurrencyEnabled"] == true);
                let currencies = if multi {
                    self.query_all("CompanyCurrency", "SELECT * FROM CompanyCurrency").await?
                } else {
                    Vec::new()
                };
                let tax_codes = self.query_all("TaxCode", "SELECT * FROM TaxCode").await?;
                let tax_rates = self.query_all("TaxRate", "SELECT * FROM TaxRate").await?;
                let accounts = self.query_all("Account", "SELECT * FROM Account").await?;
                Ok(Arc::new(Books::from_rows(preferences.first(), &currencies, &tax_codes, &tax_rates, &accounts)))
            })
            .await
            .cloned()
    }

    /// Every vendor, read again when older than [`VENDORS_TTL`], or when `must_hold` names a
    /// vendor the list lacks and it is older than half a minute.
    pub(crate) async fn vendors(&self, must_hold: &[&str]) -> Result<Arc<Vec<Vendor>>, ConnectorError> {
        let mut held = self.vendors.lock().await;
        if let Some((at, list)) = held.as_ref()
            && at.elapsed() < VENDORS_TTL
            && (at.elapsed() < Duration::from_secs(30) || must_hold.iter().all(|id| list.iter().any(|v| v.id == *id)))
        {
            return Ok(list.clone());
        }
        let rows = self.query_all("Vendor", "SELECT * FROM Vendor").await?;
        let list: Arc<Vec<Vendor>> = Arc::new(
            rows.iter()
                .filter_map(|v| {
                    Some(Vendor {
                        id: v["Id"].as_str()?.to_owned(),
                        name: v["DisplayName"].as_str().unwrap_or("").to_owned(),
                        tax_number: v["TaxIdentifier"].as_str().filter(|t| !t.trim().is_empty()).map(str::to_owned),
                    })
                })
                .collect(),
        );
        *held = Some((Instant::now(), list.clone()));
        Ok(list)
    }

    /// The look-ups for one bill: vendor (the vendor list), duplicates (two queries on Bill: same
    /// vendor and `DocNumber`; same vendor and `TxnDate`, then the total compared), account code
    /// (the vendor's latest bills, once per vendor).
    pub(crate) async fn look_up_bill(&self, bill: &BillQuery) -> Result<LookUp, ConnectorError> {
        let vendors = self.vendors(&[]).await?;
        let Some((vendor, matched_by)) =
            match_vendor(&vendors, bill.supplier_name.as_deref(), bill.supplier_tax_number.as_deref())
        else {
            return Ok(LookUp::default());
        };
        let supplier =
            SupplierMatch { id: vendor.id.clone(), name: vendor.name.clone(), matched_by: matched_by.into() };
        let of_vendor = format!("SELECT * FROM Bill WHERE VendorRef = '{}'", escape(&vendor.id));
        let mut duplicates: Vec<Duplicate> = Vec::new();
        let number = bill.invoice_number.as_deref().map(str::trim).filter(|n| !n.is_empty());
        if let Some(number) = number {
            let q = format!("{of_vendor} AND DocNumber = '{}' MAXRESULTS 100", escape(number));
            for other in self.query("Bill", &q).await? {
                push_duplicate(&mut duplicates, &other, bill, format!("same supplier and invoice number {number}"));
            }
        }
        let day = bill.date.as_deref().filter(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok());
        if let (Some(total), Some(day)) = (bill.total, day) {
            let q = format!("{of_vendor} AND TxnDate = '{day}' MAXRESULTS 100");
            for other in self.query("Bill", &q).await? {
                if other["TotalAmt"].as_f64().is_some_and(|t| (t - total).abs() < 0.005) {
                    push_duplicate(
                        &mut duplicates,
                        &other,
                        bill,
                        format!("same supplier, total {total:.2} and date {day}"),
                    );
                }
            }
        }
        let account_code = self.suggested_account(&vendor.id, &of_vendor, &bill.record_id).await?;
        Ok(LookUp { supplier: Some(supplier), duplicates, account_code })
    }

    /// The account code most used on the vendor's latest bills (uncategorised lines aside), the
    /// bill itself left out; the bills are read once per vendor and kept.
    async fn suggested_account(
        &self,
        vendor_id: &str,
        of_vendor: &str,
        except: &str,
    ) -> Result<Option<String>, ConnectorError> {
        let books = self.books().await?;
        let known = self.suggestions.lock().await.get(vendor_id).cloned();
        let recent = match known {
            Some(recent) => recent,
            None => {
                let q = format!("{of_vendor} ORDERBY TxnDate DESC MAXRESULTS {RECENT_BILLS}");
                // Only what the suggestion needs is kept: (bill id, account ids of its lines).
                let slim: Vec<(String, Vec<String>)> = self
                    .query("Bill", &q)
                    .await?
                    .iter()
                    .map(|b| {
                        let accounts = b["Line"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|l| l["AccountBasedExpenseLineDetail"]["AccountRef"]["value"].as_str())
                            .map(str::to_owned)
                            .collect();
                        (b["Id"].as_str().unwrap_or("").to_owned(), accounts)
                    })
                    .collect();
                let slim = Arc::new(slim);
                self.suggestions.lock().await.insert(vendor_id.to_owned(), slim.clone());
                slim
            }
        };
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for (_, accounts) in recent.iter().filter(|(id, _)| id != except) {
            for account in accounts.iter().filter(|a| !books.is_uncategorised(a)) {
                *counts.entry(account).or_default() += 1;
            }
        }
        let best = counts.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0))).map(|(id, _)| id);
        Ok(best.map(|id| books.account_code(id).unwrap_or_else(|| id.to_owned())))
    }
}

fn push_duplicate(found: &mut Vec<Duplicate>, other: &Value, bill: &BillQuery, reason: String) {
    let id = other["Id"].as_str().unwrap_or("");
    if id.is_empty() || id == bill.record_id || found.iter().any(|d| d.id == id) {
        return;
    }
    found.push(Duplicate {
        id: id.to_owned(),
        invoice_number: other["DocNumber"].as_str().filter(|n| !n.is_empty()).map(str::to_owned),
        status: bill_status(other).to_owned(),
        reason,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tax_number_beats_name_and_names_ignore_case_and_spaces() {
        let vendors = vec![
            Vendor { id: "1".into(), name: "Brightline Office Supply".into(), tax_number: None },
            Vendor { id: "2".into(), name: "Northwind Paper Co.".into(), tax_number: Some("GB 123 4567 89".into()) },
        ];
        let (v, by) = match_vendor(&vendors, Some("Brightline Office Supply"), Some("gb123456789")).unwrap();
        assert_eq!((v.id.as_str(), by), ("2", "tax_number"));
        let (v, by) = match_vendor(&vendors, Some(" brightline  OFFICE supply"), None).unwrap();
        assert_eq!((v.id.as_str(), by), ("1", "name"));
        assert!(match_vendor(&vendors, Some("Nobody"), None).is_none());
    }

    #[test]
    fn a_paid_bill_has_no_balance() {
        assert_eq!(bill_status(&json!({"TotalAmt": 10.0, "Balance": 0})), "PAID");
        assert_eq!(bill_status(&json!({"TotalAmt": 10.0, "Balance": 10.0})), "OPEN");
        assert_eq!(bill_status(&json!({"TotalAmt": 10.0, "Balance": 4.0})), "PARTLY_PAID");
    }
}
