//! pgdbm (Python) 0.5.0 and our migrator on one module at once: they exclude each other, so
//! both succeed and every file is applied once. Needs pgdbm (Python) 0.5.0, which the test
//! support installs under `target/test-tools/` when the machine has none (`support/tools.rs`).

mod support;

use std::process::Stdio;
use std::time::Duration;

use pgdbm::migrate::RevertTarget;
use pgdbm::testing::TestDatabase;
use pgdbm::{Database, DatabaseConfig, Migrator};

const PYTHON_RUNNER: &str = r#"
import asyncio, sys
from pgdbm import AsyncDatabaseManager, AsyncMigrationManager, DatabaseConfig
url, schema, path, module = sys.argv[1:5]
async def main():
    db = AsyncDatabaseManager(DatabaseConfig(connection_string=url, schema=schema,
                                             min_connections=1, max_connections=2))
    await db.connect()
    try:
        r = await AsyncMigrationManager(db, migrations_path=path,
                                        module_name=module).apply_pending_migrations()
        print(r["status"], len(r["applied"]))
    finally:
        await db.disconnect()
asyncio.run(main())
"#;

fn write_files(dir: &std::path::Path, round: usize, files: std::ops::RangeInclusive<usize>) {
    for i in files {
        std::fs::write(
            dir.join(format!("{i:03}_r{round}_t{i}.sql")),
            format!("CREATE TABLE {{{{tables.r{round}_t{i}}}}} (id int);\nSELECT pg_sleep(0.1);\n"),
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_runner_and_ours_on_one_module_both_succeed_each_file_once() {
    race(false).await;
}

/// The same race with our runner in transaction-pooler mode (a lock per file, at transaction
/// level), on a direct server: PgBouncer is not part of this suite yet (issue 15).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_race_in_transaction_pooler_mode() {
    race(true).await;
}

async fn race(pooler: bool) {
    let t = TestDatabase::builder()
        .pool_size(0, 1)
        .build()
        .await
        .unwrap();
    for round in 0..10 {
        let schema = format!("race_{round}");
        let dir = tempfile::tempdir().unwrap();
        // The deployed version: its migrations applied, the history table in place (pgdbm
        // (Python) creates that table outside any lock, so on a brand-new schema its own
        // CREATE TABLE IF NOT EXISTS can lose a race with any other runner's).
        write_files(dir.path(), round, 1..=2);
        let db = Database::connect(
            DatabaseConfig::new(t.url())
                .schema(&schema)
                .min_connections(1)
                .max_connections(2),
        )
        .await
        .unwrap();
        Migrator::new(&db, dir.path(), "raced")
            .apply_pending()
            .await
            .unwrap();
        // The new version: 6 more files, applied by both runners at once.
        write_files(dir.path(), round, 3..=8);
        let python = tokio::process::Command::new(support::tools::pgdbm_python())
            .arg("-c")
            .arg(PYTHON_RUNNER)
            .args([
                &t.url(),
                &schema,
                &dir.path().display().to_string(),
                "raced",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        // Start ours later each round (Python takes ~0.4 s to start), so the two meet at
        // different files.
        tokio::time::sleep(Duration::from_millis(100 * round as u64)).await;
        let ours = Migrator::new(&db, dir.path(), "raced")
            .transaction_pooler(pooler)
            .apply_pending()
            .await;
        let py = python.wait_with_output().await.unwrap();
        let py_out = String::from_utf8_lossy(&py.stdout);
        assert!(
            py.status.success(),
            "round {round}: pgdbm (Python) failed: {}{py_out}",
            String::from_utf8_lossy(&py.stderr)
        );
        let ours = ours.unwrap_or_else(|e| panic!("round {round}: ours failed: {e}"));
        // Between them, each of the 6 files was applied exactly once.
        let py_applied: usize = py_out
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("round {round}: unexpected Python output {py_out:?}"));
        assert_eq!(
            ours.applied.len() + py_applied,
            6,
            "round {round}: {py_out}"
        );
        let rows: Vec<(String, i64)> = db
            .fetch_all(
                "SELECT filename, count(*) FROM {{tables.schema_migrations}} WHERE module_name = 'raced' GROUP BY filename ORDER BY filename",
                (),
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 8, "round {round}: {rows:?}");
        assert!(rows.iter().all(|(_, n)| *n == 1), "round {round}: {rows:?}");
        eprintln!(
            "python_interlock (pooler mode {pooler}): round {round}: ours applied {}, Python applied {py_applied}",
            ours.applied.len()
        );
        db.close().await;
    }
}

const PYTHON_PENDING: &str = r#"
import asyncio, sys
from pgdbm import AsyncDatabaseManager, AsyncMigrationManager, DatabaseConfig
url, schema, path, module = sys.argv[1:5]
async def main():
    db = AsyncDatabaseManager(DatabaseConfig(connection_string=url, schema=schema,
                                             min_connections=1, max_connections=2))
    await db.connect()
    try:
        mm = AsyncMigrationManager(db, migrations_path=path, module_name=module)
        print(",".join(m.filename for m in await mm.get_pending_migrations()))
    finally:
        await db.disconnect()
asyncio.run(main())
"#;

async fn python_pending(url: &str, schema: &str, dir: &std::path::Path) -> String {
    let out = tokio::process::Command::new(support::tools::pgdbm_python())
        .arg("-c")
        .arg(PYTHON_PENDING)
        .args([url, schema, &dir.display().to_string(), "rev"])
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "pgdbm (Python) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// pgdbm (Python) reads only the top of the migrations directory, so down files in `down/`
/// are invisible to it; after a revert it sees the reverted files as pending, and applying
/// them again (by either runner) leaves it up to date.
#[tokio::test]
async fn python_ignores_down_files_and_sees_reverted_files_as_pending() {
    let t = TestDatabase::builder()
        .pool_size(0, 1)
        .build()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("down")).unwrap();
    for i in 1..=3 {
        std::fs::write(
            dir.path().join(format!("{i:03}_t{i}.sql")),
            format!("CREATE TABLE {{{{tables.t{i}}}}} (id int);"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join(format!("down/{i:03}_t{i}.down.sql")),
            format!("DROP TABLE {{{{tables.t{i}}}}};"),
        )
        .unwrap();
    }
    let db = Database::connect(
        DatabaseConfig::new(t.url())
            .schema("rev")
            .min_connections(1)
            .max_connections(2),
    )
    .await
    .unwrap();
    let m = Migrator::new(&db, dir.path(), "rev");
    m.apply_pending().await.unwrap();
    assert_eq!(python_pending(&t.url(), "rev", dir.path()).await, "");

    let reverted = m.revert(RevertTarget::Steps(2)).await.unwrap();
    assert_eq!(reverted.reverted.len(), 2);
    assert_eq!(
        python_pending(&t.url(), "rev", dir.path()).await,
        "002_t2.sql,003_t3.sql"
    );
    m.apply_pending().await.unwrap();
    assert_eq!(python_pending(&t.url(), "rev", dir.path()).await, "");
    db.close().await;
}
