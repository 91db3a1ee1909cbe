//! Failover: a host list with `target_session_attrs=read-write` follows the primary. The test
//! starts its own primary and streaming replica (in `/dev/shm`, on spare ports), puts a steady
//! write/read load on the service side, stops the primary and promotes the replica.
//!
//! The figures (requests, failures, longest wait, promotion time) are printed with
//! `--nocapture`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pgdbm::config::TargetSessionAttrs;
use pgdbm::{Database, DatabaseConfig};
use support::pg_server::PgServer;

const CLIENTS: usize = 16;

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// One request of the load: a write, then a read of what it wrote.
#[derive(Debug)]
struct Sample {
    started: Instant,
    took: Duration,
    error: Option<String>,
}

async fn request(db: &Database, task: usize, n: usize) -> Result<(), String> {
    let v = (task * 1_000_000 + n) as i64;
    let id: i64 = db
        .execute_and_return_id("INSERT INTO kv (v) VALUES ($1)", (v,))
        .await
        .map_err(|e| e.to_string())?;
    let got: Option<i64> = db
        .fetch_value("SELECT v FROM kv WHERE id = $1", (id,))
        .await
        .map_err(|e| e.to_string())?;
    match got {
        Some(g) if g == v => Ok(()),
        other => Err(format!("wrote {v} as id {id}, read back {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_follows_the_primary_through_a_failover_and_loses_no_request() {
    let (primary, replica) = blocking(|| {
        let primary = PgServer::start_primary();
        primary.create_database("app");
        primary.psql(
            "app",
            "CREATE TABLE kv (id bigserial PRIMARY KEY, v bigint)",
        );
        let replica = PgServer::start_replica_of(&primary);
        replica.wait_replayed(&primary);
        (primary, replica)
    });
    let url = format!(
        "postgresql://postgres@127.0.0.1:{},127.0.0.1:{}/app?target_session_attrs=read-write",
        primary.port(),
        replica.port()
    );
    let config = DatabaseConfig::new(url)
        .min_connections(4)
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(30));
    let db = Database::connect(config).await.unwrap();
    let port: Option<i32> = db
        .fetch_value("SELECT inet_server_port()", ())
        .await
        .unwrap();
    assert_eq!(
        port,
        Some(i32::from(primary.port())),
        "connected to the primary"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|task| {
            let (db, stop) = (db.clone(), stop.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let started = Instant::now();
                    let r = request(&db, task, n).await;
                    samples.push(Sample {
                        started,
                        took: started.elapsed(),
                        error: r.err(),
                    });
                }
                samples
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1000)).await;
    let failover_began = Instant::now();
    blocking(|| primary.stop("fast"));
    let stopped = failover_began.elapsed();
    let promotion = blocking(|| replica.promote());
    let promoted = failover_began.elapsed();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);

    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await.unwrap());
    }
    let failed: Vec<&Sample> = samples.iter().filter(|s| s.error.is_some()).collect();
    let longest = samples.iter().map(|s| s.took).max().unwrap_or_default();
    let after = samples
        .iter()
        .filter(|s| s.started > failover_began + promoted && s.error.is_none())
        .count();
    eprintln!(
        "failover: {} requests (write + read), {} failed; longest wait {longest:?}; \
         primary stopped in {stopped:?}, replica promoted in {promotion:?} \
         ({promoted:?} from the stop); {after} requests completed after the promotion",
        samples.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed; first: {:?}",
        failed.len(),
        samples.len(),
        failed.first()
    );
    assert!(
        longest <= promoted + Duration::from_secs(1),
        "the longest request waited {longest:?}, more than the promotion ({promoted:?}) + 1 s"
    );
    assert!(after > 100, "the load went on after the failover: {after}");

    // The service now writes to the promoted replica, by itself.
    let port: Option<i32> = db
        .fetch_value("SELECT inet_server_port()", ())
        .await
        .unwrap();
    assert_eq!(port, Some(i32::from(replica.port())));
    let writable: Option<bool> = db
        .fetch_value("SELECT NOT pg_is_in_recovery()", ())
        .await
        .unwrap();
    assert_eq!(writable, Some(true));
    let rows: Option<i64> = db.fetch_value("SELECT count(*) FROM kv", ()).await.unwrap();
    assert!(
        rows.unwrap() as usize >= after,
        "{rows:?} rows, {after} writes after"
    );
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_write_skips_a_standby_listed_first_and_waits_when_there_is_no_primary() {
    let (primary, replica) = blocking(|| {
        let primary = PgServer::start_primary();
        primary.create_database("app");
        let replica = PgServer::start_replica_of(&primary);
        (primary, replica)
    });
    // The standby comes first in the list: read-write passes it by; any takes it.
    let hosts = format!(
        "postgresql://postgres@127.0.0.1:{},127.0.0.1:{}/app",
        replica.port(),
        primary.port()
    );
    let config =
        DatabaseConfig::new(format!("{hosts}?target_session_attrs=read-write")).min_connections(1);
    let db = Database::connect(config).await.unwrap();
    let standby: Option<bool> = db
        .fetch_value("SELECT pg_is_in_recovery()", ())
        .await
        .unwrap();
    assert_eq!(standby, Some(false));
    db.close().await;
    let any = Database::connect(DatabaseConfig::new(hosts.clone()).min_connections(1))
        .await
        .unwrap();
    let standby: Option<bool> = any
        .fetch_value("SELECT pg_is_in_recovery()", ())
        .await
        .unwrap();
    assert_eq!(standby, Some(true));
    any.close().await;

    // Only the standby is up: connect says so, naming the setting.
    blocking(|| primary.stop("fast"));
    let config = DatabaseConfig::new(hosts)
        .target_session_attrs(TargetSessionAttrs::ReadWrite)
        .retry_attempts(1)
        .min_connections(1);
    let e = Database::connect(config).await.unwrap_err().to_string();
    assert!(
        e.contains("no server of the host list accepts writes") && e.contains("read-only"),
        "{e}"
    );
}
