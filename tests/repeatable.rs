//! Repeatable migrations (`repeatable/*.sql`): applied after the versioned files whenever their
//! text changed, once; a failing one changes nothing; their history rows are invisible to
//! pgdbm (Python) 0.5.0, which the test support installs under `target/test-tools/` when the
//! machine has none (`support/tools.rs`).

#[path = "support/tools.rs"]
mod tools;

use std::path::Path;

use pgdbm::migrate::{FileState, ReportStatus, RevertTarget, checksum};
use pgdbm::testing::TestDatabase;
use pgdbm::{Database, DatabaseConfig, Error, Migrator};

const TABLE: &str = "CREATE TABLE {{tables.t}} (id int PRIMARY KEY, name text NOT NULL);";
const VIEW_V1: &str = "CREATE OR REPLACE VIEW {{tables.v}} AS SELECT id FROM {{tables.t}};";
const VIEW_V2: &str = "CREATE OR REPLACE VIEW {{tables.v}} AS SELECT id, name FROM {{tables.t}};";
const GRANT: &str = "GRANT SELECT ON {{tables.v}} TO PUBLIC;";

fn write(dir: &Path, name: &str, content: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// A migrations directory: one table, a view and a grant on it.
/// A database of its own for one test (each test connects to it in a schema of its own).
async fn scratch() -> TestDatabase {
    TestDatabase::builder()
        .pool_size(0, 1)
        .build()
        .await
        .unwrap()
}

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "001_t.sql", TABLE);
    write(dir.path(), "repeatable/10_view.sql", VIEW_V1);
    write(dir.path(), "repeatable/20_grant.sql", GRANT);
    dir
}

async fn connect(t: &TestDatabase, schema: &str) -> Database {
    Database::connect(
        DatabaseConfig::new(t.url())
            .schema(schema)
            .min_connections(1)
            .max_connections(2),
    )
    .await
    .unwrap()
}

/// (filename, checksum, applied_at as text) of the history rows of `module`.
async fn rows(db: &Database, module: &str) -> Vec<(String, String, String)> {
    db.fetch_all(
        "SELECT filename::text, checksum::text, applied_at::text FROM {{tables.schema_migrations}} \
         WHERE module_name = $1 ORDER BY filename",
        (module,),
    )
    .await
    .unwrap()
}

/// The view's columns, in order.
async fn view_columns(db: &Database) -> Vec<String> {
    let columns: Vec<(String,)> = db
        .fetch_all(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = '{{tables.v}}'::regclass \
         AND attnum > 0 ORDER BY attnum",
            (),
        )
        .await
        .unwrap();
    columns.into_iter().map(|c| c.0).collect()
}

fn names(files: &[pgdbm::migrate::AppliedFile]) -> Vec<&str> {
    files.iter().map(|f| f.filename.as_str()).collect()
}

#[tokio::test]
async fn a_changed_view_is_applied_again_once() {
    let t = scratch().await;
    for (schema, pooler) in [("direct", false), ("pooled", true)] {
        changed_view_cycle(&t, schema, pooler).await;
    }
}

async fn changed_view_cycle(t: &TestDatabase, schema: &str, pooler: bool) {
    let dir = project();
    let db = connect(t, schema).await;
    let m = Migrator::new(&db, dir.path(), "svc").transaction_pooler(pooler);

    // First run: the versioned file, then the repeatable ones in name order.
    let first = m.apply_pending().await.unwrap();
    assert_eq!(first.status, ReportStatus::Applied);
    assert_eq!(names(&first.applied), ["001_t.sql"]);
    assert_eq!(
        names(&first.repeatable),
        ["repeatable/10_view.sql", "repeatable/20_grant.sql"]
    );
    assert_eq!(view_columns(&db).await, ["id"]);
    let before = rows(&db, "svc:repeatable").await;
    assert_eq!(before.len(), 2, "{before:?}");

    // Unchanged: nothing runs.
    let again = m.apply_pending().await.unwrap();
    assert_eq!(again.status, ReportStatus::UpToDate, "{schema}");
    assert!(again.applied.is_empty() && again.repeatable.is_empty());

    // The view changes in its file: a dry run and the status say so, the run applies it, once.
    write(dir.path(), "repeatable/10_view.sql", VIEW_V2);
    let dry = m.dry_run().await.unwrap();
    assert_eq!(dry.status, ReportStatus::DryRun);
    assert!(dry.pending.is_empty());
    assert_eq!(dry.repeatable_pending, ["repeatable/10_view.sql"]);
    let status = m.status().await.unwrap();
    let view = status
        .iter()
        .find(|s| s.filename == "repeatable/10_view.sql")
        .unwrap();
    assert_eq!(
        view.state,
        FileState::Changed {
            recorded: checksum(VIEW_V1),
            current: checksum(VIEW_V2)
        }
    );
    let changed = m.apply_pending().await.unwrap();
    assert_eq!(changed.status, ReportStatus::Applied);
    assert!(changed.applied.is_empty());
    assert_eq!(names(&changed.repeatable), ["repeatable/10_view.sql"]);
    assert_eq!(view_columns(&db).await, ["id", "name"]);
    let twice = m.apply_pending().await.unwrap();
    assert_eq!(twice.status, ReportStatus::UpToDate);
    assert!(twice.repeatable.is_empty());

    // One row per repeatable file; the view's holds the new checksum, the grant's is untouched.
    let after = rows(&db, "svc:repeatable").await;
    assert_eq!(
        after.iter().map(|r| (&*r.0, &*r.1)).collect::<Vec<_>>(),
        [
            ("repeatable/10_view.sql", &*checksum(VIEW_V2)),
            ("repeatable/20_grant.sql", &*checksum(GRANT)),
        ]
    );
    assert_eq!(after[1], before[1]);
    // The module's own rows are the versioned files only, so nothing counts as missing.
    assert_eq!(rows(&db, "svc").await.len(), 1);
    m.verify().await.unwrap();
    assert!(
        m.status()
            .await
            .unwrap()
            .iter()
            .all(|s| matches!(s.state, FileState::Applied { .. }))
    );
    let history = m.history(10).await.unwrap();
    assert_eq!(history.len(), 3);
    assert!(
        history
            .iter()
            .any(|h| h.filename == "repeatable/10_view.sql"
                && h.module_name.as_deref() == Some("svc:repeatable"))
    );
    db.close().await;
}

#[tokio::test]
async fn a_failing_repeatable_file_changes_nothing_and_names_the_file() {
    let t = scratch().await;
    let dir = project();
    let db = connect(&t, "fails").await;
    let m = Migrator::new(&db, dir.path(), "svc");
    m.apply_pending().await.unwrap();
    let before = rows(&db, "svc:repeatable").await;

    // A new versioned file, and a view change whose second statement fails.
    write(
        dir.path(),
        "002_u.sql",
        "CREATE TABLE {{tables.u}} (id int);",
    );
    write(
        dir.path(),
        "repeatable/10_view.sql",
        &format!("{VIEW_V2}\nSELECT no_such_column FROM {{{{tables.t}}}};\n"),
    );
    let Err(Error::Migration(e)) = m.apply_pending().await else {
        panic!("the failing repeatable file must fail the run");
    };
    assert_eq!(e.file.as_deref(), Some("repeatable/10_view.sql"), "{e}");
    assert_eq!(e.aftermath, pgdbm::error::Aftermath::RolledBack);
    assert_eq!(e.position.map(|p| p.0), Some(2), "{e}");
    assert!(e.to_string().contains("repeatable/10_view.sql"), "{e}");
    assert!(e.to_string().contains("no_such_column"), "{e}");
    // The view and its row are as they were; the versioned file before it stays applied.
    assert_eq!(view_columns(&db).await, ["id"]);
    assert_eq!(rows(&db, "svc:repeatable").await, before);
    assert_eq!(rows(&db, "svc").await.len(), 2);

    // Fixed, it runs.
    write(dir.path(), "repeatable/10_view.sql", VIEW_V2);
    let fixed = m.apply_pending().await.unwrap();
    assert_eq!(names(&fixed.repeatable), ["repeatable/10_view.sql"]);
    assert_eq!(view_columns(&db).await, ["id", "name"]);

    // A bad placeholder is found before anything runs, the versioned files included.
    write(
        dir.path(),
        "003_w.sql",
        "CREATE TABLE {{tables.w}} (id int);",
    );
    write(
        dir.path(),
        "repeatable/20_grant.sql",
        "GRANT SELECT ON {{tables.}} TO PUBLIC;",
    );
    let Err(Error::Migration(e)) = m.apply_pending().await else {
        panic!("a bad placeholder must fail the run");
    };
    assert_eq!(e.file.as_deref(), Some("repeatable/20_grant.sql"), "{e}");
    assert_eq!(rows(&db, "svc").await.len(), 2, "003 must not have run");
    db.close().await;
}

#[tokio::test]
async fn the_history_tools_tell_repeatable_rows_from_versioned_ones() {
    let t = scratch().await;
    let dir = project();
    write(
        dir.path(),
        "down/001_t.down.sql",
        "DROP TABLE {{tables.t}} CASCADE;",
    );
    write(
        dir.path(),
        "002_u.sql",
        "CREATE TABLE {{tables.u}} (id int);",
    );
    write(
        dir.path(),
        "down/002_u.down.sql",
        "DROP TABLE {{tables.u}};",
    );
    let db = connect(&t, "tools").await;
    let m = Migrator::new(&db, dir.path(), "svc");
    m.apply_pending().await.unwrap();

    // Reverting everything reverts the versioned files only.
    let plan = m.revert_dry_run(RevertTarget::To(0)).await.unwrap();
    assert_eq!(plan.would_revert, ["002_u.sql", "001_t.sql"]);
    let reverted = m.revert(RevertTarget::Steps(1)).await.unwrap();
    assert_eq!(reverted.reverted[0].filename, "002_u.sql");
    assert_eq!(rows(&db, "svc:repeatable").await.len(), 2);

    // Repair is for versioned files; mark-unapplied takes a repeatable file's path.
    let e = m.repair("repeatable/10_view.sql").await.unwrap_err();
    assert!(e.to_string().contains("needs no repair"), "{e}");
    assert!(m.mark_unapplied("repeatable/10_view.sql").await.unwrap());
    assert!(!m.mark_unapplied("repeatable/10_view.sql").await.unwrap());
    let r = m.apply_pending().await.unwrap();
    assert_eq!(names(&r.applied), ["002_u.sql"]);
    assert_eq!(names(&r.repeatable), ["repeatable/10_view.sql"]);

    // Baseline records versioned files only.
    let b = m.baseline_dry_run(None).await.unwrap();
    assert!(b.recorded.is_empty(), "{b:?}");

    // A removed repeatable file: listed as missing, not an error, forgotten by the next run.
    std::fs::remove_file(dir.path().join("repeatable/20_grant.sql")).unwrap();
    let status = m.status().await.unwrap();
    let grant = status
        .iter()
        .find(|s| s.filename == "repeatable/20_grant.sql")
        .unwrap();
    assert!(
        matches!(grant.state, FileState::Missing { .. }),
        "{grant:?}"
    );
    m.verify().await.unwrap();
    let r = m.apply_pending().await.unwrap();
    assert_eq!(r.status, ReportStatus::UpToDate);
    let left = rows(&db, "svc:repeatable").await;
    assert_eq!(left.len(), 1, "{left:?}");
    // Added back unchanged, it runs again (what it created may have been dropped meanwhile).
    write(dir.path(), "repeatable/20_grant.sql", GRANT);
    let r = m.apply_pending().await.unwrap();
    assert_eq!(names(&r.repeatable), ["repeatable/20_grant.sql"]);
    db.close().await;
}

#[tokio::test]
async fn embedded_repeatable_files_run_too() {
    let t = scratch().await;
    let db = connect(&t, "embedded").await;
    let files = pgdbm::embed_migrations!("tests/fixtures/repeatable_migrations");
    let set = files.to_set().unwrap();
    assert_eq!(set.repeatable().len(), 1);
    let r = Migrator::embedded(&db, files, "emb")
        .apply_pending()
        .await
        .unwrap();
    assert_eq!(names(&r.applied), ["001_items.sql"]);
    assert_eq!(names(&r.repeatable), ["repeatable/10_item_names.sql"]);
    let n: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.item_names}}", ())
        .await
        .unwrap();
    assert_eq!(n, Some(0));
    db.close().await;
}

/// pgdbm (Python) 0.5.0 on the same database and directory: lists pending files, applies, and
/// reads the history. Prints one JSON object.
const PYTHON: &str = r#"
import asyncio, json, sys
from pgdbm import AsyncDatabaseManager, AsyncMigrationManager, DatabaseConfig
url, schema, path, module = sys.argv[1:5]
async def main():
    db = AsyncDatabaseManager(DatabaseConfig(connection_string=url, schema=schema,
                                             min_connections=1, max_connections=2))
    await db.connect()
    try:
        mm = AsyncMigrationManager(db, migrations_path=path, module_name=module)
        pending = [m.filename for m in await mm.get_pending_migrations()]
        r = await mm.apply_pending_migrations()
        history = [h["filename"] for h in await mm.get_migration_history(limit=100)]
        print(json.dumps({"pending": pending, "status": r["status"],
                          "applied": [a["filename"] for a in r["applied"]],
                          "skipped": r["skipped"], "history": sorted(history)}))
    finally:
        await db.disconnect()
asyncio.run(main())
"#;

async fn python(url: &str, schema: &str, dir: &Path) -> serde_json::Value {
    let out = tokio::process::Command::new(tools::pgdbm_python())
        .arg("-c")
        .arg(PYTHON)
        .args([url, schema, &dir.display().to_string(), "svc"])
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "pgdbm (Python) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    })
}

#[tokio::test]
async fn pgdbm_python_ignores_repeatable_files_and_their_rows() {
    let t = scratch().await;
    let dir = project();
    let db = connect(&t, "py").await;
    let m = Migrator::new(&db, dir.path(), "svc");
    m.apply_pending().await.unwrap();
    // A changed view, applied again: the repeatable rows now differ from the first ones.
    write(dir.path(), "repeatable/10_view.sql", VIEW_V2);
    m.apply_pending().await.unwrap();

    let py = python(&t.url(), "py", dir.path()).await;
    assert_eq!(py["pending"], serde_json::json!([]), "{py}");
    assert_eq!(py["status"], "up_to_date", "{py}");
    assert_eq!(py["skipped"], serde_json::json!(["001_t.sql"]), "{py}");
    assert_eq!(py["history"], serde_json::json!(["001_t.sql"]), "{py}");

    // Its own apply still works beside them, and ours is up to date after it.
    write(
        dir.path(),
        "002_u.sql",
        "CREATE TABLE {{tables.u}} (id int);",
    );
    let py = python(&t.url(), "py", dir.path()).await;
    assert_eq!(py["pending"], serde_json::json!(["002_u.sql"]), "{py}");
    assert_eq!(py["status"], "success", "{py}");
    assert_eq!(py["applied"], serde_json::json!(["002_u.sql"]), "{py}");
    let ours = m.apply_pending().await.unwrap();
    assert_eq!(ours.status, ReportStatus::UpToDate);
    assert_eq!(view_columns(&db).await, ["id", "name"]);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeatable_file_waits_for_locks_in_short_retried_steps() {
    use pgdbm::sqlx::{Connection, PgConnection};
    let t = scratch().await;
    let dir = project();
    let db = connect(&t, "waits").await;
    let m = Migrator::new(&db, dir.path(), "svc")
        .ddl_lock_timeout(Some(std::time::Duration::from_millis(300)));
    m.apply_pending().await.unwrap();
    write(dir.path(), "repeatable/10_view.sql", VIEW_V2);

    // A transaction holds the table the view reads.
    let mut holder = PgConnection::connect(&t.url()).await.unwrap();
    let pid: i32 = pgdbm::sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    pgdbm::sqlx::raw_sql("BEGIN; LOCK TABLE waits.t IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();

    // It never ends within two attempts: the run fails naming the file and the holder.
    let Err(Error::Migration(e)) = m.clone().ddl_lock_attempts(2).apply_pending().await else {
        panic!("the run must give up");
    };
    assert_eq!(e.file.as_deref(), Some("repeatable/10_view.sql"), "{e}");
    let wait = e
        .lock_wait()
        .unwrap_or_else(|| panic!("not a lock wait: {e}"));
    assert_eq!(wait.attempts, 2);
    assert!(wait.blockers.iter().any(|b| b.pid == pid), "{e}");

    // It ends after a second: the file is retried and applied.
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        pgdbm::sqlx::raw_sql("COMMIT")
            .execute(&mut holder)
            .await
            .unwrap();
        holder
    });
    let r = m.apply_pending().await.unwrap();
    assert_eq!(names(&r.repeatable), ["repeatable/10_view.sql"]);
    assert_eq!(view_columns(&db).await, ["id", "name"]);
    release.await.unwrap().close().await.unwrap();
    db.close().await;
}
