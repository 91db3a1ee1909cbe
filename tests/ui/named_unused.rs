fn main() {
    // Given but not used, and a hint when the name sits in an array slice.
    let _ = pgdbm::tsql!("SELECT id FROM <<tables.users>> WHERE id = :id", id = 1_i64, email = "a@example.com");
    let _ = pgdbm::tsql_scalar!("SELECT (ARRAY[1, 2, 3])[1:n] FROM <<tables.users>> WHERE id = :id", id = 1_i64, n = 2);
    // A named argument for a query written with $n.
    let _ = pgdbm::tsql!("SELECT id FROM <<tables.users>> WHERE id = $1", id = 1_i64);
}
