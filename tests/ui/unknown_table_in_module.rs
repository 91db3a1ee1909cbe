fn main() {
    let _ = pgdbm::tsql_str!(module = "billing", "SELECT * FROM <<tables.users>>");
}
