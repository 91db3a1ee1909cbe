//! Migration statements wait for table locks in short steps (`lock_timeout`, retried), so a
//! migration stuck behind a long transaction never stalls the service's queries for longer
//! than the timeout, and a blocker that never ends is named in the error.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pgdbm::error::Aftermath;
use pgdbm::migrate::ReportStatus;
use pgdbm::{Database, Error, Migrator};
use sqlx::PgConnection;

use crate::common::{TestDb, count};

fn write(dir: &Path, name: &str, content: &str) {
    std::fs::write(dir.join(name), content).unwrap();
}

/// A database with `items` (100 rows) migrated by `001_items.sql`, and `second` (a file name
/// and its SQL) written beside it, pending.
async fn with_items(t: &TestDb, dir: &Path, second: (&str, &str)) -> Database {
    write(
        dir,
        "001_items.sql",
        "CREATE TABLE {{tables.items}} (id int PRIMARY KEY, note text);\n\
         INSERT INTO {{tables.items}} SELECT g, NULL FROM generate_series(1, 100) g;",
    );
    let db = Database::connect(t.config()).await.unwrap();
    Migrator::new(&db, dir, "svc")
        .apply_pending()
        .await
        .unwrap();
    write(dir, second.0, second.1);
    db
}

/// The file that ALTERs `items`.
const FLAG: (&str, &str) = (
    "002_flag.sql",
    "ALTER TABLE {{tables.items}} ADD COLUMN flagged boolean;",
);

/// Whether `002_flag.sql` took effect: (its history rows, whether the column exists).
async fn flag_applied(t: &TestDb) -> (i64, i64) {
    let mut raw = t.raw().await;
    let rows = count(
        &mut raw,
        "SELECT count(*) FROM schema_migrations WHERE filename = '002_flag.sql'",
    )
    .await;
    let column = count(
        &mut raw,
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'flagged'",
    )
    .await;
    (rows, column)
}

/// A session that opens a transaction, runs `sql` in it (taking its locks) and keeps it open:
/// for `hold`, or until the test drops it when `hold` is `None`. Returns its backend pid.
async fn holder(
    t: &TestDb,
    app: &str,
    sql: &'static str,
    hold: Option<Duration>,
) -> (i32, tokio::task::JoinHandle<PgConnection>) {
    let mut c = t.raw().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET application_name = '{app}'"
    )))
    .execute(&mut c)
    .await
    .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut c)
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut c).await.unwrap();
    sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
    let task = tokio::spawn(async move {
        match hold {
            Some(d) => {
                tokio::time::sleep(d).await;
                sqlx::raw_sql("COMMIT").execute(&mut c).await.unwrap();
            }
            None => std::future::pending::<()>().await,
        }
        c
    });
    (pid, task)
}

#[tokio::test]
async fn readers_never_wait_longer_than_the_lock_timeout_and_the_migration_retries_through() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let db = with_items(&t, dir.path(), FLAG).await;

    // A report that reads `items` in a transaction open for 6 s: ACCESS SHARE, which the
    // ALTER's ACCESS EXCLUSIVE must wait for.
    let (_, report) = holder(
        &t,
        "long-report",
        "SELECT count(*) FROM items",
        Some(Duration::from_secs(6)),
    )
    .await;

    // The service's readers, each on its own session, timing every query.
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut c = t.raw().await;
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            let mut queries = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let _: i64 = sqlx::query_scalar("SELECT count(*) FROM items")
                    .fetch_one(&mut c)
                    .await
                    .unwrap();
                worst = worst.max(started.elapsed());
                queries += 1;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            (worst, queries)
        }));
    }

    let started = Instant::now();
    let run = Migrator::new(&db, dir.path(), "svc").apply_pending().await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut worst = Duration::ZERO;
    for r in readers {
        let (w, queries) = r.await.unwrap();
        assert!(queries > 10, "a reader ran only {queries} queries");
        worst = worst.max(w);
    }
    report.await.unwrap();

    let run = run.expect("the migration succeeds once the report's transaction ends");
    assert_eq!(run.status, ReportStatus::Applied);
    assert_eq!(run.applied.len(), 1);
    assert!(
        took >= Duration::from_secs(5),
        "the migration could not have run before the holder ended, yet took {took:?}"
    );
    // The default lock timeout is 2 s: readers queue behind the waiting ALTER for at most that
    // long on each attempt, then go on while the migrator pauses.
    assert!(
        worst <= Duration::from_millis(2_500),
        "a reader was blocked for {worst:?}, more than the lock timeout (2 s) + 0.5 s"
    );
    // And they did queue behind it (the measurement sees the waits it bounds).
    assert!(
        worst >= Duration::from_millis(1_000),
        "no reader ever waited behind the ALTER ({worst:?}): the test did not exercise the lock queue"
    );
    assert_eq!(
        flag_applied(&t).await,
        (1, 1),
        "recorded once, column added"
    );
}

#[tokio::test]
async fn a_blocker_that_never_ends_fails_the_run_naming_it_and_nothing_is_applied() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let db = with_items(&t, dir.path(), FLAG).await;
    let (pid, _held) = holder(&t, "stuck-report", "SELECT count(*) FROM items", None).await;

    let err = Migrator::new(&db, dir.path(), "svc")
        .ddl_lock_timeout(Some(Duration::from_millis(400)))
        .ddl_lock_attempts(2)
        .apply_pending()
        .await
        .unwrap_err();
    let Error::Migration(me) = &err else {
        panic!("expected a migration error, got {err:?}")
    };
    assert_eq!(me.file.as_deref(), Some("002_flag.sql"));
    assert_eq!(me.aftermath, Aftermath::RolledBack);
    let wait = me.lock_wait().expect("the error says it was a lock wait");
    assert_eq!(wait.attempts, 2);
    assert_eq!(wait.timeout, Duration::from_millis(400));
    let blocker = wait
        .blockers
        .iter()
        .find(|b| b.pid == pid)
        .unwrap_or_else(|| panic!("the holder (pid {pid}) is not named: {:?}", wait.blockers));
    assert_eq!(blocker.application.as_deref(), Some("stuck-report"));
    assert_eq!(blocker.state.as_deref(), Some("idle in transaction"));
    assert!(
        blocker
            .query
            .as_deref()
            .unwrap()
            .contains("SELECT count(*) FROM items"),
        "{blocker:?}"
    );
    assert!(blocker.transaction_age.is_some());
    let text = err.to_string();
    assert!(
        text.contains(&format!("pg_terminate_backend({pid})")),
        "{text}"
    );
    assert!(text.contains("stuck-report"), "{text}");

    assert_eq!(
        flag_applied(&t).await,
        (0, 0),
        "the file was rolled back and is not recorded"
    );
}

#[tokio::test]
async fn a_concurrent_index_that_timed_out_is_dropped_and_built_again() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let index = (
        "002_note_idx.sql",
        "-- pgdbm:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS items_note_idx ON {{tables.items}} (note);",
    );
    let db = with_items(&t, dir.path(), index).await;
    // A writer in an open transaction: CREATE INDEX CONCURRENTLY waits for it after it has
    // created the (still INVALID) index, so a timed-out attempt leaves that index behind.
    let (_, writer) = holder(
        &t,
        "slow-writer",
        "UPDATE items SET note = 'x' WHERE id = 1",
        Some(Duration::from_millis(1_500)),
    )
    .await;

    let run = Migrator::new(&db, dir.path(), "svc")
        .ddl_lock_timeout(Some(Duration::from_millis(300)))
        .ddl_lock_attempts(10)
        .apply_pending()
        .await
        .expect("the index is built once the writer commits");
    writer.await.unwrap();
    assert_eq!(run.applied.len(), 1);

    let mut raw = t.raw().await;
    let (indexes, valid): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE i.indisvalid) FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname LIKE 'items_note_idx%'",
    )
    .fetch_one(&mut raw)
    .await
    .unwrap();
    assert_eq!(
        (indexes, valid),
        (1, 1),
        "one valid index, no INVALID leftover"
    );
}

#[tokio::test]
async fn in_pooler_mode_each_attempt_is_a_transaction_of_its_own() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let db = with_items(&t, dir.path(), FLAG).await;
    let (_, report) = holder(
        &t,
        "report",
        "SELECT count(*) FROM items",
        Some(Duration::from_millis(1_200)),
    )
    .await;
    let run = Migrator::new(&db, dir.path(), "svc")
        .transaction_pooler(true)
        .ddl_lock_timeout(Some(Duration::from_millis(300)))
        .ddl_lock_attempts(10)
        .apply_pending()
        .await
        .expect("applied after retries");
    report.await.unwrap();
    assert_eq!(run.applied.len(), 1);

    assert_eq!(
        flag_applied(&t).await,
        (1, 1),
        "recorded once, column added"
    );
}
