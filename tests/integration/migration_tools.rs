//! repair, baseline, revert and the transaction-pooler mode, against the real server.

use std::path::Path;

use pgdbm::migrate::{ReportStatus, RevertTarget};
use pgdbm::{Database, Error, Migrator};
use sqlx::PgConnection;

use crate::common::{TestDb, count};

fn write(dir: &Path, name: &str, content: &str) {
    if let Some(parent) = dir.join(name).parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(dir.join(name), content).unwrap();
}

async fn history(raw: &mut PgConnection, schema: &str) -> Vec<(String, String)> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT filename::text, checksum::text FROM {schema}.schema_migrations ORDER BY id"
    )))
    .fetch_all(raw)
    .await
    .unwrap()
}

async fn tables(raw: &mut PgConnection, schema: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 AND table_name <> 'schema_migrations' ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(raw)
    .await
    .unwrap()
}

fn migration_message(e: &Error) -> String {
    match e {
        Error::Migration(m) => format!("{}: {}", m.file.clone().unwrap_or_default(), m.message),
        other => panic!("expected a migration error, got {other:?}"),
    }
}

#[tokio::test]
async fn repair_accepts_a_changed_checksum_on_purpose_and_only_then() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "001_a.sql",
        "CREATE TABLE {{tables.a}} (id int);",
    );
    write(
        dir.path(),
        "002_b.sql",
        "CREATE TABLE {{tables.b}} (id int);",
    );
    let db = Database::connect(t.config().schema("rep")).await.unwrap();
    let m = Migrator::new(&db, dir.path(), "rep");
    m.apply_pending().await.unwrap();
    let mut raw = t.raw().await;
    let before = history(&mut raw, "rep").await;

    // A comment added to an applied file: the runner refuses, as it should.
    write(
        dir.path(),
        "001_a.sql",
        "-- the users' table\nCREATE TABLE {{tables.a}} (id int);",
    );
    let new_checksum =
        pgdbm::migrate::checksum("-- the users' table\nCREATE TABLE {{tables.a}} (id int);");
    assert!(m.apply_pending().await.is_err());

    // A dry run reports and changes nothing.
    let plan = m.repair_dry_run("001_a.sql").await.unwrap();
    assert!(plan.changed);
    assert_eq!(plan.recorded, before[0].1);
    assert_eq!(plan.current, new_checksum);
    assert_eq!(history(&mut raw, "rep").await, before);

    let done = m.repair("001_a.sql").await.unwrap();
    assert_eq!(
        (done.changed, done.current.as_str()),
        (true, new_checksum.as_str())
    );
    let after = history(&mut raw, "rep").await;
    assert_eq!(after[0], ("001_a.sql".to_string(), new_checksum.clone()));
    assert_eq!(after[1], before[1]);
    assert_eq!(
        m.apply_pending().await.unwrap().status,
        ReportStatus::UpToDate
    );
    assert!(!m.repair("001_a.sql").await.unwrap().changed);

    // Files that are not applied, or do not exist, are errors that change nothing.
    write(
        dir.path(),
        "003_c.sql",
        "CREATE TABLE {{tables.c}} (id int);",
    );
    let e = m.repair("003_c.sql").await.unwrap_err();
    assert!(
        migration_message(&e).contains("is not applied to module `rep`"),
        "{e}"
    );
    let e = m.repair("009_nope.sql").await.unwrap_err();
    assert!(migration_message(&e).contains("no such file"), "{e}");
    assert_eq!(history(&mut raw, "rep").await, after);
    db.close().await;
}

#[tokio::test]
async fn baseline_records_an_existing_databases_files_without_running_them() {
    let t = TestDb::new().await;
    let mut raw = t.raw().await;
    // A database that predates pgdbm: its tables exist, there is no history.
    sqlx::raw_sql(
        "CREATE SCHEMA legacy; CREATE TABLE legacy.a (id int); CREATE TABLE legacy.b (id int);",
    )
    .execute(&mut raw)
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "001_a.sql",
        "CREATE TABLE {{tables.a}} (id int);",
    );
    write(
        dir.path(),
        "002_b.sql",
        "CREATE TABLE {{tables.b}} (id int);",
    );
    write(
        dir.path(),
        "003_c.sql",
        "CREATE TABLE {{tables.c}} (id int);",
    );
    let db = Database::connect(t.config().schema("legacy"))
        .await
        .unwrap();
    let m = Migrator::new(&db, dir.path(), "legacy");

    // Without a baseline, applying fails on the existing table.
    assert!(m.dry_run().await.unwrap().pending.len() == 3);

    let e = m.baseline(Some(7)).await.unwrap_err();
    assert!(
        migration_message(&e).contains("no migration of module `legacy` has version 7; nothing was recorded. The versions are: 001, 002, 003"),
        "{e}"
    );
    let plan = m.baseline_dry_run(Some(2)).await.unwrap();
    assert_eq!(plan.recorded, ["001_a.sql", "002_b.sql"]);
    assert!(plan.dry_run);
    // The dry run did not even create the history table.
    assert_eq!(
        count(&mut raw, "SELECT count(*) FROM pg_tables WHERE schemaname = 'legacy' AND tablename = 'schema_migrations'").await,
        0
    );

    let done = m.baseline(Some(2)).await.unwrap();
    assert_eq!(done.recorded, ["001_a.sql", "002_b.sql"]);
    let rows: Vec<(String, Option<i32>)> = sqlx::query_as(
        "SELECT filename::text, execution_time_ms FROM legacy.schema_migrations ORDER BY id",
    )
    .fetch_all(&mut raw)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("001_a.sql".to_string(), None),
            ("002_b.sql".to_string(), None)
        ]
    );
    // The files after the baseline apply normally.
    let report = m.apply_pending().await.unwrap();
    let applied: Vec<&str> = report.applied.iter().map(|a| a.filename.as_str()).collect();
    assert_eq!(applied, ["003_c.sql"]);
    assert_eq!(tables(&mut raw, "legacy").await, ["a", "b", "c"]);
    let again = m.baseline(None).await.unwrap();
    assert!(again.recorded.is_empty());
    assert_eq!(again.already_applied.len(), 3);
    db.close().await;
}

#[tokio::test]
async fn revert_runs_down_files_newest_first_and_stops_before_a_missing_one() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "001_a.sql",
        "CREATE TABLE {{tables.a}} (id int);",
    );
    write(
        dir.path(),
        "002_b.sql",
        "CREATE TABLE {{tables.b}} (id int);",
    );
    write(
        dir.path(),
        "003_c.sql",
        "CREATE TABLE {{tables.c}} (id int);\nCREATE TABLE {{tables.d}} (id int);",
    );
    write(
        dir.path(),
        "down/002_b.down.sql",
        "DROP TABLE {{tables.b}};",
    );
    write(
        dir.path(),
        "down/003_c.down.sql",
        "DROP TABLE <<tables.d>>;\nDROP TABLE {{tables.c}};",
    );
    let db = Database::connect(t.config().schema("rev")).await.unwrap();
    let m = Migrator::new(&db, dir.path(), "rev");
    m.apply_pending().await.unwrap();
    let mut raw = t.raw().await;
    assert_eq!(tables(&mut raw, "rev").await, ["a", "b", "c", "d"]);

    // Three steps would need 001's down file: nothing runs.
    let e = m.revert(RevertTarget::Steps(3)).await.unwrap_err();
    assert_eq!(
        migration_message(&e),
        "001_a.sql: cannot revert it: there is no down file `down/001_a.down.sql`; nothing was reverted. Write the down file, or revert fewer files (stop above version 001)"
    );
    assert_eq!(tables(&mut raw, "rev").await, ["a", "b", "c", "d"]);
    assert_eq!(history(&mut raw, "rev").await.len(), 3);
    let e = m.revert_dry_run(RevertTarget::To(0)).await.unwrap_err();
    assert!(migration_message(&e).contains("001_a.sql"), "{e}");

    let plan = m.revert_dry_run(RevertTarget::Steps(2)).await.unwrap();
    assert_eq!(plan.would_revert, ["003_c.sql", "002_b.sql"]);
    assert_eq!(tables(&mut raw, "rev").await, ["a", "b", "c", "d"]);

    let one = m.revert(RevertTarget::Steps(1)).await.unwrap();
    assert_eq!(one.reverted.len(), 1);
    assert_eq!(one.reverted[0].down_file, "down/003_c.down.sql");
    assert_eq!(tables(&mut raw, "rev").await, ["a", "b"]);
    let rest = m.revert(RevertTarget::To(1)).await.unwrap();
    let names: Vec<&str> = rest.reverted.iter().map(|r| r.filename.as_str()).collect();
    assert_eq!(names, ["002_b.sql"]);
    assert_eq!(tables(&mut raw, "rev").await, ["a"]);
    let left: Vec<String> = history(&mut raw, "rev")
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(left, ["001_a.sql"]);
    assert!(
        m.revert(RevertTarget::To(1))
            .await
            .unwrap()
            .reverted
            .is_empty()
    );

    // Reverted files are pending again and apply again.
    assert_eq!(m.pending().await.unwrap(), ["002_b.sql", "003_c.sql"]);
    m.apply_pending().await.unwrap();
    assert_eq!(tables(&mut raw, "rev").await, ["a", "b", "c", "d"]);

    // A down file that fails is rolled back with its history row kept.
    write(
        dir.path(),
        "down/003_c.down.sql",
        "DROP TABLE <<tables.d>>;\nDROP TABLE {{tables.no_such}};",
    );
    let e = m.revert(RevertTarget::Steps(1)).await.unwrap_err();
    let Error::Migration(me) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(me.file.as_deref(), Some("down/003_c.down.sql"));
    // The server gives no position for a missing table in DROP: the statement's start.
    assert_eq!(me.position, Some((2, 1)));
    assert_eq!(me.statement.as_deref(), Some("DROP TABLE \"rev\".no_such;"));
    assert!(me.message.contains("does not exist"), "{e}");
    assert_eq!(me.aftermath, pgdbm::error::Aftermath::DownRolledBack);
    assert!(
        e.to_string()
            .contains("rolled back and its history row kept"),
        "{e}"
    );
    assert_eq!(tables(&mut raw, "rev").await, ["a", "b", "c", "d"]);
    assert_eq!(history(&mut raw, "rev").await.len(), 3);
    db.close().await;
}

#[tokio::test]
async fn pooler_mode_applies_per_file_and_refuses_no_transaction_files_up_front() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "001_a.sql",
        "CREATE TABLE {{tables.a}} (id int);",
    );
    // As pgdbm (Python)'s create_migration writes them: its own BEGIN and COMMIT.
    write(
        dir.path(),
        "002_b.sql",
        "BEGIN;\nCREATE TABLE {{tables.b}} (id int);\nCOMMIT;",
    );
    let db = Database::connect(t.config().schema("pool")).await.unwrap();
    let m = Migrator::new(&db, dir.path(), "pool").transaction_pooler(true);
    assert!(m.behind_transaction_pooler());
    let report = m.apply_pending().await.unwrap();
    assert_eq!(report.applied.len(), 2);
    let mut raw = t.raw().await;
    assert_eq!(tables(&mut raw, "pool").await, ["a", "b"]);
    let times: Vec<Option<i32>> =
        sqlx::query_scalar("SELECT execution_time_ms FROM pool.schema_migrations ORDER BY id")
            .fetch_all(&mut raw)
            .await
            .unwrap();
    assert!(
        times.iter().all(|t| t.is_some_and(|ms| ms >= 1)),
        "{times:?}"
    );

    // A no-transaction file pending after a normal one: neither is applied.
    write(
        dir.path(),
        "003_c.sql",
        "CREATE TABLE {{tables.c}} (id int);",
    );
    write(
        dir.path(),
        "004_idx.sql",
        "-- pgdbm:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS c_idx ON {{tables.c}} (id);",
    );
    let e = m.apply_pending().await.unwrap_err();
    let msg = migration_message(&e);
    assert!(msg.starts_with("004_idx.sql: "), "{msg}");
    assert!(msg.contains("Apply it through a direct URL"), "{msg}");
    assert_eq!(tables(&mut raw, "pool").await, ["a", "b"]);
    // Through a direct connection (the mode off) it applies.
    let direct = Migrator::new(&db, dir.path(), "pool").transaction_pooler(false);
    assert_eq!(direct.apply_pending().await.unwrap().applied.len(), 2);

    // A down file marked no-transaction is refused in the mode too, before anything runs.
    write(
        dir.path(),
        "down/004_idx.down.sql",
        "-- pgdbm:no-transaction\nDROP INDEX CONCURRENTLY {{tables.c_idx}};",
    );
    write(
        dir.path(),
        "down/003_c.down.sql",
        "DROP TABLE {{tables.c}};",
    );
    let e = m.revert(RevertTarget::Steps(2)).await.unwrap_err();
    assert!(
        migration_message(&e).starts_with("down/004_idx.down.sql: "),
        "{e}"
    );
    assert_eq!(history(&mut raw, "pool").await.len(), 4);
    // Directly, the revert runs.
    let r = direct.revert(RevertTarget::Steps(2)).await.unwrap();
    assert_eq!(r.reverted.len(), 2);
    assert_eq!(tables(&mut raw, "pool").await, ["a", "b"]);
    // repair and baseline work in the mode.
    let r = m.baseline(None).await.unwrap();
    assert_eq!(r.recorded, ["003_c.sql", "004_idx.sql"]);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_pooler_mode_runners_apply_each_file_once() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    for i in 1..=6 {
        write(
            dir.path(),
            &format!("{i:03}_t{i}.sql"),
            &format!("CREATE TABLE {{{{tables.t{i}}}}} (id int);\nSELECT pg_sleep(0.05);"),
        );
    }
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let config = t.config().schema("race").max_connections(2);
        let dir = dir.path().to_path_buf();
        tasks.push(tokio::spawn(async move {
            let db = Database::connect(config).await.unwrap();
            let r = Migrator::new(&db, &dir, "race")
                .transaction_pooler(true)
                .apply_pending()
                .await;
            db.close().await;
            r.map(|r| r.applied.len())
        }));
    }
    let mut applied = 0;
    for task in tasks {
        applied += task.await.unwrap().unwrap();
    }
    assert_eq!(applied, 6);
    let mut raw = t.raw().await;
    assert_eq!(
        count(
            &mut raw,
            "SELECT count(DISTINCT filename) FROM race.schema_migrations"
        )
        .await,
        6
    );
    assert_eq!(
        count(&mut raw, "SELECT count(*) FROM race.schema_migrations").await,
        6
    );
}
