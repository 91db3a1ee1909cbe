//! Tenants on a pool split into lanes (`DatabaseConfig::tenant_lanes`): a tenant's statements
//! prefer its lane's connections, take other lanes' when theirs are busy, and every row any of
//! them reads is its own tenant's — under concurrency with statement caches too small for the
//! tenants (evictions and steals on every connection), while the server kills the pool's
//! sessions, and through PgBouncer in transaction mode.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use pgdbm::config::PoolerMode;
use pgdbm::testing::TestDatabase;
use pgdbm::{Database, DatabaseConfig, SharedPool, Tenants, tsql_as};
use support::myservice::User;
use support::pg_server::PgServer;
use support::pgbouncer::PgBouncer;

const MIGRATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
const USERS: i64 = 5;

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Creates tenants `t0` … `t{n-1}` (4 at a time), each with users `u1@tI` … `u5@tI`.
async fn make_tenants(pool: &SharedPool, n: usize) -> Vec<Database> {
    let tenants = Tenants::new(pool, "myservice", MIGRATIONS);
    let mut made: Vec<(usize, Database)> = futures_util::stream::iter(0..n)
        .map(|i| {
            let tenants = &tenants;
            async move {
                let db = tenants.create(&format!("t{i}")).await.unwrap();
                db.execute(
                    "INSERT INTO {{tables.users}} (email) SELECT 'u' || g || '@t' || $1::int8 FROM generate_series(1, $2::int8) g",
                    (i as i64, USERS),
                )
                .await
                .unwrap();
                (i, db)
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    made.sort_by_key(|(i, _)| *i);
    made.into_iter().map(|(_, db)| db).collect()
}

/// The handles of tenants `t0` … `t{n-1}` on `pool`.
async fn handles(pool: &SharedPool, n: usize) -> Vec<Database> {
    let tenants = Tenants::new(pool, "myservice", MIGRATIONS);
    let mut v = Vec::new();
    for i in 0..n {
        v.push(tenants.get(&format!("t{i}")).await.unwrap());
    }
    v
}

/// What the load saw: reads checked, and the errors (which the caller judges).
#[derive(Default)]
struct Seen {
    reads: AtomicUsize,
    writes: AtomicUsize,
    errors: std::sync::Mutex<Vec<String>>,
}

/// `tasks` tasks, `ops` operations each, on tenants picked pseudo-randomly: a `tsql_as!` point
/// query, a rendered query over the whole table, and a write read back in its transaction.
/// Every row read must be the tenant's own (a foreign row panics the task); errors are kept.
async fn load(handles: Arc<Vec<Database>>, tasks: usize, ops: usize, seen: Arc<Seen>) {
    let workers: Vec<_> = (0..tasks)
        .map(|task| {
            let (handles, seen) = (handles.clone(), seen.clone());
            tokio::spawn(async move {
                let mut x = task as u64 * 7919 + 1;
                for op in 0..ops {
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let t = (x >> 33) as usize % handles.len();
                    let db = &handles[t];
                    let tag = format!("@t{t}");
                    let r = match op % 3 {
                        0 => {
                            let id = (x >> 20) as i64 % USERS + 1;
                            tsql_as!(
                                User,
                                "SELECT id, email, name FROM <<tables.users>> WHERE id = $1",
                                id
                            )
                            .fetch_one(db)
                            .await
                            .map_err(pgdbm::Error::from)
                            .map(|u| {
                                assert_eq!(
                                    u.email,
                                    format!("u{id}{tag}"),
                                    "tenant {t} read a foreign row"
                                );
                                seen.reads.fetch_add(1, Ordering::Relaxed);
                            })
                        }
                        1 => db
                            .fetch_all::<(String,), _>("SELECT email FROM {{tables.users}}", ())
                            .await
                            .map(|rows| {
                                assert!(rows.len() >= USERS as usize);
                                for (email,) in rows {
                                    assert!(email.ends_with(&tag), "tenant {t} read {email}");
                                }
                                seen.reads.fetch_add(1, Ordering::Relaxed);
                            }),
                        _ => write_in_tx(db, &format!("w{task}-{op}{tag}"), &tag)
                            .await
                            .map(|()| {
                                seen.writes.fetch_add(1, Ordering::Relaxed);
                            }),
                    };
                    if let Err(e) = r {
                        seen.errors.lock().unwrap().push(format!("tenant {t}: {e}"));
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await
            .expect("a load task saw a foreign row (or panicked)");
    }
}

/// Inserts `email` in a transaction and reads the tenant's rows back in it: all of them `tag`'s.
async fn write_in_tx(db: &Database, email: &str, tag: &str) -> pgdbm::Result<()> {
    let mut tx = db.transaction().await?;
    tx.execute("INSERT INTO {{tables.users}} (email) VALUES ($1)", (email,))
        .await?;
    let rows: Vec<(String,)> = tx
        .fetch_all(
            "SELECT email FROM {{tables.users}} WHERE email = $1 OR id = 1",
            (email,),
        )
        .await?;
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (e,) in &rows {
        assert!(e.ends_with(tag), "a transaction of {tag} read {e}");
    }
    tx.commit().await
}

/// Every tenant's table holds its own rows only.
async fn assert_tables_are_their_own(handles: &[Database]) {
    for (t, db) in handles.iter().enumerate() {
        let rows: Vec<(String,)> = db
            .fetch_all("SELECT email FROM {{tables.users}}", ())
            .await
            .unwrap();
        let tag = format!("@t{t}");
        assert!(rows.len() >= USERS as usize, "tenant {t}: {rows:?}");
        assert!(
            rows.iter().all(|(e,)| e.ends_with(&tag)),
            "tenant {t}: {rows:?}"
        );
    }
}

fn config(url: &str, max: usize, lanes: usize) -> DatabaseConfig {
    DatabaseConfig::new(url)
        .min_connections(1)
        .max_connections(max)
        .tenant_lanes(lanes)
        // Far fewer statements than tenants × queries: every connection evicts, so a statement
        // prepared for one tenant is re-prepared, and stolen connections serve other lanes.
        .statement_cache_capacity(8)
        .acquire_timeout(Duration::from_secs(20))
        .slow_query_threshold(None)
}

/// A database of the test's own, a pool of 8 connections in 4 lanes on it, and `n` tenants.
async fn tenants_on_lanes(n: usize) -> (TestDatabase, SharedPool, Arc<Vec<Database>>) {
    let t = TestDatabase::builder()
        .pool_size(0, 1)
        .build()
        .await
        .unwrap();
    let pool = SharedPool::connect(config(&t.url(), 8, 4)).await.unwrap();
    let tenants = Arc::new(make_tenants(&pool, n).await);
    (t, pool, tenants)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_concurrency_every_row_read_is_its_tenants_and_a_tenant_keeps_to_its_lane() {
    let (_t, pool, tenants) = tenants_on_lanes(40).await;
    let seen = Arc::new(Seen::default());
    load(tenants.clone(), 16, 150, seen.clone()).await;
    let errors = seen.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(seen.reads.load(Ordering::Relaxed), 16 * 100);
    assert_eq!(seen.writes.load(Ordering::Relaxed), 16 * 50);
    assert_tables_are_their_own(&tenants).await;

    // One caller at a time, tenants taking turns: each tenant's statements run on its lane's
    // connections only (lanes of 2), and the tenants spread over the lanes. (One pool without
    // lanes hands the same most recently used connection to every tenant.)
    let mut pids = vec![HashSet::new(); 12];
    for _ in 0..10 {
        for (t, db) in tenants.iter().take(12).enumerate() {
            let pid: Option<i32> = db.fetch_value("SELECT pg_backend_pid()", ()).await.unwrap();
            pids[t].insert(pid.unwrap());
        }
    }
    for (t, p) in pids.iter().enumerate() {
        assert!(p.len() <= 2, "tenant {t} on {} connections", p.len());
    }
    let all: HashSet<i32> = pids.iter().flatten().copied().collect();
    assert!(
        all.len() >= 3,
        "12 tenants on {} connections: {pids:?}",
        all.len()
    );
    assert_eq!(pool.database(None).unwrap().pool_stats().max_size, 8);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_killed_mid_load_never_put_a_statement_in_another_tenants_schema() {
    let (t, pool, tenants) = tenants_on_lanes(24).await;
    let admin = pool.database(None).unwrap();
    let killer = pgdbm::Database::connect(
        DatabaseConfig::new(t.url())
            .no_schema()
            .max_connections(1)
            .min_connections(1),
    )
    .await
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let kills = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut killed = 0i64;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(150)).await;
                let n: Option<i64> = killer
                    .fetch_value(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                        (),
                    )
                    .await
                    .unwrap();
                killed += n.unwrap_or(0);
            }
            killer.close().await;
            killed
        })
    };
    let seen = Arc::new(Seen::default());
    load(tenants.clone(), 12, 150, seen.clone()).await;
    stop.store(true, Ordering::Relaxed);
    let killed = kills.await.unwrap();
    assert!(killed > 0, "no session was killed");
    // Statements cut by the kill may fail (a write's outcome is then unknown); none may have run
    // in another tenant's schema, which every read and the tables below check.
    let errors = seen.errors.lock().unwrap().clone();
    eprintln!(
        "{killed} sessions killed; {} reads, {} writes, {} errors",
        seen.reads.load(Ordering::Relaxed),
        seen.writes.load(Ordering::Relaxed),
        errors.len()
    );
    assert!(
        errors.len() < 12 * 150 / 4,
        "{} of {} operations failed: {errors:#?}",
        errors.len(),
        12 * 150
    );
    assert!(seen.reads.load(Ordering::Relaxed) > 12 * 150 / 3);
    assert_tables_are_their_own(&tenants).await;
    let after: Option<i64> = admin.fetch_value("SELECT 1::int8", ()).await.unwrap();
    assert_eq!(after, Some(1));
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_pgbouncer_in_transaction_mode_every_row_read_is_its_tenants() {
    let (server, bouncer) = blocking(|| {
        let server = PgServer::start();
        server.create_database("app");
        let bouncer = PgBouncer::start(server.port(), "transaction", 4);
        (server, bouncer)
    });
    // Made directly (a migration of the project needs a session), used through the pooler.
    let direct = SharedPool::connect(config(&server.url("app"), 4, 1))
        .await
        .unwrap();
    make_tenants(&direct, 16).await;
    direct.close().await;
    let pool =
        SharedPool::connect(config(&bouncer.url("app"), 12, 4).pgbouncer(PoolerMode::Transaction))
            .await
            .unwrap();
    let tenants = Arc::new(handles(&pool, 16).await);
    let seen = Arc::new(Seen::default());
    load(tenants.clone(), 12, 120, seen.clone()).await;
    let errors = seen.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(seen.reads.load(Ordering::Relaxed), 12 * 80);
    assert_tables_are_their_own(&tenants).await;
    let servers: i64 = blocking(|| {
        server.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' AND backend_type = 'client backend'",
        )
    })
    .parse()
    .unwrap();
    assert!(servers <= 4, "{servers} server connections for 12 clients");
    pool.close().await;
}
