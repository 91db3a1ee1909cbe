use pgdbm::{Database, SharedPool};

use crate::common::{TestDb, count};

const ACCOUNTS: &str =
    "CREATE TABLE IF NOT EXISTS {{tables.accounts}} (id SERIAL PRIMARY KEY, owner TEXT NOT NULL)";

#[tokio::test]
async fn two_services_share_one_pool_with_their_own_schemas() {
    let t = TestDb::new().await;
    let pool = SharedPool::connect(t.config().max_connections(3))
        .await
        .unwrap();
    let users = pool.database(Some("users")).unwrap();
    let billing = pool.database(Some("billing")).unwrap();
    for db in [&users, &billing] {
        db.create_schema().await.unwrap();
        db.execute(ACCOUNTS, ()).await.unwrap();
    }
    assert_eq!(
        &*users.render("SELECT * FROM {{tables.accounts}}").unwrap(),
        "SELECT * FROM \"users\".accounts"
    );
    assert_eq!(
        &*billing.render("SELECT * FROM {{tables.accounts}}").unwrap(),
        "SELECT * FROM \"billing\".accounts"
    );
    users
        .execute(
            "INSERT INTO {{tables.accounts}} (owner) VALUES ($1)",
            ("u1",),
        )
        .await
        .unwrap();
    for owner in ["b1", "b2"] {
        billing
            .execute(
                "INSERT INTO {{tables.accounts}} (owner) VALUES ($1)",
                (owner,),
            )
            .await
            .unwrap();
    }
    let u: Vec<(String,)> = users
        .fetch_all("SELECT owner FROM {{tables.accounts}}", ())
        .await
        .unwrap();
    let b: Vec<(String,)> = billing
        .fetch_all("SELECT owner FROM {{tables.accounts}} ORDER BY owner", ())
        .await
        .unwrap();
    assert_eq!(u, vec![("u1".to_string(),)]);
    assert_eq!(b, vec![("b1".to_string(),), ("b2".to_string(),)]);
    // Reaching the other service's table takes an explicit schema.
    let other: Option<i64> = users
        .fetch_value("SELECT count(*) FROM {{tables.billing.accounts}}", ())
        .await
        .unwrap();
    assert_eq!(other, Some(2));

    // Shared pool connections have no service search_path: a bare name does not resolve.
    let err = users
        .fetch_value::<i64, _>("SELECT count(*) FROM accounts", ())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("42P01"));

    // Handles do not own the pool: closing one changes nothing.
    assert!(!users.is_owner());
    users.close().await;
    assert!(!billing.is_closed());
    billing
        .execute("INSERT INTO {{tables.accounts}} (owner) VALUES ('b3')", ())
        .await
        .unwrap();
    let s = pool.stats();
    assert!(s.size <= 3);
    pool.close().await;
    assert!(users.is_closed() && billing.is_closed());
    let mut raw = t.raw().await;
    assert_eq!(
        count(&mut raw, "SELECT count(*) FROM billing.accounts").await,
        3
    );
    assert_eq!(
        count(&mut raw, "SELECT count(*) FROM users.accounts").await,
        1
    );
}

#[tokio::test]
async fn with_schema_derives_a_handle_and_validates_the_name() {
    let t = TestDb::new().await;
    let db = Database::connect(t.config().schema("main_svc"))
        .await
        .unwrap();
    let other = db.with_schema(Some("other_svc")).unwrap();
    assert_eq!(other.schema(), Some("other_svc"));
    assert!(db.is_owner() && !other.is_owner());
    let err = db.with_schema(Some("bad schema")).unwrap_err();
    assert!(matches!(err, pgdbm::Error::Identifier(_)), "{err:?}");
    // The owner's schema was created by connect; the derived one on request.
    assert!(!other.table_exists("x").await.unwrap());
    other.create_schema().await.unwrap();
    let mut raw = t.raw().await;
    assert_eq!(
        count(
            &mut raw,
            "SELECT count(*) FROM pg_namespace WHERE nspname IN ('main_svc', 'other_svc')"
        )
        .await,
        2
    );
}
