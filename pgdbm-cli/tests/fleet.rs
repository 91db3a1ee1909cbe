//! `pgdbm tenants migrate --all` over a fleet of 200 tenants: the process killed (SIGKILL)
//! half-way through a run, and the next run resuming it, every tenant migrated exactly once;
//! `--canary 5` with a broken tenant among the five, stopping before the others; `--drift`
//! naming a tenant changed by hand; the summary and exit codes.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgdbm_core::{DatabaseConfig, SharedPool, Tenants};
use sqlx::PgConnection;
use support::{TestDb, count, pgdbm, run, write};

const N: usize = 200;

fn project(dir: &Path) {
    write(
        dir,
        "pgdbm.toml",
        "schema = \"app\"\nmigrations = \"migrations\"\nmodule = \"app\"\n",
    );
    write(
        dir,
        "migrations/001_items.sql",
        "CREATE TABLE {{tables.items}} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text);\n",
    );
}

fn cmd(t: &TestDb, dir: &Path) -> assert_cmd::Command {
    let mut c = pgdbm(dir);
    c.env("DATABASE_URL", t.url());
    c
}

/// `N` tenants `t000`…, through the library, 8 creates at a time.
async fn create_fleet(t: &TestDb, dir: &Path) {
    let pool = SharedPool::connect(
        DatabaseConfig::new(t.url())
            .min_connections(1)
            .max_connections(10),
    )
    .await
    .unwrap();
    let tenants =
        Arc::new(Tenants::new(&pool, "app", dir.join("migrations")).compiled_schema("app"));
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..8 {
        let tenants = tenants.clone();
        tasks.spawn(async move {
            for i in (lane..N).step_by(8) {
                tenants.create(&format!("t{i:03}")).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    pool.close().await;
}

/// How many tenants have `file` in their history, and the most times any one has it.
async fn applied_count(raw: &mut PgConnection, file: &str) -> (i64, i64) {
    let sql = (0..N)
        .map(|i| {
            format!(
                "SELECT count(*) AS n FROM tenant_t{i:03}.schema_migrations WHERE filename = '{file}'"
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let with = count(
        raw,
        &format!("SELECT count(*) FILTER (WHERE n > 0) FROM ({sql}) c"),
    )
    .await;
    let most = count(raw, &format!("SELECT max(n) FROM ({sql}) c")).await;
    (with, most)
}

/// The tenants the run record holds (0 before the first run made its table).
async fn recorded(raw: &mut PgConnection) -> i64 {
    let exists = count(
        raw,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'pgdbm' AND tablename = 'tenant_migration_progress'",
    )
    .await;
    if exists == 0 {
        return 0;
    }
    count(raw, "SELECT count(*) FROM pgdbm.tenant_migration_progress").await
}

/// The counts line of a run's stderr.
fn counts(stderr: &str) -> &str {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("tenants: "))
        .unwrap_or_else(|| panic!("no counts in {stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_resumes_and_a_failing_canary_stops_the_fleet() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let mut raw = t.raw().await;
    let started = Instant::now();
    create_fleet(&t, dir.path()).await;
    let create_time = started.elapsed();

    // A file slow enough (20 ms a tenant) that the kill lands mid-run.
    write(
        dir.path(),
        "migrations/002_note.sql",
        "ALTER TABLE {{tables.items}} ADD COLUMN note text;\nSELECT pg_sleep(0.02);\n",
    );
    let started = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pgdbm"))
        .args(["tenants", "migrate", "--all"])
        .current_dir(dir.path())
        .env("DATABASE_URL", t.url())
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the record shows half the fleet done.
    loop {
        if recorded(&mut raw).await >= (N / 2) as i64 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before half the fleet was done"
        );
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed_after = started.elapsed();
    let done = recorded(&mut raw).await;
    let (with_file, _) = applied_count(&mut raw, "002_note.sql").await;
    assert!(
        done >= (N / 2) as i64 && with_file < N as i64,
        "killed mid-run: {done} recorded, {with_file} applied"
    );
    // A tenant may be applied and not yet recorded when the kill landed: the rerun finds it up to date.
    assert!(with_file >= done, "{with_file} applied, {done} recorded");

    let started = Instant::now();
    let r = run(&mut cmd(&t, dir.path()), &["tenants", "migrate", "--all"]);
    let resume_time = started.elapsed();
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "resumed an unfinished run of these files: {done} tenants it had finished were skipped"
        )),
        "{}",
        r.stderr
    );
    let late = with_file - done;
    assert_eq!(
        counts(&r.stderr),
        format!(
            "{} applied, 0 failed, {late} up to date, {done} done by an earlier run",
            N as i64 - with_file
        )
    );
    // One line per tenant this run reached, none for those skipped.
    assert_eq!(r.stdout.lines().count() as i64, N as i64 - done);
    assert_eq!(applied_count(&mut raw, "002_note.sql").await, (N as i64, 1));
    assert_eq!(
        recorded(&mut raw).await,
        0,
        "a finished run leaves no record"
    );

    // --canary 5 with t002 broken (it has the table the new file creates): the other 195 are
    // not touched; exit 1.
    write(
        dir.path(),
        "migrations/003_tags.sql",
        "CREATE TABLE {{tables.tags}} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, label text);\n",
    );
    sqlx::raw_sql("CREATE TABLE tenant_t002.tags (id int)")
        .execute(&mut raw)
        .await
        .unwrap();
    let started = Instant::now();
    let r = run(
        &mut cmd(&t, dir.path()),
        &["tenants", "migrate", "--all", "--canary", "5"],
    );
    let canary_time = started.elapsed();
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr
            .starts_with("failed: tenant `t002`: migration `003_tags.sql`"),
        "{}",
        r.stderr
    );
    assert_eq!(
        counts(&r.stderr),
        "4 applied, 1 failed, 0 up to date, 0 done by an earlier run, 195 not started (the canary failed)"
    );
    assert!(
        r.stderr.ends_with(
            "error: the canary failed: 1 of 5 canary tenants failed to migrate: `t002`; the other 195 tenants were not touched. Fix the errors above and run `pgdbm tenants migrate` again (the canary tenants that succeeded are not migrated again)\n"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(applied_count(&mut raw, "003_tags.sql").await, (4, 1));

    // Fixed; the rerun (--json) skips the 4 and migrates the 196 others, at the default
    // concurrency.
    sqlx::raw_sql("DROP TABLE tenant_t002.tags")
        .execute(&mut raw)
        .await
        .unwrap();
    let started = Instant::now();
    let r = run(
        &mut cmd(&t, dir.path()),
        &["--json", "tenants", "migrate", "--all", "--canary", "5"],
    );
    let fleet_time = started.elapsed();
    assert_eq!(r.code, Some(0), "{r:?}");
    let v: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    assert_eq!(
        v["summary"],
        serde_json::json!({"applied": 196, "failed": 0, "up_to_date": 0, "resumed": 4, "not_started": 0}),
        "{v}"
    );
    assert_eq!(
        v["canary"],
        serde_json::json!({"tenants": 5, "failed": false})
    );
    assert_eq!(v["tenants"].as_array().unwrap().len(), N);
    assert_eq!(v["tenants"][0]["resumed"], true);
    assert_eq!(v["tenants"][2]["resumed"], false);
    assert_eq!(applied_count(&mut raw, "003_tags.sql").await, (N as i64, 1));

    // --drift after a run with nothing pending: every tenant against a shadow migrated from the
    // same files; a column added by hand on one tenant is named, and the exit code is 1.
    let shadow = TestDb::new().await;
    let drift = [
        "tenants",
        "migrate",
        "--all",
        "--drift",
        "--shadow-url",
        &shadow.url(),
    ];
    let r = run(&mut cmd(&t, dir.path()), &drift);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        r.stdout
            .ends_with("tenants: 200 tenant(s) compared, 0 with drift\n"),
        "{}",
        r.stdout
    );
    sqlx::raw_sql("ALTER TABLE tenant_t007.items ADD COLUMN extra int")
        .execute(&mut raw)
        .await
        .unwrap();
    let started = Instant::now();
    let r = run(&mut cmd(&t, dir.path()), &drift);
    let drift_time = started.elapsed();
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stdout.contains(
            "tenant t007 (schema tenant_t007, module app): 1 difference(s)\n  column items.extra"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .ends_with("tenants: 200 tenant(s) compared, 1 with drift\n"),
        "{}",
        r.stdout
    );
    eprintln!(
        "fleet (CLI, concurrency 2): created {N} tenants in {create_time:?}; a run of a 20 ms file killed after {killed_after:?} ({done} recorded), resumed in {resume_time:?}; canary of 5 stopped in {canary_time:?}; the other 196 tenants migrated in {fleet_time:?}; a run with nothing pending and --drift in {drift_time:?}"
    );
}
