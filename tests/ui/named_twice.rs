fn main() {
    let _ = pgdbm::tsql!("SELECT id FROM <<tables.users>> WHERE id = :id", id = 1_i64, id = 2_i64);
}
