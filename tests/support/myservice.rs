//! The example service's schema, `myservice`, as the `tsql!` queries of the tests expect it.

use pgdbm::{Database, Migrator};

/// A row of `users`, as `tsql_as!(User, "SELECT id, email, name FROM <<tables.users>> …")`
/// returns it.
#[derive(Debug)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub name: Option<String>,
}

/// Applies the project's migrations (module and schema `myservice`) through `db`; returns how
/// many files it applied.
pub async fn migrate(db: &Database) -> usize {
    let report = Migrator::new(
        db,
        concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"),
        "myservice",
    )
    .apply_pending()
    .await
    .unwrap();
    report.applied.len()
}

/// Inserts user 1, Alice (on a fresh schema she gets id 1).
pub async fn insert_alice(db: &Database) {
    db.execute(
        "INSERT INTO {{tables.users}} (email, name) VALUES ('alice@example.com', 'Alice')",
        (),
    )
    .await
    .unwrap();
}
