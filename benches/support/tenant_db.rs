//! The server the tenant benches use: `PGDBM_BENCH_URL`, else `DATABASE_URL`, else the local
//! server without TLS, pointed at `database`.

pub fn url_for(database: &str) -> url::Url {
    let raw = std::env::var("PGDBM_BENCH_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres?sslmode=disable".into());
    let mut u = url::Url::parse(&raw).expect("PGDBM_BENCH_URL is not a URL");
    u.set_path(&format!("/{database}"));
    u
}
