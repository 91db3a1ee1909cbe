fn main() {
    let _ = pgdbm::tsql_str!("SELECT * FROM <<tables.accounts>> WHERE id = $1");
}
