fn main() {
    let sql = "SELECT 1";
    let _ = pgdbm::tsql!(sql);
    const SQL: &str = "SELECT 1";
    let _ = pgdbm::tsql_scalar!(SQL);
    let _ = pgdbm::tsql_str!(concat!("SELECT ", "1"));
}
