//! `pgdbm inspect explain | blocking | long-running | table-sizes | health`: the built binary
//! against real server activity (a held lock, a running `pg_sleep`, tables of known sizes), each
//! test in a database of its own.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgConnection;
use support::{Run, TestDb, count, pgdbm, run};

fn cmd(t: &TestDb, dir: &Path) -> assert_cmd::Command {
    let mut c = pgdbm(dir);
    c.env("DATABASE_URL", t.url());
    c
}

/// Runs the binary off the async runtime's threads (the tests' own sessions keep running).
async fn inspect(t: &TestDb, dir: &Path, args: &[&str]) -> Run {
    let mut c = cmd(t, dir);
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&mut c, &args)
    })
    .await
    .unwrap()
}

/// The `--json` output of a successful run: a list's rows, or the document, without the
/// `target` every document names (checked: the URL the test gave).
fn json(r: &Run) -> Value {
    assert_eq!(r.code, Some(0), "{r:?}");
    without_target(r)
}

fn without_target(r: &Run) -> Value {
    let mut v: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    let target = v
        .as_object_mut()
        .and_then(|o| o.remove("target"))
        .unwrap_or_else(|| panic!("no target: {r:?}"));
    assert_eq!(target["source"], "DATABASE_URL", "{r:?}");
    assert!(
        r.target.ends_with("(DATABASE_URL)") || r.target.is_empty(),
        "{r:?}"
    );
    match v.get("rows") {
        Some(rows) => rows.clone(),
        None => v,
    }
}

async fn exec(conn: &mut PgConnection, sql: &'static str) {
    sqlx::raw_sql(sql).execute(conn).await.unwrap();
}

async fn pid(conn: &mut PgConnection) -> i64 {
    count(conn, "SELECT pg_backend_pid()::int8").await
}

/// Runs `probe` every 100 ms for up to 15 s until it gives `Some`.
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_prints_the_plan_and_json_and_analyze_changes_nothing() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut raw = t.raw().await;
    exec(
        &mut raw,
        "CREATE SCHEMA app;
         CREATE TABLE app.users (id int PRIMARY KEY, name text);
         INSERT INTO app.users VALUES (1, 'Alice'), (2, 'Bob');",
    )
    .await;

    let sql = "SELECT * FROM {{tables.users}} WHERE id = $1::int";
    let r = inspect(
        &t,
        dir.path(),
        &["inspect", "explain", "--schema", "app", sql, "1"],
    )
    .await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains(" on users  (cost="), "{r:?}");
    assert!(!r.stdout.contains("Execution Time"), "{r:?}");

    let r = inspect(
        &t,
        dir.path(),
        &["--json", "inspect", "explain", "--schema", "app", sql, "1"],
    )
    .await;
    let v = json(&r);
    assert_eq!(
        v["sql"], "SELECT * FROM \"app\".users WHERE id = $1::int",
        "{v}"
    );
    assert_eq!(v["analyzed"], false);
    assert!(v["plan"][0]["Plan"]["Node Type"].is_string(), "{v}");
    assert!(v["plan"][0].get("Execution Time").is_none(), "{v}");

    // --analyze runs the UPDATE and rolls it back; parameters are text, cast in the SQL.
    let r = inspect(
        &t,
        dir.path(),
        &[
            "--json",
            "inspect",
            "explain",
            "--schema",
            "app",
            "--analyze",
            "--buffers",
            "UPDATE {{tables.users}} SET name = $2 WHERE id = $1::int",
            "2",
            "Mallory",
        ],
    )
    .await;
    let v = json(&r);
    assert_eq!(v["analyzed"], true);
    assert_eq!(v["plan"][0]["Plan"]["Node Type"], "ModifyTable", "{v}");
    assert!(v["plan"][0]["Execution Time"].as_f64().is_some(), "{v}");
    assert_eq!(
        count(
            &mut raw,
            "SELECT count(*) FROM app.users WHERE id = 2 AND name = 'Bob'"
        )
        .await,
        1
    );
    let r = inspect(
        &t,
        dir.path(),
        &[
            "inspect",
            "explain",
            "--analyze",
            "DELETE FROM app.users WHERE id > $1::int",
            "-5",
        ],
    )
    .await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains("Execution Time: "), "{r:?}");
    assert!(
        r.stdout
            .ends_with("(--analyze ran the statement in a transaction and rolled it back)\n"),
        "{r:?}"
    );
    assert_eq!(count(&mut raw, "SELECT count(*) FROM app.users").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_refuses_what_it_cannot_explain_and_runs_nothing() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut raw = t.raw().await;
    exec(&mut raw, "CREATE TABLE x (id int)").await;

    for (sql, says) in [
        ("DROP TABLE x", "this one starts with DROP"),
        (
            "INSERT INTO x VALUES (1); DROP TABLE x",
            "`DROP` follows the `;`",
        ),
        ("SELECT * FROM {{tables.}}", "malformed placeholder"),
    ] {
        let r = inspect(&t, dir.path(), &["inspect", "explain", "--analyze", sql]).await;
        assert_eq!(r.code, Some(1), "{r:?}");
        assert_eq!(r.stdout, "", "{r:?}");
        assert_eq!(r.stderr.lines().count(), 1, "one line: {r:?}");
        assert!(r.stderr.starts_with("error: "), "{r:?}");
        assert!(r.stderr.contains(says), "{says}: {r:?}");
    }
    let r = inspect(&t, dir.path(), &["inspect", "explain", "DROP TABLE x"]).await;
    assert_eq!(
        r.stderr,
        "error: explain takes one SELECT, INSERT, UPDATE, DELETE, MERGE, VALUES, WITH or TABLE statement; this one starts with DROP; other statements have no plan to show\n"
    );
    assert_eq!(
        count(
            &mut raw,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'x'"
        )
        .await,
        1,
        "x is still there"
    );
    assert_eq!(count(&mut raw, "SELECT count(*) FROM x").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_sizes_lists_the_schemas_tables_with_their_sizes() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut raw = t.raw().await;
    exec(
        &mut raw,
        "CREATE TABLE big (id int PRIMARY KEY, payload text);
         INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g;
         CREATE TABLE small (id int);
         INSERT INTO small VALUES (1), (2), (3);
         CREATE SCHEMA other;
         CREATE TABLE other.elsewhere (id int);
         ANALYZE big; ANALYZE small;",
    )
    .await;

    let v = json(&inspect(&t, dir.path(), &["--json", "inspect", "table-sizes"]).await);
    let rows = v.as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["table"].as_str().unwrap()).collect();
    assert_eq!(names, ["big", "small"], "{v}");
    let big = &rows[0];
    assert_eq!(big["schema"], "public");
    assert!(big["total_bytes"].as_u64().unwrap() >= 2_000_000, "{big}");
    assert!(big["index_bytes"].as_u64().unwrap() > 0, "{big}");
    assert_eq!(big["row_estimate"], 20000);
    assert_eq!(rows[1]["row_estimate"], 3);
    assert!(rows[1]["total_bytes"].as_u64() < big["total_bytes"].as_u64());

    let r = inspect(&t, dir.path(), &["inspect", "table-sizes"]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{r:?}");
    assert!(
        lines[0].starts_with("TABLE ")
            && [
                "TOTAL",
                "HEAP",
                "INDEXES",
                "TOAST",
                "ROWS (EST.)",
                "LAST ANALYZE"
            ]
            .iter()
            .all(|h| lines[0].contains(h)),
        "{r:?}"
    );
    assert!(
        lines[1].starts_with("public.big")
            && lines[1].contains(" MiB")
            && lines[1].contains("20000"),
        "{r:?}"
    );
    assert!(lines[2].starts_with("public.small"), "{r:?}");
    assert!(lines[2].contains("8.0 KiB"), "{r:?}");

    let v = json(
        &inspect(
            &t,
            dir.path(),
            &["--json", "inspect", "table-sizes", "--schema", "other"],
        )
        .await,
    );
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["table"], "elsewhere");
    assert_eq!(v[0]["row_estimate"], Value::Null, "never analysed: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_running_sees_a_running_pg_sleep() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut sleeper = t.raw().await;
    let sleeper_pid = pid(&mut sleeper).await;
    let sleeping = tokio::spawn(async move {
        exec(&mut sleeper, "SELECT pg_sleep(4) /* cli */").await;
    });

    let row = eventually("pg_sleep to pass 500 ms", async || {
        let v = json(
            &inspect(
                &t,
                dir.path(),
                &["--json", "inspect", "long-running", "--threshold", "500ms"],
            )
            .await,
        );
        v.as_array()?
            .iter()
            .find(|r| r["pid"] == sleeper_pid)
            .cloned()
    })
    .await;
    assert_eq!(row["query"], "SELECT pg_sleep(4) /* cli */");
    assert_eq!(row["state"], "active");
    assert_eq!(row["wait_event"], "PgSleep");
    assert!(row["duration_ms"].as_f64().unwrap() >= 500.0, "{row}");

    let r = inspect(
        &t,
        dir.path(),
        &["inspect", "long-running", "--threshold", "0.5s"],
    )
    .await;
    assert_eq!(r.code, Some(0), "{r:?}");
    // Numeric columns are right-aligned, their headings too.
    assert!(
        r.stdout.trim_start().starts_with("PID  DURATION  STATE"),
        "{r:?}"
    );
    let line = r
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&sleeper_pid.to_string()))
        .unwrap_or_else(|| panic!("{r:?}"));
    for part in ["  active", "  Timeout/PgSleep", "  postgres"] {
        assert!(line.contains(part), "{part:?} in {line:?}");
    }
    assert!(line.ends_with("  SELECT pg_sleep(4) /* cli */"), "{line}");

    // The default threshold (60 s) leaves it out.
    let r = inspect(&t, dir.path(), &["inspect", "long-running"]).await;
    assert_eq!(r.stdout, "no query has run for more than 1 min\n", "{r:?}");
    let r = inspect(
        &t,
        dir.path(),
        &["inspect", "long-running", "--threshold", "soon"],
    )
    .await;
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("`soon` is not a duration"), "{r:?}");
    sleeping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_and_health_see_a_real_lock() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();

    let v = json(&inspect(&t, dir.path(), &["--json", "inspect", "health"]).await);
    assert_eq!(v["status"], "healthy", "{v}");
    assert!(v["server_version_num"].as_i64().unwrap() >= 150000, "{v}");
    assert_eq!(v["in_recovery"], false);
    assert_eq!(v["warnings"], serde_json::json!([]));
    assert!(v["latency_ms"].as_f64().unwrap() > 0.0, "{v}");
    let r = inspect(&t, dir.path(), &["inspect", "blocking"]).await;
    assert_eq!(r.stdout, "no query is waiting for a lock\n", "{r:?}");

    let mut holder = t.raw().await;
    let holder_pid = pid(&mut holder).await;
    // Committed first: in one simple-protocol script the BEGIN would take the CREATE into its
    // transaction, and the waiter would not see the table.
    exec(&mut holder, "CREATE TABLE locked (id int)").await;
    exec(
        &mut holder,
        "BEGIN; LOCK TABLE locked IN ACCESS EXCLUSIVE MODE",
    )
    .await;
    let mut waiter = t.raw().await;
    let waiter_pid = pid(&mut waiter).await;
    let waiting = tokio::spawn(async move {
        exec(&mut waiter, "SELECT count(*) FROM locked").await;
    });

    let row = eventually("the waiter to show as blocked", async || {
        let v = json(&inspect(&t, dir.path(), &["--json", "inspect", "blocking"]).await);
        v.as_array()?
            .iter()
            // pg_stat_activity may still show the previous statement for a moment.
            .find(|r| {
                r["blocked_pid"] == waiter_pid
                    && r["blocked_query"] == "SELECT count(*) FROM locked"
            })
            .cloned()
    })
    .await;
    assert_eq!(row["blocking_pid"], holder_pid, "{row}");
    assert_eq!(row["blocked_query"], "SELECT count(*) FROM locked");
    assert_eq!(row["blocking_state"], "idle in transaction");
    assert_eq!(row["blocked_wait_event_type"], "Lock");

    let r = inspect(&t, dir.path(), &["inspect", "blocking"]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.starts_with("BLOCKED PID  WAITING"), "{r:?}");
    let line = r.stdout.lines().nth(1).unwrap();
    assert!(
        line.contains(&format!(
            "Lock/relation  {holder_pid:>12}  idle in transaction"
        )) && line.contains("SELECT count(*) FROM locked"),
        "{r:?}"
    );

    // The report degrades: exit 3, with the warning.
    let r = inspect(&t, dir.path(), &["inspect", "health"]).await;
    assert_eq!(r.code, Some(3), "{r:?}");
    assert!(r.stdout.starts_with("status        degraded\n"), "{r:?}");
    assert!(
        r.stdout
            .contains("warning: 1 query is blocked by locks (see blocking_queries)"),
        "{r:?}"
    );
    let r = inspect(&t, dir.path(), &["--json", "inspect", "health"]).await;
    assert_eq!(r.code, Some(3), "{r:?}");
    let v = without_target(&r);
    assert_eq!(
        (v["status"].as_str(), v["blocked_queries"].as_u64()),
        (Some("degraded"), Some(1))
    );

    exec(&mut holder, "ROLLBACK").await;
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    let r = inspect(&t, dir.path(), &["inspect", "health"]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.starts_with("status        healthy\n"), "{r:?}");
}

#[test]
fn an_unreachable_server_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(
        pgdbm(dir.path()).env("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere"),
        &["inspect", "health"],
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.starts_with("error: "), "{r:?}");
}
