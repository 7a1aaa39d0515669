//! The sandbox's HTTP face: Xero's identity and Accounting API paths on one address.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{
    ACCOUNTS, Bill, CLIENT_ID, CLIENT_SECRET, CURRENCIES, CUSTOM_CLIENT_ID, CUSTOM_CLIENT_SECRET, Contact, GRACE_SECS,
    Line, ReceivedWrite, State, TAX_RATES, TENANT_ID, TENANT_NAME, XeroSandbox, mint, r2, recompute, tax_rate,
};

pub(super) fn router(sandbox: XeroSandbox) -> Router {
    Router::new().fallback(handle).with_state(sandbox)
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json; charset=utf-8")], body.to_string()).into_response()
}

/// `application/x-www-form-urlencoded` pairs (query strings and token requests).
fn form(text: &str) -> HashMap<String, String> {
    let decode = |s: &str| {
        let bytes = s.replace('+', " ").into_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%'
                && i + 2 < bytes.len()
                && let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16)
            {
                out.push(b);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

async fn handle(
    AxumState(sb): AxumState<XeroSandbox>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = form(uri.query().unwrap_or(""));
    if path == "/connect/token" && method == Method::POST {
        return token(&sb, &headers, &body);
    }
    if path == "/identity/connect/authorize" && method == Method::GET {
        return authorize(&sb, &query);
    }
    let api = path.strip_prefix("/api.xro/2.0/").map(str::to_owned);
    let connections = path.eq_ignore_ascii_case("/connections");
    if api.is_none() && !connections {
        return (StatusCode::NOT_FOUND, "The resource you're looking for cannot be found").into_response();
    }
    let limit_headers = match admit(&sb, &headers, api.is_some()) {
        Ok(h) => h,
        Err(response) => return *response,
    };
    let failing = {
        let mut s = sb.lock();
        let failing = s.limits.fail_next > 0;
        if failing {
            s.limits.fail_next -= 1;
            s.in_flight -= 1;
        }
        failing
    };
    if failing {
        return (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response();
    }
    let latency = sb.lock().limits.latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let mut response = match api {
        None => json_response(
            StatusCode::OK,
            json!([{
                "id": "7cb59f93-2964-421d-bb5e-a0f7a4572a44", "tenantId": TENANT_ID, "tenantName": TENANT_NAME,
                "tenantType": "ORGANISATION", "createdDateUtc": "2026-01-05T09:00:00.0000000",
                "updatedDateUtc": "2026-01-05T09:00:00.0000000"
            }]),
        ),
        Some(rest) => route(&sb, &method, &rest, &query, &headers, &body),
    };
    sb.lock().in_flight -= 1;
    for (name, value) in limit_headers {
        response.headers_mut().insert(name, HeaderValue::from_str(&value).expect("digits"));
    }
    response
}

/// Authenticates an API request and counts it against the tenant's limits.
fn admit(sb: &XeroSandbox, headers: &HeaderMap, api: bool) -> Result<Vec<(&'static str, String)>, Box<Response>> {
    let mut s = sb.lock();
    s.counters.api_requests += 1;
    let now = s.now();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned();
    let unauthorized = || {
        json_response(
            StatusCode::UNAUTHORIZED,
            json!({"Type": null, "Title": "Unauthorized", "Status": 401, "Detail": "AuthenticationUnsuccessful", "Instance": "sandbox", "Extensions": {}}),
        )
    };
    let Some(access) = s.access.get_mut(&bearer) else { return Err(Box::new(unauthorized())) };
    if access.expires_at <= now {
        return Err(Box::new(unauthorized()));
    }
    let custom = access.custom;
    let tenant = headers.get("xero-tenant-id").and_then(|v| v.to_str().ok());
    if api && !(tenant.is_some_and(|t| t.eq_ignore_ascii_case(TENANT_ID)) || (tenant.is_none() && custom)) {
        return Err(Box::new(json_response(
            StatusCode::FORBIDDEN,
            json!({"Type": null, "Title": "Forbidden", "Status": 403, "Detail": "AuthorizationUnsuccessful", "Instance": "sandbox", "Extensions": {}}),
        )));
    }
    access.uses += 1;
    let (minute, day) = (now / 60, now / 86_400);
    if s.minute.0 != minute {
        s.minute = (minute, 0);
    }
    if s.day.0 != day {
        s.day = (day, 0);
    }
    let limits = s.limits.clone();
    let problem = if s.in_flight >= limits.concurrent {
        Some(("concurrent", 1))
    } else if s.day.1 >= limits.per_day {
        Some(("day", (day + 1) * 86_400 - now))
    } else if s.minute.1 >= limits.per_minute {
        Some(("minute", (minute + 1) * 60 - now))
    } else {
        None
    };
    let remaining = |s: &State| {
        vec![
            ("x-minlimit-remaining", limits.per_minute.saturating_sub(s.minute.1).to_string()),
            ("x-daylimit-remaining", limits.per_day.saturating_sub(s.day.1).to_string()),
            ("x-appminlimit-remaining", 10_000u32.saturating_sub(s.minute.1).to_string()),
        ]
    };
    if let Some((problem, retry_after)) = problem {
        s.counters.rate_limited += 1;
        let mut response = (StatusCode::TOO_MANY_REQUESTS, "").into_response();
        let h = response.headers_mut();
        h.insert("retry-after", HeaderValue::from(retry_after.max(1)));
        h.insert("x-rate-limit-problem", HeaderValue::from_static(problem));
        for (name, value) in remaining(&s) {
            h.insert(name, HeaderValue::from_str(&value).expect("digits"));
        }
        return Err(Box::new(response));
    }
    s.minute.1 += 1;
    s.day.1 += 1;
    s.in_flight += 1;
    s.counters.max_in_flight = s.counters.max_in_flight.max(u64::from(s.in_flight));
    Ok(remaining(&s))
}

fn authorize(sb: &XeroSandbox, query: &HashMap<String, String>) -> Response {
    let get = |k: &str| query.get(k).map(String::as_str).unwrap_or("");
    if get("client_id") != CLIENT_ID {
        return (StatusCode::BAD_REQUEST, "unauthorized_client: unknown client_id").into_response();
    }
    if get("response_type") != "code" || get("redirect_uri").is_empty() {
        return (StatusCode::BAD_REQUEST, "invalid_request: response_type=code and redirect_uri are required")
            .into_response();
    }
    if get("code_challenge").is_empty() || get("code_challenge_method") != "S256" {
        return (StatusCode::BAD_REQUEST, "invalid_request: a PKCE code_challenge with method S256 is required")
            .into_response();
    }
    let mut s = sb.lock();
    let code = s.token("sbx_code_");
    s.codes.insert(code.clone(), get("code_challenge").to_owned());
    let separator = if get("redirect_uri").contains('?') { '&' } else { '?' };
    let location = format!(
        "{}{separator}code={code}&state={}&scope={}",
        get("redirect_uri"),
        percent(get("state")),
        percent(get("scope"))
    );
    Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, location)
        .body(Body::empty())
        .expect("a valid redirect")
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn token(sb: &XeroSandbox, headers: &HeaderMap, body: &Bytes) -> Response {
    let params = form(&String::from_utf8_lossy(body));
    let error = |e: &str| json_response(StatusCode::BAD_REQUEST, json!({"error": e}));
    let mut s = sb.lock();
    s.counters.token_requests += 1;
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|pair| pair.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())));
    let (id, secret) = basic.unwrap_or_else(|| {
        (params.get("client_id").cloned().unwrap_or_default(), params.get("client_secret").cloned().unwrap_or_default())
    });
    let custom = match (id.as_str(), secret.as_str()) {
        (CLIENT_ID, CLIENT_SECRET) => false,
        (CUSTOM_CLIENT_ID, CUSTOM_CLIENT_SECRET) => true,
        _ => return error("invalid_client"),
    };
    let granted = |access: String, refresh: Option<String>, expires: i64| {
        let mut body = json!({
            "access_token": access, "expires_in": expires, "token_type": "Bearer",
            "scope": "offline_access accounting.transactions accounting.attachments accounting.contacts accounting.settings",
        });
        if let Some(r) = refresh {
            body["refresh_token"] = json!(r);
        }
        json_response(StatusCode::OK, body)
    };
    match params.get("grant_type").map(String::as_str) {
        Some("client_credentials") if custom => {
            let (access, _, expires) = mint(&mut s, true);
            granted(access, None, expires)
        }
        Some("authorization_code") if !custom => {
            let code = params.get("code").cloned().unwrap_or_default();
            let Some(challenge) = s.codes.remove(&code) else {
                s.counters.invalid_grants += 1;
                return error("invalid_grant");
            };
            let verifier = params.get("code_verifier").cloned().unwrap_or_default();
            let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
            if verifier.is_empty() || computed != challenge {
                s.counters.invalid_grants += 1;
                return error("invalid_grant");
            }
            let (access, refresh, expires) = mint(&mut s, false);
            granted(access, Some(refresh), expires)
        }
        Some("refresh_token") if !custom => {
            s.counters.refreshes += 1;
            let presented = params.get("refresh_token").cloned().unwrap_or_default();
            let now = s.now();
            let state = s.refresh.get(&presented).map(|r| (r.revoked, r.rotated_at, r.successor.clone()));
            let grace = match state {
                None | Some((true, _, _)) => {
                    s.counters.invalid_grants += 1;
                    return error("invalid_grant");
                }
                Some((false, None, _)) => false,
                Some((false, Some(at), successor)) if now - at <= GRACE_SECS => {
                    // The answer to the earlier refresh was lost: its token set is replaced.
                    if let Some(old) = successor.and_then(|t| s.refresh.get_mut(&t)) {
                        old.revoked = true;
                    }
                    true
                }
                Some(_) => {
                    s.counters.invalid_grants += 1;
                    return error("invalid_grant");
                }
            };
            if grace {
                s.counters.grace_refreshes += 1;
            }
            let (access, refresh, expires) = mint(&mut s, false);
            let entry = s.refresh.get_mut(&presented).expect("checked above");
            entry.rotated_at.get_or_insert(now);
            entry.successor = Some(refresh.clone());
            if s.limits.lose_refresh_responses > 0 {
                s.limits.lose_refresh_responses -= 1;
                return (StatusCode::GATEWAY_TIMEOUT, "upstream request timeout").into_response();
            }
            granted(access, Some(refresh), expires)
        }
        Some("client_credentials" | "authorization_code" | "refresh_token") => error("unauthorized_client"),
        _ => error("unsupported_grant_type"),
    }
}

fn ms_date(ms: i64) -> String {
    format!("/Date({ms}+0000)/")
}

fn day_ms(date: &str) -> Option<i64> {
    let d = chrono::NaiveDate::parse_from_str(date.get(..10)?, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

fn envelope(s: &State, collection: &str, items: Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("Id".into(), json!(format!("{:08x}-0000-4000-8000-{:012x}", s.serial, s.now_ms())));
    m.insert("Status".into(), json!("OK"));
    m.insert("ProviderName".into(), json!("enrichd sandbox"));
    m.insert("DateTimeUTC".into(), json!(ms_date(s.now_ms())));
    m.insert(collection.into(), items);
    m
}

fn contact_json(c: &Contact) -> Value {
    json!({
        "ContactID": c.id, "ContactStatus": "ACTIVE", "Name": c.name, "TaxNumber": c.tax_number,
        "IsSupplier": true, "IsCustomer": false, "Addresses": [], "Phones": [], "ContactGroups": [],
        "ContactPersons": [], "HasValidationErrors": false,
    })
}

fn invoice_json(s: &State, b: &Bill) -> Value {
    let mut v = json!({
        "Type": b.kind, "InvoiceID": b.id, "InvoiceNumber": b.invoice_number, "Reference": b.reference,
        "Payments": [], "CreditNotes": [], "Prepayments": [], "Overpayments": [],
        "AmountDue": b.total, "AmountPaid": 0.0, "AmountCredited": 0.0, "CurrencyRate": 1.0,
        "IsDiscounted": false, "HasAttachments": b.attachment.is_some(), "HasErrors": false,
        "Status": b.status, "LineAmountTypes": b.line_amount_types, "CurrencyCode": b.currency,
        "SubTotal": b.sub_total, "TotalTax": b.total_tax, "Total": b.total,
        "UpdatedDateUTC": ms_date(b.updated_ms),
        "LineItems": b.lines.iter().map(|l| {
            let mut line = json!({
                "LineItemID": l.id, "Description": l.description, "Quantity": l.quantity,
                "UnitAmount": l.unit_amount, "TaxType": l.tax_type, "TaxAmount": l.tax_amount,
                "LineAmount": l.line_amount, "Tracking": [],
            });
            if let Some(code) = &l.account_code {
                line["AccountCode"] = json!(code);
            }
            line
        }).collect::<Vec<_>>(),
    });
    if let Some(c) = b.contact_id.as_ref().and_then(|id| s.contacts.iter().find(|c| &c.id == id)) {
        v["Contact"] = json!({
            "ContactID": c.id, "Name": c.name, "Addresses": [], "Phones": [], "ContactGroups": [],
            "ContactPersons": [], "HasValidationErrors": false,
        });
    }
    for (key, date) in [("Date", &b.date), ("DueDate", &b.due_date)] {
        if let Some(d) = date.as_deref().and_then(day_ms) {
            v[key] = json!(ms_date(d));
            v[format!("{key}String")] = json!(format!("{}T00:00:00", &date.as_deref().unwrap_or("")[..10]));
        }
    }
    v
}

fn not_found(what: &str) -> Response {
    (StatusCode::NOT_FOUND, format!("The resource you're looking for cannot be found ({what})")).into_response()
}

fn route(
    sb: &XeroSandbox,
    method: &Method,
    rest: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let segments: Vec<String> =
        rest.split('/').map(|p| form(&format!("x={p}")).remove("x").unwrap_or_default()).collect();
    let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    match (method.as_str(), lower.as_slice()) {
        ("GET", ["invoices"]) => list_invoices(sb, query, headers),
        ("POST", ["invoices"]) => post_invoices(sb, query, headers, body),
        ("GET", ["invoices", _]) => {
            let s = sb.lock();
            match s.bills.iter().find(|b| b.id.eq_ignore_ascii_case(&segments[1])) {
                Some(b) => {
                    json_response(StatusCode::OK, Value::Object(envelope(&s, "Invoices", json!([invoice_json(&s, b)]))))
                }
                None => not_found(&segments[1]),
            }
        }
        ("GET", ["invoices", _, "attachments"]) => {
            let s = sb.lock();
            let Some(b) = s.bills.iter().find(|b| b.id.eq_ignore_ascii_case(&segments[1])) else {
                return not_found(&segments[1]);
            };
            let list: Vec<Value> = b
                .attachment
                .iter()
                .map(|a| {
                    json!({
                        "AttachmentID": a.id, "FileName": a.file_name, "MimeType": a.mime_type,
                        "ContentLength": a.bytes.len(),
                        "Url": format!("https://api.xero.com/api.xro/2.0/Invoices/{}/Attachments/{}", b.id, percent(&a.file_name)),
                    })
                })
                .collect();
            json_response(StatusCode::OK, Value::Object(envelope(&s, "Attachments", Value::Array(list))))
        }
        ("GET", ["invoices", _, "attachments", _]) => {
            let s = sb.lock();
            let found = s
                .bills
                .iter()
                .find(|b| b.id.eq_ignore_ascii_case(&segments[1]))
                .and_then(|b| b.attachment.as_ref())
                .filter(|a| a.file_name == segments[3] || a.id == segments[3]);
            match found {
                Some(a) => ([(header::CONTENT_TYPE, a.mime_type.clone())], a.bytes.clone()).into_response(),
                None => not_found(&segments[3]),
            }
        }
        ("GET", ["contacts"]) => {
            let s = sb.lock();
            let list: Vec<Value> = s.contacts.iter().map(contact_json).collect();
            json_response(StatusCode::OK, Value::Object(envelope(&s, "Contacts", Value::Array(list))))
        }
        ("GET", ["accounts"]) => {
            let s = sb.lock();
            let list: Vec<Value> = ACCOUNTS
                .iter()
                .enumerate()
                .map(|(n, (code, name, kind))| {
                    json!({"AccountID": format!("ac000000-0000-4000-8000-{n:012}"), "Code": code, "Name": name,
                        "Type": kind, "Status": "ACTIVE", "TaxType": if *kind == "REVENUE" { "OUTPUT2" } else { "INPUT2" },
                        "Class": if *kind == "REVENUE" { "REVENUE" } else if *kind == "BANK" { "ASSET" } else { "EXPENSE" }})
                })
                .collect();
            json_response(StatusCode::OK, Value::Object(envelope(&s, "Accounts", Value::Array(list))))
        }
        ("GET", ["taxrates"]) => {
            let s = sb.lock();
            let list: Vec<Value> = TAX_RATES
                .iter()
                .map(|(tax_type, name, rate)| {
                    let sales = tax_type.starts_with("OUTPUT");
                    json!({"Name": name, "TaxType": tax_type, "Status": "ACTIVE",
                        "ReportTaxType": if sales { "OUTPUT" } else { "INPUT" },
                        "CanApplyToExpenses": !sales, "CanApplyToRevenue": sales || *tax_type == "NONE",
                        "DisplayTaxRate": rate, "EffectiveRate": rate,
                        "TaxComponents": [{"Name": "VAT", "Rate": rate, "IsCompound": false, "IsNonRecoverable": false}]})
                })
                .collect();
            json_response(StatusCode::OK, Value::Object(envelope(&s, "TaxRates", Value::Array(list))))
        }
        ("GET", ["organisation"]) => {
            let s = sb.lock();
            let org = json!([{
                "OrganisationID": "b2c885a9-4bb9-4a00-9b6e-6c2bf60b1a65", "Name": TENANT_NAME,
                "LegalName": TENANT_NAME, "BaseCurrency": CURRENCIES[0], "CountryCode": "GB",
                "OrganisationType": "COMPANY", "IsDemoCompany": false, "OrganisationStatus": "ACTIVE",
                "Version": "UK", "PaysTax": true, "FinancialYearEndDay": 31, "FinancialYearEndMonth": 3,
            }]);
            json_response(StatusCode::OK, Value::Object(envelope(&s, "Organisations", org)))
        }
        ("PUT", ["invoices", _, "history"]) => put_history(sb, &segments[1], headers, body),
        ("GET", ["invoices", _, "history"]) => {
            let s = sb.lock();
            let Some(b) = s.bills.iter().find(|b| b.id.eq_ignore_ascii_case(&segments[1])) else {
                return not_found(&segments[1]);
            };
            let list: Vec<Value> = b
                .history
                .iter()
                .map(|d| json!({"Changes": "Note", "User": "enrichd", "Details": d, "DateUTC": ms_date(b.updated_ms)}))
                .collect();
            json_response(StatusCode::OK, Value::Object(envelope(&s, "HistoryRecords", Value::Array(list))))
        }
        ("GET", ["currencies"]) => {
            let s = sb.lock();
            let list: Vec<Value> = CURRENCIES.iter().map(|c| json!({"Code": c, "Description": c})).collect();
            json_response(StatusCode::OK, Value::Object(envelope(&s, "Currencies", Value::Array(list))))
        }
        _ => not_found(rest),
    }
}

/// `PUT /Invoices/{id}/History`: adds notes to a bill's history (any status; the bill itself and
/// its `UpdatedDateUTC` stay as they are). `Idempotency-Key` replays the stored answer.
fn put_history(sb: &XeroSandbox, id: &str, headers: &HeaderMap, body: &Bytes) -> Response {
    let mut s = sb.lock();
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(|k| format!("history:{k}"));
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    s.history_writes.push(parsed.clone());
    if let Some(cached) = key.as_ref().and_then(|k| s.idempotent.get(k)).cloned() {
        return json_response(StatusCode::OK, cached);
    }
    let Some(records) = parsed["HistoryRecords"].as_array().cloned() else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"ErrorNumber": 14, "Type": "PostDataInvalidException", "Message": "HistoryRecords is required"}),
        );
    };
    let now = s.now_ms();
    let Some(bill) = s.bills.iter_mut().find(|b| b.id.eq_ignore_ascii_case(id)) else {
        return not_found(id);
    };
    let mut answer = Vec::new();
    for record in records {
        let details = record["Details"].as_str().unwrap_or("").to_owned();
        let mut echo = json!({"DateUTCString": chrono::DateTime::from_timestamp_millis(now).map(|d| d.format("%Y-%m-%dT%H:%M:%S").to_string()), "DateUTC": ms_date(now), "Details": details});
        if details.trim().is_empty() {
            echo["ValidationErrors"] = json!([{"Message": "The Details of a history note cannot be empty"}]);
        } else {
            echo["ValidationErrors"] = json!([]);
            bill.history.push(details);
        }
        answer.push(echo);
    }
    let body = Value::Object(envelope(&s, "HistoryRecords", Value::Array(answer)));
    if let Some(k) = key {
        s.idempotent.insert(k, body.clone());
    }
    json_response(StatusCode::OK, body)
}

fn query_error(message: String) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        json!({"ErrorNumber": 16, "Type": "QueryParseException", "Message": message}),
    )
}

fn list_invoices(sb: &XeroSandbox, query: &HashMap<String, String>, headers: &HeaderMap) -> Response {
    let s = sb.lock();
    let filter = match query.get("where").filter(|w| !w.trim().is_empty()).map(|w| filter::parse(w)) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(message)) => return query_error(message),
    };
    let ids: Option<Vec<String>> =
        query.get("IDs").map(|ids| ids.split(',').map(|i| i.trim().to_ascii_lowercase()).collect());
    let statuses: Option<Vec<&str>> = query.get("Statuses").map(|s| s.split(',').map(str::trim).collect());
    let since = headers.get("if-modified-since").and_then(|v| v.to_str().ok()).and_then(|v| {
        chrono::DateTime::parse_from_rfc3339(v).map(|d| d.timestamp_millis()).ok().or_else(|| {
            chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S").ok().map(|d| d.and_utc().timestamp_millis())
        })
    });
    let mut matching: Vec<&Bill> = s
        .bills
        .iter()
        .filter(|b| filter.as_ref().is_none_or(|f| f.matches(b)))
        .filter(|b| ids.as_ref().is_none_or(|ids| ids.contains(&b.id.to_ascii_lowercase())))
        .filter(|b| statuses.as_ref().is_none_or(|st| st.contains(&b.status.as_str())))
        .filter(|b| since.is_none_or(|since| b.updated_ms > since))
        .collect();
    if let Some(order) = query.get("order") {
        let mut words = order.split_whitespace();
        let field = words.next().unwrap_or("");
        let descending = words.next().is_some_and(|d| d.eq_ignore_ascii_case("DESC"));
        match field {
            "Date" => matching.sort_by(|a, b| a.date.cmp(&b.date).then(a.updated_ms.cmp(&b.updated_ms))),
            "UpdatedDateUTC" => matching.sort_by_key(|b| b.updated_ms),
            "InvoiceNumber" => matching.sort_by(|a, b| a.invoice_number.cmp(&b.invoice_number)),
            other => return query_error(format!("No property or field '{other}' exists in type 'Invoice'")),
        }
        if descending {
            matching.reverse();
        }
    }
    let (items, pagination) = match query.get("page").and_then(|p| p.parse::<usize>().ok()).filter(|p| *p >= 1) {
        Some(page) => {
            let size = query.get("pageSize").and_then(|p| p.parse::<usize>().ok()).unwrap_or(100).clamp(1, 1000);
            let count = matching.len();
            let items: Vec<&Bill> = matching.into_iter().skip((page - 1) * size).take(size).collect();
            let pages = count.div_ceil(size);
            (items, Some(json!({"page": page, "pageSize": size, "pageCount": pages, "itemCount": count})))
        }
        None => (matching, None),
    };
    let list: Vec<Value> = items.iter().map(|b| invoice_json(&s, b)).collect();
    let mut body = envelope(&s, "Invoices", Value::Array(list));
    if let Some(p) = pagination {
        body.insert("pagination".into(), p);
    }
    json_response(StatusCode::OK, Value::Object(body))
}

/// Applies one posted invoice to a copy of the bill; the validation messages if it fails.
fn apply(s: &mut State, element: &Value, new_contacts: &mut Vec<Contact>) -> Result<Bill, Vec<String>> {
    let id = element["InvoiceID"].as_str().unwrap_or("");
    let Some(mut bill) = s.bills.iter().find(|b| b.id.eq_ignore_ascii_case(id)).cloned() else {
        return Err(vec![if id.is_empty() {
            "The sandbox only updates invoices: InvoiceID is required".to_owned()
        } else {
            format!("Invoice could not be found ({id})")
        }]);
    };
    let mut errors = Vec::new();
    if !["DRAFT", "SUBMITTED"].contains(&bill.status.as_str()) {
        errors.push("Invoice not of valid status for modification".to_owned());
    }
    if let Some(kind) = element["Type"].as_str().filter(|k| *k != bill.kind) {
        errors.push(format!("Type cannot be changed from {} to {kind}", bill.kind));
    }
    if let Some(status) = element["Status"].as_str() {
        if ["DRAFT", "SUBMITTED", "AUTHORISED", "DELETED", "VOIDED"].contains(&status) {
            bill.status = status.to_owned();
        } else {
            errors.push(format!("Status '{status}' is not valid"));
        }
    }
    if let Some(contact) = element.get("Contact").filter(|c| c.is_object()) {
        if let Some(cid) = contact["ContactID"].as_str() {
            match s.contacts.iter().find(|c| c.id.eq_ignore_ascii_case(cid)) {
                Some(c) => bill.contact_id = Some(c.id.clone()),
                None => errors.push("The contact ID could not be found".to_owned()),
            }
        } else if let Some(name) = contact["Name"].as_str() {
            let known = s.contacts.iter().chain(new_contacts.iter()).find(|c| c.name.eq_ignore_ascii_case(name.trim()));
            match known {
                Some(c) => bill.contact_id = Some(c.id.clone()),
                None if name.trim().is_empty() => errors.push("The contact name must be specified".to_owned()),
                None => {
                    let c = Contact { id: s.uuid(0xc0de), name: name.trim().to_owned(), tax_number: String::new() };
                    bill.contact_id = Some(c.id.clone());
                    new_contacts.push(c);
                }
            }
        }
    }
    if let Some(n) = element["InvoiceNumber"].as_str() {
        bill.invoice_number = n.to_owned();
    }
    if let Some(r) = element["Reference"].as_str() {
        bill.reference = r.to_owned();
    }
    for (key, slot) in [("Date", &mut bill.date), ("DueDate", &mut bill.due_date)] {
        if let Some(d) = element[key].as_str() {
            if day_ms(d).is_some() {
                *slot = Some(d[..10].to_owned());
            } else {
                errors.push(format!("{key} '{d}' is not a valid date"));
            }
        }
    }
    if let Some(c) = element["CurrencyCode"].as_str() {
        if CURRENCIES.contains(&c) {
            bill.currency = c.to_owned();
        } else {
            errors.push(format!("The currency code '{c}' is not enabled for this organisation"));
        }
    }
    if let Some(t) = element["LineAmountTypes"].as_str() {
        if ["Exclusive", "Inclusive", "NoTax"].contains(&t) {
            bill.line_amount_types = t.to_owned();
        } else {
            errors.push(format!("LineAmountTypes '{t}' is not valid"));
        }
    }
    if let Some(lines) = element["LineItems"].as_array() {
        let inclusive = bill.line_amount_types == "Inclusive";
        let mut out = Vec::new();
        for l in lines {
            let quantity = l["Quantity"].as_f64().unwrap_or(1.0);
            let unit_amount = l["UnitAmount"].as_f64().unwrap_or(0.0);
            let line_amount = l["LineAmount"].as_f64().unwrap_or(r2(quantity * unit_amount));
            let tax_type = l["TaxType"].as_str().unwrap_or("INPUT2").to_owned();
            let rate = match tax_rate(&tax_type) {
                Some(r) => r,
                None => {
                    errors.push(format!(
                        "The TaxType code '{tax_type}' does not exist or cannot be used for this type of transaction."
                    ));
                    0.0
                }
            };
            if let Some(code) = l["AccountCode"].as_str()
                && !ACCOUNTS.iter().any(|a| a.0 == code)
            {
                errors.push(format!("Account code '{code}' is not a valid code for this document."));
            }
            let tax_amount = l["TaxAmount"].as_f64().unwrap_or(if bill.line_amount_types == "NoTax" {
                0.0
            } else if inclusive {
                r2(line_amount * rate / (1.0 + rate))
            } else {
                r2(line_amount * rate)
            });
            out.push(Line {
                id: s.uuid(0x11e1),
                description: l["Description"].as_str().unwrap_or("").to_owned(),
                quantity,
                unit_amount,
                tax_type,
                tax_amount,
                line_amount,
                account_code: l["AccountCode"].as_str().map(str::to_owned),
            });
        }
        bill.lines = out;
    }
    if !bill.invoice_number.is_empty()
        && bill.contact_id.is_some()
        && s.bills.iter().any(|o| {
            o.id != bill.id
                && o.kind == bill.kind
                && o.contact_id == bill.contact_id
                && o.invoice_number == bill.invoice_number
        })
    {
        errors.push("Invoice # must be unique.".to_owned());
    }
    if errors.is_empty() {
        recompute(&mut bill);
        Ok(bill)
    } else {
        Err(errors)
    }
}

fn post_invoices(sb: &XeroSandbox, query: &HashMap<String, String>, headers: &HeaderMap, body: &Bytes) -> Response {
    let mut s = sb.lock();
    let summarize = query.get("summarizeErrors").is_none_or(|v| !v.eq_ignore_ascii_case("false"));
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({"ErrorNumber": 14, "Type": "PostDataInvalidException", "Message": format!("Invalid Json data: {e}")}),
            );
        }
    };
    if let Some(cached) = key.as_ref().and_then(|k| s.idempotent.get(k)).cloned() {
        s.writes.push(ReceivedWrite {
            idempotency_key: key,
            summarize_errors: summarize,
            body: parsed,
            replayed: true,
        });
        return json_response(StatusCode::OK, cached);
    }
    s.counters.writes += 1;
    s.writes.push(ReceivedWrite {
        idempotency_key: key.clone(),
        summarize_errors: summarize,
        body: parsed.clone(),
        replayed: false,
    });
    let elements: Vec<Value> = match parsed.get("Invoices") {
        Some(Value::Array(list)) => list.clone(),
        _ if parsed.is_object() => vec![parsed.clone()],
        _ => Vec::new(),
    };
    let mut new_contacts = Vec::new();
    let results: Vec<Result<Bill, Vec<String>>> =
        elements.iter().map(|e| apply(&mut s, e, &mut new_contacts)).collect();
    let failed = |element: &Value, errors: &[String]| {
        let mut echo = element.clone();
        echo["HasErrors"] = json!(true);
        echo["StatusAttributeString"] = json!("ERROR");
        echo["ValidationErrors"] = Value::Array(errors.iter().map(|m| json!({"Message": m})).collect());
        echo
    };
    if summarize && results.iter().any(Result::is_err) {
        let list: Vec<Value> = elements
            .iter()
            .zip(&results)
            .map(|(e, r)| match r {
                Err(errors) => failed(e, errors),
                Ok(_) => e.clone(),
            })
            .collect();
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"ErrorNumber": 10, "Type": "ValidationException", "Message": "A validation exception occurred", "Elements": list}),
        );
    }
    s.contacts.extend(new_contacts);
    let mut answer = Vec::new();
    for (element, result) in elements.iter().zip(results) {
        match result {
            Ok(mut bill) => {
                bill.updated_ms = s.stamp();
                s.counters.bills_written += 1;
                let mut v = invoice_json(&s, &bill);
                v["StatusAttributeString"] = json!("OK");
                if let Some(slot) = s.bills.iter_mut().find(|b| b.id == bill.id) {
                    *slot = bill;
                }
                answer.push(v);
            }
            Err(errors) => answer.push(failed(element, &errors)),
        }
    }
    let body = Value::Object(envelope(&s, "Invoices", Value::Array(answer)));
    if let Some(k) = key {
        s.idempotent.insert(k, body.clone());
    }
    json_response(StatusCode::OK, body)
}

/// Xero's `where` filter on invoices, as far as the connector uses it: `==` and `!=` on `Type`,
/// `Status`, `HasAttachments`, `InvoiceNumber`, `Reference`, `Contact.ContactID`, `Total`, `Date`,
/// with `AND`, `OR` and parentheses; values `"text"`, `guid("…")`, `DateTime(y,m,d)`, numbers, `true`.
mod filter {
    use super::Bill;

    #[derive(Debug, Clone, PartialEq)]
    enum Token {
        Name(String),
        Text(String),
        Number(f64),
        Sym(&'static str),
    }

    #[derive(Debug, Clone, PartialEq)]
    pub(super) enum Literal {
        Text(String),
        Number(f64),
        Bool(bool),
        Date(String),
    }

    #[derive(Debug)]
    pub(super) enum Filter {
        And(Box<Filter>, Box<Filter>),
        Or(Box<Filter>, Box<Filter>),
        Compare { field: String, equal: bool, value: Literal },
    }

    const FIELDS: [&str; 8] =
        ["Type", "Status", "HasAttachments", "InvoiceNumber", "Reference", "Contact.ContactID", "Total", "Date"];

    fn tokens(text: &str) -> Result<Vec<Token>, String> {
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
            } else if c == '"' {
                let mut s = String::new();
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                    }
                    s.push(chars[i]);
                    i += 1;
                }
                if i >= chars.len() {
                    return Err("Unterminated string in where".into());
                }
                i += 1;
                out.push(Token::Text(s));
            } else if c == '=' && chars.get(i + 1) == Some(&'=') {
                out.push(Token::Sym("=="));
                i += 2;
            } else if c == '!' && chars.get(i + 1) == Some(&'=') {
                out.push(Token::Sym("!="));
                i += 2;
            } else if c == '(' || c == ')' || c == ',' {
                out.push(Token::Sym(match c {
                    '(' => "(",
                    ')' => ")",
                    _ => ",",
                }));
                i += 1;
            } else if c.is_ascii_digit() || c == '-' {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let n: String = chars[start..i].iter().collect();
                out.push(Token::Number(n.parse().map_err(|_| format!("Bad number {n} in where"))?));
            } else if c.is_alphanumeric() || c == '_' {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.') {
                    i += 1;
                }
                out.push(Token::Name(chars[start..i].iter().collect()));
            } else {
                return Err(format!("Unexpected '{c}' in where"));
            }
        }
        Ok(out)
    }

    struct Parser {
        tokens: Vec<Token>,
        at: usize,
    }

    impl Parser {
        fn peek(&self) -> Option<&Token> {
            self.tokens.get(self.at)
        }
        fn next(&mut self) -> Option<Token> {
            let t = self.tokens.get(self.at).cloned();
            self.at += 1;
            t
        }
        fn expect(&mut self, sym: &'static str) -> Result<(), String> {
            match self.next() {
                Some(Token::Sym(s)) if s == sym => Ok(()),
                other => Err(format!("Expected '{sym}' in where, found {other:?}")),
            }
        }
        fn keyword(&self, word: &str) -> bool {
            matches!(self.peek(), Some(Token::Name(n)) if n.eq_ignore_ascii_case(word))
        }
        fn or(&mut self) -> Result<Filter, String> {
            let mut left = self.and()?;
            while self.keyword("OR") {
                self.at += 1;
                left = Filter::Or(Box::new(left), Box::new(self.and()?));
            }
            Ok(left)
        }
        fn and(&mut self) -> Result<Filter, String> {
            let mut left = self.factor()?;
            while self.keyword("AND") {
                self.at += 1;
                left = Filter::And(Box::new(left), Box::new(self.factor()?));
            }
            Ok(left)
        }
        fn factor(&mut self) -> Result<Filter, String> {
            if self.peek() == Some(&Token::Sym("(")) {
                self.at += 1;
                let inner = self.or()?;
                self.expect(")")?;
                return Ok(inner);
            }
            let field = match self.next() {
                Some(Token::Name(n)) => n,
                other => return Err(format!("Expected a property in where, found {other:?}")),
            };
            if !FIELDS.contains(&field.as_str()) {
                return Err(format!("No property or field '{field}' exists in type 'Invoice'"));
            }
            let equal = match self.next() {
                Some(Token::Sym("==")) => true,
                Some(Token::Sym("!=")) => false,
                other => return Err(format!("Expected == or != after {field}, found {other:?}")),
            };
            let value = match self.next() {
                Some(Token::Text(s)) => Literal::Text(s),
                Some(Token::Number(n)) => Literal::Number(n),
                Some(Token::Name(n)) if n == "true" || n == "false" => Literal::Bool(n == "true"),
                Some(Token::Name(n)) if n == "guid" => {
                    self.expect("(")?;
                    let Some(Token::Text(g)) = self.next() else { return Err("guid() needs a string".into()) };
                    self.expect(")")?;
                    Literal::Text(g.to_ascii_lowercase())
                }
                Some(Token::Name(n)) if n == "DateTime" => {
                    self.expect("(")?;
                    let mut parts = Vec::new();
                    loop {
                        match self.next() {
                            Some(Token::Number(x)) => parts.push(x as u32),
                            other => return Err(format!("DateTime() needs numbers, found {other:?}")),
                        }
                        match self.next() {
                            Some(Token::Sym(",")) => {}
                            Some(Token::Sym(")")) => break,
                            other => return Err(format!("Expected , or ) in DateTime(), found {other:?}")),
                        }
                    }
                    let [y, m, d, ..] = parts[..] else { return Err("DateTime(year,month,day)".into()) };
                    let day = chrono::NaiveDate::from_ymd_opt(y as i32, m, d).ok_or("DateTime() is not a date")?;
                    Literal::Date(day.format("%Y-%m-%d").to_string())
                }
                other => return Err(format!("Expected a value after {field}, found {other:?}")),
            };
            Ok(Filter::Compare { field, equal, value })
        }
    }

    pub(super) fn parse(text: &str) -> Result<Filter, String> {
        let mut parser = Parser { tokens: tokens(text)?, at: 0 };
        let filter = parser.or()?;
        if parser.at < parser.tokens.len() {
            return Err(format!("Unexpected {:?} in where", parser.tokens[parser.at]));
        }
        Ok(filter)
    }

    impl Filter {
        pub(super) fn matches(&self, b: &Bill) -> bool {
            match self {
                Filter::And(x, y) => x.matches(b) && y.matches(b),
                Filter::Or(x, y) => x.matches(b) || y.matches(b),
                Filter::Compare { field, equal, value } => {
                    let same = match (field.as_str(), value) {
                        ("Type", Literal::Text(v)) => &b.kind == v,
                        ("Status", Literal::Text(v)) => &b.status == v,
                        ("HasAttachments", Literal::Bool(v)) => b.attachment.is_some() == *v,
                        ("InvoiceNumber", Literal::Text(v)) => &b.invoice_number == v,
                        ("Reference", Literal::Text(v)) => &b.reference == v,
                        ("Contact.ContactID", Literal::Text(v)) => {
                            b.contact_id.as_deref().is_some_and(|c| c.eq_ignore_ascii_case(v))
                        }
                        ("Total", Literal::Number(v)) => (b.total - v).abs() < 0.005,
                        ("Date", Literal::Date(v)) => b.date.as_deref() == Some(v.as_str()),
                        _ => false,
                    };
                    same == *equal
                }
            }
        }
    }
}
