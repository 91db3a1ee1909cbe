//! `pgdbm migrate drift`: the built binary against the real server, with a shadow database named
//! by --shadow-url and with the throwaway server's scratch database; exit 0 when clean, 1 on
//! drift or a refused shadow.

mod support;

use std::path::Path;

use support::{TestDb, pgdbm, run, write};

const USERS: &str =
    "CREATE TABLE {{tables.users}} (id BIGSERIAL PRIMARY KEY, email TEXT NOT NULL UNIQUE);
CREATE INDEX users_lower_email_idx ON {{tables.users}} (lower(email));";

/// A directory with the migrations of module `app`.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "migrations/001_users.sql", USERS);
    dir
}

fn drift(dir: &Path, url: &str, extra: &[&str]) -> support::Run {
    let mut args = vec![
        "migrate",
        "drift",
        "--dir",
        "migrations",
        "--module",
        "app",
        "--schema",
        "app",
    ];
    args.extend_from_slice(extra);
    run(pgdbm(dir).env("DATABASE_URL", url), &args)
}

async fn sql(t: &TestDb, statement: &str) {
    let mut c = t.raw().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_string()))
        .execute(&mut c)
        .await
        .unwrap();
}

#[tokio::test]
async fn clean_exits_0_and_hand_changes_exit_1_naming_them() {
    let (live, shadow) = (TestDb::new().await, TestDb::new().await);
    let dir = project();
    let apply = [
        "migrate",
        "apply",
        "--dir",
        "migrations",
        "--module",
        "app",
        "--schema",
        "app",
    ];
    let r = run(pgdbm(dir.path()).env("DATABASE_URL", live.url()), &apply);
    assert_eq!(r.code, Some(0), "{r:?}");

    let shadow_url = shadow.url();
    let r = drift(dir.path(), &live.url(), &["--shadow-url", &shadow_url]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.stdout, "schema app (module app): no drift\n");

    sql(
        &live,
        "ALTER TABLE app.users ADD COLUMN nickname text; DROP INDEX app.users_lower_email_idx",
    )
    .await;
    let r = drift(dir.path(), &live.url(), &["--shadow-url", &shadow_url]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(
        r.stdout,
        "schema app (module app): 2 difference(s)
  column users.nickname: not in the migrations (added by hand?)
  index users_lower_email_idx: missing (dropped by hand?)
"
    );
    assert!(
        r.stderr
            .contains("1 schema(s) differ from their migrations"),
        "{r:?}"
    );

    let r = drift(
        dir.path(),
        &live.url(),
        &["--shadow-url", &shadow_url, "--json"],
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    let docs: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(docs[0]["schema"], "app");
    assert_eq!(docs[0]["target"]["database"], live.name.as_str());
    assert_eq!(
        docs[0]["differences"][0],
        serde_json::json!({"kind": "column", "name": "nickname", "table": "users", "change": "unexpected"})
    );

    // A shadow holding objects of its own is refused, and left as it was.
    let other = TestDb::new().await;
    sql(
        &other,
        "CREATE SCHEMA app; CREATE TABLE app.orders (id int)",
    )
    .await;
    let r = drift(dir.path(), &live.url(), &["--shadow-url", &other.url()]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr
            .contains("already holds objects that no migration recorded (table orders)")
            && r.stderr.contains("give it an empty database"),
        "{r:?}"
    );
    let mut c = other.raw().await;
    let tables = support::count(
        &mut c,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'app'",
    )
    .await;
    assert_eq!(tables, 1);
}

#[tokio::test]
async fn tenants_on_the_throwaway_server_only_the_changed_one_is_named() {
    let live = TestDb::new().await;
    let dir = project();
    for name in ["acme", "globex"] {
        let r = run(
            pgdbm(dir.path()).env("DATABASE_URL", live.url()),
            &[
                "tenants",
                "create",
                name,
                "--dir",
                "migrations",
                "--module",
                "app",
            ],
        );
        assert_eq!(r.code, Some(0), "{r:?}");
    }
    sql(
        &live,
        "ALTER TABLE tenant_globex.users ALTER COLUMN email DROP NOT NULL",
    )
    .await;

    // No --shadow-url: a scratch database on a throwaway server of this test's own.
    let server = tempfile::tempdir().unwrap();
    let with_server = |c: &mut assert_cmd::Command| {
        c.env("PGDBM_TEST_SERVER_DIR", server.path());
    };
    struct Stop<'a>(&'a Path);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let mut c = pgdbm(self.0);
            c.env("PGDBM_TEST_SERVER_DIR", self.0);
            let r = run(&mut c, &["test-server", "stop"]);
            assert_eq!(r.code, Some(0), "{r:?}");
        }
    }
    let _stop = Stop(server.path());

    let mut c = pgdbm(dir.path());
    c.env("DATABASE_URL", live.url());
    with_server(&mut c);
    let r = run(
        &mut c,
        &[
            "migrate",
            "drift",
            "--dir",
            "migrations",
            "--module",
            "app",
            "--tenants",
        ],
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr
            .contains("the shadow is a scratch database on the throwaway server"),
        "{r:?}"
    );
    // The module's own schema (public here) never ran the files: only its tenants are compared.
    assert!(
        r.stderr
            .contains("module app has applied nothing to schema public"),
        "{r:?}"
    );
    assert_eq!(
        r.stdout,
        "tenant globex (schema tenant_globex, module app): 1 difference(s)
  column users.email: differs from the migrations (changed by hand?): the migrations make `text NOT NULL`, the database has `text`
tenants: 2 tenant(s) compared, 1 with drift
"
    );

    // The scratch database was dropped.
    let mut c = pgdbm(dir.path());
    with_server(&mut c);
    let url = run(&mut c, &["test-server", "url"])
        .stdout
        .trim()
        .to_string();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let left = support::count(
        &mut conn,
        "SELECT count(*) FROM pg_database WHERE datname LIKE '%drift'",
    )
    .await;
    assert_eq!(left, 0);
}
