//! The test support itself: `#[pgdbm::test]`, `TestDatabase`, templates, cleanup, discovery.

use std::time::Duration;

use pgdbm::testing::{ServerDiscovery, ServerSource, TestDatabase, TestDatabaseFactory};
use pgdbm::{Database, Transaction};
use sqlx::{Connection, PgConnection};

async fn admin() -> PgConnection {
    let server = pgdbm::testing::test_server().await.unwrap();
    PgConnection::connect(&server.admin_url).await.unwrap()
}

async fn database_exists(name: &str) -> bool {
    let mut a = admin().await;
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut a)
        .await
        .unwrap()
}

// Two tests writing the same table: each sees only its own row, and each gets id 1.
#[pgdbm::test(migrations = "./migrations", module = "myservice")]
async fn isolation_first(db: Database) -> pgdbm::Result<()> {
    let id: i64 = db
        .execute_and_return_id(
            "INSERT INTO {{tables.users}} (email) VALUES ($1)",
            ("first@example.com",),
        )
        .await?;
    assert_eq!(id, 1);
    let emails: Vec<(String,)> = db
        .fetch_all("SELECT email FROM {{tables.users}}", ())
        .await?;
    assert_eq!(emails, vec![("first@example.com".to_string(),)]);
    Ok(())
}

#[pgdbm::test(migrations = "./migrations", module = "myservice")]
async fn isolation_second(db: Database) -> pgdbm::Result<()> {
    let id: i64 = db
        .execute_and_return_id(
            "INSERT INTO {{tables.users}} (email) VALUES ($1)",
            ("second@example.com",),
        )
        .await?;
    assert_eq!(id, 1);
    let emails: Vec<(String,)> = db
        .fetch_all("SELECT email FROM {{tables.users}}", ())
        .await?;
    assert_eq!(emails, vec![("second@example.com".to_string(),)]);
    Ok(())
}

// `project`: every module of pgdbm.toml (myservice, then billing, which depends on it), each in
// its schema and recorded under its name: the set `tsql!` checks against, so queries of both
// modules run on the test's database, which renders into the top-level schema.
#[pgdbm::test(project)]
async fn project_migrates_every_module_the_macros_check_against(db: Database) -> pgdbm::Result<()> {
    assert_eq!(db.schema(), Some("myservice"));
    let users = pgdbm::tsql_scalar!("SELECT count(*) FROM <<tables.users>>")
        .fetch_one(&db)
        .await?;
    assert_eq!(users, Some(0));
    // (A billing query runs on a handle of billing's schema; ours refuses it.)
    let billing = db.with_schema(Some("billing"))?;
    let cents = pgdbm::tsql_scalar!(
        module = "billing",
        "SELECT sum(amount_cents)::int8 FROM <<tables.invoices>>"
    )
    .fetch_one(&billing)
    .await?;
    assert_eq!(cents, None);
    for (schema, module, files) in [("myservice", "myservice", 3), ("billing", "billing", 1)] {
        let handle = db.with_schema(Some(schema))?;
        let applied = pgdbm::Migrator::new(&handle, "./no-such-dir", module)
            .history(100)
            .await?;
        assert_eq!(applied.len(), files, "{schema}: {applied:?}");
    }
    Ok(())
}

#[pgdbm::test(project, transaction)]
async fn project_works_for_transactional_tests(tx: &mut Transaction<'static>) -> pgdbm::Result<()> {
    // Placeholders render into the top-level schema; billing's table is there too.
    tx.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ('t@example.com')",
        (),
    )
    .await?;
    let n: Option<i64> = tx
        .fetch_value("SELECT count(*) FROM billing.invoices", ())
        .await?;
    assert_eq!(n, Some(0));
    Ok(())
}

#[pgdbm::test(migrations = "./migrations", module = "tenant", schema = "tenant_a")]
async fn schema_option_renders_into_the_schema(db: Database) {
    assert_eq!(db.schema(), Some("tenant_a"));
    assert!(db.table_exists("tenant_a.users").await.unwrap());
    assert!(!db.table_exists("public.users").await.unwrap());
    db.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ('s@example.com')",
        (),
    )
    .await
    .unwrap();
    let n: Option<i64> = db
        .fetch_value("SELECT count(*) FROM tenant_a.users", ())
        .await
        .unwrap();
    assert_eq!(n, Some(1));
}

#[pgdbm::test(
    migrations = "./migrations",
    module = "myservice",
    fixtures("tests/fixtures/users.sql")
)]
async fn fixtures_load_after_migrations(db: Database) {
    let names: Vec<(String,)> = db
        .fetch_all("SELECT name FROM {{tables.users}} ORDER BY email", ())
        .await
        .unwrap();
    assert_eq!(
        names,
        vec![("Fixture A".to_string(),), ("Fixture B".to_string(),)]
    );
}

#[pgdbm::test(migrations = "./migrations", module = "myservice", transaction)]
async fn transaction_variant_sees_its_own_writes(
    tx: &mut Transaction<'static>,
) -> pgdbm::Result<()> {
    tx.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ('tx@example.com')",
        (),
    )
    .await?;
    let n: Option<i64> = tx
        .fetch_value("SELECT count(*) FROM {{tables.users}}", ())
        .await?;
    assert_eq!(
        n,
        Some(1),
        "rows of other transactional tests are never visible"
    );
    Ok(())
}

#[test]
fn transaction_variant_rolls_back() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let seen2 = seen.clone();
    pgdbm::__private::run_in_transaction(
        TestDatabase::builder()
            .migrations(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .module("myservice"),
        |mut tx| async move {
            tx.execute(
                "INSERT INTO {{tables.users}} (email) VALUES ('gone@example.com')",
                (),
            )
            .await
            .unwrap();
            let db: Option<String> = tx
                .fetch_value("SELECT current_database()::text", ())
                .await
                .unwrap();
            *seen2.lock().unwrap() = db.unwrap();
            ((), tx)
        },
    );
    let name = seen.lock().unwrap().clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = pgdbm::testing::test_server().await.unwrap();
        let mut url = url::Url::parse(&server.admin_url).unwrap();
        url.set_path(&format!("/{name}"));
        let mut c = PgConnection::connect(url.as_str()).await.unwrap();
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM users WHERE email = 'gone@example.com'")
                .fetch_one(&mut c)
                .await
                .unwrap();
        assert_eq!(n, 0, "the transaction was rolled back");
    });
}

fn name_is_empty() -> bool {
    false
}

#[test]
fn a_panicking_test_still_drops_its_database() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let seen2 = seen.clone();
    let result = std::panic::catch_unwind(move || {
        pgdbm::__private::run(TestDatabase::builder(), |db: Database| async move {
            let name: Option<String> = db
                .fetch_value("SELECT current_database()::text", ())
                .await
                .unwrap();
            *seen2.lock().unwrap() = name.unwrap();
            if !name_is_empty() {
                panic!("the test fails");
            }
        })
    });
    assert!(result.is_err());
    let name = seen.lock().unwrap().clone();
    assert!(name.starts_with("pgdbm_test_"), "{name}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(!rt.block_on(database_exists(&name)), "{name} was dropped");
}

#[test]
fn a_test_returning_an_error_fails() {
    let r = std::panic::catch_unwind(|| {
        pgdbm::__private::run(TestDatabase::builder(), |db: Database| async move {
            db.execute("SELECT * FROM no_such_table", ())
                .await
                .map(|_| ())
        })
    });
    let panic = r.unwrap_err();
    let msg = panic.downcast_ref::<String>().unwrap();
    assert!(
        msg.contains("test returned an error") && msg.contains("no_such_table"),
        "{msg}"
    );
}

#[tokio::test]
async fn thirty_two_databases_at_once() {
    let builds = (0..32).map(|_| {
        TestDatabase::builder()
            .migrations(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .module("myservice")
            .pool_size(1, 1)
            .build()
    });
    let dbs: Vec<TestDatabase> = futures_util::future::join_all(builds)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut names = std::collections::HashSet::new();
    for (i, t) in dbs.iter().enumerate() {
        t.execute(
            "INSERT INTO {{tables.users}} (email) VALUES ($1)",
            (format!("u{i}@example.com"),),
        )
        .await
        .unwrap();
        assert_eq!(t.count_rows("users").await.unwrap(), 1);
        names.insert(t.name().to_string());
    }
    assert_eq!(names.len(), 32);
    drop(dbs);
    for n in names {
        assert!(!database_exists(&n).await, "{n} dropped");
    }
}

#[tokio::test]
async fn helpers_count_truncate_snapshot() {
    let t = TestDatabase::builder()
        .migrations(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .module("myservice")
        .build()
        .await
        .unwrap();
    for (email, name) in [
        ("a@example.com", "A"),
        ("b@example.com", "B"),
        ("c@example.com", "B"),
    ] {
        t.execute(
            "INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2)",
            (email, name),
        )
        .await
        .unwrap();
    }
    assert_eq!(t.count_rows("users").await.unwrap(), 3);
    assert_eq!(t.count_rows_where("users", "name", "B").await.unwrap(), 2);
    let err = t
        .count_rows_where("users", "name; DROP TABLE users", "B")
        .await
        .unwrap_err();
    assert!(matches!(err, pgdbm::Error::Identifier(_)), "{err:?}");
    let err = t.count_rows("users; DROP TABLE users").await.unwrap_err();
    assert!(matches!(err, pgdbm::Error::Identifier(_)), "{err:?}");
    assert!(t.table_exists("users").await.unwrap());

    let snap = t.snapshot("users").await.unwrap();
    assert_eq!(snap.rows().len(), 3);
    assert!(snap.rows()[0].contains("a@example.com") && snap.rows()[0].contains("created_at"));
    t.assert_unchanged(&snap).await.unwrap();
    t.execute(
        "UPDATE {{tables.users}} SET name = 'Z' WHERE email = 'a@example.com'",
        (),
    )
    .await
    .unwrap();
    let changed = std::panic::AssertUnwindSafe(t.assert_unchanged(&snap));
    let r = futures_util::FutureExt::catch_unwind(changed).await;
    let msg = r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("1 row(s) added, 1 removed"), "{msg}");

    t.truncate("posts").await.unwrap();
    t.truncate_all().await.unwrap();
    assert_eq!(t.count_rows("users").await.unwrap(), 0);
    // The history survives truncate_all: the database is still migrated.
    assert_eq!(t.count_rows("schema_migrations").await.unwrap(), 3);
    let id: i64 = t
        .execute_and_return_id(
            "INSERT INTO {{tables.users}} (email) VALUES ('x@example.com')",
            (),
        )
        .await
        .unwrap();
    assert_eq!(id, 1, "identities restart");
}

#[tokio::test]
async fn a_factory_makes_several_databases() {
    let mut f = TestDatabaseFactory::new();
    let a = f
        .create(TestDatabase::builder().schema("svc_a"))
        .await
        .unwrap();
    let b = f
        .create(TestDatabase::builder().schema("svc_b"))
        .await
        .unwrap();
    let da: Option<String> = a
        .fetch_value("SELECT current_database()::text", ())
        .await
        .unwrap();
    let db: Option<String> = b
        .fetch_value("SELECT current_database()::text", ())
        .await
        .unwrap();
    assert_ne!(da, db);
    assert_eq!(f.databases().len(), 2);
    let names: Vec<String> = f.databases().iter().map(|t| t.name().to_string()).collect();
    drop(f);
    for n in names {
        assert!(!database_exists(&n).await);
    }
}

#[tokio::test]
async fn a_changed_migration_set_gets_a_new_template() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("001_a.sql"),
        "CREATE TABLE {{tables.a}} (id int);",
    )
    .unwrap();
    let build = || {
        TestDatabase::builder()
            .migrations(dir.path())
            .module("changing")
            .build()
    };
    let t1 = build().await.unwrap();
    assert!(t1.table_exists("a").await.unwrap());
    let t2 = build().await.unwrap();
    assert!(t1.template().is_some());
    assert_eq!(t1.template(), t2.template(), "same set: template reused");
    std::fs::write(
        dir.path().join("002_b.sql"),
        "CREATE TABLE {{tables.b}} (id int);",
    )
    .unwrap();
    let t3 = build().await.unwrap();
    assert_ne!(
        t3.template(),
        t1.template(),
        "a new template for the new set"
    );
    assert!(t3.table_exists("b").await.unwrap());
    assert!(!t2.table_exists("b").await.unwrap());
    // Editing a file changes the set too.
    std::fs::write(
        dir.path().join("002_b.sql"),
        "CREATE TABLE {{tables.b}} (id bigint);",
    )
    .unwrap();
    let t4 = build().await.unwrap();
    assert_ne!(t4.template(), t3.template());
    assert!(database_exists(t4.template().unwrap()).await);
}

#[tokio::test]
async fn stale_databases_are_dropped_and_others_never_touched() {
    let server = pgdbm::testing::test_server().await.unwrap();
    let mut a = admin().await;
    // A leftover of a killed run: old, and its pid cannot exist.
    let stale = "pgdbm_test_1000_4194999_0";
    let other = format!("pgdbm_other_{}", std::process::id());
    for name in [stale, other.as_str()] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\""
        )))
        .execute(&mut a)
        .await
        .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut a)
            .await
            .unwrap();
    }
    let live = TestDatabase::new().await.unwrap();
    let dropped = pgdbm::testing::drop_stale_test_databases(&server.admin_url)
        .await
        .unwrap();
    assert!(dropped.contains(&stale.to_string()), "{dropped:?}");
    assert!(!database_exists(stale).await);
    assert!(database_exists(&other).await, "not ours: untouched");
    assert!(
        database_exists(live.name()).await,
        "a live test's database stays"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE \"{other}\"")))
        .execute(&mut a)
        .await
        .unwrap();
}

/// A search that finds nothing: every step pointed away (the struct is `#[non_exhaustive]`, so
/// the environment's search is the starting point).
fn nothing_else() -> ServerDiscovery {
    let mut d = ServerDiscovery::from_env();
    d.test_url = None;
    d.database_url = None;
    d.localhost_port = Some(spare_port());
    d.socket_dirs = vec![];
    d.bin_dirs = vec![];
    d.search_path = false;
    d.throwaway_dir = None;
    d.prefer_throwaway = false;
    d
}

fn spare_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn no_server_gives_an_error_that_says_what_was_tried() {
    let mut d = nothing_else();
    d.throwaway_dir = Some(std::env::temp_dir().join("pgdbm-never-used"));
    let err = d.find().await.unwrap_err().to_string();
    for needle in [
        "PGDBM_TEST_DATABASE_URL: not set",
        "DATABASE_URL: not set",
        "127.0.0.1:",
        "no initdb and pg_ctl found",
        "To fix: set PGDBM_TEST_DATABASE_URL",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
}

#[tokio::test]
async fn a_throwaway_server_starts_when_nothing_else_is_found() {
    let Some(bin) = pgdbm::testing::find_binaries() else {
        panic!("this test needs PostgreSQL's binaries (initdb, pg_ctl) installed");
    };
    let dir = tempfile::tempdir().unwrap();
    let mut d = nothing_else();
    d.bin_dirs = vec![bin.clone()];
    d.throwaway_dir = Some(dir.path().to_path_buf());
    let server = d.find().await.unwrap();
    assert_eq!(
        server.source,
        ServerSource::Throwaway(dir.path().to_path_buf())
    );
    let r = async {
        // A second discovery (another test binary, a later run) reuses the running server.
        let again = d.find().await.unwrap();
        assert_eq!(again.admin_url, server.admin_url);
        let t = TestDatabase::builder()
            .server(&server.admin_url)
            .migrations(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .module("myservice")
            .build()
            .await
            .unwrap();
        assert_eq!(t.count_rows("users").await.unwrap(), 0);
        let version: Option<String> = t.fetch_value("SHOW server_version", ()).await.unwrap();
        assert!(version.is_some());
    }
    .await;
    // Stop only what this test started.
    pgdbm::testing::stop_throwaway(&bin, dir.path()).unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    r
}
