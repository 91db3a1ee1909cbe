fn main() {
    let _ = pgdbm::tsql!("SELECT id FROM <<tables.users>> WHERE id = :id AND email = $1", id = 1_i64, "a@example.com");
}
