//! The debugging helpers against real server activity: a lock one session holds and another
//! waits for, a `pg_sleep` that runs for seconds, tables of known sizes, EXPLAIN ANALYZE of
//! statements that must leave no change, and the diagnostic report.

use std::time::{Duration, Instant};

use pgdbm::inspect::{ExplainOptions, HealthStatus};
use pgdbm::{Database, Error};
use sqlx::PgConnection;
use tokio::task::JoinHandle;

use crate::common::{TestDb, count};

async fn pid(conn: &mut PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .unwrap()
}

async fn raw_exec(conn: &mut PgConnection, sql: &'static str) {
    sqlx::raw_sql(sql).execute(conn).await.unwrap();
}

/// Polls `probe` every 50 ms for up to 10 s until it gives `Some`.
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Session A holds an ACCESS EXCLUSIVE lock on `locked` in an open transaction; session B's
/// `SELECT` on it waits in a spawned task.
struct HeldLock {
    holder: PgConnection,
    holder_pid: i32,
    waiter: JoinHandle<PgConnection>,
    waiter_pid: i32,
}

async fn hold_lock(t: &TestDb) -> HeldLock {
    let mut holder = t.raw().await;
    let holder_pid = pid(&mut holder).await;
    raw_exec(&mut holder, "BEGIN").await;
    raw_exec(
        &mut holder,
        "LOCK TABLE locked IN ACCESS EXCLUSIVE MODE /* holder */",
    )
    .await;
    let mut waiter = t.raw().await;
    let waiter_pid = pid(&mut waiter).await;
    let waiter = tokio::spawn(async move {
        raw_exec(&mut waiter, "SELECT count(*) FROM locked /* waiter */").await;
        waiter
    });
    HeldLock {
        holder,
        holder_pid,
        waiter,
        waiter_pid,
    }
}

impl HeldLock {
    /// Ends A's transaction and waits for B's statement to finish.
    async fn release(mut self) {
        raw_exec(&mut self.holder, "ROLLBACK").await;
        tokio::time::timeout(Duration::from_secs(10), self.waiter)
            .await
            .expect("the waiter finishes once the lock is released")
            .unwrap();
    }
}

async fn connect(t: &TestDb, schema: Option<&str>) -> Database {
    let mut config = t.config();
    if let Some(s) = schema {
        config = config.schema(s);
    }
    Database::connect(config).await.unwrap()
}

#[tokio::test]
async fn blocking_queries_show_a_real_lock_wait() {
    let t = TestDb::new().await;
    let db = connect(&t, None).await;
    db.execute("CREATE TABLE locked (id int)", ())
        .await
        .unwrap();
    assert!(db.blocking_queries().await.unwrap().is_empty());

    let lock = hold_lock(&t).await;
    let rows = eventually("the waiter to show as blocked", async || {
        let rows = db.blocking_queries().await.unwrap();
        // The lock table and pg_stat_activity are read at different instants: wait until both
        // show the waiter's statement.
        rows.iter()
            .any(|r| r.blocked_pid == lock.waiter_pid && r.blocked_query.contains("/* waiter */"))
            .then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let b = &rows[0];
    assert_eq!(b.blocked_pid, lock.waiter_pid);
    assert_eq!(b.blocking_pid, lock.holder_pid);
    assert_eq!(b.blocked_query, "SELECT count(*) FROM locked /* waiter */");
    assert_eq!(
        b.blocking_query,
        "LOCK TABLE locked IN ACCESS EXCLUSIVE MODE /* holder */"
    );
    assert_eq!(b.blocking_state.as_deref(), Some("idle in transaction"));
    assert_eq!(b.blocked_wait_event_type.as_deref(), Some("Lock"));
    assert_eq!(b.blocked_wait_event.as_deref(), Some("relation"));
    assert_eq!(b.blocked_user.as_deref(), Some("postgres"));
    assert_eq!(b.blocking_user.as_deref(), Some("postgres"));
    assert_eq!(b.database, t.name);
    assert!(b.blocked_duration < Duration::from_secs(10), "{b:?}");
    assert!(b.blocking_transaction_duration.is_some(), "{b:?}");
    // The wait grows while the lock is held.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = db.blocking_queries().await.unwrap();
    assert!(
        later[0].blocked_duration >= Duration::from_millis(300),
        "{later:?}"
    );
    let json = serde_json::to_value(&later[0]).unwrap();
    assert_eq!(json["blocked_pid"], lock.waiter_pid);
    assert!(
        json["blocked_duration_ms"].as_f64().unwrap() >= 300.0,
        "{json}"
    );

    lock.release().await;
    assert!(db.blocking_queries().await.unwrap().is_empty());
    db.close().await;
}

#[tokio::test]
async fn long_running_queries_see_a_real_pg_sleep() {
    let t = TestDb::new().await;
    let db = connect(&t, None).await;
    let mut sleeper = t.raw().await;
    let sleeper_pid = pid(&mut sleeper).await;
    let sleeping = tokio::spawn(async move {
        raw_exec(&mut sleeper, "SELECT pg_sleep(3) /* long one */").await;
    });

    let q = eventually("the pg_sleep to pass 500 ms", async || {
        let rows = db
            .long_running_queries(Duration::from_millis(500))
            .await
            .unwrap();
        rows.into_iter().find(|r| r.pid == sleeper_pid)
    })
    .await;
    assert_eq!(q.query, "SELECT pg_sleep(3) /* long one */");
    assert!(q.duration >= Duration::from_millis(500), "{q:?}");
    assert!(q.duration < Duration::from_secs(4), "{q:?}");
    assert_eq!(q.state, "active");
    assert_eq!(q.wait_event_type.as_deref(), Some("Timeout"));
    assert_eq!(q.wait_event.as_deref(), Some("PgSleep"));
    assert_eq!(q.backend_type.as_deref(), Some("client backend"));
    assert_eq!(q.user.as_deref(), Some("postgres"));
    assert_eq!(q.database, t.name);
    assert!(q.query_start.is_some());

    // Under a threshold it has not reached, it is not listed.
    let rows = db
        .long_running_queries(Duration::from_secs(60))
        .await
        .unwrap();
    assert!(rows.iter().all(|r| r.pid != sleeper_pid), "{rows:?}");
    // With a zero threshold every busy session of the database is listed, but not the backend
    // asking (it would show the inspection's own query) nor idle ones.
    let rows = db.long_running_queries(Duration::ZERO).await.unwrap();
    assert!(rows.iter().any(|r| r.pid == sleeper_pid), "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r.state != "idle" && !r.query.contains("make_interval")),
        "{rows:?}"
    );

    tokio::time::timeout(Duration::from_secs(10), sleeping)
        .await
        .unwrap()
        .unwrap();
    let rows = db
        .long_running_queries(Duration::from_millis(500))
        .await
        .unwrap();
    assert!(rows.iter().all(|r| r.pid != sleeper_pid), "{rows:?}");
    db.close().await;
}

#[tokio::test]
async fn table_sizes_list_this_schemas_tables_largest_first() {
    let t = TestDb::new().await;
    let db = connect(&t, None).await;
    db.execute(
        "CREATE TABLE {{tables.big}} (id int PRIMARY KEY, payload text);
         INSERT INTO {{tables.big}} SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g;
         CREATE TABLE {{tables.small}} (id int);
         INSERT INTO {{tables.small}} SELECT g FROM generate_series(1, 10) g;
         CREATE TABLE {{tables.never_analyzed}} (id int);
         CREATE SCHEMA other;
         CREATE TABLE other.hidden (id int);
         INSERT INTO other.hidden SELECT g FROM generate_series(1, 50000) g;
         ANALYZE {{tables.big}}; ANALYZE {{tables.small}}; ANALYZE other.hidden;",
        (),
    )
    .await
    .unwrap();

    let sizes = db.table_sizes().await.unwrap();
    let names: Vec<&str> = sizes.iter().map(|s| s.table.as_str()).collect();
    // `other.hidden` is larger than `small` but in another schema.
    assert_eq!(names, ["big", "small", "never_analyzed"], "{sizes:#?}");
    let (big, small, never) = (&sizes[0], &sizes[1], &sizes[2]);
    for s in &sizes {
        assert_eq!(s.schema, "public");
        assert_eq!(s.kind, "table");
        assert_eq!(
            s.total_bytes,
            s.table_bytes + s.index_bytes + s.toast_bytes,
            "{s:?}"
        );
    }
    assert!(big.total_bytes >= 20_000 * 100, "{big:?}");
    assert!(big.table_bytes >= 20_000 * 100, "{big:?}");
    assert!(big.index_bytes > 0, "the primary key: {big:?}");
    assert!(small.total_bytes < big.total_bytes);
    assert_eq!(small.index_bytes, 0);
    assert_eq!(big.row_estimate, Some(20_000));
    assert_eq!(small.row_estimate, Some(10));
    assert_eq!(never.row_estimate, None, "never analysed: {never:?}");
    assert_eq!(never.table_bytes, 0);
    assert!(big.last_analyze.is_some(), "{big:?}");
    assert!(never.last_vacuum.is_none() && never.last_analyze.is_none());

    // A handle of schema `other` lists only its table.
    let other = db.with_schema(Some("other")).unwrap();
    let sizes = other.table_sizes().await.unwrap();
    assert_eq!(sizes.len(), 1, "{sizes:?}");
    assert_eq!(
        (sizes[0].schema.as_str(), sizes[0].table.as_str()),
        ("other", "hidden")
    );
    assert_eq!(sizes[0].row_estimate, Some(50_000));

    // A materialized view is listed with its kind.
    db.execute(
        "CREATE MATERIALIZED VIEW {{tables.small_mv}} AS SELECT * FROM {{tables.small}}",
        (),
    )
    .await
    .unwrap();
    let mv = db.table_sizes().await.unwrap();
    let mv = mv.iter().find(|s| s.table == "small_mv").unwrap();
    assert_eq!(mv.kind, "materialized view");
    let json = serde_json::to_value(mv).unwrap();
    assert_eq!(json["table"], "small_mv");
    assert!(json["total_bytes"].as_u64().unwrap() > 0, "{json}");
    db.close().await;
}

const T: &str = "CREATE TABLE {{tables.t}} (id int PRIMARY KEY, v int NOT NULL);
                 INSERT INTO {{tables.t}} VALUES (1, 10), (2, 20);";

async fn v_of(db: &Database, id: i32) -> Option<i32> {
    db.fetch_value("SELECT v FROM {{tables.t}} WHERE id = $1", (id,))
        .await
        .unwrap()
}

#[tokio::test]
async fn explain_analyze_runs_the_statement_and_rolls_it_back() {
    let t = TestDb::new().await;
    let db = connect(&t, Some("app")).await;
    db.execute(T, ()).await.unwrap();
    let analyze = ExplainOptions::default().analyze(true);

    let e = db
        .explain(
            "UPDATE {{tables.t}} SET v = v + 1 WHERE id = $1;",
            (1_i32,),
            analyze.buffers(true),
        )
        .await
        .unwrap();
    assert!(e.analyzed);
    assert_eq!(e.sql, "UPDATE \"app\".t SET v = v + 1 WHERE id = $1");
    assert_eq!(e.node_type(), Some("ModifyTable"));
    assert_eq!(e.root().unwrap()["Operation"], "Update");
    assert!(e.plan[0].get("Execution Time").is_some(), "{}", e.plan);
    assert!(e.execution_time().is_some() && e.planning_time().is_some());
    assert!(e.total_cost().unwrap() > 0.0);
    // The index scan under the update found the one row.
    assert_eq!(e.root().unwrap()["Plans"][0]["Actual Rows"], 1);
    let text = e.to_string();
    assert!(text.starts_with("Update on t  (cost="), "{text}");
    assert!(text.contains("(actual time="), "{text}");
    assert!(text.contains("Execution Time: "), "{text}");
    assert_eq!(v_of(&db, 1).await, Some(10), "the UPDATE was rolled back");

    // DELETE and INSERT leave no change either.
    db.explain("DELETE FROM {{tables.t}} WHERE id = 2", (), analyze)
        .await
        .unwrap();
    let inserted = db
        .explain(
            "INSERT INTO {{tables.t}} (id, v) VALUES ($1, $2)",
            (3_i32, 30_i32),
            analyze,
        )
        .await
        .unwrap();
    assert_eq!(inserted.root().unwrap()["Operation"], "Insert");
    let mut raw = t.raw().await;
    assert_eq!(count(&mut raw, "SELECT count(*) FROM app.t").await, 2);
    assert_eq!(v_of(&db, 2).await, Some(20));

    // A statement that fails while running is an error, and is rolled back too.
    let err = db
        .explain("UPDATE {{tables.t}} SET v = v / 0", (), analyze)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("22012"), "{err}");
    assert_eq!(v_of(&db, 1).await, Some(10));

    // Plain EXPLAIN: a plan, no execution.
    let plain = db
        .explain(
            "SELECT * FROM {{tables.t}} WHERE v > $1",
            (5_i32,),
            ExplainOptions::default(),
        )
        .await
        .unwrap();
    assert!(!plain.analyzed);
    assert_eq!(plain.node_type(), Some("Seq Scan"));
    assert!(
        plain.plan[0].get("Execution Time").is_none(),
        "{}",
        plain.plan
    );
    assert_eq!(plain.execution_time(), None);
    assert_eq!(plain.actual_rows(), None);
    assert!(plain.total_cost().unwrap() > 0.0);
    assert!(plain.estimated_rows().is_some());
    let json = serde_json::to_value(&plain).unwrap();
    assert_eq!(json["plan"][0]["Plan"]["Node Type"], "Seq Scan");
    assert_eq!(json["analyzed"], false);
    db.close().await;
}

#[tokio::test]
async fn explain_refuses_bad_input_without_touching_the_server() {
    let t = TestDb::new().await;
    let db = connect(&t, Some("app")).await;
    db.execute(T, ()).await.unwrap();
    let analyze = ExplainOptions::default().analyze(true);
    let acquired = db.pool_stats().acquired;

    for sql in [
        "SELECT * FROM {{tables.}}",
        "SELECT * FROM {{tables.bad name}}",
    ] {
        let err = db.explain(sql, (), analyze).await.unwrap_err();
        assert!(matches!(err, Error::Template(_)), "{sql}: {err}");
    }

    let refused = async |sql: &str| -> String {
        match db.explain(sql, (), analyze).await.unwrap_err() {
            Error::InvalidInput { operation, message } => {
                assert_eq!(operation, "explain");
                message
            }
            other => panic!("{sql}: {other}"),
        }
    };
    let m = refused("CREATE TABLE {{tables.x}} (id int)").await;
    assert!(
        m.starts_with("explain takes one SELECT, INSERT, UPDATE, DELETE, MERGE, VALUES, WITH or TABLE statement; this one starts with CREATE"),
        "{m}"
    );
    let m = refused("DROP TABLE {{tables.t}}").await;
    assert!(m.contains("this one starts with DROP"), "{m}");
    let m = refused("EXPLAIN SELECT 1").await;
    assert!(m.contains("this one starts with EXPLAIN"), "{m}");
    let m = refused("INSERT INTO {{tables.t}} VALUES (9, 9); DROP TABLE {{tables.t}}").await;
    assert!(
        m.starts_with(
            "explain takes one statement, and this SQL holds more: `DROP` follows the `;`"
        ),
        "{m}"
    );
    let m = refused("SELECT 1; SELECT 2").await;
    assert!(m.contains("`SELECT` follows the `;`"), "{m}");
    for empty in ["", "  ; ", "-- just a comment"] {
        let m = refused(empty).await;
        assert_eq!(
            m,
            "explain needs a statement, and the SQL is empty (or only comments and `;`)"
        );
    }
    let shown = db
        .explain("BEGIN", (), ExplainOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        shown,
        "explain takes one SELECT, INSERT, UPDATE, DELETE, MERGE, VALUES, WITH or TABLE statement; this one starts with BEGIN; other statements have no plan to show"
    );

    // Nothing was sent: no connection was even checked out, and the database is as it was.
    assert_eq!(db.pool_stats().acquired, acquired);
    assert!(!db.table_exists("x").await.unwrap());
    assert!(db.table_exists("t").await.unwrap());
    let mut raw = t.raw().await;
    assert_eq!(count(&mut raw, "SELECT count(*) FROM app.t").await, 2);
    db.close().await;
}

#[tokio::test]
async fn health_check_reports_the_server_and_degrades_on_a_lock_wait() {
    let t = TestDb::new().await;
    let db = connect(&t, None).await;
    db.execute("CREATE TABLE locked (id int)", ())
        .await
        .unwrap();

    let r = db.health_check().await.unwrap();
    assert_eq!(r.status, HealthStatus::Healthy, "{r:#?}");
    assert!(r.is_healthy());
    assert!(r.warnings.is_empty(), "{r:#?}");
    let version = r.server_version.as_deref().unwrap_or_default();
    assert!(version.starts_with("PostgreSQL "), "{r:?}");
    assert!(r.server_version_num.unwrap() >= 150000, "{r:?}");
    assert_eq!(r.in_recovery, Some(false));
    assert_eq!(r.outage, None);
    assert!(r.replicas.is_empty());
    assert_eq!(r.replay_delay, None);
    assert_eq!(r.blocked_queries, 0);
    assert_eq!(r.long_running_queries, 0);
    let latency = r.latency.unwrap();
    assert!(latency > Duration::ZERO && latency < Duration::from_secs(5));
    assert_eq!((r.pool.min_size, r.pool.max_size), (1, 5));
    assert!(r.pool.in_use <= r.pool.size && r.pool.size <= r.pool.max_size);
    assert_eq!(r.pool.idle + r.pool.in_use, r.pool.size, "{:?}", r.pool);
    assert_eq!(r.pool.waiting, 0);
    assert_eq!(
        r.pool_saturation,
        r.pool.in_use as f64 / r.pool.max_size as f64
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["status"], "healthy");
    assert_eq!(json["server_version_num"], r.server_version_num.unwrap());
    assert!(json["latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(json["replicas"], serde_json::json!([]));

    let lock = hold_lock(&t).await;
    let r = eventually("the report to see the lock wait", async || {
        let r = db.health_check().await.unwrap();
        (r.blocked_queries >= 1).then_some(r)
    })
    .await;
    assert_eq!(r.status, HealthStatus::Degraded, "{r:#?}");
    assert_eq!(
        r.warnings,
        ["1 query is blocked by locks (see blocking_queries)"]
    );
    lock.release().await;
    let r = db.health_check().await.unwrap();
    assert_eq!((r.status, r.blocked_queries), (HealthStatus::Healthy, 0));

    db.close().await;
}

#[tokio::test]
async fn health_check_warns_of_a_saturated_pool_and_fails_without_a_server() {
    let t = TestDb::new().await;
    let db = Database::connect(t.config().min_connections(1).max_connections(10))
        .await
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..9 {
        held.push(db.acquire().await.unwrap());
    }
    let r = db.health_check().await.unwrap();
    assert_eq!(r.status, HealthStatus::Degraded, "{r:#?}");
    assert_eq!((r.pool.in_use, r.pool.max_size), (9, 10));
    assert_eq!(r.pool_saturation, 0.9);
    assert_eq!(
        r.warnings,
        ["pool at 90% of max_connections (9 of 10 in use)"]
    );
    drop(held);
    db.close().await;

    // A closed pool is an error, not a report.
    assert!(matches!(db.health_check().await, Err(Error::PoolClosed)));

    // So is a server the pool cannot reach: its session ended, and no new one allowed.
    let db = Database::connect(
        t.config()
            .min_connections(1)
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    assert!(db.health_check().await.unwrap().is_healthy());
    // From the maintenance database: a database cannot disallow connections to itself.
    let mut admin = url::Url::parse(&t.url()).unwrap();
    admin.set_path("/postgres");
    let mut raw = <PgConnection as sqlx::Connection>::connect(admin.as_str())
        .await
        .unwrap();
    let cut = format!(
        "ALTER DATABASE \"{0}\" ALLOW_CONNECTIONS false; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}'",
        t.name
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(cut))
        .execute(&mut raw)
        .await
        .unwrap();
    let err = db.health_check().await.unwrap_err();
    // The server refuses the reconnect outright here; a server that is down would make it wait
    // out acquire_timeout (PoolTimeout with the last connect error).
    assert!(
        matches!(
            err,
            Error::Connect(_)
                | Error::PoolTimeout {
                    unreachable: Some(_),
                    ..
                }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("not currently accepting connections"),
        "{err}"
    );
    let restore = format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS true", t.name);
    sqlx::raw_sql(sqlx::AssertSqlSafe(restore))
        .execute(&mut raw)
        .await
        .unwrap();
    db.close().await;
}
