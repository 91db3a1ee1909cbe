//! The metrics pgdbm records, read back through the Prometheus exporter a service would
//! install. A test binary of its own: the recorder is process-global.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use pgdbm::observe::metric_names as names;
use pgdbm::{Database, Migrator};

#[path = "integration/common.rs"]
#[allow(dead_code)] // shared with the main integration suite
mod common;
use common::TestDb;

fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("install the recorder")
    })
}

/// The value of the series `name` whose labels include every one of `labels`, in the text a
/// Prometheus scrape gets; `None` when no such series is rendered.
fn value(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = recorder().render();
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (set, v) = rest.split_once("} ")?;
        let all = labels
            .iter()
            .all(|(k, val)| set.split(',').any(|kv| kv == format!("{k}=\"{val}\"")));
        all.then(|| v.trim().parse().ok()).flatten()
    })
}

fn get(name: &str, labels: &[(&str, &str)]) -> f64 {
    value(name, labels).unwrap_or(0.0)
}

/// Waits for a gauge (refreshed every `metrics_interval`) to reach `want`.
async fn gauge_reaches(name: &str, pool: &str, want: f64) {
    for _ in 0..100 {
        if value(name, &[("pool", pool)]) == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{name}{{pool={pool}}} never reached {want}; last {:?}",
        value(name, &[("pool", pool)])
    );
}

#[tokio::test]
async fn pool_and_query_metrics_move_as_queries_run_and_time_out() {
    recorder();
    let t = TestDb::new().await;
    let pool = "metrics_pool";
    let db = Database::connect(
        t.config()
            .pool_name(pool)
            .min_connections(1)
            .max_connections(2)
            .acquire_timeout(Duration::from_millis(300))
            .metrics_interval(Duration::from_millis(10)),
    )
    .await
    .unwrap();
    let p = [("pool", pool)];
    let select_ok = [("pool", pool), ("operation", "SELECT"), ("outcome", "ok")];
    let count = |labels: &[(&str, &str)]| get(&format!("{}_count", names::QUERY_DURATION), labels);

    gauge_reaches(names::POOL_MAX_SIZE, pool, 2.0).await;
    gauge_reaches(names::POOL_SIZE, pool, 1.0).await;
    assert!(get(names::CONNECTIONS_OPENED, &p) >= 1.0);

    db.execute("CREATE TABLE {{tables.t}} (id int PRIMARY KEY)", ())
        .await
        .unwrap();
    for i in 0..3 {
        db.execute("INSERT INTO {{tables.t}} VALUES ($1)", (i,))
            .await
            .unwrap();
    }
    for _ in 0..5 {
        let n: Option<i64> = db
            .fetch_value("SELECT count(*) FROM {{tables.t}}", ())
            .await
            .unwrap();
        assert_eq!(n, Some(3));
    }
    // sqlx queries through `&Database` and through a transaction are recorded the same way.
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&db).await.unwrap();
    assert_eq!(one, 1);
    let mut tx = db.transaction().await.unwrap();
    let rows: Vec<i32> = sqlx::query_scalar("SELECT id FROM t ORDER BY id")
        .fetch_all(&mut tx)
        .await
        .unwrap();
    assert_eq!(rows, [0, 1, 2]);
    tx.commit().await.unwrap();

    assert_eq!(count(&select_ok), 7.0);
    assert_eq!(
        count(&[("pool", pool), ("operation", "INSERT"), ("outcome", "ok")]),
        3.0
    );
    assert_eq!(
        count(&[("pool", pool), ("operation", "DDL"), ("outcome", "ok")]),
        1.0
    );

    // A failing statement: duration with outcome=error, and one error of kind `database`.
    let err = db.execute("INSERT INTO {{tables.t}} VALUES (1)", ()).await;
    assert!(err.is_err());
    assert_eq!(
        count(&[
            ("pool", pool),
            ("operation", "INSERT"),
            ("outcome", "error")
        ]),
        1.0
    );
    assert_eq!(
        get(
            names::QUERY_ERRORS,
            &[
                ("pool", pool),
                ("operation", "INSERT"),
                ("error", "database")
            ]
        ),
        1.0
    );
    let sum = get(&format!("{}_sum", names::QUERY_DURATION), &select_ok);
    assert!(sum > 0.0 && sum < 5.0, "{sum}");

    // Hold both connections: the gauges show them in use, the next checkout times out.
    let acquires_before = get(&format!("{}_count", names::POOL_ACQUIRE_WAIT), &p);
    let a = db.acquire().await.unwrap();
    let b = db.acquire().await.unwrap();
    gauge_reaches(names::POOL_IN_USE, pool, 2.0).await;
    gauge_reaches(names::POOL_IDLE, pool, 0.0).await;
    assert_eq!(get(names::POOL_ACQUIRE_TIMEOUTS, &p), 0.0);
    let timed_out = db.fetch_value::<i32, _>("SELECT 1", ()).await;
    assert!(matches!(timed_out, Err(pgdbm::Error::PoolTimeout { .. })));
    assert_eq!(get(names::POOL_ACQUIRE_TIMEOUTS, &p), 1.0);
    assert_eq!(
        get(&format!("{}_count", names::POOL_ACQUIRE_WAIT), &p),
        acquires_before + 2.0
    );

    // One connection given back, one thrown away as broken.
    drop(a);
    b.discard();
    gauge_reaches(names::POOL_IN_USE, pool, 0.0).await;
    gauge_reaches(names::POOL_SIZE, pool, 1.0).await;
    assert_eq!(get(names::CONNECTIONS_BROKEN, &p), 1.0);
    assert_eq!(get(names::CONNECTIONS_CLOSED, &p), 1.0);
    assert_eq!(get(names::CONNECTIONS_OPENED, &p), 2.0);

    db.close().await;
    gauge_reaches(names::POOL_SIZE, pool, 0.0).await;
    assert_eq!(get(names::CONNECTIONS_CLOSED, &p), 2.0);
}

#[tokio::test]
async fn migration_runs_are_counted_per_module() {
    recorder();
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("001_a.sql"),
        "CREATE TABLE {{tables.a}} (id int);",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("002_b.sql"),
        "CREATE TABLE {{tables.b}} (id int);",
    )
    .unwrap();
    let db = Database::connect(t.config().pool_name("metrics_migrations"))
        .await
        .unwrap();
    let module = "metrics_module";
    let runs = |outcome| {
        get(
            names::MIGRATION_RUNS,
            &[("module", module), ("outcome", outcome)],
        )
    };
    let applied = || get(names::MIGRATIONS_APPLIED, &[("module", module)]);

    Migrator::new(&db, dir.path(), module)
        .apply_pending()
        .await
        .unwrap();
    assert_eq!((runs("ok"), applied()), (1.0, 2.0));
    Migrator::new(&db, dir.path(), module)
        .apply_pending()
        .await
        .unwrap();
    assert_eq!((runs("ok"), applied()), (2.0, 2.0));

    std::fs::write(dir.path().join("003_bad.sql"), "CREATE TABLE nope (").unwrap();
    let r = Migrator::new(&db, dir.path(), module).apply_pending().await;
    assert!(r.is_err());
    assert_eq!((runs("ok"), runs("error"), applied()), (2.0, 1.0, 2.0));
    let n = get(
        &format!("{}_count", names::MIGRATION_DURATION),
        &[("module", module)],
    );
    assert_eq!(n, 3.0);
    db.close().await;
}

#[tokio::test]
async fn a_pool_with_metrics_off_records_nothing() {
    recorder();
    let t = TestDb::new().await;
    let db = Database::connect(t.config().pool_name("metrics_off").metrics(false))
        .await
        .unwrap();
    db.fetch_value::<i32, _>("SELECT 1", ()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let text = recorder().render();
    assert!(!text.contains("pool=\"metrics_off\""), "{text}");
    db.close().await;
}
