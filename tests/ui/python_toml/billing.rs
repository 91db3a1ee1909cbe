// tsql! with a pgdbm.toml that pgdbm (Python) wrote the way it writes them (./pgdbm.toml): the
// module's schema and its `migrations_path`. The queries are tests/tsql.rs's, so .sqlx/ has them.
use pgdbm::{tsql, tsql_scalar, tsql_str};

fn main() {
    const SQL: &str = tsql_str!(module = "billing", "SELECT * FROM <<tables.invoices>>");
    assert_eq!(
        SQL,
        "/* pgdbm: schema=billing at=14 */ SELECT * FROM \"billing\".invoices"
    );
    // No top-level schema in Python's file: without `module =`, names stay bare.
    assert_eq!(
        tsql_str!("SELECT * FROM <<tables.invoices>>"),
        "SELECT * FROM invoices"
    );
    let _ = tsql!(
        module = "billing",
        "INSERT INTO <<tables.invoices>> (customer_email, amount_cents) VALUES ($1, $2) RETURNING id",
        "alice@example.com",
        1250_i64
    );
    let _ = tsql_scalar!(
        module = "billing",
        "SELECT sum(amount_cents)::int8 FROM <<tables.invoices>>"
    );
}
