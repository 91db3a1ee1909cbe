//! Time to a fresh, migrated database for one test: pgdbm's template clone
//! (`TestDatabase::builder().migrations(dir).build()`) against what `#[sqlx::test]` does
//! (`CREATE DATABASE`, then sqlx's `Migrator` applies every file), for 10 and 200 generated
//! migration files, in one run.
//!
//! Run: `cargo bench --bench testdb` (env: `PGDBM_BENCH_RUNS`, default 20 clones and 5
//! create+migrate rounds). Bar (issue 4): p50 <= 200 ms at 200 files, <= 60 ms at 10 files, and
//! >= 4x faster than create + migrate at 200 files. Figures print; nothing is asserted.

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

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let runs: usize = std::env::var("PGDBM_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let admin_url = test_server().await.expect("a server").admin_url.clone();
    println!("\ntime to a fresh migrated database (pgdbm: {runs} clones; sqlx way: 5 rounds)\n");
    println!(
        "{:>6}  {:<44} {:>9} {:>9} {:>12}",
        "files", "method", "p50 ms", "p90 ms", "vs sqlx way"
    );
    for n in [10usize, 200] {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), n);
        let (template, clones) = pgdbm_clone(dir.path(), runs).await;
        let sqlx_times = sqlx_way(&admin_url, dir.path(), 5).await;
        let p50 = pct(clones.clone(), 0.5);
        let sqlx_p50 = pct(sqlx_times.clone(), 0.5);
        println!(
            "{n:>6}  {:<44} {:>9.1} {:>9.1} {:>11.1}x",
            "pgdbm TestDatabase (template clone)",
            ms(p50),
            ms(pct(clones, 0.9)),
            sqlx_p50.as_secs_f64() / p50.as_secs_f64()
        );
        println!(
            "{n:>6}  {:<44} {:>9.1} {:>9.1} {:>12}",
            "CREATE DATABASE + sqlx migrate (#[sqlx::test])",
            ms(sqlx_p50),
            ms(pct(sqlx_times, 0.9)),
            "1.0x"
        );
        println!(
            "{n:>6}  {:<44} {:>9.1}",
            "(pgdbm one-time template build)",
            ms(template)
        );
        let bar = if n == 10 { 60.0 } else { 200.0 };
        let speedup = sqlx_p50.as_secs_f64() / p50.as_secs_f64();
        print!(
            "        Bar: p50 <= {bar} ms: {}",
            if ms(p50) <= bar { "PASS" } else { "MISS" }
        );
        if n == 200 {
            print!(
                "; >= 4x faster than create + migrate: {}",
                if speedup >= 4.0 { "PASS" } else { "MISS" }
            );
        }
        println!("\n");
    }
}
