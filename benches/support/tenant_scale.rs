//! The tenants-at-scale table of `cargo bench --bench tenants`: the same `tsql_as!` point query
//! over k = 1 … 10,000 tenants of one shared pool, with the pool as pgdbm configured it before
//! lanes (one lane, sqlx's cache of 256) and as `docs/tenants.md` says to configure it for many
//! tenants (lanes, a cache holding each lane's share), in one run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use pgdbm::{Database, DatabaseConfig, SharedPool, Tenants, tsql_as};

#[allow(dead_code)] // decoded, the email read
pub struct User {
    id: i64,
    email: String,
    name: Option<String>,
}

/// One pool configuration of the table.
pub struct Setup {
    pub name: &'static str,
    pub lanes: usize,
    pub cache: usize,
}

/// Creates `n` tenants (`t0` …) with `Tenants::create`, `concurrency` at a time, each with one
/// user whose email names the tenant.
pub async fn create(tenants: &Tenants, n: usize, concurrency: usize) {
    let started = Instant::now();
    futures_util::stream::iter(0..n)
        .for_each_concurrent(concurrency, |i| async move {
            let db = tenants
                .create(&format!("t{i}"))
                .await
                .expect("create tenant");
            db.execute(
                "INSERT INTO {{tables.users}} (email, name) VALUES ($1, 'customer')",
                (format!("c@t{i}"),),
            )
            .await
            .expect("tenant row");
        })
        .await;
    println!(
        "{n} tenants created with Tenants::create, {concurrency} at a time, in {:.1} s ({:.0} tenants/s)",
        started.elapsed().as_secs_f64(),
        n as f64 / started.elapsed().as_secs_f64()
    );
}

/// Queries per second of `tasks` tasks over the first `k` tenants (task `i` takes tenants `i`,
/// `i + tasks`, …, round-robin), after `warm` passes of each task over its tenants; every row
/// read is checked to be its tenant's. Also the seconds the warm-up took.
pub async fn measure(
    handles: &[Database],
    k: usize,
    tasks: usize,
    secs: f64,
    warm: usize,
) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let warmed = Arc::new(AtomicU64::new(0));
    let handles: Arc<Vec<Database>> = Arc::new(handles[..k].to_vec());
    let workers: Vec<_> = (0..tasks)
        .map(|i| {
            let (stop, done, warmed) = (stop.clone(), done.clone(), warmed.clone());
            let handles = handles.clone();
            tokio::spawn(async move {
                let mine: Vec<usize> = (0..k).skip(i % k).step_by(tasks).collect();
                let mine = if mine.is_empty() { vec![i % k] } else { mine };
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    if n == warm * mine.len() {
                        warmed.fetch_add(1, Ordering::Relaxed);
                    }
                    let t = mine[n % mine.len()];
                    n += 1;
                    let user = tsql_as!(
                        User,
                        "SELECT id, email, name FROM <<tables.users>> WHERE id = $1",
                        1i64
                    )
                    .fetch_one(&handles[t])
                    .await
                    .expect("tsql_as! point query");
                    assert_eq!(user.email, format!("c@t{t}"), "a row of another tenant");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let warming = Instant::now();
    while warmed.load(Ordering::Relaxed) < tasks as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let warm_secs = warming.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (n0, t0) = (done.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let (n1, t1) = (done.load(Ordering::Relaxed), Instant::now());
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("a benchmark task panicked");
    }
    ((n1 - n0) as f64 / (t1 - t0).as_secs_f64(), warm_secs)
}

/// The mean and largest server memory of the pool's connections (MiB), read on each connection
/// from `pg_backend_memory_contexts` while all of them are held, and the mean number of prepared
/// statements they hold.
pub async fn server_memory(db: &Database, connections: usize) -> (f64, f64, f64) {
    let mut held = Vec::new();
    let mut counts = Vec::new();
    let mut bytes = Vec::new();
    for _ in 0..connections {
        let mut conn = db.acquire().await.expect("a pool connection");
        let (b, statements): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT sum(total_bytes)::int8 FROM pg_backend_memory_contexts), (SELECT count(*) FROM pg_prepared_statements)",
        )
        .fetch_one(conn.raw())
        .await
        .expect("memory contexts");
        counts.push(statements);
        bytes.push(b as f64 / (1024.0 * 1024.0));
        held.push(conn);
    }
    let mean = bytes.iter().sum::<f64>() / bytes.len() as f64;
    let statements = counts.iter().sum::<i64>() as f64 / counts.len() as f64;
    (mean, bytes.iter().copied().fold(0.0, f64::max), statements)
}

/// The pool of one setup.
pub async fn pool(url: &str, setup: &Setup, connections: usize) -> SharedPool {
    SharedPool::connect(
        DatabaseConfig::new(url)
            .min_connections(connections)
            .max_connections(connections)
            .tenant_lanes(setup.lanes)
            .statement_cache_capacity(setup.cache)
            .slow_query_threshold(None),
    )
    .await
    .expect("shared pool")
}
