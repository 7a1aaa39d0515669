//! The sandbox's HTTP side: routing, auth, the token endpoint, faults, the query language and each
//! endpoint.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::{
    ACCESS_TOKEN, AUTH_CODE, AUTHORIZE_PATH, CLIENT_ID, CLIENT_SECRET, MINOR_VERSION, QuickBooksSandbox, REALM_ID,
    Received, State, TOKEN_PATH, bump, local_time,
};

pub fn router(sandbox: QuickBooksSandbox) -> Router {
    Router::new().fallback(handle).with_state(sandbox)
}

enum Body {
    Json(Value),
    Text(String),
    Bytes(Vec<u8>, &'static str),
}

struct Reply {
    status: u16,
    body: Body,
    headers: Vec<(&'static str, String)>,
}

fn reply(status: u16, body: Value) -> Reply {
    Reply { status, body: Body::Json(body), headers: Vec::new() }
}

fn ok(mut body: Value, now: i64) -> Reply {
    body["time"] = json!(local_time(now));
    reply(200, body)
}

/// `{"Fault":{"Error":[…],"type"}}` as QuickBooks writes it.
fn fault_body(kind: &str, code: &str, message: &str, detail: &str) -> Value {
    json!({"Fault": {"Error": [{"Message": message, "Detail": detail, "code": code, "element": ""}], "type": kind}})
}

fn fault(status: u16, kind: &str, code: &str, message: &str, detail: &str, now: i64) -> Reply {
    let mut body = fault_body(kind, code, message, detail);
    body["time"] = json!(local_time(now));
    reply(status, body)
}

fn stale_detail() -> &'static str {
    "Stale Object Error : You and Bookkeeper were working on this at the same time. Bookkeeper finished before you did, so your work was not saved."
}

/// Percent-decodes a query component (`+` is a space).
fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s).decode_utf8_lossy().into_owned()
}

fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn handle(
    AxumState(sandbox): AxumState<QuickBooksSandbox>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("localhost").to_owned();
    let path = uri.path().to_owned();
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .trim()
        .to_owned();
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    {
        let mut state = sandbox.lock();
        let query = uri.query().unwrap_or("").to_owned();
        let logged = if path == TOKEN_PATH { Value::Null } else { parsed.clone() };
        state.received.push(Received {
            method: method.to_string(),
            path: path.clone(),
            query,
            token: token.clone(),
            body: logged,
        });
    }
    let api = path.starts_with("/v3/");
    let latency = if api {
        let mut state = sandbox.lock();
        state.in_flight += 1;
        state.stats.max_in_flight = state.stats.max_in_flight.max(state.in_flight);
        state.faults.latency_ms
    } else {
        0
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let reply = {
        let mut state = sandbox.lock();
        if path == AUTHORIZE_PATH && method == Method::GET {
            authorize(&mut state, &query_pairs(&uri))
        } else if path == TOKEN_PATH && method == Method::POST {
            token_endpoint(&mut state, &headers, &body)
        } else if let Some(rest) = path.strip_prefix("/files/") {
            file(&mut state, rest, &query_pairs(&uri))
        } else if api {
            let r = api_call(&mut state, &method, &path, &query_pairs(&uri), &token, &parsed, &host);
            state.in_flight -= 1;
            r
        } else {
            reply(404, json!({"error": "not found"}))
        }
    };
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // Errors are `application/json` without a charset, successes with one (as recorded).
    let json_type = if reply.status == 200 { "application/json;charset=UTF-8" } else { "application/json" };
    let mut response = match reply.body {
        Body::Json(v) => (status, [("content-type", json_type)], v.to_string()).into_response(),
        Body::Text(t) => (status, [("content-type", "text/plain")], t).into_response(),
        Body::Bytes(b, ct) => (status, [("content-type", ct)], b).into_response(),
    };
    let h = response.headers_mut();
    h.insert("intuit-tid", format!("1-{:x}", rand::random::<u64>()).parse().expect("valid header"));
    if api && reply.status == 200 {
        h.insert("qbo-version", "1.4.41".parse().expect("valid header"));
    }
    for (k, v) in reply.headers {
        if let Ok(v) = v.parse() {
            h.insert(k, v);
        }
    }
    response
}

/// The authorisation page: approves at once and redirects back with a fresh single-use code.
fn authorize(state: &mut State, query: &[(String, String)]) -> Reply {
    let get = |k: &str| query.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    if get("client_id").as_deref() != Some(CLIENT_ID) {
        return Reply { status: 400, body: Body::Text("invalid client_id".into()), headers: Vec::new() };
    }
    let Some(redirect) = get("redirect_uri").filter(|r| r.starts_with("http")) else {
        return Reply { status: 400, body: Body::Text("invalid redirect_uri".into()), headers: Vec::new() };
    };
    let state_param = get("state").unwrap_or_default();
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
    let sep = if redirect.contains('?') { '&' } else { '?' };
    let location = if get("response_type").as_deref() != Some("code")
        || !get("scope").unwrap_or_default().split(' ').any(|s| s == crate::SCOPE)
    {
        format!("{redirect}{sep}error=invalid_scope&state={}", enc(&state_param))
    } else {
        state.issued += 1;
        let code = format!("sandbox_code_{}_{:016x}", state.issued, rand::random::<u64>());
        let challenge = get("code_challenge").filter(|_| get("code_challenge_method").as_deref() == Some("S256"));
        state.codes.insert(code.clone(), (redirect.clone(), challenge));
        format!("{redirect}{sep}code={}&state={}&realmId={REALM_ID}", enc(&code), enc(&state_param))
    };
    Reply { status: 302, body: Body::Text(String::new()), headers: vec![("location", location)] }
}

fn token_endpoint(state: &mut State, headers: &HeaderMap, body: &[u8]) -> Reply {
    state.stats.token_requests += 1;
    let form: Map<String, Value> = String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode(k), json!(decode(v))))
        .collect();
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let post = (form.get("client_id").and_then(Value::as_str), form.get("client_secret").and_then(Value::as_str));
    let client_ok = basic.as_deref() == Some(&format!("{CLIENT_ID}:{CLIENT_SECRET}"))
        || post == (Some(CLIENT_ID), Some(CLIENT_SECRET));
    if !client_ok {
        return reply(401, json!({"error": "invalid_client"}));
    }
    let grant = form.get("grant_type").and_then(Value::as_str).unwrap_or("");
    let valid = match grant {
        "authorization_code" => {
            let text = |k: &str| form.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            let code = text("code");
            code == AUTH_CODE
                || state.codes.remove(&code).is_some_and(|(redirect, challenge)| {
                    let verifier = text("code_verifier");
                    let pkce_ok = challenge.is_none_or(|c| {
                        use sha2::Digest as _;
                        let digest = sha2::Sha256::digest(verifier.as_bytes());
                        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest) == c
                    });
                    redirect == text("redirect_uri") && pkce_ok
                })
        }
        "refresh_token" => {
            let given = form.get("refresh_token").and_then(Value::as_str).unwrap_or("");
            // Rotation: the refresh token used is spent.
            state.refresh_tokens.remove(given)
        }
        other => return reply(400, json!({"error": "unsupported_grant_type", "error_description": other})),
    };
    if !valid {
        state.stats.invalid_grants += 1;
        return reply(400, json!({"error": "invalid_grant"}));
    }
    state.issued += 1;
    let access = format!("sandbox_access_{}_{:016x}", state.issued, rand::random::<u64>());
    let refresh = format!("sandbox_refresh_{}_{:016x}", state.issued, rand::random::<u64>());
    state.access_tokens.insert(access.clone());
    state.refresh_tokens.insert(refresh.clone());
    reply(
        200,
        json!({
            "token_type": "bearer",
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": 3600,
            "x_refresh_token_expires_in": 8_726_400,
        }),
    )
}

fn file(state: &mut State, rest: &str, query: &[(String, String)]) -> Reply {
    state.stats.files += 1;
    let id: Option<u64> = rest.parse().ok();
    let signed = query.iter().any(|(k, v)| k == "X-Amz-Signature" && id.is_some_and(|id| *v == signature(id)));
    match id.and_then(|id| state.files.get(&id)) {
        Some(bytes) if signed => {
            Reply { status: 200, body: Body::Bytes(bytes.clone(), "application/pdf"), headers: Vec::new() }
        }
        _ => Reply {
            status: 403,
            body: Body::Text("<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>".into()),
            headers: Vec::new(),
        },
    }
}

fn signature(id: u64) -> String {
    format!("{:x}", id.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn unauthorized() -> Reply {
    reply(
        401,
        json!({"warnings": null, "intuitObject": null, "fault": {"error": [{"message": "message=AuthenticationFailed; errorCode=003200; statusCode=401", "detail": "Token expired: sandbox", "code": "3200", "element": null}], "type": "AUTHENTICATION"}, "report": null, "queryResponse": null, "batchItemResponse": [], "attachableResponse": [], "syncErrorResponse": null, "requestId": null, "time": 0, "status": null, "cdcresponse": []}),
    )
}

fn api_call(
    state: &mut State,
    method: &Method,
    path: &str,
    query: &[(String, String)],
    token: &str,
    body: &Value,
    host: &str,
) -> Reply {
    state.stats.requests += 1;
    let now = state.now;
    if !query.iter().any(|(k, v)| k == "minorversion" && v == MINOR_VERSION) {
        state.stats.without_minor_version += 1;
    }
    if !state.access_tokens.contains(token) && token != ACCESS_TOKEN {
        state.stats.unauthorized += 1;
        return unauthorized();
    }
    // Throttling: injected, per minute, and more than 10 in flight.
    let over_minute = state.faults.per_minute.is_some_and(|limit| {
        if state.minute.0.elapsed() >= Duration::from_secs(60) {
            state.minute = (Instant::now(), 0);
        }
        state.minute.1 += 1;
        state.minute.1 > limit
    });
    if state.faults.throttled_requests > 0 || over_minute || state.in_flight > 10 {
        state.faults.throttled_requests = state.faults.throttled_requests.saturating_sub(1);
        state.stats.throttled += 1;
        let mut r =
            fault(429, "SERVICE", "003001", "ThrottleExceeded", "Request rate exceeded: too many requests", now);
        if let Some(secs) = state.faults.retry_after_secs {
            r.headers.push(("retry-after", secs.to_string()));
        }
        return r;
    }
    if state.faults.faults_in_200 > 0 {
        state.faults.faults_in_200 -= 1;
        return fault(
            200,
            "SystemFault",
            "10000",
            "An application error has occurred while processing your request",
            "System Failure Error: something went wrong",
            now,
        );
    }
    let Some(rest) = path.strip_prefix(&format!("/v3/company/{REALM_ID}/")) else {
        return fault(
            403,
            "AuthorizationFault",
            "120",
            "Authorization Failure",
            "The company in the path is not this app's",
            now,
        );
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET" | "POST", ["query"]) => {
            state.stats.queries += 1;
            let q = query.iter().find(|(k, _)| k == "query").map(|(_, v)| v.clone()).unwrap_or_default();
            match run_query(state, &q) {
                Ok(response) => {
                    bookkeeper_edits(state, &response);
                    ok(json!({"QueryResponse": response}), now)
                }
                Err((code, detail)) => fault(400, "ValidationFault", code, "Invalid query", &detail, now),
            }
        }
        ("GET", [entity, id]) => {
            let found = id.parse::<u64>().ok().and_then(|n| match entity.to_ascii_lowercase().as_str() {
                "bill" => state.bills.get(&n).cloned().map(|b| ("Bill", b)),
                "attachable" => state.attachables.get(&n).cloned().map(|a| ("Attachable", with_links(a, host))),
                "vendor" => find(&state.vendors, id).map(|v| ("Vendor", v)),
                "account" => find(&state.accounts, id).map(|v| ("Account", v)),
                "taxcode" => find(&state.tax_codes, id).map(|v| ("TaxCode", v)),
                _ => None,
            });
            if *entity == "download" {
                state.stats.downloads += 1;
                return match id.parse::<u64>().ok().filter(|n| state.files.contains_key(n)) {
                    Some(n) => Reply { status: 200, body: Body::Text(download_link(n, host)), headers: Vec::new() },
                    None => not_found(id, now),
                };
            }
            match found {
                Some((name, v)) => ok(json!({ name: v }), now),
                None => not_found(id, now),
            }
        }
        ("POST", ["bill"]) => {
            state.stats.bill_updates += 1;
            match update_bill(state, body) {
                Ok(bill) => ok(json!({"Bill": bill}), state.now),
                Err((status, f)) => {
                    let mut f = f;
                    f["time"] = json!(local_time(state.now));
                    reply(status, f)
                }
            }
        }
        ("POST", ["batch"]) => batch(state, body),
        ("POST", ["vendor"]) => {
            // Creates a vendor (no `Id` in the body); names are unique across the company.
            let name = body["DisplayName"].as_str().map(str::trim).unwrap_or_default().to_owned();
            if name.is_empty() || body.get("Id").is_some() {
                return fault(
                    400,
                    "ValidationFault",
                    "2020",
                    "Required param missing",
                    "DisplayName is required; this sandbox only creates vendors",
                    now,
                );
            }
            if state.vendors.iter().any(|v| v["DisplayName"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(&name))) {
                return fault(
                    400,
                    "ValidationFault",
                    "6240",
                    "Duplicate Name Exists Error",
                    &format!("The name supplied already exists. : {name}"),
                    now,
                );
            }
            let id = state.vendors.iter().filter_map(|v| v["Id"].as_str()?.parse::<u64>().ok()).max().unwrap_or(0) + 1;
            state.now += 1;
            let created = super::local_time(state.now);
            let mut vendor = json!({
                "Id": id.to_string(), "DisplayName": name, "SyncToken": "0", "Active": true, "domain": "QBO",
                "sparse": false, "Balance": 0, "MetaData": {"CreateTime": created, "LastUpdatedTime": created},
            });
            if let Some(tax) = body["TaxIdentifier"].as_str() {
                vendor["TaxIdentifier"] = json!(tax);
            }
            state.vendors.push(vendor.clone());
            ok(json!({"Vendor": vendor}), state.now)
        }
        _ => fault(
            400,
            "ValidationFault",
            "500",
            "Unsupported Operation",
            &format!("Operation {method} {rest} is not supported."),
            now,
        ),
    }
}

/// A bookkeeper edits some of the bills a query just returned (see `Faults::bookkeeper_edit_rate`).
fn bookkeeper_edits(state: &mut State, response: &Value) {
    use rand::Rng as _;
    let rate = state.faults.bookkeeper_edit_rate;
    if rate <= 0.0 {
        return;
    }
    for id in response["Bill"].as_array().into_iter().flatten().filter_map(|b| b["Id"].as_str()) {
        if state.edited.iter().any(|e| e == id) || !state.rng.random_bool(rate.min(1.0)) {
            continue;
        }
        let Some(bill) = id.parse::<u64>().ok().and_then(|n| state.bills.get_mut(&n)) else { continue };
        state.now += 1;
        bill["PrivateNote"] = json!("Checked by the bookkeeper");
        bump(bill, state.now);
        state.edited.push(id.to_owned());
    }
}

fn not_found(id: &str, now: i64) -> Reply {
    fault(
        400,
        "ValidationFault",
        "610",
        "Object Not Found",
        &format!(
            "Object Not Found : Something you're trying to use has been made inactive. Check the fields with accounts, customers, items, vendors or employees. ({id})"
        ),
        now,
    )
}

fn find(list: &[Value], id: &str) -> Option<Value> {
    list.iter().find(|v| v["Id"] == id).cloned()
}

fn download_link(id: u64, host: &str) -> String {
    format!(
        "http://{host}/files/{id}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=900&X-Amz-Signature={}",
        signature(id)
    )
}

fn with_links(mut attachable: Value, host: &str) -> Value {
    let id: u64 = attachable["Id"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
    attachable["FileAccessUri"] = json!(format!("/v3/company/{REALM_ID}/download/{id}"));
    attachable["TempDownloadUri"] = json!(download_link(id, host));
    attachable
}

/// Applies a sparse update; a stale `SyncToken` is a 5010 Fault. Returns the bill or (status, Fault).
fn update_bill(state: &mut State, body: &Value) -> Result<Value, (u16, Value)> {
    let err = |status: u16, code: &str, message: &str, detail: &str| {
        Err((status, fault_body("ValidationFault", code, message, detail)))
    };
    let Some(id) = body["Id"].as_str().and_then(|s| s.parse::<u64>().ok()) else {
        return err(
            400,
            "2020",
            "Required param missing, need to supply the required value for the API",
            "Required parameter Id is missing in the request",
        );
    };
    if body["sparse"] != json!(true) {
        // A full update would blank every field left out; enrichd must never send one.
        return err(
            400,
            "2020",
            "Required param missing",
            "This sandbox accepts sparse updates only (\"sparse\": true)",
        );
    }
    let allowed = [
        "Id",
        "SyncToken",
        "sparse",
        "VendorRef",
        "DocNumber",
        "TxnDate",
        "DueDate",
        "CurrencyRef",
        "PrivateNote",
        "GlobalTaxCalculation",
        "Line",
    ];
    if let Some(bad) = body.as_object().into_iter().flatten().map(|(k, _)| k).find(|k| !allowed.contains(&k.as_str())) {
        return err(
            400,
            "2010",
            "Request has invalid or unsupported property",
            &format!("Property Name:Unrecognized field \"{bad}\" specified is unsupported or invalid"),
        );
    }
    if state.refused_writes.contains(&id) {
        return err(
            400,
            "6000",
            "A business validation error has occurred while processing your request",
            "Business Validation Error: The transaction date is in a closed period.",
        );
    }
    let Some(bill) = state.bills.get(&id) else {
        return err(400, "610", "Object Not Found", &format!("Object Not Found : Bill {id}"));
    };
    if body["SyncToken"] != bill["SyncToken"] {
        state.stats.stale += 1;
        return err(400, "5010", "Stale Object Error", stale_detail());
    }
    if let Some(v) = body["VendorRef"]["value"].as_str()
        && find(&state.vendors, v).is_none()
    {
        return err(400, "610", "Object Not Found", &format!("Object Not Found : Vendor {v}"));
    }
    for line in body["Line"].as_array().into_iter().flatten() {
        let detail = &line["AccountBasedExpenseLineDetail"];
        let account = detail["AccountRef"]["value"].as_str().unwrap_or("");
        if find(&state.accounts, account).is_none() {
            return err(
                400,
                "2500",
                "Invalid Reference Id",
                &format!("Invalid Reference Id : Accounts element id {account:?} not found"),
            );
        }
        if let Some(code) = detail["TaxCodeRef"]["value"].as_str()
            && find(&state.tax_codes, code).is_none()
        {
            return err(
                400,
                "2500",
                "Invalid Reference Id",
                &format!("Invalid Reference Id : TaxCode element id {code:?} not found"),
            );
        }
    }
    if let Some(g) = body["GlobalTaxCalculation"].as_str()
        && !["TaxExcluded", "TaxInclusive", "NotApplicable"].contains(&g)
    {
        return err(400, "2010", "Request has invalid or unsupported property", &format!("GlobalTaxCalculation {g}"));
    }
    let retotal = body.get("Line").is_some() || body.get("GlobalTaxCalculation").is_some();
    state.now += 1;
    let now = state.now;
    let accounts = state.accounts.clone();
    let vendors = state.vendors.clone();
    let tax_codes = state.tax_codes.clone();
    let tax_rates = state.tax_rates.clone();
    let bill = state.bills.get_mut(&id).expect("checked above");
    for (k, v) in body.as_object().into_iter().flatten() {
        if !["Id", "SyncToken", "sparse"].contains(&k.as_str()) {
            bill[k] = v.clone();
        }
    }
    // QuickBooks answers references with their names filled in.
    if let Some(v) = bill["VendorRef"]["value"].as_str().and_then(|v| find(&vendors, v)) {
        bill["VendorRef"]["name"] = v["DisplayName"].clone();
    }
    for (n, line) in bill["Line"].as_array_mut().into_iter().flatten().enumerate() {
        line["Id"] = json!((n + 1).to_string());
        line["LineNum"] = json!(n + 1);
        let detail = &mut line["AccountBasedExpenseLineDetail"];
        if let Some(a) = detail["AccountRef"]["value"].as_str().and_then(|v| find(&accounts, v)) {
            detail["AccountRef"]["name"] = a["Name"].clone();
        }
    }
    if retotal {
        // QuickBooks computes the tax and the total from the lines, their tax codes and whether
        // amounts include tax.
        let how = bill["GlobalTaxCalculation"].as_str().unwrap_or("TaxExcluded").to_owned();
        let (mut sum, mut tax) = (0.0, 0.0);
        for line in bill["Line"].as_array().into_iter().flatten() {
            let amount = line["Amount"].as_f64().unwrap_or(0.0);
            let code = line["AccountBasedExpenseLineDetail"]["TaxCodeRef"]["value"].as_str().unwrap_or("");
            let rate = super::purchase_rate(&tax_codes, &tax_rates, code).unwrap_or(0.0);
            sum += amount;
            tax += match how.as_str() {
                "TaxInclusive" => super::round2(amount * rate / (100.0 + rate)),
                "NotApplicable" => 0.0,
                _ => super::round2(amount * rate / 100.0),
            };
        }
        let (sum, tax) = (super::round2(sum), super::round2(tax));
        let total = if how == "TaxInclusive" { sum } else { super::round2(sum + tax) };
        bill["TxnTaxDetail"] = json!({"TotalTax": tax});
        bill["TotalAmt"] = json!(total);
        bill["Balance"] = json!(total);
    }
    bump(bill, now);
    Ok(bill.clone())
}

fn batch(state: &mut State, body: &Value) -> Reply {
    state.stats.batches += 1;
    let now = state.now;
    let Some(items) = body["BatchItemRequest"].as_array() else {
        return fault(400, "ValidationFault", "2020", "Required param missing", "BatchItemRequest is missing", now);
    };
    if items.len() > 30 {
        return fault(
            400,
            "ValidationFault",
            "1040",
            "Too many batch items",
            &format!("The batch holds {} items; at most 30 are allowed.", items.len()),
            now,
        );
    }
    state.stats.batch_items += items.len() as u64;
    let mut answers = Vec::new();
    for item in items {
        let bid = item["bId"].clone();
        let answer = if let Some(q) = item["Query"].as_str() {
            match run_query(state, q) {
                Ok(r) => json!({"QueryResponse": r}),
                Err((code, detail)) => fault_body("ValidationFault", code, "Invalid query", &detail),
            }
        } else if item["operation"] == "update" && item.get("Bill").is_some() {
            match update_bill(state, &item["Bill"]) {
                Ok(bill) => json!({"Bill": bill}),
                Err((_, f)) => f,
            }
        } else {
            fault_body(
                "ValidationFault",
                "500",
                "Unsupported Operation",
                "This sandbox's batch takes Bill updates and queries",
            )
        };
        let mut answer = answer;
        answer["bId"] = bid;
        answers.push(answer);
    }
    ok(json!({"BatchItemResponse": answers}), state.now)
}

// ---------------------------------------------------------------- the query language

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Sym(String),
}

fn tokenize(q: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = q.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated string literal".into()),
                    Some('\\') => {
                        s.extend(chars.get(i + 1));
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        s.push(*c);
                        i += 1;
                    }
                }
            }
            tokens.push(Token::Text(s));
        } else if "(),".contains(c) {
            tokens.push(Token::Sym(c.to_string()));
            i += 1;
        } else if "<>=".contains(c) {
            let mut s = c.to_string();
            if chars.get(i + 1) == Some(&'=') {
                s.push('=');
                i += 1;
            }
            tokens.push(Token::Sym(s));
            i += 1;
        } else {
            let mut s = String::new();
            while let Some(c) = chars.get(i).filter(|c| !c.is_whitespace() && !"(),<>='".contains(**c)) {
                s.push(*c);
                i += 1;
            }
            tokens.push(Token::Word(s));
        }
    }
    Ok(tokens)
}

#[derive(Debug)]
struct Condition {
    path: String,
    op: String,
    values: Vec<String>,
}

fn word(t: Option<&Token>) -> Option<String> {
    match t {
        Some(Token::Word(w)) => Some(w.to_ascii_uppercase()),
        _ => None,
    }
}

/// Runs a query; errors are (code, detail) as QuickBooks' `QueryParserError` / validation.
fn run_query(state: &State, q: &str) -> Result<Value, (&'static str, String)> {
    let parse = |m: String| ("4000", format!("QueryParserError: {m}"));
    let tokens = tokenize(q).map_err(parse)?;
    let mut at = 0;
    if word(tokens.first()).as_deref() != Some("SELECT") {
        return Err(parse("the query must start with SELECT".into()));
    }
    at += 1;
    let count = match tokens.get(at) {
        Some(Token::Word(w)) if w == "*" => {
            at += 1;
            false
        }
        Some(Token::Word(w)) if w.eq_ignore_ascii_case("count") => {
            if tokens.get(at + 1..at + 4)
                != Some(&[Token::Sym("(".into()), Token::Word("*".into()), Token::Sym(")".into())])
            {
                return Err(parse("expected COUNT(*)".into()));
            }
            at += 4;
            true
        }
        _ => return Err(parse("only SELECT * and SELECT COUNT(*) are supported".into())),
    };
    if word(tokens.get(at)).as_deref() != Some("FROM") {
        return Err(parse("expected FROM".into()));
    }
    let entity = match tokens.get(at + 1) {
        Some(Token::Word(e)) => e.clone(),
        _ => return Err(parse("expected an entity after FROM".into())),
    };
    at += 2;
    let (name, rows): (&str, Vec<Value>) = match entity.to_ascii_lowercase().as_str() {
        "bill" => ("Bill", state.bills.values().cloned().collect()),
        "attachable" => ("Attachable", state.attachables.values().cloned().collect()),
        "vendor" => ("Vendor", state.vendors.clone()),
        "account" => ("Account", state.accounts.clone()),
        "taxcode" => ("TaxCode", state.tax_codes.clone()),
        "taxrate" => ("TaxRate", state.tax_rates.clone()),
        "preferences" => ("Preferences", vec![state.preferences.clone()]),
        "companycurrency" => ("CompanyCurrency", state.company_currencies.clone()),
        _ => return Err(("4001", format!("QueryValidationError: invalid context declaration: {entity}"))),
    };
    let mut conditions = Vec::new();
    let mut order: Option<(String, bool)> = None;
    let mut start = 1usize;
    let mut max = 100usize;
    while at < tokens.len() {
        match word(tokens.get(at)).as_deref() {
            Some("WHERE") | Some("AND") => {
                let path = match tokens.get(at + 1) {
                    Some(Token::Word(p)) => p.clone(),
                    _ => return Err(parse("expected a property".into())),
                };
                let op = match (tokens.get(at + 2), word(tokens.get(at + 2))) {
                    (Some(Token::Sym(s)), _) if s != "(" && s != ")" && s != "," => s.clone(),
                    (_, Some(w)) if w == "IN" || w == "LIKE" => w,
                    _ => return Err(parse(format!("expected an operator after {path}"))),
                };
                at += 3;
                let mut values = Vec::new();
                if op == "IN" {
                    if tokens.get(at) != Some(&Token::Sym("(".into())) {
                        return Err(parse("expected ( after IN".into()));
                    }
                    at += 1;
                    loop {
                        match tokens.get(at) {
                            Some(Token::Text(v)) | Some(Token::Word(v)) => values.push(v.clone()),
                            _ => return Err(parse("expected a value in IN (…)".into())),
                        }
                        at += 1;
                        match tokens.get(at) {
                            Some(Token::Sym(s)) if s == "," => at += 1,
                            Some(Token::Sym(s)) if s == ")" => {
                                at += 1;
                                break;
                            }
                            _ => return Err(parse("expected , or ) in IN (…)".into())),
                        }
                    }
                } else {
                    match tokens.get(at) {
                        Some(Token::Text(v)) | Some(Token::Word(v)) => values.push(v.clone()),
                        _ => return Err(parse(format!("expected a value after {path} {op}"))),
                    }
                    at += 1;
                }
                conditions.push(Condition { path, op, values });
            }
            Some("OR") => return Err(parse("OR is not supported".into())),
            Some("ORDERBY") => {
                let path = match tokens.get(at + 1) {
                    Some(Token::Word(p)) => p.clone(),
                    _ => return Err(parse("expected a property after ORDERBY".into())),
                };
                at += 2;
                let desc = match word(tokens.get(at)).as_deref() {
                    Some("DESC") => {
                        at += 1;
                        true
                    }
                    Some("ASC") => {
                        at += 1;
                        false
                    }
                    _ => false,
                };
                order = Some((path, desc));
            }
            Some(k @ ("STARTPOSITION" | "MAXRESULTS")) => {
                let n: usize = match tokens.get(at + 1) {
                    Some(Token::Word(n)) => n.parse().map_err(|_| parse(format!("{k} needs a number")))?,
                    _ => return Err(parse(format!("{k} needs a number"))),
                };
                if k == "STARTPOSITION" {
                    start = n.max(1);
                } else {
                    if n > 1000 {
                        return Err(parse(format!("MAXRESULTS {n} is over 1000")));
                    }
                    max = n;
                }
                at += 2;
            }
            _ => return Err(parse(format!("unexpected {:?}", tokens[at]))),
        }
    }
    let mut rows: Vec<Value> = rows.into_iter().filter(|r| conditions.iter().all(|c| matches(r, c))).collect();
    if count {
        return Ok(json!({"totalCount": rows.len()}));
    }
    if let Some((path, desc)) = order {
        rows.sort_by(|a, b| {
            let (x, y) = (values_at(a, &path), values_at(b, &path));
            let o = compare(x.first().map(String::as_str).unwrap_or(""), y.first().map(String::as_str).unwrap_or(""));
            if desc { o.reverse() } else { o }
        });
    }
    let page: Vec<Value> = rows.into_iter().skip(start - 1).take(max).collect();
    if page.is_empty() {
        return Ok(json!({}));
    }
    let n = page.len();
    Ok(json!({ name: page, "startPosition": start, "maxResults": n }))
}

/// Every value at a dotted path (case-insensitive keys; arrays are looked into).
fn values_at(v: &Value, path: &str) -> Vec<String> {
    let mut current = vec![v.clone()];
    for key in path.split('.') {
        let mut next = Vec::new();
        for c in current {
            let items = match c {
                Value::Array(a) => a,
                other => vec![other],
            };
            for item in items {
                if let Some((_, v)) = item.as_object().into_iter().flatten().find(|(k, _)| k.eq_ignore_ascii_case(key))
                {
                    next.push(v.clone());
                }
            }
        }
        current = next;
    }
    current
        .into_iter()
        .flat_map(|v| match v {
            Value::Array(a) => a,
            other => vec![other],
        })
        .map(|v| match v {
            Value::String(s) => s,
            // A reference (`VendorRef = '56'`) compares by its value.
            Value::Object(o) if o.contains_key("value") => match &o["value"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            },
            other => other.to_string(),
        })
        .collect()
}

/// Compares as times, then numbers, then case-insensitive text.
fn compare(a: &str, b: &str) -> std::cmp::Ordering {
    if let (Ok(x), Ok(y)) = (chrono::DateTime::parse_from_rfc3339(a), chrono::DateTime::parse_from_rfc3339(b)) {
        return x.cmp(&y);
    }
    if let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) {
        return x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal);
    }
    a.to_lowercase().cmp(&b.to_lowercase())
}

fn matches(row: &Value, c: &Condition) -> bool {
    use std::cmp::Ordering::*;
    values_at(row, &c.path).iter().any(|v| match c.op.as_str() {
        "=" => compare(v, &c.values[0]) == Equal,
        "IN" => c.values.iter().any(|x| compare(v, x) == Equal),
        "<" => compare(v, &c.values[0]) == Less,
        ">" => compare(v, &c.values[0]) == Greater,
        "<=" => compare(v, &c.values[0]) != Greater,
        ">=" => compare(v, &c.values[0]) != Less,
        "LIKE" => {
            let pattern = c.values[0].to_lowercase();
            let v = v.to_lowercase();
            match (pattern.strip_prefix('%'), pattern.strip_suffix('%')) {
                (Some(p), _) if p.ends_with('%') => v.contains(p.trim_end_matches('%')),
                (Some(p), _) => v.ends_with(p),
                (None, Some(p)) => v.starts_with(p),
                (None, None) => v == pattern,
            }
        }
        _ => false,
    })
}
