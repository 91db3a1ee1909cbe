fn main() {
    let _ = pgdbm::tsql!("INSERT INTO <<tables.users>> (email, name) VALUES ($1, $2) RETURNING id", "only-one@example.com");
}
