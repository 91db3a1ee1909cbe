//! Events: LISTEN/NOTIFY on private servers (`tests/support/pg_server.rs`), which the tests
//! restart and whose sessions they end. What they show: notifications arrive in order with their
//! payloads and only on commit; a restart and a `pg_terminate_backend` of the listener's session
//! each give exactly one `Reconnected`, after which the channels are listened to again; two
//! tenants' channels are apart; bad input is an error with nothing sent.

#[allow(dead_code)]
#[path = "support/captured.rs"]
mod captured;
#[allow(dead_code)]
#[path = "support/pg_server.rs"]
mod pg_server;

use std::time::Duration;

use captured::Captured;
use pg_server::PgServer;
use pgdbm::config::PoolerMode;
use pgdbm::events::{Event, Listener, ListenerState, MAX_PAYLOAD_BYTES};
use pgdbm::{Database, DatabaseConfig, Error};

/// Runs blocking server control (pg_ctl, psql) without stalling the runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

async fn connect(server: &PgServer, schema: &str) -> Database {
    let config = DatabaseConfig::new(server.url("postgres"))
        .schema(schema)
        .min_connections(1)
        .max_connections(4);
    Database::connect(config).await.unwrap()
}

/// The next event, within 15 s.
async fn next(listener: &mut Listener) -> Event {
    tokio::time::timeout(Duration::from_secs(15), listener.recv())
        .await
        .expect("an event within 15 s")
        .expect("an event, not an error")
}

fn payload(e: &Event) -> &str {
    match e {
        Event::Notification { payload, .. } => payload,
        other => panic!("expected a notification, got {other:?}"),
    }
}

/// Nothing more arrives within `wait`.
async fn quiet(listener: &mut Listener, wait: Duration) {
    tokio::time::sleep(wait).await;
    if let Some(e) = listener.try_recv() {
        panic!("expected nothing more, got {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_arrive_in_order_with_payloads_and_only_on_commit() {
    let server = PgServer::start();
    let db = connect(&server, "svc").await;
    let mut listener = db.listener().await.unwrap();
    listener.listen("jobs_{{schema}}").await.unwrap();
    assert_eq!(listener.status().channels, ["jobs_svc"]);

    for i in 0..100 {
        db.notify("jobs_{{schema}}", &format!("job {i}"))
            .await
            .unwrap();
    }
    for i in 0..100 {
        let e = next(&mut listener).await;
        let Event::Notification { channel, pid, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(channel, "jobs_svc");
        assert!(*pid > 0);
        assert_eq!(payload(&e), format!("job {i}"));
    }

    // Rolled back: nothing. Committed: sent at commit, in order, after the rows are visible.
    let mut tx = db.transaction().await.unwrap();
    tx.notify("jobs_{{schema}}", "rolled back").await.unwrap();
    tx.rollback().await.unwrap();
    let mut tx = db.transaction().await.unwrap();
    tx.notify("jobs_{{schema}}", "first").await.unwrap();
    tx.notify("jobs_{{schema}}", "second").await.unwrap();
    quiet(&mut listener, Duration::from_millis(300)).await;
    tx.commit().await.unwrap();
    assert_eq!(payload(&next(&mut listener).await), "first");
    assert_eq!(payload(&next(&mut listener).await), "second");

    // The longest payload PostgreSQL takes goes through; one byte more is refused before sending.
    let longest = "x".repeat(MAX_PAYLOAD_BYTES);
    db.notify("jobs_{{schema}}", &longest).await.unwrap();
    assert_eq!(payload(&next(&mut listener).await), longest);
    let e = db
        .notify("jobs_{{schema}}", &"x".repeat(MAX_PAYLOAD_BYTES + 1))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput { .. }), "{e:?}");
    assert!(e.to_string().contains("at most 7999"), "{e}");
    let mut tx = db.transaction().await.unwrap();
    let e = tx
        .notify("jobs_{{schema}}", &"y".repeat(9000))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput { .. }), "{e:?}");
    tx.commit().await.unwrap();

    // Bad channel names: clear errors, nothing sent, nothing listened to.
    for bad in [
        "jobs-1",
        "1jobs",
        "jobs {{schema}}",
        "{{tables.jobs}}",
        "jobs_{{schem}}",
    ] {
        let e = db.notify(bad, "x").await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::Identifier(_) | Error::Template(_) | Error::InvalidInput { .. }
            ),
            "{bad}: {e:?}"
        );
        let e = listener.listen(bad).await.unwrap_err();
        assert!(!e.to_string().is_empty(), "{bad}");
    }
    let e = listener.listen("jobs-1").await.unwrap_err().to_string();
    assert!(e.contains("invalid channel name `jobs-1`"), "{e}");
    assert_eq!(listener.status().channels, ["jobs_svc"]);
    quiet(&mut listener, Duration::from_millis(300)).await;

    // Unlisten: nothing more on that channel.
    listener.unlisten("jobs_{{schema}}").await.unwrap();
    db.notify("jobs_{{schema}}", "unheard").await.unwrap();
    quiet(&mut listener, Duration::from_millis(300)).await;
    let status = listener.status();
    assert_eq!(status.notifications, 103);
    assert_eq!(status.backlog, 0);
    db.close().await;
    assert!(matches!(listener.recv().await, Err(Error::PoolClosed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_and_a_terminated_session_each_give_exactly_one_reconnected() {
    let log = Captured::global();
    let server = PgServer::start();
    let db = connect(&server, "svc").await;
    let mut listener = db.listener().await.unwrap();
    listener.listen("jobs").await.unwrap();
    db.notify("jobs", "before").await.unwrap();
    assert_eq!(payload(&next(&mut listener).await), "before");
    let pid = listener.status().backend_pid.expect("a server pid");

    // The listener's session is ended by the server.
    let ended =
        blocking(|| server.psql("postgres", &format!("SELECT pg_terminate_backend({pid})")));
    assert_eq!(ended, "t");
    let e = next(&mut listener).await;
    assert!(matches!(e, Event::Reconnected { .. }), "{e:?}");
    assert_ne!(listener.status().backend_pid, Some(pid));
    db.notify("jobs", "after the kill").await.unwrap();
    assert_eq!(payload(&next(&mut listener).await), "after the kill");

    // The server restarts.
    let took = blocking(|| server.restart_fast());
    let e = next(&mut listener).await;
    let Event::Reconnected { after } = e else {
        panic!("{e:?}")
    };
    eprintln!("listen: restart took {took:?}; the listener was back after {after:?}");
    db.notify("jobs", "after the restart").await.unwrap();
    assert_eq!(payload(&next(&mut listener).await), "after the restart");
    quiet(&mut listener, Duration::from_millis(500)).await;

    let status = listener.status();
    assert_eq!(status.state, ListenerState::Connected);
    assert_eq!(status.reconnects, 2);
    assert_eq!(status.channels, ["jobs"]);
    let report = db.health_check().await.unwrap();
    assert_eq!(report.listeners.len(), 1, "{report:?}");
    assert_eq!(report.listeners[0].reconnects, 2);
    assert_eq!(report.listeners[0].state, ListenerState::Connected);

    // One WARN and one INFO per outage, for this server.
    let port = format!(":{}", server.port());
    let text = log.text();
    let lines = |what: &str| {
        text.lines()
            .filter(|l| l.contains(what) && l.contains(&port))
            .count()
    };
    assert_eq!(lines("a listener lost its session"), 2, "{text}");
    assert_eq!(lines("a listener is back after"), 2, "{text}");

    // While the server is down, health says the listener is reconnecting.
    blocking(|| server.stop("fast"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while listener.status().state != ListenerState::Reconnecting {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            listener.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(listener.status().reconnecting_for.is_some());
    blocking(|| server.start_again());
    assert!(matches!(
        next(&mut listener).await,
        Event::Reconnected { .. }
    ));
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_channels_are_apart() {
    let server = PgServer::start();
    let db = connect(&server, "acme").await;
    let other = db.with_schema(Some("globex")).unwrap();
    let mut acme = db.listener().await.unwrap();
    let mut globex = other.listener().await.unwrap();
    acme.listen("jobs_{{schema}}").await.unwrap();
    globex.listen("jobs_{{schema}}").await.unwrap();
    assert_eq!(globex.status().channels, ["jobs_globex"]);

    db.notify("jobs_{{schema}}", "for acme").await.unwrap();
    other.notify("jobs_{{schema}}", "for globex").await.unwrap();
    let mut tx = other.transaction().await.unwrap();
    tx.notify("jobs_{{schema}}", "for globex, in a transaction")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(payload(&next(&mut acme).await), "for acme");
    assert_eq!(payload(&next(&mut globex).await), "for globex");
    assert_eq!(
        payload(&next(&mut globex).await),
        "for globex, in a transaction"
    );
    quiet(&mut acme, Duration::from_millis(300)).await;
    quiet(&mut globex, Duration::from_millis(100)).await;
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_transaction_pooler_a_listener_needs_the_session_url() {
    let server = PgServer::start();
    // The pooler mode only changes how statements are sent; PostgreSQL itself stands in for
    // PgBouncer here (tests/pgbouncer.rs runs the real one).
    let pooled = || {
        DatabaseConfig::new(server.url("postgres"))
            .pgbouncer(PoolerMode::Transaction)
            .schema("svc")
            .min_connections(1)
    };
    let db = Database::connect(pooled()).await.unwrap();
    let e = db.listener().await.unwrap_err();
    assert!(
        matches!(&e, Error::Config { field, .. } if field == "session_url"),
        "{e:?}"
    );
    assert!(e.to_string().contains("DB_SESSION_URL"), "{e}");
    db.close().await;

    let direct = server.url("postgres").replacen(
        "postgresql://postgres@",
        "postgresql://postgres:s3cret@",
        1,
    );
    let config = pooled().session_url(direct);
    assert!(!format!("{config:?}").contains("s3cret"));
    assert!(config.get_session_url().unwrap().contains("****"));
    let db = Database::connect(config).await.unwrap();
    let mut listener = db.listener().await.unwrap();
    listener.listen("jobs_{{schema}}").await.unwrap();
    db.notify("jobs_{{schema}}", "through the pooler")
        .await
        .unwrap();
    assert_eq!(payload(&next(&mut listener).await), "through the pooler");
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_session_is_found_by_the_ping_and_replaced() {
    let server = PgServer::start();
    let config = DatabaseConfig::new(server.url("postgres"))
        .schema("svc")
        .min_connections(1)
        .liveness_check_after(Some(Duration::from_millis(500)))
        .liveness_timeout(Duration::from_millis(500));
    let db = Database::connect(config).await.unwrap();
    let mut listener = db.listener().await.unwrap();
    listener.listen("jobs").await.unwrap();
    let pid = listener.status().backend_pid.unwrap();
    // The listener's server process stops answering (as behind a partition or on a frozen
    // host), though its socket stays open.
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let started = std::time::Instant::now();
    let e = next(&mut listener).await;
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status();
    assert!(matches!(e, Event::Reconnected { .. }), "{e:?}");
    eprintln!(
        "listen: a silent session was replaced after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    db.notify("jobs", "heard again").await.unwrap();
    assert_eq!(payload(&next(&mut listener).await), "heard again");
    db.close().await;
}

#[test]
fn the_session_url_comes_from_the_environment_and_serde_masked() {
    let env = |k: &str| match k {
        "DATABASE_URL" => Some("postgresql://app@pgbouncer:6432/app".to_string()),
        "DB_PGBOUNCER" => Some("transaction".to_string()),
        "DB_SESSION_URL" => Some("postgresql://app:hunter2@postgres:5432/app".to_string()),
        _ => None,
    };
    let config = DatabaseConfig::from_lookup(env).unwrap();
    assert_eq!(
        config.get_session_url().as_deref(),
        Some("postgresql://app:****@postgres:5432/app")
    );
    assert!(!format!("{config:?}").contains("hunter2"));
    let config: DatabaseConfig = serde_json::from_str(
        r#"{"url": "postgresql://app@pgbouncer:6432/app", "pgbouncer": "transaction",
            "session_url": "postgresql://app:hunter2@postgres:5432/app"}"#,
    )
    .unwrap();
    assert!(config.get_session_url().unwrap().contains("****"));
    let e = DatabaseConfig::new("postgresql://app@pgbouncer:6432/app")
        .session_url("mysql://nope")
        .validate()
        .unwrap_err();
    assert!(
        matches!(&e, Error::Config { field, .. } if field == "session_url"),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_the_listener_follows_the_host_list() {
    // Two servers in one host list; the first goes away for good, as a failed primary does.
    let (first, second) = blocking(|| (PgServer::start(), PgServer::start()));
    let list = format!(
        "postgresql://postgres@127.0.0.1:{},127.0.0.1:{}/postgres",
        first.port(),
        second.port()
    );
    let db = Database::connect(DatabaseConfig::new(list).min_connections(1))
        .await
        .unwrap();
    let mut listener = db.listener().await.unwrap();
    listener.listen("jobs").await.unwrap();
    let on = listener.status().server.unwrap();
    assert!(on.ends_with(&format!(":{}", first.port())), "{on}");
    let t = std::time::Instant::now();
    blocking(|| first.stop("immediate"));
    let e = next(&mut listener).await;
    eprintln!(
        "listen: on the second host {:?} after stopping the first",
        t.elapsed()
    );
    assert!(matches!(e, Event::Reconnected { .. }), "{e:?}");
    let on = listener.status().server.unwrap();
    assert!(on.ends_with(&format!(":{}", second.port())), "{on}");
    // The pool follows the list too: the notification goes through the second server (a
    // pooled connection to the first one may fail a statement first: outcome unknown).
    let mut tries = 0;
    while let Err(e) = db.notify("jobs", "on the second server").await {
        tries += 1;
        assert!(tries < 5, "{e}");
    }
    assert_eq!(payload(&next(&mut listener).await), "on the second server");
    db.close().await;
}
