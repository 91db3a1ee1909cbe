//! The README's quick start, runnable: `cargo run --example quickstart`.
//!
//! Connects to `DATABASE_URL` (or the local server on 127.0.0.1:5432 as `postgres`), renders
//! `{{tables.users}}` into the `quickstart` schema, inserts a user and reads it back.

use pgdbm::{Database, DatabaseConfig};

#[derive(Debug, sqlx::FromRow)]
#[allow(dead_code)] // fields are read through Debug
struct User {
    id: i64,
    email: String,
    name: Option<String>,
}

#[tokio::main]
async fn main() -> pgdbm::Result<()> {
    if std::env::var_os("DATABASE_URL").is_none() {
        // SAFETY: single-threaded at this point; nothing else reads the environment yet.
        unsafe {
            std::env::set_var(
                "DATABASE_URL",
                "postgresql://postgres@127.0.0.1:5432/postgres",
            )
        };
    }
    let config = DatabaseConfig::from_env()? // DATABASE_URL, DB_MIN_CONN, DB_MAX_CONN, DB_SCHEMA, .env
        .schema("quickstart")
        .min_connections(2)
        .max_connections(10);
    let db = Database::connect(config).await?;

    db.execute(
        "CREATE TABLE IF NOT EXISTS {{tables.users}} (id BIGSERIAL PRIMARY KEY, email TEXT UNIQUE NOT NULL, name TEXT)",
        (),
    )
    .await?;
    let email = format!("alice+{}@example.com", std::process::id());
    let id: i64 = db
        .execute_and_return_id(
            "INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2)",
            (&email, "Alice"),
        )
        .await?;
    let user: Option<User> = db
        .fetch_optional("SELECT * FROM {{tables.users}} WHERE id = $1", (id,))
        .await?;
    println!("inserted {user:?}");
    println!("pool: {:?}", db.pool_stats());
    db.close().await;
    Ok(())
}
