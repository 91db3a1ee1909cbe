//! Point-query throughput past one server, in one run: through a read replica against the
//! primary, and through PgBouncer (transaction mode) against a direct connection, with plain
//! sqlx's `PgPool` on the primary as the common reference.
//!
//! Run: `cargo bench --bench servers`. It starts its own primary, a streaming replica
//! (`pg_basebackup -R`) and PgBouncer (`/usr/sbin/pgbouncer`), on spare ports in `/dev/shm`,
//! and stops them at the end; the shared server is not used. All of them share this machine's
//! cores with the client, so the replica can only show what routing costs, not extra capacity.
//!
//! The query is `SELECT v FROM points WHERE id = $1` over 100,000 rows, from N tokio tasks each
//! looping on it, warmed up for 1 s and counted for `PGDBM_BENCH_SECS` seconds (default 5);
//! `PGDBM_BENCH_TASKS` gives N (default `8,64`). Cells, each a pool of N connections:
//!   1. sqlx `PgPool` on the primary;
//!   2. `Database::fetch_one` on the primary;
//!   3. `db.replica().fetch_one` (the replica, chosen per query);
//!   4. `Database` with `pgbouncer(PoolerMode::Transaction)` through PgBouncer in transaction
//!      mode, where each statement is a transaction of its own (BEGIN with the settings,
//!      Parse/Describe, Bind/Execute, COMMIT: four round trips instead of one);
//!   5. `Database` through PgBouncer in session mode;
//!   6. `Database` with `pgbouncer(PoolerMode::Transaction)` straight to the primary: what the
//!      transaction per statement costs without PgBouncer's hop.
//!
//! PgBouncer gets `default_pool_size` = N in both modes, so every cell has N server
//! connections and the ratios show the cost of the hop and of the mode, not of a smaller pool.
//!
//! The figures and ratios are printed, never asserted.

#[path = "../tests/support/packages.rs"]
mod packages;
#[path = "../tests/support/pg_server.rs"]
#[allow(dead_code)]
mod pg_server;
#[path = "../tests/support/pgbouncer.rs"]
#[allow(dead_code)]
mod pgbouncer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pg_server::PgServer;
use pgbouncer::PgBouncer;
use pgdbm::config::PoolerMode;
use pgdbm::{Database, DatabaseConfig};
use sqlx::postgres::PgPoolOptions;

const SQL: &str = "SELECT v FROM points WHERE id = $1";
const ROWS: i64 = 100_000;
const WARM_UP: Duration = Duration::from_secs(1);

/// Queries per second of `query` run in a loop by `tasks` tasks.
async fn qps<F, Fut>(tasks: usize, secs: f64, query: F) -> f64
where
    F: Fn(i64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = i64> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (stop, done, query) = (stop.clone(), done.clone(), query.clone());
            tokio::spawn(async move {
                let mut id = (t as i64 * 7919) % ROWS + 1;
                while !stop.load(Ordering::Relaxed) {
                    id = (id * 48271) % ROWS + 1;
                    assert_eq!(query(id).await, id * 3, "wrong row for id {id}");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(WARM_UP).await;
    let (n0, t0) = (done.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let (n1, t1) = (done.load(Ordering::Relaxed), Instant::now());
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.expect("a benchmark task panicked");
    }
    (n1 - n0) as f64 / (t1 - t0).as_secs_f64()
}

async fn database(config: DatabaseConfig, tasks: usize) -> Database {
    let config = config
        .min_connections(tasks)
        .max_connections(tasks)
        .slow_query_threshold(None)
        .acquire_timeout(Duration::from_secs(60));
    Database::connect(config).await.expect("connect")
}

async fn cell_database(db: Database, tasks: usize, secs: f64, replica: bool) -> f64 {
    qps(tasks, secs, move |id| {
        let db = db.clone();
        async move {
            let on = if replica { db.replica() } else { db };
            let (v,): (i64,) = on.fetch_one(SQL, (id,)).await.expect("query");
            v
        }
    })
    .await
}

/// `Database::fetch_one` on a pool of its own, opened with `config`.
async fn cell_of(config: DatabaseConfig, tasks: usize, secs: f64) -> f64 {
    let db = database(config, tasks).await;
    let qps = cell_database(db.clone(), tasks, secs, false).await;
    db.close().await;
    qps
}

fn main() {
    let secs: f64 = std::env::var("PGDBM_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let task_counts: Vec<usize> = std::env::var("PGDBM_BENCH_TASKS")
        .unwrap_or_else(|_| "8,64".into())
        .split(',')
        .map(|t| t.trim().parse().expect("PGDBM_BENCH_TASKS: numbers"))
        .collect();

    eprintln!("starting a primary and a replica in /dev/shm …");
    let primary = PgServer::start_primary();
    primary.create_database("bench");
    primary.psql(
        "bench",
        &format!(
            "CREATE TABLE points (id int8 PRIMARY KEY, v int8 NOT NULL); \
             INSERT INTO points SELECT i, i * 3 FROM generate_series(1, {ROWS}) i"
        ),
    );
    primary.psql("bench", "VACUUM ANALYZE points");
    let replica = PgServer::start_replica_of(&primary);
    replica.wait_replayed(&primary);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "{:>6} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} | {:>8} {:>9} {:>10} {:>9} {:>9}",
        "tasks",
        "PgPool q/s",
        "primary",
        "replica",
        "pgb-tx",
        "pgb-ses",
        "tx-direct",
        "rep/prim",
        "tx/direct",
        "ses/direct",
        "txwrap/d",
        "prim/sqlx"
    );
    for &tasks in &task_counts {
        let tx_bouncer = PgBouncer::start(primary.port(), "transaction", tasks as u32);
        let session_bouncer = PgBouncer::start(primary.port(), "session", tasks as u32);
        let row = rt.block_on(async {
            let pool = PgPoolOptions::new()
                .min_connections(tasks as u32)
                .max_connections(tasks as u32)
                .connect(&format!("{}?sslmode=disable", primary.url("bench")))
                .await
                .expect("PgPool");
            let sqlx_qps = qps(tasks, secs, move |id| {
                let pool = pool.clone();
                async move {
                    let (v,): (i64,) = sqlx::query_as(SQL)
                        .bind(id)
                        .fetch_one(&pool)
                        .await
                        .expect("query");
                    v
                }
            })
            .await;

            let db = database(
                DatabaseConfig::new(primary.url("bench"))
                    .replica(replica.url("bench"))
                    .replica_check_interval(Duration::from_millis(200)),
                tasks,
            )
            .await;
            while !db.replica_status()[0].usable {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let primary_qps = cell_database(db.clone(), tasks, secs, false).await;
            let replica_qps = cell_database(db.clone(), tasks, secs, true).await;
            assert!(
                db.replica_status()[0].usable,
                "the replica stayed usable: {:?}",
                db.replica_status()
            );
            db.close().await;

            let tx_qps = cell_of(
                DatabaseConfig::new(tx_bouncer.url("bench")).pgbouncer(PoolerMode::Transaction),
                tasks,
                secs,
            )
            .await;
            let ses_qps = cell_of(
                DatabaseConfig::new(session_bouncer.url("bench")).pgbouncer(PoolerMode::Session),
                tasks,
                secs,
            )
            .await;
            let wrapped_qps = cell_of(
                DatabaseConfig::new(primary.url("bench")).pgbouncer(PoolerMode::Transaction),
                tasks,
                secs,
            )
            .await;
            [
                sqlx_qps,
                primary_qps,
                replica_qps,
                tx_qps,
                ses_qps,
                wrapped_qps,
            ]
        });
        let [
            sqlx_qps,
            primary_qps,
            replica_qps,
            tx_qps,
            ses_qps,
            wrapped_qps,
        ] = row;
        println!(
            "{tasks:>6} {sqlx_qps:>11.0} {primary_qps:>11.0} {replica_qps:>11.0} {tx_qps:>11.0} {ses_qps:>11.0} {wrapped_qps:>11.0} | {:>8.3} {:>9.3} {:>10.3} {:>9.3} {:>9.3}",
            replica_qps / primary_qps,
            tx_qps / primary_qps,
            ses_qps / primary_qps,
            wrapped_qps / primary_qps,
            primary_qps / sqlx_qps
        );
    }
}
