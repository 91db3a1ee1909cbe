//! Migration lint against a real server: each unsafe pattern of issue 25 is found with its rule
//! and line, its safe rewrite lints clean and applies; under deny (the default) an unsafe
//! pending file stops the run before anything runs, under warn it applies; applied files are
//! never linted again; a fresh database migrates a create-then-index sequence with no finding.

use std::path::Path;

use pgdbm::lint::{LintPolicy, PARSE_ERROR};
use pgdbm::migrate::ReportStatus;
use pgdbm::testing::TestDatabase;
use pgdbm::{Database, DatabaseConfig, Error, Migrator};

const BASE: &str = "CREATE TABLE {{tables.users}} (id bigint PRIMARY KEY, email text, age int);
CREATE TABLE {{tables.posts}} (id bigint PRIMARY KEY, user_id bigint);
INSERT INTO {{tables.users}} VALUES (1, 'a@example.com', 30), (2, 'b@example.com', 40);
INSERT INTO {{tables.posts}} VALUES (1, 1), (2, 2);
";

fn write(dir: &Path, name: &str, content: &str) {
    std::fs::write(dir.join(name), content).unwrap();
}

async fn server() -> TestDatabase {
    TestDatabase::builder()
        .pool_size(0, 1)
        .build()
        .await
        .unwrap()
}

async fn connect(t: &TestDatabase, schema: &str) -> Database {
    Database::connect(
        DatabaseConfig::new(t.url())
            .schema(schema)
            .min_connections(1)
            .max_connections(2),
    )
    .await
    .unwrap()
}

/// The applied files of the history, in order.
async fn history(db: &Database) -> Vec<String> {
    let rows: Vec<(String,)> = db
        .fetch_all(
            "SELECT filename::text FROM {{tables.schema_migrations}} ORDER BY filename",
            (),
        )
        .await
        .unwrap();
    rows.into_iter().map(|r| r.0).collect()
}

/// A count, with the schema's name as `$1`.
async fn scalar(db: &Database, sql: &str) -> i64 {
    let schema = db.schema().unwrap().to_string();
    let (n,): (i64,) = db.fetch_one(sql, (schema,)).await.unwrap();
    n
}

/// One unsafe pattern: the file, the rule it breaks, and the files that do it safely with
/// a check that they did it.
struct Pattern {
    unsafe_sql: &'static str,
    rule: &'static str,
    safe: &'static [&'static str],
    check: &'static str,
}

const PATTERNS: &[Pattern] = &[
    Pattern {
        unsafe_sql: "CREATE INDEX users_email_idx ON {{tables.users}} (email);",
        rule: "require-concurrent-index-creation",
        safe: &[
            "-- pgdbm:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS users_email_idx ON {{tables.users}} (email);",
        ],
        check: "SELECT 2 * count(*) FROM pg_indexes WHERE schemaname = $1 AND indexname = 'users_email_idx'",
    },
    Pattern {
        unsafe_sql: "ALTER TABLE {{tables.users}} ADD COLUMN plan text NOT NULL;",
        rule: "adding-required-field",
        safe: &["ALTER TABLE {{tables.users}} ADD COLUMN plan text NOT NULL DEFAULT 'free';"],
        check: "SELECT count(*) FROM {{tables.users}} WHERE plan = 'free' AND $1 <> ''",
    },
    Pattern {
        unsafe_sql: "ALTER TABLE {{tables.users}} ALTER COLUMN age TYPE bigint;",
        rule: "changing-column-type",
        safe: &[
            "ALTER TABLE {{tables.users}} ADD COLUMN age_big bigint;",
            "UPDATE {{tables.users}} SET age_big = age WHERE age_big IS NULL;",
        ],
        check: "SELECT count(*) FROM {{tables.users}} WHERE age_big = age AND $1 <> ''",
    },
    Pattern {
        unsafe_sql: "ALTER TABLE {{tables.posts}} ADD CONSTRAINT posts_user_fk FOREIGN KEY (user_id) REFERENCES {{tables.users}} (id);",
        rule: "adding-foreign-key-constraint",
        safe: &[
            "ALTER TABLE {{tables.posts}} ADD CONSTRAINT posts_user_fk FOREIGN KEY (user_id) REFERENCES {{tables.users}} (id) NOT VALID;",
            "ALTER TABLE {{tables.posts}} VALIDATE CONSTRAINT posts_user_fk;",
        ],
        check: "SELECT 2 * count(*) FROM pg_constraint WHERE conname = 'posts_user_fk' AND convalidated AND connamespace = $1::regnamespace",
    },
    Pattern {
        unsafe_sql: "ALTER TABLE {{tables.users}} DROP COLUMN age;",
        rule: "ban-drop-column",
        safe: &[
            "-- pgdbm:lint-allow ban-drop-column no code reads users.age since release 2.3 (deployed first)\nALTER TABLE {{tables.users}} DROP COLUMN age;",
        ],
        check: "SELECT 2 - count(*) FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'users' AND column_name = 'age'",
    },
    Pattern {
        unsafe_sql: "ALTER TABLE {{tables.users}} ADD CONSTRAINT users_email_key UNIQUE (email);",
        rule: "disallowed-unique-constraint",
        safe: &[
            "-- pgdbm:no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS users_email_key ON {{tables.users}} (email);",
            "ALTER TABLE {{tables.users}} ADD CONSTRAINT users_email_key UNIQUE USING INDEX users_email_key;",
        ],
        check: "SELECT 2 * count(*) FROM pg_constraint WHERE conname = 'users_email_key' AND contype = 'u' AND connamespace = $1::regnamespace",
    },
];

#[tokio::test]
async fn each_unsafe_pattern_is_found_and_its_safe_rewrite_applies() {
    let t = server().await;
    for (i, p) in PATTERNS.iter().enumerate() {
        let schema = format!("pattern_{i}");
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "001_base.sql", BASE);
        let db = connect(&t, &schema).await;
        let m = Migrator::new(&db, dir.path(), "svc");
        m.apply_pending().await.unwrap();

        // The unsafe file, its statement on line 2.
        write(
            dir.path(),
            "002_change.sql",
            &format!("-- {}\n{}\n", p.rule, p.unsafe_sql),
        );
        let report = m.lint_pending().await.unwrap();
        assert_eq!(report.files_linted, 1, "{}", p.rule);
        let found: Vec<(&str, &str, usize)> = report
            .denied()
            .map(|f| (f.file.as_str(), f.rule.as_str(), f.line))
            .collect();
        assert!(
            found.contains(&("002_change.sql", p.rule, 2)),
            "{}: {report}",
            p.rule
        );
        let err = m.apply_pending().await.unwrap_err();
        let Error::Migration(me) = &err else {
            panic!("{err}")
        };
        assert!(me.lint().is_some(), "{err}");
        assert_eq!(history(&db).await, ["001_base.sql"]);

        // The safe rewrite: lints clean, applies, and does what the unsafe file meant.
        std::fs::remove_file(dir.path().join("002_change.sql")).unwrap();
        for (n, sql) in p.safe.iter().enumerate() {
            write(dir.path(), &format!("{:03}_safe.sql", n + 2), sql);
        }
        let report = m.lint_pending().await.unwrap();
        assert!(report.is_clean(), "{}: {report}", p.rule);
        let applied = m.apply_pending().await.unwrap();
        assert_eq!(applied.applied.len(), p.safe.len(), "{}", p.rule);
        assert_eq!(scalar(&db, p.check).await, 2, "{}: {}", p.rule, p.check);
        db.close().await;
    }
}

#[tokio::test]
async fn deny_refuses_before_anything_runs_and_warn_applies() {
    let t = server().await;
    for (schema, pooler) in [("deny_direct", false), ("deny_pooled", true)] {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "001_base.sql", BASE);
        let db = connect(&t, schema).await;
        let m = Migrator::new(&db, dir.path(), "svc").transaction_pooler(pooler);
        m.apply_pending().await.unwrap();

        // A safe file, then an unsafe one: neither runs.
        write(
            dir.path(),
            "002_tags.sql",
            "CREATE TABLE {{tables.tags}} (id int);",
        );
        write(
            dir.path(),
            "003_index.sql",
            "CREATE INDEX users_age_idx ON {{tables.users}} (age);",
        );
        let err = m.apply_pending().await.unwrap_err();
        let Error::Migration(me) = &err else {
            panic!("{err}")
        };
        let report = me.lint().expect("a lint refusal");
        assert_eq!(report.files_linted, 2);
        let denied: Vec<_> = report.denied().collect();
        assert_eq!(denied.len(), 1, "{report}");
        assert_eq!(
            (denied[0].file.as_str(), denied[0].line, denied[0].column),
            ("003_index.sql", 1, 1)
        );
        assert!(denied[0].rewrite.contains("CONCURRENTLY"), "{}", denied[0]);
        assert_eq!(me.file.as_deref(), Some("003_index.sql"));
        let text = err.to_string();
        assert!(
            text.contains("nothing was applied")
                && text.contains("003_index.sql:1:1")
                && text.contains("require-concurrent-index-creation"),
            "{text}"
        );
        assert_eq!(history(&db).await, ["001_base.sql"], "{schema}");
        assert_eq!(
            scalar(
                &db,
                "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'tags'"
            )
            .await,
            0
        );
        assert_eq!(
            scalar(
                &db,
                "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND indexname = 'users_age_idx'"
            )
            .await,
            0
        );

        // Warn: the same files apply.
        let report = m
            .clone()
            .lint(LintPolicy::Warn)
            .apply_pending()
            .await
            .unwrap();
        assert_eq!(report.applied.len(), 2);

        // The unsafe file is applied now: it is never linted again, and a clean new file
        // applies under deny.
        write(
            dir.path(),
            "004_more.sql",
            "CREATE TABLE {{tables.more}} (id int);",
        );
        let pending = m.lint_pending().await.unwrap();
        assert_eq!(pending.files_linted, 1);
        assert!(pending.findings.is_empty(), "{pending}");
        let report = m.apply_pending().await.unwrap();
        assert_eq!(report.applied.len(), 1);

        // Off: not linted at all.
        write(
            dir.path(),
            "005_drop.sql",
            "ALTER TABLE {{tables.users}} DROP COLUMN age;",
        );
        assert!(m.apply_pending().await.is_err());
        let report = m
            .clone()
            .lint(LintPolicy::Off)
            .apply_pending()
            .await
            .unwrap();
        assert_eq!(report.applied.len(), 1);
        db.close().await;
    }
}

#[tokio::test]
async fn a_fresh_database_migrates_create_then_index_with_no_finding() {
    let t = server().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "001_base.sql",
        "CREATE TABLE {{tables.users}} (id bigint PRIMARY KEY, email text);\n\
         CREATE TABLE {{tables.posts}} (id bigint PRIMARY KEY, user_id bigint);\n",
    );
    write(
        dir.path(),
        "002_index.sql",
        "CREATE INDEX users_email_idx ON {{tables.users}} (email);\n\
         ALTER TABLE {{tables.users}} ADD COLUMN plan text NOT NULL;\n",
    );
    write(
        dir.path(),
        "003_fk.sql",
        "ALTER TABLE {{tables.posts}} ADD CONSTRAINT posts_user_fk FOREIGN KEY (user_id) REFERENCES {{tables.users}} (id);",
    );
    let db = connect(&t, "fresh").await;
    let m = Migrator::new(&db, dir.path(), "svc");
    let report = m.lint_pending().await.unwrap();
    assert!(report.findings.is_empty(), "{report}");
    assert_eq!(report.files_linted, 3);
    let applied = m.apply_pending().await.unwrap();
    assert_eq!(applied.status, ReportStatus::Applied);
    assert_eq!(applied.applied.len(), 3);
    db.close().await;
}

#[tokio::test]
async fn a_pragma_allows_one_and_bad_sql_is_a_finding() {
    let t = server().await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "001_base.sql", BASE);
    let db = connect(&t, "pragma").await;
    let m = Migrator::new(&db, dir.path(), "svc");
    m.apply_pending().await.unwrap();

    write(
        dir.path(),
        "002_drop.sql",
        "-- pgdbm:lint-allow ban-drop-column nothing reads email since 2.3\n\
         ALTER TABLE {{tables.users}} DROP COLUMN email;\n\
         ALTER TABLE {{tables.users}} DROP COLUMN age;\n",
    );
    let report = m.lint_pending().await.unwrap();
    let denied: Vec<_> = report.denied().map(|f| (f.rule.as_str(), f.line)).collect();
    assert_eq!(denied, [("ban-drop-column", 3)], "{report}");
    let allowed: Vec<_> = report
        .findings
        .iter()
        .filter_map(|f| f.allowed.as_deref().map(|r| (f.line, r)))
        .collect();
    assert_eq!(allowed, [(2, "nothing reads email since 2.3")]);
    assert!(m.apply_pending().await.is_err());

    // Unparseable SQL: a finding at its line, and nothing applied (never a panic).
    write(
        dir.path(),
        "002_drop.sql",
        "SELECT 1;\nCREATE TABLE {{tables.broken}} (;\n",
    );
    let report = m.lint_pending().await.unwrap();
    let denied: Vec<_> = report.denied().map(|f| (f.rule.as_str(), f.line)).collect();
    assert_eq!(denied, [(PARSE_ERROR, 2)], "{report}");
    let err = m.apply_pending().await.unwrap_err();
    assert!(err.to_string().contains(PARSE_ERROR), "{err}");
    assert_eq!(history(&db).await, ["001_base.sql"]);
    db.close().await;
}
