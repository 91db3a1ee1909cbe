//! `tsql!` queries against the real server. The schema is fixed at compile time (`myservice`,
//! from pgdbm.toml), so each test runs in a database of its own rather than a schema.

use pgdbm::testing::TestDatabase;
use pgdbm::{
    Database, tsql, tsql_as, tsql_file, tsql_file_as, tsql_file_scalar, tsql_scalar, tsql_str,
};

#[derive(Debug, PartialEq)]
struct User {
    id: i64,
    email: String,
    name: Option<String>,
}

/// Every module of pgdbm.toml (`myservice`, then `billing`), each in its schema; the handle
/// renders into `myservice`.
async fn service_db() -> TestDatabase {
    TestDatabase::builder()
        .project(env!("CARGO_MANIFEST_DIR"))
        .build()
        .await
        .unwrap()
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

#[tokio::test]
async fn named_parameters_bind_by_name() {
    let t = service_db().await;
    let db: Database = t.database();

    // Given in any order; sqlx gets them in `$n` order ($1 = email, $2 = name).
    let email = "bob@example.com".to_string();
    let row = tsql!(
        "INSERT INTO <<tables.users>> (email, name) VALUES (:email, :name) RETURNING id",
        name = "Bob",
        email = email.as_str(),
    )
    .fetch_one(&db)
    .await
    .unwrap();
    let id = row.id;

    // Not given: taken from the variable `id` in scope. This is the same SQL as the `$1`
    // query above, so it shares its .sqlx/ entry.
    let user = tsql_as!(
        User,
        "SELECT id, email, name FROM <<tables.users>> WHERE id = :id"
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        user,
        User {
            id,
            email: email.clone(),
            name: Some("Bob".into())
        }
    );

    // A name used twice binds one value; `::text` after a name is a cast.
    let found = tsql_as!(
        User,
        "SELECT id, email, name FROM <<tables.users>> WHERE (:name::text IS NULL OR name = :name) AND id >= :min_id ORDER BY id",
        name = Some("Bob"),
        min_id = 1_i64
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].email, email);
    let none: Option<&str> = None;
    let all = tsql_scalar!(
        "SELECT count(*) FROM <<tables.users>> WHERE :name::text IS NULL OR name = :name",
        name = none
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(all, Some(1));

    // Colons that are not parameters reach the server as written: array elements are
    // parameters, a slice's colon is not, nor a string's, a comment's or `:=`.
    let row = tsql!(
        r#"SELECT (ARRAY[:a, :b, :c]::int8[])[2:3] AS "slice!", ':not_a_param' AS "text!", /* :nor_this */ extract(day FROM make_interval(days := :days))::int8 AS "days!""#,
        a = 1_i64,
        b = 2_i64,
        c = 3_i64,
        days = 5_i32
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(row.slice, vec![2_i64, 3]);
    assert_eq!(row.text, ":not_a_param");
    assert_eq!(row.days, 5);

    // In another module too.
    let billing = t.with_schema(Some("billing")).unwrap();
    let cents = 700_i64;
    let inv = tsql!(
        module = "billing",
        "INSERT INTO <<tables.invoices>> (customer_email, amount_cents) VALUES (:email, :cents) RETURNING id",
        email = email.as_str()
    )
    .fetch_one(&billing)
    .await
    .unwrap();
    assert_eq!(inv.id, 1);
}

#[tokio::test]
async fn queries_from_files_run() {
    let t = service_db().await;
    let db: Database = t.database();
    tsql!(
        "INSERT INTO <<tables.users>> (email, name) VALUES ($1, $2) RETURNING id",
        "carol@example.com",
        "Carol"
    )
    .fetch_one(&db)
    .await
    .unwrap();

    let carol = tsql_file_as!(
        User,
        "tests/queries/find_user_by_email.sql",
        email = "carol@example.com"
    )
    .fetch_optional(&db)
    .await
    .unwrap()
    .expect("carol");
    assert_eq!(carol.name.as_deref(), Some("Carol"));
    let nobody = tsql_file_as!(
        User,
        "tests/queries/find_user_by_email.sql",
        email = "nobody@example.com"
    )
    .fetch_optional(&db)
    .await
    .unwrap();
    assert_eq!(nobody, None);

    let user_id = carol.id;
    for (title, body) in [("First", "one"), ("Second", "two"), ("Third", "three")] {
        // `user_id` from scope, the others given.
        let row = tsql_file!("tests/queries/insert_post.sql", title = title, body = body)
            .fetch_one(&db)
            .await
            .unwrap();
        assert!(row.id > 0);
    }
    let titles = tsql_file_scalar!(
        "tests/queries/posts_by_user.sql",
        user_id = user_id,
        first = "Third",
        second = "First"
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(titles, vec!["First".to_string(), "Third".to_string()]);

    let billing = t.with_schema(Some("billing")).unwrap();
    tsql!(
        module = "billing",
        "INSERT INTO <<tables.invoices>> (customer_email, amount_cents) VALUES ($1, $2) RETURNING id",
        "carol@example.com",
        1250_i64
    )
    .fetch_one(&billing)
    .await
    .unwrap();
    let total = tsql_file_scalar!(
        module = "billing",
        "tests/queries/billing_total.sql",
        email = "carol@example.com"
    )
    .fetch_one(&billing)
    .await
    .unwrap();
    assert_eq!(total, Some(1250));
}
