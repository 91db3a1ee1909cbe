//! Two services in one process on one shared pool, each with its own schema and migrations:
//! `{{tables.users}}` is `"users".users` for one and `"billing".users` for the other.
//!
//! `cargo run --example schema_isolation` (`DATABASE_URL`, else a local server).

use pgdbm::{Database, DatabaseConfig, Migrator, SharedPool};

/// A service that was handed a `Database` (it does not own the pool).
struct Service {
    name: &'static str,
    db: Database,
}

impl Service {
    async fn start(
        pool: &SharedPool,
        name: &'static str,
        migrations: &str,
    ) -> pgdbm::Result<Service> {
        let db = pool.database(Some(name))?;
        db.create_schema().await?;
        Migrator::new(&db, migrations, name).apply_pending().await?;
        Ok(Service { name, db })
    }

    async fn add_user(&self, email: &str) -> pgdbm::Result<i64> {
        self.db
            .execute_and_return_id("INSERT INTO {{tables.users}} (email) VALUES ($1)", (email,))
            .await
    }

    async fn user_count(&self) -> pgdbm::Result<i64> {
        Ok(self
            .db
            .fetch_value("SELECT count(*) FROM {{tables.users}}", ())
            .await?
            .unwrap_or(0))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let url = pgdbm::testing::database_url_or_local("isolation").await?;
    let pool = SharedPool::connect(
        DatabaseConfig::new(url)
            .min_connections(2)
            .max_connections(10),
    )
    .await?;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/schema_isolation");
    let users = Service::start(&pool, "users", &format!("{dir}/users_migrations")).await?;
    let billing = Service::start(&pool, "billing", &format!("{dir}/billing_migrations")).await?;

    let sql = "SELECT count(*) FROM {{tables.users}}";
    for s in [&users, &billing] {
        println!("{:>8}: {sql}  ->  {}", s.name, s.db.render(sql)?);
    }
    users.add_user("alice@example.com").await.or_else(|e| {
        if e.is_unique_violation() {
            Ok(0)
        } else {
            Err(e)
        }
    })?;
    billing.add_user("invoices@example.com").await?;
    billing.add_user("accounts@example.com").await?;
    println!(
        "users service sees {} user(s); billing service sees {} billing contact(s); one pool of {} connection(s)",
        users.user_count().await?,
        billing.user_count().await?,
        pool.stats().size
    );
    pool.close().await;
    Ok(())
}
