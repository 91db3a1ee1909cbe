//! Silent failures: a server that stops answering without closing anything costs seconds, not
//! the kernel's 15 minutes. Each test starts its own PostgreSQL (in `/dev/shm`, on spare ports)
//! and makes it silent: iptables DROP rules on its loopback port (a partition), or SIGSTOP of
//! its processes (a frozen host). The rules and the stop are undone whatever happens.
//!
//! The figures (detection time, longest request, outcomes) are printed with `--nocapture`.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgdbm::inspect::HealthStatus;
use pgdbm::{Database, DatabaseConfig, Error};
use serde_json::json;
use support::captured::Captured;
use support::http_load::{Load, failures, longest};
use support::partition::{Frozen, Partition};
use support::pg_server::PgServer;
use support::service::Service;

const CLIENTS: usize = 16;

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// `GET url` every 200 ms until stopped: (started, latency, status, body) of each.
struct HealthPoller {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(Instant, Duration, u16, String)>>,
}

impl HealthPoller {
    fn start(url: String) -> HealthPoller {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let mut seen = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                let (status, body) = match client.get(&url).send().await {
                    Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                    Err(e) => (0, e.to_string()),
                };
                seen.push((started, started.elapsed(), status, body));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            seen
        });
        HealthPoller { stop, task }
    }

    async fn stop(self) -> Vec<(Instant, Duration, u16, String)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_primary_costs_seconds_and_the_service_follows_the_promoted_replica() {
    let (primary, replica) = blocking(|| {
        let primary = PgServer::start_primary();
        primary.create_database("svc");
        let replica = PgServer::start_replica_of(&primary);
        (primary, replica)
    });
    let url = format!(
        "postgresql://postgres@127.0.0.1:{},127.0.0.1:{}/svc?target_session_attrs=read-write",
        primary.port(),
        replica.port()
    );
    let mut svc = Service::start_logged(&url, &[]).await;
    let client = reqwest::Client::new();
    let r = client
        .post(svc.url("/users"))
        .json(&json!({"email": "alice@example.com", "name": "Alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    blocking(|| replica.wait_replayed(&primary));

    let load = Load::start(svc.url("/users/1"), CLIENTS);
    let health = HealthPoller::start(svc.url("/health"));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let partitioned = Instant::now();
    let partition = Partition::ports(&[primary.port()]);
    let promotion = blocking(|| replica.promote());
    // Until a request begun after the partition is answered (at most 30 s).
    let served_again = loop {
        let asked = Instant::now();
        let status = client
            .get(svc.url("/users/1"))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map(|r| r.status());
        if status.as_ref().is_ok_and(|s| *s == 200) {
            break asked.elapsed() + (asked - partitioned);
        }
        eprintln!(
            "partition: a read asked {:.1?} after the partition: {status:?} after {:.1?}",
            asked - partitioned,
            asked.elapsed()
        );
        assert!(
            partitioned.elapsed() < Duration::from_secs(30),
            "no read served 30 s after the partition"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let samples = load.stop().await;
    let probes = health.stop().await;
    let during: Vec<_> = probes
        .iter()
        .filter(|(started, ..)| *started >= partitioned)
        .collect();
    let slowest_health = during.iter().map(|p| p.1).max().unwrap_or_default();
    let after: Vec<_> = samples.iter().filter(|s| s.started > partitioned).collect();
    eprintln!(
        "partition: reads served again {served_again:.1?} after the partition (replica promoted in {promotion:.1?}); \
         {} requests, {} failed, longest {:.1?}; {} /health calls during it, slowest {slowest_health:.2?}",
        samples.len(),
        failures(&samples).len(),
        longest(&samples),
        during.len(),
    );
    drop(partition);

    assert!(
        served_again <= Duration::from_secs(15),
        "reads were served again only {served_again:?} after the partition"
    );
    assert!(
        failures(&samples).is_empty(),
        "{} of {} requests failed; first: {:?}\n{}",
        failures(&samples).len(),
        samples.len(),
        failures(&samples).first(),
        svc.log()
    );
    assert!(
        longest(&samples) <= Duration::from_secs(15),
        "a request took {:?}",
        longest(&samples)
    );
    assert!(after.len() > 100, "the load went on: {}", after.len());
    assert!(!during.is_empty());
    assert!(
        slowest_health < Duration::from_secs(2),
        "a /health call took {slowest_health:?} during the partition"
    );
    let log = svc.log();
    assert!(
        log.contains("WARN") && log.contains("lost the database server"),
        "no WARN for the outage:\n{log}"
    );
    assert!(
        log.contains("INFO") && log.contains("database server is back"),
        "no INFO when back:\n{log}"
    );
    // The same process serves, from the promoted replica.
    let mut child = svc.child.try_wait();
    assert!(matches!(child, Ok(None)), "the service exited: {child:?}");
    let r = client.get(svc.url("/users/1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    child = svc.child.try_wait();
    assert!(matches!(child, Ok(None)));
}

/// A read: when it began, how long it took, how it ended.
type Read = (Instant, Duration, Result<(), String>);

/// A write's outcome as the writer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Acked,
    Unknown,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_of_the_only_server_ends_statements_in_seconds_and_recovers_when_healed() {
    let log = Captured::global();
    let server = blocking(|| {
        let s = PgServer::start();
        s.create_database("app");
        s.psql("app", "CREATE TABLE kv (id bigint NOT NULL, v int)");
        s
    });
    let config = DatabaseConfig::new(server.url("app"))
        .min_connections(8)
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(60));
    let db = Database::connect(config).await.unwrap();

    let writes: Arc<Mutex<Vec<(i64, Outcome, Instant)>>> = Arc::default();
    let reads: Arc<Mutex<Vec<Read>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..4_i64 {
        let (db, writes, stop) = (db.clone(), writes.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let id = w * 1_000_000 + n;
                let r = db
                    .execute("INSERT INTO kv (id, v) VALUES ($1, 1)", (id,))
                    .await;
                let outcome = match r {
                    Ok(_) => Outcome::Acked,
                    Err(e) if e.is_outcome_unknown() => Outcome::Unknown,
                    Err(e) => panic!("write {id}: an error that is not an unknown outcome: {e}"),
                };
                writes.lock().unwrap().push((id, outcome, Instant::now()));
            }
        }));
    }
    for _ in 0..3 {
        let (db, reads, stop) = (db.clone(), reads.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                let r = db
                    .fetch_value::<i64, _>("SELECT count(*) FROM kv", ())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                reads.lock().unwrap().push((started, started.elapsed(), r));
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let partitioned = Instant::now();
    let partition = Partition::ports(&[server.port()]);
    let mut health = Vec::new();
    while partitioned.elapsed() < Duration::from_secs(9) {
        let t = Instant::now();
        let h = db.health().await;
        health.push((t.elapsed(), h.status));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report_during = db.health_check().await.unwrap();
    let healed = Instant::now();
    partition.heal();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let writes = writes.lock().unwrap().clone();
    let reads = std::mem::take(&mut *reads.lock().unwrap());
    let unknown: Vec<_> = writes.iter().filter(|w| w.1 == Outcome::Unknown).collect();
    let first_unknown = unknown
        .iter()
        .map(|w| w.2)
        .min()
        .map(|t| t.saturating_duration_since(partitioned));
    let slowest_health = health.iter().map(|h| h.0).max().unwrap();
    let slowest_read = reads.iter().map(|r| r.1).max().unwrap();
    let acked: Vec<i64> = writes
        .iter()
        .filter(|w| w.1 == Outcome::Acked)
        .map(|w| w.0)
        .collect();
    let in_table: Vec<i64> = db
        .fetch_all::<(i64,), _>("SELECT id FROM kv", ())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.0)
        .collect();
    let unknown_present = unknown.iter().filter(|w| in_table.contains(&w.0)).count();
    eprintln!(
        "partition (one server): statements in flight ended {:.1?} after it; {} writes acknowledged, \
         {} with an unknown outcome ({unknown_present} of them applied); {} reads, slowest {slowest_read:.1?}; \
         health() slowest {slowest_health:.2?}; partition lasted {:.1?}",
        first_unknown.unwrap_or_default(),
        acked.len(),
        unknown.len(),
        reads.len(),
        healed - partitioned
    );

    assert!(
        !unknown.is_empty(),
        "writes in flight at the partition end with an unknown outcome"
    );
    assert!(
        first_unknown.unwrap() <= Duration::from_secs(10),
        "a silent server was noticed only after {first_unknown:?}"
    );
    for (_, _, r) in &reads {
        assert!(r.is_ok(), "reads run again on a new connection: {r:?}");
    }
    assert!(
        slowest_health < Duration::from_secs(2),
        "health() took {slowest_health:?}"
    );
    assert!(
        health.iter().any(|(_, s)| *s == HealthStatus::Reconnecting),
        "health() reported Reconnecting during the partition: {health:?}"
    );
    assert_eq!(
        report_during.status,
        pgdbm::inspect::HealthStatus::Reconnecting,
        "{report_during:?}"
    );
    // Everything waiting for the server was served soon after it came back.
    let done_by = healed + Duration::from_secs(3);
    for (started, took, _) in reads.iter().filter(|r| r.0 < healed) {
        assert!(
            *started + *took <= done_by,
            "a read finished late: {took:?}"
        );
    }
    let mut sorted = in_table.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), in_table.len(), "an id was written twice");
    for id in &acked {
        assert!(in_table.contains(id), "acknowledged write {id} is missing");
    }
    let text = log.text();
    assert!(text.contains("lost the database server"), "{text}");
    assert!(text.contains("database server is back"), "{text}");
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_fails_calls_with_a_deadline_after_it_then_everything_recovers() {
    let server = blocking(|| {
        let s = PgServer::start();
        s.create_database("app");
        s
    });
    let deadline = Duration::from_secs(2);
    let config = DatabaseConfig::new(server.url("app"))
        .min_connections(4)
        .max_connections(8)
        .statement_deadline(Some(deadline));
    let db = Database::connect(config).await.unwrap();
    assert_eq!(db.deadline(), Some(deadline));
    let one: Option<i32> = db.fetch_value("SELECT 1", ()).await.unwrap();
    assert_eq!(one, Some(1));

    let frozen = Frozen::server(server.postmaster_pid());
    let froze_at = Instant::now();
    let mut timeouts = Vec::new();
    let mut slowest_health = Duration::ZERO;
    while froze_at.elapsed() < Duration::from_secs(20) {
        let calls = (0..4).map(|i| {
            let db = db.clone();
            async move {
                let t = Instant::now();
                let r = db.fetch_value::<i32, _>("SELECT $1::int4", (i,)).await;
                (t.elapsed(), r)
            }
        });
        for (took, r) in futures_util::future::join_all(calls).await {
            match r {
                Err(Error::Timeout(t)) => {
                    assert_eq!(t.deadline(), deadline);
                    assert!(t.to_string().contains("statement deadline"), "{t}");
                    timeouts.push(took);
                }
                other => panic!("a call to a frozen server: {other:?} after {took:?}"),
            }
        }
        let t = Instant::now();
        let h = db.health().await;
        assert!(!h.is_healthy());
        slowest_health = slowest_health.max(t.elapsed());
    }
    let thawed = Instant::now();
    eprintln!(
        "frozen: {} processes for {:.1?}",
        frozen.count(),
        thawed - froze_at
    );
    frozen.thaw();
    let recovered = loop {
        match db.fetch_value::<i32, _>("SELECT 7", ()).await {
            Ok(Some(7)) => break thawed.elapsed(),
            other => {
                assert!(
                    thawed.elapsed() < Duration::from_secs(15),
                    "not recovered 15 s after SIGCONT: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let (shortest, longest) = (
        timeouts.iter().min().copied().unwrap(),
        timeouts.iter().max().copied().unwrap(),
    );
    eprintln!(
        "frozen: {} calls timed out after {shortest:.2?}..{longest:.2?} (deadline {deadline:?}); health() slowest {slowest_health:.2?}; \
         served again {recovered:.1?} after SIGCONT",
        timeouts.len()
    );
    assert!(timeouts.len() >= 8);
    assert!(
        shortest >= deadline && longest <= deadline + Duration::from_millis(500),
        "timeouts took {shortest:?}..{longest:?}"
    );
    assert!(
        slowest_health < Duration::from_secs(2),
        "{slowest_health:?}"
    );
    assert!(recovered <= Duration::from_secs(5), "{recovered:?}");
    // Every path works again, on connections opened after the thaw.
    let health = db.health().await;
    assert!(health.is_healthy(), "{health:?}");
    let mut tx = db.transaction().await.unwrap();
    let v: Option<i32> = tx.fetch_value("SELECT 8", ()).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(v, Some(8));
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_query_is_never_broken_by_the_liveness_check() {
    let server = blocking(PgServer::start);
    let db = Database::connect(DatabaseConfig::new(server.url("postgres")).min_connections(2))
        .await
        .unwrap();
    let started = Instant::now();
    let slow = db.fetch_value::<String, _>("SELECT pg_sleep(7)::text", ());
    let watch = async {
        // Meanwhile the pool is healthy and serves other statements.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let h = db.health().await;
        let v: Option<i32> = db.fetch_value("SELECT 2", ()).await.unwrap();
        (h, v)
    };
    let (r, (health, v)) = tokio::join!(slow, watch);
    assert_eq!(r.unwrap(), Some(String::new()));
    assert!(started.elapsed() >= Duration::from_secs(7));
    assert!(health.is_healthy(), "{health:?}");
    assert_eq!(v, Some(2));
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_lost_its_packets_is_found_dead_while_the_server_answers() {
    let log = Captured::global();
    let server = blocking(PgServer::start);
    let db = Database::connect(
        DatabaseConfig::new(server.url("postgres"))
            .min_connections(1)
            .max_connections(1),
    )
    .await
    .unwrap();
    // The pool's one connection, seen from the server: its client port.
    let port: Option<i32> = db
        .fetch_value("SELECT inet_client_port()", ())
        .await
        .unwrap();
    let port = port.unwrap() as u16;
    // pgdbm found the socket and set keepalives on it (`ss` shows the kernel's timer).
    let ss = std::process::Command::new("ss")
        .args([
            "-tno",
            "state",
            "established",
            &format!("( sport = :{port} )"),
        ])
        .output()
        .unwrap();
    let ss = String::from_utf8_lossy(&ss.stdout);
    assert!(
        ss.contains("keepalive"),
        "no keepalive timer on the pool's socket:\n{ss}"
    );

    let _partition = Partition::ports(&[port]);
    let started = Instant::now();
    let v: Option<i32> = db.fetch_value("SELECT 42", ()).await.unwrap();
    let took = started.elapsed();
    eprintln!("lost connection: found dead and the read run again in {took:.1?}");
    assert_eq!(v, Some(42));
    assert!(
        took < Duration::from_secs(6),
        "took {took:?} (TCP_USER_TIMEOUT would take 10 s)"
    );
    let text = log.text();
    assert!(
        text.contains("no longer runs this connection's statement"),
        "{text}"
    );
    db.close().await;
}
