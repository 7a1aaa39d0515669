//! The sandbox's Zendesk behaviour over HTTP: auth, Search's cap and lag, the export's cursor, lag and
//! limit, jobs (progress, per-ticket failures, the job cap), safe updates, tag merging, 429s.

use enrichd_zendesk::sandbox::{
    API_TOKEN, CATEGORY_FIELD_ID, EMAIL, Faults, OAUTH_TOKEN, READ_ONLY_OAUTH_TOKEN, ZendeskSandbox,
};
use serde_json::{Value, json};

mod common;

use common::Api as Client;

impl Client {
    async fn get(&self, path: &str) -> (u16, Value) {
        let (status, _, body) = self.call(reqwest::Method::GET, path, None).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        let (status, _, body) = self.call(reqwest::Method::PUT, path, Some(body)).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    async fn finish_job(&self, job: &Value) -> Value {
        let url = job["job_status"]["url"].as_str().unwrap();
        let path = url[url.find("/api/v2/").unwrap()..].to_owned();
        for _ in 0..10 {
            let (status, body) = self.get(&path).await;
            assert_eq!(status, 200);
            if body["job_status"]["status"] == "completed" {
                return body;
            }
        }
        panic!("job never completed");
    }
}

fn no_export_limit(sandbox: &ZendeskSandbox) {
    sandbox.set_faults(Faults { incremental_per_minute: None, ..Default::default() });
}

#[tokio::test]
async fn auth_accepts_api_tokens_and_bearer_tokens_and_refuses_the_rest() {
    let sandbox = ZendeskSandbox::new(5, 1);
    let client = Client::start(&sandbox).await;
    let url = format!("{}/api/v2/tickets/1.json", client.base);
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(client.http.get(&url).basic_auth(format!("{EMAIL}/token"), Some(API_TOKEN)).send().await.unwrap()),
        200
    );
    assert_eq!(status(client.http.get(&url).bearer_auth(OAUTH_TOKEN).send().await.unwrap()), 200);
    let wrong = client.http.get(&url).basic_auth(EMAIL, Some(API_TOKEN)).send().await.unwrap();
    assert_eq!(wrong.status().as_u16(), 401, "the token without the /token suffix is a password login");
    assert_eq!(wrong.json::<Value>().await.unwrap(), json!({"error": "Couldn't authenticate you"}));
    assert_eq!(status(client.http.get(&url).send().await.unwrap()), 401);
    let read_only = client
        .http
        .put(&url)
        .bearer_auth(READ_ONLY_OAUTH_TOKEN)
        .json(&json!({"ticket": {"priority": "low"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(read_only.status().as_u16(), 403);
    let body: Value = read_only.json().await.unwrap();
    assert_eq!(body["errors"][0]["status"], "403", "JSON:API error shape: {body}");
    assert_eq!(sandbox.stats().unauthorized, 2);
}

#[tokio::test]
async fn search_stops_at_one_thousand_results_and_lags() {
    let sandbox = ZendeskSandbox::with_triaged_share(1200, 3, 0.0);
    let client = Client::start(&sandbox).await;
    let query = "/api/v2/search.json?query=type%3Aticket+status%3Csolved+-tags%3Atriaged&per_page=100";
    let (status, body) = client.get(&format!("{query}&page=10")).await;
    assert_eq!(status, 200);
    assert_eq!(body["results"].as_array().unwrap().len(), 100);
    // The ticket created two minutes ago is not indexed yet (lag 180 s): 1,199 of 1,200.
    assert_eq!(body["count"], 1199);
    let (status, body) = client.get(&format!("{query}&page=11")).await;
    assert_eq!(status, 422, "page 11 at 100 per page is past Search's cap: {body}");
    assert_eq!(body["error"], "invalid");

    // An agent triages ticket 5: Search still shows it untriaged until the index catches up.
    sandbox.edit_as_agent(5, json!({"additional_tags": ["triaged"]})).unwrap();
    let contains_5 = |body: &Value| body["results"].as_array().unwrap().iter().any(|t| t["id"] == 5);
    let (_, body) = client.get(&format!("{query}&page=1")).await;
    assert!(contains_5(&body), "the index lags behind the edit");
    sandbox.advance(181);
    let (_, body) = client.get(&format!("{query}&page=1")).await;
    assert!(!contains_5(&body), "after the lag the edit is indexed");
    let (_, body) =
        client.get(&format!("/api/v2/search.json?query=type%3Aticket+custom_field_{CATEGORY_FIELD_ID}%3Anone")).await;
    assert_eq!(body["count"], 1200);
}

#[tokio::test]
async fn incremental_export_pages_to_end_of_stream_and_holds_back_the_last_minute() {
    let sandbox = ZendeskSandbox::new(25, 2);
    no_export_limit(&sandbox);
    let client = Client::start(&sandbox).await;
    let (status, body) =
        client.get(&format!("/api/v2/incremental/tickets/cursor.json?start_time={}", sandbox.now() - 30)).await;
    assert_eq!(status, 400, "start_time within the last minute is refused: {body}");

    let mut seen = Vec::new();
    let mut path = "/api/v2/incremental/tickets/cursor.json?start_time=0&per_page=10".to_owned();
    let cursor = loop {
        let (status, body) = client.get(&path).await;
        assert_eq!(status, 200);
        seen.extend(body["tickets"].as_array().unwrap().iter().map(|t| t["id"].as_u64().unwrap()));
        let cursor = body["after_cursor"].as_str().unwrap().to_owned();
        if body["end_of_stream"] == true {
            break cursor;
        }
        path = format!("/api/v2/incremental/tickets/cursor.json?cursor={}&per_page=10", cursor.replace('=', "%3D"));
    };
    seen.sort_unstable();
    assert_eq!(seen, (1..=25).collect::<Vec<_>>(), "every ticket exactly once");

    // A change now is held back for a minute, then appears after the saved cursor.
    sandbox.edit_as_agent(7, json!({"priority": "urgent"})).unwrap();
    let resume = format!("/api/v2/incremental/tickets/cursor.json?cursor={}", cursor.replace('=', "%3D"));
    let (_, body) = client.get(&resume).await;
    assert_eq!(body["tickets"], json!([]), "changes of the last minute are excluded");
    assert_eq!(body["end_of_stream"], true);
    sandbox.advance(61);
    let (_, body) = client.get(&resume).await;
    assert_eq!(body["tickets"][0]["id"], 7);
    assert_eq!(body["tickets"][0]["priority"], "urgent");
}

#[tokio::test]
async fn incremental_export_allows_ten_requests_a_minute() {
    let sandbox = ZendeskSandbox::new(3, 2);
    let client = Client::start(&sandbox).await;
    for _ in 0..10 {
        let (status, _) = client.get("/api/v2/incremental/tickets/cursor.json?start_time=0").await;
        assert_eq!(status, 200);
    }
    let (status, headers, body) =
        client.call(reqwest::Method::GET, "/api/v2/incremental/tickets/cursor.json?start_time=0", None).await;
    assert_eq!(status, 429);
    assert!(headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert!(body.starts_with("Rate limit exceeded"), "{body}");
}

#[tokio::test]
async fn a_job_fails_only_the_ticket_whose_option_was_deleted() {
    let sandbox = ZendeskSandbox::with_triaged_share(4, 5, 0.0);
    let client = Client::start(&sandbox).await;
    let tags_before = sandbox.ticket(2).unwrap()["tags"].clone();
    let batch = json!({"tickets": [
        {"id": 1, "custom_fields": [{"id": CATEGORY_FIELD_ID, "value": "shipping"}]},
        {"id": 2, "custom_fields": [{"id": CATEGORY_FIELD_ID, "value": "feedback"}], "additional_tags": ["ai_triaged"]},
        {"id": 3, "priority": "high"}
    ]});
    let (status, job) = client.put("/api/v2/tickets/update_many.json", batch).await;
    assert_eq!(status, 200);
    sandbox.delete_category_option("shipping");
    let done = client.finish_job(&job).await;
    let results = done["job_status"]["results"].as_array().unwrap();
    assert_eq!(results[0]["success"], false);
    assert_eq!(results[0]["status"], "Failed");
    assert!(results[0]["details"].as_str().unwrap().contains("Category"), "{}", results[0]);
    assert_eq!(results[1]["success"], true);
    assert_eq!(results[2]["success"], true);
    let ticket1 = sandbox.ticket(1).unwrap();
    assert_eq!(ticket1["custom_fields"][0]["value"], Value::Null, "the failed ticket is untouched");
    let ticket2 = sandbox.ticket(2).unwrap();
    assert_eq!(ticket2["custom_fields"][0]["value"], "feedback");
    let tags: Vec<&str> = ticket2["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    for tag in tags_before.as_array().unwrap() {
        assert!(tags.contains(&tag.as_str().unwrap()), "additional_tags kept {tag}");
    }
    assert!(tags.contains(&"ai_triaged") && tags.contains(&"feedback"), "{tags:?}");
    assert_eq!(sandbox.submissions(1), 1);
}

#[tokio::test]
async fn the_job_cap_refuses_more_unfinished_jobs() {
    let sandbox = ZendeskSandbox::new(4, 5);
    sandbox.set_faults(Faults { job_cap: 2, ..Default::default() });
    let client = Client::start(&sandbox).await;
    let batch = || json!({"tickets": [{"id": 1, "priority": "low"}]});
    let (_, first) = client.put("/api/v2/tickets/update_many.json", batch()).await;
    assert_eq!(client.put("/api/v2/tickets/update_many.json", batch()).await.0, 200);
    let (status, body) = client.put("/api/v2/tickets/update_many.json", batch()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "TooManyJobs");
    client.finish_job(&first).await;
    assert_eq!(client.put("/api/v2/tickets/update_many.json", batch()).await.0, 200);
}

#[tokio::test]
async fn safe_update_answers_409_on_a_stale_stamp() {
    let sandbox = ZendeskSandbox::new(4, 5);
    let client = Client::start(&sandbox).await;
    let stamp = sandbox.ticket(2).unwrap()["updated_at"].as_str().unwrap().to_owned();
    sandbox.edit_as_agent(2, json!({"priority": "urgent", "additional_tags": ["escalated"]})).unwrap();
    let body = json!({"ticket": {"priority": "low", "safe_update": true, "updated_stamp": stamp}});
    let (status, answer) = client.put("/api/v2/tickets/2.json", body).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"], "UpdateConflict");
    assert_eq!(sandbox.ticket(2).unwrap()["priority"], "urgent", "the agent's value stays");

    let fresh = sandbox.ticket(2).unwrap()["updated_at"].as_str().unwrap().to_owned();
    let body = json!({"ticket": {"comment": {"body": "AI triage: billing", "public": false}, "safe_update": true, "updated_stamp": fresh}});
    let (status, answer) = client.put("/api/v2/tickets/2.json", body).await;
    assert_eq!(status, 200, "{answer}");
    let last = sandbox.comments(2).last().cloned().unwrap();
    assert!(!last.public && last.body == "AI triage: billing");
    assert_ne!(answer["ticket"]["updated_at"].as_str().unwrap(), fresh, "every change moves updated_at");

    let (status, answer) = client.put("/api/v2/tickets/2.json", json!({"ticket": {"priority": "someday"}})).await;
    assert_eq!(status, 422);
    assert_eq!(answer["error"], "RecordInvalid");
    assert!(answer["details"]["base"][0]["description"].as_str().unwrap().contains("priority"));
}

#[tokio::test]
async fn injected_429s_carry_retry_after_and_a_plain_text_body() {
    let sandbox = ZendeskSandbox::new(2, 5);
    sandbox.set_faults(Faults { rate_limited_requests: 1, retry_after_secs: 7, ..Default::default() });
    let client = Client::start(&sandbox).await;
    let (status, headers, body) = client.call(reqwest::Method::GET, "/api/v2/tickets/1.json", None).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "7");
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert!(serde_json::from_str::<Value>(&body).is_err(), "plain text: {body}");
    let (status, headers, _) = client.call(reqwest::Method::GET, "/api/v2/tickets/1.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-rate-limit"], "2500");
    assert!(headers["x-rate-limit-remaining"].to_str().unwrap().parse::<u32>().unwrap() < 2500);
}

#[tokio::test]
async fn comments_carry_author_roles_and_private_notes() {
    let sandbox = ZendeskSandbox::with_triaged_share(40, 9, 1.0);
    let client = Client::start(&sandbox).await;
    let mut saw_private = false;
    for id in 1..=40 {
        let (status, body) = client.get(&format!("/api/v2/tickets/{id}/comments.json?include=users")).await;
        assert_eq!(status, 200);
        let users = body["users"].as_array().unwrap();
        let role = |author: &Value| users.iter().find(|u| u["id"] == *author).map(|u| u["role"].clone()).unwrap();
        let comments = body["comments"].as_array().unwrap();
        assert_eq!(role(&comments[0]["author_id"]), "end-user", "the requester opens the ticket");
        assert!(comments.len() >= 2, "triaged tickets have an agent's answer");
        assert_eq!(role(&comments[1]["author_id"]), "agent");
        saw_private |= comments.iter().any(|c| c["public"] == false);
    }
    assert!(saw_private, "some conversations hold private notes");
    let (_, fields) = client.get("/api/v2/ticket_fields.json").await;
    let category = fields["ticket_fields"].as_array().unwrap().iter().find(|f| f["title"] == "Category").unwrap();
    assert_eq!(category["custom_field_options"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn the_seeded_fault_mix_is_the_same_for_the_same_seed() {
    async fn statuses(seed: u64) -> Vec<u16> {
        let sandbox = ZendeskSandbox::new(3, seed);
        sandbox.set_faults(Faults { rate_limit_rate: 0.2, server_error_rate: 0.2, ..Default::default() });
        let client = Client::start(&sandbox).await;
        let mut out = Vec::new();
        for _ in 0..40 {
            out.push(client.call(reqwest::Method::GET, "/api/v2/tickets/1.json", None).await.0);
        }
        out
    }
    let first = statuses(11).await;
    assert_eq!(first, statuses(11).await, "the same seed gives the same faults");
    for status in [200, 429, 503] {
        assert!(first.contains(&status), "{status} in the mix: {first:?}");
    }
}
