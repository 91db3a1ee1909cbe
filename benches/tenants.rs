//! A `tsql_as!` point query through a tenant handle (re-targeted to the tenant's schema) against
//! the same query through a handle of the schema it was checked for, in one run, on one pool.
//!
//! Then the tenants-at-scale table (`support/tenant_scale.rs`): the same query over k = 1, 10,
//! 100, 1,000, 10,000 tenants made with `Tenants::create`, 8 tasks on one shared pool of 16
//! connections, first as the pool was before lanes (`tenant_lanes(1)`, cache 256), then with 8
//! lanes and a statement cache holding a lane's share; each row with its ratio to k = 1 of the
//! same pool and the server memory of the pool's connections. Bars: >= 0.8 at 1,000 and >= 0.6
//! at 10,000.
//!
//! Run: `cargo bench --bench tenants`. Env: `PGDBM_BENCH_URL` (else `DATABASE_URL`, else the local
//! server; its database is replaced by a fresh `pgdbm_bench_tenants`), `PGDBM_BENCH_SECS` per cell
//! (default 5), `PGDBM_BENCH_TASKS` (default 8). The cells alternate, three rounds each, and the
//! medians are compared. Bar: tenant / compile-time schema >= 0.95. The table: `PGDBM_BENCH_TENANTS`
//! (comma-separated k, default `1,10,100,1000,10000`; empty skips it), `PGDBM_BENCH_WARMUP`
//! (passes of each task over its tenants before a cell is timed, default 6: PostgreSQL plans a
//! prepared statement 5 times before it settles on a generic plan), `PGDBM_BENCH_POOL` (16),
//! `PGDBM_BENCH_LANES` (8), `PGDBM_BENCH_CACHE` (the lanes' statement cache, default twice a
//! lane's share of the largest k); `PGDBM_BENCH_ONLY=scale` runs the table alone, on the tenants an
//! earlier run made. Printed, never asserted.

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
#[path = "support/tenant_scale.rs"]
mod tenant_scale;

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

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{key}: not a number: {v}"))
        })
        .unwrap_or(default)
}

fn main() {
    let secs: f64 = env_or("PGDBM_BENCH_SECS", 5.0);
    let tasks: usize = env_or("PGDBM_BENCH_TASKS", 8);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        if std::env::var("PGDBM_BENCH_ONLY").as_deref() == Ok("scale") {
            return scale_table(tasks, secs, true).await;
        }
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
        scale_table(tasks, secs, false).await;
    });
}

/// The tenants-at-scale table (see the module docs); `reuse`: on the tenants an earlier run
/// made instead of new ones (`PGDBM_BENCH_ONLY=scale`).
async fn scale_table(tasks: usize, secs: f64, reuse: bool) {
    let ks: Vec<usize> = std::env::var("PGDBM_BENCH_TENANTS")
        .unwrap_or_else(|_| "1,10,100,1000,10000".into())
        .split(',')
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.trim().parse().expect("PGDBM_BENCH_TENANTS: numbers"))
        .collect();
    let Some(&k_max) = ks.iter().max() else {
        return;
    };
    let warm: usize = env_or("PGDBM_BENCH_WARMUP", 6);
    let connections: usize = env_or("PGDBM_BENCH_POOL", 16);
    let lanes: usize = env_or("PGDBM_BENCH_LANES", 8);
    let migrations = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
    // A lane's share of the tenants, twice over: a connection also runs the tenants of other
    // lanes whose connections were busy.
    let setups = [
        tenant_scale::Setup {
            name: "before: 1 lane, cache 256",
            lanes: 1,
            cache: 256,
        },
        tenant_scale::Setup {
            name: "lanes",
            lanes,
            cache: env_or("PGDBM_BENCH_CACHE", (2 * k_max / lanes).max(256)),
        },
    ];
    let url = url_for(DB);
    println!();
    let maker = tenant_scale::pool(&url, &setups[1], 4).await;
    let tenants = Tenants::new(&maker, "myservice", migrations);
    if reuse {
        let have = tenants.count().await.expect("tenant registry");
        assert!(
            have >= k_max,
            "{have} tenants, {k_max} wanted: run the whole bench once first"
        );
        println!("{have} tenants there from an earlier run");
    } else {
        tenant_scale::create(&tenants, k_max, 4).await;
    }
    maker.close().await;
    println!(
        "tsql_as! point query over k tenants (task i takes tenants i, i + {tasks}, …), {tasks} tasks, pool of {connections}, {warm} warm-up passes, {secs} s per cell"
    );
    for setup in &setups {
        let pool = tenant_scale::pool(&url, setup, connections).await;
        let tenants = Tenants::new(&pool, "myservice", migrations);
        let mut handles = Vec::with_capacity(k_max);
        for i in 0..k_max {
            handles.push(tenants.get(&format!("t{i}")).await.expect("tenant handle"));
        }
        let any = pool.database(None).expect("handle");
        let mut base = None;
        for &k in &ks {
            let (qps, warm_secs) = tenant_scale::measure(&handles, k, tasks, secs, warm).await;
            let base = *base.get_or_insert(qps);
            let (mean, max, statements) = tenant_scale::server_memory(&any, connections).await;
            println!(
                "{:<26} lanes {:>2} cache {:>5}  k = {k:>6}  {qps:>8.0} q/s  {:>5.2} of k = 1   per connection: {statements:>5.0} statements, server memory {mean:>6.1} MiB (max {max:>6.1})   warm-up {warm_secs:>5.1} s",
                setup.name,
                setup.lanes,
                setup.cache,
                qps / base
            );
        }
        pool.close().await;
    }
    println!("Bars: >= 0.8 of k = 1 at 1,000 tenants, >= 0.6 at 10,000.");
}
