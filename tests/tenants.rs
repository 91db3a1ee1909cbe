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

/// Creates `names` as tenants, 8 at a time, and says how long it took.
async fn create_all(tenants: &Tenants, names: &[String]) -> std::time::Duration {
    let started = Instant::now();
    let created: Vec<_> = futures_util::stream::iter(names)
        .map(|n| async move { (n, tenants.create(n).await) })
        .buffer_unordered(8)
        .collect()
        .await;
    for (name, r) in &created {
        assert!(r.is_ok(), "{name}: {r:?}");
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_walk_every_tenant_once_in_order() {
    let (_t, pool) = shared_pool(6).await;
    let tenants = Tenants::new(&pool, "myservice", MIGRATIONS);
    // No registry yet: an empty last page, and a count of 0.
    assert_eq!(
        tenants.list_page(None, 10).await.unwrap(),
        empty_page(&tenants).await
    );
    assert_eq!(tenants.count().await.unwrap(), 0);

    let names: Vec<String> = (0..25).map(|i| format!("t{i:03}")).collect();
    create_all(&tenants, &names).await;
    // Another module's tenants share the registry and never show up in this module's pages.
    let other = Tenants::new(&pool, "other", MIGRATIONS).schema_prefix("other_");
    other.create("t0005").await.unwrap();
    other.create("zz").await.unwrap();
    assert_eq!(tenants.count().await.unwrap(), 25);
    assert_eq!(other.count().await.unwrap(), 2);
    assert_eq!(tenants.list().await.unwrap(), names);

    for limit in [1, 4, 5, 7, 24, 25, 26, 1000] {
        let pages = walk(&tenants, None, limit).await;
        let flat: Vec<String> = pages.iter().flat_map(|p| p.names.clone()).collect();
        assert_eq!(flat, names, "limit {limit}: every tenant once, in order");
        assert_eq!(pages.len(), 25usize.div_ceil(limit), "limit {limit}");
        for (i, page) in pages.iter().enumerate() {
            let last = i == pages.len() - 1;
            if !last {
                assert_eq!(page.names.len(), limit, "limit {limit}, page {i}");
                assert_eq!(page.next.as_ref(), page.names.last(), "limit {limit}");
            } else {
                // Exact: no empty page after a full last one.
                assert_eq!(page.next, None, "limit {limit}");
                assert_eq!(page.names.len(), 25 - limit * i, "limit {limit}");
            }
        }
    }

    // `after` need not be a tenant: the page starts at the first name after it.
    let page = tenants.list_page(Some("t0105"), 3).await.unwrap();
    assert_eq!(page.names, ["t011", "t012", "t013"]);
    assert_eq!(page.next.as_deref(), Some("t013"));
    let page = tenants.list_page(Some("a"), 2).await.unwrap();
    assert_eq!(page.names, ["t000", "t001"]);
    let page = tenants.list_page(Some("t024"), 5).await.unwrap();
    assert_eq!(page, empty_page(&tenants).await);
    let page = tenants.list_page(Some("zzz"), 5).await.unwrap();
    assert!(page.names.is_empty() && page.next.is_none(), "{page:?}");
    let other_page = other.list_page(None, 10).await.unwrap();
    assert_eq!(other_page.names, ["t0005", "zz"]);

    // A limit of 0 is refused before anything is sent.
    let e = tenants.list_page(None, 0).await.unwrap_err();
    match &e {
        Error::InvalidInput { operation, message } => {
            assert_eq!(*operation, "list_page");
            assert!(message.contains("at least 1"), "{message}");
        }
        other => panic!("expected InvalidInput, got {other:?}"),
    }

    // Keyset pages do not shift when tenants come and go between them: a tenant dropped
    // ahead of the cursor is simply absent, one created behind it is not seen, and nothing
    // repeats or goes missing.
    let first = tenants.list_page(None, 10).await.unwrap();
    assert_eq!(first.next.as_deref(), Some("t009"));
    tenants.drop("t015", "t015").await.unwrap();
    tenants.create("t0001").await.unwrap();
    let rest = walk(&tenants, first.next.as_deref(), 10).await;
    let rest: Vec<String> = rest.into_iter().flat_map(|p| p.names).collect();
    let expected: Vec<String> = names[10..]
        .iter()
        .filter(|n| *n != "t015")
        .cloned()
        .collect();
    assert_eq!(rest, expected);
    assert_eq!(tenants.count().await.unwrap(), 25);
    pool.close().await;
}

/// What a page past the end looks like (built through a real call, since the struct is
/// `#[non_exhaustive]`).
async fn empty_page(tenants: &Tenants) -> pgdbm::tenants::TenantPage {
    let page = tenants.list_page(Some("zzz"), 1).await.unwrap();
    assert!(page.names.is_empty(), "{page:?}");
    assert_eq!(page.next, None);
    page
}

/// Every page from `after` to the end, `limit` names at a time (at most 1,000 pages).
async fn walk(
    tenants: &Tenants,
    after: Option<&str>,
    limit: usize,
) -> Vec<pgdbm::tenants::TenantPage> {
    let mut pages = Vec::new();
    let mut after = after.map(str::to_string);
    for _ in 0..1000 {
        let page = tenants.list_page(after.as_deref(), limit).await.unwrap();
        after = page.next.clone();
        pages.push(page);
        if after.is_none() {
            return pages;
        }
    }
    panic!("list_page never ended at limit {limit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tenants_migrate_all_with_one_broken_then_fixed() {
    const N: usize = 1000;
    let (t, pool) = shared_pool(12).await;
    let dir = tempfile::tempdir().unwrap();
    copy_migrations(dir.path());
    let tenants = Tenants::new(&pool, "myservice", dir.path()).concurrency(8);

    let names: Vec<String> = (0..N).map(|i| format!("t{i:04}")).collect();
    let create_time = create_all(&tenants, &names).await;
    assert_eq!(tenants.count().await.unwrap(), N);

    std::fs::write(
        dir.path().join("004_add_nickname.sql"),
        "ALTER TABLE {{tables.users}} ADD COLUMN nickname TEXT;\n",
    )
    .unwrap();
    // Broken on purpose: the column the migration adds is there already.
    t.execute(
        "ALTER TABLE tenant_t0420.users ADD COLUMN nickname TEXT",
        (),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut seen = Vec::new();
    let report = tenants
        .migrate_all_with(|p| {
            assert_eq!(p.total, N);
            seen.push((
                p.done,
                p.failed,
                p.last.tenant.clone(),
                p.last.outcome.is_err(),
            ));
        })
        .await
        .unwrap();
    let migrate_time = started.elapsed();

    // The outcomes, one per tenant, in name order.
    assert_eq!(report.len(), N);
    let reported: Vec<&str> = report.iter().map(|r| r.tenant.as_str()).collect();
    assert_eq!(reported, names);
    let failed: Vec<&str> = report
        .iter()
        .filter(|r| r.outcome.is_err())
        .map(|r| r.tenant.as_str())
        .collect();
    assert_eq!(failed, ["t0420"]);
    let err = report[420].outcome.as_ref().unwrap_err().to_string();
    assert!(
        err.contains("004_add_nickname.sql") && err.contains("nickname"),
        "{err}"
    );
    let applied = report
        .iter()
        .filter(|r| matches!(&r.outcome, Ok(m) if m.applied.len() == 1 && m.applied[0].filename == "004_add_nickname.sql"))
        .count();
    assert_eq!(applied, N - 1);
    // The rest really have the column; the broken one has only what it was given.
    let with_column: Option<i64> = t
        .fetch_value(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema LIKE 'tenant\\_%' AND table_name = 'users' AND column_name = 'nickname'",
            (),
        )
        .await
        .unwrap();
    assert_eq!(with_column, Some(N as i64));
    let history: Option<i64> = t
        .fetch_value(
            "SELECT count(*) FROM tenant_t0420.schema_migrations WHERE filename = '004_add_nickname.sql'",
            (),
        )
        .await
        .unwrap();
    assert_eq!(history, Some(0));

    // Progress: one call per tenant, `done` counting up by one, the failure counted once it
    // happened and named with its outcome.
    let dones: Vec<usize> = seen.iter().map(|s| s.0).collect();
    assert_eq!(dones, (1..=N).collect::<Vec<_>>());
    let failing: Vec<&(usize, usize, String, bool)> = seen.iter().filter(|s| s.3).collect();
    assert_eq!(failing.len(), 1);
    assert_eq!(failing[0].2, "t0420");
    let at = failing[0].0;
    assert!(seen[..at - 1].iter().all(|s| s.1 == 0));
    assert!(seen[at - 1..].iter().all(|s| s.1 == 1));
    let mut finished: Vec<&str> = seen.iter().map(|s| s.2.as_str()).collect();
    finished.sort_unstable();
    assert_eq!(finished, names);

    // Fixed, and rerun: only the broken one has anything to do.
    t.execute("ALTER TABLE tenant_t0420.users DROP COLUMN nickname", ())
        .await
        .unwrap();
    let started = Instant::now();
    let rerun = tenants.migrate_all().await.unwrap();
    let rerun_time = started.elapsed();
    assert_eq!(rerun.len(), N);
    let did: Vec<&str> = rerun
        .iter()
        .filter(|r| matches!(&r.outcome, Ok(m) if !m.applied.is_empty()))
        .map(|r| r.tenant.as_str())
        .collect();
    assert_eq!(did, ["t0420"]);
    assert!(rerun.iter().all(|r| r.outcome.is_ok()));
    eprintln!(
        "tenants: created {N} tenants (3 files each, 8 at a time) in {create_time:?}; migrate_all of a 4th file in {migrate_time:?} ({} applied, 1 failed); rerun after the fix in {rerun_time:?}",
        N - 1
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
