//! `embed_migrations!`.

use std::path::PathBuf;

use pgdbm_core::migrations::MigrationSet;
use proc_macro2::TokenStream;
use quote::quote;
use syn::LitStr;

pub(crate) fn expand(input: TokenStream) -> syn::Result<TokenStream> {
    let lit: LitStr = if input.is_empty() {
        LitStr::new("./migrations", proc_macro2::Span::call_site())
    } else {
        syn::parse2(input).map_err(|e| {
            syn::Error::new(
                e.span(),
                "embed_migrations! takes the migrations directory as a string literal, relative to Cargo.toml, e.g. embed_migrations!(\"./migrations\")",
            )
        })?
    };
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").map_err(|_| {
        syn::Error::new(
            lit.span(),
            "CARGO_MANIFEST_DIR is not set; build with cargo",
        )
    })?;
    let dir = PathBuf::from(manifest_dir).join(lit.value());
    let set =
        MigrationSet::from_dir(&dir).map_err(|e| syn::Error::new(lit.span(), e.to_string()))?;
    let names = set
        .iter()
        .flat_map(|m| std::iter::once(&m.filename).chain(m.down.as_ref().map(|d| &d.filename)))
        .chain(set.repeatable().iter().map(|r| &r.filename));
    let entries = names.map(|name| {
        let path = dir.join(name);
        let path = path.to_string_lossy();
        // include_str! makes cargo rebuild when the file changes.
        quote! { (#name, ::core::include_str!(#path)) }
    });
    Ok(quote! {
        ::pgdbm::__private::EmbeddedMigrations::new(&[ #(#entries),* ])
    })
}
