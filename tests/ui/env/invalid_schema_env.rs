fn main() {
    let _ = pgdbm::tsql_str!("SELECT * FROM <<tables.users>>");
}
