//! Point-query throughput: `Database::fetch_one` beside plain sqlx `PgPool` and one sqlx
//! connection per task, at 8 and 64 concurrent tasks, in one run.
//!
//! Workload: `SELECT abalance FROM pgbench_accounts WHERE aid = $1` with a random aid, pgbench
//! scale 10 (1M rows) in a database `pgdbm_bench` (created and filled on first run).
//!
//! Run: `cargo bench --bench pool`. Env: `PGDBM_BENCH_URL` / `DATABASE_URL` (server),
//! `PGDBM_BENCH_SECS` (seconds per cell, default 5), `PGDBM_BENCH_TASKS` (default `8,64`).
//! Bar (issue 2): Database >= 0.90x per-task connections and >= 1.5x PgPool at 8 tasks.
//! Figures are printed, never asserted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pgdbm::{Database, DatabaseConfig};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

const SQL: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
const ROWS: u64 = 1_000_000;

fn admin_url() -> String {
    std::env::var("PGDBM_BENCH_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into())
}

fn bench_url() -> String {
    let mut u = url::Url::parse(&admin_url()).expect("valid url");
    u.set_path("/pgdbm_bench");
    u.to_string()
}

async fn prepare() {
    let mut admin = PgConnection::connect(&admin_url())
        .await
        .expect("admin connection");
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'pgdbm_bench')",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    if !exists {
        sqlx::raw_sql("CREATE DATABASE pgdbm_bench")
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let mut conn = PgConnection::connect(&bench_url()).await.unwrap();
    let filled: Option<i64> = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class WHERE relname = 'pgbench_accounts' AND relkind = 'r'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    if filled == Some(1) {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pgbench_accounts")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if n as u64 == ROWS {
            return;
        }
    }
    // The same table pgbench -i -s 10 makes, built with SQL so no pgbench binary is needed.
    println!("filling pgbench_accounts (1M rows, once)...");
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS pgbench_accounts;
         CREATE TABLE pgbench_accounts (aid int NOT NULL, bid int, abalance int, filler char(84)) WITH (fillfactor = 100);
         INSERT INTO pgbench_accounts SELECT g, (g - 1) / 100000 + 1, 0, '' FROM generate_series(1, 1000000) g;
         ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid);",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::raw_sql("VACUUM ANALYZE pgbench_accounts")
        .execute(&mut conn)
        .await
        .unwrap();
}

struct XorShift(u64);

impl XorShift {
    fn next_aid(&mut self) -> i32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % ROWS + 1) as i32
    }
}

/// Runs `tasks` copies of `work` for the warm-up plus `secs`, counting queries after warm-up.
async fn drive<F, Fut>(tasks: usize, secs: f64, work: F) -> f64
where
    F: Fn(usize, Arc<AtomicBool>, Arc<AtomicU64>, Arc<AtomicBool>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let counting = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..tasks)
        .map(|i| tokio::spawn(work(i, stop.clone(), count.clone(), counting.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    counting.store(true, Ordering::SeqCst);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let n = count.load(Ordering::SeqCst);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        h.await.unwrap();
    }
    n as f64 / elapsed
}

async fn bench_database(tasks: usize, secs: f64) -> f64 {
    let db = Database::connect(
        DatabaseConfig::new(bench_url())
            .min_connections(tasks)
            .max_connections(tasks)
            .slow_query_threshold(None),
    )
    .await
    .expect("connect");
    let qps = drive(tasks, secs, |i, stop, count, counting| {
        let db = db.clone();
        async move {
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
            while !stop.load(Ordering::Relaxed) {
                let (_,): (i32,) = db.fetch_one(SQL, (rng.next_aid(),)).await.unwrap();
                if counting.load(Ordering::Relaxed) {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
    .await;
    db.close().await;
    qps
}

async fn bench_pgpool(tasks: usize, secs: f64, test_before_acquire: bool) -> f64 {
    let pool: PgPool = PgPoolOptions::new()
        .max_connections(tasks as u32)
        .min_connections(tasks as u32)
        .test_before_acquire(test_before_acquire)
        .connect(&bench_url())
        .await
        .expect("PgPool");
    let qps = drive(tasks, secs, |i, stop, count, counting| {
        let pool = pool.clone();
        async move {
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
            while !stop.load(Ordering::Relaxed) {
                let _: (i32,) = sqlx::query_as(SQL)
                    .bind(rng.next_aid())
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                if counting.load(Ordering::Relaxed) {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
    .await;
    pool.close().await;
    qps
}

async fn bench_connections(tasks: usize, secs: f64) -> f64 {
    let mut conns = Vec::new();
    for _ in 0..tasks {
        conns.push(PgConnection::connect(&bench_url()).await.unwrap());
    }
    let conns = Arc::new(std::sync::Mutex::new(conns));
    drive(tasks, secs, |i, stop, count, counting| {
        let mut conn = conns.lock().unwrap().pop().unwrap();
        async move {
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
            while !stop.load(Ordering::Relaxed) {
                let _: (i32,) = sqlx::query_as(SQL)
                    .bind(rng.next_aid())
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                if counting.load(Ordering::Relaxed) {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
            conn.close().await.ok();
        }
    })
    .await
}

fn main() {
    let secs: f64 = std::env::var("PGDBM_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5.0);
    let task_counts: Vec<usize> = std::env::var("PGDBM_BENCH_TASKS")
        .unwrap_or_else(|_| "8,64".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        prepare().await;
        println!(
            "\npoint queries, {SQL}\n{secs} s per cell after 1 s warm-up; pool size = tasks\n"
        );
        println!(
            "{:>5}  {:<38} {:>10} {:>14} {:>10}",
            "tasks", "system", "queries/s", "vs per-task", "vs PgPool"
        );
        for &tasks in &task_counts {
            let conn = bench_connections(tasks, secs).await;
            let pool = bench_pgpool(tasks, secs, true).await;
            let pool_lean = bench_pgpool(tasks, secs, false).await;
            let db = bench_database(tasks, secs).await;
            let rows = [
                ("pgdbm Database::fetch_one", db),
                ("sqlx PgConnection, one per task", conn),
                ("sqlx PgPool (defaults)", pool),
                ("sqlx PgPool (test_before_acquire off)", pool_lean),
            ];
            for (name, qps) in rows {
                println!(
                    "{tasks:>5}  {name:<38} {qps:>10.0} {:>13.2}x {:>9.2}x",
                    qps / conn,
                    qps / pool
                );
            }
            if tasks == 8 {
                let a = db / conn;
                let b = db / pool;
                println!(
                    "       Bar at 8 tasks: Database >= 0.90x per-task ({a:.2}x: {}) and >= 1.5x PgPool ({b:.2}x: {})",
                    if a >= 0.9 { "PASS" } else { "MISS" },
                    if b >= 1.5 { "PASS" } else { "MISS" }
                );
            }
            println!();
        }
    });
}
