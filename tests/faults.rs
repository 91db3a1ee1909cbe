//! Faults: a server that ends sessions or restarts costs a service no request, on every query
//! path. Each test starts its own PostgreSQL from the installed binaries (in `/dev/shm`, on a
//! spare port) so it can kill, stop and restart it; the shared server is never touched.
//!
//! The figures (requests, failures, longest wait) are printed with `--nocapture`.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgdbm::inspect::HealthStatus;
use pgdbm::{Database, DatabaseConfig, Error, tsql_as};
use serde_json::json;
use support::captured::Captured;
use support::http_load::{Load, Sample, failures, longest};
use support::myservice::User;
use support::pg_server::PgServer;
use support::service::Service;

const CLIENTS: usize = 32;

/// Runs blocking server control (pg_ctl, psql) without stalling the runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The example service on a database `svc` of `server`, with user 1 created.
async fn service_on(server: &PgServer, env: &[(&str, &str)]) -> Service {
    blocking(|| server.create_database("svc"));
    let svc = Service::start(&server.url("svc"), env).await;
    let r = reqwest::Client::new()
        .post(svc.url("/users"))
        .json(&json!({"email": "alice@example.com", "name": "Alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    svc
}

fn report(what: &str, samples: &[Sample]) {
    let failed = failures(samples);
    eprintln!(
        "faults: {what}: {} requests, {} failed, longest {:?}",
        samples.len(),
        failed.len(),
        longest(samples)
    );
}

fn assert_none_failed(what: &str, samples: &[Sample]) {
    report(what, samples);
    let failed = failures(samples);
    assert!(
        failed.is_empty(),
        "{what}: {} of {} requests failed; first: {:?}",
        failed.len(),
        samples.len(),
        failed.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_loses_no_request_when_every_session_is_killed_three_times() {
    let server = PgServer::start();
    let svc = service_on(&server, &[]).await;
    let load = Load::start(svc.url("/users/1"), CLIENTS);
    let mut killed = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        killed.push(blocking(|| server.terminate_backends("svc")));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let samples = load.stop().await;
    eprintln!("faults: sessions killed per round: {killed:?}");
    assert!(
        killed.iter().all(|&n| n > 0),
        "every round killed pooled sessions: {killed:?}"
    );
    assert!(samples.len() > 500, "the load ran: {}", samples.len());
    assert_none_failed("pg_terminate_backend x3", &samples);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_loses_no_request_through_a_fast_restart() {
    let server = PgServer::start();
    let svc = service_on(&server, &[]).await;
    let load = Load::start(svc.url("/users/1"), CLIENTS);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let restart_began = Instant::now();
    let outage = blocking(|| server.restart_fast());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let samples = load.stop().await;
    eprintln!("faults: pg_ctl restart -m fast took {outage:?}");
    assert_none_failed("fast restart", &samples);
    // Requests really waited through the restart...
    let during: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.started >= restart_began && s.started <= restart_began + outage)
        .collect();
    assert!(!during.is_empty(), "requests were made during the restart");
    // ...and each one that waited was answered within the outage plus 1 s.
    let limit = outage + Duration::from_secs(1);
    assert!(
        longest(&samples) <= limit,
        "longest request {:?} > outage {outage:?} + 1 s",
        longest(&samples)
    );
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.started > restart_began + outage + Duration::from_millis(500))
        .collect();
    assert!(after.len() > 100, "requests served after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_longer_than_acquire_timeout_is_503_after_it_then_recovers_by_itself() {
    let server = PgServer::start();
    let svc = service_on(&server, &[("DB_ACQUIRE_TIMEOUT_MS", "2000")]).await;
    let client = reqwest::Client::new();
    let load = Load::start(svc.url("/users/1"), CLIENTS);
    tokio::time::sleep(Duration::from_millis(300)).await;

    blocking(|| server.stop("fast"));
    let down_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    // The readiness probe answers at once during the outage; it does not wait through it.
    let asked = Instant::now();
    let r = client.get(svc.url("/health")).send().await.unwrap();
    let health_wait = asked.elapsed();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["database"], "reconnecting", "{body}");
    assert!(health_wait < Duration::from_millis(500), "{health_wait:?}");

    blocking(|| server.start_again());
    let up_at = Instant::now();
    let healthy_after = loop {
        let r = client.get(svc.url("/health")).send().await.unwrap();
        if r.status() == 200 {
            break up_at.elapsed();
        }
        assert!(up_at.elapsed() < Duration::from_secs(3), "no recovery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let samples = load.stop().await;
    report("server down 3.5 s, acquire_timeout 2 s", &samples);
    eprintln!(
        "faults: /health answered 503 in {health_wait:?} during the outage, 200 {healthy_after:?} after the server was back"
    );
    assert!(healthy_after <= Duration::from_secs(1), "{healthy_after:?}");

    let failed = failures(&samples);
    assert!(!failed.is_empty(), "requests failed during a 3.5 s outage");
    for s in &failed {
        assert_eq!(s.status, Some(503), "{s:?}");
        // Not at once, and not never: after acquire_timeout (plus a retry's slack).
        assert!(
            s.latency >= Duration::from_millis(1900) && s.latency <= Duration::from_millis(4500),
            "a 503 after {:?}",
            s.latency
        );
    }
    let waits: Vec<Duration> = failed.iter().map(|s| s.latency).collect();
    eprintln!(
        "faults: 503s waited between {:?} and {:?}",
        waits.iter().min().unwrap(),
        waits.iter().max().unwrap()
    );
    // Recovered with no restart of the service: everything started after the server came back
    // succeeded.
    let after: Vec<&Sample> = samples.iter().filter(|s| s.started > up_at).collect();
    assert!(after.len() > 100, "{}", after.len());
    assert!(
        after.iter().all(|s| s.status == Some(200)),
        "{:?}",
        after.iter().find(|s| s.status != Some(200))
    );
    assert!(down_at < up_at);
}

/// A connection of our own for `tsql!` queries: `myservice` schema, migrations applied.
async fn service_database(server: &PgServer, config: DatabaseConfig) -> Database {
    let db = Database::connect(config.schema("myservice")).await.unwrap();
    support::myservice::migrate(&db).await;
    support::myservice::insert_alice(&db).await;
    let _ = server;
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tsql_through_database_survives_killed_sessions_and_a_restart() {
    let server = PgServer::start();
    blocking(|| server.create_database("app"));
    let config = DatabaseConfig::new(server.url("app"))
        .min_connections(8)
        .max_connections(16);
    let db = service_database(&server, config).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (db, stop) = (db.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut errors) = (0u64, Vec::new());
                let mut longest = Duration::ZERO;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let started = Instant::now();
                    let r = tsql_as!(
                        User,
                        "SELECT id, email, name FROM <<tables.users>> WHERE id = $1",
                        1_i64
                    )
                    .fetch_optional(&db)
                    .await;
                    longest = longest.max(started.elapsed());
                    match r {
                        Ok(Some(u)) if u.id == 1 && u.email == "alice@example.com" => {
                            assert_eq!(u.name.as_deref(), Some("Alice"));
                            ok += 1
                        }
                        other => errors.push(format!("{other:?}")),
                    }
                }
                (ok, errors, longest)
            })
        })
        .collect();

    let mut killed = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        killed.push(blocking(|| server.terminate_backends("app")));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let outage = blocking(|| server.restart_fast());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    let (mut ok, mut errors, mut longest) = (0, Vec::new(), Duration::ZERO);
    for t in tasks {
        let (o, e, l) = t.await.unwrap();
        ok += o;
        errors.extend(e);
        longest = longest.max(l);
    }
    eprintln!(
        "faults: tsql! through &Database: {} queries, {} failed, longest {longest:?}; killed {killed:?}; restart took {outage:?}",
        ok + errors.len() as u64,
        errors.len()
    );
    assert!(killed.iter().all(|&n| n > 0), "{killed:?}");
    assert!(ok > 1000, "{ok}");
    assert!(
        errors.is_empty(),
        "{} failed, first: {}",
        errors.len(),
        errors[0]
    );
    assert!(longest <= outage + Duration::from_secs(1), "{longest:?}");

    // `acquire()` hands out a live connection after its siblings were killed.
    blocking(|| server.terminate_backends("app"));
    let mut conn = db.acquire().await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
}

/// A transaction that inserted `id` into `t`, whose session the server then ended.
async fn insert_then_get_killed(
    db: &Database,
    server: &PgServer,
    id: i32,
) -> pgdbm::Transaction<'static> {
    let mut tx = db.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES ($1)", (id,))
        .await
        .unwrap();
    let pid: i32 = tx
        .fetch_value("SELECT pg_backend_pid()", ())
        .await
        .unwrap()
        .unwrap();
    blocking(|| server.psql("tx", &format!("SELECT pg_terminate_backend({pid})")));
    tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_session_inside_a_transaction_is_an_error_and_commits_nothing() {
    let server = PgServer::start();
    blocking(|| server.create_database("tx"));
    let db = Database::connect(
        DatabaseConfig::new(server.url("tx"))
            .min_connections(1)
            .max_connections(2),
    )
    .await
    .unwrap();
    db.execute("CREATE TABLE t (id int)", ()).await.unwrap();

    // Killed between two statements: the next statement fails, and so does COMMIT.
    let mut tx = insert_then_get_killed(&db, &server, 1).await;
    let err = tx
        .execute("INSERT INTO t VALUES ($1)", (2,))
        .await
        .unwrap_err();
    match &err {
        Error::TransactionLost(lost) => assert!(!lost.during_commit()),
        other => panic!("expected TransactionLost, got {other:?}"),
    }
    assert!(err.is_connection_lost());
    let msg = err.to_string();
    assert!(
        msg.contains("rolled the transaction back")
            && msg.contains("run the whole transaction again"),
        "{msg}"
    );
    assert!(matches!(
        tx.commit().await.unwrap_err(),
        Error::TransactionLost(_)
    ));

    // Killed just before COMMIT.
    let tx = insert_then_get_killed(&db, &server, 3).await;
    let err = tx.commit().await.unwrap_err();
    match &err {
        Error::TransactionLost(lost) => assert!(lost.during_commit(), "{err}"),
        other => panic!("expected TransactionLost, got {other:?}"),
    }

    // Nothing of either transaction was committed, and the pool carries on.
    let n: Option<i64> = db.fetch_value("SELECT count(*) FROM t", ()).await.unwrap();
    assert_eq!(n, Some(0));
    assert_eq!(
        blocking(|| server.psql("tx", "SELECT count(*) FROM t")),
        "0"
    );
}

fn log_lines_with(needle: &str, port: u16) -> Vec<String> {
    Captured::global()
        .text()
        .lines()
        .filter(|l| l.contains(needle) && l.contains(&format!(":{port}/")))
        .map(str::to_string)
        .collect()
}

/// A server of the test's own with a database `app`, and a pool of at most 4 connections on it.
async fn server_and_pool(min: usize, acquire_timeout: Duration) -> (PgServer, Database) {
    let server = PgServer::start();
    blocking(|| server.create_database("app"));
    let config = DatabaseConfig::new(server.url("app"))
        .min_connections(min)
        .max_connections(4)
        .acquire_timeout(acquire_timeout);
    let db = Database::connect(config).await.unwrap();
    (server, db)
}

// One worker thread: the order in which the waiters record themselves is then the order in which
// the pool's gate woke them. On two, two waiters woken a moment apart could record in either order
// (seen once: [.., 5, 7, 6]), which says nothing about the gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn checkouts_wait_through_an_outage_and_time_out_naming_the_connect_error() {
    Captured::global();
    let (server, db) = server_and_pool(2, Duration::from_secs(1)).await;
    assert_eq!(db.health().await.status, HealthStatus::Healthy);

    blocking(|| server.stop("fast"));
    let started = Instant::now();
    let calls = (0..16).map(|_| db.fetch_value::<i32, _>("SELECT 1", ()));
    let results = futures_util::future::join_all(calls).await;
    let waited = started.elapsed();
    for r in &results {
        match r {
            Err(Error::PoolTimeout {
                unreachable: Some(last),
                ..
            }) => assert!(
                last.contains("refused") || last.contains("shutting down"),
                "{last}"
            ),
            other => panic!("expected a pool timeout naming the connect error, got {other:?}"),
        }
    }
    let msg = results[0].as_ref().unwrap_err().to_string();
    assert!(msg.contains("could not be reached"), "{msg}");
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_millis(2500),
        "{waited:?}"
    );
    let health = db.health().await;
    assert_eq!(health.status, HealthStatus::Reconnecting);
    assert!(health.outage.is_some() && health.error.is_some());

    // Callers waiting when the server returns are served, in the order they came.
    let order = Arc::new(Mutex::new(Vec::new()));
    let waiters: Vec<_> = (0..8)
        .map(|i| {
            let (db, order) = (db.clone(), order.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10 * i)).await;
                let mut conn = db.acquire().await.unwrap();
                order.lock().unwrap().push(i);
                let v: i32 = sqlx::query_scalar("SELECT 1")
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                Some(v)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let restarting = Instant::now();
    blocking(|| server.start_again());
    let start_took = restarting.elapsed();
    for w in waiters {
        assert_eq!(w.await.unwrap(), Some(1));
    }
    let served_after = restarting.elapsed();
    // pg_ctl start returns once the server accepts connections; by then the reconnect loop
    // may already have served the waiters.
    assert!(
        served_after < start_took + Duration::from_secs(1),
        "{served_after:?} (start took {start_took:?})"
    );
    assert_eq!(db.health().await.status, HealthStatus::Healthy);
    let order = order.lock().unwrap().clone();
    eprintln!(
        "faults: waiters all served {served_after:?} after pg_ctl start began (it took {start_took:?}), in order {order:?}"
    );
    assert_eq!(order, (0..8).collect::<Vec<u64>>());

    // One WARN for the outage and one INFO when it ended, not a line per failed call.
    let port = server.port();
    let lost = log_lines_with("lost the database server", port);
    let back = log_lines_with("is back after", port);
    assert_eq!(lost.len(), 1, "{lost:#?}");
    assert!(lost[0].contains("WARN"), "{}", lost[0]);
    assert_eq!(back.len(), 1, "{back:#?}");
    assert!(back[0].contains("INFO"), "{}", back[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reconnect_loop_not_one_per_waiting_caller() {
    let (server, db) = server_and_pool(0, Duration::from_millis(1500)).await;
    blocking(|| server.stop("fast"));
    // The server's port now accepts and drops every connection: each attempt is counted here,
    // which a stopped server's refusals are not.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", server.port()))
        .await
        .unwrap();
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = attempts.clone();
    let accept = tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            drop(socket);
        }
    });
    let calls = (0..64).map(|_| db.fetch_value::<i32, _>("SELECT 1", ()));
    let results = futures_util::future::join_all(calls).await;
    for r in &results {
        assert!(
            matches!(
                r,
                Err(Error::PoolTimeout {
                    unreachable: Some(_),
                    ..
                })
            ),
            "{r:?}"
        );
    }
    let n = attempts.load(std::sync::atomic::Ordering::Relaxed);
    accept.abort();
    eprintln!("faults: 64 callers waiting 1.5 s made {n} connection attempts");
    // The first checkouts (at most the pool size) try once each; then one loop probes with
    // backoff (20 ms doubling to 400 ms: about 8 probes in 1.5 s). One loop per caller would
    // make hundreds.
    assert!((1..=4 + 12).contains(&n), "{n} attempts");
}
