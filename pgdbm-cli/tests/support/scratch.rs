//! What the tests of the commands that make scratch databases (`prepare`, `--check-compat`)
//! share: this repository's paths, the test server, and the scratch databases a run left.

use std::path::{Path, PathBuf};

use sqlx::{Connection, PgConnection};

/// This repository's root.
pub fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The target directory this test was built into.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repository().join("target"))
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The URL of the `postgres` database of the server the tests use.
pub fn test_server() -> String {
    runtime().block_on(async {
        pgdbm_core::testing::test_server()
            .await
            .expect("a server for tests")
            .admin_url
            .clone()
    })
}

/// The databases on the server at `admin_url` that a run with process id `pid` made, named
/// `pgdbm_test_<secs>_<pid>_<kind>…` (`prepare`, `compat`).
pub fn scratch_databases_of(admin_url: &str, pid: u32, kind: &str) -> Vec<String> {
    runtime().block_on(async {
        let mut conn = PgConnection::connect(admin_url).await.unwrap();
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT datname::text FROM pg_database WHERE datname LIKE 'pgdbm\\_test\\_%\\_' || $1 || '\\_' || $2 || '%'",
        )
        .bind(pid.to_string())
        .bind(kind)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        names
    })
}

/// The sqlx dependency of the crates these tests build outside the repository.
pub const SQLX_DEPENDENCY: &str = r#"sqlx = { version = "0.9", default-features = false, features = ["postgres", "runtime-tokio", "tls-rustls-ring-webpki", "macros", "derive", "migrate"] }"#;

/// Writes `dir/Cargo.toml` for a one-crate workspace `name` with `sections` (its
/// `[dependencies]` and whatever else), this repository's dev profile and its Cargo.lock: the
/// same dependency versions and settings, built into the same target directory, so that only
/// the crate itself compiles after the first run.
pub fn cargo_project(dir: &Path, name: &str, sections: &str) {
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[workspace]

{sections}
[profile.dev]
debug = "line-tables-only"

[profile.dev.package."*"]
opt-level = 1
debug = false
"#
    );
    super::write(dir, "Cargo.toml", &manifest);
    std::fs::copy(repository().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
}
