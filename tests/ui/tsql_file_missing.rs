fn main() {
    let _ = pgdbm::tsql_file_scalar!("queries/no_such_file.sql");
}
