struct User {
    id: String,
    email: String,
    name: Option<String>,
}

fn main() {
    let _ = pgdbm::tsql_as!(User, "SELECT id, email, name FROM <<tables.users>> WHERE id = $1", 1_i64);
}
