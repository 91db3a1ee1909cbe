//! End to end: the example binaries run as child processes on a free port, against a database of
//! each test's own, spoken to over HTTP (the service) or through the queue (the worker).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use pgdbm::testing::TestDatabase;
use serde_json::{Value, json};
use support::service::{Service, example};

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn start_service(db: &TestDatabase) -> Service {
    Service::start(&db.url(), &[]).await
}

#[tokio::test]
async fn every_route_and_status() {
    let db = TestDatabase::new().await.unwrap();
    let svc = start_service(&db).await;
    let c = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", svc.base);

    let r = c
        .post(url("/users"))
        .json(&json!({"email": "alice@example.com", "name": "Alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created, json!({"id": 1, "email": "alice@example.com"}));
    // The row is really in the database, in the service's schema.
    let row: Option<(String, Option<String>)> = db
        .fetch_optional("SELECT email, name FROM myservice.users WHERE id = 1", ())
        .await
        .unwrap();
    assert_eq!(
        row,
        Some(("alice@example.com".into(), Some("Alice".into())))
    );

    let r = c
        .post(url("/users"))
        .json(&json!({"email": "alice@example.com", "name": "Again"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    for body in [
        json!({"email": "bob@example.com"}),
        json!({"name": "No Email"}),
        json!({"email": 42, "name": "x"}),
        json!({"email": "not-an-email", "name": "x"}),
    ] {
        let r = c.post(url("/users")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 422, "{body}");
        let v: Value = r.json().await.unwrap();
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
    }
    let r = c
        .post(url("/users"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);

    let r = c.get(url("/users/1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let user: Value = r.json().await.unwrap();
    assert_eq!(
        user,
        json!({"id": 1, "email": "alice@example.com", "name": "Alice"})
    );
    let r = c.get(url("/users/999")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"detail": "User not found"})
    );
    let r = c.get(url("/users/abc")).send().await.unwrap();
    assert_eq!(r.status(), 422);

    let r = c.get(url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // What Prometheus scrapes: the pool's gauges and the query series of the requests above.
    let r = c.get(url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let series = |prefix: &str| -> Vec<&str> {
        text.lines()
            .filter(|l| l.starts_with(prefix) && !l.starts_with('#'))
            .collect()
    };
    let pool = format!("pool=\"{}\"", db.name());
    for gauge in [
        "pgdbm_pool_size{",
        "pgdbm_pool_max_size{",
        "pgdbm_pool_in_use{",
    ] {
        let found = series(gauge);
        assert!(
            found.iter().any(|l| l.contains(&pool)),
            "{gauge} for {pool} missing:\n{text}"
        );
    }
    assert!(
        series("pgdbm_pool_max_size{")
            .iter()
            .any(|l| l.ends_with(" 20")),
        "{text}"
    );
    // One INSERT succeeded (the 201), one failed (the 409); the GETs were SELECTs.
    let count_of = |op: &str, outcome: &str| -> f64 {
        series("pgdbm_query_duration_seconds_count{")
            .iter()
            .find(|l| {
                l.contains(&format!("operation=\"{op}\""))
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(count_of("INSERT", "ok"), 1.0, "{text}");
    assert_eq!(count_of("INSERT", "error"), 1.0, "{text}");
    assert!(count_of("SELECT", "ok") >= 3.0, "{text}");
    assert!(
        text.contains("pgdbm_query_errors_total{") && text.contains("error=\"database\""),
        "{text}"
    );
    assert!(
        text.contains("pgdbm_migration_runs_total{module=\"myservice\",outcome=\"ok\"} 1"),
        "{text}"
    );

    let count: Option<i64> = db
        .fetch_value("SELECT count(*) FROM myservice.users", ())
        .await
        .unwrap();
    assert_eq!(count, Some(1), "failed requests wrote nothing");
}

#[tokio::test]
async fn health_is_503_while_the_database_does_not_answer() {
    let db = TestDatabase::new().await.unwrap();
    let svc = start_service(&db).await;
    let c = reqwest::Client::new();
    let name = db.name().to_string();
    let admin = pgdbm::testing::test_server()
        .await
        .unwrap()
        .admin_url
        .clone();
    let mut a = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap();
    let sql = |s: String| sqlx::raw_sql(sqlx::AssertSqlSafe(s));
    sql(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"))
        .execute(&mut a)
        .await
        .unwrap();
    sql(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    ))
    .execute(&mut a)
    .await
    .unwrap();
    let r = c.get(format!("{}/health", svc.base)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    sql(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"))
        .execute(&mut a)
        .await
        .unwrap();
    let r = c.get(format!("{}/health", svc.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn sigterm_finishes_requests_in_flight_and_exits_0() {
    let db = TestDatabase::new().await.unwrap();
    let mut svc = start_service(&db).await;
    let c = reqwest::Client::new();
    let slow = {
        let url = format!("{}/debug/sleep/1500", svc.base);
        let c = c.clone();
        tokio::spawn(async move { c.get(url).send().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&svc.child, "-TERM");
    let r = slow
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"slept_ms": 1500}));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = svc.child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    assert!(c.get(format!("{}/ping", svc.base)).send().await.is_err());
}

#[tokio::test]
async fn workers_do_every_job_exactly_once_even_when_one_is_killed() {
    let db = TestDatabase::builder()
        .migrations(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/worker_migrations"
        ))
        .module("worker")
        .schema("worker")
        .build()
        .await
        .unwrap();
    let jobs = (0..2000).map(|i| {
        let payload = match i % 100 {
            0 => format!("fail-{i}"),
            1 => format!("flaky-{i}"),
            _ => format!("ok-{i}"),
        };
        (payload,)
    });
    assert_eq!(db.copy_in("jobs", &["payload"], jobs).await.unwrap(), 2000);

    let spawn = |id: usize| {
        Command::new(example("background_worker"))
            .env("DATABASE_URL", db.url())
            .env("WORKER_ID", format!("w{id}"))
            .env("CONCURRENCY", "2")
            .env("JOB_DELAY_MS", "2")
            .env("EXIT_WHEN_IDLE", "1")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    };
    let mut workers: Vec<Child> = (0..4).map(spawn).collect();
    // Kill one worker with SIGKILL while it is busy.
    let started = Instant::now();
    loop {
        let done = db.count_rows_where("jobs", "status", "done").await.unwrap();
        if done >= 300 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&workers[0], "-KILL");
    let killed = workers.remove(0);
    let _ = { killed }.wait();
    for mut w in workers {
        let status = w.wait().unwrap();
        assert!(status.success(), "worker exit status {status:?}");
    }

    assert_eq!(
        db.count_rows_where("jobs", "status", "queued")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        db.count_rows_where("jobs", "status", "done").await.unwrap(),
        1980
    );
    assert_eq!(
        db.count_rows_where("jobs", "status", "parked")
            .await
            .unwrap(),
        20
    );
    // One result per done job, none for parked ones (job_id is the key: no job twice).
    assert_eq!(db.count_rows("job_results").await.unwrap(), 1980);
    let wrong: Option<i64> = db
        .fetch_value(
            "SELECT count(*) FROM {{tables.jobs}} j LEFT JOIN {{tables.job_results}} r ON r.job_id = j.id \
             WHERE (j.status = 'done') <> (r.job_id IS NOT NULL)",
            (),
        )
        .await
        .unwrap();
    assert_eq!(wrong, Some(0));
    // Failing jobs were tried MAX_ATTEMPTS times, flaky ones twice.
    let parked_attempts: Vec<(i32,)> = db
        .fetch_all(
            "SELECT DISTINCT attempts FROM {{tables.jobs}} WHERE status = 'parked'",
            (),
        )
        .await
        .unwrap();
    assert_eq!(parked_attempts, vec![(3,)]);
    let flaky: Vec<(i32,)> = db
        .fetch_all(
            "SELECT DISTINCT attempts FROM {{tables.jobs}} WHERE payload LIKE 'flaky-%'",
            (),
        )
        .await
        .unwrap();
    assert_eq!(flaky, vec![(2,)]);
    let results: Option<i64> = db
        .fetch_value(
            "SELECT count(*) FROM {{tables.job_results}} r JOIN {{tables.jobs}} j ON j.id = r.job_id WHERE r.result = upper(j.payload)",
            (),
        )
        .await
        .unwrap();
    assert_eq!(results, Some(1980));
}

#[tokio::test]
async fn a_worker_stops_cleanly_on_sigterm() {
    let db = TestDatabase::new().await.unwrap();
    let mut w = Command::new(example("background_worker"))
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it has migrated (the jobs table exists), then ask it to stop.
    let started = Instant::now();
    while !db.table_exists("worker.jobs").await.unwrap() {
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(&w, "-TERM");
    let status = w.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// The worker woken by NOTIFY (`WAKE=listen`, the fallback poll set to a minute so that only
/// notifications and reconnections wake it): 2,000 jobs enqueued in batches while 4 workers
/// run, one worker SIGKILLed and the server restarted in the middle. Every job is done exactly
/// once, as with polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_workers_do_every_job_once_through_a_kill_and_a_restart() {
    use pgdbm::{Database, DatabaseConfig, Migrator};
    use support::pg_server::PgServer;

    let server = tokio::task::block_in_place(|| {
        let server = PgServer::start();
        server.create_database("svc");
        server
    });
    let db = Database::connect(
        DatabaseConfig::new(server.url("svc"))
            .schema("worker")
            .min_connections(1),
    )
    .await
    .unwrap();
    Migrator::new(
        &db,
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/worker_migrations"),
        "worker",
    )
    .apply_pending()
    .await
    .unwrap();
    let spawn = |id: usize| {
        Command::new(example("background_worker"))
            .env("DATABASE_URL", server.url("svc"))
            .env("WORKER_ID", format!("w{id}"))
            .env("CONCURRENCY", "2")
            .env("JOB_DELAY_MS", "2")
            .env("WAKE", "listen")
            .env("WAKE_FALLBACK_MS", "60000")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    };
    let mut workers: Vec<Child> = (0..4).map(spawn).collect();
    let count = |status: &'static str| {
        let db = db.clone();
        async move {
            db.fetch_value::<i64, _>(
                "SELECT count(*) FROM {{tables.jobs}} WHERE status = $1",
                (status,),
            )
            .await
            .unwrap()
            .unwrap()
        }
    };
    let wait_done = |at_least: i64| {
        let count = &count;
        async move {
            let started = Instant::now();
            while count("done").await + count("parked").await < at_least {
                assert!(started.elapsed() < Duration::from_secs(60), "no progress");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    for batch in 0..8 {
        let jobs = (batch * 250..(batch + 1) * 250).map(|i| {
            let payload = match i % 100 {
                0 => format!("fail-{i}"),
                1 => format!("flaky-{i}"),
                _ => format!("ok-{i}"),
            };
            (payload,)
        });
        assert_eq!(db.copy_in("jobs", &["payload"], jobs).await.unwrap(), 250);
        match batch {
            // Kill one worker with SIGKILL while it is busy.
            2 => {
                wait_done(550).await;
                signal(&workers[0], "-KILL");
                let killed = workers.remove(0);
                let _ = { killed }.wait();
            }
            // Restart the server under the workers and their listeners.
            4 => {
                wait_done(1100).await;
                let took = tokio::task::block_in_place(|| server.restart_fast());
                eprintln!("e2e: restarted the server in {took:?}");
                // A read is run again after a lost connection: the next COPY gets a live one.
                db.fetch_value::<i32, _>("SELECT 1", ()).await.unwrap();
            }
            _ => {}
        }
    }
    wait_done(2000).await;
    for w in &workers {
        signal(w, "-TERM");
    }
    for mut w in workers {
        let status = w.wait().unwrap();
        assert!(status.success(), "worker exit status {status:?}");
    }
    assert_eq!(count("queued").await, 0);
    assert_eq!(count("done").await, 1980);
    assert_eq!(count("parked").await, 20);
    let checks: (i64, i64, i64, i64) = db
        .fetch_one(
            "SELECT (SELECT count(*) FROM {{tables.job_results}}), \
                    (SELECT count(*) FROM {{tables.jobs}} j LEFT JOIN {{tables.job_results}} r ON r.job_id = j.id \
                     WHERE (j.status = 'done') <> (r.job_id IS NOT NULL)), \
                    (SELECT count(*) FROM {{tables.jobs}} WHERE status = 'parked' AND attempts <> 3), \
                    (SELECT count(*) FROM {{tables.jobs}} WHERE payload LIKE 'flaky-%' AND attempts <> 2)",
            (),
        )
        .await
        .unwrap();
    // One result per done job (job_id is the key: no job twice), none for parked ones; failing
    // jobs tried MAX_ATTEMPTS times, flaky ones twice.
    assert_eq!(checks, (1980, 0, 0, 0));
    db.close().await;
}
