//! A tenant fleet migrated with care (`Tenants::migrate_fleet`): 200 tenants; lint refuses an
//! unsafe file before any tenant is touched, each distinct set of pending files linted as its
//! run applies it; a canary of 5 with a broken tenant among them stops before any other tenant
//! is touched, and the rerun after the fix resumes the stopped run (the canary tenants that
//! succeeded are not connected to again) and finishes every tenant exactly once.

use std::path::Path;
use std::time::Instant;

use futures_util::StreamExt;
use pgdbm::tenants::FleetOptions;
use pgdbm::testing::TestDatabase;
use pgdbm::{DatabaseConfig, Error, SharedPool, Tenants};

const N: usize = 200;

/// A database of the test's own and a shared pool on it.
async fn shared_pool(max: usize) -> (TestDatabase, SharedPool) {
    let t = TestDatabase::builder()
        .pool_size(0, 1)
        .build()
        .await
        .unwrap();
    let pool = SharedPool::connect(
        DatabaseConfig::new(t.url())
            .min_connections(1)
            .max_connections(max)
            .acquire_timeout(std::time::Duration::from_secs(10)),
    )
    .await
    .unwrap();
    (t, pool)
}

fn write(dir: &Path, name: &str, sql: &str) {
    std::fs::write(dir.join(name), sql).unwrap();
}

/// `N` tenants `t000`…, 8 creates in flight.
async fn create_fleet(tenants: &Tenants) -> Vec<String> {
    let names: Vec<String> = (0..N).map(|i| format!("t{i:03}")).collect();
    let created: Vec<_> = futures_util::stream::iter(&names)
        .map(|n| async move { (n, tenants.create(n).await) })
        .buffer_unordered(8)
        .collect()
        .await;
    for (name, r) in &created {
        assert!(r.is_ok(), "{name}: {r:?}");
    }
    names
}

/// How many tenants have `file` in their history, and the most times any one has it.
async fn applied_count(t: &TestDatabase, file: &str) -> (i64, i64) {
    let mut with = 0;
    let mut most = 0;
    for i in 0..N {
        let n: Option<i64> = t
            .fetch_value(
                &format!(
                    "SELECT count(*) FROM tenant_t{i:03}.schema_migrations WHERE filename = $1"
                ),
                (file,),
            )
            .await
            .unwrap();
        let n = n.unwrap_or(0);
        with += i64::from(n > 0);
        most = most.max(n);
    }
    (with, most)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_stops_the_fleet_and_the_rerun_resumes_it() {
    let (t, pool) = shared_pool(8).await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "001_items.sql",
        "CREATE TABLE {{tables.items}} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text);\n",
    );
    let tenants = Tenants::new(&pool, "fleetsvc", dir.path());
    let started = Instant::now();
    let names = create_fleet(&tenants).await;
    let create_time = started.elapsed();

    // Lint first: an index built without CONCURRENTLY on a table in use is refused before any
    // tenant is touched, and no run is recorded.
    write(
        dir.path(),
        "002_notes.sql",
        "CREATE INDEX items_name ON {{tables.items}} (name);\n",
    );
    let err = tenants
        .migrate_fleet(&FleetOptions::new().canary(5))
        .await
        .unwrap_err();
    let lint = match &err {
        Error::Migration(m) => m.lint().expect("a lint refusal").clone(),
        other => panic!("{other}"),
    };
    assert!(
        lint.denied()
            .all(|f| f.rule == "require-concurrent-index-creation" && f.file == "002_notes.sql"),
        "{lint}"
    );
    assert_eq!(
        lint.denied().count(),
        1,
        "one finding, however many tenants: {lint}"
    );
    assert!(err.to_string().contains("200 tenant(s)"), "{err}");
    assert_eq!(applied_count(&t, "002_notes.sql").await, (0, 0));
    assert!(
        !t.table_exists("pgdbm.tenant_migration_progress")
            .await
            .unwrap()
    );

    write(
        dir.path(),
        "002_notes.sql",
        "CREATE TABLE {{tables.notes}} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text);\n",
    );
    // t003, the fourth of the canary, already has the table the new file creates.
    t.execute("CREATE TABLE tenant_t003.notes (id int)", ())
        .await
        .unwrap();

    let started = Instant::now();
    let mut calls = 0;
    let report = tenants
        .migrate_fleet_with(&FleetOptions::new().canary(5), |p| {
            calls += 1;
            assert_eq!(p.total, N);
        })
        .await
        .unwrap();
    let canary_time = started.elapsed();
    assert!(report.canary_failed);
    assert_eq!(report.canary, 5);
    assert_eq!(calls, 5, "only the canary tenants were reported");
    let reached: Vec<&str> = report.tenants.iter().map(|t| t.tenant.as_str()).collect();
    assert_eq!(reached, ["t000", "t001", "t002", "t003", "t004"]);
    let failed: Vec<&str> = report.failed().map(|t| t.tenant.as_str()).collect();
    assert_eq!(failed, ["t003"]);
    let err = report.tenants[3].outcome.as_ref().unwrap_err().to_string();
    assert!(
        err.contains("002_notes.sql") && err.contains("notes"),
        "{err}"
    );
    assert_eq!(report.applied(), 4);
    assert_eq!(report.not_started, names[5..]);
    assert!(!report.is_success());
    // The 195 others were not touched: their history lacks the new file, their table the column.
    assert_eq!(applied_count(&t, "002_notes.sql").await, (4, 1));
    let with_table: Option<i64> = t
        .fetch_value(
            "SELECT count(*) FROM pg_tables WHERE schemaname LIKE 'tenant\\_%' AND tablename = 'notes'",
            (),
        )
        .await
        .unwrap();
    assert_eq!(with_table, Some(5), "4 migrated and the broken one");

    // The files pending differ now: 002 and 003 on 196 tenants, only 003 on the 4 the canary
    // migrated. Each set is linted as its run applies it: the index on a table 002 creates in
    // the same run is fine, on the 4 tenants where `notes` exists already it is refused.
    write(
        dir.path(),
        "003_notes_body.sql",
        "CREATE INDEX notes_body ON {{tables.notes}} (body);\n",
    );
    let err = tenants
        .migrate_fleet(&FleetOptions::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("lint refused files pending on 4 tenant(s) (`t000` first)"),
        "{err}"
    );
    assert_eq!(applied_count(&t, "003_notes_body.sql").await, (0, 0));
    std::fs::remove_file(dir.path().join("003_notes_body.sql")).unwrap();

    // Fixed by hand; the rerun resumes: the 4 canary tenants that succeeded are skipped.
    t.execute("DROP TABLE tenant_t003.notes", ()).await.unwrap();
    let started = Instant::now();
    let rerun = tenants
        .migrate_fleet(&FleetOptions::new().canary(5))
        .await
        .unwrap();
    let rerun_time = started.elapsed();
    assert!(
        rerun.is_success(),
        "{:?}",
        rerun.failed().collect::<Vec<_>>()
    );
    assert!(!rerun.canary_failed);
    assert_eq!(rerun.tenants.len(), N);
    assert_eq!(rerun.resumed(), 4);
    assert_eq!(rerun.applied(), N - 4);
    assert_eq!(rerun.up_to_date(), 0);
    let resumed: Vec<&str> = rerun
        .tenants
        .iter()
        .filter(|t| t.resumed)
        .map(|t| t.tenant.as_str())
        .collect();
    assert_eq!(resumed, ["t000", "t001", "t002", "t004"]);
    assert_eq!(applied_count(&t, "002_notes.sql").await, (N as i64, 1));
    // A finished run leaves no record: the next run checks every tenant, and finds each up to date.
    let rows: Option<i64> = t
        .fetch_value("SELECT count(*) FROM pgdbm.tenant_migration_progress", ())
        .await
        .unwrap();
    assert_eq!(rows, Some(0));
    let started = Instant::now();
    let again = tenants.migrate_all().await.unwrap();
    let idle_time = started.elapsed();
    assert_eq!(again.len(), N);
    assert!(
        again
            .iter()
            .all(|t| !t.resumed && matches!(&t.outcome, Ok(r) if r.applied.is_empty()))
    );
    eprintln!(
        "fleet: created {N} tenants in {create_time:?}; canary of 5 stopped in {canary_time:?}; rerun of the other {} in {rerun_time:?} (concurrency 4); a run with nothing pending in {idle_time:?}",
        N - 4
    );

    // The idle run skips tenants whose history is exactly the files without connecting to them;
    // a tenant whose history differs (here: a checksum changed by hand) still goes to its own
    // migrator, which refuses the modified file, and only that tenant fails.
    let schema = tenants.schema_for("t150").unwrap();
    t.execute(
        &format!(
            "UPDATE \"{schema}\".schema_migrations SET checksum = 'edited' WHERE filename = '001_items.sql'"
        ),
        (),
    )
    .await
    .unwrap();
    let checked = tenants.migrate_all().await.unwrap();
    let failed: Vec<&str> = checked
        .iter()
        .filter(|t| t.outcome.is_err())
        .map(|t| t.tenant.as_str())
        .collect();
    assert_eq!(failed, ["t150"]);
    let err = checked[150].outcome.as_ref().unwrap_err().to_string();
    assert!(err.contains("001_items.sql"), "{err}");
    pool.close().await;
}
