//! The throwaway server's life (issue 13): shared by processes started at once, replaced when it
//! crashed, and stopped by itself when idle. Each test runs a server of its own in a directory of
//! its own under /dev/shm (`PGDBM_TEST_SERVER_DIR`), so the server other tests use is never
//! touched.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use support::{Run, pgdbm, run};

fn at(root: &Path, idle_secs: u64, args: &[&str]) -> Run {
    let mut c = pgdbm(root);
    c.env("PGDBM_TEST_SERVER_DIR", root)
        .env("PGDBM_TEST_SERVER_IDLE_SECS", idle_secs.to_string());
    run(&mut c, args)
}

/// A directory of the test's own in memory; the server in it is stopped when the test ends.
struct Root(tempfile::TempDir);

impl Root {
    fn new() -> Root {
        Root(
            tempfile::Builder::new()
                .prefix("pgdbm-lifecycle-")
                .tempdir_in("/dev/shm")
                .unwrap(),
        )
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = at(self.path(), 900, &["test-server", "stop"]);
    }
}

fn running(root: &Path) -> Option<String> {
    let r = at(root, 900, &["test-server", "status", "--json"]);
    let j: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    (j["running"] == true).then(|| j["url"].as_str().unwrap().to_string())
}

fn postmaster_pid(root: &Path) -> u32 {
    std::fs::read_to_string(root.join("data/postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn processes_started_at_once_share_one_server() {
    let root = Root::new();
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_pgdbm"))
                .args(["test-server", "start"])
                .env("PGDBM_TEST_SERVER_DIR", root.path())
                .env("NO_COLOR", "1")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let urls: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .collect();
    assert_eq!(urls[0], urls[1], "one server for both");
    let mut conn = PgConnection::connect(&urls[0]).await.unwrap();
    let dir: String = sqlx::query_scalar("SHOW data_directory")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(Path::new(&dir), root.path().join("data"));
    // Made for tests: nothing is synced to disk.
    let fsync: String = sqlx::query_scalar("SHOW fsync")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(fsync, "off");
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_killed_server_is_replaced() {
    let root = Root::new();
    let r = at(root.path(), 900, &["test-server", "start"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let pid = postmaster_pid(root.path());
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(root.path()).is_some() {
        assert!(Instant::now() < deadline, "the killed server still answers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The stale postmaster.pid is left behind; the next user gets a working server.
    assert!(root.path().join("data/postmaster.pid").exists());
    let r = at(root.path(), 900, &["test-server", "start"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let url = r.stdout.trim();
    let mut conn = PgConnection::connect(url).await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    conn.close().await.unwrap();
    assert_ne!(postmaster_pid(root.path()), pid);
}

#[tokio::test]
async fn an_idle_server_stops_by_itself_and_a_used_one_does_not() {
    let root = Root::new();
    // Idle after 3 s; the watcher looks every second.
    let r = at(root.path(), 3, &["test-server", "start"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let url = r.stdout.trim().to_string();

    // A session held open is use: the server stays up well past the idle time.
    let mut conn = PgConnection::connect(&url).await.unwrap();
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(
        running(root.path()).is_some(),
        "stopped while a session was open"
    );
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    conn.close().await.unwrap();

    // Without sessions it stops within the idle time plus a few checks.
    let closed = Instant::now();
    while running(root.path()).is_some() {
        assert!(
            closed.elapsed() < Duration::from_secs(20),
            "still running 20 s after its last session"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = closed.elapsed();
    // The watcher last saw the session up to one check (1 s) before it closed, and file times
    // count whole seconds: so 3 s idle can end 1 s after the close, never sooner.
    assert!(
        took >= Duration::from_secs(1),
        "stopped after {took:?}, before the idle time"
    );
    eprintln!(
        "lifecycle: stopped {:.1} s after the last session closed (idle time 3 s)",
        took.as_secs_f64()
    );
    assert!(!root.path().join("data/postmaster.pid").exists());
    // And the next user starts it again.
    let r = at(root.path(), 900, &["test-server", "start"]);
    assert_eq!(r.code, Some(0), "{r:?}");
}
