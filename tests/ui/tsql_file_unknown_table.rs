fn main() {
    // trybuild builds this in target/tests/trybuild/pgdbm/, and the path is relative to that
    // crate's directory: four levels up is the repository.
    let _ = pgdbm::tsql_file!("../../../../tests/queries/ui_unknown_table.sql", id = 1_i64);
}
