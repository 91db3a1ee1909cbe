//! The whole tenant lifecycle at scale, and what the tenants cost the server: on a fresh
//! database, N tenants (default 10,000) created concurrently, `get` uncached and cached, `list`
//! whole and a page, `count`, `migrate_all` with nothing pending and with one new file, the drop
//! of 100 tenants; then the catalog's size and rows, a new connection's first queries, a
//! connection's memory after touching every tenant, and `pg_dump --schema-only`, each beside a
//! database of one tenant.
//!
//! Run: `cargo bench --bench tenant_lifecycle`. Env: `PGDBM_BENCH_URL` (else `DATABASE_URL`,
//! else the local server; the databases `pgdbm_bench_tenant_lifecycle` and
//! `pgdbm_bench_tenant_lifecycle_one` are replaced by fresh ones, and dropped at the end),
//! `PGDBM_BENCH_TENANTS` (default 10000), `PGDBM_BENCH_CONCURRENCY` (creates, drops and
//! migrations in flight, default 8; the pool has twice as many connections),
//! `PGDBM_BENCH_PG_DUMP` (default `/usr/lib/postgresql/15/bin/pg_dump`, else `pg_dump` on the
//! PATH). Printed, never asserted.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use pgdbm::{DatabaseConfig, SharedPool, Tenants};
use sqlx::{Connection, PgConnection};

const DB: &str = "pgdbm_bench_tenant_lifecycle";
const ONE: &str = "pgdbm_bench_tenant_lifecycle_one";
const MIGRATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");

#[path = "support/tenant_db.rs"]
mod tenant_db;

fn url_for(database: &str) -> String {
    tenant_db::url_for(database).to_string()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn name(i: usize) -> String {
    format!("t{i:05}")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(bytes: i64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

async fn admin(sql: &str) {
    let mut c = PgConnection::connect(&url_for("postgres"))
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

async fn pool(db: &str, max: usize) -> SharedPool {
    SharedPool::connect(
        DatabaseConfig::new(url_for(db))
            .min_connections(1)
            .max_connections(max)
            .slow_query_threshold(None),
    )
    .await
    .expect("shared pool")
}

/// Creates tenants `0..n`, `concurrency` at a time, printing the rate of each tenth.
async fn create_all(tenants: &Tenants, n: usize, concurrency: usize) -> Duration {
    let started = Instant::now();
    let step = (n / 10).max(1);
    let (mut done, mut lap) = (0, Instant::now());
    let mut creates = std::pin::pin!(
        futures_util::stream::iter(0..n)
            .map(|i| async move { (i, tenants.create(&name(i)).await) })
            .buffer_unordered(concurrency)
    );
    while let Some((i, r)) = creates.next().await {
        if let Err(e) = r {
            panic!("creating {}: {e}", name(i));
        }
        done += 1;
        if done % step == 0 {
            println!(
                "  created {done:>6}: the last {step} at {:.0} tenants/s",
                step as f64 / lap.elapsed().as_secs_f64()
            );
            lap = Instant::now();
        }
    }
    started.elapsed()
}

/// The resident memory of this process, from /proc (0 where there is none).
fn rss_bytes() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// `get`: the first lookup of every tenant on a fresh `Tenants` (one registry query each), then
/// cached lookups.
async fn gets(pool: &SharedPool, dir: &Path, n: usize) {
    let tenants = Tenants::new(pool, "myservice", dir);
    let names: Vec<String> = (0..n).map(name).collect();
    let before = rss_bytes();
    let started = Instant::now();
    for t in &names {
        tenants.get(t).await.expect("get");
    }
    let first = started.elapsed();
    let grown = rss_bytes() - before;
    let rounds = 1_000_000usize;
    let started = Instant::now();
    for i in 0..rounds {
        std::hint::black_box(tenants.get(&names[i % n]).await.expect("get"));
    }
    let cached = started.elapsed();
    println!(
        "get, first lookup: {:.1} µs each (mean of {n}, one registry query each); this process grew {:.1} MiB holding {n} handles ({:.2} KiB each)",
        first.as_secs_f64() * 1e6 / n as f64,
        mib(grown),
        grown as f64 / 1024.0 / n as f64
    );
    println!(
        "get, cached: {:.3} µs each (mean of {rounds})",
        cached.as_secs_f64() * 1e6 / rounds as f64
    );
}

/// `list`, `list_page` at the start and at the end, `count`, and the page query's plans.
async fn lists(tenants: &Tenants, pool: &SharedPool, n: usize) {
    let db = pool.database(None).expect("handle");
    // Statistics, as autovacuum would have gathered them on a live registry.
    db.execute("ANALYZE pgdbm.tenants", ())
        .await
        .expect("analyze");
    let started = Instant::now();
    let all = tenants.list().await.expect("list");
    println!("list, all {}: {:.1} ms", all.len(), ms(started.elapsed()));
    assert_eq!(all.len(), n, "list is whole");
    for (label, after) in [("first", None), ("last", Some(name(n - 101)))] {
        // Every connection of the pool prepares the statement once: not what is measured.
        for _ in 0..64 {
            tenants
                .list_page(after.as_deref(), 100)
                .await
                .expect("page");
        }
        let mut times = Vec::new();
        for _ in 0..21 {
            let started = Instant::now();
            let page = tenants
                .list_page(after.as_deref(), 100)
                .await
                .expect("page");
            times.push(started.elapsed());
            std::hint::black_box(page);
        }
        times.sort();
        let plan: Vec<(String,)> = db
            .fetch_all(
                "EXPLAIN SELECT name FROM pgdbm.tenants WHERE module = 'myservice' AND name > $1 ORDER BY name LIMIT 101",
                (after.clone().unwrap_or_default(),),
            )
            .await
            .expect("explain");
        println!(
            "list_page of 100, the {label} page: {:.2} ms (median of 21); plan: {}",
            ms(times[10]),
            plan.iter()
                .map(|(l,)| l.trim())
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    let mut times = Vec::new();
    let mut count = 0;
    for i in 0..64 + 21 {
        let started = Instant::now();
        count = tenants.count().await.expect("count");
        if i >= 64 {
            times.push(started.elapsed());
        }
    }
    times.sort();
    println!("count: {count} in {:.2} ms (median of 21)", ms(times[10]));
}

/// `migrate_all`, timed, with the number of files it applied and of failures.
async fn migrate_all(tenants: &Tenants, label: &str) {
    let mut failed = 0;
    let started = Instant::now();
    let done = tenants
        .migrate_all_with(|p| failed = p.failed)
        .await
        .expect("migrate_all");
    let took = started.elapsed();
    let applied: usize = done
        .iter()
        .filter_map(|t| t.outcome.as_ref().ok())
        .map(|r| r.applied.len())
        .sum();
    println!(
        "migrate_all, {label}: {:.2} s for {} tenants, {:.2} ms per tenant ({applied} files applied, {failed} failed)",
        took.as_secs_f64(),
        done.len(),
        ms(took) / done.len() as f64
    );
}

/// Drops the last 100 tenants, `concurrency` at a time.
async fn drops(tenants: &Tenants, n: usize, concurrency: usize) {
    let k = n.min(100);
    let started = Instant::now();
    let dropped: Vec<_> = futures_util::stream::iter(n - k..n)
        .map(|i| async move { tenants.drop(&name(i), &name(i)).await })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let took = started.elapsed();
    assert!(dropped.iter().all(Result::is_ok), "drops");
    println!(
        "drop of {k} tenants ({concurrency} at a time): {:.2} s, {:.1} ms per tenant",
        took.as_secs_f64(),
        ms(took) / k as f64
    );
}

/// The catalog of `db`: database size, pg_catalog's size and its largest tables, row counts.
async fn catalog(db: &str, label: &str) -> (i64, i64) {
    let mut c = PgConnection::connect(&url_for(db)).await.expect("connect");
    let (size, catalog): (i64, i64) = sqlx::query_as(
        "SELECT pg_database_size(current_database()), (SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'r')",
    )
    .fetch_one(&mut c)
    .await
    .expect("sizes");
    let rows: (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pg_namespace), (SELECT count(*) FROM pg_class), (SELECT count(*) FROM pg_attribute), (SELECT count(*) FROM pg_depend), (SELECT count(*) FROM pg_type)",
    )
    .fetch_one(&mut c)
    .await
    .expect("rows");
    let biggest: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.relname::text, pg_total_relation_size(c.oid) FROM pg_class c WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'r' ORDER BY 2 DESC LIMIT 6",
    )
    .fetch_all(&mut c)
    .await
    .expect("biggest");
    println!(
        "{label}: database {:.1} MiB, pg_catalog {:.1} MiB; rows: pg_namespace {}, pg_class {}, pg_attribute {}, pg_depend {}, pg_type {}",
        mib(size),
        mib(catalog),
        rows.0,
        rows.1,
        rows.2,
        rows.3,
        rows.4
    );
    println!(
        "  largest catalog tables (with indexes): {}",
        biggest
            .iter()
            .map(|(t, b)| format!("{t} {:.1} MiB", mib(*b)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    c.close().await.ok();
    (rows.1, catalog)
}

/// The median time of a new connection and its first query (`SELECT 1`, then one that reads
/// a tenant's table), over 21 connections.
async fn first_queries(db: &str, tenant: &str, label: &str) {
    let sql = format!("SELECT count(*) FROM {tenant}.users");
    let (mut connect, mut select1, mut table) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..21 {
        let started = Instant::now();
        let mut c = PgConnection::connect(&url_for(db)).await.expect("connect");
        connect.push(started.elapsed());
        let at = Instant::now();
        sqlx::raw_sql("SELECT 1")
            .execute(&mut c)
            .await
            .expect("select 1");
        select1.push(at.elapsed());
        let at = Instant::now();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut c)
            .await
            .expect("first query on a tenant table");
        table.push(at.elapsed());
        c.close().await.ok();
    }
    for v in [&mut connect, &mut select1, &mut table] {
        v.sort();
    }
    println!(
        "{label}: connect {:.2} ms, then SELECT 1 {:.2} ms, then a first query on {tenant}.users {:.2} ms (medians of 21)",
        ms(connect[10]),
        ms(select1[10]),
        ms(table[10])
    );
}

/// What one connection holds after reading one table of each of `n` tenants
/// (`pg_backend_memory_contexts`: its catalog caches grow with each relation it opens).
async fn touch_all(db: &str, n: usize) {
    let mut c = PgConnection::connect(&url_for(db)).await.expect("connect");
    let memory = "SELECT sum(total_bytes)::bigint FROM pg_backend_memory_contexts";
    let before: i64 = sqlx::query_scalar(memory)
        .fetch_one(&mut c)
        .await
        .expect("memory");
    let started = Instant::now();
    for i in 0..n {
        let sql = format!("SELECT id FROM tenant_{}.users LIMIT 1", name(i));
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await
            .expect("touch");
    }
    let took = started.elapsed();
    let after: i64 = sqlx::query_scalar(memory)
        .fetch_one(&mut c)
        .await
        .expect("memory");
    println!(
        "one connection reading the users table of each of {n} tenants: {:.2} s; its server memory {:.1} MiB -> {:.1} MiB",
        took.as_secs_f64(),
        mib(before),
        mib(after)
    );
    c.close().await.ok();
}

fn pg_dump_path() -> String {
    std::env::var("PGDBM_BENCH_PG_DUMP").unwrap_or_else(|_| {
        let debian = "/usr/lib/postgresql/15/bin/pg_dump";
        if Path::new(debian).exists() {
            debian.to_string()
        } else {
            "pg_dump".to_string()
        }
    })
}

/// `pg_dump --schema-only` of `db` (of the schemas matching `pattern` when given), timed, to
/// a file whose size is printed; or how it failed.
fn pg_dump(db: &str, pattern: Option<&str>, label: &str) {
    let out = tempfile::NamedTempFile::new().expect("temp file");
    let mut cmd = std::process::Command::new(pg_dump_path());
    cmd.args(["--schema-only", "--no-password", "-f"])
        .arg(out.path())
        .arg("-d")
        .arg(url_for(db));
    if let Some(p) = pattern {
        cmd.args(["-n", p]);
    }
    let started = Instant::now();
    let done = cmd.output().expect("running pg_dump");
    let took = started.elapsed();
    if !done.status.success() {
        let stderr = String::from_utf8_lossy(&done.stderr);
        println!(
            "{label}: pg_dump --schema-only FAILED after {:.2} s: {}",
            took.as_secs_f64(),
            stderr.lines().take(2).collect::<Vec<_>>().join(" / ")
        );
        return;
    }
    let size = std::fs::metadata(out.path()).map_or(0, |m| m.len() as i64);
    println!(
        "{label}: pg_dump --schema-only {:.2} s, {:.1} MiB of SQL",
        took.as_secs_f64(),
        mib(size)
    );
}

/// The server's lock table: pg_dump takes a lock on every table it dumps, in one transaction.
async fn lock_table_size(db: &str) {
    let mut c = PgConnection::connect(&url_for(db)).await.expect("connect");
    let (locks, conns, prepared, tables): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT current_setting('max_locks_per_transaction')::bigint, current_setting('max_connections')::bigint, current_setting('max_prepared_transactions')::bigint, (SELECT count(*) FROM pg_class WHERE relkind IN ('r', 'p') AND relnamespace <> 'pg_catalog'::regnamespace AND relnamespace <> 'information_schema'::regnamespace)",
    )
    .fetch_one(&mut c)
    .await
    .expect("settings");
    println!(
        "lock table: max_locks_per_transaction {locks} x (max_connections {conns} + max_prepared_transactions {prepared}) = {} locks; the database has {tables} tables for pg_dump to lock",
        locks * (conns + prepared)
    );
    c.close().await.ok();
}

fn main() {
    let n = env_usize("PGDBM_BENCH_TENANTS", 10_000).max(101);
    let concurrency = env_usize("PGDBM_BENCH_CONCURRENCY", 8).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(n, concurrency));
}

async fn run(n: usize, concurrency: usize) {
    fresh(DB).await;
    fresh(ONE).await;
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(MIGRATIONS).expect("migrations") {
        let p = entry.expect("entry").path();
        std::fs::copy(&p, dir.path().join(p.file_name().expect("file"))).expect("copy");
    }
    let pool = pool(DB, 2 * concurrency).await;
    let tenants = Tenants::new(&pool, "myservice", dir.path()).concurrency(concurrency);
    let version: Option<String> = pool
        .database(None)
        .expect("handle")
        .fetch_value("SHOW server_version", ())
        .await
        .expect("version");
    println!();
    println!(
        "{n} tenants, each migrated with the example service's 3 files, PostgreSQL {}, {concurrency} in flight, pool of {}",
        version.unwrap_or_default(),
        2 * concurrency
    );
    let took = create_all(&tenants, n, concurrency).await;
    println!(
        "create, all {n}: {:.1} s, {:.0} tenants/s, {:.1} ms per tenant",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        ms(took) / n as f64
    );
    gets(&pool, dir.path(), n).await;
    lists(&tenants, &pool, n).await;
    migrate_all(&tenants, "nothing pending").await;
    std::fs::write(
        dir.path().join("004_add_nickname.sql"),
        "ALTER TABLE {{tables.users}} ADD COLUMN nickname TEXT;\n",
    )
    .expect("a new migration");
    migrate_all(&tenants, "one new file pending").await;
    drops(&tenants, n, concurrency).await;
    pool.close().await;

    let one = self::pool(ONE, 4).await;
    Tenants::new(&one, "myservice", dir.path())
        .create(&name(0))
        .await
        .expect("the one tenant");
    one.close().await;
    println!();
    println!(
        "What the tenants cost the server ({} tenants left)",
        n - 100
    );
    let (class1, bytes1) = catalog(ONE, "one tenant").await;
    let (class_n, bytes_n) = catalog(DB, &format!("{} tenants", n - 100)).await;
    let more = (n - 101) as f64;
    println!(
        "  each tenant adds {:.1} pg_class rows and {:.1} KiB of catalog",
        (class_n - class1) as f64 / more,
        (bytes_n - bytes1) as f64 / 1024.0 / more
    );
    let tenant = format!("tenant_{}", name(n / 2));
    first_queries(ONE, &format!("tenant_{}", name(0)), "one tenant").await;
    first_queries(DB, &tenant, &format!("{} tenants", n - 100)).await;
    touch_all(DB, n - 100).await;
    pg_dump(ONE, None, "one tenant");
    // t00000 to t00999; the drops took the last 100 names.
    let thousand = if n >= 1100 { 1000 } else { n - 100 };
    pg_dump(
        DB,
        Some("tenant_t00*"),
        &format!("{} tenants, {thousand} of their schemas", n - 100),
    );
    lock_table_size(DB).await;
    pg_dump(DB, None, &format!("{} tenants, whole", n - 100));
    admin(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)")).await;
    admin(&format!("DROP DATABASE IF EXISTS {ONE} WITH (FORCE)")).await;
}
