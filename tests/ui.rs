//! Every compile error of the macros, under test (trybuild). Offline and deterministic: the
//! cases that reach sqlx use queries the real code also has, so `.sqlx/` holds their data.

fn set(key: &str, value: &str) {
    // SAFETY: this test binary has this one test; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var(key, value) };
}

#[test]
fn ui() {
    // trybuild builds the cases in a workspace of its own under target/, where neither the
    // repository's .sqlx nor its pgdbm.toml would be found: name both absolutely.
    set("SQLX_OFFLINE", "true");
    set(
        "SQLX_OFFLINE_DIR",
        concat!(env!("CARGO_MANIFEST_DIR"), "/.sqlx"),
    );
    set(
        "PGDBM_CONFIG",
        concat!(env!("CARGO_MANIFEST_DIR"), "/pgdbm.toml"),
    );
    unsafe {
        std::env::remove_var("DATABASE_URL");
        std::env::remove_var("PGDBM_SCHEMA");
    }
    {
        let t = trybuild::TestCases::new();
        t.pass("tests/ui/pass/*.rs");
        t.compile_fail("tests/ui/*.rs");
    }
    // A pgdbm.toml in pgdbm (Python)'s shape: `tsql!(module = …)` reads its `migrations_path`.
    set(
        "PGDBM_CONFIG",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/ui/python_toml/pgdbm.toml"
        ),
    );
    {
        let t = trybuild::TestCases::new();
        t.pass("tests/ui/python_toml/*.rs");
        t.compile_fail("tests/ui/python_toml/fail/*.rs");
    }
    // A bad schema in the environment is a compile error too.
    set("PGDBM_SCHEMA", "my-service");
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/env/*.rs");
}
