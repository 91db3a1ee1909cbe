//! `pgdbm migrate lint` (no database: human output, --json, exit codes) and `migrate apply`
//! under pgdbm.toml's `[lint]` policy.

mod support;

use support::{TestDb, count, pgdbm, run, write};

const TOML: &str = "schema = \"app\"\nmigrations = \"migrations\"\nmodule = \"app\"\n";

/// A project whose 002 builds an index without CONCURRENTLY (line 2) and whose 003 drops a
/// column with a pragma.
fn project(lint: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "pgdbm.toml", &format!("{TOML}{lint}"));
    write(
        dir.path(),
        "migrations/001_users.sql",
        "CREATE TABLE {{tables.users}} (id bigint PRIMARY KEY, email text, age int);\n",
    );
    write(
        dir.path(),
        "migrations/002_index.sql",
        "-- find users by email\nCREATE INDEX users_email_idx ON {{tables.users}} (email);\n",
    );
    write(
        dir.path(),
        "migrations/003_drop.sql",
        "-- pgdbm:lint-allow ban-drop-column nothing reads age since 2.3\nALTER TABLE {{tables.users}} DROP COLUMN age;\n",
    );
    dir
}

#[test]
fn lint_reports_file_line_rule_and_rewrite_and_exits_1() {
    let dir = project("");
    let r = run(&mut pgdbm(dir.path()), &["migrate", "lint"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(
            "002_index.sql:2:1: error [require-concurrent-index-creation] During normal index creation"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("safe rewrite: CREATE INDEX CONCURRENTLY IF NOT EXISTS … in a file of its own whose first line is `-- pgdbm:no-transaction`"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("003_drop.sql:2:")
            && r.stdout.contains("allowed [ban-drop-column]")
            && r.stdout.contains("allowed: nothing reads age since 2.3"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("3 file(s) linted in ") && r.stdout.contains("1 unsafe, 1 allowed"),
        "{}",
        r.stdout
    );
    // No database was needed or named.
    assert!(r.target.is_empty(), "{}", r.target);

    let r = run(&mut pgdbm(dir.path()), &["migrate", "lint", "--json"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let doc = &v[0];
    assert_eq!(doc["module"], "app");
    assert_eq!(doc["files_linted"], 3);
    assert_eq!(doc["clean"], false);
    let findings = doc["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 2, "{findings:?}");
    let f = &findings[0];
    assert_eq!(
        (
            &f["file"],
            &f["line"],
            &f["column"],
            &f["rule"],
            &f["denied"]
        ),
        (
            &serde_json::json!("002_index.sql"),
            &serde_json::json!(2),
            &serde_json::json!(1),
            &serde_json::json!("require-concurrent-index-creation"),
            &serde_json::json!(true)
        )
    );
    assert!(f["rewrite"].as_str().unwrap().contains("CONCURRENTLY"));
    assert_eq!(findings[1]["allowed"], "nothing reads age since 2.3");
    assert_eq!(findings[1]["denied"], false);

    // Fixed: exit 0.
    write(
        dir.path(),
        "migrations/002_index.sql",
        "-- pgdbm:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS users_email_idx ON {{tables.users}} (email);\n",
    );
    let r = run(&mut pgdbm(dir.path()), &["migrate", "lint"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    // --dir works without pgdbm.toml too.
    let other = tempfile::tempdir().unwrap();
    let r = run(
        &mut pgdbm(other.path()),
        &[
            "migrate",
            "lint",
            "--dir",
            dir.path().join("migrations").to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
}

#[test]
fn lint_table_excludes_rules_and_bad_values_are_errors() {
    let dir = project("\n[lint]\nexclude = [\"require-concurrent-index-creation\"]\n");
    let r = run(&mut pgdbm(dir.path()), &["migrate", "lint"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);

    let dir = project("\n[lint]\npolicy = \"loud\"\n");
    let r = run(&mut pgdbm(dir.path()), &["migrate", "lint"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .contains("unknown lint policy `loud`; the policies are: deny, warn, off"),
        "{}",
        r.stderr
    );
    let dir = project("\n[lint]\nexclude = [\"ban-drop-colum\"]\n");
    let r = run(&mut pgdbm(dir.path()), &["migrate", "lint"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("did you mean `ban-drop-column`"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn apply_follows_the_project_policy() {
    let t = TestDb::new().await;
    for (policy, schema) in [
        ("", "deny_app"),
        ("\n[lint]\npolicy = \"warn\"\n", "warn_app"),
    ] {
        let dir = project(policy);
        let toml = std::fs::read_to_string(dir.path().join("pgdbm.toml")).unwrap();
        write(
            dir.path(),
            "pgdbm.toml",
            &toml.replace("schema = \"app\"", &format!("schema = \"{schema}\"")),
        );
        let later: Vec<(String, String)> = ["002_index.sql", "003_drop.sql"]
            .iter()
            .map(|f| {
                let path = dir.path().join("migrations").join(f);
                let text = std::fs::read_to_string(&path).unwrap();
                std::fs::remove_file(path).unwrap();
                (f.to_string(), text)
            })
            .collect();
        let apply = |dir: &std::path::Path| {
            let mut c = pgdbm(dir);
            c.env("DATABASE_URL", t.url());
            run(&mut c, &["migrate", "apply"])
        };
        let r = apply(dir.path());
        assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
        // The table exists now: an index on it is linted.
        for (f, text) in &later {
            write(dir.path(), &format!("migrations/{f}"), text);
        }
        let r = apply(dir.path());
        let mut raw = t.raw().await;
        let applied = count(
            &mut raw,
            &format!("SELECT count(*) FROM {schema}.schema_migrations"),
        )
        .await;
        if policy.is_empty() {
            assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
            assert!(
                r.stderr.contains("002_index.sql:2:1") && r.stderr.contains("nothing was applied"),
                "{}",
                r.stderr
            );
            assert_eq!(applied, 1);
        } else {
            assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
            assert_eq!(applied, 3);
        }
    }
}
