//! A fresh database per test, dropped when the test ends (passed or panicked).

use std::sync::atomic::{AtomicU32, Ordering};

use pgdbm::DatabaseConfig;
use sqlx::{Connection, PgConnection};

/// The server the tests use: `PGDBM_TEST_DATABASE_URL`, `DATABASE_URL`, or the local one.
pub fn admin_url() -> String {
    std::env::var("PGDBM_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into())
}

pub fn url_for(db: &str) -> String {
    let mut u = url::Url::parse(&admin_url()).expect("valid admin url");
    u.set_path(&format!("/{db}"));
    u.to_string()
}

/// A database created for one test and dropped with it.
pub struct TestDb {
    pub name: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    pub async fn new() -> TestDb {
        let name = format!(
            "pgdbm_it_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let mut admin = PgConnection::connect(&admin_url())
            .await
            .expect("admin connection");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.ok();
        TestDb { name }
    }

    pub fn url(&self) -> String {
        url_for(&self.name)
    }

    /// A config for this database with small pool sizes.
    pub fn config(&self) -> DatabaseConfig {
        DatabaseConfig::new(self.url())
            .min_connections(1)
            .max_connections(5)
            .retry_attempts(1)
    }

    /// A direct connection, to check what is really in the database.
    pub async fn raw(&self) -> PgConnection {
        PgConnection::connect(&self.url())
            .await
            .expect("raw connection")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime; do the async cleanup on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await;
                }
            });
        })
        .join();
    }
}

pub async fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(conn)
        .await
        .expect("count query")
}
