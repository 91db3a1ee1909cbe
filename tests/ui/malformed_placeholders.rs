fn main() {
    let _ = pgdbm::tsql_str!("SELECT * FROM {{tables.}}");
    let _ = pgdbm::tsql_str!("SELECT * FROM <<tables.users WHERE id = 1");
    let _ = pgdbm::tsql_str!("SELECT * FROM {{table.users}}");
    let _ = pgdbm::tsql_str!("SELECT * FROM {{ tables.users }}");
    let _ = pgdbm::tsql_str!("SELECT * FROM <<tables.9lives>>");
    let _ = pgdbm::tsql_str!("SELECT * FROM <<tables.users; DROP TABLE x>>");
}
