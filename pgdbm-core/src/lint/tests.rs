use super::*;

fn file(name: &str, sql: &str) -> Migration {
    Migration::new(name, sql).unwrap()
}

fn lint_one(sql: &str) -> LintReport {
    let m = file("002_change.sql", sql);
    lint_standalone([&m], Some("app"), &LintOptions::default())
}

fn rules(r: &LintReport) -> Vec<(&str, usize)> {
    r.denied().map(|f| (f.rule.as_str(), f.line)).collect()
}

#[test]
fn the_six_patterns_are_reported_with_rule_and_line() {
    let cases = [
        (
            "CREATE INDEX users_email ON users (email);",
            "require-concurrent-index-creation",
        ),
        (
            "ALTER TABLE users ADD COLUMN age int NOT NULL;",
            "adding-required-field",
        ),
        (
            "ALTER TABLE users ALTER COLUMN age TYPE bigint;",
            "changing-column-type",
        ),
        (
            "ALTER TABLE posts ADD CONSTRAINT posts_user FOREIGN KEY (user_id) REFERENCES users (id);",
            "adding-foreign-key-constraint",
        ),
        ("ALTER TABLE users DROP COLUMN age;", "ban-drop-column"),
        (
            "ALTER TABLE users ADD CONSTRAINT users_email UNIQUE (email);",
            "disallowed-unique-constraint",
        ),
    ];
    for (sql, rule) in cases {
        let r = lint_one(&format!("-- a comment\n\n{sql}\n"));
        let found = rules(&r);
        assert!(
            found.contains(&(rule, 3)),
            "{sql}: expected {rule} at line 3, found {found:?}"
        );
        let f = r.denied().find(|f| f.rule == rule).unwrap();
        assert_eq!(f.file, "002_change.sql");
        assert!(f.column >= 1);
        assert!(!f.rewrite.is_empty());
    }
}

#[test]
fn a_unique_or_foreign_key_constraint_is_one_finding_not_two() {
    // squawk adds constraint-missing-not-valid beside these; for UNIQUE its advice (NOT VALID)
    // is impossible, for a foreign key it repeats the other finding.
    for (sql, rule) in [
        (
            "ALTER TABLE users ADD CONSTRAINT users_email UNIQUE (email);",
            "disallowed-unique-constraint",
        ),
        (
            "ALTER TABLE posts ADD CONSTRAINT posts_user FOREIGN KEY (user_id) REFERENCES users (id);",
            "adding-foreign-key-constraint",
        ),
    ] {
        let r = lint_one(sql);
        assert_eq!(rules(&r), [(rule, 1)], "{sql}: {r}");
        let allowed = lint_one(&format!(
            "-- pgdbm:lint-allow {rule} a small table
{sql}"
        ));
        assert!(allowed.is_clean(), "{sql}: {allowed}");
    }
    // A CHECK constraint keeps it: there NOT VALID is the rewrite.
    let r = lint_one("ALTER TABLE users ADD CONSTRAINT age_positive CHECK (age > 0);");
    assert_eq!(rules(&r), [("constraint-missing-not-valid", 1)], "{r}");
}

#[test]
fn positions_map_back_through_placeholders() {
    // The placeholder renders to a longer `"app".users`: the column must be the written one.
    let r = lint_one(
        "SELECT 1;\n  CREATE INDEX i ON {{tables.users}} (a); CREATE INDEX j ON {{tables.users}} (b);\n",
    );
    let found: Vec<(usize, usize)> = r.denied().map(|f| (f.line, f.column)).collect();
    assert_eq!(found, [(2, 3), (2, 43)]);
}

#[test]
fn no_transaction_files_get_concurrently_advice_and_transaction_files_the_marker() {
    let r = lint_one("CREATE INDEX i ON users (a);");
    assert!(r.findings[0].rewrite.contains("-- pgdbm:no-transaction"));
    let r = lint_one("CREATE INDEX CONCURRENTLY i ON users (a);");
    // One statement alone still runs in pgdbm's transaction (squawk assumes not).
    assert!(
        rules(&r).contains(&("ban-concurrent-index-creation-in-transaction", 1)),
        "{r}"
    );
    let r = lint_one(
        "-- pgdbm:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i ON users (a);",
    );
    assert!(r.is_clean(), "{r}");
}

#[test]
fn a_pragma_allows_exactly_one_finding() {
    let r = lint_one(
        "-- pgdbm:lint-allow ban-drop-column nothing reads it since release 4.2\n\
         ALTER TABLE users DROP COLUMN a;\n\
         ALTER TABLE users DROP COLUMN b;\n",
    );
    assert_eq!(rules(&r), [("ban-drop-column", 3)]);
    let allowed: Vec<_> = r.findings.iter().filter(|f| f.allowed.is_some()).collect();
    assert_eq!(allowed.len(), 1);
    assert_eq!(allowed[0].line, 2);
    assert_eq!(
        allowed[0].allowed.as_deref(),
        Some("nothing reads it since release 4.2")
    );
}

#[test]
fn a_pragma_without_a_reason_is_a_finding_and_allows_nothing() {
    let r = lint_one("-- pgdbm:lint-allow ban-drop-column\nALTER TABLE users DROP COLUMN a;\n");
    assert_eq!(rules(&r), [(INVALID_PRAGMA, 1), ("ban-drop-column", 2)]);
    assert!(
        r.findings[0].message.contains("without saying why"),
        "{}",
        r.findings[0]
    );
    let r = lint_one("-- pgdbm:lint-allow ban-drop-colum typo\nSELECT 1;\n");
    assert!(
        r.findings[0]
            .message
            .contains("did you mean `ban-drop-column`"),
        "{}",
        r.findings[0]
    );
}

#[test]
fn an_unused_pragma_is_a_warning() {
    let r = lint_one("-- pgdbm:lint-allow ban-drop-column old\nSELECT 1;\n");
    assert!(r.is_clean());
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].rule, UNUSED_PRAGMA);
    assert_eq!(r.findings[0].severity, Severity::Warning);
}

#[test]
fn unparseable_sql_is_a_parse_finding() {
    let r = lint_one("SELECT 1;\nCREATE TABLE (;\n");
    let found = rules(&r);
    assert_eq!(found.len(), 1, "{r}");
    assert_eq!(found[0], (PARSE_ERROR, 2));
    // Garbage of every sort: never a panic.
    for sql in ["\u{0}", "$$", "'", "CREATE", ")))", "ALTER TABLE", "é;é"] {
        let _ = lint_one(sql);
    }
}

#[test]
fn a_bad_placeholder_is_a_template_finding() {
    let r = lint_one("SELECT 1;\nSELECT * FROM {{tables.}};\n");
    assert_eq!(rules(&r), [(TEMPLATE_ERROR, 2)]);
}

#[test]
fn tables_created_earlier_in_the_run_are_new() {
    let create = file(
        "001_users.sql",
        "CREATE TABLE {{tables.users}} (id bigint PRIMARY KEY, email text);",
    );
    let index = file(
        "002_index.sql",
        "CREATE INDEX users_email ON {{tables.users}} (email);\nALTER TABLE {{tables.users}} ADD COLUMN age int NOT NULL;",
    );
    let run = lint_run([&create, &index], Some("app"), &LintOptions::default());
    assert!(run.is_clean(), "{run}");
    assert_eq!(run.files_linted, 2);
    // Linted alone (001 deployed earlier), the same file is unsafe.
    let alone = lint_run([&index], Some("app"), &LintOptions::default());
    assert_eq!(
        rules(&alone),
        [
            ("require-concurrent-index-creation", 1),
            ("adding-required-field", 2)
        ]
    );
    let standalone = lint_standalone([&create, &index], Some("app"), &LintOptions::default());
    assert_eq!(standalone.denied().count(), 2);
}

#[test]
fn options_exclude_and_include_rules() {
    let sql = "ALTER TABLE users DROP COLUMN a;\nALTER TABLE users ADD COLUMN n int;";
    let m = file("001_a.sql", sql);
    let o = LintOptions::new().exclude("ban-drop-column").unwrap();
    assert!(lint_standalone([&m], None, &o).is_clean());
    let o = LintOptions::new().include("ban-add-column").unwrap();
    let r = lint_standalone([&m], None, &o);
    assert!(r.denied().any(|f| f.rule == "ban-add-column"), "{r}");
    let e = LintOptions::new().exclude("ban-drop-colunm").unwrap_err();
    assert_eq!(e.suggestion.as_deref(), Some("ban-drop-column"));
    let config = LintConfig {
        exclude: vec!["prefer-timestamptz".into()],
        ..Default::default()
    };
    assert!(LintOptions::from_config(&config).is_ok());
}

#[test]
fn style_rules_and_timeouts_are_off_by_default() {
    let r = lint_one(
        "CREATE TABLE t (id serial PRIMARY KEY, n int, s varchar(10), c char(2), at timestamp);",
    );
    assert!(r.findings.is_empty(), "{r}");
}

#[test]
fn the_report_names_file_line_rule_and_rewrite() {
    let r = lint_one("ALTER TABLE users DROP COLUMN a;");
    let text = r.to_string();
    assert!(
        text.contains("002_change.sql:1:19: error [ban-drop-column]"),
        "{text}"
    );
    assert!(text.contains("safe rewrite: stop reading"), "{text}");
}

#[test]
fn files_with_their_own_begin_commit_are_fine() {
    // pgdbm (Python)'s create_migration writes them so.
    let r =
        lint_one("BEGIN;\nCREATE TABLE t (id bigint);\nCREATE INDEX t_id ON t (id);\nCOMMIT;\n");
    assert!(r.findings.is_empty(), "{r}");
}

#[test]
fn dropping_a_table_created_earlier_in_the_run_is_fine() {
    let a = file(
        "001_a.sql",
        "CREATE TABLE a (id bigint);\nCREATE TABLE b (id bigint);",
    );
    let b = file("002_b.sql", "DROP TABLE a, b;");
    assert!(lint_run([&a, &b], None, &LintOptions::new()).is_clean());
    let r = lint_run([&b], None, &LintOptions::new());
    assert_eq!(rules(&r), [("ban-drop-table", 1)]);
}

#[test]
fn a_squawk_ignore_comment_is_refused() {
    let r = lint_one("-- squawk-ignore ban-drop-column\nALTER TABLE users DROP COLUMN a;\n");
    assert_eq!(rules(&r), [(INVALID_PRAGMA, 1)], "{r}");
    assert!(r.findings[0].rewrite.contains("pgdbm:lint-allow"));
}
