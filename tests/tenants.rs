//! Tenants: one schema per tenant on a shared pool; every query path of a tenant handle reads and
//! writes only that tenant's rows, and the `tsql!` queries checked for `myservice` never run in
//! the wrong schema.

use std::path::Path;
use std::time::Instant;

use futures_util::StreamExt;
use pgdbm::tenants::TenantErrorKind;
use pgdbm::testing::TestDatabase;
use pgdbm::{
    Database, DatabaseConfig, Error, SharedPool, Tenants, tsql, tsql_as, tsql_scalar, tsql_str,
};

const MIGRATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");

#[derive(Debug, PartialEq)]
struct User {
    id: i64,
    email: String,
    name: Option<String>,
}

/// A database of the test's own, with a shared pool on it (a checkout waits at most 5 s, so
/// a pool that runs dry fails the test instead of hanging it).
async fn shared_pool(max: usize) -> (TestDatabase, SharedPool) {
    let t = TestDatabase::builder()
        .pool_size(0, 1)
        .build()
        .await
        .unwrap();
    let pool = SharedPool::connect(
        DatabaseConfig::new(t.url())
            .min_connections(1)
            .max_connections(max)
            .acquire_timeout(std::time::Duration::from_secs(5)),
    )
    .await
    .unwrap();
    (t, pool)
}

fn tenant_kind(e: &Error) -> Option<TenantErrorKind> {
    match e {
        Error::Tenant { kind, .. } => Some(*kind),
        _ => None,
    }
}

/// Writes `tag`'s rows into `db` through every path, then reads them back through every path.
async fn write_and_read_every_path(db: &Database, tag: &str) -> Vec<String> {
    let email = |n: &str| format!("{n}@{tag}.example");
    // Database methods: templated strings and tsql_str! output.
    db.execute(
        "INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2)",
        (email("methods"), tag),
    )
    .await
    .unwrap();
    db.execute(
        tsql_str!("INSERT INTO <<tables.users>> (email, name) VALUES ($1, $2)"),
        (email("tsql_str"), tag),
    )
    .await
    .unwrap();
    // tsql! through &Database.
    let id = tsql!(
        "INSERT INTO <<tables.users>> (email, name) VALUES ($1, $2) RETURNING id",
        email("tsql"),
        tag
    )
    .fetch_one(db)
    .await
    .unwrap()
    .id;
    // A transaction and a savepoint, as executors and through their methods.
    let mut tx = db.transaction().await.unwrap();
    tsql!(
        "INSERT INTO <<tables.users>> (email, name) VALUES ($1, $2) RETURNING id",
        email("tx"),
        tag
    )
    .fetch_one(&mut tx)
    .await
    .unwrap();
    {
        let mut sp = tx.transaction().await.unwrap();
        tsql!(
            "INSERT INTO <<tables.users>> (email, name) VALUES ($1, $2) RETURNING id",
            email("savepoint"),
            tag
        )
        .fetch_one(&mut sp)
        .await
        .unwrap();
        sp.execute(
            tsql_str!("INSERT INTO <<tables.users>> (email, name) VALUES ($1, $2)"),
            (email("savepoint_method"), tag),
        )
        .await
        .unwrap();
        sp.commit().await.unwrap();
    }
    tx.commit().await.unwrap();
    // COPY.
    db.copy_in(
        "users",
        &["email", "name"],
        [(email("copy"), tag.to_string())],
    )
    .await
    .unwrap();
    // An acquired connection.
    let mut conn = db.acquire().await.unwrap();
    tsql!(
        "INSERT INTO <<tables.users>> (email, name) VALUES ($1, $2) RETURNING id",
        email("acquire"),
        tag
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    drop(conn);

    // Read back through each path: each sees exactly this tenant's 8 rows.
    let by_id = tsql_as!(
        User,
        "SELECT id, email, name FROM <<tables.users>> WHERE id = $1",
        id
    )
    .fetch_optional(db)
    .await
    .unwrap()
    .unwrap();
    assert_eq!(by_id.email, email("tsql"));
    assert_eq!(by_id.name.as_deref(), Some(tag));
    let count = tsql_scalar!("SELECT count(*) FROM <<tables.users>>")
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(count, Some(8));
    let names: Vec<(Option<String>,)> = db
        .fetch_all(tsql_str!("SELECT name FROM <<tables.users>>"), ())
        .await
        .unwrap();
    assert!(
        names.iter().all(|(n,)| n.as_deref() == Some(tag)),
        "{names:?}"
    );
    let mut tx = db.transaction().await.unwrap();
    let in_tx = tsql_scalar!("SELECT count(*) FROM <<tables.users>>")
        .fetch_one(&mut tx)
        .await
        .unwrap();
    assert_eq!(in_tx, Some(8));
    tx.rollback().await.unwrap();
    let mut emails: Vec<String> = tsql_scalar!("SELECT email FROM <<tables.users>>")
        .fetch_all(db)
        .await
        .unwrap();
    emails.sort();
    emails
}

#[tokio::test]
async fn each_tenant_reads_and_writes_only_its_own_rows_on_every_path() {
    let (t, pool) = shared_pool(6).await;
    let tenants = Tenants::new(&pool, "myservice", MIGRATIONS);
    let mut seen = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        let db = tenants.create(name).await.unwrap();
        assert_eq!(db.schema(), Some(format!("tenant_{name}").as_str()));
        seen.push(write_and_read_every_path(&db, name).await);
    }
    for (emails, tag) in seen.iter().zip(["alpha", "beta", "gamma"]) {
        assert_eq!(emails.len(), 8);
        assert!(
            emails
                .iter()
                .all(|e| e.ends_with(&format!("@{tag}.example")))
        );
    }
    // The rows are really where they belong, and the compile-time schema got none.
    for name in ["alpha", "beta", "gamma"] {
        let n: Option<i64> = t
            .fetch_value(
                &format!("SELECT count(*) FROM tenant_{name}.users WHERE name = $1"),
                (name,),
            )
            .await
            .unwrap();
        assert_eq!(n, Some(8));
    }
    let leaked: Option<bool> = t
        .fetch_value(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = 'myservice')",
            (),
        )
        .await
        .unwrap();
    assert_eq!(leaked, Some(false));
    pool.close().await;
}

#[tokio::test]
async fn a_handle_of_another_schema_refuses_a_tsql_query_and_sends_nothing() {
    let (_t, pool) = shared_pool(2).await;
    let other = pool.database(Some("other")).unwrap();
    other.create_schema().await.unwrap();
    let e = tsql_scalar!("SELECT count(*) FROM <<tables.users>>")
        .fetch_one(&other)
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("`myservice`") && msg.contains("`other`") && msg.contains("Tenants::get"),
        "{msg}"
    );
    let e = other
        .fetch_all::<(i64,), _>(tsql_str!("SELECT id FROM <<tables.users>>"), ())
        .await
        .unwrap_err();
    match &e {
        Error::SchemaMismatch {
            compiled_for,
            handle,
        } => {
            assert_eq!(compiled_for, "myservice");
            assert_eq!(handle.as_deref(), Some("other"));
        }
        other => panic!("expected SchemaMismatch, got {other:?}"),
    }
    // In a transaction, and with no schema at all, likewise.
    let mut tx = other.transaction().await.unwrap();
    assert!(
        tsql_scalar!("SELECT count(*) FROM <<tables.users>>")
            .fetch_one(&mut tx)
            .await
            .is_err()
    );
    tx.rollback().await.unwrap();
    let none = pool.database(None).unwrap();
    assert!(matches!(
        none.execute(tsql_str!("DELETE FROM <<tables.users>>"), ())
            .await
            .unwrap_err(),
        Error::SchemaMismatch { handle: None, .. }
    ));
    pool.close().await;
}

#[tokio::test]
async fn lifecycle_create_get_list_drop_and_bad_names() {
    let (t, pool) = shared_pool(4).await;
    let tenants = Tenants::new(&pool, "myservice", MIGRATIONS);
    assert_eq!(tenants.list().await.unwrap(), Vec::<String>::new());
    for bad in ["", "Acme", "1acme", "acme-corp", "a b", "acme;drop"] {
        let e = tenants.create(bad).await.unwrap_err();
        assert_eq!(
            tenant_kind(&e),
            Some(TenantErrorKind::InvalidName),
            "{bad}: {e}"
        );
        let e = tenants.get(bad).await.unwrap_err();
        assert_eq!(
            tenant_kind(&e),
            Some(TenantErrorKind::InvalidName),
            "{bad}: {e}"
        );
    }
    let e = tenants.get("acme").await.unwrap_err();
    assert_eq!(tenant_kind(&e), Some(TenantErrorKind::Unknown), "{e}");
    tenants.create("acme").await.unwrap();
    let e = tenants.create("acme").await.unwrap_err();
    assert_eq!(tenant_kind(&e), Some(TenantErrorKind::Exists), "{e}");
    tenants.create("bravo").await.unwrap();
    assert_eq!(tenants.list().await.unwrap(), ["acme", "bravo"]);
    assert_eq!(
        tenants.get("acme").await.unwrap().schema(),
        Some("tenant_acme")
    );

    let e = tenants.drop("acme", "yes").await.unwrap_err();
    assert_eq!(tenant_kind(&e), Some(TenantErrorKind::NotConfirmed), "{e}");
    assert_eq!(tenants.list().await.unwrap(), ["acme", "bravo"]);
    tenants.drop("acme", "acme").await.unwrap();
    assert_eq!(tenants.list().await.unwrap(), ["bravo"]);
    let e = tenants.get("acme").await.unwrap_err();
    assert_eq!(tenant_kind(&e), Some(TenantErrorKind::Unknown), "{e}");
    let gone: Option<bool> = t
        .fetch_value(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'tenant_acme')",
            (),
        )
        .await
        .unwrap();
    assert_eq!(gone, Some(false));
    // A tenant whose creation died before its registry row is absent, and create finishes it.
    let half = pool.database(Some("tenant_crashed")).unwrap();
    half.create_schema().await.unwrap();
    assert_eq!(
        tenant_kind(&tenants.get("crashed").await.unwrap_err()),
        Some(TenantErrorKind::Unknown)
    );
    let db = tenants.create("crashed").await.unwrap();
    assert!(db.table_exists("users").await.unwrap());
    pool.close().await;
}

#[tokio::test]
async fn concurrent_creates_of_one_name_one_wins_the_other_gets_exists() {
    let (t, pool_a) = shared_pool(4).await;
    let pool_b = SharedPool::connect(
        DatabaseConfig::new(t.url())
            .min_connections(1)
            .max_connections(4),
    )
    .await
    .unwrap();
    let a = Tenants::new(&pool_a, "myservice", MIGRATIONS);
    let b = Tenants::new(&pool_b, "myservice", MIGRATIONS);
    let (ra, rb) = tokio::join!(a.create("race"), b.create("race"));
    let kinds: Vec<Option<TenantErrorKind>> = [&ra, &rb]
        .iter()
        .map(|r| r.as_ref().err().and_then(tenant_kind))
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| k.is_none()).count(),
        1,
        "{ra:?} {rb:?}"
    );
    assert!(
        kinds.contains(&Some(TenantErrorKind::Exists)),
        "{ra:?} {rb:?}"
    );
    assert_eq!(a.list().await.unwrap(), ["race"]);
    let history: Option<i64> = t
        .fetch_value("SELECT count(*) FROM tenant_race.schema_migrations", ())
        .await
        .unwrap();
    assert_eq!(history, Some(3));
    pool_a.close().await;
    pool_b.close().await;
}

#[tokio::test]
async fn the_shared_pool_pins_search_path_so_unqualified_names_fail() {
    let (t, pool) = shared_pool(2).await;
    let db = pool.database(None).unwrap();
    let path: Option<String> = db.fetch_value("SHOW search_path", ()).await.unwrap();
    assert_eq!(path.as_deref(), Some("pg_catalog"));
    t.execute("CREATE TABLE public.stray (id int)", ())
        .await
        .unwrap();
    let e = db.execute("SELECT * FROM stray", ()).await.unwrap_err();
    assert_eq!(e.code(), Some("42P01"), "{e}");
    pool.close().await;
    let unpinned = SharedPool::connect_unpinned(DatabaseConfig::new(t.url()).min_connections(1))
        .await
        .unwrap();
    let db = unpinned.database(None).unwrap();
    db.execute("SELECT * FROM stray", ()).await.unwrap();
    unpinned.close().await;
}

fn copy_migrations(to: &Path) {
    for entry in std::fs::read_dir(MIGRATIONS).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_tenants_migrate_all_with_one_broken_then_fixed() {
    let (t, pool) = shared_pool(12).await;
    let dir = tempfile::tempdir().unwrap();
    copy_migrations(dir.path());
    let tenants = Tenants::new(&pool, "myservice", dir.path()).concurrency(8);

    let started = Instant::now();
    let names: Vec<String> = (0..200).map(|i| format!("t{i:03}")).collect();
    let created: Vec<_> = futures_util::stream::iter(&names)
        .map(|n| tenants.create(n))
        .buffer_unordered(8)
        .collect()
        .await;
    let create_time = started.elapsed();
    assert!(created.iter().all(Result::is_ok));
    assert_eq!(tenants.list().await.unwrap().len(), 200);

    std::fs::write(
        dir.path().join("004_add_nickname.sql"),
        "ALTER TABLE {{tables.users}} ADD COLUMN nickname TEXT;\n",
    )
    .unwrap();
    // Broken on purpose: the column the migration adds is there already.
    t.execute("ALTER TABLE tenant_t042.users ADD COLUMN nickname TEXT", ())
        .await
        .unwrap();
    let started = Instant::now();
    let report = tenants.migrate_all().await.unwrap();
    let migrate_time = started.elapsed();
    assert_eq!(report.len(), 200);
    let failed: Vec<&str> = report
        .iter()
        .filter(|r| r.outcome.is_err())
        .map(|r| r.tenant.as_str())
        .collect();
    assert_eq!(failed, ["t042"]);
    let err = report[42].outcome.as_ref().unwrap_err().to_string();
    assert!(
        err.contains("004_add_nickname.sql") && err.contains("nickname"),
        "{err}"
    );
    let applied = report
        .iter()
        .filter(|r| matches!(&r.outcome, Ok(m) if m.applied.len() == 1))
        .count();
    assert_eq!(applied, 199);

    // Fixed, and rerun: only the broken one has anything to do.
    t.execute("ALTER TABLE tenant_t042.users DROP COLUMN nickname", ())
        .await
        .unwrap();
    let started = Instant::now();
    let rerun = tenants.migrate_all().await.unwrap();
    let rerun_time = started.elapsed();
    let did: Vec<&str> = rerun
        .iter()
        .filter(|r| matches!(&r.outcome, Ok(m) if !m.applied.is_empty()))
        .map(|r| r.tenant.as_str())
        .collect();
    assert_eq!(did, ["t042"]);
    assert!(rerun.iter().all(|r| r.outcome.is_ok()));
    eprintln!(
        "tenants: created 200 tenants (3 files each) in {create_time:?}; migrate_all of a 4th file in {migrate_time:?} (199 applied, 1 failed); rerun after the fix in {rerun_time:?}"
    );
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_creates_do_not_exhaust_a_small_pool() {
    let (_t, pool) = shared_pool(3).await;
    let tenants = Tenants::new(&pool, "myservice", MIGRATIONS);
    let names: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    let results = futures_util::future::join_all(names.iter().map(|n| tenants.create(n))).await;
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    assert_eq!(tenants.list().await.unwrap().len(), 20);
    pool.close().await;
}
