//! `pgdbm prepare --check-compat`: the built binary checking a previous release's `.sqlx/`
//! against the current migrations (and the other way round) on scratch databases of a real
//! server.
//!
//! The "previous release" is a small workspace outside this repository, in a directory or in a
//! git repository of its own. Its `.sqlx/` files are written the way sqlx-cli writes them: each
//! query described (sqlx's `Executor::describe`) on a database migrated with the workspace's
//! migrations, serialised with sqlx's own serde form. That is what `cargo sqlx prepare` stores,
//! without compiling the workspace; the library's tests read files sqlx-cli really wrote.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pgdbm_core::testing::TestDatabase;
use sqlx::{Connection, Executor, PgConnection, SqlSafeStr};
use support::scratch::{
    SQLX_DEPENDENCY, cargo_project, runtime, scratch_databases_of, test_server,
};
use support::{Run, write};

/// `pgdbm ARGS` in `cwd` on the test server (DATABASE_URL, no other database settings); it must
/// leave no scratch database behind.
fn pgdbm(cwd: &Path, args: &[&str], admin_url: &str) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pgdbm"));
    c.current_dir(cwd).args(args).env("NO_COLOR", "1");
    for var in [
        "DB_HOST",
        "DB_PORT",
        "DB_NAME",
        "DB_USER",
        "DB_PASSWORD",
        "DB_SCHEMA",
        "PGDBM_SCHEMA",
        "PGDBM_TEST_DATABASE_URL",
    ] {
        c.env_remove(var);
    }
    c.env("DATABASE_URL", admin_url);
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pgdbm");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        target: String::new(),
    };
    assert_eq!(
        scratch_databases_of(admin_url, pid, "compat"),
        Vec::<String>::new(),
        "scratch databases left behind by {run:?}"
    );
    run
}

const BY_ID: &str = "SELECT id, email FROM demo.users WHERE id = $1";
const NAMES: &str = "SELECT id, name FROM demo.users ORDER BY id";
const EVERYTHING: &str = "SELECT * FROM demo.users";
const NICKNAMES: &str = "SELECT id, nickname FROM demo.users";

/// A workspace of one crate whose `src/main.rs` runs `queries` with `sqlx::query!`, module
/// `demo` in pgdbm.toml, one migration creating `demo.users`, and this repository's Cargo.lock
/// and dev profile (should anyone build it, its dependencies are the ones already built).
fn small_workspace(dir: &Path, queries: &[&str]) {
    cargo_project(
        dir,
        "pgdbm-compat-test",
        &format!("[dependencies]\n{SQLX_DEPENDENCY}\n"),
    );
    write(
        dir,
        "pgdbm.toml",
        "[project]\nname = \"demo\"\n\n[modules.demo]\nmigrations_path = \"migrations\"\nschema = \"demo\"\n",
    );
    write(
        dir,
        "migrations/001_users.sql",
        "CREATE TABLE {{tables.users}} (id bigint PRIMARY KEY, email text NOT NULL, name text);\n",
    );
    set_queries(dir, queries);
}

/// `src/main.rs` with one `sqlx::query!` per query, each on its own line (line 3, 4, …).
fn set_queries(dir: &Path, queries: &[&str]) {
    let calls: String = queries
        .iter()
        .map(|q| format!("    let _ = sqlx::query!(\"{q}\");\n"))
        .collect();
    write(
        dir,
        "src/main.rs",
        &format!("#[allow(dead_code)]\nfn queries() {{\n{calls}}}\n\nfn main() {{}}\n"),
    );
}

/// Writes `dir/.sqlx/` for `queries` as `cargo sqlx prepare` would: each described on a
/// database migrated with `dir/migrations` (module and schema `demo`), in sqlx's serde form.
fn record_queries(dir: &Path, queries: &[&str]) {
    let sqlx_dir = dir.join(".sqlx");
    let _ = std::fs::remove_dir_all(&sqlx_dir);
    std::fs::create_dir_all(&sqlx_dir).unwrap();
    runtime().block_on(async {
        let db = TestDatabase::builder()
            .migrations(dir.join("migrations"))
            .module("demo")
            .schema("demo")
            .pool_size(0, 1)
            .build()
            .await
            .expect("test database");
        let mut conn = PgConnection::connect(&db.url()).await.unwrap();
        for q in queries {
            let describe = (&mut conn)
                .describe(sqlx::AssertSqlSafe(q.to_string()).into_sql_str())
                .await
                .unwrap_or_else(|e| panic!("{q}: {e}"));
            let hash = pgdbm_core::checked::sql_hash(q);
            let file = serde_json::json!({
                "db_name": "PostgreSQL",
                "query": q,
                "describe": describe,
                "hash": hash,
            });
            std::fs::write(
                sqlx_dir.join(format!("query-{hash}.json")),
                serde_json::to_string_pretty(&file).unwrap(),
            )
            .unwrap();
        }
        conn.close().await.unwrap();
    });
}

#[test]
fn a_dropped_column_fails_naming_the_query_and_the_migration() {
    let admin = test_server();
    let ws = tempfile::tempdir().unwrap();
    let dir = ws.path();
    small_workspace(dir, &[BY_ID, NAMES]);
    record_queries(dir, &[BY_ID, NAMES]);
    // The release after: email dropped, then an unrelated index.
    write(
        dir,
        "migrations/002_drop_email.sql",
        "ALTER TABLE {{tables.users}} DROP COLUMN email;\n",
    );
    write(
        dir,
        "migrations/003_names_index.sql",
        "CREATE INDEX users_name_idx ON {{tables.users}} (name);\n",
    );

    let r = pgdbm(dir, &["prepare", "--check-compat", ".sqlx"], &admin);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "old queries from the directory {}",
            dir.canonicalize().unwrap().join(".sqlx").display()
        )),
        "{r:?}"
    );
    let block = format!(
        "incompatible: {BY_ID}
  .sqlx/query-{}.json
  written at src/main.rs:3 (in {})
  broken by migrations/002_drop_email.sql
  does not prepare: column \"email\" does not exist (SQLSTATE 42703)
",
        pgdbm_core::checked::sql_hash(BY_ID),
        dir.canonicalize().unwrap().display()
    );
    assert!(r.stdout.contains(&block), "{r:?}");
    assert!(!r.stdout.contains(NAMES), "{r:?}");
    assert!(
        r.stdout
            .ends_with("2 old queries checked, 1 incompatible\n"),
        "{r:?}"
    );
    assert!(r.stderr.contains("error: 1 query of"), "{r:?}");

    // --json: the same, as a document.
    let r = pgdbm(
        dir,
        &["prepare", "--check-compat", dir.to_str().unwrap(), "--json"],
        &admin,
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["checked"], 2, "{doc}");
    assert_eq!(doc["incompatible"], 1, "{doc}");
    let q = &doc["queries"][0];
    assert_eq!(q["query"], BY_ID);
    assert_eq!(q["migration"], "migrations/002_drop_email.sql");
    assert_eq!(q["rejected"]["code"], "42703");
    assert_eq!(q["location"]["line"], 3);
}

#[test]
fn a_nullable_column_added_passes_and_select_star_is_noted() {
    let admin = test_server();
    let ws = tempfile::tempdir().unwrap();
    let dir = ws.path();
    small_workspace(dir, &[BY_ID, NAMES, EVERYTHING]);
    record_queries(dir, &[BY_ID, NAMES, EVERYTHING]);
    // A query another driver recorded says nothing about this schema: skipped, with a note.
    let mysql = "SELECT 1 FROM dual";
    write(
        dir,
        &format!(".sqlx/query-{}.json", pgdbm_core::checked::sql_hash(mysql)),
        &serde_json::json!({
            "db_name": "MySQL",
            "query": mysql,
            "describe": {"columns": [], "parameters": {"Right": 0}, "nullable": []},
            "hash": pgdbm_core::checked::sql_hash(mysql),
        })
        .to_string(),
    );
    write(
        dir,
        "migrations/002_add_nickname.sql",
        "ALTER TABLE {{tables.users}} ADD COLUMN nickname text;\n",
    );

    let r = pgdbm(dir, &["prepare", "--check-compat", ".sqlx"], &admin);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(!r.stdout.contains("incompatible:"), "{r:?}");
    assert!(
        r.stdout.contains(&format!(
            "changed, still compatible: {EVERYTHING}\n  .sqlx/query-{}.json\n  written at src/main.rs:5",
            pgdbm_core::checked::sql_hash(EVERYTHING)
        )),
        "{r:?}"
    );
    assert!(
        r.stdout
            .contains("  columns: 3 → 4; also returned now: 4 \"nickname\" (compatible)\n"),
        "{r:?}"
    );
    assert!(
        r.stdout
            .ends_with("3 old queries checked, 0 incompatible, 1 changed compatibly, 1 skipped (not PostgreSQL)\n"),
        "{r:?}"
    );
    assert!(
        r.stderr.contains(
            "pgdbm: skipped a query recorded for MySQL, not PostgreSQL: SELECT 1 FROM dual"
        ),
        "{r:?}"
    );

    // A type change is not compatible, and is spelled out: email NOT NULL text becomes a
    // nullable varchar.
    write(
        dir,
        "migrations/003_email_varchar.sql",
        "ALTER TABLE {{tables.users}} ALTER COLUMN email TYPE varchar(200), ALTER COLUMN email DROP NOT NULL;\n",
    );
    let r = pgdbm(dir, &["prepare", "--check-compat", ".sqlx"], &admin);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stdout.contains(&format!(
            "incompatible: {BY_ID}\n  .sqlx/query-{}.json\n  written at src/main.rs:3 (in {})\n  broken by migrations/003_email_varchar.sql\n  column 2 \"email\": text → varchar\n  column 2 \"email\" nullable: NOT NULL → nullable\n",
            pgdbm_core::checked::sql_hash(BY_ID),
            dir.canonicalize().unwrap().display()
        )),
        "{r:?}"
    );
}

/// `git ARGS` in `dir`, which must succeed.
fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=pgdbm tests",
            "-c",
            "user.email=tests@example.invalid",
        ])
        .args(args)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// A git repository whose workspace is in `service/` (not at the top), with release `v1`
/// committed and tagged: the queries `v1` ran and their `.sqlx/`.
fn released_repository(repo: &Path, queries: &[&str]) -> PathBuf {
    let dir = repo.join("service");
    small_workspace(&dir, queries);
    record_queries(&dir, queries);
    git(repo, &["init", "-q"]);
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "v1"]);
    git(repo, &["tag", "v1"]);
    dir
}

#[test]
fn a_git_ref_is_the_previous_release() {
    let admin = test_server();
    let repo = tempfile::tempdir().unwrap();
    let dir = released_repository(repo.path(), &[BY_ID, NAMES]);
    // The next release: email dropped, committed; the working tree's main.rs no longer has
    // the query (it moved on), so its call site can only come from the ref.
    write(
        &dir,
        "migrations/002_drop_email.sql",
        "ALTER TABLE {{tables.users}} DROP COLUMN email;\n",
    );
    set_queries(&dir, &[NAMES]);
    record_queries(&dir, &[NAMES]);
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "v2"]);

    for previous in ["v1", "HEAD~1"] {
        let r = pgdbm(&dir, &["prepare", "--check-compat", previous], &admin);
        assert_eq!(r.code, Some(1), "{r:?}");
        assert!(
            r.stderr.contains(&format!(
                "old queries from the git ref `{previous}` (commit "
            )),
            "{r:?}"
        );
        assert!(r.stderr.contains(", its service/.sqlx/"), "{r:?}");
        assert!(
            r.stdout.contains(&format!(
                "incompatible: {BY_ID}\n  .sqlx/query-{}.json\n  written at src/main.rs:3 (in {previous})\n  broken by migrations/002_drop_email.sql\n  does not prepare: column \"email\" does not exist (SQLSTATE 42703)\n",
                pgdbm_core::checked::sql_hash(BY_ID)
            )),
            "{r:?}"
        );
        assert!(
            r.stdout
                .ends_with("2 old queries checked, 1 incompatible\n"),
            "{r:?}"
        );
    }
    // The current release against itself passes.
    let r = pgdbm(&dir, &["prepare", "--check-compat", "HEAD"], &admin);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        r.stdout
            .ends_with("1 old queries checked, 0 incompatible\n"),
        "{r:?}"
    );

    // Neither a directory nor a ref: said so, nothing created.
    let r = pgdbm(&dir, &["prepare", "--check-compat", "v9"], &admin);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr.contains(
            "error: `v9` is neither a directory nor a git ref (no commit of the repository in "
        ),
        "{r:?}"
    );
}

#[test]
fn new_against_old_reports_a_new_query_the_old_schema_cannot_prepare() {
    let admin = test_server();
    let repo = tempfile::tempdir().unwrap();
    let dir = released_repository(repo.path(), &[BY_ID, NAMES]);
    // This release adds a column and a query that reads it; its code may reach replicas
    // before the migration runs.
    write(
        &dir,
        "migrations/002_add_nickname.sql",
        "ALTER TABLE {{tables.users}} ADD COLUMN nickname text;\n",
    );
    set_queries(&dir, &[BY_ID, NAMES, NICKNAMES]);
    record_queries(&dir, &[BY_ID, NAMES, NICKNAMES]);

    // The other direction finds nothing wrong: the old queries work on the new schema.
    let r = pgdbm(&dir, &["prepare", "--check-compat", "v1"], &admin);
    assert_eq!(r.code, Some(0), "{r:?}");

    let r = pgdbm(
        &dir,
        &["prepare", "--check-compat", "v1", "--new-against-old"],
        &admin,
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr
            .contains("schema: the migrations of the git ref `v1` (commit "),
        "{r:?}"
    );
    assert!(
        r.stdout.contains(&format!(
            "incompatible: {NICKNAMES}\n  .sqlx/query-{}.json\n  written at src/main.rs:5\n  needs migrations/002_add_nickname.sql (the schema of v1 is older)\n  does not prepare: column \"nickname\" does not exist (SQLSTATE 42703)\n",
            pgdbm_core::checked::sql_hash(NICKNAMES)
        )),
        "{r:?}"
    );
    assert!(
        r.stdout
            .ends_with("3 new queries checked, 1 incompatible\n"),
        "{r:?}"
    );

    // From a checkout directory of v1 as well; a bare .sqlx directory has no migrations.
    let v1 = tempfile::tempdir().unwrap();
    small_workspace(v1.path(), &[BY_ID, NAMES]);
    let r = pgdbm(
        &dir,
        &[
            "prepare",
            "--check-compat",
            v1.path().to_str().unwrap(),
            "--new-against-old",
        ],
        &admin,
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stdout.contains("needs migrations/002_add_nickname.sql"),
        "{r:?}"
    );
    let bare = tempfile::tempdir().unwrap();
    let copy = bare.path().join(".sqlx");
    std::fs::create_dir(&copy).unwrap();
    for f in std::fs::read_dir(dir.join(".sqlx")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
    }
    let r = pgdbm(
        &dir,
        &[
            "prepare",
            "--check-compat",
            copy.to_str().unwrap(),
            "--new-against-old",
        ],
        &admin,
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr.contains("a bare .sqlx directory has none"),
        "{r:?}"
    );
}

/// A realistic service: 20 migration files, 200 queries (selects, joins, inserts, updates);
/// every query passes, then the 100 that read a dropped column are each named. It also prints
/// what the check cost (`cargo test -p pgdbm-cli --test compat -- --nocapture cost`); the
/// figures are read, never asserted.
#[test]
fn cost_of_200_queries_and_20_migrations() {
    let admin = test_server();
    let ws = tempfile::tempdir().unwrap();
    let dir = ws.path();
    small_workspace(dir, &[]);
    write(
        dir,
        "migrations/002_posts.sql",
        "CREATE TABLE {{tables.posts}} (id bigint PRIMARY KEY, user_id bigint NOT NULL REFERENCES {{tables.users}} (id), title text NOT NULL, body text);\n",
    );
    for n in 3..=20 {
        write(
            dir,
            &format!("migrations/{n:03}_step.sql"),
            &format!(
                "ALTER TABLE {{{{tables.users}}}} ADD COLUMN c{n} int4;\nCREATE INDEX users_c{n}_idx ON {{{{tables.users}}}} (c{n});\n"
            ),
        );
    }
    let queries: Vec<String> = (0..200)
        .map(|i| match i % 4 {
            0 => format!("SELECT id, email, name, c{} FROM demo.users WHERE id = $1 AND {i} > 0", 3 + i % 18),
            1 => format!("SELECT u.email, p.title, p.body FROM demo.users u JOIN demo.posts p ON p.user_id = u.id WHERE u.id = $1 LIMIT {i}"),
            2 => format!("INSERT INTO demo.posts (id, user_id, title) VALUES ($1, $2, $3) RETURNING id, {i} AS n"),
            _ => format!("UPDATE demo.users SET name = $2, c{} = $3 WHERE id = $1 AND {i} > 0", 3 + i % 18),
        })
        .collect();
    let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    record_queries(dir, &refs);

    let timed = |what: &str| {
        let started = std::time::Instant::now();
        let r = pgdbm(dir, &["prepare", "--check-compat", ".sqlx"], &admin);
        eprintln!(
            "{what}: exit {:?} in {} ms\n{}",
            r.code,
            started.elapsed().as_millis(),
            r.stderr
                .lines()
                .filter(|l| l.contains("described"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        r
    };
    let r = timed("200 queries, 20 files, none broken");
    assert_eq!(r.code, Some(0), "{r:?}");
    // A column 50 queries read dropped: the file-by-file walk runs for those 50.
    write(
        dir,
        "migrations/021_drop_name.sql",
        "ALTER TABLE {{tables.users}} DROP COLUMN name;\n",
    );
    let r = timed("200 queries, 21 files, 100 broken by the last");
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stdout
            .ends_with("200 old queries checked, 100 incompatible\n"),
        "{}",
        r.stdout
    );
}
