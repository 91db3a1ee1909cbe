//! `#[pgdbm::test]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ItemFn, LitStr};

#[derive(Default)]
struct Args {
    /// `project` (the crate's pgdbm.toml) or `project = "path"`.
    project: Option<Option<LitStr>>,
    migrations: Option<LitStr>,
    module: Option<LitStr>,
    schema: Option<LitStr>,
    fixtures: Vec<LitStr>,
    transaction: bool,
}

fn parse_args(attr: TokenStream) -> syn::Result<Args> {
    let mut args = Args::default();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("project") {
            args.project = Some(if meta.input.peek(syn::Token![=]) {
                Some(meta.value()?.parse()?)
            } else {
                None
            });
        } else if meta.path.is_ident("migrations") {
            args.migrations = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("module") {
            args.module = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("schema") {
            let lit: LitStr = meta.value()?.parse()?;
            if !pgdbm_core::ident::is_valid_identifier(&lit.value()) {
                return Err(syn::Error::new(
                    lit.span(),
                    format!(
                        "invalid schema name `{}`: it must match ^[A-Za-z_][A-Za-z0-9_]{{0,62}}$",
                        lit.value()
                    ),
                ));
            }
            args.schema = Some(lit);
        } else if meta.path.is_ident("transaction") {
            args.transaction = true;
        } else {
            return Err(meta.error(
                "unknown #[pgdbm::test] option; use project, migrations = \"…\", module = \"…\", schema = \"…\", fixtures(\"…\"), transaction",
            ));
        }
        Ok(())
    });
    // `fixtures("a.sql", "b.sql")` is not name-value meta; pull it out first.
    let (attr, fixtures) = split_fixtures(attr)?;
    args.fixtures = fixtures;
    syn::parse::Parser::parse2(parser, attr)?;
    Ok(args)
}

/// Removes `fixtures(...)` from the attribute tokens and returns its literals.
fn split_fixtures(attr: TokenStream) -> syn::Result<(TokenStream, Vec<LitStr>)> {
    use proc_macro2::TokenTree;
    let tokens: Vec<TokenTree> = attr.into_iter().collect();
    let mut rest = Vec::new();
    let mut fixtures = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if let TokenTree::Ident(id) = &tokens[i]
            && id == "fixtures"
            && let Some(TokenTree::Group(g)) = tokens.get(i + 1)
        {
            let lits = syn::parse::Parser::parse2(
                syn::punctuated::Punctuated::<LitStr, syn::Token![,]>::parse_terminated,
                g.stream(),
            )?;
            fixtures.extend(lits);
            i += 2;
            // Drop the comma that followed, if any.
            if matches!(tokens.get(i), Some(TokenTree::Punct(p)) if p.as_char() == ',') {
                i += 1;
            }
            continue;
        }
        rest.push(tokens[i].clone());
        i += 1;
    }
    // A trailing comma left behind is harmless for the meta parser.
    Ok((rest.into_iter().collect(), fixtures))
}

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args = parse_args(attr)?;
    let func: ItemFn = syn::parse2(item)?;
    if func.sig.asyncness.is_none() {
        return Err(syn::Error::new(
            func.sig.fn_token.span(),
            "#[pgdbm::test] goes on an `async fn`",
        ));
    }
    if func.sig.inputs.len() != 1 {
        return Err(syn::Error::new(
            func.sig.inputs.span(),
            if args.transaction {
                "#[pgdbm::test(transaction)] functions take one argument: `tx: &mut pgdbm::Transaction<'static>`"
            } else {
                "#[pgdbm::test] functions take one argument: `db: pgdbm::Database`"
            },
        ));
    }
    let name = &func.sig.ident;
    let vis = &func.vis;
    let attrs = &func.attrs;
    let inputs = &func.sig.inputs;
    let output = &func.sig.output;
    let block = &func.block;

    if args.project.is_some() && (args.migrations.is_some() || args.module.is_some()) {
        return Err(syn::Error::new(
            func.sig.ident.span(),
            "#[pgdbm::test]: `project` migrates every module of pgdbm.toml; give it or migrations = \"…\" / module = \"…\", not both",
        ));
    }
    let mut builder = quote! { ::pgdbm::testing::TestDatabase::builder() };
    match &args.project {
        Some(Some(p)) => {
            builder = quote! { #builder.project(::core::concat!(::core::env!("CARGO_MANIFEST_DIR"), "/", #p)) };
        }
        Some(None) => {
            builder = quote! { #builder.project(::core::env!("CARGO_MANIFEST_DIR")) };
        }
        None => {}
    }
    if let Some(m) = &args.migrations {
        builder = quote! { #builder.migrations(::core::concat!(::core::env!("CARGO_MANIFEST_DIR"), "/", #m)) };
    }
    if let Some(m) = &args.module {
        builder = quote! { #builder.module(#m) };
    }
    if let Some(s) = &args.schema {
        builder = quote! { #builder.schema(#s) };
    }
    for f in &args.fixtures {
        builder = quote! { #builder.fixture(::core::concat!(::core::env!("CARGO_MANIFEST_DIR"), "/", #f)) };
    }
    let body = if args.transaction {
        quote! {
            ::pgdbm::__private::run_in_transaction(#builder, |mut __pgdbm_tx| async move {
                let __pgdbm_result = __pgdbm_test(&mut __pgdbm_tx).await;
                (__pgdbm_result, __pgdbm_tx)
            })
        }
    } else {
        quote! { ::pgdbm::__private::run(#builder, __pgdbm_test) }
    };
    Ok(quote_spanned! {func.sig.span()=>
        #[::core::prelude::v1::test]
        #(#attrs)*
        #vis fn #name() {
            async fn __pgdbm_test(#inputs) #output #block
            #body
        }
    })
}
