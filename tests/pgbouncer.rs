//! Behind PgBouncer 1.18 (the Debian package), in transaction and in session mode: every query
//! path under a server pool smaller than the client count. Each test starts its own PostgreSQL
//! and PgBouncer on spare ports and stops them after.

mod support;

use std::time::Duration;

use pgdbm::config::PoolerMode;
use pgdbm::{Database, DatabaseConfig, Error, Migrator, SharedPool, tsql_as};
use sqlx::{Connection, Row};
use support::myservice::User;
use support::pg_server::PgServer;
use support::pgbouncer::PgBouncer;

const TASKS: usize = 64;
const QUERIES: usize = 10_000;
/// The paths of `one_request`.
const PATHS: usize = 13;

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// `myservice` through `url`, migrated through `direct` (the project has a
/// `-- pgdbm:no-transaction` file, which needs a session), with user 1 and a table `items`.
async fn service(url: &str, direct: &str, mode: PoolerMode, max: usize) -> Database {
    let migrator_db = Database::connect(DatabaseConfig::new(direct).schema("myservice"))
        .await
        .unwrap();
    assert!(support::myservice::migrate(&migrator_db).await > 0);
    migrator_db.close().await;
    let config = DatabaseConfig::new(url)
        .pgbouncer(mode)
        .schema("myservice")
        .min_connections(2)
        .max_connections(max)
        .statement_timeout(Some(Duration::from_secs(45)))
        .acquire_timeout(Duration::from_secs(60));
    let db = Database::connect(config).await.unwrap();
    // Up to date, read through the pooler (transaction mode: the history in a transaction).
    assert_eq!(support::myservice::migrate(&db).await, 0);
    support::myservice::insert_alice(&db).await;
    db.execute(
        "CREATE TABLE {{tables.items}} (id bigserial PRIMARY KEY, task int NOT NULL, \
         n int NOT NULL, label text NOT NULL)",
        (),
    )
    .await
    .unwrap();
    db
}

/// One query (or a few, for the transaction paths) through path `n % PATHS`; checks what came
/// back. Returns how many statements it sent.
async fn one_request(db: &Database, task: i32, n: i32) -> Result<usize, String> {
    let e = |e: Error| format!("path {}: {e}", n as usize % PATHS);
    let label = format!("t{task}n{n}");
    let want = |ok: bool, what: String| if ok { Ok(()) } else { Err(what) };
    Ok(match n as usize % PATHS {
        0 => {
            let rows = db
                .execute(
                    "INSERT INTO {{tables.items}} (task, n, label) VALUES ($1, $2, $3)",
                    (task, n, &label),
                )
                .await
                .map_err(e)?;
            want(rows == 1, format!("insert affected {rows}"))?;
            1
        }
        1 => {
            let id: i64 = db
                .execute_and_return_id(
                    "INSERT INTO {{tables.items}} (task, n, label) VALUES ($1, $2, $3)",
                    (task, n, &label),
                )
                .await
                .map_err(e)?;
            let (t, l): (i32, String) = db
                .fetch_one(
                    "SELECT task, label FROM {{tables.items}} WHERE id = $1",
                    (id,),
                )
                .await
                .map_err(e)?;
            want(t == task && l == label, format!("row {id}: {t} {l}"))?;
            2
        }
        2 => {
            let row: Option<(String,)> = db
                .fetch_optional(
                    "SELECT label FROM {{tables.items}} WHERE task = $1 AND n = $2",
                    (task, n - 2),
                )
                .await
                .map_err(e)?;
            let expected = format!("t{task}n{}", n - 2);
            want(
                row.as_ref().map(|r| &r.0) == Some(&expected),
                format!("{row:?}, expected {expected}"),
            )?;
            1
        }
        3 => {
            // Rows this task wrote through paths 0 and 1 so far.
            let rows: Vec<(i32,)> = db
                .fetch_all(
                    "SELECT n FROM {{tables.items}} WHERE task = $1 AND n < $2 AND n % $3 < 2 \
                     ORDER BY n",
                    (task, n, PATHS as i32),
                )
                .await
                .map_err(e)?;
            let expected: Vec<i32> = (0..n).filter(|k| (*k as usize % PATHS) < 2).collect();
            let got: Vec<i32> = rows.into_iter().map(|r| r.0).collect();
            want(got == expected, format!("{got:?}, expected {expected:?}"))?;
            1
        }
        4 => {
            let sum: Option<i64> = db
                .fetch_value(
                    "SELECT $1::int8 + $2::int8",
                    (i64::from(task), i64::from(n)),
                )
                .await
                .map_err(e)?;
            want(
                sum == Some(i64::from(task + n)),
                format!("{sum:?} for {task} + {n}"),
            )?;
            1
        }
        5 => {
            let rows = db
                .execute_many(
                    "INSERT INTO {{tables.items}} (task, n, label) VALUES ($1, $2, $3)",
                    [(-task, n, label.clone()), (-task, n + 1, label.clone())],
                )
                .await
                .map_err(e)?;
            want(rows == 2, format!("execute_many affected {rows}"))?;
            2
        }
        6 => {
            let mut tx = db.transaction().await.map_err(e)?;
            let id: i64 = tx
                .execute_and_return_id(
                    "INSERT INTO {{tables.items}} (task, n, label) VALUES ($1, $2, $3)",
                    (-task, -n, &label),
                )
                .await
                .map_err(e)?;
            {
                let mut sp = tx.transaction().await.map_err(e)?;
                sp.execute("DELETE FROM {{tables.items}} WHERE id = $1", (id,))
                    .await
                    .map_err(e)?;
                // Dropped: back to the savepoint, the row stays.
            }
            let l: Option<String> = tx
                .fetch_value("SELECT label FROM {{tables.items}} WHERE id = $1", (id,))
                .await
                .map_err(e)?;
            tx.commit().await.map_err(e)?;
            want(l.as_deref() == Some(&*label), format!("{l:?} in tx"))?;
            5
        }
        7 => {
            let u = tsql_as!(
                User,
                "SELECT id, email, name FROM <<tables.users>> WHERE id = $1",
                1_i64
            )
            .fetch_optional(db)
            .await
            .map_err(|x| format!("tsql: {x}"))?;
            want(
                matches!(&u, Some(u) if u.id == 1 && u.email == "alice@example.com"
                    && u.name.as_deref() == Some("Alice")),
                format!("{u:?}"),
            )?;
            1
        }
        8 => {
            let row = sqlx::query("SELECT $1::text || $2::text AS s")
                .bind(&label)
                .bind("!")
                .fetch_one(db)
                .await
                .map_err(|x| format!("sqlx::query: {x}"))?;
            let s: String = row.get("s");
            want(s == format!("{label}!"), s)?;
            1
        }
        9 => {
            let mut conn = db.acquire().await.map_err(e)?;
            let a: i32 = sqlx::query_scalar("SELECT $1::int4 * 2")
                .bind(n)
                .fetch_one(&mut conn)
                .await
                .map_err(|x| format!("acquire: {x}"))?;
            let b: i32 = sqlx::query_scalar("SELECT $1::int4 + 1")
                .bind(task)
                .fetch_one(&mut conn)
                .await
                .map_err(|x| format!("acquire: {x}"))?;
            want((a, b) == (n * 2, task + 1), format!("{a} {b}"))?;
            2
        }
        10 => {
            let rows = (0..3).map(|k| (-task, 1000 + n * 3 + k, label.clone()));
            let copied = db
                .copy_in("items", &["task", "n", "label"], rows)
                .await
                .map_err(e)?;
            want(copied == 3, format!("copied {copied}"))?;
            1
        }
        11 => {
            // The settings hold in every transaction (SET LOCAL), on whichever server it got.
            let t: Option<String> = db
                .fetch_value("SHOW statement_timeout", ())
                .await
                .map_err(e)?;
            want(
                t.as_deref() == Some("45s"),
                format!("statement_timeout {t:?}"),
            )?;
            let p: Option<String> = db.fetch_value("SHOW search_path", ()).await.map_err(e)?;
            want(
                p.as_deref() == Some("\"myservice\", public"),
                format!("search_path {p:?}"),
            )?;
            2
        }
        _ => {
            // No parameters: the simple protocol, a script of two statements.
            let rows = db
                .execute(
                    "UPDATE {{tables.items}} SET label = label WHERE id < 0; SELECT 1",
                    (),
                )
                .await
                .map_err(e)?;
            want(rows <= 1, format!("{rows}"))?;
            1
        }
    })
}

/// `TASKS` tasks share `QUERIES` requests; returns the statements sent and every error.
async fn mixed_load(db: &Database) -> (usize, Vec<String>) {
    let per_task = QUERIES.div_ceil(TASKS);
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let db = db.clone();
            tokio::spawn(async move {
                let (mut sent, mut errors) = (0, Vec::new());
                for n in 0..per_task {
                    match one_request(&db, task as i32 + 1, n as i32).await {
                        Ok(k) => sent += k,
                        Err(e) => errors.push(e),
                    }
                }
                (sent, errors)
            })
        })
        .collect();
    let (mut sent, mut errors) = (0, Vec::new());
    for t in tasks {
        let (s, e) = t.await.unwrap();
        sent += s;
        errors.extend(e);
    }
    (sent, errors)
}

fn assert_clean(mode: &str, sent: usize, errors: &[String]) {
    eprintln!(
        "pgbouncer {mode}: {} requests by {TASKS} tasks, {sent} statements, {} errors",
        TASKS * QUERIES.div_ceil(TASKS),
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "{mode}: {} errors; first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(sent >= QUERIES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_serves_every_path_with_fewer_server_connections_than_clients() {
    let (server, bouncer) = blocking(|| {
        let server = PgServer::start();
        server.create_database("app");
        let bouncer = PgBouncer::start(server.port(), "transaction", 8);
        (server, bouncer)
    });
    // 64 client connections, 8 server connections.
    let db = service(
        &bouncer.url("app"),
        &server.url("app"),
        PoolerMode::Transaction,
        TASKS,
    )
    .await;
    let (sent, errors) = mixed_load(&db).await;
    assert_clean("transaction mode", sent, &errors);
    assert!(
        db.pool_stats().size > 8,
        "more clients than servers: {:?}",
        db.pool_stats()
    );
    let servers: i64 = blocking(|| {
        server.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'app'",
        )
    })
    .parse()
    .unwrap();
    assert!(servers <= 8, "{servers} server connections");
    // Every row the load wrote is there, once.
    let per_task = QUERIES.div_ceil(TASKS);
    let written_by_0_and_1 = (0..per_task).filter(|k| k % PATHS < 2).count() * TASKS;
    let n: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.items}} WHERE task > 0", ())
        .await
        .unwrap();
    assert_eq!(n, Some(written_by_0_and_1 as i64));
    db.close().await;
    drop(bouncer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_serves_every_path() {
    let (server, bouncer) = blocking(|| {
        let server = PgServer::start();
        server.create_database("app");
        let bouncer = PgBouncer::start(server.port(), "session", 8);
        (server, bouncer)
    });
    // In session mode a client keeps its server connection: the pool fits in PgBouncer's.
    let db = service(
        &bouncer.url("app"),
        &server.url("app"),
        PoolerMode::Session,
        8,
    )
    .await;
    let (sent, errors) = mixed_load(&db).await;
    assert_clean("session mode", sent, &errors);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_that_need_a_session_are_refused_through_the_pooler_and_run_direct() {
    let (server, bouncer) = blocking(|| {
        let server = PgServer::start();
        server.create_database("app");
        let bouncer = PgBouncer::start(server.port(), "transaction", 2);
        (server, bouncer)
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("001_items.sql"),
        "CREATE TABLE {{tables.items}} (id int PRIMARY KEY, label text);",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("002_index.sql"),
        "-- pgdbm:no-transaction\nCREATE INDEX CONCURRENTLY items_label ON {{tables.items}} (label);",
    )
    .unwrap();
    let through = Database::connect(
        DatabaseConfig::new(bouncer.url("app"))
            .pgbouncer(PoolerMode::Transaction)
            .schema("svc"),
    )
    .await
    .unwrap();
    let e = Migrator::new(&through, dir.path(), "svc")
        .apply_pending()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("002_index.sql") && e.contains("direct URL"),
        "{e}"
    );
    assert!(
        !through.table_exists("svc.items").await.unwrap(),
        "refused before anything was applied"
    );
    // The direct URL applies them; the pooled handle then sees it all.
    let direct = Database::connect(DatabaseConfig::new(server.url("app")).schema("svc"))
        .await
        .unwrap();
    let report = Migrator::new(&direct, dir.path(), "svc")
        .apply_pending()
        .await
        .unwrap();
    assert_eq!(report.applied.len(), 2, "{report:?}");
    let idx: Option<i64> = through
        .fetch_value(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'svc' AND indexname = 'items_label'",
            (),
        )
        .await
        .unwrap();
    assert_eq!(idx, Some(1));
    direct.close().await;

    // A shared pool pins search_path through the pooler too (SET LOCAL in each transaction).
    let shared = SharedPool::connect(
        DatabaseConfig::new(bouncer.url("app")).pgbouncer(PoolerMode::Transaction),
    )
    .await
    .unwrap();
    let n: Option<i64> = shared
        .database(Some("svc"))
        .unwrap()
        .fetch_value("SELECT count(*) FROM {{tables.items}}", ())
        .await
        .unwrap();
    assert_eq!(n, Some(0));
    shared.close().await;

    // Session state cannot be promised in transaction mode: init commands are refused.
    let e = Database::connect(
        DatabaseConfig::new(bouncer.url("app"))
            .pgbouncer(PoolerMode::Transaction)
            .init_command("SET work_mem = '64MB'"),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("init_commands") && e.contains("SET LOCAL"),
        "{e}"
    );
    through.close().await;
}

/// What plain sqlx does that breaks behind PgBouncer, shown on the real thing: the startup
/// parameter it always sends, and the named statements it prepares even with its statement
/// cache off, which collide on a server connection that two clients share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_sqlx_breaks_behind_transaction_pooling_where_pgdbm_does_not() {
    let (_server, bouncer) = blocking(|| {
        let server = PgServer::start();
        server.create_database("app");
        let bouncer = PgBouncer::start(server.port(), "transaction", 1);
        (server, bouncer)
    });
    let opts: sqlx::postgres::PgConnectOptions = bouncer.url("app").parse().unwrap();
    let e = sqlx::PgConnection::connect_with(&opts).await.unwrap_err();
    assert!(
        e.to_string().contains("unsupported startup parameter"),
        "{e}"
    );

    let opts = opts.extra_float_digits(None).statement_cache_capacity(0);
    let mut a = sqlx::PgConnection::connect_with(&opts).await.unwrap();
    let mut b = sqlx::PgConnection::connect_with(&opts).await.unwrap();
    let q = "SELECT $1::int4 + 1";
    let one: i32 = sqlx::query_scalar(q)
        .bind(1)
        .fetch_one(&mut a)
        .await
        .unwrap();
    assert_eq!(one, 2);
    // One server connection: b's statement gets the same name on the same server.
    let e = sqlx::query_scalar::<_, i32>(q)
        .bind(1)
        .fetch_one(&mut b)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("prepared statement \"sqlx_s_1\" already exists"),
        "{e}"
    );
    a.close().await.unwrap();
    b.close().await.unwrap();

    // pgdbm in transaction mode, on that same one server connection.
    let db = Database::connect(
        DatabaseConfig::new(bouncer.url("app"))
            .pgbouncer(PoolerMode::Transaction)
            .min_connections(4)
            .max_connections(4),
    )
    .await
    .unwrap();
    for k in 0..50 {
        let v: i32 = sqlx::query_scalar(q).bind(k).fetch_one(&db).await.unwrap();
        assert_eq!(v, k + 1);
        let w: Option<i32> = db.fetch_value(q, (k,)).await.unwrap();
        assert_eq!(w, Some(k + 1));
    }
    // `prepare` names its statement whatever the cache: in a transaction, then on another
    // client connection sharing the one server connection, it must not collide.
    use sqlx::{Executor, SqlSafeStr};
    let mut t1 = db.transaction().await.unwrap();
    (&mut t1).prepare(q.into_sql_str()).await.unwrap();
    t1.commit().await.unwrap();
    let held = db.acquire().await.unwrap(); // t1's client connection (the pool is LIFO)
    let mut t2 = db.transaction().await.unwrap();
    (&mut t2).prepare(q.into_sql_str()).await.unwrap();
    t2.commit().await.unwrap();
    drop(held);
    db.close().await;
}
