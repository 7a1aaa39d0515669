//! Test databases: a fresh SQLite file or a fresh Postgres database per test, migrated.
//!
//! Postgres comes from `ENRICHD_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432`). When it
//! cannot be reached the Postgres cases are skipped with a printed notice — except under `CI=true`,
//! where they fail.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use enrichd::store::Store;
use sqlx::{AnyConnection, AssertSqlSafe, Connection, Executor};

pub struct TestDb {
    pub store: Store,
    pub url: String,
    admin: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// Another, independent store on the same database (separate connections).
    pub async fn connect_again(&self, max_connections: u32) -> Store {
        Store::connect(&self.url, max_connections).await.unwrap()
    }

    pub async fn cleanup(self) {
        self.store.close().await;
        if let Some((admin, name)) = self.admin {
            if let Ok(mut conn) = AnyConnection::connect(&admin).await {
                let _ = conn
                    .execute(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .await;
            }
        }
    }
}

pub fn postgres_admin_url() -> String {
    std::env::var("ENRICHD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("enrichd.db").display());
    let store = Store::connect(&url, 8).await.unwrap();
    store.migrate().await.unwrap();
    TestDb {
        store,
        url,
        admin: None,
        _dir: Some(dir),
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh, migrated Postgres database, or `None` (with a notice) when none is reachable outside CI.
pub async fn postgres() -> Option<TestDb> {
    sqlx::any::install_default_drivers();
    let base = postgres_admin_url();
    let admin = format!("{}/postgres", base.trim_end_matches('/'));
    let mut conn = match AnyConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!(
                "NOTICE: Postgres at {base} is not reachable ({e}); skipping the Postgres case. CI=true makes this a failure."
            );
            return None;
        }
        Err(e) => panic!("CI=true and Postgres at {base} is not reachable: {e}"),
    };
    let name = format!(
        "enrichd_t_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand_suffix()
    );
    conn.execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    conn.close().await.unwrap();
    let url = format!("{}/{name}", base.trim_end_matches('/'));
    let store = Store::connect(&url, 8).await.unwrap();
    store.migrate().await.unwrap();
    Some(TestDb {
        store,
        url,
        admin: Some((admin, name)),
        _dir: None,
    })
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

/// Defines `mod $name { sqlite, postgres }`, each running `$case(TestDb)` on a fresh database.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident => $case:ident;)*) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = $crate::common::sqlite().await;
                super::$case(&db).await;
                db.cleanup().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(db) = $crate::common::postgres().await else { return };
                super::$case(&db).await;
                db.cleanup().await;
            }
        }
    )*};
}
