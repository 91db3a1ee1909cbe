//! What `Database::verify_checked_queries` costs a service at startup: 200 recorded queries
//! described against the live schema, against the plain-sqlx way (one connection describing
//! them one after another) in the same run.
//!
//! Run: `cargo bench --bench verify` (env: `PGDBM_BENCH_QUERIES`, default 200;
//! `PGDBM_BENCH_RUNS`, default 10; `PGDBM_BENCH_POOL`, default 10). Bar (issue 24): 200 queries
//! in <= 200 ms on this machine. Figures print; nothing is asserted.

use std::time::{Duration, Instant};

use pgdbm::checked::{CheckedQueries, RecordedQuery, describe};
use pgdbm::testing::TestDatabase;
use sqlx::{Connection, PgConnection};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `n` distinct queries over the service's tables, the shapes a service runs (point reads,
/// joins, aggregates, writes with RETURNING).
fn queries(n: usize) -> Vec<String> {
    let shapes = [
        "SELECT id, email, name, created_at FROM myservice.users WHERE id = $1 AND {i} = {i}",
        "SELECT u.email, count(p.id) AS posts FROM myservice.users u LEFT JOIN myservice.posts p ON p.user_id = u.id WHERE u.id > $1 AND {i} = {i} GROUP BY u.email",
        "INSERT INTO myservice.users (email, name) VALUES ($1, $2) RETURNING id, created_at /* {i} */",
        "UPDATE myservice.posts SET title = $2 WHERE id = $1 AND {i} = {i} RETURNING id, title",
        "SELECT count(*) AS n FROM myservice.posts WHERE user_id = $1 AND {i} = {i}",
    ];
    (0..n)
        .map(|i| shapes[i % shapes.len()].replace("{i}", &i.to_string()))
        .collect()
}

/// The queries as sqlx would have recorded them at build time (described once, here).
async fn recorded(url: &str, sql: &[String]) -> CheckedQueries {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let mut out = Vec::new();
    for s in sql {
        let d = describe(&mut conn, s).await.unwrap();
        let json = serde_json::json!({
            "db_name": "PostgreSQL",
            "query": s,
            "describe": d,
            "hash": pgdbm::checked::sql_hash(s),
        });
        out.push(RecordedQuery::from_json(&json.to_string()).unwrap());
    }
    conn.close().await.unwrap();
    CheckedQueries::new(out)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env("PGDBM_BENCH_QUERIES", 200);
    let runs = env("PGDBM_BENCH_RUNS", 10);
    let pool = env("PGDBM_BENCH_POOL", 10);
    let t = TestDatabase::builder()
        .migrations(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .module("myservice")
        .schema("myservice")
        .pool_size(1, pool)
        .build()
        .await
        .unwrap();
    let sql = queries(n);
    let checked = recorded(&t.url(), &sql).await;

    let mut ours = Vec::new();
    let mut plain = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let report = t.verify_checked_queries(&checked).await.unwrap();
        ours.push(started.elapsed());
        assert_eq!((report.checked, report.differences.len()), (n, 0));

        // Plain sqlx: a fresh connection (a pooled one would answer from its statement cache),
        // each query described in turn.
        let started = Instant::now();
        let mut conn = PgConnection::connect(&t.url()).await.unwrap();
        for s in &sql {
            describe(&mut conn, s).await.unwrap();
        }
        conn.close().await.unwrap();
        plain.push(started.elapsed());
    }
    let (ours, plain) = (median(ours), median(plain));
    println!("verify_checked_queries, {n} queries, pool of {pool}, median of {runs} runs:");
    println!("  pgdbm (parallel, own connections)   {:>8.1} ms", ms(ours));
    println!(
        "  plain sqlx (one connection, serial) {:>8.1} ms",
        ms(plain)
    );
    println!(
        "  ratio pgdbm / plain sqlx            {:>8.2}",
        ours.as_secs_f64() / plain.as_secs_f64()
    );
    println!(
        "  bar: <= 200 ms for 200 queries      {}",
        if n == 200 && ours <= Duration::from_millis(200) {
            "met"
        } else {
            "see figures"
        }
    );
}
