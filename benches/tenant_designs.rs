//! Why tenant queries slow down as tenants grow, and which cure works: the same point query over
//! k tenant schemas, on plain sqlx connections (one per task, no pgdbm), in four designs:
//!
//! - `qualified`: each tenant's SQL names its schema (`"tenant_7".users`), so each tenant is a
//!   statement of its own in every connection's cache (sqlx's default capacity, 256);
//! - `qualified, big cache`: the same with a cache that holds every tenant's statement;
//! - `qualified, affinity`: the same, but each connection serves only its share of the tenants
//!   (what routing a tenant to "its" connections would give);
//! - `affinity, big cache`: both;
//! - `search_path`: one unqualified SQL text for every tenant, and `SET search_path` on the
//!   connection whenever the next query's tenant differs from its last one.
//!
//! After each cell it reads the server memory of every connection
//! (`pg_backend_memory_contexts`). Printed, never asserted.
//!
//! Run: `cargo bench --bench tenant_designs`. Env: `PGDBM_BENCH_URL` (else `DATABASE_URL`, else
//! the local server; its database is replaced by a fresh `pgdbm_bench_tenant_designs`),
//! `PGDBM_BENCH_SECS` per cell (default 3), `PGDBM_BENCH_TASKS` (default 8),
//! `PGDBM_BENCH_TENANTS` (comma-separated k, default `1,100,1000`), `PGDBM_BENCH_WARMUP`
//! (passes over its tenants each task makes before timing, default 0), `PGDBM_BENCH_DESIGNS`
//! (`;`-separated design names, default all).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgConnection};

const DB: &str = "pgdbm_bench_tenant_designs";
const ROWS: i64 = 100;

#[path = "support/tenant_db.rs"]
mod tenant_db;

fn url_for(database: &str, cache: usize) -> String {
    let mut u = tenant_db::url_for(database);
    u.query_pairs_mut()
        .append_pair("statement-cache-capacity", &cache.to_string());
    u.to_string()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Design {
    Qualified,
    BigCache,
    Affinity,
    AffinityBigCache,
    SearchPath,
}

impl Design {
    fn name(self) -> &'static str {
        match self {
            Design::Qualified => "qualified",
            Design::BigCache => "qualified, big cache",
            Design::Affinity => "qualified, affinity",
            Design::AffinityBigCache => "affinity, big cache",
            Design::SearchPath => "search_path",
        }
    }
}

/// Queries per second, and the mean server memory of a connection afterwards (MiB).
async fn measure(design: Design, k: usize, tasks: usize, secs: f64, warm: usize) -> (f64, f64) {
    let cache = if matches!(design, Design::BigCache | Design::AffinityBigCache) {
        2 * k + 16
    } else {
        256
    };
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let warmed = Arc::new(AtomicU64::new(0));
    let mut conns = Vec::new();
    for _ in 0..tasks {
        conns.push(
            PgConnection::connect(&url_for(DB, cache))
                .await
                .expect("bench connection"),
        );
    }
    let handles: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            let (stop, done, warmed) = (stop.clone(), done.clone(), warmed.clone());
            // The tenants this task cycles through.
            let mine: Vec<usize> = if matches!(design, Design::Affinity | Design::AffinityBigCache)
            {
                (0..k).filter(|t| t % tasks == i % k.min(tasks)).collect()
            } else {
                (0..k).map(|n| (n + i * 37) % k).collect()
            };
            tokio::spawn(async move {
                let mut current: Option<usize> = None;
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    if n == warm * mine.len() {
                        warmed.fetch_add(1, Ordering::Relaxed);
                    }
                    let tenant = mine[n % mine.len()];
                    n += 1;
                    let id = (n as i64 % ROWS) + 1;
                    let row: Option<(i64, String)> = if design == Design::SearchPath {
                        if current != Some(tenant) {
                            conn.execute(sqlx::AssertSqlSafe(format!(
                                "SET search_path TO tenant_{tenant}"
                            )))
                            .await
                            .expect("SET search_path");
                            current = Some(tenant);
                        }
                        sqlx::query_as("SELECT id, email FROM users WHERE id = $1")
                            .bind(id)
                            .fetch_optional(&mut conn)
                            .await
                            .expect("point query")
                    } else {
                        sqlx::query_as(sqlx::AssertSqlSafe(format!(
                            "SELECT id, email FROM tenant_{tenant}.users WHERE id = $1"
                        )))
                        .bind(id)
                        .fetch_optional(&mut conn)
                        .await
                        .expect("point query")
                    };
                    let row = row.expect("a row");
                    assert_eq!(row.1, format!("{id}@t{tenant}"), "the tenant's own row");
                    done.fetch_add(1, Ordering::Relaxed);
                }
                let bytes: i64 = sqlx::query_scalar(
                    "SELECT sum(total_bytes)::int8 FROM pg_backend_memory_contexts",
                )
                .fetch_one(&mut conn)
                .await
                .expect("memory contexts");
                conn.close().await.ok();
                bytes
            })
        })
        .collect();
    // Warm: every task has run `warm` passes over its tenants (then half a second more).
    let warming = Instant::now();
    while warmed.load(Ordering::Relaxed) < tasks as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if warm > 0 {
        println!(
            "  ({warm} warm-up passes took {:.1} s)",
            warming.elapsed().as_secs_f64()
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (n0, t0) = (done.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let (n1, t1) = (done.load(Ordering::Relaxed), Instant::now());
    stop.store(true, Ordering::Relaxed);
    let mut memory = 0i64;
    for h in handles {
        memory += h.await.expect("a benchmark task panicked");
    }
    (
        (n1 - n0) as f64 / (t1 - t0).as_secs_f64(),
        memory as f64 / tasks as f64 / (1024.0 * 1024.0),
    )
}

async fn setup(k_max: usize) {
    let mut admin = PgConnection::connect(&url_for("postgres", 0))
        .await
        .expect("connection to the postgres database");
    for sql in [
        format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"),
        format!("CREATE DATABASE {DB}"),
    ] {
        admin
            .execute(sqlx::AssertSqlSafe(sql))
            .await
            .expect("fresh bench database");
    }
    admin.close().await.ok();
    let mut conn = PgConnection::connect(&url_for(DB, 0)).await.expect("db");
    let started = Instant::now();
    for chunk in (0..k_max).collect::<Vec<_>>().chunks(200) {
        let mut script = String::from("BEGIN;");
        for t in chunk {
            script.push_str(&format!(
                "CREATE SCHEMA tenant_{t}; CREATE TABLE tenant_{t}.users (id int8 PRIMARY KEY, email text NOT NULL); \
                 INSERT INTO tenant_{t}.users SELECT g, g || '@t{t}' FROM generate_series(1, {ROWS}) g;"
            ));
        }
        script.push_str("COMMIT;");
        conn.execute(sqlx::AssertSqlSafe(script))
            .await
            .expect("tenant schemas");
    }
    conn.close().await.ok();
    println!(
        "{k_max} tenant schemas made in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    let env = |k: &str| std::env::var(k).ok();
    let secs: f64 = env("PGDBM_BENCH_SECS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let tasks: usize = env("PGDBM_BENCH_TASKS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let warm: usize = env("PGDBM_BENCH_WARMUP")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let only = env("PGDBM_BENCH_DESIGNS");
    let ks: Vec<usize> = env("PGDBM_BENCH_TENANTS")
        .unwrap_or_else(|| "1,100,1000".into())
        .split(',')
        .map(|v| v.trim().parse().expect("PGDBM_BENCH_TENANTS: numbers"))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        setup(*ks.iter().max().expect("a k")).await;
        println!("point query over k tenants, {tasks} tasks on a connection each, {secs} s per cell");
        let designs = [
            Design::Qualified,
            Design::BigCache,
            Design::Affinity,
            Design::AffinityBigCache,
            Design::SearchPath,
        ];
        let mut base = None;
        for &k in &ks {
            for design in designs {
                if only.as_deref().is_some_and(|o| !o.split(';').any(|d| d.trim() == design.name())) {
                    continue;
                }
                let (qps, mib) = measure(design, k, tasks, secs, warm).await;
                let base = *base.get_or_insert(qps);
                println!(
                    "k = {k:>6}  {:<22} {qps:>8.0} q/s  {:>5.2} of k = 1 qualified  server memory {mib:>6.1} MiB per connection",
                    design.name(),
                    qps / base
                );
            }
        }
    });
}
