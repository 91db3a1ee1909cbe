//! Smoke tests of the replica, failover and PgBouncer test support: a streaming replica follows
//! its primary, a promoted replica takes writes, and a PgBouncer forwards queries. Everything
//! runs on private servers (in `/dev/shm`, on spare ports), driven with psql only.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::pg_server::PgServer;
use support::pgbouncer::PgBouncer;

#[test]
fn replica_follows_primary() {
    let primary = PgServer::start_primary();
    let replica = PgServer::start_replica_of(&primary);
    primary.psql(
        "postgres",
        "CREATE TABLE smoke (id int PRIMARY KEY, note text); \
         INSERT INTO smoke VALUES (1, 'from the primary')",
    );
    replica.wait_replayed(&primary);
    assert_eq!(
        replica.psql("postgres", "SELECT note FROM smoke WHERE id = 1"),
        "from the primary"
    );
    assert_eq!(replica.psql("postgres", "SELECT pg_is_in_recovery()"), "t");
    assert_eq!(primary.psql("postgres", "SELECT pg_is_in_recovery()"), "f");
    // The replication settings won over the test defaults, on the replica too; fsync stays off.
    for server in [&primary, &replica] {
        assert_eq!(server.psql("postgres", "SHOW full_page_writes"), "on");
        assert_eq!(server.psql("postgres", "SHOW wal_keep_size"), "256MB");
        assert_eq!(server.psql("postgres", "SHOW fsync"), "off");
    }
    // A hot standby refuses writes.
    let err = replica
        .try_psql("postgres", "INSERT INTO smoke VALUES (2, 'on the replica')")
        .unwrap_err();
    assert!(err.contains("read-only transaction"), "{err}");
}

#[test]
fn promoted_replica_takes_writes() {
    let primary = PgServer::start_primary();
    primary.psql(
        "postgres",
        "CREATE TABLE smoke (id int PRIMARY KEY); INSERT INTO smoke VALUES (1)",
    );
    let replica = PgServer::start_replica_of(&primary);
    replica.wait_replayed(&primary);
    let took = replica.promote();
    eprintln!("replication_smoke: promote took {took:?}");
    // pg_ctl returns once the control file says "in production"; the server's own flag follows
    // a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    while replica.psql("postgres", "SELECT pg_is_in_recovery()") != "f" {
        assert!(
            Instant::now() < deadline,
            "still in recovery 10 s after promote"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    replica.psql("postgres", "INSERT INTO smoke VALUES (2)");
    assert_eq!(replica.psql("postgres", "SELECT count(*) FROM smoke"), "2");
}

#[test]
fn pgbouncer_forwards_queries() {
    let primary = PgServer::start_primary();
    let replica = PgServer::start_replica_of(&primary);
    for (server, in_recovery) in [(&primary, "f"), (&replica, "t")] {
        let bouncer = PgBouncer::start(server.port(), "transaction", 2);
        assert_eq!(psql(bouncer.port(), "select 1"), "1");
        assert_eq!(
            psql(bouncer.port(), "select pg_is_in_recovery()"),
            in_recovery
        );
        // The server connection behind those queries came from the bouncer's pool.
        let pools = bouncer.admin("SHOW POOLS");
        assert!(
            pools.lines().any(|l| l.starts_with("postgres|postgres|")),
            "{pools}"
        );
    }
}

/// `psql -h 127.0.0.1 -p PORT -U postgres -d postgres -c SQL`; the trimmed, tuples-only output.
fn psql(port: u16, sql: &str) -> String {
    let out = Command::new("/usr/bin/psql")
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
        .args([
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql -p {port} {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
