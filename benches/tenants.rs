//! A `tsql_as!` point query through a tenant handle (re-targeted to the tenant's schema) against
//! the same query through a handle of the schema it was checked for, in one run, on one pool.
//!
//! Run: `cargo bench --bench tenants`. Env: `PGDBM_BENCH_URL` (else `DATABASE_URL`, else the local
//! server; its database is replaced by a fresh `pgdbm_bench_tenants`), `PGDBM_BENCH_SECS` per cell
//! (default 5), `PGDBM_BENCH_TASKS` (default 8). The cells alternate, three rounds each, and the
//! medians are compared. Bar: tenant / compile-time schema >= 0.95. Printed, never asserted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pgdbm::{Database, DatabaseConfig, Migrator, SharedPool, Tenants, tsql_as};
use sqlx::Connection;

const DB: &str = "pgdbm_bench_tenants";
const USERS: i64 = 10_000;

#[allow(dead_code)] // decoded, not read
struct User {
    id: i64,
    email: String,
    name: Option<String>,
}

#[path = "support/tenant_db.rs"]
mod tenant_db;

fn url_for(database: &str) -> String {
    tenant_db::url_for(database).to_string()
}

async fn fill(db: &Database) {
    db.execute(
        "INSERT INTO {{tables.users}} (email, name) SELECT 'u' || g || '@example.com', 'user ' || g FROM generate_series(1, $1) g",
        (USERS,),
    )
    .await
    .expect("filling users");
}

/// Point queries per second from `tasks` tasks on `db` for `secs`.
async fn measure(db: &Database, tasks: usize, secs: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let (db, stop, done) = (db.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut id = i as i64;
                while !stop.load(Ordering::Relaxed) {
                    id = id * 6_364_136_223_846_793_005 % USERS + 1;
                    let user = tsql_as!(
                        User,
                        "SELECT id, email, name FROM <<tables.users>> WHERE id = $1",
                        id.abs()
                    )
                    .fetch_optional(&db)
                    .await
                    .expect("tsql_as! point query");
                    assert!(user.is_some());
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (n0, t0) = (done.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let (n1, t1) = (done.load(Ordering::Relaxed), Instant::now());
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.expect("a benchmark task panicked");
    }
    (n1 - n0) as f64 / (t1 - t0).as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let secs: f64 = std::env::var("PGDBM_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5.0);
    let tasks: usize = std::env::var("PGDBM_BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let mut admin = sqlx::PgConnection::connect(&url_for("postgres"))
            .await
            .expect("connection to the postgres database");
        for sql in [
            format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"),
            format!("CREATE DATABASE {DB}"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut admin)
                .await
                .expect("fresh bench database");
        }
        admin.close().await.ok();

        let pool = SharedPool::connect(
            DatabaseConfig::new(url_for(DB))
                .min_connections(tasks)
                .max_connections(tasks)
                .slow_query_threshold(None),
        )
        .await
        .expect("shared pool");
        let migrations = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let compiled = pool.database(Some("myservice")).expect("handle");
        compiled.create_schema().await.expect("schema");
        Migrator::new(&compiled, migrations, "myservice")
            .apply_pending()
            .await
            .expect("migrations");
        let tenants = Tenants::new(&pool, "myservice", migrations);
        let tenant = tenants.create("bench").await.expect("tenant");
        fill(&compiled).await;
        fill(&tenant).await;

        println!();
        println!(
            "tsql_as! point query (SELECT … FROM <<tables.users>> WHERE id = $1), {tasks} tasks, pool of {tasks}, {secs} s per cell, 3 rounds"
        );
        let (mut plain, mut tenant_qps) = (Vec::new(), Vec::new());
        for round in 1..=3 {
            let a = measure(&compiled, tasks, secs).await;
            let b = measure(&tenant, tasks, secs).await;
            println!(
                "round {round}: schema it was checked for {a:>8.0} q/s   tenant handle {b:>8.0} q/s   ratio {:.3}",
                b / a
            );
            plain.push(a);
            tenant_qps.push(b);
        }
        let (a, b) = (median(plain), median(tenant_qps));
        let ratio = b / a;
        println!("median: {a:.0} q/s vs tenant {b:.0} q/s: tenant / compile-time schema = {ratio:.3}");
        println!(
            "Bar: >= 0.95: {}",
            if ratio >= 0.95 { "PASS" } else { "MISS" }
        );
        pool.close().await;
    });
}
