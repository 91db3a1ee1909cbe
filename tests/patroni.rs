//! Failover under Patroni, the HA engine operators run: one etcd and two Patroni-managed
//! PostgreSQL nodes (`synchronous_mode: true`, `ttl` 10 s) on spare loopback ports, a write load
//! through the host list with `target_session_attrs=read-write`, and three ways to lose the
//! leader: node loss (`kill -9` of its patroni and postmaster), a network partition (iptables
//! DROP on its ports), and a planned `patronictl switchover`.
//!
//! Each checks what Jepsen would: every acknowledged write is on the new leader, none is there
//! twice, and the writes whose outcome was unknown are counted apart (present or not). The
//! figures are printed with `--nocapture`. The tests run one at a time: three clusters at once
//! on two cores would measure the machine, not the failover.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgdbm::{Database, DatabaseConfig};
use support::patroni::{PatroniCluster, TTL};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const WRITERS: i64 = 8;

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    NodeLoss,
    Partition,
    Switchover,
}

#[derive(Clone, Debug)]
enum Outcome {
    Acked,
    /// The connection broke with the write in flight.
    Unknown,
    /// An error that says the write was not applied.
    Refused(String),
}

#[derive(Clone, Debug)]
struct Write {
    id: i64,
    started: Instant,
    ended: Instant,
    outcome: Outcome,
}

async fn failover_under_write_load(failure: Failure) {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = blocking(|| PatroniCluster::start(2));
    let leader = cluster.leader().expect("a leader");
    let next = 1 - leader;
    blocking(|| {
        cluster
            .psql(leader, "postgres", "CREATE DATABASE svc")
            .unwrap();
        cluster
            .psql(
                leader,
                "svc",
                "CREATE TABLE acks (id bigint NOT NULL, writer int NOT NULL)",
            )
            .unwrap();
    });
    let config = DatabaseConfig::new(cluster.host_list_url("svc"))
        .min_connections(WRITERS as usize)
        .max_connections(WRITERS as usize);
    let db = Database::connect(config).await.unwrap();

    let log: Arc<Mutex<Vec<Write>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (db, log, stop) = (db.clone(), log.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let id = w * 10_000_000 + n;
                    let started = Instant::now();
                    let r = db
                        .execute(
                            "INSERT INTO acks (id, writer) VALUES ($1, $2)",
                            (id, w as i32),
                        )
                        .await;
                    let outcome = match r {
                        Ok(_) => Outcome::Acked,
                        Err(e) if e.is_outcome_unknown() => Outcome::Unknown,
                        Err(e) => Outcome::Refused(e.to_string()),
                    };
                    let ended = Instant::now();
                    log.lock().unwrap().push(Write {
                        id,
                        started,
                        ended,
                        outcome,
                    });
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let failed_at = Instant::now();
    let partition = match failure {
        Failure::NodeLoss => {
            blocking(|| cluster.kill(leader));
            None
        }
        Failure::Partition => Some(cluster.partition(leader)),
        Failure::Switchover => {
            let out = blocking(|| cluster.switchover(leader, next));
            assert!(out.is_ok(), "switchover: {out:?}\n{}", cluster.logs());
            None
        }
    };
    // How long until the other node takes writes (polled with psql, apart from the pool).
    let writable_after = blocking(|| {
        loop {
            if cluster.writable(next) {
                break failed_at.elapsed();
            }
            assert!(
                failed_at.elapsed() < Duration::from_secs(60),
                "no new leader 60 s after the {failure:?}\n{}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let writes = log.lock().unwrap().clone();

    // The new leader's table, read through the pool (which writes there now).
    let port: Option<i32> = db
        .fetch_value("SELECT inet_server_port()", ())
        .await
        .unwrap();
    assert_eq!(
        port,
        Some(i32::from(cluster.nodes[next].pg_port)),
        "the pool follows the new leader"
    );
    let rows: Vec<(i64,)> = db.fetch_all("SELECT id FROM acks", ()).await.unwrap();
    let mut ids: Vec<i64> = rows.into_iter().map(|r| r.0).collect();
    ids.sort_unstable();
    let total = ids.len();
    ids.dedup();
    let duplicated = total - ids.len();
    let present = |id: i64| ids.binary_search(&id).is_ok();
    let acked: Vec<&Write> = writes
        .iter()
        .filter(|w| matches!(w.outcome, Outcome::Acked))
        .collect();
    let lost: Vec<i64> = acked
        .iter()
        .map(|w| w.id)
        .filter(|&id| !present(id))
        .collect();
    let unknown: Vec<&Write> = writes
        .iter()
        .filter(|w| matches!(w.outcome, Outcome::Unknown))
        .collect();
    let unknown_present = unknown.iter().filter(|w| present(w.id)).count();
    let refused: Vec<&Write> = writes
        .iter()
        .filter(|w| matches!(w.outcome, Outcome::Refused(_)))
        .collect();
    let refused_present = refused.iter().filter(|w| present(w.id)).count();
    // Writes were served again at the end of the longest pause in acknowledgements after the
    // failure.
    let mut ends: Vec<Instant> = acked
        .iter()
        .map(|w| w.ended)
        .filter(|t| *t >= failed_at)
        .collect();
    ends.sort_unstable();
    let (mut gap, mut served_again, mut previous) = (Duration::ZERO, Duration::ZERO, failed_at);
    for t in &ends {
        if *t - previous > gap {
            gap = *t - previous;
            served_again = *t - failed_at;
        }
        previous = *t;
    }
    let longest = writes
        .iter()
        .map(|w| w.ended - w.started)
        .max()
        .unwrap_or_default();
    eprintln!(
        "patroni {failure:?}: {} writes: {} acknowledged ({} lost), {} with an unknown outcome ({unknown_present} applied, {} not), \
         {} refused ({refused_present} applied), {duplicated} duplicated; new leader writable {writable_after:.1?} after the failure, \
         writes served again {served_again:.1?} after it (pause {gap:.1?}); longest request {longest:.1?}",
        writes.len(),
        acked.len(),
        lost.len(),
        unknown.len(),
        unknown.len() - unknown_present,
        refused.len(),
    );
    drop(partition);

    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert_eq!(duplicated, 0, "an id was written twice");
    assert_eq!(
        refused_present, 0,
        "a write reported as not applied is there: {refused:?}"
    );
    let first_refusal = refused.first().map(|w| match &w.outcome {
        Outcome::Refused(e) => e.as_str(),
        _ => "",
    });
    assert!(
        refused.is_empty(),
        "writes failed with a definite error during the failover: {first_refusal:?}"
    );
    assert!(
        ends.len() > 100,
        "the load went on after the failover: {} acknowledged after it",
        ends.len()
    );
    assert!(
        served_again <= TTL + Duration::from_secs(5),
        "writes were served again only {served_again:?} after the {failure:?} (Patroni's ttl is {TTL:?})"
    );
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_loss_of_the_leader_loses_no_acknowledged_write() {
    failover_under_write_load(Failure::NodeLoss).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_loses_no_acknowledged_write() {
    failover_under_write_load(Failure::Partition).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_loses_no_acknowledged_write() {
    failover_under_write_load(Failure::Switchover).await;
}
