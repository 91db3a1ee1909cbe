use pgdbm::{Database, Error};
use sqlx::Row;

use crate::common::{TestDb, count};

#[derive(Debug, sqlx::FromRow, PartialEq)]
struct User {
    id: i64,
    email: String,
    name: Option<String>,
}

const USERS: &str = "CREATE TABLE {{tables.users}} (id BIGSERIAL PRIMARY KEY, email TEXT UNIQUE NOT NULL, name TEXT)";

async fn setup(schema: Option<&str>) -> (TestDb, Database) {
    let t = TestDb::new().await;
    let mut config = t.config();
    if let Some(s) = schema {
        config = config.schema(s);
    }
    let db = Database::connect(config).await.unwrap();
    db.execute(USERS, ()).await.unwrap();
    (t, db)
}

#[tokio::test]
async fn query_methods_with_schema() {
    let (t, db) = setup(Some("myservice")).await;
    assert_eq!(db.schema(), Some("myservice"));
    assert_eq!(
        &*db.render("SELECT * FROM {{tables.users}}").unwrap(),
        "SELECT * FROM \"myservice\".users"
    );

    let id: i64 = db
        .execute_and_return_id(
            "INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2)",
            ("alice@example.com", "Alice"),
        )
        .await
        .unwrap();
    assert_eq!(id, 1);
    // An explicit RETURNING is kept, not doubled.
    let id2: i64 = db
        .execute_and_return_id(
            "INSERT INTO <<tables.users>> (email) VALUES ($1) RETURNING id;",
            ("bob@example.com",),
        )
        .await
        .unwrap();
    assert_eq!(id2, 2);

    let user: Option<User> = db
        .fetch_optional("SELECT * FROM {{tables.users}} WHERE id = $1", (id,))
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
    let none: Option<User> = db
        .fetch_optional("SELECT * FROM {{tables.users}} WHERE id = $1", (99_i64,))
        .await
        .unwrap();
    assert_eq!(none, None);

    let bob: User = db
        .fetch_one(
            "SELECT * FROM {{tables.users}} WHERE email = $1",
            ("bob@example.com",),
        )
        .await
        .unwrap();
    assert_eq!(bob.name, None);
    let err = db
        .fetch_one::<User, _>("SELECT * FROM {{tables.users}} WHERE id = $1", (99_i64,))
        .await
        .unwrap_err();
    assert!(err.is_row_not_found(), "{err}");

    let all: Vec<User> = db
        .fetch_all("SELECT * FROM {{tables.users}} ORDER BY id", ())
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].email, "bob@example.com");

    let n: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.users}}", ())
        .await
        .unwrap();
    assert_eq!(n, Some(2));
    let none: Option<i64> = db
        .fetch_value("SELECT id FROM {{tables.users}} WHERE id < 0", ())
        .await
        .unwrap();
    assert_eq!(none, None);
    let null: Option<Option<String>> = db
        .fetch_value("SELECT name FROM {{tables.users}} WHERE id = 2", ())
        .await
        .unwrap();
    assert_eq!(null, Some(None));

    let affected = db
        .execute(
            "UPDATE {{tables.users}} SET name = $1 WHERE name IS NULL",
            ("Bob",),
        )
        .await
        .unwrap();
    assert_eq!(affected, 1);

    let inserted = db
        .execute_many(
            "INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2)",
            vec![
                ("c@example.com", "C"),
                ("d@example.com", "D"),
                ("e@example.com", "E"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(inserted, 3);

    assert!(db.table_exists("users").await.unwrap());
    assert!(db.table_exists("myservice.users").await.unwrap());
    assert!(!db.table_exists("posts").await.unwrap());
    assert!(!db.table_exists("public.users").await.unwrap());

    // The rows really are in the schema's table.
    let mut raw = t.raw().await;
    assert_eq!(
        count(&mut raw, "SELECT count(*) FROM myservice.users").await,
        5
    );
    db.close().await;
}

#[tokio::test]
async fn templating_without_schema_uses_bare_names() {
    let (t, db) = setup(None).await;
    assert_eq!(db.schema(), None);
    assert_eq!(
        &*db.render("SELECT * FROM {{tables.users}} JOIN {{schema}}.x")
            .unwrap(),
        "SELECT * FROM users JOIN x"
    );
    db.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        ("a@example.com",),
    )
    .await
    .unwrap();
    let mut raw = t.raw().await;
    assert_eq!(
        count(&mut raw, "SELECT count(*) FROM public.users").await,
        1
    );
}

#[tokio::test]
async fn multi_statement_script_without_parameters() {
    let (_t, db) = setup(Some("s")).await;
    db.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ('x@example.com'); INSERT INTO {{tables.users}} (email) VALUES ('y@example.com');",
        (),
    )
    .await
    .unwrap();
    let n: i64 = db
        .fetch_value("SELECT count(*) FROM {{tables.users}}", ())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 2);
}

#[tokio::test]
async fn bad_placeholders_are_errors_and_write_nothing() {
    let (t, db) = setup(Some("s")).await;
    for sql in [
        "INSERT INTO {{tables.}} (email) VALUES ('a@example.com')",
        "INSERT INTO <<tables.users (email) VALUES ('a@example.com')",
        "INSERT INTO {{table.users}} (email) VALUES ('a@example.com')",
        "INSERT INTO {{tables.users; DROP TABLE s.users}} (email) VALUES ('a@example.com')",
        "INSERT INTO {{tables.9users}} (email) VALUES ('a@example.com')",
    ] {
        let err = db.execute(sql, ()).await.unwrap_err();
        assert!(matches!(err, Error::Template(_)), "{sql}: {err:?}");
        assert!(err.to_string().contains("at offset 12"), "{err}");
    }
    let mut raw = t.raw().await;
    assert_eq!(count(&mut raw, "SELECT count(*) FROM s.users").await, 0);
}

#[tokio::test]
async fn query_errors_carry_sql_and_server_diagnostics() {
    let (t, db) = setup(Some("s")).await;
    db.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        ("dup@example.com",),
    )
    .await
    .unwrap();
    let err = db
        .execute(
            "INSERT INTO {{tables.users}} (email) VALUES ($1)",
            ("dup@example.com",),
        )
        .await
        .unwrap_err();
    assert!(err.is_unique_violation(), "{err}");
    let q = err.as_query_error().unwrap();
    assert_eq!(q.code(), Some("23505"));
    assert_eq!(q.sql(), "INSERT INTO \"s\".users (email) VALUES ($1)");
    assert_eq!(q.constraint(), Some("users_email_key"));
    assert!(q.detail().unwrap().contains("dup@example.com"));
    assert!(
        err.to_string().contains("SQL: INSERT INTO \"s\".users"),
        "{err}"
    );

    let err = db
        .fetch_all::<(i64,), _>("SELECT id FROM {{tables.users}} WHERE nosuch = 1", ())
        .await
        .unwrap_err();
    let q = err.as_query_error().unwrap();
    assert_eq!(q.code(), Some("42703"));
    let pos = q.position().expect("server reports a position");
    assert_eq!(&q.sql()[pos - 1..pos + 5], "nosuch");

    let mut raw = t.raw().await;
    assert_eq!(count(&mut raw, "SELECT count(*) FROM s.users").await, 1);
}

#[tokio::test]
async fn copy_in_loads_100k_rows_into_the_schema() {
    let (t, db) = setup(Some("bulk")).await;
    let rows = (0..100_000_i64).map(|i| (format!("u{i}@example.com"), Some(format!("User {i}"))));
    let n = db.copy_in("users", &["email", "name"], rows).await.unwrap();
    assert_eq!(n, 100_000);
    let mut raw = t.raw().await;
    assert_eq!(
        count(&mut raw, "SELECT count(*) FROM bulk.users").await,
        100_000
    );
    let (email, name): (String, Option<String>) =
        sqlx::query_as("SELECT email, name FROM bulk.users WHERE email = 'u99999@example.com'")
            .fetch_one(&mut raw)
            .await
            .unwrap();
    assert_eq!(email, "u99999@example.com");
    assert_eq!(name.as_deref(), Some("User 99999"));

    // A duplicate in the batch aborts the whole COPY: nothing more is written.
    let rows = vec![("new@example.com", None::<&str>), ("u1@example.com", None)];
    let err = db
        .copy_in("users", &["email", "name"], rows)
        .await
        .unwrap_err();
    assert!(err.is_unique_violation(), "{err}");
    assert_eq!(
        count(&mut raw, "SELECT count(*) FROM bulk.users").await,
        100_000
    );

    // Bad identifiers never reach the server.
    let err = db
        .copy_in("users; DROP TABLE x", &["email"], vec![("a",)])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Identifier(_)), "{err:?}");
    let err = db
        .copy_in("users", &["email\""], vec![("a",)])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Identifier(_)), "{err:?}");
    // A row of the wrong width is refused and nothing is written.
    let err = db
        .copy_in("users", &["email", "name"], vec![("only-one@example.com",)])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("row 0 has 1 values but 2 columns"),
        "{err}"
    );
    assert_eq!(
        count(&mut raw, "SELECT count(*) FROM bulk.users").await,
        100_000
    );
}

#[tokio::test]
async fn database_is_a_sqlx_executor() {
    let (_t, db) = setup(Some("ex")).await;
    db.execute(
        "INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2)",
        ("e@example.com", "E"),
    )
    .await
    .unwrap();
    let row = sqlx::query("SELECT email FROM ex.users WHERE name = $1")
        .bind("E")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>(0), "e@example.com");
    let users: Vec<User> = sqlx::query_as("SELECT * FROM ex.users")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(users.len(), 1);
    let done = sqlx::query("DELETE FROM ex.users")
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 1);

    // acquire(): a raw connection usable as an executor.
    let mut conn = db.acquire().await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
}

#[tokio::test]
async fn tuples_of_up_to_16_values_bind() {
    let (_t, db) = setup(None).await;
    type Sixteen = (
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
    );
    let row: Sixteen = db
        .fetch_one(
            "SELECT $1::int8, $2::int8, $3::int8, $4::int8, $5::int8, $6::int8, $7::int8, $8::int8, \
             $9::int8, $10::int8, $11::int8, $12::int8, $13::int8, $14::int8, $15::int8, $16::int8",
            (1_i64, 2_i64, 3_i64, 4_i64, 5_i64, 6_i64, 7_i64, 8_i64, 9_i64, 10_i64, 11_i64, 12_i64, 13_i64, 14_i64, 15_i64, 16_i64),
        )
        .await
        .unwrap();
    assert_eq!(row.0 + row.15, 17);
    let v: Option<Vec<i32>> = db
        .fetch_value("SELECT $1::int4[]", (vec![1_i32, 2, 3],))
        .await
        .unwrap();
    assert_eq!(v, Some(vec![1, 2, 3]));
}
