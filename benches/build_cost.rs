//! Build cost of `tsql!`: a generated crate with 200 queries written with `tsql!` against the
//! same 200 written with `sqlx::query!`, both checked offline from the same `.sqlx` data; a clean
//! `cargo check` of each crate (dependencies already built), median of 3, printed as a ratio.
//!
//! Run: `cargo bench --bench build_cost` (needs a PostgreSQL server, found like the tests find
//! one, to write the `.sqlx` data once). Env: `PGDBM_BENCH_QUERIES` (default 200),
//! `PGDBM_BENCH_RUNS` (default 3). Bar (issue 5): <= 1.10x. Figures print; nothing is asserted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pgdbm::testing::TestDatabase;

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn crate_source(n: usize, with_tsql: bool) -> String {
    let mut src = String::from("#![allow(dead_code)]\n");
    for i in 0..n {
        let sql = if with_tsql {
            format!("SELECT id, email, name FROM <<tables.users>> WHERE id = $1 AND {i} = {i}")
        } else {
            format!(
                "SELECT id, email, name FROM \\\"myservice\\\".users WHERE id = $1 AND {i} = {i}"
            )
        };
        let mac = if with_tsql {
            "pgdbm::tsql!"
        } else {
            "sqlx::query!"
        };
        src.push_str(&format!(
            "pub async fn q{i}(db: &pgdbm::Database, id: i64) -> Result<Option<String>, sqlx::Error> {{\n    let row = {mac}(\"{sql}\", id).fetch_optional(db).await?;\n    Ok(row.map(|r| r.email))\n}}\n"
        ));
    }
    src
}

fn generate(root: &Path, n: usize) {
    let pgdbm_path = MANIFEST;
    write(
        &root.join("Cargo.toml"),
        "[workspace]\nmembers = [\"with_tsql\", \"with_sqlx\"]\nresolver = \"3\"\n",
    );
    write(
        &root.join("pgdbm.toml"),
        &format!("schema = \"myservice\"\nmigrations = \"{MANIFEST}/migrations\"\n"),
    );
    for (name, tsql) in [("with_tsql", true), ("with_sqlx", false)] {
        write(
            &root.join(name).join("Cargo.toml"),
            &format!(
                "[package]\nname = \"{name}\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n[dependencies]\npgdbm = {{ path = \"{pgdbm_path}\" }}\nsqlx = {{ version = \"0.9\", default-features = false, features = [\"macros\", \"postgres\", \"runtime-tokio\", \"tls-rustls-ring-webpki\"] }}\n"
            ),
        );
        write(&root.join(name).join("src/lib.rs"), &crate_source(n, tsql));
    }
}

fn cargo(root: &Path) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root)
        .env("CARGO_TARGET_DIR", root.join("target"))
        .env_remove("PGDBM_SCHEMA")
        .env_remove("PGDBM_CONFIG")
        .env_remove("SQLX_OFFLINE_DIR");
    c
}

fn run(mut c: Command) {
    let out = c.output().expect("cargo");
    assert!(
        out.status.success(),
        "{c:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::var("PGDBM_BENCH_QUERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let runs: usize = std::env::var("PGDBM_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let root = PathBuf::from(MANIFEST).join("target/pgdbm-build-bench");
    let _ = std::fs::remove_dir_all(root.join(".sqlx"));
    generate(&root, n);

    // The offline data, written once by an online check of the sqlx crate against a database
    // migrated like pgdbm.toml says (the tsql! crate renders to the same SQL, so it shares it).
    let db = TestDatabase::builder()
        .migrations(format!("{MANIFEST}/migrations"))
        .module("myservice")
        .schema("myservice")
        .build()
        .await
        .expect("a test database");
    std::fs::create_dir_all(root.join(".sqlx")).unwrap();
    let mut online = cargo(&root);
    online
        .args(["check", "--workspace", "--quiet"])
        .env("DATABASE_URL", db.url())
        .env("SQLX_OFFLINE", "false")
        .env("SQLX_OFFLINE_DIR", root.join(".sqlx"));
    run(online);
    drop(db);
    let files = std::fs::read_dir(root.join(".sqlx")).unwrap().count();
    println!("\n{files} offline query files written for {n} queries");

    let mut times: [(&str, Vec<Duration>); 2] = [("with_tsql", vec![]), ("with_sqlx", vec![])];
    for _ in 0..runs {
        for (name, t) in times.iter_mut() {
            let mut clean = cargo(&root);
            clean.args(["clean", "-p", name, "--quiet"]);
            run(clean);
            let mut check = cargo(&root);
            check
                .args(["check", "-p", name, "--quiet"])
                .env("SQLX_OFFLINE", "true")
                .env_remove("DATABASE_URL");
            let started = Instant::now();
            run(check);
            t.push(started.elapsed());
        }
    }
    let tsql = median(times[0].1.clone());
    let sqlx = median(times[1].1.clone());
    let ratio = tsql.as_secs_f64() / sqlx.as_secs_f64();
    println!("clean `cargo check` of one crate, offline, median of {runs}\n");
    println!("{:<28} {:>10}", "crate", "time");
    println!(
        "{:<28} {:>9.2}s",
        format!("{n} queries with tsql!"),
        tsql.as_secs_f64()
    );
    println!(
        "{:<28} {:>9.2}s",
        format!("{n} queries with sqlx::query!"),
        sqlx.as_secs_f64()
    );
    println!(
        "\nratio tsql!/query!: {ratio:.3}x  (bar <= 1.10x: {})",
        if ratio <= 1.10 { "PASS" } else { "MISS" }
    );
}
