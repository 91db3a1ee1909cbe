fn main() {
    // After named ones.
    let _ = pgdbm::tsql!("SELECT id FROM <<tables.users>> WHERE id = :id AND email = :email", id = 1_i64, "a@example.com");
    // Instead of named ones.
    let _ = pgdbm::tsql!("SELECT id FROM <<tables.users>> WHERE id = :id", 1_i64);
}
