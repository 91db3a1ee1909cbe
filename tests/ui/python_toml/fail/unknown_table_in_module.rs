// Python's `migrations_path` is what the table check reads: billing's migrations create only
// invoices.
fn main() {
    let _ = pgdbm::tsql_str!(module = "billing", "SELECT * FROM <<tables.users>>");
}
