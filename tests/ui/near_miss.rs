fn main() {
    let _ = pgdbm::tsql!("SELECT id FROM <<tables.userz>> WHERE id = $1", 1_i64);
}
