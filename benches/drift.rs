//! What drift detection costs for a tenant fleet: `Tenants::drift` over N tenants (default 200),
//! each migrated with a schema of every kind the snapshot reads (types, tables, columns,
//! constraints, indexes, sequences, a view, functions, a trigger), against the same comparison
//! done the plain way: one `schema_snapshot` per tenant, one after the other.
//!
//! Run: `cargo bench --bench drift`. Env: `PGDBM_BENCH_URL` (else `DATABASE_URL`, else the local
//! server; databases `pgdbm_bench_drift` and `pgdbm_bench_drift_shadow` are made afresh),
//! `PGDBM_BENCH_TENANTS` (200), `PGDBM_BENCH_CONCURRENCY` (4, batches read at once). Three
//! rounds of each; medians. Printed, never asserted: the closing line is the figure for the
//! issue (drift time for N tenants) and its ratio to the plain way.

use std::time::{Duration, Instant};

use pgdbm::{Database, DatabaseConfig, SharedPool, Tenants};
use sqlx::{Connection, PgConnection};

#[path = "support/tenant_db.rs"]
mod tenant_db;

const DB: &str = "pgdbm_bench_drift";
const SHADOW: &str = "pgdbm_bench_drift_shadow";

const FILES: &[(&str, &str)] = &[
    (
        "001_users.sql",
        "CREATE TYPE {{tables.mood}} AS ENUM ('happy', 'sad');
CREATE TABLE {{tables.users}} (
    id BIGSERIAL PRIMARY KEY, email TEXT NOT NULL UNIQUE, name VARCHAR(100) DEFAULT 'anonymous',
    mood {{tables.mood}}, created_at TIMESTAMPTZ NOT NULL DEFAULT now(), CHECK (email LIKE '%@%'));
CREATE INDEX users_created_at_idx ON {{tables.users}} (created_at);
CREATE SEQUENCE {{tables.invoice_numbers}} START 1000 INCREMENT 10;",
    ),
    (
        "002_posts.sql",
        "CREATE TABLE {{tables.posts}} (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES {{tables.users}} (id) ON DELETE CASCADE,
    title TEXT NOT NULL, body TEXT NOT NULL DEFAULT '', published BOOLEAN NOT NULL DEFAULT false);
CREATE INDEX posts_user_idx ON {{tables.posts}} (user_id) WHERE published;
CREATE VIEW {{tables.post_titles}} AS
    SELECT p.id, u.email FROM {{tables.posts}} p JOIN {{tables.users}} u ON u.id = p.user_id;
CREATE FUNCTION {{tables.post_count}}(uid BIGINT) RETURNS BIGINT LANGUAGE sql STABLE
    AS $$ SELECT count(*) FROM {{tables.posts}} WHERE user_id = uid $$;
CREATE FUNCTION {{tables.touch}}() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN NEW.title := trim(NEW.title); RETURN NEW; END $$;
CREATE TRIGGER posts_touch BEFORE INSERT ON {{tables.posts}}
    FOR EACH ROW EXECUTE FUNCTION {{tables.touch}}();",
    ),
    (
        "003_comments.sql",
        "CREATE TABLE {{tables.comments}} (
    id BIGSERIAL PRIMARY KEY, post_id BIGINT NOT NULL REFERENCES {{tables.posts}} (id),
    author_id BIGINT REFERENCES {{tables.users}} (id), text TEXT NOT NULL, created_at TIMESTAMPTZ DEFAULT now());
CREATE INDEX comments_post_idx ON {{tables.comments}} (post_id, created_at DESC);",
    ),
];

async fn admin(sql: &str) {
    let mut c = PgConnection::connect(tenant_db::url_for("postgres").as_str())
        .await
        .expect("connection to the postgres database");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    c.close().await.ok();
}

async fn fresh(db: &str) {
    admin(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
    admin(&format!("CREATE DATABASE {db}")).await;
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let n = env_usize("PGDBM_BENCH_TENANTS", 200).max(1);
    let concurrency = env_usize("PGDBM_BENCH_CONCURRENCY", 4).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(n, concurrency));
}

async fn run(n: usize, concurrency: usize) {
    fresh(DB).await;
    fresh(SHADOW).await;
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, sql) in FILES {
        std::fs::write(dir.path().join(name), sql).expect("migration file");
    }
    let pool = SharedPool::connect(
        DatabaseConfig::new(tenant_db::url_for(DB).as_str())
            .min_connections(1)
            .max_connections(concurrency + 2)
            .slow_query_threshold(None),
    )
    .await
    .expect("shared pool");
    let tenants = Tenants::new(&pool, "app", dir.path()).concurrency(concurrency);
    let started = Instant::now();
    for i in 0..n {
        tenants.create(&format!("t{i:05}")).await.expect("tenant");
    }
    println!(
        "\n{n} tenants made in {:.1} s ({} files each); {concurrency} batches of 50 read at once",
        started.elapsed().as_secs_f64(),
        FILES.len()
    );
    // One tenant changed by hand, so the reports carry something.
    tenants
        .get("t00001")
        .await
        .expect("tenant")
        .execute("ALTER TABLE {{tables.users}} ADD COLUMN nickname text", ())
        .await
        .expect("alter");

    let shadow = Database::connect(
        DatabaseConfig::new(tenant_db::url_for(SHADOW).as_str())
            .schema("app")
            .min_connections(1)
            .max_connections(2),
    )
    .await
    .expect("shadow");
    let first = Instant::now();
    let reports = tenants.drift(&shadow).await.expect("drift");
    let first = first.elapsed();
    let drifted: Vec<&str> = reports
        .iter()
        .filter(|r| !r.is_clean())
        .filter_map(|r| r.tenant.as_deref())
        .collect();
    println!(
        "first run (migrates the empty shadow): {:.0} ms; {} reports, drifted: {drifted:?}",
        ms(first),
        reports.len()
    );

    let (mut batched, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t = Instant::now();
        let r = tenants.drift(&shadow).await.expect("drift");
        batched.push(t.elapsed());
        assert_eq!(r.len(), n);

        let t = Instant::now();
        let expected = shadow.schema_snapshot().await.expect("snapshot");
        let mut differ = 0;
        for name in tenants.list().await.expect("list") {
            let handle = tenants.get(&name).await.expect("tenant");
            let actual = handle.schema_snapshot().await.expect("snapshot");
            differ += usize::from(!pgdbm::migrate::compare_schemas(&expected, &actual).is_empty());
        }
        plain.push(t.elapsed());
        assert_eq!(differ, drifted.len());
    }
    let (b, p) = (median(batched), median(plain));
    println!(
        "Tenants::drift, {n} tenants (shadow already migrated): {:.0} ms median = {:.2} ms per tenant",
        ms(b),
        ms(b) / n as f64
    );
    println!(
        "one schema_snapshot per tenant, in turn:              {:.0} ms median = {:.2} ms per tenant",
        ms(p),
        ms(p) / n as f64
    );
    println!(
        "ratio batched / one by one: {:.2}; first run with the shadow's migration: {:.0} ms",
        ms(b) / ms(p),
        ms(first)
    );
    pool.close().await;
    shadow.close().await;
    admin(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)")).await;
    admin(&format!("DROP DATABASE IF EXISTS {SHADOW} WITH (FORCE)")).await;
}
