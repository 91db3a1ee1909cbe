//! `pgdbm tenants list | create | migrate | drop`: the built binary against the real server, each
//! test in a database of its own, with the tenants' schemas and registry rows checked afterwards.

mod support;

use std::path::Path;

use sqlx::PgConnection;
use support::{Run, TestDb, count, pgdbm, run, write};

/// A project whose top-level module `app` (schema `app`) the tenants get.
const APP_TOML: &str = r#"schema = "app"
migrations = "migrations"
module = "app"

[modules.billing]
migrations_path = "billing"
schema = "billing"
"#;

fn project(dir: &Path) {
    write(dir, "pgdbm.toml", APP_TOML);
    write(
        dir,
        "migrations/001_users.sql",
        "CREATE TABLE {{tables.users}} (id int PRIMARY KEY);",
    );
    write(
        dir,
        "billing/001_invoices.sql",
        "CREATE TABLE {{tables.invoices}} (id int);",
    );
}

fn cmd(t: &TestDb, dir: &Path) -> assert_cmd::Command {
    let mut c = pgdbm(dir);
    c.env("DATABASE_URL", t.url());
    c
}

/// The registry rows as `module/name/schema`, sorted.
async fn registry(raw: &mut PgConnection) -> Vec<String> {
    let exists = count(
        raw,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'pgdbm' AND tablename = 'tenants'",
    )
    .await;
    if exists == 0 {
        return Vec::new();
    }
    sqlx::query_scalar::<_, String>(
        "SELECT module || '/' || name || '/' || schema_name FROM pgdbm.tenants ORDER BY 1",
    )
    .fetch_all(raw)
    .await
    .unwrap()
}

/// The schemas whose name starts with `tenant_`, sorted.
async fn tenant_schemas(raw: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar::<_, String>(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'tenant\\_%' ORDER BY 1",
    )
    .fetch_all(raw)
    .await
    .unwrap()
}

/// The history of a tenant's schema: file names in order.
async fn history(raw: &mut PgConnection, schema: &str) -> Vec<String> {
    sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
        "SELECT filename FROM {schema}.schema_migrations ORDER BY filename"
    )))
    .fetch_all(raw)
    .await
    .unwrap()
}

#[tokio::test]
async fn create_list_migrate_and_drop() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let mut raw = t.raw().await;

    // Nothing yet: an empty list, and nothing created by asking.
    let r = run(&mut cmd(&t, dir.path()), &["tenants", "list"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.stdout, "no tenants (module app)\n");
    let r = run(&mut cmd(&t, dir.path()), &["--json", "tenants", "list"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(rows(&r), serde_json::json!([]));
    assert_eq!(
        count(
            &mut raw,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgdbm'"
        )
        .await,
        0
    );

    for name in ["acme", "beta_2"] {
        let r = run(&mut cmd(&t, dir.path()), &["tenants", "create", name]);
        assert_eq!(r.code, Some(0), "{r:?}");
        assert_eq!(
            r.stdout,
            format!("created tenant `{name}` (schema tenant_{name}, module app)\n")
        );
    }
    assert_eq!(
        registry(&mut raw).await,
        ["app/acme/tenant_acme", "app/beta_2/tenant_beta_2"]
    );
    assert_eq!(
        tenant_schemas(&mut raw).await,
        ["tenant_acme", "tenant_beta_2"]
    );
    assert_eq!(history(&mut raw, "tenant_acme").await, ["001_users.sql"]);
    assert_eq!(
        count(&mut raw, "SELECT count(*) FROM tenant_beta_2.users").await,
        0
    );

    // Creating one that exists is refused and changes nothing.
    let r = run(&mut cmd(&t, dir.path()), &["tenants", "create", "acme"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(
        r.stderr,
        "error: tenant `acme`: a tenant of this name exists already\n"
    );
    assert_eq!(registry(&mut raw).await.len(), 2);

    let r = run(&mut cmd(&t, dir.path()), &["tenants", "list"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.stdout, "acme    tenant_acme\nbeta_2  tenant_beta_2\n");
    let r = run(&mut cmd(&t, dir.path()), &["--json", "tenants", "list"]);
    assert_eq!(
        rows(&r),
        serde_json::json!([
            {"name": "acme", "schema": "tenant_acme"},
            {"name": "beta_2", "schema": "tenant_beta_2"}
        ])
    );

    // A new migration: one tenant, then every tenant.
    write(
        dir.path(),
        "migrations/002_posts.sql",
        "CREATE TABLE {{tables.posts}} (id int);",
    );
    let r = run(&mut cmd(&t, dir.path()), &["tenants", "migrate", "acme"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        r.stdout
            .starts_with("tenant `acme`: applied 002_posts.sql ("),
        "{}",
        r.stdout
    );
    assert_eq!(r.stdout.lines().count(), 1);
    assert_eq!(
        history(&mut raw, "tenant_acme").await,
        ["001_users.sql", "002_posts.sql"]
    );
    assert_eq!(history(&mut raw, "tenant_beta_2").await, ["001_users.sql"]);
    let r = run(&mut cmd(&t, dir.path()), &["tenants", "migrate"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    assert_eq!(lines[0], "tenant `acme`: up to date");
    assert!(
        lines[1].starts_with("tenant `beta_2`: applied 002_posts.sql ("),
        "{}",
        r.stdout
    );
    assert_eq!(
        history(&mut raw, "tenant_beta_2").await,
        ["001_users.sql", "002_posts.sql"]
    );

    // drop needs --yes; without it nothing changes.
    let r = run(&mut cmd(&t, dir.path()), &["tenants", "drop", "acme"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.stdout, "");
    assert_eq!(
        r.stderr,
        "error: dropping tenant `acme` deletes its schema and all its data; add --yes to drop it\n"
    );
    assert_eq!(registry(&mut raw).await.len(), 2);
    assert_eq!(
        tenant_schemas(&mut raw).await,
        ["tenant_acme", "tenant_beta_2"]
    );

    let r = run(
        &mut cmd(&t, dir.path()),
        &["tenants", "drop", "acme", "--yes"],
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.stdout, "dropped tenant `acme` (schema tenant_acme)\n");
    assert_eq!(registry(&mut raw).await, ["app/beta_2/tenant_beta_2"]);
    assert_eq!(tenant_schemas(&mut raw).await, ["tenant_beta_2"]);

    // Gone: drop and migrate say so.
    let r = run(
        &mut cmd(&t, dir.path()),
        &["tenants", "drop", "acme", "--yes"],
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.stderr, "error: tenant `acme`: no such tenant\n");
    let r = run(&mut cmd(&t, dir.path()), &["tenants", "migrate", "acme"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.stderr, "error: tenant `acme`: no such tenant\n");
    assert_eq!(registry(&mut raw).await, ["app/beta_2/tenant_beta_2"]);
}

#[tokio::test]
async fn modules_and_directories() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let mut raw = t.raw().await;

    // Another module of pgdbm.toml: its own registry rows and migrations.
    let r = run(
        &mut cmd(&t, dir.path()),
        &["tenants", "create", "acme", "--module", "billing"],
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(
        r.stdout,
        "created tenant `acme` (schema tenant_acme, module billing)\n"
    );
    assert_eq!(registry(&mut raw).await, ["billing/acme/tenant_acme"]);
    assert_eq!(
        count(&mut raw, "SELECT count(*) FROM tenant_acme.invoices").await,
        0
    );
    // The top-level module has no tenants.
    let r = run(&mut cmd(&t, dir.path()), &["tenants", "list"]);
    assert_eq!(r.stdout, "no tenants (module app)\n");
    let r = run(
        &mut cmd(&t, dir.path()),
        &["tenants", "list", "--module", "billing"],
    );
    assert_eq!(r.stdout, "acme  tenant_acme\n");

    // --dir with --module, no pgdbm.toml.
    let bare = tempfile::tempdir().unwrap();
    write(
        bare.path(),
        "m/001_t.sql",
        "CREATE TABLE {{tables.t}} (id int);",
    );
    let r = run(
        &mut cmd(&t, bare.path()),
        &[
            "tenants", "create", "zeta", "--module", "solo", "--dir", "m",
        ],
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(
        r.stdout,
        "created tenant `zeta` (schema tenant_zeta, module solo)\n"
    );
    assert_eq!(
        count(&mut raw, "SELECT count(*) FROM tenant_zeta.t").await,
        0
    );

    // Without a module name: refused before connecting.
    let r = run(
        &mut cmd(&t, bare.path()),
        &["tenants", "create", "eta", "--dir", "m"],
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(
        r.stderr,
        "error: with --dir, name the tenants' module with --module NAME: their registry rows and migration history are kept under it\n"
    );
    let r = run(&mut cmd(&t, bare.path()), &["tenants", "list"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(
        r.stderr,
        "error: name the tenants' module with --module NAME (and their migrations with --dir DIR, default ./migrations), or run where a pgdbm.toml declares a top-level module\n"
    );
    // A module pgdbm.toml does not declare.
    let r = run(
        &mut cmd(&t, dir.path()),
        &["tenants", "list", "--module", "nope"],
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr
            .contains("declares no module `nope` (it declares: billing, app)"),
        "{}",
        r.stderr
    );
    // A migrations directory that is not there: nothing created.
    let r = run(
        &mut cmd(&t, bare.path()),
        &[
            "tenants", "create", "eta", "--module", "solo", "--dir", "gone",
        ],
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr
            .starts_with("error: cannot read the migrations directory `gone`"),
        "{}",
        r.stderr
    );
    assert_eq!(
        registry(&mut raw).await,
        ["billing/acme/tenant_acme", "solo/zeta/tenant_zeta"]
    );
    assert_eq!(
        tenant_schemas(&mut raw).await,
        ["tenant_acme", "tenant_zeta"]
    );
}

#[tokio::test]
async fn an_invalid_name_is_one_short_message_and_creates_nothing() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let mut raw = t.raw().await;
    for name in ["Acme", "my-tenant", "9lives", "a;drop", &"x".repeat(57)] {
        for args in [
            vec!["tenants", "create", name],
            vec!["tenants", "migrate", name],
            vec!["tenants", "drop", name, "--yes"],
        ] {
            let r = run(&mut cmd(&t, dir.path()), &args);
            assert_eq!(r.code, Some(1), "{args:?}: {r:?}");
            assert_eq!(r.stdout, "", "{args:?}");
            assert_eq!(
                r.stderr,
                format!(
                    "error: tenant `{name}`: not a valid tenant name: use lower-case letters, digits and `_`, starting with a letter, at most 56 characters\n"
                ),
                "{args:?}"
            );
        }
    }
    // Not even the registry was made.
    assert_eq!(
        count(
            &mut raw,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgdbm' OR nspname LIKE 'tenant%'"
        )
        .await,
        0
    );
    // 56 characters is the longest that fits.
    let longest = "x".repeat(56);
    let r = run(&mut cmd(&t, dir.path()), &["tenants", "create", &longest]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(registry(&mut raw).await.len(), 1);
}

#[tokio::test]
async fn migrate_goes_on_past_a_failing_tenant_and_exits_1() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let mut raw = t.raw().await;
    for name in ["acme", "beta", "gamma"] {
        let r = run(&mut cmd(&t, dir.path()), &["tenants", "create", name]);
        assert_eq!(r.code, Some(0), "{r:?}");
    }
    // beta already has what the next migration creates.
    sqlx::raw_sql("CREATE TABLE tenant_beta.posts (id int)")
        .execute(&mut raw)
        .await
        .unwrap();
    write(
        dir.path(),
        "migrations/002_posts.sql",
        "CREATE TABLE {{tables.posts}} (id int);",
    );
    let r = run(&mut cmd(&t, dir.path()), &["tenants", "migrate"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    assert!(lines[0].starts_with("tenant `acme`: applied 002_posts.sql"));
    assert!(lines[1].starts_with("tenant `gamma`: applied 002_posts.sql"));
    assert!(
        r.stderr
            .starts_with("failed: tenant `beta`: migration `002_posts.sql`"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.ends_with(
            "error: 1 of 3 tenants failed to migrate: `beta` (the others were migrated); fix the errors above and run `pgdbm tenants migrate` again\n"
        ),
        "{}",
        r.stderr
    );
    for (schema, files) in [("tenant_acme", 2), ("tenant_beta", 1), ("tenant_gamma", 2)] {
        assert_eq!(history(&mut raw, schema).await.len(), files, "{schema}");
    }
    // With --json: every tenant's outcome, the failed ones named, and still exit 1.
    write(
        dir.path(),
        "migrations/003_tags.sql",
        "CREATE TABLE {{tables.tags}} (id int);",
    );
    let r = run(
        &mut cmd(&t, dir.path()),
        &[
            "--json",
            "tenants",
            "migrate",
            "--all",
            "--concurrency",
            "3",
        ],
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    let v: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    assert_eq!(v["failed"], serde_json::json!(["beta"]), "{v}");
    let outcomes = v["tenants"].as_array().unwrap();
    let names: Vec<&str> = outcomes
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme", "beta", "gamma"]);
    assert_eq!(outcomes[0]["applied"][0]["file"], "003_tags.sql", "{v}");
    assert_eq!(outcomes[0]["error"], serde_json::Value::Null, "{v}");
    assert_eq!(outcomes[1]["applied"], serde_json::json!([]), "{v}");
    assert!(
        outcomes[1]["error"]
            .as_str()
            .unwrap()
            .starts_with("migration `002_posts.sql`"),
        "{v}"
    );
    assert_eq!(
        r.stderr,
        "error: 1 of 3 tenants failed to migrate: `beta` (the others were migrated); fix the errors above and run `pgdbm tenants migrate` again\n"
    );
    assert_eq!(history(&mut raw, "tenant_gamma").await.len(), 3);

    // Fixed, a rerun applies what is still pending.
    sqlx::raw_sql("DROP TABLE tenant_beta.posts")
        .execute(&mut raw)
        .await
        .unwrap();
    let r = run(&mut cmd(&t, dir.path()), &["tenants", "migrate", "--all"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(history(&mut raw, "tenant_beta").await.len(), 3);
    // A name and --all contradict each other: a usage error.
    let r = run(
        &mut cmd(&t, dir.path()),
        &["tenants", "migrate", "acme", "--all"],
    );
    assert_eq!(r.code, Some(2), "{r:?}");
}

#[tokio::test]
async fn list_prints_one_page_with_limit_and_every_tenant_without() {
    let t = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let names = ["acme", "beta", "delta", "gamma", "omega"];
    for name in names {
        let r = run(&mut cmd(&t, dir.path()), &["tenants", "create", name]);
        assert_eq!(r.code, Some(0), "{r:?}");
    }
    // One page, and the way to the next on stderr.
    let r = run(
        &mut cmd(&t, dir.path()),
        &["tenants", "list", "--limit", "2"],
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.stdout, "acme  tenant_acme\nbeta  tenant_beta\n");
    assert_eq!(
        r.stderr,
        "more tenants follow: add --after beta for the next page\n"
    );
    let r = run(
        &mut cmd(&t, dir.path()),
        &["tenants", "list", "--limit", "2", "--after", "beta"],
    );
    assert_eq!(r.stdout, "delta  tenant_delta\ngamma  tenant_gamma\n");
    // The last page says nothing more.
    let r = run(
        &mut cmd(&t, dir.path()),
        &["tenants", "list", "--limit", "2", "--after", "gamma"],
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.stdout, "omega  tenant_omega\n");
    assert_eq!(r.stderr, "");
    // --after alone: every tenant after it (it need not be a tenant).
    let r = run(
        &mut cmd(&t, dir.path()),
        &["tenants", "list", "--after", "c"],
    );
    assert_eq!(
        r.stdout,
        "delta  tenant_delta\ngamma  tenant_gamma\nomega  tenant_omega\n"
    );
    let r = run(
        &mut cmd(&t, dir.path()),
        &["tenants", "list", "--after", "z"],
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.stdout, "no tenants after `z` (module app)\n");
    // JSON: the rows and the next page's `after`, null at the end.
    let r = run(
        &mut cmd(&t, dir.path()),
        &["--json", "tenants", "list", "--limit", "3"],
    );
    let v: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    assert_eq!(v["next"], "delta", "{v}");
    assert_eq!(rows(&r).as_array().unwrap().len(), 3);
    let r = run(&mut cmd(&t, dir.path()), &["--json", "tenants", "list"]);
    let v: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    assert_eq!(v["next"], serde_json::Value::Null, "{v}");
    let all = rows(&r);
    let listed: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, names);
    // A limit of 0 is a usage error.
    let r = run(
        &mut cmd(&t, dir.path()),
        &["tenants", "list", "--limit", "0"],
    );
    assert_eq!(r.code, Some(2), "{r:?}");
    assert_eq!(r.stdout, "");
}

#[tokio::test]
async fn drop_without_yes_needs_no_server_and_an_unreachable_one_shows_no_password() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let url = "postgresql://postgres:s3cret_pw@127.0.0.1:1/nowhere";
    let r = run(
        pgdbm(dir.path()).env("DATABASE_URL", url),
        &["tenants", "drop", "acme"],
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(
        r.stderr,
        "error: dropping tenant `acme` deletes its schema and all its data; add --yes to drop it\n"
    );
    let r = run(
        pgdbm(dir.path()).env("DATABASE_URL", url),
        &["tenants", "list"],
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr
            .starts_with("error: could not connect to PostgreSQL at 127.0.0.1:1"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("s3cret_pw"), "{}", r.stderr);
}

/// The rows of a `--json` list, which names where it acted (the test's DATABASE_URL).
fn rows(r: &Run) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    assert_eq!(v["target"]["source"], "DATABASE_URL", "{r:?}");
    assert_eq!(
        v["target"]["database"],
        v["target"]["url"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap(),
        "{r:?}"
    );
    v["rows"].clone()
}
