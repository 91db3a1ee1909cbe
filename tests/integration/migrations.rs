use std::path::Path;
use std::time::Duration;

use pgdbm::migrate::{FileState, ReportStatus};
use pgdbm::{Database, Error, Migrator};
use sqlx::PgConnection;

use crate::common::{TestDb, count};

fn write(dir: &Path, name: &str, content: &str) {
    std::fs::write(dir.join(name), content).unwrap();
}

async fn tables_in(raw: &mut PgConnection, schema: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(raw)
    .await
    .unwrap()
}

#[tokio::test]
async fn applies_in_numeric_order_once_with_history() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "10_c.sql",
        "CREATE TABLE {{tables.c}} (id int REFERENCES {{tables.b}}(id));",
    );
    write(
        dir.path(),
        "2_b.sql",
        "CREATE TABLE <<tables.b>> (id int PRIMARY KEY REFERENCES {{tables.a}}(id));",
    );
    write(
        dir.path(),
        "001_a.sql",
        "CREATE TABLE {{tables.a}} (id int PRIMARY KEY);\nCREATE VIEW {{tables.a_view}} AS SELECT * FROM {{tables.a}};",
    );
    write(dir.path(), ".hidden.sql", "SELECT broken");
    write(dir.path(), "notes.txt", "not a migration");
    let db = Database::connect(t.config().schema("svc")).await.unwrap();
    let m = Migrator::new(&db, dir.path(), "svc");

    let report = m.apply_pending().await.unwrap();
    assert_eq!(report.status, ReportStatus::Applied);
    let names: Vec<&str> = report.applied.iter().map(|a| a.filename.as_str()).collect();
    assert_eq!(names, ["001_a.sql", "2_b.sql", "10_c.sql"]);
    assert_eq!(report.total, 3);

    let again = m.apply_pending().await.unwrap();
    assert_eq!(again.status, ReportStatus::UpToDate);
    assert!(again.applied.is_empty());
    assert_eq!(again.skipped.len(), 3);

    let mut raw = t.raw().await;
    assert_eq!(
        tables_in(&mut raw, "svc").await,
        ["a", "a_view", "b", "c", "schema_migrations"]
    );
    let rows: Vec<(String, String, String, Option<String>, i32)> = sqlx::query_as(
        "SELECT filename::text, checksum::text, module_name::text, applied_by::text, execution_time_ms FROM svc.schema_migrations ORDER BY id",
    )
    .fetch_all(&mut raw)
    .await
    .unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].0, "001_a.sql");
    assert_eq!(rows[0].2, "svc");
    assert_eq!(rows[0].3.as_deref(), Some("postgres"));
    assert!(rows.iter().all(|r| r.1.len() == 64 && r.4 >= 1));

    let history = m.history(2).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].filename, "10_c.sql");
    let status = m.status().await.unwrap();
    assert!(
        status
            .iter()
            .all(|s| matches!(s.state, FileState::Applied { .. }))
    );
}

#[tokio::test]
async fn a_failing_third_file_of_five_leaves_the_first_two_only() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "001_one.sql",
        "CREATE TABLE {{tables.one}} (id int);",
    );
    write(
        dir.path(),
        "002_two.sql",
        "CREATE TABLE {{tables.two}} (id int);",
    );
    write(
        dir.path(),
        "003_three.sql",
        "CREATE TABLE {{tables.three}} (id int);\n\n-- the typo is on line 4\nINSERT INTO {{tables.three}} (id, nosuch) VALUES (1, 2);\n",
    );
    write(
        dir.path(),
        "004_four.sql",
        "CREATE TABLE {{tables.four}} (id int);",
    );
    write(
        dir.path(),
        "005_five.sql",
        "CREATE TABLE {{tables.five}} (id int);",
    );
    let db = Database::connect(t.config().schema("mig")).await.unwrap();
    let err = Migrator::new(&db, dir.path(), "mig")
        .apply_pending()
        .await
        .unwrap_err();
    let Error::Migration(me) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(me.file.as_deref(), Some("003_three.sql"));
    assert_eq!(me.position.map(|p| p.0), Some(4), "{err}");
    assert_eq!(me.position, Some((4, 35)), "{err}");
    assert!(
        me.statement
            .as_deref()
            .unwrap()
            .starts_with("INSERT INTO \"mig\".three"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("column \"nosuch\" of relation \"three\" does not exist"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("003_three.sql` at line 4, column 35"),
        "{err}"
    );

    let mut raw = t.raw().await;
    assert_eq!(
        tables_in(&mut raw, "mig").await,
        ["one", "schema_migrations", "two"]
    );
    assert_eq!(
        count(&mut raw, "SELECT count(*) FROM mig.schema_migrations").await,
        2
    );
}

#[tokio::test]
async fn an_error_without_a_position_still_names_the_statement() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "001_x.sql",
        "CREATE TABLE {{tables.x}} (id int PRIMARY KEY);\nINSERT INTO {{tables.x}} VALUES (1);\nINSERT INTO {{tables.x}} VALUES (1);\n",
    );
    let db = Database::connect(t.config()).await.unwrap();
    let err = Migrator::new(&db, dir.path(), "app")
        .apply_pending()
        .await
        .unwrap_err();
    let Error::Migration(me) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(me.statement.as_deref(), Some("INSERT INTO x VALUES (1);"));
    assert_eq!(me.position, Some((3, 1)));
    assert!(err.to_string().contains("duplicate key"), "{err}");
    let mut raw = t.raw().await;
    assert_eq!(tables_in(&mut raw, "public").await, ["schema_migrations"]);
}

#[tokio::test]
async fn no_transaction_file_runs_create_index_concurrently() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "001_t.sql",
        "CREATE TABLE {{tables.t}} (id int, v text);",
    );
    write(
        dir.path(),
        "002_idx.sql",
        "-- pgdbm:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_id ON {{tables.t}} (id);\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_v ON {{tables.t}} (v);\nCOMMENT ON TABLE {{tables.t}} IS 'indexed; concurrently';\n",
    );
    let db = Database::connect(t.config().schema("nt")).await.unwrap();
    let report = Migrator::new(&db, dir.path(), "nt")
        .apply_pending()
        .await
        .unwrap();
    assert_eq!(report.applied.len(), 2);
    let mut raw = t.raw().await;
    assert_eq!(
        count(
            &mut raw,
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'nt' AND tablename = 't'"
        )
        .await,
        2
    );
    let comment: String = sqlx::query_scalar("SELECT obj_description('nt.t'::regclass)")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(comment, "indexed; concurrently");

    // The same index in a transactional file fails with advice.
    write(
        dir.path(),
        "003_bad.sql",
        "CREATE INDEX CONCURRENTLY t_both ON {{tables.t}} (id, v);",
    );
    let err = Migrator::new(&db, dir.path(), "nt")
        .apply_pending()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("-- pgdbm:no-transaction"), "{err}");
}

#[tokio::test]
async fn modified_and_missing_files_are_refused_and_nothing_is_applied() {
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
    let db = Database::connect(t.config().schema("drift")).await.unwrap();
    let m = Migrator::new(&db, dir.path(), "drift");
    m.apply_pending().await.unwrap();

    // Modified: an error naming the file and both checksums; the new file is not applied.
    write(
        dir.path(),
        "001_a.sql",
        "CREATE TABLE {{tables.a}} (id bigint);",
    );
    write(
        dir.path(),
        "003_c.sql",
        "CREATE TABLE {{tables.c}} (id int);",
    );
    let err = m.apply_pending().await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("001_a.sql") && text.contains("modified"),
        "{text}"
    );
    let Error::Migration(me) = &err else { panic!() };
    assert_eq!(me.file.as_deref(), Some("001_a.sql"));
    let recorded = pgdbm::migrate::checksum("CREATE TABLE {{tables.a}} (id int);");
    let current = pgdbm::migrate::checksum("CREATE TABLE {{tables.a}} (id bigint);");
    assert!(
        text.contains(&recorded) && text.contains(&current),
        "{text}"
    );
    assert!(m.verify().await.is_err());
    let status = m.status().await.unwrap();
    assert!(
        matches!(status[0].state, FileState::Modified { .. }),
        "{status:?}"
    );
    assert_eq!(status[2].state, FileState::Pending);
    let mut raw = t.raw().await;
    assert!(
        !tables_in(&mut raw, "drift")
            .await
            .contains(&"c".to_string())
    );

    // Missing: an error by default, allowed by the option.
    write(
        dir.path(),
        "001_a.sql",
        "CREATE TABLE {{tables.a}} (id int);",
    );
    std::fs::remove_file(dir.path().join("002_b.sql")).unwrap();
    let err = m.apply_pending().await.unwrap_err();
    assert!(
        err.to_string().contains("002_b.sql") && err.to_string().contains("no such file"),
        "{err}"
    );
    assert!(
        !tables_in(&mut raw, "drift")
            .await
            .contains(&"c".to_string())
    );
    let status = m.status().await.unwrap();
    assert!(
        status
            .iter()
            .any(|s| s.filename == "002_b.sql" && matches!(s.state, FileState::Missing { .. }))
    );
    let report = m.clone().allow_missing(true).apply_pending().await.unwrap();
    assert_eq!(report.applied.len(), 1);
    assert!(
        tables_in(&mut raw, "drift")
            .await
            .contains(&"c".to_string())
    );
}

#[tokio::test]
async fn bad_sources_are_errors_before_touching_the_database() {
    let t = TestDb::new().await;
    let db = Database::connect(t.config().schema("src")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "001_a.sql",
        "CREATE TABLE {{tables.a}} (id int);",
    );
    write(dir.path(), "1_b.sql", "CREATE TABLE {{tables.b}} (id int);");
    let err = Migrator::new(&db, dir.path(), "src")
        .apply_pending()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("001_a.sql") && err.to_string().contains("1_b.sql"),
        "{err}"
    );

    std::fs::remove_file(dir.path().join("1_b.sql")).unwrap();
    write(dir.path(), "002_empty.sql", "  \n\n");
    let err = Migrator::new(&db, dir.path(), "src")
        .apply_pending()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("002_empty.sql"), "{err}");

    std::fs::remove_file(dir.path().join("002_empty.sql")).unwrap();
    write(
        dir.path(),
        "002_bad.sql",
        "CREATE TABLE {{tables.}} (id int);",
    );
    let err = Migrator::new(&db, dir.path(), "src")
        .apply_pending()
        .await
        .unwrap_err();
    let Error::Migration(me) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(me.file.as_deref(), Some("002_bad.sql"));
    assert_eq!(me.position, Some((1, 14)));

    let err = Migrator::new(&db, dir.path(), "src")
        .table("bad-name")
        .apply_pending()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Identifier(_)), "{err:?}");

    let err = Migrator::new(&db, dir.path().join("nope"), "src")
        .apply_pending()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");

    // Nothing was created by any of these: the first file was never applied.
    let mut raw = t.raw().await;
    assert_eq!(tables_in(&mut raw, "src").await, ["schema_migrations"]);
    assert_eq!(
        count(&mut raw, "SELECT count(*) FROM src.schema_migrations").await,
        0
    );
}

#[tokio::test]
async fn tools_work_on_a_fresh_database_without_history() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "001_a.sql",
        "CREATE TABLE {{tables.a}} (id int);",
    );
    let db = Database::connect(t.config().schema("fresh")).await.unwrap();
    let m = Migrator::new(&db, dir.path(), "fresh");
    assert_eq!(m.pending().await.unwrap(), ["001_a.sql"]);
    let dry = m.dry_run().await.unwrap();
    assert_eq!(dry.status, ReportStatus::DryRun);
    assert_eq!(dry.pending, ["001_a.sql"]);
    assert_eq!(m.status().await.unwrap()[0].state, FileState::Pending);
    assert!(m.history(10).await.unwrap().is_empty());
    m.verify().await.unwrap();
    assert!(!m.mark_unapplied("001_a.sql").await.unwrap());
    // None of that created anything.
    let mut raw = t.raw().await;
    assert!(tables_in(&mut raw, "fresh").await.is_empty());

    m.apply_pending().await.unwrap();
    assert!(m.mark_unapplied("001_a.sql").await.unwrap());
    assert_eq!(m.pending().await.unwrap(), ["001_a.sql"]);
}

#[tokio::test]
async fn history_written_by_pgdbm_python_is_up_to_date_and_vice_versa() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let content =
        "CREATE TABLE IF NOT EXISTS {{tables.users}} (id SERIAL PRIMARY KEY, email TEXT);\r\n";
    write(dir.path(), "001_users.sql", content);
    let mut raw = t.raw().await;
    // Exactly what pgdbm 0.4 runs: unquoted DDL, then its insert.
    sqlx::raw_sql(
        "CREATE SCHEMA py; CREATE TABLE IF NOT EXISTS py.schema_migrations (id SERIAL PRIMARY KEY, filename VARCHAR(255) NOT NULL, checksum VARCHAR(64) NOT NULL, module_name VARCHAR(100), applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, applied_by VARCHAR(100) DEFAULT CURRENT_USER, execution_time_ms INTEGER, UNIQUE(filename, module_name)); CREATE INDEX IF NOT EXISTS idx_schema_migrations_module ON py.schema_migrations(module_name, filename); CREATE TABLE py.users (id SERIAL PRIMARY KEY, email TEXT);",
    )
    .execute(&mut raw)
    .await
    .unwrap();
    // hashlib.sha256(content.replace("\r\n", "\n").strip().encode()).hexdigest()
    // (computed with Python for this exact content)
    let checksum = "7c1bb0eef737009f5bf43b11f6cc003f67c1916d39f1a03c43d023a503241caf";
    assert_eq!(pgdbm::migrate::checksum(content), checksum);
    sqlx::query("INSERT INTO py.schema_migrations (filename, checksum, module_name, execution_time_ms) VALUES ($1, $2, $3, $4)")
        .bind("001_users.sql")
        .bind(checksum)
        .bind("py")
        .bind(12)
        .execute(&mut raw)
        .await
        .unwrap();
    let db = Database::connect(t.config().schema("py")).await.unwrap();
    let report = Migrator::new(&db, dir.path(), "py")
        .apply_pending()
        .await
        .unwrap();
    assert_eq!(report.status, ReportStatus::UpToDate);

    // The other way: what this runner writes is what pgdbm's queries read.
    write(
        dir.path(),
        "002_posts.sql",
        "CREATE TABLE {{tables.posts}} (id int);",
    );
    Migrator::new(&db, dir.path(), "py")
        .apply_pending()
        .await
        .unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT filename, checksum FROM py.schema_migrations WHERE module_name = $1 OR module_name IS NULL ORDER BY filename",
    )
    .bind("py")
    .fetch_all(&mut raw)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].0, "002_posts.sql");
    assert_eq!(
        rows[1].1,
        pgdbm::migrate::checksum("CREATE TABLE {{tables.posts}} (id int);")
    );
}

#[tokio::test]
async fn a_mixed_case_schema_works() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "001_a.sql",
        "CREATE TABLE {{tables.a}} (id int);",
    );
    let db = Database::connect(t.config().schema("CamelCaseSchema"))
        .await
        .unwrap();
    let m = Migrator::new(&db, dir.path(), "camel");
    m.apply_pending().await.unwrap();
    assert_eq!(
        m.apply_pending().await.unwrap().status,
        ReportStatus::UpToDate
    );
    let mut raw = t.raw().await;
    assert_eq!(
        tables_in(&mut raw, "CamelCaseSchema").await,
        ["a", "schema_migrations"]
    );
}

#[tokio::test]
async fn ten_schemas_migrate_concurrently_with_separate_histories() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    for i in 1..=5 {
        write(
            dir.path(),
            &format!("{i:03}_t{i}.sql"),
            &format!("CREATE TABLE {{{{tables.t{i}}}}} (id int);"),
        );
    }
    let base = Database::connect(t.config().max_connections(12))
        .await
        .unwrap();
    let runs = (0..10).map(|i| {
        let db = base.with_schema(Some(&format!("tenant_{i}"))).unwrap();
        let dir = dir.path().to_path_buf();
        tokio::spawn(async move { Migrator::new(&db, dir, "tenant").apply_pending().await })
    });
    for r in futures_util::future::join_all(runs).await {
        assert_eq!(r.unwrap().unwrap().applied.len(), 5);
    }
    let mut raw = t.raw().await;
    for i in 0..10 {
        assert_eq!(
            count(
                &mut raw,
                &format!("SELECT count(*) FROM tenant_{i}.schema_migrations")
            )
            .await,
            5
        );
        assert_eq!(tables_in(&mut raw, &format!("tenant_{i}")).await.len(), 6);
    }
}

#[tokio::test]
async fn a_lock_held_by_a_dead_runner_does_not_block() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "001_a.sql",
        "CREATE TABLE {{tables.a}} (id int);",
    );
    let db = Database::connect(t.config().schema("locked"))
        .await
        .unwrap();
    // A "stopped runner": a session that took the lock and hangs.
    let mut stuck = t.raw().await;
    let got: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_lock(hashtext('pgdbm_migration'), hashtext('locked.lk'))",
    )
    .fetch_one(&mut stuck)
    .await
    .unwrap();
    assert!(got);
    let stuck_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut stuck)
        .await
        .unwrap();

    // While it lives, a runner waits, then times out naming the holder.
    let m = Migrator::new(&db, dir.path(), "lk").lock_timeout(Duration::from_millis(300));
    let err = m.apply_pending().await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("backend pid {stuck_pid}")),
        "{err}"
    );

    // Once its session is terminated, the next run proceeds.
    let mut admin = t.raw().await;
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(stuck_pid)
        .execute(&mut admin)
        .await
        .unwrap();
    let report = m
        .lock_timeout(Duration::from_secs(10))
        .apply_pending()
        .await
        .unwrap();
    assert_eq!(report.applied.len(), 1);
}

#[tokio::test]
async fn embedded_migrations_apply_the_project_set() {
    let t = TestDb::new().await;
    let db = Database::connect(t.config().schema("myservice"))
        .await
        .unwrap();
    let files = pgdbm::embed_migrations!("./migrations");
    let on_disk = Migrator::new(&db, "./migrations", "myservice")
        .files()
        .unwrap();
    assert_eq!(files.to_set().unwrap(), on_disk);
    let report = Migrator::embedded(&db, files, "myservice")
        .apply_pending()
        .await
        .unwrap();
    assert_eq!(report.applied.len(), on_disk.len());
    // The directory runner sees the embedded run as up to date: same names, same checksums.
    let again = Migrator::new(&db, "./migrations", "myservice")
        .apply_pending()
        .await
        .unwrap();
    assert_eq!(again.status, ReportStatus::UpToDate);
    let mut raw = t.raw().await;
    assert_eq!(
        tables_in(&mut raw, "myservice").await,
        ["posts", "schema_migrations", "users"]
    );
}
