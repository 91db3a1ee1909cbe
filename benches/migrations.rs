//! Time to apply 200 generated migration files (each a table with a BIGSERIAL key and an index)
//! to a fresh database: pgdbm's `Migrator` beside `psql -f` of the concatenated files and, when
//! `python3 -c "import pgdbm"` works, pgdbm's Python runner on the same files.
//!
//! Run: `cargo bench --bench migrations` (env: `PGDBM_BENCH_URL` or `DATABASE_URL` for the
//! server, `PGDBM_BENCH_FILES` for the file count, `PGDBM_BENCH_RUNS` for repetitions).
//! Bar (issue 3): pgdbm within 1.5x of `psql -f`. Figures print; nothing is asserted.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pgdbm::{Database, DatabaseConfig, Migrator};
use sqlx::{Connection, PgConnection};

fn admin_url() -> String {
    std::env::var("PGDBM_BENCH_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into())
}

fn url_for(db: &str) -> String {
    let mut u = url::Url::parse(&admin_url()).expect("valid url");
    u.set_path(&format!("/{db}"));
    u.to_string()
}

async fn fresh_db(name: &str) {
    let mut admin = PgConnection::connect(&admin_url())
        .await
        .expect("admin connection");
    for sql in [
        format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        format!("CREATE DATABASE \"{name}\""),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .expect("admin statement");
    }
    admin.close().await.ok();
}

async fn drop_db(name: &str) {
    let mut admin = PgConnection::connect(&admin_url())
        .await
        .expect("admin connection");
    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut admin)
        .await
        .ok();
}

fn generate(dir: &Path, n: usize) -> String {
    let mut all = String::new();
    for i in 1..=n {
        let body = format!(
            "CREATE TABLE {{{{tables.t_{i}}}}} (\n    id BIGSERIAL PRIMARY KEY,\n    name TEXT NOT NULL,\n    created_at TIMESTAMPTZ NOT NULL DEFAULT now()\n);\nCREATE INDEX t_{i}_name_idx ON {{{{tables.t_{i}}}}} (name);\n"
        );
        std::fs::write(dir.join(format!("{i:04}_t_{i}.sql")), &body).unwrap();
        all.push_str(&pgdbm::template::render(&body, None).unwrap());
    }
    all
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn psql() -> Option<String> {
    let candidates = std::iter::once("psql".to_string()).chain(
        std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin/psql").to_string_lossy().into_owned()),
    );
    candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

const PYTHON_RUNNER: &str = r#"
import asyncio, sys, time
from pgdbm import AsyncDatabaseManager, AsyncMigrationManager, DatabaseConfig
async def main():
    db = AsyncDatabaseManager(DatabaseConfig(connection_string=sys.argv[1], min_connections=1, max_connections=2))
    await db.connect()
    m = AsyncMigrationManager(db, migrations_path=sys.argv[2], module_name="bench")
    t = time.perf_counter()
    r = await m.apply_pending_migrations()
    print(time.perf_counter() - t)
    assert r["status"] == "success", r
    await db.disconnect()
asyncio.run(main())
"#;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::var("PGDBM_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let runs: usize = std::env::var("PGDBM_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let all = generate(dir.path(), n);
    let script = dir.path().join("all.sql.txt");
    std::fs::write(&script, &all).unwrap();
    let db_name = format!("pgdbm_bench_mig_{}", std::process::id());

    let mut ours = Vec::new();
    for _ in 0..runs {
        fresh_db(&db_name).await;
        let db = Database::connect(DatabaseConfig::new(url_for(&db_name)).min_connections(1))
            .await
            .expect("connect");
        let t = Instant::now();
        let report = Migrator::new(&db, dir.path(), "bench")
            .apply_pending()
            .await
            .expect("apply");
        ours.push(t.elapsed());
        assert_eq!(report.applied.len(), n);
        db.close().await;
    }

    let mut psql_times = Vec::new();
    let psql = psql();
    if let Some(psql) = &psql {
        for _ in 0..runs {
            fresh_db(&db_name).await;
            let t = Instant::now();
            let out = Command::new(psql)
                .args([
                    "-q",
                    "-X",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-d",
                    &url_for(&db_name),
                    "-f",
                ])
                .arg(&script)
                .output()
                .expect("psql");
            psql_times.push(t.elapsed());
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    let mut python_times = Vec::new();
    let python_ok = Command::new("python3")
        .args(["-c", "import pgdbm"])
        .output()
        .is_ok_and(|o| o.status.success());
    if python_ok {
        for _ in 0..runs {
            fresh_db(&db_name).await;
            let out = Command::new("python3")
                .args(["-c", PYTHON_RUNNER, &url_for(&db_name)])
                .arg(dir.path())
                .output()
                .expect("python3");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let secs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
            python_times.push(Duration::from_secs_f64(secs));
        }
    }
    drop_db(&db_name).await;

    let ours = median(ours);
    println!("\napplying {n} migration files to a fresh database (median of {runs} runs)\n");
    println!("{:<36} {:>10} {:>12}", "runner", "time", "vs psql -f");
    let vs = |d: Duration| {
        if psql_times.is_empty() {
            "n/a".to_string()
        } else {
            format!(
                "{:.2}x",
                d.as_secs_f64() / median(psql_times.clone()).as_secs_f64()
            )
        }
    };
    println!(
        "{:<36} {:>8.0}ms {:>12}",
        "pgdbm Migrator (Rust)",
        ours.as_secs_f64() * 1e3,
        vs(ours)
    );
    if !psql_times.is_empty() {
        let p = median(psql_times.clone());
        println!(
            "{:<36} {:>8.0}ms {:>12}",
            "psql -f (concatenated)",
            p.as_secs_f64() * 1e3,
            "1.00x"
        );
    } else {
        println!("psql not found: no psql figure");
    }
    if !python_times.is_empty() {
        let p = median(python_times);
        println!(
            "{:<36} {:>8.0}ms {:>12}",
            "pgdbm 0.x (Python)",
            p.as_secs_f64() * 1e3,
            vs(p)
        );
    } else {
        println!("python3 -c 'import pgdbm' failed: no Python figure");
    }
    if !psql_times.is_empty() {
        let ratio = ours.as_secs_f64() / median(psql_times).as_secs_f64();
        println!(
            "\nBar: pgdbm within 1.5x of psql -f: {:.2}x -> {}",
            ratio,
            if ratio <= 1.5 { "PASS" } else { "MISS" }
        );
    }
}
