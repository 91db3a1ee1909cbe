//! A fresh database per test from pgdbm's own test support, plus raw access to check what is
//! really in it.

use pgdbm::DatabaseConfig;
use pgdbm::testing::TestDatabase;
use sqlx::{Connection, PgConnection};

/// A database created for one test and dropped with it. The tests build their own `Database`
/// on it (with the config under test), so this keeps only the name and the URL.
pub struct TestDb {
    inner: TestDatabase,
    pub name: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let inner = TestDatabase::builder()
            .pool_size(0, 1)
            .build()
            .await
            .expect("test database");
        let name = inner.name().to_string();
        TestDb { inner, name }
    }

    pub fn url(&self) -> String {
        self.inner.url()
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

pub async fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(conn)
        .await
        .expect("count query")
}
