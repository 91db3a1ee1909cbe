fn main() {
    let _ = pgdbm::tsql_str!(module = "shipping", "SELECT * FROM <<tables.parcels>>");
}
