//! Procedural macros of pgdbm. Use them through the `pgdbm` crate.
#![deny(missing_docs)]

mod checked;
mod config;
mod embed;
mod named;
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
/// Cargo does not notice a *new* file in the directory by itself; a `build.rs` calling
/// `pgdbm_core::build::rerun_if_migrations_change()` watches the directories `pgdbm.toml`
/// names (print `cargo::rerun-if-changed=DIR` for another).
#[proc_macro]
pub fn embed_migrations(input: TokenStream) -> TokenStream {
    embed::expand(input.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// What sqlx recorded about the workspace's queries (its `.sqlx/` directory, as `pgdbm prepare`
/// writes it), compiled into the binary, for `Database::verify_checked_queries`: a
/// `&'static pgdbm::checked::CheckedQueries`.
///
/// ```text
/// let report = db.verify_checked_queries(pgdbm::checked_queries!()).await?;
/// ```
///
/// The directory is `SQLX_OFFLINE_DIR`, else the crate's `.sqlx`, else the nearest one up to
/// the workspace root (where `cargo sqlx prepare --workspace` writes); `dir = "…"` (relative to
/// `Cargo.toml`) names another. Each file is embedded with `include_str!`, so a refreshed file
/// rebuilds the crate; a file that is not sqlx's query data is a compile error.
#[proc_macro]
pub fn checked_queries(input: TokenStream) -> TokenStream {
    checked::expand(input.into())
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
/// Options: `project` (every module of the crate's `pgdbm.toml`, each into its schema, in the
/// order `pgdbm prepare` uses: the set `tsql!` checks against; the `Database` renders into the
/// top-level schema; `project = "path"` names another file), or `migrations = "dir"` (relative
/// to `Cargo.toml`) and `module = "name"`;
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
    ///
    /// Parameters can be named (here, and in `tsql_as!`, `tsql_scalar!` and the `tsql_file!`
    /// forms): `:email` in the SQL is bound to the argument `email = …`, or, when no such
    /// argument is given, to the variable `email` in scope (as `format!("{email}")` does). The
    /// names are rewritten to `$1`, `$2` … in order of first use at compile time, so sqlx checks
    /// and caches the same SQL as if it were written with `$n`. Colons in strings, comments,
    /// casts (`::int8`), `:=` and array slices (`a[lo:hi]`) are not names.
    ///
    /// ```text
    /// let user = pgdbm::tsql!("SELECT id FROM <<tables.users>> WHERE email = :email AND id > :after", after = 0_i64)
    ///     .fetch_optional(&db) // :email is the variable `email`
    ///     .await?;
    /// ```
    ///
    /// A named argument the query does not use, a name given twice, a positional argument
    /// among named ones, and `:name` mixed with `$n` in one query are compile errors.
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

macro_rules! tsql_file_macro {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[proc_macro]
        pub fn $name(input: TokenStream) -> TokenStream {
            tsql::expand_file($kind, input.into())
                .unwrap_or_else(syn::Error::into_compile_error)
                .into()
        }
    };
}

tsql_file_macro!(
    /// [`tsql!`] with the SQL read from a file: `tsql_file!("queries/find_user.sql", args…)`.
    ///
    /// The path is relative to the crate's directory (`CARGO_MANIFEST_DIR`, where `Cargo.toml`
    /// is), as for sqlx's `query_file!`; `module = "NAME"` may come first. The file's text gets
    /// everything a literal gets: placeholders rendered and checked against the migrations,
    /// named parameters, sqlx's checks. Editing the file rebuilds the crate.
    ///
    /// ```text
    /// // queries/find_user.sql: SELECT id, email FROM <<tables.users>> WHERE email = :email
    /// let row = pgdbm::tsql_file!("queries/find_user.sql", email = "a@example.com")
    ///     .fetch_optional(&db)
    ///     .await?;
    /// ```
    ///
    /// A file that cannot be read is an error naming the path it was looked for at. Errors
    /// about the SQL are reported at the path literal (Rust cannot point into another file)
    /// and start with `path:line:column` inside the file:
    ///
    /// ```text
    /// error: tests/queries/unknown.sql:2:6: unknown table `accounts` in <<tables.accounts>>; …
    /// ```
    tsql_file,
    tsql::Kind::Query
);
tsql_file_macro!(
    /// [`tsql_as!`] with the SQL read from a file:
    /// `tsql_file_as!(User, "queries/find_user.sql", args…)`; see [`tsql_file!`].
    tsql_file_as,
    tsql::Kind::QueryAs
);
tsql_file_macro!(
    /// [`tsql_scalar!`] with the SQL read from a file:
    /// `tsql_file_scalar!("queries/count_users.sql", args…)`; see [`tsql_file!`].
    tsql_file_scalar,
    tsql::Kind::Scalar
);
