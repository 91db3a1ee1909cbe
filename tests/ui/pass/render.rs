use pgdbm::{tsql, tsql_as, tsql_scalar, tsql_str};

struct User {
    id: i64,
    email: String,
    name: Option<String>,
}

fn main() {
    const SQL: &str = tsql_str!("SELECT count(*) FROM <<tables.users>>");
    assert_eq!(SQL, "/* pgdbm: schema=myservice at=21 */ SELECT count(*) FROM \"myservice\".users");
    let _ = tsql_str!(module = "billing", "SELECT * FROM {{tables.invoices}}");
    let _ = tsql_str!("SELECT * FROM {{tables.billing.invoices}} i JOIN <<tables.users>> u ON u.email = i.customer_email");
    let _ = tsql!("INSERT INTO <<tables.users>> (email, name) VALUES ($1, $2) RETURNING id", "a@example.com", "A");
    let _ = tsql_as!(User, "SELECT id, email, name FROM <<tables.users>> WHERE id = $1", 1_i64);
    let _ = tsql_scalar!("SELECT count(*) FROM <<tables.users>>");
    let _ = |u: User| (u.id, u.email, u.name);
}
