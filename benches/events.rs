//! The background worker woken by NOTIFY against the same worker polling every 100 ms, in one
//! run on a private server (`tests/support/pg_server.rs`, so that its transaction counters are
//! the workers' alone): 4 worker processes (`examples/background_worker.rs`, one task each), in
//! each mode
//! - what they cost the server while the queue is empty: transactions per second (commits and
//!   rollbacks of `pg_stat_database` over `PGDBM_BENCH_IDLE_SECS`, default 20, minus the bench's
//!   own two reads);
//! - enqueue-to-start latency: `PGDBM_BENCH_JOBS` (default 200) jobs inserted one at a time at
//!   random gaps of 10-40 ms, each latency taken from the server's clock (`started_at`, set by
//!   the worker in its claiming transaction, minus `created_at`), p50, p99 and max. The workers
//!   start 25 ms apart, so that the pollers do not poll in step.
//!
//! Run: `cargo bench --bench events` (builds the example in the bench profile). Printed, never
//! asserted.

#[allow(dead_code)]
#[path = "../tests/support/pg_server.rs"]
mod pg_server;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pg_server::PgServer;
use pgdbm::{Database, DatabaseConfig, Migrator};

const WORKERS: usize = 4;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The worker example, built in this bench's profile beside it.
fn worker_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .args(["build", "--quiet", "--profile", "bench"])
        .args(["--example", "background_worker"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    // Variables cargo gives a bench would make build scripts run again (see
    // tests/support/service.rs).
    for (var, _) in std::env::vars_os() {
        let var = var.to_string_lossy();
        if var.starts_with("CARGO_PKG_")
            || var.starts_with("CARGO_BIN_EXE_")
            || matches!(
                var.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            )
        {
            cargo.env_remove(var.as_ref());
        }
    }
    assert!(cargo.status().unwrap().success(), "building the worker");
    dir.join("examples").join("background_worker")
}

/// Transactions (commits and rollbacks) of database `bench` so far.
async fn transactions(db: &Database) -> i64 {
    db.fetch_value::<i64, _>(
        "SELECT (xact_commit + xact_rollback)::int8 FROM pg_stat_database WHERE datname = 'bench'",
        (),
    )
    .await
    .unwrap()
    .unwrap()
}

struct Figures {
    idle_tps: f64,
    p50: f64,
    p99: f64,
    max: f64,
}

async fn run_mode(db: &Database, url: &str, binary: &PathBuf, wake: &str) -> Figures {
    db.execute("TRUNCATE {{tables.job_results}}, {{tables.jobs}}", ())
        .await
        .unwrap();
    // Started 25 ms apart: pollers started together would poll in step (all within a few ms of
    // each other every 100 ms), and a job would wait for the next common poll.
    let workers: Vec<Child> = (0..WORKERS)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(100 / WORKERS as u64));
            Command::new(binary)
                .env("DATABASE_URL", url)
                .env("WORKER_ID", format!("{wake}{i}"))
                .env("CONCURRENCY", "1")
                .env("JOB_DELAY_MS", "0")
                .env("WAKE", wake)
                .env("RUST_LOG", "error")
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Let them connect, migrate (nothing pending) and go idle.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Idle cost.
    let window = Duration::from_secs(env_u64("PGDBM_BENCH_IDLE_SECS", 20));
    let (before, started) = (transactions(db).await, Instant::now());
    tokio::time::sleep(window).await;
    let after = transactions(db).await;
    // Our own read of `before` is among them.
    let idle_tps = (after - before - 1) as f64 / started.elapsed().as_secs_f64();

    // Latency: one job at a time, at gaps unrelated to the poll period.
    let jobs = env_u64("PGDBM_BENCH_JOBS", 200);
    for i in 0..jobs {
        db.execute(
            "INSERT INTO {{tables.jobs}} (payload) VALUES ($1)",
            (format!("ok-{i}"),),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(10 + (i * 7919 + 13) % 31)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: i64 = db
            .fetch_value(
                "SELECT count(*) FROM {{tables.jobs}} WHERE status <> 'done'",
                (),
            )
            .await
            .unwrap()
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} jobs not done in {wake} mode"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (p50, p99, max): (f64, f64, f64) = db
        .fetch_one(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), \
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms) \
             FROM (SELECT extract(epoch FROM started_at - created_at)::float8 * 1000 AS ms \
                   FROM {{tables.jobs}}) AS l",
            (),
        )
        .await
        .unwrap();
    for w in &workers {
        let _ = Command::new("kill")
            .args(["-TERM", &w.id().to_string()])
            .status();
    }
    for mut w in workers {
        let _ = w.wait();
    }
    Figures {
        idle_tps,
        p50,
        p99,
        max,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let binary = worker_binary();
    let server = tokio::task::block_in_place(|| {
        let server = PgServer::start();
        server.create_database("bench");
        server
    });
    let url = server.url("bench");
    let db = Database::connect(
        DatabaseConfig::new(url.clone())
            .schema("worker")
            .min_connections(1)
            .max_connections(2),
    )
    .await
    .unwrap();
    Migrator::new(
        &db,
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/worker_migrations"),
        "worker",
    )
    .apply_pending()
    .await
    .unwrap();
    println!(
        "events: {WORKERS} idle worker processes (one task each); latency of single enqueued jobs"
    );
    let mut all = Vec::new();
    for wake in ["listen", "poll"] {
        let f = run_mode(&db, &url, &binary, wake).await;
        println!(
            "events: WAKE={wake:<6} idle {:6.2} transactions/s | enqueue-to-start p50 {:6.2} ms  p99 {:6.2} ms  max {:6.2} ms",
            f.idle_tps, f.p50, f.p99, f.max
        );
        all.push(f);
    }
    let (listen, poll) = (&all[0], &all[1]);
    println!(
        "events: listen vs poll: idle cost {:.1}x lower, p50 {:.1}x lower, p99 {:.1}x lower",
        poll.idle_tps / listen.idle_tps,
        poll.p50 / listen.p50,
        poll.p99 / listen.p99
    );
    db.close().await;
}
