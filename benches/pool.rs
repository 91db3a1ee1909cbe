//! Point-query throughput of `pgdbm::Database` against plain sqlx, in one run.
//!
//! Run: `cargo bench --bench pool` (the bench profile is an optimised build).
//!
//! Measures completed queries per second of
//! `SELECT abalance FROM pgbench_accounts WHERE aid = $1` (random aid in 1..=1_000_000, pgbench
//! scale 10) from N concurrent tokio tasks, each looping on the query, for:
//!   1. `Database::fetch_one::<(i32,), _>` on a pool of N connections (`slow_query_threshold(None)`);
//!   2. sqlx `PgPool` with N connections and otherwise default settings;
//!   3. one sqlx `PgConnection` held by each task (no pool at all);
//!   4. sqlx `PgPool` with `test_before_acquire(false)`, for reference;
//!   5. `sqlx::query_as(…).fetch_one(&db)`: `&Database` as a sqlx executor, the path of `tsql!`.
//!
//! Then the cost of observability: `Database` with metrics and query statistics off
//! (`metrics(false)`) against metrics on (recorded into metrics-exporter-prometheus's recorder,
//! installed for the whole run) plus `query_stats(true)`, alternating off/on for
//! `PGDBM_BENCH_ROUNDS` rounds (default 3) and comparing the medians. Bar: on / off >= 0.97.
//! Cells 1 and 5 above run with metrics on (the default) into that recorder.
//!
//! Then the cost of the silent-failure defaults (keepalives and `TCP_USER_TIMEOUT` on each
//! socket, the liveness check) against a `Database` without them, alternating the same way.
//! Bar: on / off >= 0.98.
//!
//! Then the cost of lanes (`tenant_lanes`, see `pgdbm-core/src/runtime/pool/lanes.rs`) for a
//! handle that is no tenant's, which takes the first free connection of any lane: the default
//! lanes against one lane, alternating the same way. Bar: lanes / one lane >= 0.98.
//!
//! Each cell warms up for 1 s, then counts for `PGDBM_BENCH_SECS` seconds (default 5).
//! Env: `PGDBM_BENCH_URL`, else `DATABASE_URL`, else `postgresql://postgres@127.0.0.1:5432/postgres`
//! names the server (its database name is replaced by `pgdbm_bench`, created and filled with
//! `pgbench -i -s 10` on first use, or with SQL when pgbench is not installed);
//! `PGDBM_BENCH_TASKS` the task counts (default `8,64`).
//! Bar: Database >= 0.90 x per-task connections and >= 1.5 x PgPool at 8 tasks. The figures and
//! PASS/MISS are printed, never asserted.
//!
//! Columns besides queries/s: `tls` says whether that system's connections ended up encrypted
//! (sqlx follows the URL's `sslmode`, default `prefer`, so TLS whenever the server offers it;
//! pgdbm turns TLS off for a loopback server unless the URL sets `sslmode`), which alone moves
//! the figures: append `?sslmode=disable` to the URL to compare like with like. `client us/q` is
//! this process's CPU time per query (Linux), the client-side cost that competes with the server
//! for the same cores.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pgdbm::{Database, DatabaseConfig};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

const SQL: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
const TLS_SQL: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
const ACCOUNTS: u64 = 1_000_000;
const BENCH_DB: &str = "pgdbm_bench";
const WARM_UP: Duration = Duration::from_secs(1);

fn server_url() -> url::Url {
    let raw = std::env::var("PGDBM_BENCH_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into());
    url::Url::parse(&raw).expect("PGDBM_BENCH_URL / DATABASE_URL is not a valid URL")
}

fn with_database(url: &url::Url, db: &str) -> String {
    let mut u = url.clone();
    u.set_path(&format!("/{db}"));
    u.to_string()
}

/// pgbench from PATH, else from the Debian PostgreSQL 15 location.
fn find_pgbench() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/lib/postgresql/15/bin")])
        .map(|dir| dir.join("pgbench"))
        .find(|p| p.is_file())
}

/// `pgbench -i -s 10` into the bench database; `false` when pgbench is missing or failed.
fn fill_with_pgbench(server: &url::Url) -> bool {
    let Some(pgbench) = find_pgbench() else {
        return false;
    };
    let mut cmd = Command::new(&pgbench);
    cmd.args(["-i", "-s", "10", BENCH_DB]);
    cmd.args(["-h", server.host_str().unwrap_or("127.0.0.1")]);
    cmd.args(["-p", &server.port().unwrap_or(5432).to_string()]);
    if !server.username().is_empty() {
        cmd.args(["-U", server.username()]);
    }
    if let Some(pw) = server.password() {
        let pw = url::form_urlencoded::parse(format!("p={pw}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        cmd.env("PGPASSWORD", pw);
    }
    println!(
        "populating {BENCH_DB} with {} -i -s 10 ...",
        pgbench.display()
    );
    match cmd.output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            eprintln!(
                "pgbench -i failed ({}); falling back to SQL:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            false
        }
        Err(e) => {
            eprintln!(
                "could not run {}: {e}; falling back to SQL",
                pgbench.display()
            );
            false
        }
    }
}

/// Creates `pgdbm_bench` if missing and makes sure it holds pgbench_accounts with 1M rows.
async fn prepare(server: &url::Url) -> String {
    let mut admin = PgConnection::connect(&with_database(server, "postgres"))
        .await
        .expect("connection to the postgres database");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(BENCH_DB)
            .fetch_one(&mut admin)
            .await
            .expect("pg_database lookup");
    if !exists {
        println!("creating database {BENCH_DB}");
        sqlx::raw_sql("CREATE DATABASE pgdbm_bench")
            .execute(&mut admin)
            .await
            .expect("CREATE DATABASE pgdbm_bench");
    }
    admin.close().await.ok();

    let url = with_database(server, BENCH_DB);
    let mut conn = PgConnection::connect(&url)
        .await
        .expect("connection to pgdbm_bench");
    let present: bool = sqlx::query_scalar("SELECT to_regclass('pgbench_accounts') IS NOT NULL")
        .fetch_one(&mut conn)
        .await
        .expect("to_regclass");
    // max(aid) comes off the primary key, so this check is instant; it catches a half-filled table.
    let complete = present
        && sqlx::query_scalar::<_, Option<i32>>("SELECT max(aid) FROM pgbench_accounts")
            .fetch_one(&mut conn)
            .await
            .ok()
            .flatten()
            == Some(ACCOUNTS as i32);
    if !complete {
        if present {
            println!("pgbench_accounts is incomplete; rebuilding it");
        }
        if !fill_with_pgbench(server) {
            println!("filling pgbench_accounts with 1,000,000 rows via generate_series ...");
            sqlx::raw_sql(
                "DROP TABLE IF EXISTS pgbench_accounts;
                 CREATE TABLE pgbench_accounts (aid int NOT NULL, bid int, abalance int, filler char(84));
                 INSERT INTO pgbench_accounts (aid, bid, abalance, filler)
                     SELECT g, (g - 1) / 100000 + 1, 0, '' FROM generate_series(1, 1000000) AS g;
                 ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid);",
            )
            .execute(&mut conn)
            .await
            .expect("filling pgbench_accounts");
            sqlx::raw_sql("VACUUM ANALYZE pgbench_accounts")
                .execute(&mut conn)
                .await
                .expect("VACUUM ANALYZE pgbench_accounts");
        }
    }
    conn.close().await.ok();
    url
}

/// xorshift64: a few cycles per aid, no dependency, distinct stream per task.
struct XorShift(u64);

impl XorShift {
    fn for_task(i: usize) -> Self {
        XorShift(0x9E37_79B9_7F4A_7C15_u64.wrapping_mul(i as u64 + 1) | 1)
    }

    fn aid(&mut self) -> i32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % ACCOUNTS + 1) as i32
    }
}

/// What every task shares: the stop flag and the completed-query counter.
#[derive(Clone, Default)]
struct Run {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
}

impl Run {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    fn completed(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// CPU time this process (all its threads) has used, in nanoseconds; Linux only.
fn process_cpu_ns() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Throughput of one cell, and the benchmark process's own CPU time per query (what the client
/// side costs; on a small machine it competes with the server for the same cores).
struct Measured {
    qps: f64,
    client_us_per_query: Option<f64>,
}

/// Spawns one task per element of `per_task`, lets them warm up, then counts completed queries
/// over `secs`.
async fn measure<S, F, Fut>(per_task: Vec<S>, secs: f64, work: F) -> Measured
where
    F: Fn(usize, S, Run) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let run = Run::default();
    let handles: Vec<_> = per_task
        .into_iter()
        .enumerate()
        .map(|(i, s)| tokio::spawn(work(i, s, run.clone())))
        .collect();
    tokio::time::sleep(WARM_UP).await;
    let (n0, t0, cpu0) = (
        run.done.load(Ordering::Relaxed),
        Instant::now(),
        process_cpu_ns(),
    );
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let (n1, t1, cpu1) = (
        run.done.load(Ordering::Relaxed),
        Instant::now(),
        process_cpu_ns(),
    );
    run.stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.expect("a benchmark task panicked");
    }
    let queries = (n1 - n0) as f64;
    Measured {
        qps: queries / (t1 - t0).as_secs_f64(),
        client_us_per_query: match (cpu0, cpu1) {
            (Some(a), Some(b)) if b >= a && queries > 0.0 => Some((b - a) as f64 / 1e3 / queries),
            _ => None,
        },
    }
}

struct Cell {
    m: Measured,
    tls: bool,
}

async fn bench_database(url: &str, tasks: usize, secs: f64) -> Cell {
    bench_database_with(url, tasks, secs, |c| c).await
}

/// A `Database` cell with the config changed by `tweak`.
async fn bench_database_with(
    url: &str,
    tasks: usize,
    secs: f64,
    tweak: fn(DatabaseConfig) -> DatabaseConfig,
) -> Cell {
    let config = DatabaseConfig::new(url)
        .min_connections(tasks)
        .max_connections(tasks)
        .slow_query_threshold(None);
    let db = Database::connect(tweak(config))
        .await
        .expect("Database::connect");
    let (tls,): (bool,) = db.fetch_one(TLS_SQL, ()).await.expect("TLS probe");
    let m = measure(vec![db.clone(); tasks], secs, |i, db, run| async move {
        let mut rng = XorShift::for_task(i);
        while run.running() {
            let (_balance,) = db
                .fetch_one::<(i32,), _>(SQL, (rng.aid(),))
                .await
                .expect("Database::fetch_one");
            run.completed();
        }
    })
    .await;
    db.close().await;
    Cell { m, tls }
}

/// Metrics and query statistics both off (and the `bench_off` pool label, which must then
/// never reach the recorder).
fn observability_off(c: DatabaseConfig) -> DatabaseConfig {
    c.metrics(false).query_stats(false).pool_name("bench_off")
}

/// Metrics into the recorder plus query statistics.
fn observability_on(c: DatabaseConfig) -> DatabaseConfig {
    c.metrics(true).query_stats(true).pool_name("bench_on")
}

/// Without the silent-failure defaults: no keepalives, no `TCP_USER_TIMEOUT`, no liveness
/// check (statements still run under the connection's watch, which is not optional).
fn liveness_off(c: DatabaseConfig) -> DatabaseConfig {
    c.metrics(false)
        .keepalives(false)
        .tcp_user_timeout(None)
        .liveness_check_after(None)
}

/// The defaults: keepalives, `TCP_USER_TIMEOUT`, the liveness check.
fn liveness_on(c: DatabaseConfig) -> DatabaseConfig {
    c.metrics(false)
}

/// The pool in one lane: deadpool as it was before lanes.
fn one_lane(c: DatabaseConfig) -> DatabaseConfig {
    c.metrics(false).tenant_lanes(1)
}

/// The default lanes (`max_connections / 2`).
fn lanes_default(c: DatabaseConfig) -> DatabaseConfig {
    c.metrics(false)
}

/// Runs `rounds` alternating rounds of `off` and `on` at each task count and prints the
/// medians; returns on / off at 8 tasks.
async fn alternate(
    url: &str,
    task_counts: &[usize],
    secs: f64,
    rounds: usize,
    off: fn(DatabaseConfig) -> DatabaseConfig,
    on: fn(DatabaseConfig) -> DatabaseConfig,
) -> Option<f64> {
    println!(
        "{:<5}  {:>12}  {:>12}  {:>8}  {:>16}  {:>16}",
        "tasks", "off q/s", "on q/s", "on/off", "off client us/q", "on client us/q"
    );
    let mut at_8 = None;
    for &tasks in task_counts {
        let (mut off_cells, mut on_cells) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            off_cells.push(bench_database_with(url, tasks, secs, off).await.m);
            on_cells.push(bench_database_with(url, tasks, secs, on).await.m);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let qps = |cells: &[Measured]| cells.iter().map(|m| m.qps).collect::<Vec<_>>();
        let cpu = |cells: &[Measured]| {
            cells
                .iter()
                .filter_map(|m| m.client_us_per_query)
                .collect::<Vec<_>>()
        };
        let (off_qps, on_qps) = (median(&mut qps(&off_cells)), median(&mut qps(&on_cells)));
        let show = |v: &mut Vec<f64>| {
            if v.is_empty() {
                "-".to_string()
            } else {
                format!("{:.1}", median(v))
            }
        };
        let ratio = on_qps / off_qps;
        println!(
            "{tasks:<5}  {off_qps:>12.0}  {on_qps:>12.0}  {ratio:>8.3}  {:>16}  {:>16}",
            show(&mut cpu(&off_cells)),
            show(&mut cpu(&on_cells))
        );
        let each = |cells: &[Measured]| {
            cells
                .iter()
                .map(|m| format!("{:.0}", m.qps))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "       rounds off: {}; on: {}",
            each(&off_cells),
            each(&on_cells)
        );
        if tasks == 8 {
            at_8 = Some(ratio);
        }
    }
    at_8
}

/// `&Database` as a sqlx executor: the path of `tsql!(…).fetch_one(&db)` and
/// `sqlx::query!(…).fetch_one(&db)`.
async fn bench_database_executor(url: &str, tasks: usize, secs: f64) -> Cell {
    let db = Database::connect(
        DatabaseConfig::new(url)
            .min_connections(tasks)
            .max_connections(tasks)
            .slow_query_threshold(None),
    )
    .await
    .expect("Database::connect");
    let tls: bool = sqlx::query_scalar(TLS_SQL)
        .fetch_one(&db)
        .await
        .expect("TLS probe");
    let m = measure(vec![db.clone(); tasks], secs, |i, db, run| async move {
        let mut rng = XorShift::for_task(i);
        while run.running() {
            let (_balance,) = sqlx::query_as::<_, (i32,)>(SQL)
                .bind(rng.aid())
                .fetch_one(&db)
                .await
                .expect("&Database fetch_one");
            run.completed();
        }
    })
    .await;
    db.close().await;
    Cell { m, tls }
}

async fn bench_pgpool(url: &str, tasks: usize, secs: f64, test_before_acquire: bool) -> Cell {
    let mut options = PgPoolOptions::new()
        .max_connections(tasks as u32)
        .min_connections(tasks as u32);
    if !test_before_acquire {
        options = options.test_before_acquire(false);
    }
    let pool: PgPool = options.connect(url).await.expect("PgPool connect");
    let tls: bool = sqlx::query_scalar(TLS_SQL)
        .fetch_one(&pool)
        .await
        .expect("TLS probe");
    let m = measure(vec![pool.clone(); tasks], secs, |i, pool, run| async move {
        let mut rng = XorShift::for_task(i);
        while run.running() {
            let (_balance,) = sqlx::query_as::<_, (i32,)>(SQL)
                .bind(rng.aid())
                .fetch_one(&pool)
                .await
                .expect("PgPool fetch_one");
            run.completed();
        }
    })
    .await;
    pool.close().await;
    Cell { m, tls }
}

async fn bench_connections(url: &str, tasks: usize, secs: f64) -> Cell {
    let mut conns = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        conns.push(PgConnection::connect(url).await.expect("PgConnection"));
    }
    let tls: bool = sqlx::query_scalar(TLS_SQL)
        .fetch_one(&mut conns[0])
        .await
        .expect("TLS probe");
    let m = measure(conns, secs, |i, mut conn, run| async move {
        let mut rng = XorShift::for_task(i);
        while run.running() {
            let (_balance,) = sqlx::query_as::<_, (i32,)>(SQL)
                .bind(rng.aid())
                .fetch_one(&mut conn)
                .await
                .expect("PgConnection fetch_one");
            run.completed();
        }
        conn.close().await.ok();
    })
    .await;
    Cell { m, tls }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

fn main() {
    let secs: f64 = std::env::var("PGDBM_BENCH_SECS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(5.0);
    let task_counts: Vec<usize> = std::env::var("PGDBM_BENCH_TASKS")
        .unwrap_or_else(|_| "8,64".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&n| n > 0)
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let rounds: usize = std::env::var("PGDBM_BENCH_ROUNDS")
        .or_else(|_| std::env::var("PGDBM_BENCH_OBS_ROUNDS"))
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3);
    rt.block_on(async {
        // A real recorder, as a service would install it, with its upkeep task.
        let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("install the Prometheus recorder");
        let upkeep = prometheus.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                upkeep.run_upkeep();
            }
        });
        let server = server_url();
        let url = prepare(&server).await;
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!();
        println!("workload: {SQL}, random aid in 1..={ACCOUNTS}");
        println!(
            "{secs} s per cell after {} s warm-up; pool size = tasks; {} CPUs; load average at start: {}",
            WARM_UP.as_secs(),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        );
        println!();
        println!(
            "{:<5}  {:<40} {:<3}  {:>9}  {:>16}  {:>9}  {:>13}",
            "tasks", "system", "tls", "queries/s", "vs per-task conn", "vs PgPool", "client us/q"
        );
        let mut bar = None;
        let mut tls_differs = false;
        for &tasks in &task_counts {
            let conn = bench_connections(&url, tasks, secs).await;
            let pool = bench_pgpool(&url, tasks, secs, true).await;
            let lean = bench_pgpool(&url, tasks, secs, false).await;
            let db = bench_database(&url, tasks, secs).await;
            let exec = bench_database_executor(&url, tasks, secs).await;
            let rows = [
                ("pgdbm Database", &db),
                ("pgdbm &Database as sqlx executor", &exec),
                ("sqlx PgConnection per task", &conn),
                ("sqlx PgPool", &pool),
                ("sqlx PgPool, test_before_acquire(false)", &lean),
            ];
            tls_differs |= rows.iter().any(|(_, c)| c.tls != db.tls);
            for (name, cell) in rows {
                println!(
                    "{tasks:<5}  {name:<40} {:<3}  {:>9.0}  {:>16.2}  {:>9.2}  {:>13}",
                    if cell.tls { "on" } else { "off" },
                    cell.m.qps,
                    cell.m.qps / conn.m.qps,
                    cell.m.qps / pool.m.qps,
                    cell.m
                        .client_us_per_query
                        .map_or_else(|| "-".to_string(), |us| format!("{us:.1}")),
                );
            }
            let (vs_conn, vs_pool) = (db.m.qps / conn.m.qps, db.m.qps / pool.m.qps);
            println!(
                "{tasks:<5}  Database / per-task connections = {vs_conn:.2}, Database / PgPool = {vs_pool:.2}"
            );
            println!();
            if tasks == 8 {
                bar = Some((vs_conn, vs_pool));
            }
        }
        println!(
            "observability: Database with metrics + query statistics on vs both off, {rounds} alternating rounds of {secs} s"
        );
        let obs_bar = alternate(&url, &task_counts, secs, rounds, observability_off, observability_on).await;
        let rendered = prometheus.render();
        let series = rendered
            .lines()
            .filter(|l| l.contains("pool=\"bench_on\""))
            .count();
        assert!(
            series > 0 && !rendered.contains("pool=\"bench_off\""),
            "the on pool must record and the off pool must not"
        );
        println!("  ({series} series of the on pool in the recorder, none of the off pool)");
        match obs_bar {
            Some(r) => println!(
                "Bar: observability on / off at 8 tasks: {r:.3} (>= 0.97): {}",
                verdict(r >= 0.97)
            ),
            None => println!("Bar (observability): not evaluated: PGDBM_BENCH_TASKS does not include 8"),
        }
        println!();
        println!(
            "silent failures: Database with the defaults (keepalives, TCP_USER_TIMEOUT, liveness check) vs without, {rounds} alternating rounds of {secs} s"
        );
        let live_bar = alternate(&url, &task_counts, secs, rounds, liveness_off, liveness_on).await;
        match live_bar {
            Some(r) => println!(
                "Bar: silent-failure defaults on / off at 8 tasks: {r:.3} (>= 0.98): {}",
                verdict(r >= 0.98)
            ),
            None => println!("Bar (silent failures): not evaluated: PGDBM_BENCH_TASKS does not include 8"),
        }
        println!();
        println!(
            "lanes: Database split into lanes (the default, max_connections / 2) vs one lane, queries of a handle that is no tenant's, {rounds} alternating rounds of {secs} s"
        );
        let lanes_bar = alternate(&url, &task_counts, secs, rounds, one_lane, lanes_default).await;
        match lanes_bar {
            Some(r) => println!(
                "Bar: lanes / one lane at 8 tasks: {r:.3} (>= 0.98): {}",
                verdict(r >= 0.98)
            ),
            None => println!("Bar (lanes): not evaluated: PGDBM_BENCH_TASKS does not include 8"),
        }
        println!();
        if tls_differs {
            println!(
                "note: TLS differs between systems, which skews the ratios; add sslmode=disable (or \
                 require) to PGDBM_BENCH_URL to compare like with like"
            );
        }
        println!("Bar: Database >= 0.90 x per-task connections and >= 1.5 x PgPool at 8 tasks");
        match bar {
            Some((vs_conn, vs_pool)) => {
                println!(
                    "  Database / per-task connections at 8 tasks: {vs_conn:.2} (>= 0.90): {}",
                    verdict(vs_conn >= 0.90)
                );
                println!(
                    "  Database / PgPool at 8 tasks:                {vs_pool:.2} (>= 1.50): {}",
                    verdict(vs_pool >= 1.5)
                );
            }
            None => println!("  not evaluated: PGDBM_BENCH_TASKS does not include 8"),
        }
    });
}
