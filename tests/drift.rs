//! Drift detection against a shadow database: what was changed by hand in a live schema (or one
//! tenant's) is reported against a scratch database migrated from the same files, and nothing
//! else is.

use std::path::Path;

use pgdbm::migrate::{Drift, DriftReport, ObjectKind};
use pgdbm::testing::TestDatabase;
use pgdbm::{Database, DatabaseConfig, Error, Migrator, SharedPool, Tenants};

/// Files that make one object of each kind the snapshot reads, naming the schema through
/// `{{tables.x}}` everywhere (bodies and defaults too), so that every definition carries it.
const FILES: &[(&str, &str)] = &[
    (
        "001_users.sql",
        "CREATE TYPE {{tables.mood}} AS ENUM ('happy', 'sad');
CREATE TABLE {{tables.users}} (
    id BIGSERIAL PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name VARCHAR(100) DEFAULT 'anonymous',
    mood {{tables.mood}},
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (email LIKE '%@%')
);
CREATE INDEX users_created_at_idx ON {{tables.users}} (created_at);
CREATE SEQUENCE {{tables.invoice_numbers}} START 1000 INCREMENT 10;",
    ),
    (
        "002_posts.sql",
        "CREATE TABLE {{tables.posts}} (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES {{tables.users}} (id) ON DELETE CASCADE,
    title TEXT NOT NULL
);
CREATE VIEW {{tables.post_titles}} AS
    SELECT p.id, u.email FROM {{tables.posts}} p JOIN {{tables.users}} u ON u.id = p.user_id;
CREATE FUNCTION {{tables.post_count}}(uid BIGINT) RETURNS BIGINT LANGUAGE sql STABLE
    AS $$ SELECT count(*) FROM {{tables.posts}} WHERE user_id = uid $$;
CREATE FUNCTION {{tables.touch}}() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN NEW.title := trim(NEW.title); RETURN NEW; END $$;
CREATE TRIGGER posts_touch BEFORE INSERT ON {{tables.posts}}
    FOR EACH ROW EXECUTE FUNCTION {{tables.touch}}();",
    ),
];

fn migrations() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, sql) in FILES {
        std::fs::write(dir.path().join(name), sql).unwrap();
    }
    dir
}

/// An empty database of the test's own.
async fn database() -> TestDatabase {
    TestDatabase::builder()
        .pool_size(0, 1)
        .build()
        .await
        .unwrap()
}

async fn handle(t: &TestDatabase, schema: &str) -> Database {
    Database::connect(
        DatabaseConfig::new(t.url())
            .schema(schema)
            .min_connections(0)
            .max_connections(2),
    )
    .await
    .unwrap()
}

fn lines(report: &DriftReport) -> Vec<String> {
    report.differences.iter().map(ToString::to_string).collect()
}

/// The live schema `app` of a database of its own, migrated, and a migrator for it.
async fn live(dir: &Path) -> (TestDatabase, Database, Migrator) {
    let t = database().await;
    let db = handle(&t, "app").await;
    let m = Migrator::new(&db, dir, "app");
    m.apply_pending().await.unwrap();
    (t, db, m)
}

#[tokio::test]
async fn a_clean_schema_reports_nothing_and_hand_changes_are_named() {
    let dir = migrations();
    let (_live_db, db, m) = live(dir.path()).await;
    // The shadow's schema differs from the live one: schema names are not drift.
    let shadow_db = database().await;
    let shadow = handle(&shadow_db, "shadow").await;

    let report = m.drift(&shadow).await.unwrap();
    assert!(report.is_clean(), "{:#?}", report.differences);
    assert_eq!(
        (report.schema.as_str(), report.module.as_str()),
        ("app", "app")
    );
    // Every kind of object was read (the snapshot is not trivially empty on both sides).
    let snapshot = shadow.schema_snapshot().await.unwrap();
    for kind in [
        ObjectKind::Type,
        ObjectKind::Table,
        ObjectKind::Column,
        ObjectKind::Index,
        ObjectKind::Constraint,
        ObjectKind::Sequence,
        ObjectKind::View,
        ObjectKind::Function,
        ObjectKind::Trigger,
    ] {
        assert!(
            snapshot.objects().any(|o| o.kind == kind),
            "no {kind} in the snapshot"
        );
    }
    assert!(
        snapshot
            .objects()
            .all(|o| !o.definition.contains("shadow.") && !o.name.contains("schema_migrations")),
        "the schema's name and the history table are left out"
    );

    // By hand: an index dropped, a default and a type changed, a column added.
    for sql in [
        "DROP INDEX app.users_created_at_idx",
        "ALTER TABLE app.users ALTER COLUMN name SET DEFAULT 'nobody'",
        "ALTER TABLE app.posts ALTER COLUMN title TYPE varchar(200)",
        "ALTER TABLE app.users ADD COLUMN nickname text",
    ] {
        db.execute(sql, ()).await.unwrap();
    }
    // The shadow was migrated before by the same files: it is reused as it is.
    let report = m.drift(&shadow).await.unwrap();
    assert_eq!(
        lines(&report),
        [
            "column posts.title: differs from the migrations (changed by hand?): the migrations make `text NOT NULL`, the database has `character varying(200) NOT NULL`",
            "column users.name: differs from the migrations (changed by hand?): the migrations make `character varying(100) DEFAULT 'anonymous'::character varying`, the database has `character varying(100) DEFAULT 'nobody'::character varying`",
            "column users.nickname: not in the migrations (added by hand?)",
            "index users_created_at_idx: missing (dropped by hand?)",
        ]
    );
    let dropped = &report.differences[3];
    assert_eq!(
        (
            dropped.kind,
            dropped.name.as_str(),
            dropped.table.as_deref(),
            &dropped.drift
        ),
        (
            ObjectKind::Index,
            "users_created_at_idx",
            Some("users"),
            &Drift::Missing
        )
    );
    assert!(matches!(
        &report.differences[0].drift,
        Drift::Changed { expected, actual } if expected == "text NOT NULL" && actual.starts_with("character varying(200)")
    ));
    // What the CLI's --json prints.
    let json = serde_json::to_value(&report.differences[2]).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"kind": "column", "name": "nickname", "table": "users", "change": "unexpected"})
    );
}

#[tokio::test]
async fn a_shadow_that_is_not_empty_or_is_the_live_schema_is_refused() {
    let dir = migrations();
    let (_live_db, db, m) = live(dir.path()).await;
    let refused = |e: Error| match e {
        Error::InvalidInput {
            operation: "drift",
            message,
        } => message,
        other => panic!("expected a refusal, got {other}"),
    };

    let message = refused(m.drift(&db).await.unwrap_err());
    assert!(
        message.contains("the live schema `app` itself"),
        "{message}"
    );

    let shadow_db = database().await;
    let shadow = handle(&shadow_db, "app").await;
    shadow.create_schema().await.unwrap();
    shadow
        .execute("CREATE TABLE app.orders (id int)", ())
        .await
        .unwrap();
    let message = refused(m.drift(&shadow).await.unwrap_err());
    assert!(
        message.contains("already holds objects that no migration recorded (table orders)")
            && message.contains("empty database"),
        "{message}"
    );
    // Nothing was migrated into it.
    assert!(!shadow.table_exists("users").await.unwrap());
}

#[tokio::test]
async fn a_column_added_by_hand_on_one_tenant_is_reported_for_that_tenant_only() {
    let dir = migrations();
    let t = database().await;
    let pool = SharedPool::connect(
        DatabaseConfig::new(t.url())
            .min_connections(1)
            .max_connections(4),
    )
    .await
    .unwrap();
    let tenants = Tenants::new(&pool, "app", dir.path()).concurrency(2);
    for name in ["acme", "globex", "initech"] {
        tenants.create(name).await.unwrap();
    }
    let globex = tenants.get("globex").await.unwrap();
    globex
        .execute("ALTER TABLE {{tables.users}} ADD COLUMN nickname text", ())
        .await
        .unwrap();
    let shadow_db = database().await;
    let shadow = handle(&shadow_db, "app").await;

    let reports = tenants.drift(&shadow).await.unwrap();
    let found: Vec<(Option<&str>, &str, Vec<String>)> = reports
        .iter()
        .map(|r| (r.tenant.as_deref(), r.schema.as_str(), lines(r)))
        .collect();
    assert_eq!(
        found,
        [
            (Some("acme"), "tenant_acme", vec![]),
            (
                Some("globex"),
                "tenant_globex",
                vec!["column users.nickname: not in the migrations (added by hand?)".to_string()]
            ),
            (Some("initech"), "tenant_initech", vec![]),
        ]
    );

    // A tenant schema dropped behind the registry's back is reported, not skipped.
    pool.database(None)
        .unwrap()
        .execute("DROP SCHEMA tenant_initech CASCADE", ())
        .await
        .unwrap();
    let reports = tenants.drift(&shadow).await.unwrap();
    assert_eq!(
        lines(&reports[2]),
        ["schema tenant_initech: missing (dropped by hand?)"]
    );
}

#[tokio::test]
async fn the_shadow_is_not_linted() {
    // Module `b` indexes a table of module `a` in the same schema: applied under `warn` (or with
    // a pragma) on the live database. On the shadow that table is not new to `b`'s run, and a
    // scratch database is never a table in use: lint must not refuse it there.
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(
        a.path().join("001_t.sql"),
        "CREATE TABLE {{tables.t}} (id bigint PRIMARY KEY, y bigint);",
    )
    .unwrap();
    std::fs::write(
        b.path().join("001_idx.sql"),
        "CREATE INDEX t_y_idx ON {{tables.t}} (y);",
    )
    .unwrap();
    let t = database().await;
    let db = handle(&t, "app").await;
    Migrator::new(&db, a.path(), "a")
        .apply_pending()
        .await
        .unwrap();
    let refused = Migrator::new(&db, b.path(), "b").apply_pending().await;
    assert!(refused.is_err(), "lint denies it on the live database");
    Migrator::new(&db, b.path(), "b")
        .lint(pgdbm::lint::LintPolicy::Warn)
        .apply_pending()
        .await
        .unwrap();

    let shadow_db = database().await;
    let shadow = handle(&shadow_db, "app").await;
    Migrator::new(&db, a.path(), "a")
        .drift(&shadow)
        .await
        .unwrap();
    // The default policy (deny) on the live migrator, as a service would build it.
    let report = Migrator::new(&db, b.path(), "b")
        .drift(&shadow)
        .await
        .unwrap();
    assert!(report.is_clean(), "{:#?}", report.differences);
}
