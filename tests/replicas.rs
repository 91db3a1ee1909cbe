//! Read replicas against a real streaming standby: each test starts its own primary and a
//! replica made with `pg_basebackup -R` (in `/dev/shm`, on spare ports), and stops them after.

mod support;

use std::time::{Duration, Instant};

use pgdbm::{Database, DatabaseConfig, tsql_as};
use support::captured::Captured;
use support::myservice::User;
use support::pg_server::PgServer;

/// Runs blocking server control (pg_ctl, psql) without stalling the runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A primary with database `app`, and a streaming replica of it.
fn primary_and_replica() -> (PgServer, PgServer) {
    let primary = PgServer::start_primary();
    primary.create_database("app");
    let replica = PgServer::start_replica_of(&primary);
    (primary, replica)
}

/// `myservice` on the primary, with the project's migrations and user 1, and `replica` as its
/// replica, checked every 100 ms.
async fn service(primary: &PgServer, replica: &PgServer, config: DatabaseConfig) -> Database {
    let config = config
        .schema("myservice")
        .replica(replica.url("app"))
        .replica_check_interval(Duration::from_millis(100));
    let db = Database::connect(config).await.unwrap();
    support::myservice::migrate(&db).await;
    support::myservice::insert_alice(&db).await;
    blocking(|| replica.wait_replayed(primary));
    wait_until(&db, "the replica is usable", |db| {
        db.replica_status().iter().all(|s| s.usable)
    })
    .await;
    db
}

async fn wait_until(db: &Database, what: &str, done: impl Fn(&Database) -> bool) {
    let started = Instant::now();
    while !done(db) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: not within 20 s; replicas: {:?}",
            db.replica_status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn in_recovery(db: &Database) -> bool {
    db.fetch_value::<bool, _>("SELECT pg_is_in_recovery()", ())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_replica_and_writes_stay_on_the_primary() {
    let (primary, replica) = blocking(primary_and_replica);
    let db = service(&primary, &replica, DatabaseConfig::new(primary.url("app"))).await;

    // The connection that served the read is the standby's.
    let r = db.replica();
    assert!(r.is_replica());
    assert!(in_recovery(&r).await, "a replica read ran on the primary");
    assert!(!in_recovery(&db).await);

    // Templating and tsql! render the same on the replica.
    let email: Option<String> = r
        .fetch_value("SELECT email FROM {{tables.users}} WHERE id = $1", (1_i64,))
        .await
        .unwrap();
    assert_eq!(email.as_deref(), Some("alice@example.com"));
    let u = tsql_as!(
        User,
        "SELECT id, email, name FROM <<tables.users>> WHERE id = $1",
        1_i64
    )
    .fetch_optional(&r)
    .await
    .unwrap()
    .unwrap();
    assert_eq!((u.id, u.email.as_str()), (1, "alice@example.com"));
    assert_eq!(u.name.as_deref(), Some("Alice"));

    // A handle of another schema reads that schema on the replica.
    db.execute(
        "CREATE SCHEMA tenant_b; CREATE TABLE tenant_b.users (id bigint, email text); \
         INSERT INTO tenant_b.users VALUES (7, 'bob@example.com')",
        (),
    )
    .await
    .unwrap();
    blocking(|| replica.wait_replayed(&primary));
    let tenant = db.with_schema(Some("tenant_b")).unwrap().replica();
    assert!(tenant.is_replica());
    let bob: Option<String> = tenant
        .fetch_value("SELECT email FROM {{tables.users}} WHERE id = 7", ())
        .await
        .unwrap();
    assert_eq!(bob.as_deref(), Some("bob@example.com"));

    // A write then a read in one transaction: both on the primary, and the read sees the write.
    let mut tx = db.transaction().await.unwrap();
    let id: i64 = tx
        .execute_and_return_id(
            "INSERT INTO {{tables.users}} (email) VALUES ($1)",
            ("carol@example.com",),
        )
        .await
        .unwrap();
    let seen: Option<String> = tx
        .fetch_value("SELECT email FROM {{tables.users}} WHERE id = $1", (id,))
        .await
        .unwrap();
    assert_eq!(seen.as_deref(), Some("carol@example.com"));
    let in_tx: Option<bool> = tx
        .fetch_value("SELECT pg_is_in_recovery()", ())
        .await
        .unwrap();
    assert_eq!(in_tx, Some(false));
    tx.commit().await.unwrap();

    // A write sent to a replica is refused, not quietly run on the primary.
    let e = r
        .execute(
            "INSERT INTO {{tables.users}} (email) VALUES ($1)",
            ("dave@example.com",),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("25006"), "{e}");
    let n: Option<i64> = db
        .fetch_value(
            "SELECT count(*) FROM {{tables.users}} WHERE email = 'dave@example.com'",
            (),
        )
        .await
        .unwrap();
    assert_eq!(n, Some(0));
    assert!(
        db.replica_status()[0].usable,
        "a refused write is no reason to skip it"
    );

    // health_check: the primary lists its standby; the standby reports its replay delay.
    let health = db.health_check().await.unwrap();
    assert_eq!(health.in_recovery, Some(false));
    assert_eq!(health.replicas.len(), 1, "{:?}", health.replicas);
    assert_eq!(health.replicas[0].state.as_deref(), Some("streaming"));
    assert!(health.replicas[0].bytes_behind.is_some());
    assert_eq!(health.replay_delay, None);
    let standby = db.replica().health_check().await.unwrap();
    assert_eq!(standby.in_recovery, Some(true));
    assert!(standby.replay_delay.is_some());
    db.close().await;
}

fn skipped_warnings(replica: &PgServer) -> usize {
    let port = format!(":{}/", replica.port());
    Captured::global()
        .text()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("replica skipped") && l.contains(&port))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replica_is_skipped_with_one_warning_and_taken_back() {
    Captured::global();
    let (primary, replica) = blocking(primary_and_replica);
    let db = service(&primary, &replica, DatabaseConfig::new(primary.url("app"))).await;
    // Warm the replica's pool, so the stop below breaks connections in use.
    for _ in 0..20 {
        assert!(in_recovery(&db.replica()).await);
    }

    blocking(|| replica.stop("fast"));
    // Every read succeeds, from the moment it stopped: the first ones find its connections
    // dead and run again on the primary; then the replica is skipped.
    let mut on_primary = 0;
    for _ in 0..200 {
        let r = db.replica();
        let email: Option<String> = r
            .fetch_value("SELECT email FROM {{tables.users}} WHERE id = $1", (1_i64,))
            .await
            .unwrap();
        assert_eq!(email.as_deref(), Some("alice@example.com"));
        on_primary += usize::from(!in_recovery(&r).await);
    }
    assert_eq!(
        on_primary, 200,
        "reads served by the primary while it is down"
    );
    let status = &db.replica_status()[0];
    assert!(!status.usable);
    assert!(status.reason.is_some(), "{status:?}");
    assert_eq!(
        skipped_warnings(&replica),
        1,
        "{}",
        Captured::global().text()
    );

    blocking(|| replica.start_again());
    wait_until(&db, "the replica is taken back", |db| {
        db.replica_status()[0].usable
    })
    .await;
    assert!(in_recovery(&db.replica()).await);
    assert_eq!(skipped_warnings(&replica), 1);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_lagging_more_than_the_limit_is_skipped() {
    let (primary, replica) = blocking(primary_and_replica);
    let config =
        DatabaseConfig::new(primary.url("app")).max_replica_lag(Some(Duration::from_millis(500)));
    let db = service(&primary, &replica, config).await;
    assert!(in_recovery(&db.replica()).await);

    // Replay stops while the primary keeps writing: the lag grows past 500 ms.
    blocking(|| replica.psql("app", "SELECT pg_wal_replay_pause()"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    db.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ('lag@example.com')",
        (),
    )
    .await
    .unwrap();
    wait_until(&db, "the lagging replica is skipped", |db| {
        !db.replica_status()[0].usable
    })
    .await;
    let status = db.replica_status().remove(0);
    assert!(
        status
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("max_replica_lag"),
        "{status:?}"
    );
    assert!(
        status.lag.unwrap() > Duration::from_millis(500),
        "{status:?}"
    );
    // Reads now come from the primary, and see the newest row.
    let r = db.replica();
    assert!(!r.is_replica());
    let n: Option<i64> = r
        .fetch_value(
            "SELECT count(*) FROM {{tables.users}} WHERE email = 'lag@example.com'",
            (),
        )
        .await
        .unwrap();
    assert_eq!(n, Some(1));

    blocking(|| replica.psql("app", "SELECT pg_wal_replay_resume()"));
    wait_until(&db, "the caught-up replica is taken back", |db| {
        db.replica_status()[0].usable
    })
    .await;
    assert!(in_recovery(&db.replica()).await);
    db.close().await;
}

#[tokio::test]
async fn replica_urls_come_from_the_environment_and_passwords_stay_hidden() {
    let env = |k: &str| match k {
        "DATABASE_URL" => Some("postgresql://app:s3cret@primary:5432/app".to_string()),
        "DATABASE_REPLICA_URLS" => Some(
            "postgresql://app:r3plica@replica-1:5432/app, postgresql://app@replica-2:5432/app"
                .to_string(),
        ),
        "DB_MAX_REPLICA_LAG_MS" => Some("2500".to_string()),
        _ => None,
    };
    let config = DatabaseConfig::from_lookup(env).unwrap();
    assert_eq!(
        config.replica_targets(),
        [
            "postgresql://app:****@replica-1:5432/app",
            "postgresql://app@replica-2:5432/app"
        ]
    );
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("s3cret") && !debug.contains("r3plica"),
        "{debug}"
    );

    let bad = |k: &str| match k {
        "DATABASE_URL" => Some("postgresql://primary/app".to_string()),
        "DATABASE_REPLICA_URLS" => Some("mysql://replica/app".to_string()),
        _ => None,
    };
    let e = DatabaseConfig::from_lookup(bad).unwrap_err().to_string();
    assert!(e.contains("replica") && e.contains("scheme"), "{e}");
}
