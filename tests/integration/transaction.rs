use pgdbm::Database;

use crate::common::{TestDb, count};

async fn setup() -> (TestDb, Database) {
    let t = TestDb::new().await;
    let db = Database::connect(t.config().schema("tx").max_connections(3))
        .await
        .unwrap();
    db.execute(
        "CREATE TABLE {{tables.items}} (id SERIAL PRIMARY KEY, name TEXT UNIQUE NOT NULL)",
        (),
    )
    .await
    .unwrap();
    (t, db)
}

#[tokio::test]
async fn commit_makes_rows_visible() {
    let (t, db) = setup().await;
    let mut tx = db.transaction().await.unwrap();
    assert_eq!(tx.depth(), 1);
    let id: i32 = tx
        .execute_and_return_id("INSERT INTO {{tables.items}} (name) VALUES ($1)", ("a",))
        .await
        .unwrap();
    assert_eq!(id, 1);
    tx.execute_many(
        "INSERT INTO {{tables.items}} (name) VALUES ($1)",
        vec![("b",), ("c",)],
    )
    .await
    .unwrap();
    let inside: Option<i64> = tx
        .fetch_value("SELECT count(*) FROM {{tables.items}}", ())
        .await
        .unwrap();
    assert_eq!(inside, Some(3));
    let mut raw = t.raw().await;
    assert_eq!(count(&mut raw, "SELECT count(*) FROM tx.items").await, 0);
    tx.commit().await.unwrap();
    assert_eq!(count(&mut raw, "SELECT count(*) FROM tx.items").await, 3);
}

#[tokio::test]
async fn explicit_rollback_and_rollback_on_drop() {
    let (t, db) = setup().await;
    let mut tx = db.transaction().await.unwrap();
    tx.execute("INSERT INTO {{tables.items}} (name) VALUES ('x')", ())
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    {
        let mut tx = db.transaction().await.unwrap();
        tx.execute("INSERT INTO {{tables.items}} (name) VALUES ('y')", ())
            .await
            .unwrap();
        // Take a row lock that a committed-late rollback would keep holding.
        tx.execute("LOCK TABLE {{tables.items}} IN ACCESS EXCLUSIVE MODE", ())
            .await
            .unwrap();
    } // dropped without commit
    let mut raw = t.raw().await;
    // The lock is released promptly: the rollback is sent, not left queued on an idle connection.
    sqlx::query("SET lock_timeout = '2s'")
        .execute(&mut raw)
        .await
        .unwrap();
    assert_eq!(count(&mut raw, "SELECT count(*) FROM tx.items").await, 0);
    // The pool is healthy afterwards and the connection is reused.
    for _ in 0..5 {
        let n: Option<i64> = db
            .fetch_value("SELECT count(*) FROM {{tables.items}}", ())
            .await
            .unwrap();
        assert_eq!(n, Some(0));
    }
}

#[tokio::test]
async fn savepoints_roll_back_alone() {
    let (t, db) = setup().await;
    let mut tx = db.transaction().await.unwrap();
    tx.execute("INSERT INTO {{tables.items}} (name) VALUES ('outer')", ())
        .await
        .unwrap();
    {
        let mut sp = tx.transaction().await.unwrap();
        assert_eq!(sp.depth(), 2);
        sp.execute(
            "INSERT INTO {{tables.items}} (name) VALUES ('inner-kept')",
            (),
        )
        .await
        .unwrap();
        sp.commit().await.unwrap();
    }
    {
        let mut sp = tx.transaction().await.unwrap();
        sp.execute(
            "INSERT INTO {{tables.items}} (name) VALUES ('inner-dropped')",
            (),
        )
        .await
        .unwrap();
        // A failing statement inside the savepoint...
        let err = sp
            .execute("INSERT INTO {{tables.items}} (name) VALUES ('outer')", ())
            .await
            .unwrap_err();
        assert!(err.is_unique_violation());
    } // ...rolls back to the savepoint on drop.
    {
        let mut sp = tx.transaction().await.unwrap();
        sp.execute(
            "INSERT INTO {{tables.items}} (name) VALUES ('inner-rolled')",
            (),
        )
        .await
        .unwrap();
        {
            let mut sp2 = sp.transaction().await.unwrap();
            assert_eq!(sp2.depth(), 3);
            sp2.execute("INSERT INTO {{tables.items}} (name) VALUES ('deep')", ())
                .await
                .unwrap();
            sp2.commit().await.unwrap();
        }
        sp.rollback().await.unwrap();
    }
    // The outer transaction carries on.
    tx.execute("INSERT INTO {{tables.items}} (name) VALUES ('after')", ())
        .await
        .unwrap();
    let names: Vec<(String,)> = tx
        .fetch_all("SELECT name FROM {{tables.items}} ORDER BY id", ())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let names: Vec<String> = names.into_iter().map(|(n,)| n).collect();
    assert_eq!(names, vec!["outer", "inner-kept", "after"]);
    let mut raw = t.raw().await;
    assert_eq!(count(&mut raw, "SELECT count(*) FROM tx.items").await, 3);
}

#[tokio::test]
async fn sqlx_queries_run_inside_the_transaction() {
    let (t, db) = setup().await;
    let mut tx = db.transaction().await.unwrap();
    sqlx::query("INSERT INTO tx.items (name) VALUES ($1)")
        .bind("via-sqlx")
        .execute(&mut tx)
        .await
        .unwrap();
    let n = tx
        .copy_in("items", &["name"], vec![("copied-1",), ("copied-2",)])
        .await
        .unwrap();
    assert_eq!(n, 2);
    drop(tx);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut raw = t.raw().await;
    assert_eq!(count(&mut raw, "SELECT count(*) FROM tx.items").await, 0);
}
