//! `tsql!` queries against the real server. The schema is fixed at compile time (`myservice`,
//! from pgdbm.toml), so each test runs in a database of its own rather than a schema.

use pgdbm::testing::TestDatabase;
use pgdbm::{Database, Migrator, tsql, tsql_as, tsql_scalar, tsql_str};

#[derive(Debug, PartialEq)]
struct User {
    id: i64,
    email: String,
    name: Option<String>,
}

async fn service_db() -> TestDatabase {
    let t = TestDatabase::builder()
        .migrations(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .module("myservice")
        .schema("myservice")
        .build()
        .await
        .unwrap();
    let billing = t.with_schema(Some("billing")).unwrap();
    Migrator::new(
        &billing,
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/billing_migrations"),
        "billing",
    )
    .apply_pending()
    .await
    .unwrap();
    t
}

#[test]
fn tsql_str_renders_at_compile_time() {
    // Each text starts with a marker naming the schema it was checked for and where that schema
    // was written, so tenant handles can run it in their own schema (pgdbm_core::compiled).
    assert_eq!(
        tsql_str!("SELECT id FROM <<tables.users>> WHERE email = $1"),
        "/* pgdbm: schema=myservice at=15 */ SELECT id FROM \"myservice\".users WHERE email = $1"
    );
    assert_eq!(
        tsql_str!(
            "SELECT count(*) FROM {{tables.users}} u JOIN {{tables.posts}} p ON p.user_id = u.id"
        ),
        "/* pgdbm: schema=myservice at=21,46 */ SELECT count(*) FROM \"myservice\".users u JOIN \"myservice\".posts p ON p.user_id = u.id"
    );
    assert_eq!(
        tsql_str!(module = "billing", "SELECT * FROM <<tables.invoices>>"),
        "/* pgdbm: schema=billing at=14 */ SELECT * FROM \"billing\".invoices"
    );
    assert_eq!(
        tsql_str!(r#"SELECT 'it''s' AS "quoted", id FROM <<tables.users>>"#),
        "/* pgdbm: schema=myservice at=36 */ SELECT 'it''s' AS \"quoted\", id FROM \"myservice\".users"
    );
    assert_eq!(
        tsql_str!("SELECT 1 " + "FROM <<tables.posts>>"),
        "/* pgdbm: schema=myservice at=14 */ SELECT 1 FROM \"myservice\".posts"
    );
}

#[tokio::test]
async fn queries_run_and_are_typed() {
    let t = service_db().await;
    let db: Database = t.database();

    let email = "alice@example.com".to_string();
    let row = tsql!(
        "INSERT INTO <<tables.users>> (email, name) VALUES ($1, $2) RETURNING id",
        email,
        "Alice"
    )
    .fetch_one(&db)
    .await
    .unwrap();
    let id: i64 = row.id;
    assert_eq!(id, 1);

    let user = tsql_as!(
        User,
        "SELECT id, email, name FROM <<tables.users>> WHERE id = $1",
        id
    )
    .fetch_optional(&db)
    .await
    .unwrap();
    assert_eq!(
        user,
        Some(User {
            id: 1,
            email: "alice@example.com".into(),
            name: Some("Alice".into())
        })
    );
    let missing = tsql_as!(
        User,
        "SELECT id, email, name FROM <<tables.users>> WHERE id = $1",
        99_i64
    )
    .fetch_optional(&db)
    .await
    .unwrap();
    assert_eq!(missing, None);

    let n: i64 = tsql_scalar!("SELECT count(*) FROM <<tables.users>>")
        .fetch_one(&db)
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 1);

    // The same rendered SQL through the runtime API.
    let n2: Option<i64> = db
        .fetch_value(tsql_str!("SELECT count(*) FROM <<tables.users>>"), ())
        .await
        .unwrap();
    assert_eq!(n2, Some(1));

    // Inside a transaction, as a sqlx executor.
    let mut tx = db.transaction().await.unwrap();
    tsql!(
        "INSERT INTO {{tables.posts}} (user_id, title) VALUES ($1, $2)",
        id,
        "Hello"
    )
    .execute(&mut tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let titles = tsql_scalar!("SELECT title FROM <<tables.posts>> WHERE user_id = $1", id)
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(titles, vec!["Hello".to_string()]);
}

#[tokio::test]
async fn a_module_renders_into_its_own_schema() {
    let t = service_db().await;
    // A module's queries run on a handle of that module's schema: on the `myservice` handle they
    // would be refused (Error::SchemaMismatch), since a plain handle serves one schema.
    let db = t.with_schema(Some("billing")).unwrap();
    let inv = tsql!(
        module = "billing",
        "INSERT INTO <<tables.invoices>> (customer_email, amount_cents) VALUES ($1, $2) RETURNING id",
        "alice@example.com",
        1250_i64
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(inv.id, 1);
    let total: Option<i64> = tsql_scalar!(
        module = "billing",
        "SELECT sum(amount_cents)::int8 FROM <<tables.invoices>>"
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(total, Some(1250));
    // The row is really in the billing schema.
    let n: Option<i64> = db
        .fetch_value("SELECT count(*) FROM billing.invoices", ())
        .await
        .unwrap();
    assert_eq!(n, Some(1));
}

#[tokio::test]
async fn errors_from_the_server_come_back_typed() {
    let t = service_db().await;
    let db = t.database();
    tsql!(
        "INSERT INTO <<tables.users>> (email) VALUES ($1)",
        "dup@example.com"
    )
    .execute(&db)
    .await
    .unwrap();
    let err = tsql!(
        "INSERT INTO <<tables.users>> (email) VALUES ($1)",
        "dup@example.com"
    )
    .execute(&db)
    .await
    .unwrap_err();
    let db_err = err.as_database_error().expect("a database error");
    assert!(db_err.is_unique_violation());
}

/// `tsql!` hands back `sqlx::Error`; `pgdbm::Error::from` recovers what pgdbm reported, so a
/// service maps errors once.
#[tokio::test]
async fn errors_on_the_tsql_path_come_back_as_pgdbm_errors() {
    use std::time::Duration;

    use pgdbm::Error;

    let t = service_db().await;
    let db: Database = t.database();

    // A handle of another schema refuses the query, and says why.
    let other = db.with_schema(Some("other")).unwrap();
    let e = tsql_scalar!("SELECT count(*) FROM <<tables.users>>")
        .fetch_one(&other)
        .await
        .unwrap_err();
    match Error::from(e) {
        Error::SchemaMismatch {
            compiled_for,
            handle,
        } => assert_eq!(
            (compiled_for.as_str(), handle.as_deref()),
            ("myservice", Some("other"))
        ),
        e => panic!("not a SchemaMismatch: {e:?}"),
    }

    // The pool's one connection held: a timeout that says the pool was full.
    let small = Database::connect(
        db.config()
            .clone()
            .min_connections(0)
            .max_connections(1)
            .acquire_timeout(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    let held = small.acquire().await.unwrap();
    let e = tsql_scalar!("SELECT count(*) FROM <<tables.users>>")
        .fetch_one(&small)
        .await
        .unwrap_err();
    match Error::from(e) {
        Error::PoolTimeout {
            waited,
            max_size,
            unreachable,
        } => {
            assert_eq!((waited, max_size), (Duration::from_millis(200), 1));
            assert_eq!(unreachable, None, "the server was there; the pool was full");
        }
        e => panic!("not a PoolTimeout: {e:?}"),
    }
    drop(held);
    small.close().await;

    // The session of a transaction ended by the server: the transaction was lost.
    let mut tx = db.transaction().await.unwrap();
    let pid: Option<i32> = tx.fetch_value("SELECT pg_backend_pid()", ()).await.unwrap();
    db.execute("SELECT pg_terminate_backend($1)", (pid.unwrap(),))
        .await
        .unwrap();
    let e = tsql_scalar!("SELECT count(*) FROM <<tables.users>>")
        .fetch_one(&mut tx)
        .await
        .unwrap_err();
    match Error::from(e) {
        Error::TransactionLost(lost) => {
            assert!(!lost.during_commit());
            assert!(lost.query().sql().contains("count(*)"), "{lost}");
        }
        e => panic!("not a TransactionLost: {e:?}"),
    }
    drop(tx);

    // A statement deadline: a timeout naming the deadline, the statement sent.
    let mut locker = db.transaction().await.unwrap();
    locker
        .execute("LOCK TABLE {{tables.users}} IN ACCESS EXCLUSIVE MODE", ())
        .await
        .unwrap();
    let e = tsql_scalar!("SELECT count(*) FROM <<tables.users>>")
        .fetch_one(&db.with_deadline(Some(Duration::from_millis(300))))
        .await
        .unwrap_err();
    match Error::from(e) {
        Error::Timeout(t) => {
            assert_eq!(t.deadline(), Duration::from_millis(300));
            assert!(t.was_sent());
        }
        e => panic!("not a Timeout: {e:?}"),
    }
    locker.rollback().await.unwrap();

    // A driver error stays a driver error to sqlx, and a query error to pgdbm.
    let e = tsql!(
        "INSERT INTO <<tables.users>> (email) VALUES ($1)",
        "twice@example.com"
    )
    .execute(&db)
    .await
    .map(|_| ());
    assert!(e.is_ok());
    let e = tsql!(
        "INSERT INTO <<tables.users>> (email) VALUES ($1)",
        "twice@example.com"
    )
    .execute(&db)
    .await
    .unwrap_err();
    assert!(
        e.as_database_error()
            .is_some_and(|d| d.is_unique_violation())
    );
    let e = Error::from(e);
    assert!(e.is_unique_violation(), "{e:?}");
}
