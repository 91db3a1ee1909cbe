use std::time::Duration;

use pgdbm::{Database, Error};

use crate::common::TestDb;

#[tokio::test]
async fn connect_opens_min_connections() {
    let t = TestDb::new().await;
    let db = Database::connect(t.config().min_connections(4).max_connections(6))
        .await
        .unwrap();
    let s = db.pool_stats();
    assert_eq!((s.min_size, s.max_size), (4, 6));
    assert_eq!(s.size, 4);
    assert_eq!(s.idle, 4);
    assert_eq!(s.in_use, 0);
    let mut raw = t.raw().await;
    let backends = crate::common::count(
        &mut raw,
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND application_name = 'app_pool'",
            t.name
        ),
    )
    .await;
    assert_eq!(backends, 4, "the server sees the min connections");
    db.close().await;
}

#[tokio::test]
async fn acquire_times_out_and_is_counted() {
    let t = TestDb::new().await;
    let db = Database::connect(
        t.config()
            .min_connections(1)
            .max_connections(1)
            .acquire_timeout(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    let held = db.acquire().await.unwrap();
    assert_eq!(db.pool_stats().in_use, 1);
    let started = std::time::Instant::now();
    let err = db.fetch_value::<i32, _>("SELECT 1", ()).await.unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(190));
    assert!(
        matches!(err, Error::PoolTimeout { max_size: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("max_connections"), "{err}");
    assert_eq!(db.pool_stats().timeouts, 1);
    drop(held);
    assert_eq!(
        db.fetch_value::<i32, _>("SELECT 1", ()).await.unwrap(),
        Some(1)
    );
}

#[tokio::test]
async fn a_connection_killed_by_the_server_is_replaced() {
    let t = TestDb::new().await;
    let db = Database::connect(t.config().min_connections(2).max_connections(2))
        .await
        .unwrap();
    let pids_before: Vec<i32> = {
        let mut raw = t.raw().await;
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'app_pool'",
        )
        .bind(&t.name)
        .fetch_all(&mut raw)
        .await
        .unwrap();
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'app_pool'",
        )
        .bind(&t.name)
        .fetch_all(&mut raw)
        .await
        .unwrap();
        assert_eq!(killed, vec![true, true]);
        pids
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Every connection in the pool is dead; each query still succeeds.
    for _ in 0..4 {
        let pid: Option<i32> = db.fetch_value("SELECT pg_backend_pid()", ()).await.unwrap();
        assert!(!pids_before.contains(&pid.unwrap()));
    }
    let s = db.pool_stats();
    assert!(s.size <= 2);
}

#[tokio::test]
async fn close_is_idempotent_and_later_queries_fail_cleanly() {
    let t = TestDb::new().await;
    let db = Database::connect(t.config()).await.unwrap();
    db.close().await;
    db.close().await;
    assert!(db.is_closed());
    let err = db.execute("SELECT 1", ()).await.unwrap_err();
    assert!(matches!(err, Error::PoolClosed), "{err:?}");
}

#[tokio::test]
async fn idle_connections_above_min_are_reaped_and_min_is_kept() {
    let t = TestDb::new().await;
    let db = Database::connect(
        t.config()
            .min_connections(1)
            .max_connections(4)
            .idle_timeout(Some(Duration::from_millis(300))),
    )
    .await
    .unwrap();
    let held: Vec<_> = futures_util::future::join_all((0..4).map(|_| db.acquire()))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(db.pool_stats().size, 4);
    drop(held);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(db.pool_stats().size, 1);
}
