//! What the connector knows of the organisation's own data: its currencies, tax rates and accounts
//! ([`Books`], read once per connector), its contacts (read again after [`CONTACTS_TTL`]), and the
//! look-ups the engine makes for a bill read from a document ([`Xero::look_up_bill`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use enrichd_connector::ConnectorError;
use enrichd_connector::lookup::{Account, BillQuery, Duplicate, LookUp, Organisation, SupplierMatch, TaxRate};
use serde_json::Value;

use crate::Xero;

/// How long the contact list is trusted before it is read again (a supplier a reviewer created
/// appears after this).
pub const CONTACTS_TTL: Duration = Duration::from_secs(300);
/// A list younger than this is not read again for a contact it lacks (an archived contact would
/// otherwise cost a read per page).
const MISSING_CONTACT_WAIT: Duration = Duration::from_secs(30);
/// How many of a supplier's recent bills the account suggestion looks at (one page).
pub const RECENT_BILLS: u32 = 100;

/// The organisation's settings as the connector uses them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Books {
    /// What [`enrichd_connector::Connector::organisation`] answers: the base currency first, tax
    /// rates that can apply to bills (expenses), active accounts.
    pub organisation: Organisation,
    /// Every `TaxType` with its percent (also those for sales), for reading bills' lines.
    rates_by_type: HashMap<String, f64>,
}

impl Books {
    /// Builds from Xero's `Organisation`, `Currencies`, `TaxRates` and `Accounts` lists.
    pub fn from_lists(organisation: &Value, currencies: &[Value], tax_rates: &[Value], accounts: &[Value]) -> Books {
        let mut codes: Vec<String> = Vec::new();
        if let Some(base) = organisation["BaseCurrency"].as_str() {
            codes.push(base.to_owned());
        }
        for c in currencies {
            if let Some(code) = c["Code"].as_str()
                && !codes.iter().any(|k| k == code)
            {
                codes.push(code.to_owned());
            }
        }
        let mut rates_by_type = HashMap::new();
        let mut rates = Vec::new();
        for t in tax_rates {
            let (Some(code), Some(rate)) = (t["TaxType"].as_str(), t["EffectiveRate"].as_f64()) else { continue };
            rates_by_type.insert(code.to_owned(), rate);
            // Bills can only use rates that apply to expenses; Xero refuses the others.
            let for_bills = t["CanApplyToExpenses"].as_bool().unwrap_or(true);
            let active = t["Status"].as_str().is_none_or(|s| s == "ACTIVE");
            if for_bills && active {
                rates.push(TaxRate {
                    code: code.to_owned(),
                    name: t["Name"].as_str().unwrap_or(code).to_owned(),
                    rate,
                });
            }
        }
        let accounts = accounts
            .iter()
            .filter(|a| a["Status"].as_str().is_none_or(|s| s == "ACTIVE"))
            .filter_map(|a| {
                Some(Account {
                    code: a["Code"].as_str()?.to_owned(),
                    name: a["Name"].as_str().unwrap_or("").to_owned(),
                })
            })
            .collect();
        Books { organisation: Organisation { currencies: codes, tax_rates: rates, accounts }, rates_by_type }
    }

    /// The percent of a `TaxType` (`INPUT2` → 20).
    pub fn rate_of(&self, tax_type: &str) -> Option<f64> {
        self.rates_by_type.get(tax_type).copied()
    }

    /// The `TaxType` a bill line with this percent uses: the first rate for expenses with it.
    pub fn tax_type_for(&self, percent: f64) -> Option<&str> {
        self.organisation.tax_rates.iter().find(|t| (t.rate - percent).abs() < 1e-6).map(|t| t.code.as_str())
    }

    /// Whether the chart of accounts has this code.
    pub fn has_account(&self, code: &str) -> bool {
        self.organisation.accounts.iter().any(|a| a.code == code)
    }
}

/// One contact as the look-ups need it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ContactInfo {
    pub id: String,
    pub name: String,
    pub tax_number: Option<String>,
}

/// The contact list and when it was read.
pub(crate) type ContactCache = tokio::sync::Mutex<Option<(Instant, Arc<Vec<ContactInfo>>)>>;

/// A tax number as compared: letters and digits only, upper case (`GB 123 4567 89` = `gb123456789`).
pub fn normalise_tax_number(s: &str) -> String {
    s.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_uppercase()).collect()
}

/// A name as compared: case and runs of white space ignored.
pub fn normalise_name(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// The supplier a document names among `contacts`: by tax number first, then by name.
pub(crate) fn match_supplier<'a>(
    contacts: &'a [ContactInfo],
    name: Option<&str>,
    tax_number: Option<&str>,
) -> Option<(&'a ContactInfo, &'static str)> {
    if let Some(wanted) = tax_number.map(normalise_tax_number).filter(|t| !t.is_empty())
        && let Some(c) =
            contacts.iter().find(|c| c.tax_number.as_deref().map(normalise_tax_number).as_deref() == Some(&*wanted))
    {
        return Some((c, "tax_number"));
    }
    let wanted = name.map(normalise_name).filter(|n| !n.is_empty())?;
    contacts.iter().find(|c| normalise_name(&c.name) == wanted).map(|c| (c, "name"))
}

/// The account code used on most lines of `bills` (ties: the smaller code), none when no line has one.
pub(crate) fn most_used_account(bills: &[Value], except: &str) -> Option<String> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for bill in bills.iter().filter(|b| b["InvoiceID"].as_str() != Some(except)) {
        for line in bill["LineItems"].as_array().into_iter().flatten() {
            if let Some(code) = line["AccountCode"].as_str().filter(|c| !c.is_empty()) {
                *counts.entry(code).or_default() += 1;
            }
        }
    }
    counts.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0))).map(|(code, _)| code.to_owned())
}

/// A Xero `where` string literal (`"` and `\` escaped).
fn literal(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Xero {
    /// The organisation's currencies, tax rates and accounts, read once (four requests:
    /// `Organisation`, `Currencies`, `TaxRates`, `Accounts`) and kept for the connector's life.
    pub async fn books(&self) -> Result<Arc<Books>, ConnectorError> {
        self.books
            .get_or_try_init(|| async {
                let organisation = self.get("Organisation", &[], None, "xero: GET Organisation").await?;
                let currencies = self.settings_list("Currencies").await?;
                let tax_rates = self.settings_list("TaxRates").await?;
                let accounts = self.settings_list("Accounts").await?;
                Ok(Arc::new(Books::from_lists(&organisation["Organisations"][0], &currencies, &tax_rates, &accounts)))
            })
            .await
            .cloned()
    }

    /// Every contact (paged, 100 a page), read again when older than [`CONTACTS_TTL`], or when
    /// `must_hold` names a contact the list lacks and it is older than half a minute.
    pub(crate) async fn contacts(&self, must_hold: &[&str]) -> Result<Arc<Vec<ContactInfo>>, ConnectorError> {
        let mut held = self.contacts.lock().await;
        if let Some((at, list)) = held.as_ref()
            && at.elapsed() < CONTACTS_TTL
            && (at.elapsed() < MISSING_CONTACT_WAIT
                || must_hold.iter().all(|id| list.iter().any(|c| c.id.eq_ignore_ascii_case(id))))
        {
            return Ok(list.clone());
        }
        let mut list = Vec::new();
        for page in 1u32.. {
            let query = [("page", page.to_string())];
            let body = self.get("Contacts", &query, None, &format!("xero: GET Contacts page {page}")).await?;
            let rows = body["Contacts"].as_array().cloned().unwrap_or_default();
            let n = rows.len();
            list.extend(rows.iter().filter_map(|c| {
                Some(ContactInfo {
                    id: c["ContactID"].as_str()?.to_owned(),
                    name: c["Name"].as_str().unwrap_or("").to_owned(),
                    tax_number: c["TaxNumber"].as_str().filter(|t| !t.trim().is_empty()).map(str::to_owned),
                })
            }));
            if n < 100 {
                break;
            }
        }
        let list = Arc::new(list);
        *held = Some((Instant::now(), list.clone()));
        Ok(list)
    }

    /// The look-ups for one bill: supplier (contacts list), duplicates (one `GET Invoices` with
    /// `where` over every status), account code (the supplier's latest bills, once per supplier).
    pub(crate) async fn look_up_bill(&self, bill: &BillQuery) -> Result<LookUp, ConnectorError> {
        let contacts = self.contacts(&[]).await?;
        let Some((contact, matched_by)) =
            match_supplier(&contacts, bill.supplier_name.as_deref(), bill.supplier_tax_number.as_deref())
        else {
            return Ok(LookUp::default());
        };
        let supplier =
            SupplierMatch { id: contact.id.clone(), name: contact.name.clone(), matched_by: matched_by.into() };
        let of_supplier = format!(r#"Type=="ACCPAY" AND Contact.ContactID==guid("{}")"#, contact.id);
        let mut alternatives = Vec::new();
        if let Some(number) = bill.invoice_number.as_deref().filter(|n| !n.trim().is_empty()) {
            alternatives.push(format!("InvoiceNumber=={}", literal(number.trim())));
        }
        let day = bill.date.as_deref().and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
        if let (Some(total), Some(day)) = (bill.total, day) {
            alternatives.push(format!("(Total=={total:.2} AND Date==DateTime({}))", day.format("%Y,%m,%d")));
        }
        let mut duplicates = Vec::new();
        if !alternatives.is_empty() {
            let query = [("where", format!("{of_supplier} AND ({})", alternatives.join(" OR ")))];
            let body = self.get("Invoices", &query, None, "xero: GET Invoices (duplicates)").await?;
            for other in body["Invoices"].as_array().into_iter().flatten() {
                let id = other["InvoiceID"].as_str().unwrap_or("");
                if id.is_empty() || id.eq_ignore_ascii_case(&bill.record_id) {
                    continue;
                }
                let number = other["InvoiceNumber"].as_str().filter(|n| !n.is_empty()).map(str::to_owned);
                let same_number = number.is_some()
                    && number.as_deref().map(str::trim) == bill.invoice_number.as_deref().map(str::trim);
                let reason = if same_number {
                    format!("same supplier and invoice number {}", number.as_deref().unwrap_or(""))
                } else {
                    format!(
                        "same supplier, total {} and date {}",
                        other["Total"],
                        crate::xero_date(&other["DateString"], &other["Date"]).as_str().unwrap_or("")
                    )
                };
                duplicates.push(Duplicate {
                    id: id.to_owned(),
                    invoice_number: number,
                    status: other["Status"].as_str().unwrap_or("").to_owned(),
                    reason,
                });
            }
        }
        let account_code = self.suggested_account(&contact.id, &of_supplier, &bill.record_id).await?;
        Ok(LookUp { supplier: Some(supplier), duplicates, account_code })
    }

    /// The account code most used on the supplier's latest bills (read once per supplier and kept:
    /// a run meets the same suppliers again and again), the bill itself left out.
    async fn suggested_account(
        &self,
        contact_id: &str,
        of_supplier: &str,
        except: &str,
    ) -> Result<Option<String>, ConnectorError> {
        let known = self.suggestions.lock().await.get(contact_id).cloned();
        let recent = match known {
            Some(recent) => recent,
            None => {
                let query = [
                    ("where", of_supplier.to_owned()),
                    ("order", "Date DESC".to_owned()),
                    ("page", "1".to_owned()),
                    ("pageSize", RECENT_BILLS.to_string()),
                ];
                let body = self.get("Invoices", &query, None, "xero: GET Invoices (supplier's recent bills)").await?;
                // Only what the suggestion needs is kept.
                let slim: Vec<Value> = body["Invoices"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| {
                        let lines: Vec<Value> = b["LineItems"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|l| serde_json::json!({"AccountCode": l["AccountCode"]}))
                            .collect();
                        serde_json::json!({"InvoiceID": b["InvoiceID"], "LineItems": lines})
                    })
                    .collect();
                let slim = Arc::new(slim);
                self.suggestions.lock().await.insert(contact_id.to_owned(), slim.clone());
                slim
            }
        };
        Ok(most_used_account(&recent, except))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tax_number_beats_name_and_names_ignore_case_and_spaces() {
        let contacts = vec![
            ContactInfo { id: "a".into(), name: "Brightline Telecom plc".into(), tax_number: None },
            ContactInfo {
                id: "b".into(),
                name: "Northwind Paper Limited".into(),
                tax_number: Some("GB123456789".into()),
            },
        ];
        let (c, by) = match_supplier(&contacts, Some("Brightline Telecom plc"), Some("gb 123 456 789")).unwrap();
        assert_eq!((c.id.as_str(), by), ("b", "tax_number"));
        let (c, by) = match_supplier(&contacts, Some("  BRIGHTLINE   telecom PLC "), None).unwrap();
        assert_eq!((c.id.as_str(), by), ("a", "name"));
        assert!(match_supplier(&contacts, Some("Nobody Ltd"), Some("XX1")).is_none());
    }

    #[test]
    fn the_most_used_account_skips_the_bill_itself() {
        let bills = vec![
            json!({"InvoiceID": "self", "LineItems": [{"AccountCode": "400"}, {"AccountCode": "400"}, {"AccountCode": "400"}]}),
            json!({"InvoiceID": "x", "LineItems": [{"AccountCode": "453"}, {"AccountCode": "429"}]}),
            json!({"InvoiceID": "y", "LineItems": [{"AccountCode": "453"}, {}]}),
        ];
        assert_eq!(most_used_account(&bills, "self").as_deref(), Some("453"));
        assert_eq!(most_used_account(&bills[..1], "self"), None);
    }
}
