//! `Database::verify_checked_queries`: the queries this workspace was compiled with (its
//! `.sqlx/`, embedded by `checked_queries!`) described against real databases whose schema
//! moved under them, by hand or in one tenant's schema.

mod support;

use pgdbm::checked::{Change, CheckedQueries, DifferenceKind, VerifyReport};
use pgdbm::testing::TestDatabase;
use pgdbm::{Database, DatabaseConfig, SharedPool, Tenants};

const MIGRATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");

/// A database migrated like the service's: every module of pgdbm.toml (`myservice`, then
/// `billing`), rendering into `myservice`.
async fn service_db() -> TestDatabase {
    TestDatabase::builder()
        .project(env!("CARGO_MANIFEST_DIR"))
        .build()
        .await
        .unwrap()
}

fn queries() -> &'static CheckedQueries {
    pgdbm::checked_queries!()
}

/// The recorded queries that `tsql!` marked for `schema`.
fn marked_for(schema: &str) -> usize {
    let marker = format!("/* pgdbm: schema={schema} ");
    queries()
        .queries()
        .iter()
        .filter(|q| q.query.starts_with(&marker))
        .count()
}

/// The names of the columns whose type changed, per difference.
fn type_changes(r: &VerifyReport) -> Vec<(String, String)> {
    r.differences
        .iter()
        .filter_map(|d| match &d.kind {
            DifferenceKind::Changed(changes) => Some(changes),
            _ => None,
        })
        .flatten()
        .filter_map(|c| match c {
            Change::ColumnType { name, live, .. } => Some((name.clone(), live.name().to_string())),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_matches_the_migrated_schema_and_a_hand_made_alter_is_named() {
    let t = service_db().await;
    let all = queries().len();
    assert!(marked_for("myservice") > 0 && marked_for("billing") > 0);

    // As migrated: nothing differs. A plain handle skips what tsql! marked for another schema
    // (it would refuse to run it) and describes the rest.
    let r = t.verify_checked_queries(queries()).await.unwrap();
    assert!(r.differences.is_empty(), "{:#?}", r.differences);
    assert!(r.is_compatible());
    assert_eq!(r.checked + r.skipped, all);
    assert_eq!(r.skipped, marked_for("billing"));
    let billing = t.with_schema(Some("billing")).unwrap();
    let rb = billing.verify_checked_queries(queries()).await.unwrap();
    assert!(rb.differences.is_empty(), "{:#?}", rb.differences);
    assert_eq!(rb.skipped, marked_for("myservice"));

    // A column changed by hand: every query that returns it is named, with the change.
    t.execute(
        "ALTER TABLE myservice.users ALTER COLUMN email TYPE varchar(320)",
        (),
    )
    .await
    .unwrap();
    let r = t.verify_checked_queries(queries()).await.unwrap();
    assert!(!r.is_compatible());
    assert!(!r.differences.is_empty());
    for d in &r.differences {
        assert!(d.query.contains("\"myservice\".users"), "{d:?}");
        assert!(d.is_breaking(), "{d:?}");
        // The column it returns, or the parameter it compares with it.
        assert!(d.to_string().contains("text → varchar"), "{d}");
    }
    let changes = type_changes(&r);
    assert!(!changes.is_empty(), "{:#?}", r.differences);
    assert!(
        changes
            .iter()
            .all(|c| *c == ("email".into(), "varchar".into())),
        "{changes:?}"
    );
    // health_check repeats it until a verification finds the schema right again.
    let health = t.health_check().await.unwrap();
    assert!(
        health.warnings.iter().any(|w| w.starts_with(&format!(
            "{} of {} checked queries no longer match the schema myservice",
            r.differences.len(),
            r.checked
        ))),
        "{:?}",
        health.warnings
    );

    // A column renamed (as good as dropped for the old code): the queries that name it no
    // longer prepare (undefined column).
    t.execute(
        "ALTER TABLE myservice.users RENAME COLUMN name TO full_name",
        (),
    )
    .await
    .unwrap();
    let r = t.verify_checked_queries(queries()).await.unwrap();
    let rejected: Vec<_> = r
        .differences
        .iter()
        .filter_map(|d| match &d.kind {
            DifferenceKind::Rejected(why) => Some((d, why)),
            _ => None,
        })
        .collect();
    assert!(!rejected.is_empty(), "{:#?}", r.differences);
    for (d, why) in rejected {
        assert!(d.query.contains("name"), "{d:?}");
        assert_eq!(why.code.as_deref(), Some("42703"), "{why:?}");
    }

    // Put back as the migrations made it: no difference, and the warning is gone.
    for sql in [
        "ALTER TABLE myservice.users ALTER COLUMN email TYPE text",
        "ALTER TABLE myservice.users RENAME COLUMN full_name TO name",
    ] {
        t.execute(sql, ()).await.unwrap();
    }
    let r = t.verify_checked_queries(queries()).await.unwrap();
    assert!(r.differences.is_empty(), "{:#?}", r.differences);
    let health = t.health_check().await.unwrap();
    assert!(
        !health
            .warnings
            .iter()
            .any(|w| w.contains("checked queries")),
        "{:?}",
        health.warnings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drifted_tenant_is_reported_for_that_tenant_only() {
    let t = service_db().await;
    let pool = SharedPool::connect(DatabaseConfig::new(t.url()).max_connections(6))
        .await
        .unwrap();
    let tenants = Tenants::new(&pool, "myservice", MIGRATIONS);
    let acme: Database = tenants.create("acme").await.unwrap();
    let globex: Database = tenants.create("globex").await.unwrap();
    let acme_schema = acme.schema().unwrap().to_string();
    acme.execute(
        "ALTER TABLE {{tables.users}} ALTER COLUMN email TYPE varchar(320)",
        (),
    )
    .await
    .unwrap();

    // A tenant handle describes its module's queries in its own schema.
    let r = acme.verify_checked_queries(queries()).await.unwrap();
    assert_eq!(r.schema.as_deref(), Some(acme_schema.as_str()));
    assert!(!r.is_compatible());
    assert!(!type_changes(&r).is_empty());
    for d in &r.differences {
        // Reported under the query as compiled (its .sqlx hash), for the tenant it drifted in.
        assert!(d.query.contains("\"myservice\".users"), "{d:?}");
    }
    for db in [&globex, &*t] {
        let r = db.verify_checked_queries(queries()).await.unwrap();
        assert!(
            r.differences.is_empty(),
            "{:?}: {:#?}",
            db.schema(),
            r.differences
        );
    }
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_service_refuses_to_start_on_a_schema_its_queries_no_longer_fit() {
    let t = service_db().await;
    t.execute(
        "ALTER TABLE myservice.users ALTER COLUMN email TYPE varchar(320)",
        (),
    )
    .await
    .unwrap();
    let exe = support::service::example("standalone_service");
    let port = support::service::free_port().to_string();
    let url = t.url();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .env("DATABASE_URL", url)
            .env("PORT", port)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("refusing to start: "), "{log}");
    assert!(
        log.contains("checked queries no longer match the schema myservice"),
        "{log}"
    );
    assert!(log.contains("text → varchar"), "{log}");
    assert!(!log.contains("listening on"), "{log}");
}
