struct User {
    id: i64,
    email: String,
    name: Option<String>,
}

fn main() {
    // `:user_id` is neither given nor a variable in scope. (The SQL renders as tests/tsql.rs's
    // `… WHERE id = $1` query does, so .sqlx/ has it.)
    let _ = pgdbm::tsql_as!(User, "SELECT id, email, name FROM <<tables.users>> WHERE id = :user_id");
}
