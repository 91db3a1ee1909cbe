//! In-process query statistics (pgdbm's monitored manager), on by config.

use std::time::Duration;

use pgdbm::Database;
use pgdbm::observe::Operation;

use crate::common::TestDb;

#[tokio::test]
async fn statistics_count_time_and_keep_recent_and_slow_statements_without_values() {
    let t = TestDb::new().await;
    let db = Database::connect(
        t.config()
            .schema("stats")
            .query_stats(true)
            .query_history(4)
            .slow_query_threshold(Some(Duration::from_millis(60))),
    )
    .await
    .unwrap();
    db.execute(
        "CREATE TABLE {{tables.users}} (id bigserial PRIMARY KEY, email text UNIQUE)",
        (),
    )
    .await
    .unwrap();
    db.reset_query_stats();

    let secret = "alice.secret@example.com";
    let id: i64 = db
        .execute_and_return_id(
            "INSERT INTO {{tables.users}} (email) VALUES ($1)",
            (secret,),
        )
        .await
        .unwrap();
    let dup = db
        .execute(
            "INSERT INTO {{tables.users}} (email) VALUES ($1)",
            (secret,),
        )
        .await;
    assert!(dup.unwrap_err().is_unique_violation());
    db.fetch_value::<String, _>("SELECT pg_sleep(0.08)::text", ())
        .await
        .unwrap();
    // A tenant-style handle on the same pool, and a sqlx query through `&Database`: same stats.
    let other = db.with_schema(Some("stats")).unwrap();
    let email: Option<String> = other
        .fetch_value("SELECT email FROM {{tables.users}} WHERE id = $1", (id,))
        .await
        .unwrap();
    assert_eq!(email.as_deref(), Some(secret));
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM stats.users WHERE id > $1")
        .bind(0_i64)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(n, 1);

    let s = db.query_stats().expect("statistics are on");
    assert_eq!((s.total, s.failed), (5, 1));
    assert!(s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.max, "{s:?}");
    assert!(s.max >= Duration::from_millis(80), "{:?}", s.max);
    assert!(s.mean > Duration::ZERO && s.mean < s.max);
    assert!(s.per_second() > 0.0);

    // The history keeps the last 4, oldest first, with rendered SQL and types instead of values.
    let sqls: Vec<&str> = s.recent.iter().map(|r| &*r.sql).collect();
    assert_eq!(
        sqls,
        [
            "INSERT INTO \"stats\".users (email) VALUES ($1)",
            "SELECT pg_sleep(0.08)::text",
            "SELECT email FROM \"stats\".users WHERE id = $1",
            "SELECT count(*) FROM stats.users WHERE id > $1",
        ]
    );
    let failed = &s.recent[0];
    assert_eq!(failed.operation, Operation::Insert);
    assert_eq!(&*failed.args, ["TEXT"]);
    assert!(failed.rows.is_none());
    assert!(failed.error.as_deref().unwrap().contains("duplicate key"));
    assert_eq!(&*s.recent[2].args, ["INT8"]);
    assert_eq!(s.recent[2].rows, Some(1));
    assert_eq!(&*s.recent[3].args, ["?"]);
    let everything = format!("{s:?}");
    assert!(!everything.contains(secret), "a value leaked: {everything}");

    assert_eq!(s.slow.len(), 1, "{:?}", s.slow);
    assert!(s.slow[0].sql.contains("pg_sleep"));
    assert!(s.slow[0].duration >= Duration::from_millis(80));

    db.reset_query_stats();
    let s = db.query_stats().unwrap();
    assert_eq!(
        (s.total, s.failed, s.recent.len(), s.slow.len()),
        (0, 0, 0, 0)
    );
    assert_eq!(s.max, Duration::ZERO);
    db.close().await;
}

#[tokio::test]
async fn statistics_are_off_by_default_and_cover_transactions() {
    let t = TestDb::new().await;
    let db = Database::connect(t.config()).await.unwrap();
    assert!(db.query_stats().is_none());
    db.reset_query_stats(); // a no-op, not a panic
    db.close().await;

    let db = Database::connect(t.config().query_stats(true))
        .await
        .unwrap();
    db.execute("CREATE TABLE t (id int)", ()).await.unwrap();
    let mut tx = db.transaction().await.unwrap();
    tx.execute_many("INSERT INTO t VALUES ($1)", [(1_i32,), (2,), (3,)])
        .await
        .unwrap();
    let ids: Vec<i32> = sqlx::query_scalar("SELECT id FROM t ORDER BY id")
        .fetch_all(&mut tx)
        .await
        .unwrap();
    assert_eq!(ids, [1, 2, 3]);
    tx.commit().await.unwrap();
    let s = db.query_stats().unwrap();
    // CREATE, three INSERTs, the SELECT; BEGIN and COMMIT are the transaction's, not statements.
    assert_eq!(s.total, 5, "{:?}", s.recent);
    let last = s.recent.last().unwrap();
    assert_eq!((last.operation, last.rows), (Operation::Select, Some(3)));
    db.close().await;
}
