//! Procedural macros of pgdbm. Use them through the `pgdbm` crate.
#![deny(missing_docs)]

mod embed;

use proc_macro::TokenStream;

/// Embeds the `*.sql` files of a migrations directory (relative to the crate's `Cargo.toml`)
/// into the binary, for `Migrator::embedded`. The files are validated at compile time (versions,
/// duplicates, empty files), and editing one rebuilds the crate.
///
/// ```ignore
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
