//! Procedural macros of pgdbm. Use them through the `pgdbm` crate.
#![deny(missing_docs)]

mod config;
mod embed;
mod test_attr;
mod tsql;

use proc_macro::TokenStream;

/// Embeds the `*.sql` files of a migrations directory (relative to the crate's `Cargo.toml`)
/// into the binary, for `Migrator::embedded`. The files are validated at compile time (versions,
/// duplicates, empty files), and editing one rebuilds the crate.
///
/// ```text
/// let report = pgdbm::Migrator::embedded(&db, pgdbm::embed_migrations!("./migrations"), "myservice")
///     .apply_pending()
///     .await?;
/// ```
///
/// Cargo does not notice a *new* file in the directory by itself; add a `build.rs` with
/// `fn main() { println!("cargo:rerun-if-changed=migrations"); }`.
#[proc_macro]
pub fn embed_migrations(input: TokenStream) -> TokenStream {
    embed::expand(input.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Runs an async test with a database of its own, already migrated, dropped afterwards (also
/// when the test panics).
///
/// ```text
/// #[pgdbm::test(migrations = "./migrations", module = "myservice")]
/// async fn creates_user(db: pgdbm::Database) -> pgdbm::Result<()> {
///     let id: i64 = db.execute_and_return_id("INSERT INTO {{tables.users}} (email) VALUES ($1)", ("t@example.com",)).await?;
///     assert_eq!(id, 1);
///     Ok(())
/// }
/// ```
///
/// Options: `migrations = "dir"` (relative to `Cargo.toml`), `module = "name"`,
/// `schema = "name"` (the `Database` renders into it), `fixtures("a.sql", "b.sql")` (run after the
/// migrations), and `transaction`: the test takes `tx: &mut pgdbm::Transaction<'static>` in a
/// database shared by the process, and everything it does is rolled back.
#[proc_macro_attribute]
pub fn test(attr: TokenStream, item: TokenStream) -> TokenStream {
    test_attr::expand(attr.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

macro_rules! tsql_macro {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[proc_macro]
        pub fn $name(input: TokenStream) -> TokenStream {
            tsql::expand($kind, input.into())
                .unwrap_or_else(syn::Error::into_compile_error)
                .into()
        }
    };
}

tsql_macro!(
    /// `sqlx::query!` with `<<tables.x>>` / `{{tables.x}}` rendered at compile time for the schema
    /// of `pgdbm.toml` (or `PGDBM_SCHEMA`). A placeholder naming a table the migrations do not
    /// create is a compile error. Takes the same arguments as `sqlx::query!`, optionally preceded
    /// by `module = "NAME"` to use a module of `pgdbm.toml`.
    ///
    /// ```text
    /// let row = pgdbm::tsql!("INSERT INTO <<tables.users>> (email) VALUES ($1) RETURNING id", email)
    ///     .fetch_one(&db)
    ///     .await?;
    /// ```
    tsql,
    tsql::Kind::Query
);
tsql_macro!(
    /// `sqlx::query_as!` with placeholders rendered at compile time: `tsql_as!(User, "SELECT … FROM <<tables.users>> …", args…)`.
    tsql_as,
    tsql::Kind::QueryAs
);
tsql_macro!(
    /// `sqlx::query_scalar!` with placeholders rendered at compile time.
    tsql_scalar,
    tsql::Kind::Scalar
);
tsql_macro!(
    /// The rendered SQL as a `&'static str`, checked like `tsql!` (for the runtime API or another driver).
    tsql_str,
    tsql::Kind::Str
);
