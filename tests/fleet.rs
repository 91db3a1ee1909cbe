//! A tenant fleet migrated with care (`Tenants::migrate_fleet`): 200 tenants, a canary of 5
//! with a broken tenant among them stops before any other tenant is touched, and the rerun
//! after the fix resumes the stopped run (the canary tenants that succeeded are not connected
//! to again) and finishes every tenant exactly once.

use std::path::Path;
use std::time::Instant;

use futures_util::StreamExt;
use pgdbm::tenants::FleetOptions;
use pgdbm::testing::TestDatabase;
use pgdbm::{DatabaseConfig, SharedPool, Tenants};

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

    write(
        dir.path(),
        "002_note.sql",
        "ALTER TABLE {{tables.items}} ADD COLUMN note text;\n",
    );
    // t003, the fourth of the canary, already has the column the new file adds.
    t.execute("ALTER TABLE tenant_t003.items ADD COLUMN note text", ())
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
        err.contains("002_note.sql") && err.contains("note"),
        "{err}"
    );
    assert_eq!(report.applied(), 4);
    assert_eq!(report.not_started, names[5..]);
    assert!(!report.is_success());
    // The 195 others were not touched: their history lacks the new file, their table the column.
    assert_eq!(applied_count(&t, "002_note.sql").await, (4, 1));
    let with_column: Option<i64> = t
        .fetch_value(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema LIKE 'tenant\\_%' AND table_name = 'items' AND column_name = 'note'",
            (),
        )
        .await
        .unwrap();
    assert_eq!(with_column, Some(5), "4 migrated and the broken one");

    // Fixed by hand; the rerun resumes: the 4 canary tenants that succeeded are skipped.
    t.execute("ALTER TABLE tenant_t003.items DROP COLUMN note", ())
        .await
        .unwrap();
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
    assert_eq!(applied_count(&t, "002_note.sql").await, (N as i64, 1));
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
    pool.close().await;
}
