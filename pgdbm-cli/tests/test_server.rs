//! `pgdbm test-server …` and `pgdbm test cleanup`: the built binary, on throwaway servers of the
//! tests' own (`PGDBM_TEST_SERVER_DIR` points the command at a temporary directory), so the server
//! other test binaries use is never stopped and `cleanup --all` never runs on a shared server.

mod support;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Connection, PgConnection};
use support::{Run, pgdbm, run};

/// `pgdbm ARGS` with the throwaway server in `root`.
fn at(root: &Path, args: &[&str]) -> Run {
    let mut c = pgdbm(root);
    c.env("PGDBM_TEST_SERVER_DIR", root);
    run(&mut c, args)
}

/// Stops the server in `root` when the test ends, passed or failed.
struct StopOnDrop<'a>(&'a Path);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let r = at(self.0, &["test-server", "stop"]);
        assert_eq!(r.code, Some(0), "stop in the guard: {r:?}");
    }
}

fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

async fn answers(url: &str) -> bool {
    match PgConnection::connect(url).await {
        Ok(c) => {
            let _ = c.close().await;
            true
        }
        Err(_) => false,
    }
}

#[tokio::test]
async fn start_status_url_and_stop_on_a_directory_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let shown = std::fs::canonicalize(root).unwrap();
    let _guard = StopOnDrop(root);

    // Nothing runs yet.
    let r = at(root, &["test-server", "status"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.starts_with("not running"), "{r:?}");
    let r = at(root, &["test-server", "status", "--json"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let j = json(&r);
    assert_eq!(j["running"], false, "{j}");
    assert!(j["port"].is_null() && j["url"].is_null(), "{j}");
    assert_eq!(
        std::fs::canonicalize(j["dir"].as_str().unwrap()).unwrap(),
        shown
    );
    let r = at(root, &["test-server", "url"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stdout.is_empty(), "{r:?}");
    assert!(
        r.stderr.contains("not running") && r.stderr.contains("pgdbm test-server start"),
        "{r:?}"
    );
    let r = at(root, &["test-server", "stop"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.starts_with("not running"), "{r:?}");

    // start prints the URL of a server that answers, on this directory's cluster.
    let r = at(root, &["test-server", "start"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let url = r.stdout.trim().to_string();
    assert!(
        url.starts_with("postgresql://postgres@127.0.0.1:") && url.ends_with("/postgres"),
        "{r:?}"
    );
    assert!(r.stderr.contains("started"), "{r:?}");
    let mut conn = PgConnection::connect(&url)
        .await
        .expect("the server answers");
    let data: String = sqlx::query_scalar("SHOW data_directory")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(std::fs::canonicalize(data).unwrap(), shown.join("data"));
    conn.close().await.unwrap();

    // A second start reuses it.
    let r = at(root, &["test-server", "start"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.stdout.trim(), url);
    assert!(r.stderr.contains("already running"), "{r:?}");

    let port: u16 = url
        .trim_start_matches("postgresql://postgres@127.0.0.1:")
        .trim_end_matches("/postgres")
        .parse()
        .unwrap();
    let r = at(root, &["test-server", "status"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.starts_with("running"), "{r:?}");
    assert!(r.stdout.contains(&format!("port: {port}")), "{r:?}");
    assert!(r.stdout.contains(&url), "{r:?}");
    let j = json(&at(root, &["--json", "test-server", "status"]));
    assert_eq!(j["running"], true, "{j}");
    assert_eq!(j["port"], port, "{j}");
    assert_eq!(j["url"], url.as_str(), "{j}");
    let r = at(root, &["test-server", "url"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.stdout, format!("{url}\n"));

    // stop: the server no longer answers, and everything says so.
    let r = at(root, &["test-server", "stop"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.starts_with("stopped"), "{r:?}");
    assert!(!answers(&url).await, "the server still answers after stop");
    let j = json(&at(root, &["test-server", "status", "--json"]));
    assert_eq!(j["running"], false, "{j}");
    let r = at(root, &["test-server", "url"]);
    assert_eq!(r.code, Some(1), "{r:?}");

    // It starts again from the same directory (its data kept).
    let r = at(root, &["test-server", "start"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(answers(r.stdout.trim()).await, "{r:?}");
}

/// `CREATE DATABASE name`.
async fn create(conn: &mut PgConnection, name: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut *conn)
        .await
        .unwrap();
}

async fn databases(conn: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar("SELECT datname::text FROM pg_database ORDER BY 1")
        .fetch_all(&mut *conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn cleanup_drops_stale_test_databases_and_with_all_every_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let _guard = StopOnDrop(root);
    let r = at(root, &["test-server", "start"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let admin = r.stdout.trim().to_string();
    let mut conn = PgConnection::connect(&admin).await.unwrap();

    // template_db::is_stale: `pgdbm_test_<created secs>_<pid>_…`, stale when its process is
    // gone and it is older than two minutes. 4294967 is above Linux's largest pid.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let stale = format!("pgdbm_test_{}_4294967_0", now - 3600);
    let fresh = format!("pgdbm_test_{now}_4294967_0");
    let alive = format!("pgdbm_test_{}_{}_0", now - 3600, std::process::id());
    for name in [&stale, &fresh, &alive, &"myapp".to_string()] {
        create(&mut conn, name).await;
    }

    // The server comes from PGDBM_TEST_DATABASE_URL, as for the tests.
    let mut c = pgdbm(root);
    c.env("PGDBM_TEST_DATABASE_URL", &admin);
    let r = run(&mut c, &["test", "cleanup"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains(&format!("dropped {stale}")), "{r:?}");
    assert!(r.stdout.contains("1 test database(s) dropped"), "{r:?}");
    let now_there = databases(&mut conn).await;
    assert!(!now_there.contains(&stale), "{now_there:?}");
    for kept in [&fresh, &alive, &"myapp".to_string()] {
        assert!(now_there.contains(kept), "{kept} dropped: {now_there:?}");
    }

    // Nothing stale is left.
    let mut c = pgdbm(root);
    c.env("PGDBM_TEST_DATABASE_URL", &admin);
    let r = run(&mut c, &["--json", "test", "cleanup"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(json(&r)["dropped"], serde_json::json!([]), "{r:?}");

    // --all, on the server DATABASE_URL names (its `postgres` database is used): every
    // pgdbm_test_* database, nothing else, with a warning.
    let mut c = pgdbm(root);
    c.env(
        "DATABASE_URL",
        format!("{}/myapp", admin.rsplit_once('/').unwrap().0),
    );
    let r = run(&mut c, &["test", "cleanup", "--all"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        r.stderr.contains("warning:") && r.stderr.contains("no tests may be running"),
        "{r:?}"
    );
    assert!(r.stdout.contains("2 test database(s) dropped"), "{r:?}");
    let now_there = databases(&mut conn).await;
    assert!(
        !now_there.iter().any(|d| d.starts_with("pgdbm_test_")),
        "{now_there:?}"
    );
    assert!(now_there.contains(&"myapp".to_string()), "{now_there:?}");
    conn.close().await.unwrap();
}
