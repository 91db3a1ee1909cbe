//! Time to a fresh, migrated database for one test: pgdbm's template clone
//! (`TestDatabase::builder().migrations(dir).build()`) against what `#[sqlx::test]` does
//! (`CREATE DATABASE`, then sqlx's `Migrator` applies every file), for 10 and 200 generated
//! migration files, in one run.
//!
//! Run: `cargo bench --bench testdb` (env: `PGDBM_BENCH_RUNS`, default 20 clones and 5
//! create+migrate rounds; `PGDBM_TEST_CLONE_STRATEGY=wal_log` to compare clone strategies). Bar
//! (issue 13): at 200 files p50 <= 60 ms, p90 <= 100 ms and >= 10x faster than what
//! `#[sqlx::test]` does on `DATABASE_URL`'s server; at 10 files p50 <= 30 ms. The same sqlx steps
//! on pgdbm's in-memory test server print too. Figures print; nothing is asserted.

use std::path::Path;
use std::time::{Duration, Instant};

use pgdbm::testing::{TestDatabase, test_server};
use sqlx::{Connection, PgConnection};

fn generate(dir: &Path, n: usize) {
    for i in 1..=n {
        // Plain names: the same files must run under sqlx's migrator.
        let body = format!(
            "CREATE TABLE t_{i} (\n    id BIGSERIAL PRIMARY KEY,\n    name TEXT NOT NULL,\n    created_at TIMESTAMPTZ NOT NULL DEFAULT now()\n);\nCREATE INDEX t_{i}_name_idx ON t_{i} (name);\n"
        );
        std::fs::write(dir.join(format!("{i:04}_t_{i}.sql")), body).unwrap();
    }
}

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn pgdbm_clone(dir: &Path, runs: usize) -> (Duration, Vec<Duration>) {
    let builder = || {
        TestDatabase::builder()
            .migrations(dir)
            .module("bench")
            .pool_size(1, 1)
    };
    // The first build also builds the template (once per migration set).
    let t = Instant::now();
    let first = builder().build().await.expect("template build");
    let template_build = t.elapsed();
    first.drop_database().await.unwrap();
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let db = builder().build().await.expect("clone");
        times.push(t.elapsed());
        db.drop_database().await.unwrap();
    }
    (template_build, times)
}

async fn sqlx_way(admin_url: &str, dir: &Path, runs: usize) -> Vec<Duration> {
    // Same footing as pgdbm: no TLS on loopback.
    let local = |u: &str| {
        format!(
            "{u}{}sslmode=disable",
            if u.contains('?') { "&" } else { "?" }
        )
    };
    let mut admin = PgConnection::connect(&local(admin_url)).await.unwrap();
    let migrator = sqlx::migrate::Migrator::new(dir)
        .await
        .expect("sqlx migrator");
    let mut times = Vec::new();
    for i in 0..runs {
        let name = format!("pgdbm_bench_sqlxway_{}_{i}", std::process::id());
        let t = Instant::now();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap();
        let mut url = url::Url::parse(admin_url).unwrap();
        url.set_path(&format!("/{name}"));
        let mut conn = PgConnection::connect(&local(url.as_str())).await.unwrap();
        migrator.run(&mut conn).await.expect("sqlx migrate");
        times.push(t.elapsed());
        conn.close().await.ok();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }
    times
}

/// Where `#[sqlx::test]` makes its databases: `DATABASE_URL`'s server (here, without it, the
/// usual localhost:5432), which is on disk.
fn sqlx_test_server() -> String {
    let url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "postgresql://postgres@127.0.0.1:5432/postgres".into());
    let mut u = url::Url::parse(&url).expect("DATABASE_URL is a URL");
    u.set_path("/postgres");
    u.to_string()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let runs: usize = std::env::var("PGDBM_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let server = test_server().await.expect("a server");
    let admin_url = server.admin_url.clone();
    let sqlx_url = sqlx_test_server();
    println!(
        "\ntime to a fresh migrated database (pgdbm: {runs} clones on the test server, {:?}; sqlx way: 5 rounds)\n",
        server.source
    );
    println!(
        "{:>6}  {:<58} {:>9} {:>9} {:>9}",
        "files", "method", "p50 ms", "p90 ms", "speed-up"
    );
    for n in [10usize, 200] {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), n);
        let (template, clones) = pgdbm_clone(dir.path(), runs).await;
        // What a sqlx user gets: #[sqlx::test] on DATABASE_URL's server; and, for a like-for-like
        // look at the method alone, the same steps on pgdbm's test server.
        let sqlx_times = sqlx_way(&sqlx_url, dir.path(), 5).await;
        let same_server = sqlx_way(&admin_url, dir.path(), 5).await;
        let p50 = pct(clones.clone(), 0.5);
        let p90 = pct(clones, 0.9);
        let sqlx_p50 = pct(sqlx_times.clone(), 0.5);
        let same_p50 = pct(same_server.clone(), 0.5);
        println!(
            "{n:>6}  {:<58} {:>9.1} {:>9.1}",
            "pgdbm TestDatabase (template clone)",
            ms(p50),
            ms(p90),
        );
        println!(
            "{n:>6}  {:<58} {:>9.1} {:>9.1} {:>8.1}x",
            "CREATE DATABASE + sqlx migrate on DATABASE_URL's server",
            ms(sqlx_p50),
            ms(pct(sqlx_times, 0.9)),
            sqlx_p50.as_secs_f64() / p50.as_secs_f64()
        );
        println!(
            "{n:>6}  {:<58} {:>9.1} {:>9.1} {:>8.1}x",
            "CREATE DATABASE + sqlx migrate on pgdbm's test server",
            ms(same_p50),
            ms(pct(same_server, 0.9)),
            same_p50.as_secs_f64() / p50.as_secs_f64()
        );
        println!(
            "{n:>6}  {:<58} {:>9.1}",
            "(pgdbm one-time template build)",
            ms(template)
        );
        let speedup = sqlx_p50.as_secs_f64() / p50.as_secs_f64();
        let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
        if n == 10 {
            println!("        Bar: p50 <= 30 ms: {}\n", verdict(ms(p50) <= 30.0));
        } else {
            println!(
                "        Bar: p50 <= 60 ms: {}; p90 <= 100 ms: {}; >= 10x faster than #[sqlx::test]'s way: {}\n",
                verdict(ms(p50) <= 60.0),
                verdict(ms(p90) <= 100.0),
                verdict(speedup >= 10.0)
            );
        }
    }
}
